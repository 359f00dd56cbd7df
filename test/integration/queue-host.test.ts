// The local queue host on a real Azurite: what a queue function sees (parsed JSON, dequeueCount),
// the encoding on the wire, retries, the poison queue, outputs, idle; and `npm run replay-poison`.
import { output, type InvocationContext } from '@azure/functions';
import { QueueServiceClient } from '@azure/storage-queue';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FunctionDefinition } from '../../functions/definition-types';
import { STOP_GRACE_MS, startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { nextOccurrence, parseSchedule, resolveSchedule } from '../../scripts/lib/ncrontab';
import { startQueueHost, type QueueHost } from '../../scripts/lib/queue-host';
import { main as replayPoison } from '../../scripts/replay-poison';
import { runToExitCode } from '../../scripts/lib/cli';
import { captureIo } from '../fixtures/scripts';
import { testDatabase, type TestDatabase } from '../helpers/db';

let azurite: Azurite;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'queue-host-'));
  azurite = await startAzurite({ location: dir, log: () => {} });
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('local queue host', () => {
  let host: QueueHost;
  const seen: { item: unknown; dequeueCount: unknown }[] = [];
  const results: unknown[] = [];
  let failUntil = 99;
  const results$ = output.storageQueue({ queueName: 'results', connection: 'AzureWebJobsStorage' });
  const definitions: FunctionDefinition[] = [
    {
      kind: 'queue',
      name: 'work',
      queueName: 'work',
      queueOutputs: [results$],
      handler: async (item: unknown, context: InvocationContext) => {
        const dequeueCount = context.triggerMetadata?.['dequeueCount'];
        seen.push({ item, dequeueCount });
        const n = (item as { n?: number }).n ?? 0;
        if (n >= failUntil) throw new Error('not yet');
        context.extraOutputs.set(results$, [{ done: n }]);
      },
    },
    {
      kind: 'queue',
      name: 'results',
      queueName: 'results',
      handler: async (item: unknown) => {
        results.push(item);
      },
    },
    {
      // Like the sweeper: a timer whose queue outputs must reach the queue.
      kind: 'timer',
      name: 'ticker',
      schedule: '0 0 0 1 1 *',
      queueOutputs: [results$],
      handler: async (_timer, context: InvocationContext) => {
        context.extraOutputs.set(results$, [{ done: 'tick' }]);
      },
    },
  ];

  beforeAll(async () => {
    host = await startQueueHost({
      definitions,
      connectionString: azurite.connectionString,
      settings: { visibilityTimeoutMs: 0, maxDequeueCount: 3 },
      log: () => {},
      runOnStart: ['ticker'],
    });
  });
  afterAll(async () => {
    await host?.stop();
  });

  it('hands over parsed JSON with dequeueCount, writes outputs, and encodes base64 on the wire', async () => {
    await host.send('work', [{ n: 1, text: 'héllo' }]);
    await host.idle({ timeoutMs: 20_000 });
    expect(seen).toEqual([{ item: { n: 1, text: 'héllo' }, dequeueCount: 1 }]);
    // The timer that ran at start wrote its output too (the sweeper's re-queued replies).
    expect(results).toEqual(expect.arrayContaining([{ done: 1 }, { done: 'tick' }]));
    expect(results).toHaveLength(2);

    await host.send('unwatched', ['{"a":1}']);
    const raw = QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient('unwatched');
    const [peeked] = (await raw.peekMessages()).peekedMessageItems;
    expect(Buffer.from(peeked?.messageText ?? '', 'base64').toString('utf8')).toBe('{"a":1}');
  });

  it("gives triggerMetadata as the Functions host does: a JSON message's own properties win over the host's", async () => {
    const got: Record<string, unknown>[] = [];
    const own = await startQueueHost({
      definitions: [
        {
          kind: 'queue',
          name: 'meta',
          queueName: 'meta',
          handler: async (_item, context: InvocationContext) => {
            got.push({ ...context.triggerMetadata });
          },
        },
      ],
      connectionString: azurite.connectionString,
      log: () => {},
    });
    try {
      await own.send('meta', [{ DEQUEUECOUNT: 7, id: 'mine', Nested: { Inner: [{ Deep: 1 }] } }]);
      await own.idle({ timeoutMs: 20_000 });
      await own.send('meta', ['plain text']);
      await own.idle({ timeoutMs: 20_000 });
    } finally {
      await own.stop();
    }
    const [json, text] = got;
    // The host's dictionary ignores case: the payload's DEQUEUECOUNT replaces dequeueCount (and id
    // the message id), nested keys lowered by the Node library too.
    expect(json).toMatchObject({
      dequeueCount: 7,
      id: 'mine',
      nested: { inner: [{ deep: 1 }] },
      queueTrigger: '{"DEQUEUECOUNT":7,"id":"mine","Nested":{"Inner":[{"Deep":1}]}}',
    });
    expect(Object.keys(json ?? {})).not.toContain('DEQUEUECOUNT');
    expect(text).toMatchObject({ dequeueCount: 1, queueTrigger: 'plain text' });
    expect(text?.['id']).toMatch(/^[0-9a-f-]{36}$/);
    // Json.NET's DateTimeOffset, as the host serialises it.
    expect(text?.['insertionTime']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$/);
  });

  it('a timer the stop interrupts is a warning, not an error (the database closes after the stop)', async () => {
    let interrupt: (error: Error) => void = () => undefined;
    const logged: string[] = [];
    const own = await startQueueHost({
      definitions: [
        {
          kind: 'timer',
          name: 'long-sweep',
          schedule: '0 0 0 1 1 *',
          handler: () =>
            new Promise<void>((_, reject) => {
              interrupt = reject;
            }),
        },
      ],
      connectionString: azurite.connectionString,
      log: (level, name, message) => logged.push(`${level} ${name}: ${message}`),
      runOnStart: ['long-sweep'],
    });
    const stopped = own.stop();
    interrupt(new Error('Server is closed'));
    await stopped;
    expect(logged).toEqual(['warning long-sweep: stopped before it finished (Error: Server is closed)']);
  });

  it('a timer does not fire again while its last invocation runs (a sweep longer than a minute)', async () => {
    let running = 0;
    let most = 0;
    let runs = 0;
    const own = await startQueueHost({
      definitions: [
        {
          kind: 'timer',
          name: 'slow-sweep',
          schedule: '* * * * * *', // every second; each run takes 2.5 s
          handler: async () => {
            runs++;
            most = Math.max(most, ++running);
            await new Promise((r) => setTimeout(r, 2_500));
            running--;
          },
        },
      ],
      connectionString: azurite.connectionString,
      log: () => undefined,
    });
    await new Promise((r) => setTimeout(r, 6_000));
    await own.stop();
    expect(runs).toBeGreaterThanOrEqual(2);
    expect(most).toBe(1);
  });

  it('a stop that cannot wait for every handler says which it left running, and their items come back', async () => {
    const logged: string[] = [];
    const started: number[] = [];
    const definitions: FunctionDefinition[] = [
      {
        kind: 'queue',
        name: 'stuck',
        queueName: 'stuck',
        handler: async (item: unknown) => {
          started.push((item as { n: number }).n);
          await new Promise(() => undefined); // never ends: a handler stopped mid-way
        },
      },
    ];
    const own = await startQueueHost({
      definitions,
      connectionString: azurite.connectionString,
      log: (level, name, message) => logged.push(`${level} ${name}: ${message}`),
      leaseSeconds: 2,
      stopGraceMs: 200,
    });
    await own.send('stuck', [{ n: 1 }, { n: 2 }]);
    const deadline = Date.now() + 20_000;
    while (started.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    await own.stop();
    expect(logged).toEqual([
      'warning host: stopped with 2 function(s) still running (stuck ×2): ' +
        'what they held comes back when its lease ends (a message in a queue, a reply lock)',
    ]);
    // Not deleted: visible again once the lease given at the receive (2 s) ends.
    const raw = QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient('stuck');
    const back = async () => (await raw.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems;
    let items = await back();
    while (items.length < 2 && Date.now() < deadline + 10_000) {
      await new Promise((r) => setTimeout(r, 250));
      items = [...items, ...(await back())];
    }
    expect(
      items.map((m) => JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')).n).sort(),
    ).toEqual([1, 2]);
  });

  it('retries a failing item maxDequeueCount times, then keeps it in <queue>-poison; replay moves it back', async () => {
    seen.length = 0;
    failUntil = 2;
    await host.send('work', [{ n: 2 }]);
    await host.idle({ timeoutMs: 20_000 });
    expect(seen.map((s) => s.dequeueCount)).toEqual([1, 2, 3]);
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const poison = service.getQueueClient('work-poison');
    const [kept] = (await poison.peekMessages()).peekedMessageItems;
    expect(JSON.parse(Buffer.from(kept?.messageText ?? '', 'base64').toString('utf8'))).toEqual({ n: 2 });

    // The cause is fixed; the operator replays the poison queue.
    failUntil = 99;
    seen.length = 0;
    const out: string[] = [];
    const io = { out: (l: string) => out.push(l), err: () => {}, tty: false };
    await expect(
      replayPoison(['--queue', 'inbound'], { AzureWebJobsStorage: azurite.connectionString }, io),
    ).resolves.toBe(0);
    expect(out.join('\n')).toMatch(/does not exist|items moved:\s+0/);
    // Replays any <queue>-poison named by the app; here the test's own queue through the same code path.
    const moved = await moveBack(service, 'work');
    expect(moved).toBe(1);
    await host.idle({ timeoutMs: 20_000 });
    expect(seen).toEqual([{ item: { n: 2 }, dequeueCount: 1 }]);
    expect(results).toContainEqual({ done: 2 });
    expect((await poison.getProperties()).approximateMessagesCount).toBe(0);
  });
});

describe('local queue host: what the Functions host does with odd messages', () => {
  // The platform's rules, from its queue extension (Microsoft.Azure.WebJobs.Extensions.Storage.Queues):
  // QueueServiceClientProvider moves a message it cannot decode to the poison queue at once;
  // QueueProcessor.BeginProcessingMessageAsync does so without a call for a dequeueCount past
  // maxDequeueCount; QueueListenerFactory gives a queue ending in `-poison` no poison queue, and
  // QueueProcessor then leaves a failed item invisible instead of releasing or moving it.
  // https://learn.microsoft.com/azure/azure-functions/functions-host-json#functiontimeout: an
  // invocation longer than functionTimeout fails.
  let host: QueueHost | undefined;
  const calls: { queue: string; item: unknown; dequeueCount: unknown }[] = [];
  /** The calls whose handler has returned or thrown, as `calls` records them. */
  const ended: { queue: string; dequeueCount: unknown }[] = [];
  const done$ = output.storageQueue({ queueName: 'odd-done', connection: 'AzureWebJobsStorage' });
  const service = () => QueueServiceClient.fromConnectionString(azurite.connectionString);
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  const record =
    (queue: string, fail: (n: number) => boolean, slowMs = 0) =>
    async (item: unknown, context: InvocationContext) => {
      const dequeueCount = Number(context.triggerMetadata?.['dequeueCount']);
      calls.push({ queue, item, dequeueCount });
      try {
        context.extraOutputs.set(done$, [{ queue, dequeueCount }]);
        if (slowMs && dequeueCount === 1) await sleep(slowMs);
        if (fail(dequeueCount)) throw new Error('failed');
      } finally {
        ended.push({ queue, dequeueCount });
      }
    };
  const definitions: FunctionDefinition[] = [
    { kind: 'queue', name: 'odd', queueName: 'odd', handler: record('odd', () => false) },
    { kind: 'queue', name: 'oddPoison', queueName: 'odd-poison', handler: record('odd-poison', () => true) },
    {
      kind: 'queue',
      name: 'slow',
      queueName: 'slow',
      queueOutputs: [done$],
      handler: record('slow', () => false, 1_500),
    },
  ];
  const start = async () => {
    host = await startQueueHost({
      definitions,
      connectionString: azurite.connectionString,
      settings: { visibilityTimeoutMs: 0, maxDequeueCount: 2, functionTimeoutMs: 400 },
      leaseSeconds: 1,
      log: () => {},
    });
  };
  afterAll(async () => {
    await host?.stop();
  });

  it('moves a message that is not base64 to <queue>-poison at once, unchanged, without a call', async () => {
    const odd = service().getQueueClient('odd');
    await odd.createIfNotExists();
    await odd.sendMessage('{"object":"whatsapp_business_account"}');
    await start();
    await host!.send('odd', [{ n: 1 }]);
    const poison = service().getQueueClient('odd-poison');
    await poison.createIfNotExists();
    const deadline = Date.now() + 20_000;
    const counts = async () => [
      (await poison.getProperties()).approximateMessagesCount,
      (await odd.getProperties()).approximateMessagesCount,
    ];
    // The batch is handled: the decodable item called, the other one moved (not a fixed wait).
    while (
      (!calls.some((c) => c.queue === 'odd') || (await counts()).join() !== '1,0') &&
      Date.now() < deadline
    )
      await sleep(50);
    expect(calls.filter((c) => c.queue === 'odd')).toEqual([
      { queue: 'odd', item: { n: 1 }, dequeueCount: 1 },
    ]);
    // Nor does odd-poison's function get it: its decoder refuses it too, and it has no poison queue.
    expect(calls.filter((c) => c.queue === 'odd-poison')).toEqual([]);
    // Its text, unchanged, is checked once the host has stopped (below): a consumer hides it now.
    expect((await poison.getProperties()).approximateMessagesCount).toBe(1);
    expect((await odd.getProperties()).approximateMessagesCount).toBe(0);
  });

  it('gives <queue>-poison no poison queue: a failing item is tried again and stays there', async () => {
    await host!.send('odd-poison', [{ n: 2 }]);
    const deadline = Date.now() + 20_000;
    const attempts = () =>
      calls.filter((c) => c.queue === 'odd-poison' && (c.item as { n?: number }).n === 2);
    while (attempts().length < 2 && Date.now() < deadline) await sleep(50);
    // Past maxDequeueCount (2) it is never handed over again, and never moved.
    await sleep(3_000);
    expect(attempts().map((c) => c.dequeueCount)).toEqual([1, 2]);
    expect(await service().getQueueClient('odd-poison-poison').exists()).toBe(false);
    const waiting = (await service().getQueueClient('odd-poison').getProperties()).approximateMessagesCount;
    expect(waiting).toBe(2); // the undecodable one and this one
  });

  it('moves an item received more than maxDequeueCount times to <queue>-poison without a call', async () => {
    await host!.stop();
    host = undefined;
    const odd = service().getQueueClient('odd');
    await odd.sendMessage(Buffer.from('{"n":3}').toString('base64'));
    for (let i = 0; i < 2; i++) {
      // Two deliveries whose process died before it finished (nothing deleted or released).
      const [message] = (await odd.receiveMessages({ visibilityTimeout: 1 })).receivedMessageItems;
      expect(message?.dequeueCount).toBe(i + 1);
      await sleep(1_200);
    }
    const kept = (await service().getQueueClient('odd-poison').peekMessages({ numberOfMessages: 32 }))
      .peekedMessageItems;
    expect(kept.map((m) => m.messageText).sort()).toEqual(
      ['{"object":"whatsapp_business_account"}', Buffer.from('{"n":2}').toString('base64')].sort(),
    );
    calls.length = 0;
    await start();
    // It reaches odd-poison, whose function gets it (and fails, as that one always does).
    const deadline = Date.now() + 20_000;
    const moved = () => calls.filter((c) => c.queue === 'odd-poison');
    while (moved().length === 0 && Date.now() < deadline) await sleep(50);
    expect(moved()).toEqual([{ queue: 'odd-poison', item: { n: 3 }, dequeueCount: 1 }]);
    expect(calls.filter((c) => c.queue === 'odd')).toEqual([]);
  });

  it('fails an invocation that outlasts functionTimeout: its outputs are dropped and it is tried again', async () => {
    calls.length = 0;
    await host!.send('slow', [{ n: 4 }]);
    const done = service().getQueueClient('odd-done');
    await done.createIfNotExists();
    const deadline = Date.now() + 20_000;
    const written = async () =>
      (await done.peekMessages({ numberOfMessages: 32 })).peekedMessageItems.map((m) =>
        JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')),
      );
    // Both attempts' handlers have returned (the first one after the second's), and the second
    // one's output is written: had the first one's been kept, it would be there by now too.
    while (
      (ended.filter((c) => c.queue === 'slow').length < 2 || (await written()).length === 0) &&
      Date.now() < deadline
    )
      await sleep(50);
    expect(calls.filter((c) => c.queue === 'slow').map((c) => c.dequeueCount)).toEqual([1, 2]);
    expect(await written()).toEqual([{ queue: 'slow', dequeueCount: 2 }]);
  });
});

describe('local queue host: a lease renewal under way when the handler ends', () => {
  // Azurite behind a relay that holds the answer to each renewal (a PUT of a message) for 600 ms:
  // the renewal has changed the pop receipt by the time the handler ends, and the delete must use
  // the new one (the old one answers 400 PopReceiptMismatch: the item ran again as if it failed).
  let relay: Server | undefined;
  let host: QueueHost | undefined;
  afterAll(async () => {
    await host?.stop();
    await new Promise((resolve) => (relay ? relay.close(resolve) : resolve(undefined)));
  });

  it('deletes a handled item with the receipt of the renewal, and runs it once', async () => {
    const target = new URL(/QueueEndpoint=([^;]+)/.exec(azurite.connectionString)![1]!);
    relay = createHttpServer((req, res) => {
      const upstream = httpRequest(
        { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          const renewal = req.method === 'PUT' && /\/messages\/[^/?]+\?/.test(req.url ?? '');
          setTimeout(
            () => {
              res.writeHead(answer.statusCode ?? 500, answer.headers);
              answer.pipe(res);
            },
            renewal ? 600 : 0,
          );
        },
      );
      req.pipe(upstream);
    });
    await new Promise<void>((resolve) => relay!.listen(0, '127.0.0.1', resolve));
    const port = (relay.address() as AddressInfo).port;
    const runs: number[] = [];
    const warnings: string[] = [];
    host = await startQueueHost({
      definitions: [
        {
          kind: 'queue',
          name: 'renewed',
          queueName: 'renewed',
          handler: async (_item: unknown, context: InvocationContext) => {
            runs.push(Number(context.triggerMetadata?.['dequeueCount']));
            await new Promise((resolve) => setTimeout(resolve, 500)); // a renewal starts at 333 ms
          },
        },
      ],
      connectionString: azurite.connectionString.replace(target.origin, `http://127.0.0.1:${port}`),
      settings: { visibilityTimeoutMs: 0, maxDequeueCount: 5 },
      leaseSeconds: 1,
      log: (level, _name, message) => {
        if (level !== 'information') warnings.push(message);
      },
    });
    await host.send('renewed', [{ n: 1 }]);
    await host.idle({ timeoutMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 2_000)); // past the lease: a retry would show
    await host.idle({ timeoutMs: 20_000 });
    expect(warnings).toEqual([]);
    expect(runs).toEqual([1]);
  });
});

describe('npm run replay-poison', () => {
  // Replaying inbound also puts back what inbound-poison's function kept in the database.
  let t: TestDatabase;
  beforeAll(async () => {
    t = await testDatabase('replay');
  });
  afterAll(async () => {
    await t?.drop();
  });

  it('moves inbound-poison items back onto inbound unchanged and says how many', async () => {
    const service = QueueServiceClient.fromConnectionString(azurite.connectionString);
    const poison = service.getQueueClient('inbound-poison');
    await poison.createIfNotExists();
    const items = ['eyJvYmplY3QiOiJ3aGF0c2FwcF9idXNpbmVzc19hY2NvdW50In0=', 'eyJzcGlsbCI6IngifQ=='];
    for (const text of items) await poison.sendMessage(text);
    const out: string[] = [];
    const io = { out: (l: string) => out.push(l), err: () => {}, tty: false };
    const env = {
      AzureWebJobsStorage: azurite.connectionString,
      MONGODB_URI: t.uri,
      MONGODB_DATABASE: t.dbName,
    };
    expect(await replayPoison(['--dry-run'], env, io)).toBe(0);
    expect(out.join('\n')).toMatch(/items:\s+2/);
    expect((await poison.getProperties()).approximateMessagesCount).toBe(2);
    out.length = 0;
    expect(await replayPoison([], env, io)).toBe(0);
    expect(out.join('\n')).toMatch(/items moved:\s+2/);
    const inbound = service.getQueueClient('inbound');
    const texts = (await inbound.peekMessages({ numberOfMessages: 10 })).peekedMessageItems.map(
      (m) => m.messageText,
    );
    expect(texts.sort()).toEqual([...items].sort());
    expect((await poison.getProperties()).approximateMessagesCount).toBe(0);
    await expect(replayPoison(['--queue', 'nope'], env, io)).rejects.toThrow(/--queue/);
  });

  it('a malformed or unreachable AzureWebJobsStorage is one clear line, the key never printed', async () => {
    const key = 'S3CRETKEY0123456789';
    for (const [storage, expected] of [
      [`DefaultEndpointsProtocol=http;AccountName=x;AccountKey=${key};QueueEndpoint=notaurl`, /not a valid/],
      [
        azurite.connectionString.replace(
          /QueueEndpoint=[^;]+/,
          'QueueEndpoint=http://127.0.0.1:1/devstoreaccount1',
        ),
        /could not be reached or refused the request/,
      ],
    ] as const) {
      const io = captureIo();
      expect(await runToExitCode(replayPoison, [], { AzureWebJobsStorage: storage }, io)).toBe(1);
      expect(io.stderr.join('\n')).toMatch(expected);
      expect(io.text()).not.toContain(key);
      expect(io.text()).not.toMatch(/\n\s+at /);
    }
  });
});

describe('local Azurite', () => {
  it('keeps every message it answered for, even when killed at once after', async () => {
    const location = mkdtempSync(path.join(os.tmpdir(), 'azurite-kill-'));
    try {
      let local = await startAzurite({ location, log: () => {} });
      let queue = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('inbound');
      await queue.createIfNotExists();
      // Concurrent writes, as acknowledgements are; the kill comes right after the last answer.
      const texts = Array.from({ length: 10 }, (_, i) => `notification ${i}`);
      await Promise.all(texts.map((text) => queue.sendMessage(text)));
      process.kill(local.pid, 'SIGKILL');
      await local.exited; // gone before another starts on its files
      // The queued notifications hold numbers, names and texts: the folder is the owner's alone.
      expect(statSync(location).mode & 0o777).toBe(0o700);
      chmodSync(location, 0o755); // made by an earlier version
      local = await startAzurite({ location, log: () => {} });
      expect(statSync(location).mode & 0o777).toBe(0o700);
      queue = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('inbound');
      expect((await queue.getProperties()).approximateMessagesCount).toBe(10);
      // Kept whole: each can be received, with its text (its body's file must be known too).
      const received = (await queue.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems;
      expect(received.map((m) => m.messageText).sort()).toEqual([...texts].sort());
      await local.stop();
    } finally {
      rmSync(location, { recursive: true, force: true });
    }
  }, 60_000);
  it('brings an answered message back once from its journal, and none that it deleted and saved', async () => {
    const location = mkdtempSync(path.join(os.tmpdir(), 'azurite-journal-'));
    const open = async () => {
      const local = await startAzurite({ location, log: () => {} });
      const queue = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('inbound');
      return { local, queue, count: async () => (await queue.getProperties()).approximateMessagesCount };
    };
    const kill = async (azurite: Azurite) => {
      process.kill(azurite.pid, 'SIGKILL');
      await azurite.exited; // gone before another starts on its files
    };
    try {
      let { local, queue, count } = await open();
      await queue.createIfNotExists();
      const texts = Array.from({ length: 20 }, (_, i) => `notification ${i}`);
      await Promise.all(texts.map((text) => queue.sendMessage(text)));
      await kill(local);
      // Put back from the journal, each once, with its text; a second kill puts none back twice.
      ({ local, queue, count } = await open());
      expect(await count()).toBe(20);
      await kill(local);
      ({ local, queue, count } = await open());
      expect(await count()).toBe(20);
      const received = (await queue.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems;
      expect(received.map((m) => m.messageText).sort()).toEqual([...texts].sort());
      for (const m of received) await queue.deleteMessage(m.messageId, m.popReceipt);
      // The deletes are saved (a stop saves, as does the next save every 100 ms): none comes back.
      await local.stop();
      ({ local, queue, count } = await open());
      expect(await count()).toBe(0);
      await queue.sendMessage('after');
      await new Promise((r) => setTimeout(r, 300));
      await kill(local);
      ({ local, queue, count } = await open());
      expect(await count()).toBe(1);
      await local.stop();
    } finally {
      rmSync(location, { recursive: true, force: true });
    }
  }, 60_000);
  it('stops on its own when asked (SIGTERM), saving its state, not killed after the grace period', async () => {
    const location = mkdtempSync(path.join(os.tmpdir(), 'azurite-stop-'));
    try {
      let local = await startAzurite({ location, log: () => {} });
      let queue = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('jobs');
      await queue.createIfNotExists();
      await queue.sendMessage('kept');
      const asked = Date.now();
      await local.stop();
      // An Azurite that stops by itself is gone before the grace period after which stop() kills it.
      expect(Date.now() - asked).toBeLessThan(STOP_GRACE_MS);
      local = await startAzurite({ location, log: () => {} });
      queue = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('jobs');
      expect((await queue.getProperties()).approximateMessagesCount).toBe(1);
      await local.stop();
    } finally {
      rmSync(location, { recursive: true, force: true });
    }
  }, 60_000);
  it('stops, saving its state, when the process that started it dies without stopping it', async () => {
    // SIGKILL of `npm run dev`'s node process alone: its Azurite must not run on, unowned, on the
    // data folder that the next start opens with an Azurite of its own.
    const location = mkdtempSync(path.join(os.tmpdir(), 'azurite-orphan-'));
    const starter = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        '-e',
        `require(${JSON.stringify(path.resolve(__dirname, '../../scripts/lib/azurite.ts'))})` +
          `.startAzurite({ location: ${JSON.stringify(location)}, log: () => {} })` +
          '.then((a) => console.log(`azurite ${a.pid} ${a.connectionString}`))',
      ],
      { cwd: path.resolve(__dirname, '../..'), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let pid = 0;
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        starter.stdout.on('data', (c: Buffer) => {
          out += c.toString();
          if (out.includes('\n')) resolve(out);
        });
        starter.once('exit', (code) => reject(new Error(`exited ${code}: ${out}`)));
      });
      const [, found, connectionString] = /^azurite (\d+) (\S+)/.exec(line) ?? [];
      pid = Number(found);
      const queue = QueueServiceClient.fromConnectionString(String(connectionString)).getQueueClient(
        'inbound',
      );
      await queue.createIfNotExists();
      await queue.sendMessage('kept');
      process.kill(starter.pid as number, 'SIGKILL');
      const alive = () => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      const until = Date.now() + 5_000;
      while (alive() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      expect(alive()).toBe(false);
      const local = await startAzurite({ location, log: () => {} });
      const again = QueueServiceClient.fromConnectionString(local.connectionString).getQueueClient('inbound');
      expect((await again.getProperties()).approximateMessagesCount).toBe(1);
      await local.stop();
    } finally {
      starter.kill('SIGKILL');
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // stopped, as it should
      }
      rmSync(location, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('NCRONTAB schedules', () => {
  it('finds the next occurrence of the sweeper and retention schedules', () => {
    const at = new Date('2026-03-01T10:15:42.500Z');
    expect(nextOccurrence(parseSchedule('0 * * * * *'), at).toISOString()).toBe('2026-03-01T10:16:00.000Z');
    expect(nextOccurrence(parseSchedule('0 30 3 * * *'), at).toISOString()).toBe('2026-03-02T03:30:00.000Z');
    expect(nextOccurrence(parseSchedule('*/20 * * * * *'), at).toISOString()).toBe(
      '2026-03-01T10:16:00.000Z',
    );
    expect(() => parseSchedule('* * *')).toThrow(/6 fields/);
  });

  it('takes months and weekdays by name and a schedule from an app setting, as the docs show them', () => {
    // 2026-03-01 is a Sunday. "0 30 9 * Jan Mon": 9:30 every Monday in January.
    const at = new Date('2026-03-01T10:15:42.500Z');
    expect(nextOccurrence(parseSchedule('0 30 9 * Jan Mon'), at).toISOString()).toBe(
      '2027-01-04T09:30:00.000Z',
    );
    expect(nextOccurrence(parseSchedule('0 0 8 * * mon-FRI'), at).toISOString()).toBe(
      '2026-03-02T08:00:00.000Z',
    );
    expect(nextOccurrence(parseSchedule('0 0 0 1 september,DEC *'), at).toISOString()).toBe(
      '2026-09-01T00:00:00.000Z',
    );
    // A day of the month and a weekday together: both must match (Friday 13 March 2026).
    expect(nextOccurrence(parseSchedule('0 0 0 13 * Fri'), at).toISOString()).toBe(
      '2026-03-13T00:00:00.000Z',
    );
    expect(() => parseSchedule('0 0 0 * Foo *')).toThrow(/invalid NCRONTAB field "Foo"/);
    expect(() => parseSchedule('0 0 Mon * * *')).toThrow(/invalid NCRONTAB field/);
    expect(resolveSchedule('%SWEEP_SCHEDULE%', { SWEEP_SCHEDULE: '0 */5 * * * *' })).toBe('0 */5 * * * *');
    expect(resolveSchedule('0 * * * * *', {})).toBe('0 * * * * *');
    expect(() => resolveSchedule('%SWEEP_SCHEDULE%', {})).toThrow(/app setting SWEEP_SCHEDULE is not set/);
  });
});

/** What replay-poison does, for a queue the app does not own (the script only accepts the app's). */
async function moveBack(service: QueueServiceClient, queue: string): Promise<number> {
  const poison = service.getQueueClient(`${queue}-poison`);
  const target = service.getQueueClient(queue);
  let moved = 0;
  for (const item of (await poison.receiveMessages({ numberOfMessages: 32 })).receivedMessageItems) {
    await target.sendMessage(item.messageText);
    await poison.deleteMessage(item.messageId, item.popReceipt);
    moved++;
  }
  return moved;
}
