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

/**
 * A gzip'd backup file as `npm run backup` writes it: a header line (counting the lines, unless
 * `collections` is given), then one line per document.
 */
async function backupFile(name: string, lines: readonly Line[], collections?: unknown): Promise<string> {
  const counted: Record<string, number> = {};
  for (const { c } of lines) counted[c] = (counted[c] ?? 0) + 1;
  const header = {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    createdAt: new Date(),
    collections: collections === undefined ? counted : collections,
  };
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
      'a field the schema does not know',
      { c: 'messages', d: { ...message, extraField: 'hello' } },
      /field extraField: not a field of messages documents/,
    ],
    [
      'a $-prefixed field',
      { c: 'messages', d: { ...message, $where: 'x' } },
      /field \$where: not a field of messages documents/,
    ],
    [
      'an unknown field in a nested object',
      { c: 'users', d: { ...user, handoff: { since: at, by: 'agent', activeAt: at, note: NAME } } },
      /field handoff\.note: not a field of users documents/,
    ],
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

describe('a file that does not hold what its header counts', () => {
  const cases: readonly [label: string, lines: readonly Line[], collections: unknown, says: RegExp][] = [
    [
      'lines missing (cut at a line boundary)',
      [{ c: 'users', d: user }],
      { users: 1, messages: 1, stats: 0, tokens: 0, events: 0 },
      /messages: 1 in the header, 0 in the file/,
    ],
    [
      'the header alone',
      [],
      { users: 1, messages: 1, stats: 0, tokens: 0, events: 0 },
      /users: 1 in the header, 0 in the file; messages: 1 in the header, 0 in the file\)/,
    ],
    [
      'more lines than counted',
      [
        { c: 'users', d: user },
        { c: 'messages', d: message },
      ],
      { users: 1 },
      /messages: 0 in the header, 1 in the file/,
    ],
    ['no counts in the header', [{ c: 'users', d: user }], null, /header line does not say the documents/],
    ['a count that is not a number', [{ c: 'users', d: user }], { users: 'one' }, /its count of users/],
  ];

  it.each(cases)('%s: refused, exit 1, nothing written', async (_label, lines, collections, says) => {
    const file = await backupFile('short.jsonl.gz', lines, collections);
    const result = await run(file);
    expect(result.code, result.text).toBe(1);
    expect(result.text).toMatch(says);
    expect(result.text).toMatch(/nothing was restored/);
    expect(await collectionNames()).toEqual([]);
  });

  it('an empty backup (every count 0, no lines) restores nothing, exit 0', async () => {
    const file = await backupFile('empty.jsonl.gz', [], { users: 0, messages: 0 });
    const result = await run(file);
    expect(result.code, result.text).toBe(0);
    expect(result.stdout).toMatch(/documents:\s+0/);
  });
});

describe('a file that is not intact gzip', () => {
  it('one damaged byte: one clear error, exit 1, no stray stream error afterwards', async () => {
    // Where the check stops at a line the damage garbled, gunzip meets the damage itself later,
    // when nothing reads the file any more: that error used to crash the process. Every 100th
    // byte is damaged in turn, so some of them do that whatever zlib's exact output.
    const header = {
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      createdAt: at,
      collections: { events: 300 },
    };
    const lines = Array.from({ length: 300 }, (_, i) => ({
      c: 'events',
      d: { ...event, _id: `e${i}`, reason: `r ${i} ${'x'.repeat(i % 50)}`, payload: { i } },
    }));
    const intact = gzipSync([header, ...lines].map((l) => toEjsonLine(l)).join('\n') + '\n');
    const file = path.join(dir, 'damaged.jsonl.gz');
    const stray: unknown[] = [];
    const onError = (error: unknown) => stray.push(error);
    process.on('uncaughtException', onError);
    try {
      for (let at = 100; at < intact.length - 20; at += 100) {
        const bytes = Buffer.from(intact);
        bytes[at] = (bytes[at] ?? 0) ^ 0xff;
        await fs.writeFile(file, bytes);
        const result = await run(file);
        await new Promise((resolve) => setTimeout(resolve, 50));
        expect(result.code, `byte ${at}`).toBe(1);
        expect(result.text, `byte ${at}`).toMatch(
          /^error: damaged\.jsonl\.gz(: line \d+ [^\n]*| is not a gzip backup file or is corrupt \(Z_\w+\)); nothing was restored$/,
        );
        expect(stray, `byte ${at}`).toEqual([]);
      }
      expect(await collectionNames()).toEqual([]);
    } finally {
      process.off('uncaughtException', onError);
    }
  });
});

describe('a write the database refuses', () => {
  it('says what was written and that running restore again completes it; exit 1', async () => {
    // Another token already holds the hash (a unique index): the file's token cannot be written.
    await createDataStore(t.db).ensureIndexes('create');
    await t.db.collection<TokenDoc>('tokens').insertOne({ ...token, _id: 'tok0000002' });
    const file = await backupFile('refused.jsonl.gz', [
      { c: 'users', d: user },
      { c: 'messages', d: message },
      { c: 'tokens', d: token },
    ]);
    const result = await run(file, '--include-tokens');
    expect(result.code).toBe(1);
    expect(result.text).toMatch(
      /restore of refused\.jsonl\.gz stopped: writing tokens failed: the database refused 1 of them \(duplicate key, code 11000\); written before it stopped: users 1, messages 1 \(2 documents\); the rest was not\. Restore writes by id, so running it again \(once the cause is fixed\) completes it/,
    );
    expect(result.text).not.toMatch(/gzip|nothing was restored/);
    for (const secret of [NUMBER, NAME, TEXT, PLANTED, token.hash]) expect(result.text).not.toContain(secret);
    expect(await t.db.collection('users').countDocuments()).toBe(1);
    expect(await t.db.collection('messages').countDocuments()).toBe(1);

    await t.db.collection<TokenDoc>('tokens').deleteOne({ _id: 'tok0000002' });
    const again = await run(file, '--include-tokens');
    expect(again.code, again.text).toBe(0);
    expect((await createDataStore(t.db).tokens.list()).map((x) => x.id)).toEqual([token._id]);
  });
});
