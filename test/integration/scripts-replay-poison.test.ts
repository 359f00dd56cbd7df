// npm run replay-poison on a real Azurite while items fail again: the run moves what the poison
// queue held when it began, and ends.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { QueueServiceClient } from '@azure/storage-queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as replayPoison } from '../../scripts/replay-poison';
import { captureIo } from '../fixtures/scripts';
import { testDatabase, type TestDatabase } from '../helpers/db';

let azurite: Azurite;
let dir: string;
let t: TestDatabase;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'replay-poison-'));
  azurite = await startAzurite({ location: dir, log: () => {} });
  t = await testDatabase('replay');
});
afterAll(async () => {
  await azurite?.stop();
  await t?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('npm run replay-poison while the cause is not fixed', () => {
  it('moves each item that was waiting once, ends, and says how many failed again', async () => {
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const poison = service.getQueueClient('inbound-poison');
    const inbound = service.getQueueClient('inbound');
    await poison.createIfNotExists();
    await inbound.createIfNotExists();
    const waiting = 40;
    for (let i = 0; i < waiting; i++) await poison.sendMessage(`not base64 ${i}`);

    // The Functions host, as it treats an item it cannot decode: straight back to the poison queue.
    let stop = false;
    let failedAgain = 0;
    const host = (async () => {
      while (!stop) {
        const { receivedMessageItems } = await inbound.receiveMessages({ numberOfMessages: 32 });
        for (const item of receivedMessageItems) {
          await poison.sendMessage(item.messageText);
          await inbound.deleteMessage(item.messageId, item.popReceipt);
          failedAgain++;
        }
        if (!receivedMessageItems.length) await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const io = captureIo();
    const deadline = new Promise<'still running'>((r) => setTimeout(() => r('still running'), 30_000));
    const code = await Promise.race([
      runToExitCode(
        replayPoison,
        [],
        { AzureWebJobsStorage: azurite.connectionString, MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName },
        io,
      ),
      deadline,
    ]);
    stop = true;
    await host;
    expect(code).toBe(0);
    const summary = io.stdout.join('\n');
    expect(summary).toMatch(/items moved:\s+40\b/);
    expect(failedAgain).toBeGreaterThan(0);
    // What failed again waits in the poison queue for the next replay (after the cause is fixed).
    expect(summary).toMatch(/back in the poison queue during the run:\s+\d+/);
    // Off a terminal: progress lines at deciles, not one per batch.
    expect(io.stderr.filter((l) => /moving|moved/.test(l)).length).toBeLessThanOrEqual(12);
  }, 60_000);
});

describe('npm run replay-poison while another reader holds an item', () => {
  // An item another reader received (a second replay, a person with Storage Explorer) is invisible
  // until its visibility timeout ends: the run cannot move it, and says so instead of ending as if
  // the poison queue were empty.
  it('moves what it can and says how many items it could not see and to run again', async () => {
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const poison = service.getQueueClient('reply-jobs-poison');
    await poison.createIfNotExists();
    for (let i = 0; i < 3; i++) await poison.sendMessage(`item ${i}`);
    const held = await poison.receiveMessages({ numberOfMessages: 1, visibilityTimeout: 120 });
    expect(held.receivedMessageItems).toHaveLength(1);

    const io = captureIo();
    const code = await runToExitCode(
      replayPoison,
      ['--queue', 'reply-jobs'],
      { AzureWebJobsStorage: azurite.connectionString, MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName },
      io,
    );
    expect(code).toBe(0);
    const summary = io.stdout.join('\n');
    expect(summary).toMatch(/items moved:\s+2\b/);
    expect(summary).toMatch(/held by another reader \(invisible\), left for a later run:\s+1\b/);
    expect((await poison.getProperties()).approximateMessagesCount).toBe(1);
  }, 60_000);
});

describe('npm run replay-poison on the Azurite files of a data folder', () => {
  it('names the folder DEV_DATA_DIR gives, not .data/azurite', async () => {
    const data = await mkdtemp(path.join(os.tmpdir(), 'replay-data-'));
    try {
      const io = captureIo();
      const env = { DEV_DATA_DIR: data, MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName };
      expect(await runToExitCode(replayPoison, ['--dry-run'], env, io)).toBe(0);
      expect(io.stderr.join('\n')).toContain(`queues: Azurite on ${path.join(data, 'azurite')}`);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("npm run replay-poison against a deployment's identity-based storage", () => {
  // infra/ turns shared keys off: the app settings name the account, and the host signs in.
  it('signs in with Microsoft Entra ID, and says how to when it cannot (exit 1), before any request', async () => {
    const io = captureIo();
    const env = { AzureWebJobsStorage__accountName: 'examplebotstorage', DEV_DATA_DIR: dir };
    // Only the credential that reads the environment (unset here): no probe of a managed identity
    // endpoint, nor of the Azure CLI, whatever the machine running the tests has.
    const saved = { ...process.env };
    process.env['AZURE_TOKEN_CREDENTIALS'] = 'EnvironmentCredential';
    for (const name of [
      'AZURE_CLIENT_ID',
      'AZURE_TENANT_ID',
      'AZURE_CLIENT_SECRET',
      'AZURE_CLIENT_CERTIFICATE_PATH',
    ])
      delete process.env[name];
    try {
      expect(await runToExitCode(replayPoison, [], env, io)).toBe(1);
    } finally {
      process.env = saved;
    }
    expect(io.stderr.join('\n')).toMatch(
      /could not sign in to the storage account of AzureWebJobsStorage__accountName with Microsoft Entra ID: sign in with `az login`/,
    );
  });

  it('refuses a queue service URI that names no account (exit 2)', async () => {
    const io = captureIo();
    const env = { AzureWebJobsStorage__queueServiceUri: 'http://example.test/queues', DEV_DATA_DIR: dir };
    expect(await runToExitCode(replayPoison, [], env, io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/AzureWebJobsStorage__queueServiceUri must name a storage account/);
  });
});
