// npm run migrate run again after an operator erased a migrated person: an erase stays done. Their
// legacy messages from before it are left out (not imported, not archived), no user comes back
// under the erased id (a late retry of the DELETE still finds no one), and a person who wrote again
// since keeps only their new conversation. What the file holds from after the erase is imported.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { MongoClient, type CommandStartedEvent } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manageHandlers } from '../../functions/manage';
import { createDataStore } from '../../shared/data';
import { runtimeOf } from '../../shared/deps';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as migrate } from '../../scripts/migrate';
import { startTestApp, type TestApp } from '../helpers/app';
import { testDatabase } from '../helpers/db';
import { BOOTSTRAP, call } from '../helpers/manage-fixture';
import { userIdOf } from '../helpers/users';
import { captureIo, writeLegacyDb, type LegacyMessageRow, type LegacyUserRow } from '../fixtures/scripts';

let app: TestApp;
let handlers: ReturnType<typeof manageHandlers>;
const files: string[] = [];
const env = () => ({ MONGODB_URI: app.database.uri, MONGODB_DATABASE: app.database.dbName });

// A: erased, nothing of theirs after. B: erased, then wrote again (the corrected file holds a
// message of theirs from after the erase too). C: never erased. D: erased, and the corrected file
// holds a message of theirs from after the erase.
const A = '15550300001';
const B = '15550300002';
const C = '15550300003';
const D = '15550300004';
const USERS: LegacyUserRow[] = [
  [1, `+${A}`, 'Forget Me', 1, '2024-02-01 10:00:00', '2024-02-01 10:00:00'],
  [2, `+${B}`, 'Came Back', 1, '2024-02-01 11:00:00', '2024-02-01 11:00:00'],
  [3, `+${C}`, 'Stays', 1, '2024-02-01 12:00:00', '2024-02-01 12:00:00'],
  [4, `+${D}`, 'Later Too', 1, '2024-02-01 13:00:00', '2024-02-01 13:00:00'],
];
const LONG = 'secret of A '.repeat(6_000); // past 65,536 characters: imported cut, the row archived
const MESSAGES: LegacyMessageRow[] = [
  [1, 1, 'user', 'please forget me', 'wamid.ERASED.A1', '2024-02-01 10:00:01'],
  [2, 1, 'assistant', 'noted', null, '2024-02-01 10:00:02'],
  [3, 1, 'user', LONG, 'wamid.ERASED.A2', '2024-02-01 10:00:03'],
  [4, 2, 'user', 'old words of B', 'wamid.ERASED.B1', '2024-02-01 11:00:01'],
  [5, 2, 'assistant', 'old answer to B', null, '2024-02-01 11:00:02'],
  [6, 3, 'user', 'hello from C', 'wamid.KEPT.C1', '2024-02-01 12:00:01'],
  [7, 4, 'user', 'old words of D', 'wamid.ERASED.D1', '2024-02-01 13:00:01'],
];

const ids: Record<'A' | 'B' | 'D', string> = { A: '', B: '', D: '' };
/** When B and D wrote again (in the corrected file): after the erases, before the second run. */
let afterErase = new Date(0);
let corrected = '';

async function run(args: string[]) {
  const io = captureIo();
  const code = await runToExitCode(migrate, args, env(), io);
  return { code, out: io.stdout.join('\n'), text: io.text() };
}

async function snapshot() {
  const out: Record<string, unknown[]> = {};
  for (const name of ['users', 'messages', 'stats', 'events'])
    out[name] = await app.database.db.collection(name).find({}).sort({ _id: 1 }).toArray();
  return out;
}

const messagesOf = (userId: string) =>
  app.database.db
    .collection('messages')
    .find({ userId })
    .sort({ createdAt: 1 })
    .toArray()
    .then((docs) => docs.map((m) => m['text'] as string));

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: BOOTSTRAP });
  handlers = manageHandlers(runtimeOf(app.services));
  files.push(await writeLegacyDb(USERS, MESSAGES));
});

afterAll(async () => {
  await app?.close();
  for (const file of files) await fs.rm(path.dirname(file), { recursive: true, force: true });
});

