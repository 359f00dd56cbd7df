// npm run migrate against the real test database: a realistic legacy SQLite database moves exactly,
// a second run changes nothing, a dry run writes nothing, and bad files fail clearly.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataStore, type DataStore } from '../../shared/data';
import { importIdOf } from '../helpers/users';
import { cursorCodec } from '../../shared/manage/cursor';
import * as manage from '../../shared/manage/service';
import { dryRunGraphClient } from '../../shared/whatsapp/graph';
import { runToExitCode } from '../../scripts/lib/cli';
import { derivedKey, main as migrate, parseLegacyDate } from '../../scripts/migrate';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { collectionOf } from '../helpers/raw';
import { captureIo, LEGACY_MESSAGES, LEGACY_USERS, writeLegacyDb } from '../fixtures/scripts';

let t: TestDatabase;
let store: DataStore;
let legacyFile: string;
const env = () => ({ MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName });

// The ids the migration gives the legacy users (keyed with the database's key: read in beforeAll).
let U1 = '';
let U2 = '';
let U3 = '';
let U4 = '';
// Messages without a WhatsApp id: keyed by user, time, direction, row and text.
const L2 = derivedKey(
  '15550100001',
  new Date('2024-01-01T10:00:02.250Z'),
  'outbound',
  2,
  'Bien, it\'s "fine" 😀',
);
const L6 = derivedKey(
  '15550100002',
  new Date('2024-01-02T03:04:06Z'),
  'outbound',
  6,
  'You will not get more messages.',
);
const L8 = derivedKey('442079460003', new Date('2024-01-02T23:59:59.500Z'), 'outbound', 8, 'x'.repeat(300));

async function snapshot(db: TestDatabase['db']) {
  const out: Record<string, unknown[]> = {};
  for (const name of ['users', 'messages', 'stats', 'events', 'tokens']) {
    out[name] = await db.collection(name).find({}).sort({ _id: 1 }).toArray();
  }
  return out;
}

beforeAll(async () => {
  t = await testDatabase('scripts-migrate');
  store = createDataStore(t.db);
  U1 = await importIdOf(store, '15550100001');
  U2 = await importIdOf(store, '15550100002');
  U3 = await importIdOf(store, '442079460003');
  U4 = await importIdOf(store, '15550100004');
  legacyFile = await writeLegacyDb(LEGACY_USERS, LEGACY_MESSAGES);
});

afterAll(async () => {
  await t?.drop();
  if (legacyFile) await fs.rm(path.dirname(legacyFile), { recursive: true, force: true });
});

describe('parseLegacyDate', () => {
  it('reads every DATETIME form as UTC, to the millisecond', () => {
    expect(parseLegacyDate('2024-01-02 03:04:05')?.toISOString()).toBe('2024-01-02T03:04:05.000Z');
    expect(parseLegacyDate('2024-01-02T03:04:05.123456')?.toISOString()).toBe('2024-01-02T03:04:05.123Z');
    expect(parseLegacyDate('2024-01-02 03:04:05.5')?.toISOString()).toBe('2024-01-02T03:04:05.500Z');
    expect(parseLegacyDate('2024-01-02T03:04:05+02:00')?.toISOString()).toBe('2024-01-02T01:04:05.000Z');
    expect(parseLegacyDate('2024-01-02 03:04')?.toISOString()).toBe('2024-01-02T03:04:00.000Z');
    // A zone name as Rails and some ORMs write it: UTC (`2024-01-02 10:00:00 UTC` was archived).
    expect(parseLegacyDate('2024-01-02 03:04:05 UTC')?.toISOString()).toBe('2024-01-02T03:04:05.000Z');
    expect(parseLegacyDate('2024-01-02T03:04:05.250 gmt')?.toISOString()).toBe('2024-01-02T03:04:05.250Z');
    expect(parseLegacyDate('2024-01-02 03:04:05 CET')).toBeNull();
    expect(parseLegacyDate('2024-02-31 00:00:00')).toBeNull();
    expect(parseLegacyDate('yesterday')).toBeNull();
    expect(parseLegacyDate(null)).toBeNull();
  });

  it('refuses numbers that are no epoch time a chatbot wrote, rather than date them in January 1970', () => {
    expect(parseLegacyDate(2460311.5)).toBeNull(); // SQLite julianday() of 2024-01-01 12:00
    expect(parseLegacyDate('2460311.5')).toBeNull();
    expect(parseLegacyDate(45292)).toBeNull(); // a spreadsheet's serial day for 2024-01-01
    expect(parseLegacyDate(12345)).toBeNull();
    expect(parseLegacyDate(946684800)?.toISOString()).toBe('2000-01-01T00:00:00.000Z');
    expect(parseLegacyDate(1704067200)?.toISOString()).toBe('2024-01-01T00:00:00.000Z');
  });
});

