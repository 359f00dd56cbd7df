// npm run migrate on what the tidy fixture does not show: a run interrupted between a batch's insert
// and its counting, a second bot's file, a file without primary keys, and rows out of bounds or in
// odd formats. Each case on its own fresh database; `npm run health` must find nothing afterwards.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import initSqlJs from 'sql.js';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkStoredDocument,
  createDataStore,
  observeCommands,
  type StoredCollection,
} from '../../shared/data';
import { userIdOf } from '../helpers/users';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as health } from '../../scripts/health';
import { derivedKey, main as migrate } from '../../scripts/migrate';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { collectionOf } from '../helpers/raw';
import {
  captureIo,
  LEGACY_MESSAGES,
  LEGACY_USERS,
  LOOSE_SCHEMA,
  runScriptUntil,
  writeLegacyDb,
  type LegacyMessageRow,
  type LegacyUserRow,
} from '../fixtures/scripts';

const databases: TestDatabase[] = [];
const files: string[] = [];

async function freshDb(name: string): Promise<TestDatabase> {
  const t = await testDatabase(name);
  databases.push(t);
  return t;
}

async function legacyFile(...args: Parameters<typeof writeLegacyDb>): Promise<string> {
  const file = await writeLegacyDb(...args);
  files.push(file);
  return file;
}

const envOf = (t: TestDatabase) => ({
  MONGODB_URI: t.uri,
  MONGODB_DATABASE: t.dbName,
  WHATSAPP_VERIFY_TOKEN: 'verify-token-for-tests',
  WHATSAPP_APP_SECRET: 'app-secret-for-tests',
});

/** `npm run health`: exit code and output. */
async function healthOf(t: TestDatabase) {
  const io = captureIo();
  const code = await runToExitCode(health, [], envOf(t), io);
  return { code, out: io.text() };
}

/** Every stored user and message passes the schemas a restore applies. */
async function expectRestorable(t: TestDatabase): Promise<void> {
  for (const name of ['users', 'messages'] as StoredCollection[]) {
    for (const doc of await t.db.collection(name).find({}).toArray()) {
      expect(checkStoredDocument(name, doc), `${name} ${String(doc['_id']).slice(0, 40)}`).toBeNull();
    }
  }
}

afterAll(async () => {
  for (const t of databases) await t.drop();
  for (const file of files) await fs.rm(path.dirname(file), { recursive: true, force: true });
});

describe('an interrupted migration, run again', () => {
  it('completes the summaries and counters of what the interrupted run inserted', async () => {
    const t = await freshDb('migrate-interrupted');
    const file = await legacyFile(LEGACY_USERS, LEGACY_MESSAGES);
    // Stopped (as by SIGKILL or Ctrl-C) right after the first batch of messages was inserted.
    const stopped = captureIo();
    const aborted = await runToExitCode(
      (argv, env, io) =>
        migrate(argv, env, io, {
          afterInsert: (batch) => Promise.reject(new Error(`interrupted after batch ${batch}`)),
        }),
      [file, '--batch-size', '3'],
      envOf(t),
      stopped,
    );
    expect(aborted).toBe(1);
    expect(await t.db.collection('messages').countDocuments()).toBe(3);
    expect((await healthOf(t)).code).toBe(1); // the state the run left

    const io = captureIo();
    // The fixture's orphan is skipped, counted and archived: the run succeeds.
    expect(await runToExitCode(migrate, [file, '--batch-size', '3'], envOf(t), io)).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/messages inserted:\s+4/);
    expect(out).toMatch(/already migrated:\s+7/); // 4 users and the 3 messages of the first batch
    expect(out).toMatch(/summaries rebuilt \(left by an interrupted run\):\s+[1-9]/);
    expect(out).toMatch(/counters repaired \(left by an interrupted run\):\s+[1-9]/);

    const checked = await healthOf(t);
    expect(checked.out).toMatch(/summary problems:\s+0/);
    expect(checked.out).toMatch(/counter problems:\s+0/);
    expect(checked.code).toBe(0);
    const totals = await t.db.collection('stats').findOne({ _id: 'totals' as never });
    expect(totals).toMatchObject({ inbound: 4, outbound: 3, newUsers: 4 });
    expect(await t.db.collection('users').findOne({ waId: '15550100001' })).toMatchObject({
      messageCount: 3,
      lastMessageId: 'wamid.A2',
    });

    // And a third run changes nothing.
    const before = await t.db.collection('stats').find({}).sort({ _id: 1 }).toArray();
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(0);
    expect(again.stdout.join('\n')).toMatch(/summaries rebuilt \(left by an interrupted run\):\s+0/);
    expect(again.stdout.join('\n')).toMatch(/counters repaired \(left by an interrupted run\):\s+0/);
    expect(await t.db.collection('stats').find({}).sort({ _id: 1 }).toArray()).toEqual(before);
  });
});

describe('Ctrl-C during a migration', () => {
  it('says that the run stopped and how to finish, exits 130, and a second run completes it', async () => {
    const t = await freshDb('migrate-ctrl-c');
    const users: LegacyUserRow[] = Array.from({ length: 40 }, (_, i) => [
      i + 1,
      `1555020${String(i).padStart(4, '0')}`,
      `User ${i}`,
      1,
      '2024-02-01 10:00:00',
      '2024-02-01 10:00:00',
    ]);
    const messages: LegacyMessageRow[] = Array.from({ length: 4000 }, (_, i) => [
      i + 1,
      (i % 40) + 1,
      i % 2 ? 'assistant' : 'user',
      `message ${i}`,
      null,
      `2024-02-01 10:${String(Math.floor(i / 60) % 60).padStart(2, '0')}:${String(i % 60).padStart(2, '0')}`,
    ]);
    const file = await legacyFile(users, messages);
    // Stopped at its first progress line: batches are being written.
    const { code, stderr } = await runScriptUntil(
      'scripts/migrate.ts',
      [file, '--batch-size', '50'],
      envOf(t),
      /migrating: /,
      'SIGINT',
    );
    expect(code, stderr).toBe(130);
    expect(stderr).toMatch(
      /interrupted by SIGINT: what was imported so far is kept; run the same command again to complete the import/,
    );
    expect(await t.db.collection('messages').countDocuments()).toBeLessThan(4000);

    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(await t.db.collection('messages').countDocuments()).toBe(4000);
    const checked = await healthOf(t);
    expect(checked.code, checked.out).toBe(0);
  }, 120_000);
});

