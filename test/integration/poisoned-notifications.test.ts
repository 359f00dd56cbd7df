// A notification ingest fails on every attempt, on a real Azurite and the real test database: the
// host moves it to inbound-poison, whose function keeps it in `events` (kind `poisoned`), split per
// person; erase and export cover it; `npm run replay-poison` puts it back on inbound; retention
// deletes it by Meta's time.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { InvocationContext } from '@azure/functions';
import { QueueServiceClient } from '@azure/storage-queue';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { QueueDefinition } from '../../functions/definition-types';
import { ingestWorker } from '../../functions/ingest';
import { keepPoisonedDefinition, keepPoisonedWorker } from '../../functions/keep-poisoned';
import { definitions } from '../../functions/definitions';
import { loadConfig } from '../../shared/config';
import { createDataStore, POISONED_KIND, retentionCutoff, type DataStore } from '../../shared/data';
import { buildServices, runtimeOf, type Runtime } from '../../shared/deps';
import { startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { runToExitCode } from '../../scripts/lib/cli';
import { startQueueHost, type QueueHost } from '../../scripts/lib/queue-host';
import { main as replayPoison } from '../../scripts/replay-poison';
import { main as health } from '../../scripts/health';
import { captureIo } from '../fixtures/scripts';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { notification, textMessage, value, WABA_ID, PHONE_NUMBER_ID } from '../helpers/meta';
import { collectionOf } from '../helpers/raw';

const ANN = '15551230001';
const BOB = '15551230002';

let azurite: Azurite;
let dir: string;
let t: TestDatabase;
let store: DataStore;
let runtime: Runtime;
let host: QueueHost;
let failing = true;
const logs: string[] = [];

const env = () => ({
  AzureWebJobsStorage: azurite.connectionString,
  MONGODB_URI: t.uri,
  MONGODB_DATABASE: t.dbName,
});
const queue = (name: string) =>
  QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient(name);
const waiting = async (name: string) => (await queue(name).getProperties()).approximateMessagesCount ?? 0;
const poisoned = () => collectionOf(t.db, 'events').find({ kind: POISONED_KIND }).toArray();

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'poisoned-'));
  azurite = await startAzurite({ location: dir, log: () => {} });
  t = await testDatabase('poisoned');
  store = createDataStore(t.db);
  await store.ensureIndexes('create');
  const config = loadConfig({
    WHATSAPP_VERIFY_TOKEN: 'verify-token-for-tests',
    WHATSAPP_APP_SECRET: 'app-secret-for-tests',
    MONGODB_URI: t.uri,
    MONGODB_DATABASE: t.dbName,
  });
  runtime = runtimeOf(await buildServices(config, { data: store }));
  const ingest = ingestWorker(runtime);
  const broken: QueueDefinition = {
    kind: 'queue',
    name: 'ingest',
    queueName: 'inbound',
    // Ingest failing on every attempt (a bug, a database refusing it): the item ends in inbound-poison.
    handler: async (item, context) => {
      if (failing) throw new Error('ingest failed');
      await ingest(item, context);
    },
  };
  host = await startQueueHost({
    definitions: [broken, { ...keepPoisonedDefinition, handler: keepPoisonedWorker(runtime) }],
    connectionString: azurite.connectionString,
    settings: { visibilityTimeoutMs: 0, maxDequeueCount: 2, maxPollingIntervalMs: 200 },
    log: (level, name, message) => logs.push(`${level} ${name}: ${message}`),
  });
}, 60_000);

afterAll(async () => {
  await host?.stop();
  await azurite?.stop();
  await t?.drop();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  failing = true;
  await collectionOf(t.db, 'events').deleteMany({ kind: POISONED_KIND });
});

/** A notification with one text from each of Ann and Bob. */
function twoPeople(annText: string, bobText: string) {
  const ann = textMessage(ANN, annText);
  const bob = textMessage(BOB, bobText);
  const payload = notification(
    value({
      contacts: [
        { waId: ANN, name: 'Ann' },
        { waId: BOB, name: 'Bob' },
      ],
      messages: [ann, bob],
    }),
  );
  return { ann, bob, payload };
}

const context = () => new InvocationContext({ functionName: 'keepPoisoned', logHandler: () => {} });

