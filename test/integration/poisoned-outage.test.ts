// The database down for longer than the retries of inbound-poison's function, on a real Azurite and
// the real test database. A `-poison` queue has no poison queue: the host leaves an item that failed
// there invisible, and one received more than maxDequeueCount times is never handed over again
// (Microsoft.Azure.WebJobs.Extensions.Storage.Queues QueueProcessor: BeginProcessingMessageAsync,
// CompleteProcessingMessageAsync), so it would sit in inbound-poison, out of reach, until Azure
// Storage deletes it. The function's last attempt puts it back on inbound-poison instead.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { QueueDefinition } from '../../functions/definition-types';
import { keepPoisonedDefinition, keepPoisonedWorker } from '../../functions/keep-poisoned';
import { MAX_DEQUEUE_COUNT } from '../../functions/queues';
import { loadConfig } from '../../shared/config';
import { createDataStore, type DataStore } from '../../shared/data';
import { buildServices, runtimeOf } from '../../shared/deps';
import { startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { hostQueueSettings, startQueueHost, type QueueHost } from '../../scripts/lib/queue-host';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { notification, textMessage, value } from '../helpers/meta';

const MAX_DEQUEUE = 2;
let azurite: Azurite;
let dir: string;
let t: TestDatabase;
let store: DataStore;
let unreachable: MongoClient;
let host: QueueHost;
let down = true;
let attemptsWhileDown = 0;
const logs: string[] = [];

const config = (uri: string, dbName: string) =>
  loadConfig({
    WHATSAPP_VERIFY_TOKEN: 'verify-token-for-tests',
    WHATSAPP_APP_SECRET: 'app-secret-for-tests',
    MONGODB_URI: uri,
    MONGODB_DATABASE: dbName,
  });

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'poisoned-outage-'));
  azurite = await startAzurite({ location: dir, log: () => {} });
  t = await testDatabase('poisoned_outage');
  store = createDataStore(t.db);
  await store.ensureIndexes('create');
  // A database nothing answers on: every operation fails once the server cannot be selected.
  const downUri = 'mongodb://127.0.0.1:9/?directConnection=true&serverSelectionTimeoutMS=200';
  unreachable = new MongoClient(downUri);
  const up = keepPoisonedWorker(runtimeOf(await buildServices(config(t.uri, t.dbName), { data: store })), {
    maxDequeueCount: MAX_DEQUEUE,
  });
  const downStore = createDataStore(unreachable.db(t.dbName));
  const broken = keepPoisonedWorker(
    runtimeOf(await buildServices(config(downUri, t.dbName), { data: downStore })),
    { maxDequeueCount: MAX_DEQUEUE },
  );
  const definition: QueueDefinition = {
    ...keepPoisonedDefinition,
    handler: async (item, context) => {
      if (!down) return up(item, context);
      attemptsWhileDown++;
      return broken(item, context);
    },
  };
  host = await startQueueHost({
    definitions: [definition],
    connectionString: azurite.connectionString,
    settings: { visibilityTimeoutMs: 0, maxDequeueCount: MAX_DEQUEUE, maxPollingIntervalMs: 100 },
    leaseSeconds: 1,
    log: (level, name, message) => logs.push(`${level} ${name}: ${message}`),
  });
}, 60_000);

afterAll(async () => {
  await host?.stop();
  await unreachable?.close();
  await azurite?.stop();
  await t?.drop();
  rmSync(dir, { recursive: true, force: true });
});

const until = async (check: () => Promise<boolean> | boolean, ms: number) => {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
};

describe('inbound-poison while the database is down for longer than its retries', () => {
  it("knows host.json's maxDequeueCount (its last attempt is the one that puts the item back)", () => {
    expect(MAX_DEQUEUE_COUNT).toBe(hostQueueSettings().maxDequeueCount);
  });

  it('keeps trying the item (never left past maxDequeueCount), and keeps it once the database is back', async () => {
    const payload = notification(
      value({ contacts: [{ waId: '15551239001' }], messages: [textMessage('15551239001', 'outage')] }),
    );
    await host.send('inbound-poison', [payload]);
    // More attempts than maxDequeueCount: the database stayed down past the retries.
    expect(await until(() => attemptsWhileDown > MAX_DEQUEUE * 2, 30_000)).toBe(true);
    down = false;
    expect(await until(async () => (await store.poisoned.count()) === 1, 20_000)).toBe(true);
    await host.idle({ timeoutMs: 20_000 });
    expect(logs.join('\n')).not.toMatch(/1555123900|outage/);
  }, 90_000);
});