describe('messages without a WhatsApp id', () => {
  it("keeps a second bot's rows whose row ids the first file used", async () => {
    const t = await freshDb('migrate-second-file');
    const first = await legacyFile(LEGACY_USERS, LEGACY_MESSAGES);
    const second = await legacyFile(
      [[1, '+49 151 0000001', 'Other bot user', 1, '2024-06-01 10:00:00', '2024-06-01 10:00:00']],
      [
        [1, 1, 'user', 'hallo', 'wamid.X1', '2024-06-01 10:00:01'],
        [2, 1, 'assistant', 'Guten Tag from the second bot', '', '2024-06-01 10:00:02'],
      ],
    );
    expect(await runToExitCode(migrate, [first], envOf(t), captureIo())).toBe(0);
    const io = captureIo();
    expect(await runToExitCode(migrate, [second], envOf(t), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+2/);
    const other = await userIdOf(createDataStore(t.db), '491510000001');
    const texts = await t.db.collection('messages').find({ userId: other }).sort({ createdAt: 1 }).toArray();
    expect(texts.map((m) => m['text'])).toEqual(['hallo', 'Guten Tag from the second bot']);
    expect(await t.db.collection('messages').countDocuments()).toBe(9);
    // Each file run again changes nothing.
    for (const file of [first, second]) {
      const again = captureIo();
      expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(0);
      expect(again.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
    }
    expect(await t.db.collection('messages').countDocuments()).toBe(9);
    expect((await healthOf(t)).code).toBe(0);
  });

  it('keeps the key an earlier version gave (legacy:<row>), so its migrations stay migrated', async () => {
    const t = await freshDb('migrate-earlier-keys');
    const file = await legacyFile(LEGACY_USERS, LEGACY_MESSAGES);
    expect(await runToExitCode(migrate, [file], envOf(t), captureIo())).toBe(0);
    // What the earlier version stored for row 2: the same message under `legacy:2`.
    const messages = collectionOf(t.db, 'messages');
    const key = derivedKey(
      '15550100001',
      new Date('2024-01-01T10:00:02.250Z'),
      'outbound',
      2,
      'Bien, it\'s "fine" 😀',
    );
    const doc = await messages.findOne({ _id: key });
    expect(doc).not.toBeNull();
    expect((await messages.deleteOne({ _id: key })).deletedCount).toBe(1);
    await messages.insertOne({ ...doc!, _id: 'legacy:2' });
    const users = collectionOf(t.db, 'users');
    const u1 = await userIdOf(createDataStore(t.db), '15550100001');
    await users.updateOne({ _id: u1, lastMessageId: key }, { $set: { lastMessageId: 'legacy:2' } });

    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/messages inserted:\s+0/);
    expect(out).toMatch(/messages under an earlier version’s key:\s+1/);
    expect(await t.db.collection('messages').countDocuments()).toBe(7);
    expect((await healthOf(t)).code).toBe(0);
  });

  it('keeps rows with repeated or NULL ids apart and never gives a message to another user', async () => {
    const t = await freshDb('migrate-loose');
    const file = await legacyFile(
      [
        [1, '15550001111', 'First of id 1', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [1, '15550002222', 'Second of id 1', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [null, '15550003333', 'NULL id', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [0, '15550004444', 'Id zero', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [2, '15550005555', 'Two', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [4, null, 'NULL phone', null, null, null],
      ],
      [
        [1, 2, 'user', 'msg A (row id 1)', null, '2024-01-01 10:00:01'],
        [1, 2, 'user', 'msg B (also row id 1, different text)', null, '2024-01-01 10:00:02'],
        [null, 2, 'user', 'NULL row id', null, '2024-01-01 10:00:03'],
        [null, 2, 'user', 'NULL row id 2', null, '2024-01-01 10:00:04'],
        [5, 2, 'user', null, 'wamid.L5', '2024-01-01 10:00:05'],
        [6, null, 'user', 'NULL user', 'wamid.L6', '2024-01-01 10:00:06'],
        [7, 1, 'user', 'of an ambiguous user', 'wamid.L7', '2024-01-01 10:00:07'],
        [8, 2, null, 'NULL role', 'wamid.L8', '2024-01-01 10:00:08'],
        [9, 2, 'user', 'NULL date', 'wamid.L9', null],
      ],
      LOOSE_SCHEMA,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(3);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/messages inserted:\s+5/);
    // Row 6 has no user id (an orphan: the run goes on); row 7's user id is one two user rows share
    // (its user is not imported: exit 3), so it is not counted as an orphan.
    expect(out).toMatch(/orphans not imported \(archived\):\s+1$/m);
    expect(out).toMatch(/messages of users not imported \(archived\):\s+1$/m);
    expect(out).toMatch(/invalid messages not imported \(archived\):\s+2/);
    expect(out).toMatch(/messages not imported \(legacy message ids\):\s+6, 7, 8, 9/);
    expect(out).toMatch(/users without a valid number not imported \(archived\):\s+1/);
    expect(out).toMatch(/users not imported \(legacy user ids\):\s+4$/m);
    expect(out).toMatch(/users sharing a legacy id \(their messages archived\):\s+2/);
    // Each row not imported is archived whole, under the user it concerns when there is one.
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    const byReason = (reason: string) => archived.filter((e) => e['reason'] === reason);
    expect(archived).toHaveLength(5);
    expect(byReason('user without a valid number')).toHaveLength(1);
    expect(byReason('message without a user id')).toHaveLength(1);
    expect(byReason('message of a user id that several user rows share')).toHaveLength(1);
    const two = await userIdOf(createDataStore(t.db), '15550005555');
    expect(byReason('message with an unknown role').map((e) => e['userId'])).toEqual([two]);
    expect(byReason('message with an unreadable date').map((e) => e['userId'])).toEqual([two]);
    expect(JSON.parse(String(byReason('message with an unknown role')[0]?.['payloadJson']))).toMatchObject({
      table: 'message',
      row: { id: 8, user_id: 2, role: null, content: 'NULL role', meta_message_id: 'wamid.L8' },
    });
    const stored = await t.db.collection('messages').find({}).sort({ createdAt: 1 }).toArray();
    expect(stored.map((m) => [m['userId'], m['text']])).toEqual([
      [two, 'msg A (row id 1)'],
      [two, 'msg B (also row id 1, different text)'],
      [two, 'NULL row id'],
      [two, 'NULL row id 2'],
      [two, ''],
    ]);
    // Users are kept whatever their legacy id; the NULL-id user and the id-0 user got no message.
    expect(await t.db.collection('users').countDocuments()).toBe(5);
    for (const waId of ['15550003333', '15550004444', '15550001111', '15550002222']) {
      expect(await t.db.collection('users').findOne({ waId })).toMatchObject({ messageCount: 0 });
    }
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(3);
    expect(again.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
    expect(await t.db.collection('events').countDocuments({ kind: 'legacy_row' })).toBe(5);
    expect((await healthOf(t)).code).toBe(0);
  });
});

describe('bounds and formats', () => {
  it('writes only documents the schemas accept, and reads odd formats', async () => {
    const t = await freshDb('migrate-bounds');
    const now = Date.now();
    const blob = new TextEncoder().encode('blob bytes: Grüße 👋');
    const file = await legacyFile(
      [
        [1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [2, '1'.repeat(40), 'Forty digits', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [3, 'not a number', 'Bad Phone', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [4, '+33 6 12 34 56 78', 'N'.repeat(5000), 1, 'yesterday', 'also bad'],
        [5, '4915112345678', null, 1, 1704103200, 1704103200],
      ],
      [
        [1, 1, 'user', 'y'.repeat(150_000), 'wamid.O1', '2024-01-01 10:00:01'],
        [2, 1, 'assistant', 'z'.repeat(3_000_000), null, '2024-01-01 10:00:02'],
        [3, 1, 'user', 'long wamid', 'w'.repeat(1000), '2024-01-01 10:00:03'],
        [4, 1, 'user', blob, 'wamid.O4', '2024-01-01 10:00:04'],
        [5, 2, 'user', 'forty digit sender', 'wamid.O5', '2024-01-01 10:00:05'],
        [6, 4, 'user', 'huge-name sender', 'wamid.O6', '2024-01-02 09:00:00'],
        [7, 5, 'user', 'epoch seconds', 'wamid.O7', 1704103200],
        [8, 5, 'user', 'epoch milliseconds', 'wamid.O8', 1704103201000],
        [9, 5, 'user', 'slashes', 'wamid.O9', '2024/01/01 10:00:02'],
        [10, 5, 'user', 'ambiguous day and month', 'wamid.O10', '01/02/2024 10:00'],
        [11, 5, 'user', 'future', 'wamid.O11', '2999-01-01 00:00:00'],
        [12, 5, 'assistant', 'future without a wamid', null, '2999-01-01 00:00:01'],
      ],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(3);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/users without a valid number not imported \(archived\):\s+2/);
    expect(out).toMatch(/users not imported \(legacy user ids\):\s+2, 3$/m);
    // The forty-digit sender's message: its user row exists, so it is no orphan (README: an orphan's
    // user id is NULL or names no user row), but that user is not imported.
    expect(out).toMatch(/orphans not imported \(archived\):\s+0$/m);
    expect(out).toMatch(/messages of users not imported \(archived\):\s+1$/m);
    expect(out).toMatch(/invalid messages not imported \(archived\):\s+1/);
    expect(out).toMatch(/messages not imported \(legacy message ids\):\s+5, 10/);
    expect(out).toMatch(/names cut:\s+1/);
    expect(out).toMatch(/texts cut \(whole row archived\):\s+2/);
    expect(out).toMatch(/binary texts read as UTF-8:\s+1/);
    expect(out).toMatch(/message ids out of bounds \(derived key used\):\s+1/);
    expect(out).toMatch(/future times replaced:\s+2/);
    expect(out).toMatch(/user dates from the first message:\s+1/);
    expect(io.text()).not.toMatch(/Alice|5550100|blob bytes/);

    await expectRestorable(t);
    expect(await t.db.collection('users').countDocuments()).toBe(3);
    expect(await t.db.collection('users').findOne({ waId: { $regex: '^1111' } })).toBeNull();
    const message = (id: string) => t.db.collection('messages').findOne({ _id: id as never });
    expect(((await message('wamid.O1'))?.['text'] as string).length).toBe(65_536);
    expect((await message('wamid.O4'))?.['text']).toBe('blob bytes: Grüße 👋');
    expect(((await message('wamid.O7'))?.['createdAt'] as Date).toISOString()).toBe(
      '2024-01-01T10:00:00.000Z',
    );
    expect(((await message('wamid.O8'))?.['createdAt'] as Date).toISOString()).toBe(
      '2024-01-01T10:00:01.000Z',
    );
    expect(((await message('wamid.O9'))?.['createdAt'] as Date).toISOString()).toBe(
      '2024-01-01T10:00:02.000Z',
    );
    const future = ((await message('wamid.O11'))?.['createdAt'] as Date).getTime();
    expect(future).toBeGreaterThanOrEqual(now);
    expect(future).toBeLessThan(Date.now() + 1000);
    const long = await t.db.collection('messages').findOne({ text: 'long wamid' });
    expect(long?.['waMessageId']).toBeNull();
    expect(String(long?.['_id'])).toMatch(/^legacy:[0-9a-f]{32}$/);
    const huge = await t.db.collection('users').findOne({ waId: '33612345678' });
    expect((huge?.['name'] as string).length).toBe(256);
    // An unreadable creation date: the time of the user's first message, not 1970.
    expect((huge?.['createdAt'] as Date).toISOString()).toBe('2024-01-02T09:00:00.000Z');
    const epochUser = await t.db.collection('users').findOne({ waId: '4915112345678' });
    expect((epochUser?.['createdAt'] as Date).toISOString()).toBe('2024-01-01T10:00:00.000Z');
    expect((await healthOf(t)).code).toBe(0);
    // Run again: nothing new, the future-dated message without a wamid included.
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(3);
    expect(again.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
  });
});

/** The id versions before keyed ids gave a user: an unkeyed hash of the number. */
const earlierUserId = (waId: string): string =>
  'u_' + createHash('sha256').update(`wa:${waId}`).digest('hex').slice(0, 24);

describe('numbers and schemas as operators have them', () => {
  it('reads numbers as people wrote them, keeps the ids an earlier version gave, and tolerates columns', async () => {
    const t = await freshDb('migrate-numbers');
    // An earlier version stored `0044 20 7946 0004` under the digits it read, and +1 555 010 0001
    // as usual, both under the unkeyed ids earlier versions gave: those users stay who they are.
    const store = createDataStore(t.db);
    const earlier = { name: null, createdAt: new Date('2024-01-01T00:00:00Z'), optedOut: false };
    await store.maintenance.importUsers([
      { ...earlier, id: earlierUserId('00442079460004'), waId: '00442079460004' },
      { ...earlier, id: earlierUserId('15550100001'), waId: '15550100001' },
    ]);
    // No updated_at nor meta_message_id; an extra column each; a user_id without a declared type.
    const file = await legacyFile(
      [
        [1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', 'x'],
        [2, '0015550100001', 'Alice 00', 1, '2024-01-01 10:00:00', 'x'],
        [3, 'tel:+1-555-010-0001', 'Alice tel', 1, '2024-01-01 10:00:00', 'x'],
        [4, '4915112345679.0', 'From a float column', 1, '2024-01-01 10:00:00', 'x'],
        [5, '+44 (0) 20 7946 0003', 'UK', 1, '2024-01-01 10:00:00', 'x'],
        [6, '0044 20 7946 0004', 'Earlier', 1, '2024-01-01 10:00:00', 'x'],
      ],
      [
        [1, 2, 'user', 'to Alice', 1704103212.5, 'sms'],
        [2, 3, 'assistant', 'to Alice too', '2024-01-01T10:00:13+00:00', 'sms'],
        [3, '4', 'user', 'text user id', '2024-01-01 10:00:14', 'sms'],
        [4, 5, 'user', 'uk', '2024-01-01 10:00:15', 'sms'],
        [5, 6, 'user', 'earlier', '2024-01-01 10:00:16', 'sms'],
      ],
      `CREATE TABLE user (id INTEGER PRIMARY KEY, phone_number VARCHAR, name VARCHAR, is_active BOOLEAN, created_at DATETIME, extra TEXT);
       CREATE TABLE message (id INTEGER PRIMARY KEY, user_id, role VARCHAR, content VARCHAR, created_at DATETIME, channel TEXT);`,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/users merged \(same number\):\s+2/);
    const users = await t.db.collection('users').find({}).sort({ waId: 1 }).toArray();
    expect(users.map((u) => [u['waId'], u['messageCount']])).toEqual([
      ['00442079460004', 1],
      ['15550100001', 2],
      ['442079460003', 1],
      ['4915112345679', 1],
    ]);
    expect(users[0]?._id).toBe(earlierUserId('00442079460004'));
    expect(users[1]?._id).toBe(earlierUserId('15550100001'));
    // A user new to the database gets an id keyed with the database's key, not the bare hash.
    expect(users[2]?._id).not.toBe(earlierUserId('442079460003'));
    const first = await t.db.collection('messages').findOne({ text: 'to Alice' });
    expect((first?.['createdAt'] as Date).toISOString()).toBe('2024-01-01T10:00:12.500Z');
    expect(await t.db.collection('events').countDocuments()).toBe(0);
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(0);
    expect(again.stdout.join('\n')).toMatch(/already migrated:\s+9/);
    expect((await healthOf(t)).code).toBe(0);
  });

  it('run again after an earlier version migrated a user who has changed number since: no one is added', async () => {
    const t = await freshDb('migrate-moved');
    const file = await legacyFile(
      [[1, '+1 555 010 0007', 'Moved', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [
        [1, 1, 'user', 'hello', 'wamid.M1', '2024-01-01 10:00:01'],
        [2, 1, 'assistant', 'hi', null, '2024-01-01 10:00:02'],
      ],
    );
    expect(await runToExitCode(migrate, [file], envOf(t), captureIo())).toBe(0);
    // As an earlier version left it: the user under the unkeyed id of their number.
    const users = collectionOf(t.db, 'users');
    const migrated = await users.findOne({ waId: '15550100007' });
    if (!migrated) throw new Error('not migrated');
    const id = earlierUserId('15550100007');
    await users.insertOne({ ...migrated, _id: id });
    await users.deleteOne({ _id: migrated._id });
    await collectionOf(t.db, 'messages').updateMany({}, { $set: { userId: id } });
    // Then the person moved to another number (user_changed_number).
    const store = createDataStore(t.db);
    expect(await store.users.changeNumber(id, '15550109999')).toBe('moved');

    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/users inserted:\s+0/);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
    expect((await users.find({}).toArray()).map((u) => [u._id, u.waId])).toEqual([[id, '15550109999']]);
    expect((await healthOf(t)).code).toBe(0);
  });

  it('reads tables and columns named in capitals, as SQLite does (its names ignore case)', async () => {
    const t = await freshDb('migrate-capitals');
    const file = await legacyFile(
      [[1, '+1 555 010 0101', 'Capitals', 1, '2024-01-01 10:00:00', null]],
      [[1, 1, 'user', 'hello', 'wamid.CAP1', '2024-01-01 10:00:01']],
      `CREATE TABLE User (ID INTEGER PRIMARY KEY, Phone_Number VARCHAR, Name VARCHAR, Is_Active BOOLEAN, Created_At DATETIME, Updated_At DATETIME);
       CREATE TABLE MESSAGE (ID INTEGER PRIMARY KEY, User_Id INTEGER, Role VARCHAR, Content VARCHAR, Meta_Message_Id VARCHAR, Created_At DATETIME);`,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+1/);
    const user = await t.db.collection('users').findOne({ waId: '15550100101' });
    expect([user?.['name'], user?.['messageCount']]).toEqual(['Capitals', 1]);
    expect(await t.db.collection('messages').countDocuments({ waMessageId: 'wamid.CAP1' })).toBe(1);
  });

  it('migrates an empty database, and names a missing required column', async () => {
    const t = await freshDb('migrate-empty');
    const empty = await legacyFile([], []);
    const io = captureIo();
    expect(await runToExitCode(migrate, [empty], envOf(t), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+0/);
    const noRole = await legacyFile(
      [],
      [],
      `CREATE TABLE user (id INTEGER, phone_number VARCHAR);
       CREATE TABLE message (id INTEGER, user_id INTEGER, content VARCHAR, created_at DATETIME);`,
    );
    const refused = captureIo();
    expect(await runToExitCode(migrate, [noRole], envOf(t), refused)).toBe(1);
    expect(refused.text()).toMatch(/unexpected legacy schema: table "message" has no column "role"/);
  });
});

describe('round trips of a migration', () => {
  it("grow with its batches, not its rows: the users' summaries of a batch are one bulk write", async () => {
    const t = await freshDb('migrate-rt');
    const USERS = 400;
    const users: LegacyUserRow[] = Array.from({ length: USERS }, (_, i) => [
      i + 1,
      `1555${String(i + 1).padStart(7, '0')}`,
      `User ${i + 1}`,
      1,
      '2024-01-01 00:00:00',
      '2024-01-01 00:00:00',
    ]);
    // Two messages per user, interleaved in time as real conversations are: each batch of 500
    // messages names hundreds of users.
    const messages: LegacyMessageRow[] = Array.from({ length: USERS * 2 }, (_, n) => [
      n + 1,
      (n % USERS) + 1,
      n < USERS ? 'user' : 'assistant',
      `message ${n + 1}`,
      n < USERS ? `wamid.rt${n + 1}` : null,
      new Date(Date.UTC(2024, 0, 2) + n * 1_000).toISOString(),
    ]);
    const file = await legacyFile(users, messages);
    const userUpdates: string[] = [];
    const stop = observeCommands((c) => {
      if (c.databaseName !== t.dbName) return;
      if (
        c.command[c.commandName] === 'users' &&
        (c.commandName === 'update' || c.commandName === 'findAndModify')
      )
        userUpdates.push(c.commandName);
    });
    try {
      const io = captureIo();
      expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    } finally {
      stop();
    }
    // 800 messages in 2 batches: a bulk write of the summaries per batch, not one update per user.
    expect(userUpdates.length).toBeLessThanOrEqual(4);
    const u = await t.db.collection('users').findOne({ waId: '15550000007' });
    expect(u?.['messageCount']).toBe(2);
    expect(u?.['inboundCount']).toBe(1);
    expect(u?.['lastMessagePreview']).toBe(`message ${USERS + 7}`);
    expect((await healthOf(t)).code).toBe(0);

    // Run again (as after Ctrl-C): no earlier version's keys are stored, so no batch looks them up
    // by key (an `_id: {$in}` read scans every message on the embedded database: 10-20 s a batch
    // at 200,000 messages, and silent).
    const byKey: unknown[] = [];
    const stopAgain = observeCommands((c) => {
      if (c.databaseName !== t.dbName || c.commandName !== 'find' || c.command['find'] !== 'messages') return;
      const id = (c.command['filter'] as Record<string, unknown> | undefined)?.['_id'];
      if (id && typeof id === 'object' && '$in' in id) byKey.push(JSON.stringify(c.command).slice(0, 300));
    });
    try {
      const io = captureIo();
      expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
      expect(io.text()).toMatch(/messages inserted:\s+0\n/);
    } finally {
      stopAgain();
    }
    expect(byKey).toEqual([]);
  }, 120_000);
});

describe('dates that name no instant', () => {
  it('archives a row whose month, day, hour, minute, second or offset is out of range instead of rolling it over', async () => {
    const t = await freshDb('migrate-garbage-dates');
    const file = await legacyFile(
      [
        [1, '+1 555 010 0001', 'Alice', 1, '2024-13-01 00:00:00', '2024-01-01 25:00:00'],
        [2, '+1 555 010 0002', 'Bob', 1, '2024-01-01T09:00:00Z', '2024-01-01T09:00:00Z'],
      ],
      [
        [1, 1, 'user', 'month 13', 'wamid.G1', '2024-13-01 00:00:00'],
        [2, 1, 'user', 'minute 61', 'wamid.G2', '2024-01-01 10:61:00'],
        [3, 1, 'user', 'second 61', 'wamid.G3', '2024-01-01 10:00:61'],
        [4, 1, 'user', 'hour 24', 'wamid.G4', '2024-01-01T24:00:00Z'],
        [5, 1, 'user', 'February 31 in UTC', 'wamid.G5', '2024-02-31T00:00:00Z'],
        [6, 1, 'user', 'offset +99:99', 'wamid.G6', '2024-01-01T10:00:00+99:99'],
        [7, 1, 'user', 'day 0 with an offset', 'wamid.G7', '2024-01-00T10:00:00+01:00'],
        [8, 1, 'user', 'fine', 'wamid.G8', '2024-02-29T10:00:00.5+05:30'],
        [9, 2, 'user', 'fine too', 'wamid.G9', '2024-01-01 23:59:59'],
      ],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(3);
    expect(io.stdout.join('\n')).toMatch(/invalid messages not imported \(archived\):\s+7$/m);
    expect(io.stdout.join('\n')).toMatch(
      /messages not imported \(legacy message ids\):\s+1, 2, 3, 4, 5, 6, 7$/m,
    );
    const stored = await t.db.collection('messages').find({}).sort({ _id: 1 }).toArray();
    expect(stored.map((m) => [m['_id'], (m['createdAt'] as Date).toISOString()])).toEqual([
      ['wamid.G8', '2024-02-29T04:30:00.500Z'],
      ['wamid.G9', '2024-01-01T23:59:59.000Z'],
    ]);
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    expect(archived.map((a) => a['reason'])).toEqual(
      Array.from({ length: 7 }, () => 'message with an unreadable date'),
    );
    // Alice's creation and update dates (month 13, hour 25) are unreadable too: the time of her
    // first message instead.
    const alice = await t.db.collection('users').findOne({ waId: '15550100001' });
    expect((alice?.['createdAt'] as Date).toISOString()).toBe('2024-02-29T04:30:00.500Z');
    expect((await healthOf(t)).code).toBe(0);
  });
});

describe('one person under several user rows', () => {
  it('keeps the earliest creation date and a name any of the rows gives', async () => {
    const t = await freshDb('migrate-merged-rows');
    const file = await legacyFile(
      [
        // The same person three times: found first without a name, created last.
        [1, '+1 555 010 0001', null, 1, '2024-03-01 10:00:00', '2024-03-01 10:00:00'],
        [2, '0015550100001', 'Alice', 1, '2023-06-01 09:00:00', '2023-06-01 09:00:00'],
        [3, '1-555-010-0001', 'Alice B.', 1, '2023-09-01 09:00:00', '2023-09-01 09:00:00'],
        // A first row whose dates are unreadable, a second one with a date.
        [4, '+1 555 010 0002', 'Bob', 1, 'garbage', 'garbage'],
        [5, '0015550100002', null, 1, '2023-01-01 00:00:00', '2023-01-01 00:00:00'],
      ],
      [
        [1, 2, 'user', 'hello from 2023', 'wamid.P1', '2023-06-01 09:00:01'],
        [2, 1, 'user', 'hello from 2024', 'wamid.P2', '2024-03-01 10:00:01'],
        [3, 4, 'user', 'bob', 'wamid.P3', '2024-05-01 00:00:00'],
      ],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/users merged \(same number\):\s+3$/m);
    expect(io.stdout.join('\n')).toMatch(/user dates from the first message:\s+0$/m);
    const users = await t.db.collection('users').find({}).sort({ waId: 1 }).toArray();
    expect(users.map((u) => [u['waId'], u['name'], (u['createdAt'] as Date).toISOString()])).toEqual([
      ['15550100001', 'Alice', '2023-06-01T09:00:00.000Z'],
      ['15550100002', 'Bob', '2023-01-01T00:00:00.000Z'],
    ]);
    // The new users are counted on the days they were created.
    const days = await t.db
      .collection('stats')
      .find({ _id: { $regex: '^day:' } } as never)
      .toArray();
    expect(
      days
        .filter((d) => d['newUsers'])
        .map((d) => [d['_id'], d['newUsers']])
        .sort(),
    ).toEqual([
      ['day:2023-01-01', 1],
      ['day:2023-06-01', 1],
    ]);
    expect((await healthOf(t)).code).toBe(0);
  });
});

describe('texts that are not UTF-8', () => {
  it('imports them readable and archives the whole row with the bytes as the file holds them', async () => {
    const t = await freshDb('migrate-invalid-utf8');
    const invalidBlob = new Uint8Array([0x68, 0x69, 0xff, 0xfe, 0x80]);
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [
        [1, 1, 'user', invalidBlob, 'wamid.U1', '2024-01-01 10:00:01'],
        [2, 1, 'user', new TextEncoder().encode('valid bytes: Grüße'), 'wamid.U2', '2024-01-01 10:00:02'],
        [4, 1, 'user', 'an honest \uFFFD replacement character', 'wamid.U4', '2024-01-01 10:00:04'],
      ],
      // A TEXT value with bytes that are not UTF-8 (a lone surrogate's and a truncated emoji's):
      // what another program may have written through a C API.
      `CREATE TABLE user (id INTEGER PRIMARY KEY, phone_number VARCHAR, name VARCHAR, is_active BOOLEAN, created_at DATETIME, updated_at DATETIME);
       CREATE TABLE message (id INTEGER PRIMARY KEY, user_id INTEGER, role VARCHAR, content VARCHAR, meta_message_id VARCHAR, created_at DATETIME);
       INSERT INTO message VALUES (3, 1, 'user', CAST(X'6F6BEDA080F09F98' AS TEXT), 'wamid.U3', '2024-01-01 10:00:03');`,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/binary texts read as UTF-8:\s+2$/m);
    expect(out).toMatch(/texts not valid UTF-8 \(whole row archived\):\s+2$/m);
    const text = async (id: string) =>
      (await t.db.collection('messages').findOne({ _id: id as never }))?.['text'];
    expect(await text('wamid.U1')).toBe('hi\uFFFD\uFFFD\uFFFD');
    expect(await text('wamid.U2')).toBe('valid bytes: Grüße');
    expect(await text('wamid.U4')).toBe('an honest \uFFFD replacement character');
    expect(String(await text('wamid.U3'))).toMatch(/^ok\uFFFD+$/);
    // Nothing of the file is lost: the two rows are archived with their bytes.
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    const rows = archived.map((a) => JSON.parse(String(a['payloadJson'])).row as Record<string, unknown>);
    expect(archived.map((a) => a['reason'])).toEqual([
      'message text not valid UTF-8 (imported with U+FFFD)',
      'message text not valid UTF-8 (imported with U+FFFD)',
    ]);
    expect(rows.map((r) => [r['id'], r['content']]).sort()).toEqual([
      [1, { base64: Buffer.from(invalidBlob).toString('base64') }],
      [3, { base64: Buffer.from('6F6BEDA080F09F98', 'hex').toString('base64') }],
    ]);
    expect((await healthOf(t)).code).toBe(0);
    // Run again: nothing more archived or imported.
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(0);
    expect(again.stdout.join('\n')).toMatch(/rows archived \(kind legacy_row\):\s+0$/m);
    expect(again.stdout.join('\n')).toMatch(/messages inserted:\s+0$/m);
  });
  it('counts a text both not UTF-8 and too long under both, and archives its row once', async () => {
    const t = await freshDb('migrate-invalid-utf8-long');
    // 70,000 bytes of `a` and one that is no UTF-8: read as 70,001 characters, past 65,536.
    const bytes = new Uint8Array(70_001).fill(0x61);
    bytes[70_000] = 0xff;
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [[1, 1, 'user', bytes, 'wamid.UL1', '2024-01-01 10:00:01']],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/texts cut \(whole row archived\):\s+1$/m);
    expect(out).toMatch(/texts not valid UTF-8 \(whole row archived\):\s+1$/m);
    expect(out).toMatch(/rows archived \(kind legacy_row\):\s+1$/m);
    const stored = await t.db.collection('messages').findOne({ _id: 'wamid.UL1' as never });
    expect(String(stored?.['text'])).toBe('a'.repeat(65_536));
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    expect(archived.map((a) => a['reason'])).toEqual([
      'message text not valid UTF-8 and longer than 65,536 characters (imported with U+FFFD, cut)',
    ]);
    const row = JSON.parse(String(archived[0]?.['payloadJson'])).row as Record<string, unknown>;
    expect(row['content']).toEqual({ base64: Buffer.from(bytes).toString('base64') });
  });
  it('counts 65,536 in characters: a text of emoji keeps 65,536 of them, and one of 32,769 is not cut', async () => {
    const t = await freshDb('migrate-emoji-long');
    // An emoji is two UTF-16 units: cut by units, the first text kept half of its emoji, and the
    // second (65,538 units, 32,769 characters) was counted cut and archived.
    const emoji = '\u{1F600}';
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [
        [1, 1, 'user', emoji.repeat(70_000), 'wamid.EM1', '2024-01-01 10:00:01'],
        [2, 1, 'user', emoji.repeat(32_769), 'wamid.EM2', '2024-01-01 10:00:02'],
      ],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/texts cut \(whole row archived\):\s+1$/m);
    const text = async (id: string) =>
      String((await t.db.collection('messages').findOne({ _id: id as never }))?.['text']);
    expect(await text('wamid.EM1')).toBe(emoji.repeat(65_536));
    expect(await text('wamid.EM2')).toBe(emoji.repeat(32_769));
  });
});

describe('a dry run over a database that holds users', () => {
  it('counts users new and merged as a run does, and writes nothing', async () => {
    const t = await freshDb('migrate-dry-stored');
    const contents = async () =>
      Object.fromEntries(
        await Promise.all(
          ['users', 'messages', 'stats', 'events'].map(
            async (name) => [name, await t.db.collection(name).find({}).sort({ _id: 1 }).toArray()] as const,
          ),
        ),
      );
    const first = await legacyFile(
      [[1, '+1 555 010 0007', 'Moved', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [[1, 1, 'user', 'hello', 'wamid.D1', '2024-01-01 10:00:01']],
    );
    // On an empty database, the dry run makes no deployment key either.
    const empty = await contents();
    expect(await runToExitCode(migrate, [first, '--dry-run'], envOf(t), captureIo())).toBe(0);
    expect(await contents()).toEqual(empty);
    expect(await runToExitCode(migrate, [first], envOf(t), captureIo())).toBe(0);
    // The person then moved to another number (user_changed_number).
    const users = collectionOf(t.db, 'users');
    const stored = await users.findOne({ waId: '15550100007' });
    if (!stored) throw new Error('not migrated');
    expect(await createDataStore(t.db).users.changeNumber(stored._id, '15550109999')).toBe('moved');
    // A second file holds both of their numbers, and someone new.
    const second = await legacyFile(
      [
        [1, '+1 555 010 0007', 'Moved', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [2, '+1 555 010 9999', 'Moved', 1, '2024-02-01 10:00:00', '2024-02-01 10:00:00'],
        [3, '+1 555 010 0008', 'New', 1, '2024-02-01 10:00:00', '2024-02-01 10:00:00'],
      ],
      [
        [1, 2, 'user', 'new number', 'wamid.D2', '2024-02-01 10:00:01'],
        [2, 3, 'user', 'hi', 'wamid.D3', '2024-02-01 10:00:02'],
      ],
    );
    const before = await contents();
    const dry = captureIo();
    expect(await runToExitCode(migrate, [second, '--dry-run'], envOf(t), dry), dry.text()).toBe(0);
    expect(await contents()).toEqual(before);
    const dryOut = dry.stdout.join('\n');
    expect(dryOut).toMatch(/^\s*users:\s+2$/m);
    expect(dryOut).toMatch(/users merged \(same number\):\s+1$/m);
    expect(dryOut).toMatch(/users new \(not stored yet\):\s+1$/m);
    const run = captureIo();
    expect(await runToExitCode(migrate, [second], envOf(t), run), run.text()).toBe(0);
    const runOut = run.stdout.join('\n');
    expect(runOut).toMatch(/^\s*users:\s+2$/m);
    expect(runOut).toMatch(/users merged \(same number\):\s+1$/m);
    expect(runOut).toMatch(/users inserted:\s+1$/m);
    expect((await healthOf(t)).code).toBe(0);
  });
});

describe('names that are not UTF-8', () => {
  it('imports them readable and archives the whole user row with the bytes as the file holds them', async () => {
    const t = await freshDb('migrate-invalid-utf8-names');
    const blobName = new Uint8Array([0x41, 0x6e, 0xff]);
    const file = await legacyFile(
      [
        [2, '+1 555 010 0002', blobName, 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
        [3, '+1 555 010 0003', new TextEncoder().encode('Grüße'), 1, '2024-01-01 10:00:00', null],
        [4, '+1 555 010 0004', 'Bob', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00'],
      ],
      [[1, 1, 'user', 'hello', 'wamid.N1', '2024-01-01 10:00:01']],
      // A TEXT name with bytes that are not UTF-8 (`Jø` and a stray 0xFF), as a C API may write it.
      `CREATE TABLE user (id INTEGER PRIMARY KEY, phone_number VARCHAR, name VARCHAR, is_active BOOLEAN, created_at DATETIME, updated_at DATETIME);
       CREATE TABLE message (id INTEGER PRIMARY KEY, user_id INTEGER, role VARCHAR, content VARCHAR, meta_message_id VARCHAR, created_at DATETIME);
       INSERT INTO user VALUES (1, '+1 555 010 0001', CAST(X'4AC3B8FF' AS TEXT), 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00');`,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/names not valid UTF-8 \(whole row archived\):\s+2$/m);
    const nameOf = async (waId: string) => (await t.db.collection('users').findOne({ waId }))?.['name'];
    expect(await nameOf('15550100001')).toBe('J\u00f8\uFFFD');
    expect(await nameOf('15550100002')).toBe('An\uFFFD');
    expect(await nameOf('15550100003')).toBe('Grüße');
    expect(await nameOf('15550100004')).toBe('Bob');
    // Nothing of the file is lost: both rows are archived, under their user, with their bytes.
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    expect(archived.map((a) => a['reason'])).toEqual([
      'user name not valid UTF-8 (imported with U+FFFD)',
      'user name not valid UTF-8 (imported with U+FFFD)',
    ]);
    const rows = archived.map((a) => JSON.parse(String(a['payloadJson'])).row as Record<string, unknown>);
    expect(rows.map((r) => [r['id'], r['name']]).sort()).toEqual([
      [1, { base64: Buffer.from('4AC3B8FF', 'hex').toString('base64') }],
      [2, { base64: Buffer.from(blobName).toString('base64') }],
    ]);
    const userIds = await Promise.all(
      ['15550100001', '15550100002'].map(
        async (waId) => (await t.db.collection('users').findOne({ waId }))?._id,
      ),
    );
    expect(archived.map((a) => a['userId']).sort()).toEqual([...userIds].sort());
    expect((await healthOf(t)).code).toBe(0);
    // Run again: nothing more archived or imported.
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(0);
    expect(again.stdout.join('\n')).toMatch(/rows archived \(kind legacy_row\):\s+0$/m);
    expect(again.stdout.join('\n')).toMatch(/users inserted:\s+0$/m);
  });
});

describe('rows longer than one archived item', () => {
  it('archives them whole, in parts that give the row back', async () => {
    const t = await freshDb('migrate-archive-parts');
    // Past an archived item's bound (256 KiB of JSON): accents, emoji, and characters JSON escapes.
    const long = `start ${'é👋\u0001"'.repeat(120_000)} end`;
    const unknownRole = `other ${'x'.repeat(700_000)} end`;
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 10:00:00', '2024-01-01 10:00:00']],
      [
        [1, 1, 'user', long, 'wamid.L1', '2024-01-01 10:00:01'],
        [2, 1, 'system', unknownRole, null, '2024-01-01 10:00:02'],
      ],
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(3);
    // Two rows archived, whatever the number of items they take.
    expect(io.stdout.join('\n')).toMatch(/rows archived \(kind legacy_row\):\s+2$/m);
    const message = await t.db.collection('messages').findOne({ _id: 'wamid.L1' as never });
    // 65,536 characters (an emoji is one), as the webhook keeps a text.
    expect(message?.['text']).toBe(Array.from(long).slice(0, 65_536).join(''));
    const archived = await t.db.collection('events').find({ kind: 'legacy_row' }).toArray();
    // Every item within the bound, valid JSON; each row's parts, in order, give its content back.
    const payloads = archived.map((a) => {
      expect(a['truncated']).toBe(false);
      return JSON.parse(String(a['payloadJson'])) as {
        row: Record<string, unknown>;
        part?: number;
        parts?: number;
      };
    });
    const contentOf = (id: number) => {
      const parts = payloads.filter((p) => p.row['id'] === id).sort((a, b) => (a.part ?? 1) - (b.part ?? 1));
      expect(parts.length).toBeGreaterThan(1);
      expect(parts.map((p) => [p.part, p.parts])).toEqual(parts.map((_, i) => [i + 1, parts.length]));
      return parts.map((p) => p.row['content']).join('');
    };
    expect(contentOf(1)).toBe(long);
    expect(contentOf(2)).toBe(unknownRole);
    expect(payloads.find((p) => p.row['id'] === 2)?.row).toMatchObject({ role: 'system', user_id: 1 });
    expect((await healthOf(t)).code).toBe(0);
    const again = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), again)).toBe(3);
    expect(again.stdout.join('\n')).toMatch(/rows archived \(kind legacy_row\):\s+0$/m);
    expect(again.stdout.join('\n')).toMatch(/rows archived by an earlier run:\s+2$/m);
    const dry = captureIo();
    expect(await runToExitCode(migrate, [file, '--dry-run'], envOf(t), dry)).toBe(3);
    expect(dry.stdout.join('\n')).toMatch(/rows to archive:\s+2$/m);
  }, 60_000);
});

describe('epoch times finer than milliseconds', () => {
  it('reads microseconds and nanoseconds as such, not as a time in the future replaced by now', async () => {
    const t = await freshDb('migrate-epoch-us');
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, 1704103200123456, 1704103200123456]],
      [
        [1, 1, 'user', 'microseconds', 'wamid.E1', 1704103201123456],
        [2, 1, 'user', 'microseconds as text', 'wamid.E2', '1704103202123456'],
        [4, 1, 'user', 'nanoseconds as text', 'wamid.E4', '1704103204123456789'],
        [5, 1, 'user', 'milliseconds', 'wamid.E5', 1704103205123],
      ],
      // Nanoseconds as an INTEGER (past 2^53).
      `${LOOSE_SCHEMA}
       INSERT INTO message VALUES (3, 1, 'user', 'nanoseconds', 'wamid.E3', 1704103203123456789);`,
    );
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/future times replaced:\s+0$/m);
    const stored = await t.db.collection('messages').find({}).sort({ _id: 1 }).toArray();
    expect(stored.map((m) => [m['_id'], (m['createdAt'] as Date).toISOString()])).toEqual([
      ['wamid.E1', '2024-01-01T10:00:01.123Z'],
      ['wamid.E2', '2024-01-01T10:00:02.123Z'],
      ['wamid.E3', '2024-01-01T10:00:03.123Z'],
      ['wamid.E4', '2024-01-01T10:00:04.123Z'],
      ['wamid.E5', '2024-01-01T10:00:05.123Z'],
    ]);
    const user = await t.db.collection('users').findOne({ waId: '15550100001' });
    expect((user?.['createdAt'] as Date).toISOString()).toBe('2024-01-01T10:00:00.123Z');
  });
});

describe('a large legacy file', () => {
  it('is read a row at a time: its texts are never all in memory at once', async () => {
    const t = await freshDb('migrate-large');
    // 20,000 messages of 4,000 characters: 80 million characters, more than the heap the script
    // is given (64 MiB) could hold at once.
    const SQL = await initSqlJs();
    const db = new SQL.Database();
    db.run(LOOSE_SCHEMA);
    db.run(
      "INSERT INTO user VALUES (1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 00:00:00', '2024-01-01 00:00:00')",
    );
    db.run('BEGIN');
    const insert = db.prepare('INSERT INTO message VALUES (?, 1, ?, ?, ?, ?)');
    for (let i = 1; i <= 20_000; i++) {
      const at = new Date(Date.UTC(2024, 0, 2) + (20_000 - i) * 1000).toISOString();
      insert.run([
        i,
        i % 2 ? 'user' : 'assistant',
        `${i} ${'é'.repeat(4_000)}`,
        i % 2 ? `wamid.big${i}` : null,
        at,
      ]);
    }
    insert.free();
    db.run('COMMIT');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'legacy-large-'));
    files.push(path.join(dir, 'large.db'));
    await fs.writeFile(path.join(dir, 'large.db'), db.export());
    db.close();
    const tsx = path.join(process.cwd(), 'node_modules', '.bin', 'tsx');
    const run = await new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      execFile(
        tsx,
        ['scripts/migrate.ts', path.join(dir, 'large.db'), '--dry-run'],
        {
          env: {
            ...process.env,
            NODE_OPTIONS: '--max-old-space-size=64',
            // A dry run reads the users stored (and writes nothing).
            MONGODB_URI: t.uri,
            MONGODB_DATABASE: t.dbName,
          },
          maxBuffer: 10 * 1024 * 1024,
        },
        (error, out, err) => resolve({ code: error ? (error.code as number | null) : 0, out, err }),
      );
    });
    expect(run.err).not.toMatch(/heap out of memory/);
    expect(run.code, run.err.slice(-2000)).toBe(0);
    expect(run.out).toMatch(/messages:\s+20000$/m);
    expect(run.out).toMatch(/inbound:\s+10000$/m);
  }, 120_000);
});

describe('progress while the file is read', () => {
  it('shows it for every pass over the file, before anything is written and in a dry run', async () => {
    // Reading a file of a million messages takes more than a minute before the first batch is
    // written (and a dry run is only that): a reading that showed nothing looked hung.
    const t = await freshDb('migrate-reading-progress');
    const messages: LegacyMessageRow[] = Array.from({ length: 200 }, (_, i) => [
      i + 1,
      1,
      i % 2 ? 'assistant' : 'user',
      `message ${i}`,
      null,
      new Date(Date.UTC(2024, 0, 2) + i * 1000).toISOString(),
    ]);
    const file = await legacyFile(
      [[1, '+1 555 010 0001', 'Alice', 1, '2024-01-01 00:00:00', '2024-01-01 00:00:00']],
      messages,
    );
    const dry = captureIo();
    expect(await runToExitCode(migrate, [file, '--dry-run'], envOf(t), dry)).toBe(0);
    const dryErr = dry.stderr.join('\n');
    // Off a terminal: a line at every 10 % of each pass (the file's rows, then their order).
    for (const pct of [10, 50, 90, 100]) expect(dryErr).toMatch(new RegExp(`^reading: ${pct}% \\(`, 'm'));
    expect(dryErr).toMatch(/^counting: 100% \(200\/200\)$/m);
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(0);
    const lines = io.stderr;
    const readAt = lines.findIndex((l) => l.startsWith('reading: 100% (400/400)'));
    expect(readAt, lines.join('\n')).toBeGreaterThan(-1);
    expect(lines.findIndex((l) => l.startsWith('migrating:'))).toBeGreaterThan(readAt);
  });
});

describe('a legacy database in write-ahead-log mode', () => {
  // test/fixtures/legacy-wal/: made by SQLite itself (Python's sqlite3) in WAL mode. The tables,
  // a user and a message were checkpointed into legacy.db; then two transactions were committed
  // (a second user with five messages; the first user renamed and a message added) and the process
  // ended without a checkpoint, as a killed bot, or files copied while it ran, leave them: those
  // transactions are only in legacy.db-wal, and SQLite reads them as part of the database.
  const FIXTURE = path.resolve(__dirname, '..', 'fixtures', 'legacy-wal');

  async function walCopy(tail?: Buffer): Promise<string> {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'legacy-wal-'));
    files.push(path.join(dir, 'legacy.db'));
    await fs.copyFile(path.join(FIXTURE, 'legacy.db'), path.join(dir, 'legacy.db'));
    const wal = await fs.readFile(path.join(FIXTURE, 'legacy.db-wal'));
    await fs.writeFile(path.join(dir, 'legacy.db-wal'), tail ? Buffer.concat([wal, tail]) : wal);
    return path.join(dir, 'legacy.db');
  }

  it('imports what its committed transactions hold, as SQLite reads it, and leaves the files as they were', async () => {
    const t = await freshDb('migrate-wal');
    const file = await walCopy();
    const before = await Promise.all(
      ['legacy.db', 'legacy.db-wal'].map((f) => fs.readFile(path.join(path.dirname(file), f))),
    );
    const dry = captureIo();
    expect(await runToExitCode(migrate, [file, '--dry-run'], envOf(t), dry)).toBe(0);
    expect(dry.stdout.join('\n')).toMatch(/legacy users:\s+2\n\s+legacy messages:\s+7\n/);
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages inserted:\s+7/);
    const users = await t.db.collection('users').find({}).sort({ waId: 1 }).toArray();
    expect(users.map((u) => [u['waId'], u['name'], u['messageCount']])).toEqual([
      ['15550100001', 'Renamed in the WAL', 2],
      ['15550100002', 'Only in the WAL', 5],
    ]);
    const texts = await t.db.collection('messages').find({}).sort({ createdAt: 1 }).toArray();
    expect(texts.map((m) => m['text'])).toEqual([
      'in the file itself',
      'wal message 2',
      'wal message 3',
      'wal message 4',
      'wal message 5',
      'wal message 6',
      'second transaction',
    ]);
    const after = await Promise.all(
      ['legacy.db', 'legacy.db-wal'].map((f) => fs.readFile(path.join(path.dirname(file), f))),
    );
    expect(after).toEqual(before);
    expect((await healthOf(t)).code).toBe(0);
  });

  it('ignores a frame torn by a crash after the last commit, as SQLite does', async () => {
    const t = await freshDb('migrate-wal-torn');
    // A frame header and part of a page, checksums that match nothing: a write cut short.
    const torn = Buffer.alloc(24 + 1000, 0xab);
    const io = captureIo();
    expect(await runToExitCode(migrate, [await walCopy(torn)], envOf(t), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/legacy messages:\s+7\n/);
  });

  it('refuses a file whose rollback journal is hot (a write cut short), changing nothing', async () => {
    const t = await freshDb('migrate-hot-journal');
    const file = await legacyFile(LEGACY_USERS, LEGACY_MESSAGES);
    // A journal's header as SQLite writes it when a transaction starts: its magic, then a count.
    const header = Buffer.alloc(512);
    Buffer.from('d9d505f920a163d7', 'hex').copy(header);
    header.writeUInt32BE(1, 8);
    await fs.writeFile(`${file}-journal`, header);
    const io = captureIo();
    expect(await runToExitCode(migrate, [file], envOf(t), io)).toBe(1);
    expect(io.stderr.at(-1)).toBe(
      `error: legacy.db has a rollback journal (legacy.db-journal): a write to it was cut short, and ` +
        'SQLite rolls that back when it opens the file; open it once with SQLite (for example ' +
        "`sqlite3 legacy.db 'PRAGMA integrity_check'`) with the old bot stopped, then run this again",
    );
    expect(await t.db.collection('messages').countDocuments()).toBe(0);
    expect(await t.db.collection('users').countDocuments()).toBe(0);
  });
});
