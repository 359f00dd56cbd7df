// npm run restore checks every document of a backup before writing: a bad one refuses the whole
// file (nothing written), tokens are restored only when asked, retired collections are skipped.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as restore } from '../../scripts/restore';
import { BACKUP_FORMAT, BACKUP_VERSION, createDataStore, toEjsonLine } from '../../shared/data';
import type { EventDoc } from '../../shared/data/events';
import type { TokenDoc } from '../../shared/data/tokens';
import type { MessageDoc } from '../../shared/data/messages';
import type { StatsDoc } from '../../shared/data/stats';
import type { UserDoc } from '../../shared/data/users';
import { authenticate, hashToken } from '../../shared/manage/auth';
import { captureIo } from '../fixtures/scripts';
import { testDatabase, type TestDatabase } from '../helpers/db';

let t: TestDatabase;
let dir: string;
const env = () => ({ MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName });

beforeAll(async () => {
  t = await testDatabase('scripts-restore');
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'restore-'));
});

beforeEach(async () => {
  await t.db.dropDatabase();
});

afterAll(async () => {
  await t?.drop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

// Personal data that must never be echoed by a refusal.
const NUMBER = '15550002222';
const NAME = 'Private Person';
const TEXT = 'my secret message';
const at = new Date('2026-03-01T10:00:00Z');

const user: UserDoc = {
  _id: 'u_0123456789abcdef01234567',
  waId: NUMBER,
  bsuid: null,
  name: NAME,
  createdAt: at,
  lastMessageAt: at,
  lastMessagePreview: TEXT,
  lastMessageId: 'wamid.in1',
  messageCount: 1,
  optedOut: false,
  welcomeSentAt: null,
  contextResetAt: null,
  searchKeys: ['1', '15', 'private', 'person'],
};

const message: MessageDoc = {
  _id: 'wamid.in1',
  userId: user._id,
  waMessageId: 'wamid.in1',
  direction: 'inbound',
  type: 'text',
  text: TEXT,
  status: 'received',
  statusRank: 0,
  createdAt: at,
  seqAt: at,
  role: 'conversation',
  phoneNumberId: '1234',
  terms: ['my', 'secret'],
  relatedId: null,
  replyState: 'none',
  error: null,
  ai: null,
  raw: { from: NUMBER, text: { body: TEXT } },
};

const PLANTED = 'wam_planted-token-that-must-not-work-0000000000';
const token: TokenDoc = {
  _id: 'tok0000001',
  name: 'planted',
  hash: hashToken(PLANTED),
  createdAt: at,
  expiresAt: null,
  revokedAt: null,
  lastUsedAt: null,
};

const event: EventDoc = {
  _id: 'status:0123',
  kind: 'status',
  reason: 'status read',
  createdAt: at,
  userId: null,
  payload: { recipient_id: NUMBER },
};

const day: StatsDoc = { _id: 'day:2026-03-01', date: '2026-03-01', inbound: 1, outbound: 0, newUsers: 1 };

type Line = { readonly c: string; readonly d: object };

/** A gzip'd backup file as `npm run backup` writes it: a header line, then one line per document. */
async function backupFile(name: string, lines: readonly Line[]): Promise<string> {
  const collections: Record<string, number> = {};
  for (const { c } of lines) collections[c] = (collections[c] ?? 0) + 1;
  const header = { format: BACKUP_FORMAT, version: BACKUP_VERSION, createdAt: new Date(), collections };
  const file = path.join(dir, name);
  await fs.writeFile(file, gzipSync([header, ...lines].map((l) => toEjsonLine(l)).join('\n') + '\n'));
  return file;
}

async function run(...argv: string[]) {
  const io = captureIo();
  const code = await runToExitCode(restore, argv, env(), io);
  return { code, text: io.text(), stdout: io.stdout.join('\n') };
}

const collectionNames = async () => (await t.db.listCollections().toArray()).map((c) => c.name);
const tokenWorks = async () =>
  authenticate(`Bearer ${PLANTED}`, {
    data: createDataStore(t.db),
    bootstrapToken: undefined,
    now: new Date(),
  })
    .then(() => true)
    .catch(() => false);

describe('tokens', () => {
  it('a planted token is not restored by default, and is with --include-tokens', async () => {
    const file = await backupFile('tokens.jsonl.gz', [
      { c: 'users', d: user },
      { c: 'tokens', d: token },
    ]);
    const first = await run(file);
    expect(first.code, first.text).toBe(0);
    expect(first.stdout).toMatch(/tokens skipped:\s+1 \(restore them with --include-tokens\)/);
    const data = createDataStore(t.db);
    expect(await data.tokens.list()).toEqual([]);
    expect(await tokenWorks()).toBe(false);
    expect((await data.users.getUser(user._id))?.name).toBe(NAME);

    const second = await run(file, '--include-tokens');
    expect(second.code, second.text).toBe(0);
    expect(second.stdout).toMatch(/tokens:\s+1/);
    expect((await data.tokens.list()).map((x) => x.name)).toEqual(['planted']);
    expect(await tokenWorks()).toBe(true);
  });
});

describe('refusals', () => {
  const userWithoutId = Object.fromEntries(Object.entries(user).filter(([key]) => key !== '_id'));
  const cases: readonly [label: string, bad: Line, field: RegExp][] = [
    ['a user without _id', { c: 'users', d: userWithoutId }, /field _id: .*expected string/],
    ['a user with a numeric _id', { c: 'users', d: { ...user, _id: 42 } }, /field _id: .*expected string/],
    ['a user with an empty _id', { c: 'users', d: { ...user, _id: '' } }, /field _id: Too small/],
    ['a count that is text', { c: 'users', d: { ...user, messageCount: 'many' } }, /field messageCount/],
    ['a date that is text', { c: 'users', d: { ...user, createdAt: at.toISOString() } }, /field createdAt/],
    [
      'too many search keys',
      { c: 'users', d: { ...user, searchKeys: Array.from({ length: 3000 }, (_, i) => `k${i}`) } },
      /field searchKeys: Too big/,
    ],
    [
      'a reply lock without until',
      { c: 'users', d: { ...user, replyLock: { owner: 'w' } } },
      /field replyLock.until/,
    ],
    ['an unknown direction', { c: 'messages', d: { ...message, direction: 'sideways' } }, /field direction/],
    ['an unknown reply state', { c: 'messages', d: { ...message, replyState: 'maybe' } }, /field replyState/],
    ['a term that is not text', { c: 'messages', d: { ...message, terms: ['ok', 7] } }, /field terms\.1/],
    ['a counter that is not a number', { c: 'stats', d: { ...day, inbound: Number.NaN } }, /field inbound/],
    ['a stats id of no known kind', { c: 'stats', d: { ...day, _id: 'whatever' } }, /field _id/],
    ['a token hash that can never match', { c: 'tokens', d: { ...token, hash: 'abc' } }, /field hash/],
    [
      'a document over 2 MB',
      { c: 'events', d: { ...event, payload: { text: 'x'.repeat(2_200_000) } } },
      /over the 2097152-byte limit/,
    ],
  ];

  it.each(cases)(
    '%s: refused with line, collection and field; nothing written',
    async (_label, bad, field) => {
      const file = await backupFile('bad.jsonl.gz', [
        { c: 'users', d: user },
        { c: 'messages', d: message },
        { c: 'events', d: event },
        bad,
        { c: 'stats', d: day },
      ]);
      const result = await run(file, '--include-tokens');
      expect(result.code).toBe(1);
      expect(result.text).toMatch(new RegExp(`bad\\.jsonl\\.gz: line 5 \\(${bad.c}\\): `));
      expect(result.text).toMatch(field);
      expect(result.text).toMatch(/nothing was restored/);
      for (const secret of [NUMBER, NAME, TEXT, PLANTED]) expect(result.text).not.toContain(secret);
      // Not even a collection or an index was created: nothing reached the database.
      expect(await collectionNames()).toEqual([]);
    },
  );

  it('an unknown collection is refused before anything is written', async () => {
    const file = await backupFile('unknown.jsonl.gz', [
      { c: 'users', d: user },
      { c: 'secrets', d: { _id: 'x' } },
    ]);
    const result = await run(file);
    expect(result.code).toBe(1);
    expect(result.text).toMatch(/line 3 is not a document of a known collection/);
    expect(await collectionNames()).toEqual([]);
  });
});

describe('retired collections', () => {
  it('skips the claims of locks with a line saying so', async () => {
    const file = await backupFile('locks.jsonl.gz', [
      { c: 'users', d: user },
      { c: 'locks', d: { _id: 'reply:wamid.in1:1', createdAt: at } },
      { c: 'messages', d: message },
    ]);
    const result = await run(file);
    expect(result.code, result.text).toBe(0);
    expect(result.stdout).toMatch(/locks skipped:\s+1 \(collection no longer used\)/);
    expect(result.stdout).toMatch(/documents:\s+2/);
    expect(await t.db.collection('locks').countDocuments()).toBe(0);
    const data = createDataStore(t.db);
    expect((await data.messages.getMessage(message._id))?.text).toBe(TEXT);
  });
});

describe('restoring over existing documents', () => {
  // FerretDB v1's update command held each update's rows open until the command ended, and its
  // SQLite pool has 100 connections: a bulk write replacing more than 100 existing documents never
  // returned (and wedged the database). Fixed in the project's FerretDB build (ferretdb-patches.ts).
  it(
    'restoring the same file twice (batches of more than 100 existing documents) changes nothing',
    { timeout: 60_000 },
    async () => {
      const users = Array.from({ length: 250 }, (_, i): UserDoc => ({
        ...user,
        _id: `u_${i.toString(16).padStart(24, '0')}`,
        searchKeys: [],
      }));
      const file = await backupFile(
        'twice.jsonl.gz',
        users.map((d) => ({ c: 'users', d })),
      );
      const snapshot = () => t.db.collection('users').find({}).sort({ _id: 1 }).toArray();
      const first = await run(file);
      expect(first.code, first.text).toBe(0);
      const before = await snapshot();
      expect(before).toHaveLength(250);
      const second = await run(file);
      expect(second.code, second.text).toBe(0);
      expect(second.stdout).toMatch(/users:\s+250/);
      expect(await snapshot()).toEqual(before);
    },
  );
});