describe('npm run migrate', () => {
  it('refuses a device at once instead of reading it without end', async () => {
    const io = captureIo();
    const code = await runToExitCode(migrate, ['/dev/zero'], env(), io);
    expect(code).toBe(1);
    expect(io.text()).toMatch(/cannot read the legacy database \/dev\/zero: it is a device, not a file/);
  }, 20_000);

  it('fails clearly on a missing file', async () => {
    const io = captureIo();
    const code = await runToExitCode(migrate, ['/nonexistent/legacy.db'], env(), io);
    expect(code).toBe(1);
    expect(io.text()).toMatch(/cannot read the legacy database \/nonexistent\/legacy\.db: no such file/);
    expect(io.text()).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('fails clearly on a file that is not a SQLite database', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'notdb-'));
    const file = path.join(dir, 'notes.db');
    await fs.writeFile(file, 'just some text, not SQLite at all '.repeat(50));
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], env(), io)).toBe(1);
    expect(io.text()).toMatch(/not a SQLite database/);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('refuses a damaged SQLite file before reading or writing anything, without a stack trace', async () => {
    // Before, damage in a message's text (an overflow page) surfaced in the middle of the run as
    // `error: Error: database disk image is malformed` and a stack trace; damage elsewhere read as
    // "unexpected legacy schema" or "not a SQLite database".
    const file = await writeLegacyDb(
      [[1, '+1 555 010 0009', 'Long', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      Array.from({ length: 20 }, (_, i) => [
        i + 1,
        1,
        'user',
        `${i} ${'y'.repeat(9000)}`,
        `wamid.D${i}`,
        '2024-01-01 10:00:01',
      ]),
    );
    const bytes = await fs.readFile(file);
    const page = 4096;
    expect(bytes.readUInt16BE(16)).toBe(page);
    // The last pages hold the last texts' overflow: their first 4 bytes name the next page.
    const last = bytes.length / page - 1;
    for (const p of [last - 1, last]) bytes.writeUInt32BE(999_999, p * page);
    const cut = bytes.subarray(0, 5 * page + 100);
    const damaged = path.join(path.dirname(file), 'damaged.db');
    const short = path.join(path.dirname(file), 'short.db');
    await fs.writeFile(damaged, bytes);
    await fs.writeFile(short, cut);
    const before = await snapshot(t.db);
    for (const [legacy, args] of [
      [damaged, ['--dry-run']],
      [damaged, []],
      [short, []],
    ] as const) {
      const io = captureIo();
      expect(await runToExitCode(migrate, [legacy, ...args], env(), io), io.text()).toBe(1);
      const name = path.basename(legacy);
      expect(io.stderr.at(-1)).toMatch(
        new RegExp(
          `^error: ${name.replace('.', '\\.')} is a damaged SQLite database \\(.*\\); nothing was imported: recover .* with SQLite`,
        ),
      );
      expect(io.text()).not.toMatch(/\n\s+at /);
      expect(io.stdout).toEqual([]);
    }
    expect(await snapshot(t.db)).toEqual(before);
    await fs.rm(path.dirname(file), { recursive: true, force: true });
  });

  it('requires the file argument', async () => {
    const io = captureIo();
    expect(await runToExitCode(migrate, [], env(), io)).toBe(2);
    expect(io.text()).toMatch(/legacy database file is required/);
  });

  it('--dry-run reports and writes nothing', async () => {
    const io = captureIo();
    // Nothing but the deployment key the ids above were derived with.
    const before = await snapshot(t.db);
    expect(before['stats']).toEqual([expect.objectContaining({ _id: 'keys' })]);
    // The orphan (row 4) is skipped and counted (a run archives it): not a failure.
    expect(await runToExitCode(migrate, [legacyFile, '--dry-run'], env(), io)).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/dry run/);
    expect(out).toMatch(/users:\s+4/);
    expect(out).toMatch(/messages:\s+7/);
    expect(out).toMatch(/duplicates skipped:\s+1/);
    expect(out).toMatch(/orphans not imported \(archived\):\s+1$/m);
    expect(out).toMatch(/messages of users not imported \(archived\):\s+0$/m);
    expect(out).toMatch(/rows to archive:\s+1/);
    expect(io.stderr.join('\n')).not.toMatch(/NOT EVERYTHING WAS IMPORTED/);
    expect(await snapshot(t.db)).toEqual(before);
  });

  it('moves the legacy data exactly', async () => {
    const io = captureIo();
    expect(await runToExitCode(migrate, [legacyFile, '--batch-size', '3'], env(), io)).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/users inserted:\s+4/);
    expect(out).toMatch(/messages not imported \(legacy message ids\):\s+4$/m);
    expect(out).toMatch(/rows archived \(kind legacy_row\):\s+1/);
    expect(io.stderr.join('\n')).not.toMatch(/NOT EVERYTHING WAS IMPORTED/);
    // The orphan is not lost: its row is archived whole, as the file holds it.
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    expect(archived).toHaveLength(1);
    expect(archived[0]).toMatchObject({ reason: 'message of a missing user', userId: null, subject: null });
    expect(JSON.parse(String(archived[0]?.['payloadJson']))).toEqual({
      table: 'message',
      row: {
        user_id: 99,
        role: 'user',
        content: 'orphan',
        created_at: '2024-01-01 11:00:00',
        id: 4,
        meta_message_id: null,
      },
    });
    expect(out).toMatch(/messages inserted:\s+7/);
    expect(out).toMatch(/inbound:\s+4/);
    expect(out).toMatch(/outbound:\s+3/);
    expect(out).toMatch(/time:\s+\d/);
    // No phone numbers or texts in the output.
    expect(io.text()).not.toMatch(/5550100|Zoë|Hola/);

    const u1 = await store.users.getUser(U1);
    expect(u1).toMatchObject({
      waId: '15550100001',
      bsuid: null,
      name: 'Zoë "Z" O\'Brien 🎉',
      optedOut: false,
      messageCount: 3,
      lastMessageId: 'wamid.A2',
      lastMessagePreview: 'later',
    });
    expect(u1?.createdAt.toISOString()).toBe('2024-01-01T10:00:00.000Z');
    expect(u1?.lastMessageAt?.toISOString()).toBe('2024-01-03T08:00:00.000Z');

    const u2 = await store.users.getUser(U2);
    expect(u2).toMatchObject({
      waId: '15550100002',
      name: null,
      optedOut: true,
      messageCount: 2,
      lastMessageId: L6,
    });
    expect(u2?.createdAt.toISOString()).toBe('2024-01-02T03:04:05.123Z');
    expect(u2?.lastMessagePreview).toBe('You will not get more messages.');

    const u3 = await store.users.getUser(U3);
    expect(u3).toMatchObject({
      name: 'José Álvarez',
      messageCount: 2,
      lastMessageId: 'wamid.C1',
      lastMessagePreview: 'Café crème',
    });
    expect(u3?.createdAt.toISOString()).toBe('2024-01-02T03:04:05.500Z');
    expect(u3?.lastMessageAt?.toISOString()).toBe('2024-01-03T12:00:00.999Z');

    const u4 = await store.users.getUser(U4);
    expect(u4).toMatchObject({
      name: null,
      messageCount: 0,
      lastMessageId: null,
      lastMessagePreview: null,
      optedOut: false,
    });
    expect(await t.db.collection('users').countDocuments()).toBe(4);

    // Messages: ids, directions, dates to the ms, order (createdAt then legacy row id).
    const all = await t.db.collection('messages').find({}).sort({ createdAt: 1, _id: 1 }).toArray();
    expect(
      all.map((m) => [m['_id'], m['userId'], m['direction'], (m['createdAt'] as Date).toISOString()]),
    ).toEqual([
      ['wamid.A1', U1, 'inbound', '2024-01-01T10:00:01.000Z'],
      [L2, U1, 'outbound', '2024-01-01T10:00:02.250Z'],
      [L6, U2, 'outbound', '2024-01-02T03:04:06.000Z'],
      ['wamid.B1', U2, 'inbound', '2024-01-02T03:04:06.000Z'],
      [L8, U3, 'outbound', '2024-01-02T23:59:59.500Z'],
      ['wamid.A2', U1, 'inbound', '2024-01-03T08:00:00.000Z'],
      ['wamid.C1', U3, 'inbound', '2024-01-03T12:00:00.999Z'],
    ]);
    const a1 = await store.messages.getMessage('wamid.A1');
    expect(a1).toMatchObject({
      waMessageId: 'wamid.A1',
      type: 'text',
      text: 'Hola, ¿qué tal? ☕',
      status: 'received',
      role: 'conversation',
    });
    // Nothing migrated is answered again.
    expect(
      await t.db
        .collection('messages')
        .countDocuments({ direction: 'inbound', replyState: { $nin: ['none', 'sent'] } }),
    ).toBe(0);
    const l2 = await store.messages.getMessage(L2);
    expect(l2).toMatchObject({ waMessageId: null, text: 'Bien, it\'s "fine" 😀', status: 'sent' });
    // Search terms are stored (accents folded).
    const found = await t.db.collection('messages').find({ terms: 'cafe' }).toArray();
    expect(found.map((m) => m['_id'])).toEqual(['wamid.C1']);
    // A conversation in order, as the bot reads it for AI context.
    const history = await store.messages.conversationBefore(U1, new Date('2025-01-01'), 'none', null, 10);
    expect(history.map((m) => m.id)).toEqual(['wamid.A1', L2, 'wamid.A2']);
    // Same instant: the legacy row order (5 then 6) is kept in the conversation.
    const tied = await store.messages.conversationBefore(U2, new Date('2025-01-01'), 'none', null, 10);
    expect(tied.map((m) => m.id)).toEqual(['wamid.B1', L6]);
    expect(tied.map((m) => m.createdAt.toISOString())).toEqual([
      '2024-01-02T03:04:06.000Z',
      '2024-01-02T03:04:06.000Z',
    ]);

    // Counters: totals and the days of the messages and of the users' creation.
    expect(await store.stats.totals()).toEqual({
      inbound: 4,
      outbound: 3,
      failed: 0,
      newUsers: 4,
      aiRequests: 0,
      aiTokens: 0,
    });
    expect(await store.stats.daily(new Date('2024-01-03T23:00:00Z'), 3)).toEqual([
      { date: '2024-01-01', inbound: 1, outbound: 1, newUsers: 1 },
      { date: '2024-01-02', inbound: 1, outbound: 2, newUsers: 2 },
      { date: '2024-01-03', inbound: 2, outbound: 0, newUsers: 1 },
    ]);
  });

  it('shows the migrated data correctly through the management API', async () => {
    const ctx = {
      data: store,
      now: new Date('2024-01-03T23:00:00Z'),
      graph: dryRunGraphClient,
      handoffHours: 24,
      cursors: cursorCodec('a key for the tests'),
    };
    const stats = await manage.getStats(ctx);
    expect(stats.users).toEqual({ total: 4, optedOut: 1, active24h: 3 });
    expect(stats.messages).toEqual({ total: 7, inbound: 4, outbound: 3, failed: 0 });
    expect(stats.ai).toEqual({ requests: 0, tokens: 0, models: [] });
    expect(stats.daily).toHaveLength(30);
    expect(stats.daily.slice(-3)).toEqual([
      { date: '2024-01-01', inbound: 1, outbound: 1, newUsers: 1 },
      { date: '2024-01-02', inbound: 1, outbound: 2, newUsers: 2 },
      { date: '2024-01-03', inbound: 2, outbound: 0, newUsers: 1 },
    ]);

    const users = await manage.listUsers(ctx, { limit: 50 });
    expect(users.items.map((u) => u.id)).toEqual([U3, U1, U4, U2]);
    expect(users.items[1]).toEqual({
      id: U1,
      waId: '15550100001',
      bsuid: null,
      name: 'Zoë "Z" O\'Brien 🎉',
      createdAt: '2024-01-01T10:00:00.000Z',
      lastMessageAt: '2024-01-03T08:00:00.000Z',
      lastMessagePreview: 'later',
      messageCount: 3,
      optedOut: false,
      handoff: null,
    });
    expect(users.items[3]).toMatchObject({ id: U2, name: null, optedOut: true, messageCount: 2 });
    expect((await manage.listUsers(ctx, { limit: 50, q: 'jose' })).items.map((u) => u.id)).toEqual([U3]);
    expect((await manage.listUsers(ctx, { limit: 50, q: 'zoe' })).items.map((u) => u.id)).toEqual([U1]);

    const conversation = await manage.listUserMessages(ctx, U1, { limit: 50 });
    expect(conversation.items.map((m) => [m.id, m.direction, m.createdAt, m.waMessageId])).toEqual([
      ['wamid.A2', 'inbound', '2024-01-03T08:00:00.000Z', 'wamid.A2'],
      [L2, 'outbound', '2024-01-01T10:00:02.250Z', null],
      ['wamid.A1', 'inbound', '2024-01-01T10:00:01.000Z', 'wamid.A1'],
    ]);
    const search = await manage.searchMessages(ctx, { q: 'cafe', limit: 50 });
    expect(search.items.map((m) => m.id)).toEqual(['wamid.C1']);
    const chats = await manage.latestChats(ctx, { limit: 10 });
    expect(chats.items[0]?.user.id).toBe(U3);
    expect(chats.items[0]?.lastMessage.id).toBe('wamid.C1');
  });

  it('changes nothing when run again', async () => {
    const before = await snapshot(t.db);
    const io = captureIo();
    expect(await runToExitCode(migrate, [legacyFile], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
    expect(io.stdout.join('\n')).toMatch(/rows archived by an earlier run:\s+1/);
    expect(io.stdout.join('\n')).toMatch(/users inserted:\s+0/);
    expect(await snapshot(t.db)).toEqual(before);
  });

  it('completes an interrupted run without counting twice', async () => {
    // Lose a message and its effects as if the first run stopped before writing it.
    // A state the app never writes, so only raw writes make it; each must hit its document.
    const stats = collectionOf(t.db, 'stats');
    expect((await collectionOf(t.db, 'messages').deleteOne({ _id: 'wamid.C1' })).deletedCount).toBe(1);
    const lowered = [
      await collectionOf(t.db, 'users').updateOne({ _id: U3 }, { $inc: { messageCount: -1 } }),
      await stats.updateOne({ _id: 'totals' }, { $inc: { inbound: -1 } }),
      await stats.updateOne({ _id: 'day:2024-01-03' }, { $inc: { inbound: -1 } }),
    ];
    expect(lowered.map((r) => r.modifiedCount)).toEqual([1, 1, 1]);
    const io = captureIo();
    expect(await runToExitCode(migrate, [legacyFile], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+1/);
    expect(await store.stats.totals()).toMatchObject({ inbound: 4, outbound: 3, newUsers: 4 });
    expect((await store.stats.daily(new Date('2024-01-03T23:00:00Z'), 1))[0]).toEqual({
      date: '2024-01-03',
      inbound: 2,
      outbound: 0,
      newUsers: 1,
    });
    expect(await store.users.getUser(U3)).toMatchObject({ messageCount: 2, lastMessageId: 'wamid.C1' });
  });
});