describe('a notification ingest fails on every attempt', () => {
  it('is registered on inbound-poison, for Azure and npm run dev alike', () => {
    expect(definitions).toContainEqual(
      expect.objectContaining({ kind: 'queue', name: 'keepPoisoned', queueName: 'inbound-poison' }),
    );
  });

  it('is kept in events, one piece per person filed under them, and inbound-poison is empty', async () => {
    const { payload } = twoPeople('ann poisoned text', 'bob poisoned text');
    await host.send('inbound', [payload]);
    await host.idle({ timeoutMs: 30_000 });
    expect(await waiting('inbound')).toBe(0);
    expect(await waiting('inbound-poison')).toBe(0);

    const docs = await poisoned();
    expect(docs).toHaveLength(2);
    const bySubject = new Map(docs.map((d) => [d['subject'], JSON.parse(String(d['payloadJson']))]));
    const ann = bySubject.get(await store.events.subjectOf(ANN));
    const bob = bySubject.get(await store.events.subjectOf(BOB));
    // Each a valid notification: same object, entry id, change field and metadata; only its person.
    for (const [piece, own, other] of [
      [ann, 'ann poisoned text', 'bob'],
      [bob, 'bob poisoned text', 'ann'],
    ] as const) {
      expect(piece.object).toBe('whatsapp_business_account');
      expect(piece.entry[0].id).toBe(WABA_ID);
      expect(piece.entry[0].changes[0].field).toBe('messages');
      expect(piece.entry[0].changes[0].value.metadata.phone_number_id).toBe(PHONE_NUMBER_ID);
      expect(piece.entry[0].changes[0].value.messages).toHaveLength(1);
      expect(piece.entry[0].changes[0].value.contacts).toHaveLength(1);
      expect(JSON.stringify(piece)).toContain(own);
      expect(JSON.stringify(piece).toLowerCase()).not.toContain(other);
    }
    // Meta's time of the message (retention goes by it).
    const sent = Number(ann.entry[0].changes[0].value.messages[0].timestamp) * 1000;
    expect(docs.map((d) => d['createdAt'].getTime())).toContain(sent);
    // Logs: no number, no text.
    expect(logs.join('\n')).not.toMatch(/1555123000|poisoned text/);
    expect(logs.join('\n')).toMatch(/poisoned notification kept for replay/);
  }, 60_000);

  it('export shows a person their piece only; erase of one removes theirs and leaves the other', async () => {
    const { payload } = twoPeople('ann private words', 'bob private words');
    await keepPoisonedWorker(runtime)(payload, context());
    const ann = (await store.users.resolve({ waId: ANN, bsuid: null, name: 'Ann' }, new Date())).user.id;
    const bob = (await store.users.resolve({ waId: BOB, bsuid: null, name: 'Bob' }, new Date())).user.id;

    const exported = await store.personal.exportUser(bob);
    const kept = exported?.events.filter((e) => e.kind === POISONED_KIND) ?? [];
    expect(kept).toHaveLength(1);
    expect(JSON.stringify(kept[0]?.payload)).toContain('bob private words');
    expect(JSON.stringify(exported)).not.toContain('ann private words');

    const report = await store.personal.eraseUser(ann);
    expect(report?.events).toBe(1);
    const left = await poisoned();
    expect(left).toHaveLength(1);
    expect(left[0]?.['subject']).toBe(await store.events.subjectOf(BOB));
    await store.personal.eraseUser(bob);
    expect(await poisoned()).toHaveLength(0);
  });

  it('handed over twice (a crash after the write, before the delete), is kept once', async () => {
    const { payload } = twoPeople('once', 'only once');
    const keep = keepPoisonedWorker(runtime);
    await keep(JSON.parse(JSON.stringify(payload)), context());
    const first = (await poisoned()).map((d) => d._id).sort();
    await keep(JSON.parse(JSON.stringify(payload)), context());
    expect((await poisoned()).map((d) => d._id).sort()).toEqual(first);
    expect(first).toHaveLength(2);
    expect(await store.poisoned.count()).toBe(2);
  });

  it('keeps what is not JSON whole, and a notification that is no notification under the person it names', async () => {
    const keep = keepPoisonedWorker(runtime);
    await keep('not json at all', context());
    await keep({ something: { from: ANN, text: 'odd' } }, context());
    const docs = await poisoned();
    expect(docs.map((d) => d['payloadJson']).sort()).toEqual(
      [JSON.stringify({ something: { from: ANN, text: 'odd' } }), 'not json at all'].sort(),
    );
    expect(docs.find((d) => d['payloadJson'] === 'not json at all')?.['subject']).toBeNull();
    expect(docs.find((d) => d['payloadJson'] !== 'not json at all')?.['subject']).toBe(
      await store.events.subjectOf(ANN),
    );
  });

  it('health reports the kept ones and says to run replay-poison', async () => {
    await keepPoisonedWorker(runtime)(twoPeople('a', 'b').payload, context());
    const io = captureIo();
    expect(await runToExitCode(health, [], { MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName }, io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(/kept in the database: 2\b.*`npm run replay-poison`/);
    expect(io.stdout.join('\n')).toMatch(/poisoned notifications kept:\s+2\b/);
  });

  it('replay-poison puts kept pieces back on inbound (--dry-run moves nothing); ingest stores each message once', async () => {
    const { ann, bob, payload } = twoPeople('ann replayed', 'bob replayed');
    await host.send('inbound', [payload]);
    await host.idle({ timeoutMs: 30_000 });
    expect(await store.poisoned.count()).toBe(2);

    const dry = captureIo();
    expect(await runToExitCode(replayPoison, ['--dry-run'], env(), dry)).toBe(0);
    expect(dry.stdout.join('\n')).toMatch(/from the database \(kept poisoned notifications\):\s+2\b/);
    expect(await store.poisoned.count()).toBe(2);
    expect(await waiting('inbound')).toBe(0);

    failing = false;
    const io = captureIo();
    expect(await runToExitCode(replayPoison, [], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/items moved:\s+2\b/);
    expect(io.stdout.join('\n')).toMatch(/from the database \(kept poisoned notifications\):\s+2\b/);
    expect(await store.poisoned.count()).toBe(0);
    await host.idle({ timeoutMs: 30_000 });
    const messages = collectionOf(t.db, 'messages');
    expect(await messages.countDocuments({ _id: { $in: [ann.id, bob.id] } })).toBe(2);
    // Replayed again (a copy left in both by a failure between copy and delete): stored once.
    await host.send('inbound', [payload]);
    await host.idle({ timeoutMs: 30_000 });
    expect(await messages.countDocuments({ _id: { $in: [ann.id, bob.id] } })).toBe(2);
    expect(await store.poisoned.count()).toBe(0);
  }, 90_000);

  it('a spilled notification is kept whole, its spill removed after; replayed through a spill again', async () => {
    const big = textMessage(ANN, `long ${'x'.repeat(70_000)}`);
    const body = Buffer.from(
      JSON.stringify(notification(value({ contacts: [{ waId: ANN }], messages: [big] }))),
    );
    const spill = createHash('sha256').update(body).digest('hex');
    await store.spills.put(spill, body);
    await host.send('inbound', [{ spill, bytes: body.length }]);
    await host.idle({ timeoutMs: 30_000 });
    const docs = await poisoned();
    expect(docs).toHaveLength(1);
    // Whole: nothing cut (one person's notification, the same content).
    expect(docs[0]?.['truncated']).toBe(false);
    expect(JSON.parse(String(docs[0]?.['payloadJson'])) as unknown).toEqual(
      JSON.parse(body.toString('utf8')),
    );
    expect(await store.spills.take(spill)).toBeNull();

    failing = false;
    expect(await runToExitCode(replayPoison, [], env(), captureIo())).toBe(0);
    await host.idle({ timeoutMs: 30_000 });
    expect(await collectionOf(t.db, 'messages').countDocuments({ _id: big.id })).toBe(1);
    expect(await collectionOf(t.db, 'events').countDocuments({ kind: 'inbound_spill' })).toBe(0);
  }, 90_000);

  it('a body too long for one document is kept in parts, never cut, and read back whole', async () => {
    // Not a notification's shape: one piece, whole (Cosmos DB keeps at most 2 MB a document).
    const text = JSON.stringify({ odd: 'é😀'.repeat(200_000), from: BOB });
    const body = Buffer.from(text);
    const spill = createHash('sha256').update(body).digest('hex');
    await store.spills.put(spill, body);
    await keepPoisonedWorker(runtime)({ spill, bytes: body.length }, context());
    const docs = await poisoned();
    expect(docs.length).toBeGreaterThan(2);
    expect(new Set(docs.map((d) => d['subject']))).toEqual(new Set([await store.events.subjectOf(BOB)]));
    const [id] = await store.poisoned.ids();
    expect((await store.poisoned.read(id as string))?.json).toBe(text);
    expect(await store.poisoned.count()).toBe(1);
    await store.poisoned.remove(id as string);
    expect(await poisoned()).toHaveLength(0);
  });

  it('retention deletes kept pieces older than the cutoff by Meta time, and keeps newer ones', async () => {
    const old = textMessage(ANN, 'old', { timestamp: String(Math.floor(Date.now() / 1000) - 40 * 86_400) });
    const recent = textMessage(BOB, 'recent');
    await keepPoisonedWorker(runtime)(
      notification(value({ contacts: [{ waId: ANN }, { waId: BOB }], messages: [old, recent] })),
      context(),
    );
    expect(await store.poisoned.count()).toBe(2);
    const result = await store.retention.deleteOlderThan(retentionCutoff(30, new Date()));
    expect(result.poisoned).toBe(1);
    const left = await poisoned();
    expect(left.map((d) => d['subject'])).toEqual([await store.events.subjectOf(BOB)]);
  });

  it('a piece whose message Meta dates before 2009 (timestamp 1: 1970) is dated when kept, and retention keeps it', async () => {
    const started = Date.now();
    const odd = textMessage(ANN, 'dated 1970', { timestamp: '1' });
    await keepPoisonedWorker(runtime)(
      notification(value({ contacts: [{ waId: ANN }], messages: [odd] })),
      context(),
    );
    const [kept] = await poisoned();
    expect(kept?.['createdAt'].getTime()).toBeGreaterThanOrEqual(started);
    expect((await store.retention.deleteOlderThan(retentionCutoff(30, new Date()))).poisoned).toBe(0);
    expect(await store.poisoned.count()).toBe(1);
  });
});