describe('npm run migrate after an erase', () => {
  it('migrates, then the operator erases three people and one of them writes again', async () => {
    const first = await run([files[0] as string]);
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/users inserted:\s+4$/m);
    expect(first.out).toMatch(/messages inserted:\s+7$/m);
    ids.A = await userIdOf(app.services.data, A);
    ids.B = await userIdOf(app.services.data, B);
    ids.D = await userIdOf(app.services.data, D);
    // A's long text was archived beside its import (filed under A: the erase removes it).
    expect(await app.database.db.collection('events').countDocuments({ userId: ids.A })).toBeGreaterThan(0);
    for (const id of Object.values(ids))
      expect((await call(handlers.user, { method: 'DELETE', params: { id } })).status).toBe(204);
    await app.userWrites(B, 'I am back');
    expect(await userIdOf(app.services.data, B)).not.toBe(ids.B);
    await new Promise((resolve) => setTimeout(resolve, 20));
    afterErase = new Date();
    corrected = await writeLegacyDb(USERS, [
      ...MESSAGES,
      [8, 4, 'user', 'new words of D', 'wamid.KEPT.D2', afterErase.toISOString()],
      [9, 2, 'user', 'new words of B', 'wamid.KEPT.B2', afterErase.toISOString()],
    ]);
    files.push(corrected);
  });

  it('a dry run counts what the erase leaves out', async () => {
    const before = await snapshot();
    const dry = await run([corrected, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.out).toMatch(/users left out \(erased\):\s+1$/m);
    expect(dry.out).toMatch(/messages left out \(their user was erased\):\s+6$/m);
    expect(dry.out).toMatch(/^\s*users:\s+3$/m);
    expect(dry.out).toMatch(/^\s*messages:\s+3$/m);
    expect(dry.out).toMatch(/users new \(not stored yet\):\s+1$/m);
    expect(dry.out).toMatch(/rows to archive:\s+0$/m);
    expect(await snapshot()).toEqual(before);
  });

  it('running it again brings back nothing an erase removed', async () => {
    const again = await run([corrected]);
    expect(again.code).toBe(0);
    // A: no one, under the erased id or any other; nothing of theirs, imported or archived.
    expect(await app.services.data.users.getUser(ids.A)).toBeNull();
    expect(await app.services.data.users.findByIdentity({ waId: A, bsuid: null })).toBeNull();
    const messages = app.database.db.collection('messages');
    expect(
      await messages.countDocuments({ _id: { $in: ['wamid.ERASED.A1', 'wamid.ERASED.A2'] } as never }),
    ).toBe(0);
    expect(
      await messages.countDocuments({ text: { $in: ['noted', 'old words of B', 'old words of D'] } }),
    ).toBe(0);
    const events = app.database.db.collection('events');
    expect(await events.countDocuments({ kind: 'legacy_row' })).toBe(0);

    // B wrote again since: their new conversation, and what the file holds from after the erase,
    // under their new id; the old one holds no one, and nothing from before the erase joins them.
    const b = await userIdOf(app.services.data, B);
    expect(b).not.toBe(ids.B);
    expect(await app.services.data.users.getUser(ids.B)).toBeNull();
    const bTexts = await messagesOf(b);
    expect(bTexts).toHaveLength(3);
    expect(bTexts[0]).toBe('I am back');
    expect(bTexts[2]).toBe('new words of B');
    expect(await app.services.data.users.getUser(b)).toMatchObject({
      messageCount: 3,
      lastMessagePreview: 'new words of B',
    });

    // D: what they sent after the erase, under an id no erase used, created when they sent it.
    const d = await userIdOf(app.services.data, D);
    expect(d).not.toBe(ids.D);
    expect(await app.services.data.users.getUser(ids.D)).toBeNull();
    expect(await messagesOf(d)).toEqual(['new words of D']);
    const dUser = await app.services.data.users.getUser(d);
    expect(dUser).toMatchObject({ messageCount: 1, name: 'Later Too' });
    expect(dUser?.createdAt.toISOString()).toBe(afterErase.toISOString());

    // C was never erased: as the first run left them.
    const c = await userIdOf(app.services.data, C);
    expect(await messagesOf(c)).toEqual(['hello from C']);

    // The counters: C, B's new record and D; C's, B's new (with its answer) and D's new messages.
    const stats = (await call(handlers.stats)).body as {
      users: { total: number };
      messages: { total: number };
    };
    expect(stats.users.total).toBe(3);
    expect(stats.messages.total).toBe(5);

    expect(again.out).toMatch(/users left out \(erased\):\s+1$/m);
    expect(again.out).toMatch(/messages left out \(their user was erased\):\s+6$/m);
    expect(again.out).toMatch(/users inserted:\s+1$/m);
    expect(again.out).toMatch(/messages inserted:\s+2$/m);
    expect(again.out).toMatch(/rows archived \(kind legacy_row\):\s+0$/m);
    // Never a number or a text of theirs.
    expect(again.text).not.toMatch(/5550300|forget|came back|old words|new words|secret/i);
  });

  it('a late retry of the DELETE still finds no one, and leaves the person who wrote again alone', async () => {
    for (const id of Object.values(ids))
      expect((await call(handlers.user, { method: 'DELETE', params: { id } })).status).toBe(404);
    expect(await messagesOf(await userIdOf(app.services.data, B))).toContain('I am back');
  });

  it('changes nothing when run once more', async () => {
    const before = await snapshot();
    const again = await run([corrected]);
    expect(again.code).toBe(0);
    expect(again.out).toMatch(/users inserted:\s+0$/m);
    expect(again.out).toMatch(/messages inserted:\s+0$/m);
    expect(again.out).toMatch(/users left out \(erased\):\s+1$/m);
    expect(await snapshot()).toEqual(before);
  });
});

describe('what looking for erases costs a migration', () => {
  /** The commands on `events` that `idsForImport` of `waIds` sends to database `dbName`, and its answer. */
  async function eventReads(dbName: string, waIds: string[]) {
    const commands: CommandStartedEvent[] = [];
    const client = new MongoClient(app.database.uri, { monitorCommands: true });
    client.on('commandStarted', (event) => commands.push(event));
    try {
      const ids = await createDataStore(client.db(dbName)).users.idsForImport(waIds);
      const onEvents = commands.filter(
        (c) => (c.command as Record<string, unknown>)[c.commandName] === 'events',
      );
      return { ids, reads: onEvents.map((c) => c.commandName) };
    } finally {
      await client.close();
    }
  }
  const many = Array.from({ length: 1_200 }, (_, i) => `1555031${String(i).padStart(4, '0')}`);

  it('one read of the erases whatever the number of numbers, and none more when nothing was erased', async () => {
    const empty = await testDatabase('migrate-no-erase');
    try {
      const none = await eventReads(empty.dbName, many);
      expect(none.reads).toEqual(['find']);
      expect(none.ids.erasedAt(many[0] as string)).toBeNull();
    } finally {
      await empty.drop();
    }
    const some = await eventReads(app.database.dbName, [...many, A, D]);
    expect(some.reads).toEqual(['find']);
    expect(some.ids.erasedAt(A)).toBeInstanceOf(Date);
    expect(some.ids.erasedAt(many[0] as string)).toBeNull();
    // No one holds A: the id a first contact of theirs would get now, not the erased one.
    expect(some.ids.idOf(A)).not.toBe(ids.A);
  });
});
