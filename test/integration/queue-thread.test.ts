// The local host's queue functions in a thread of their own (scripts/lib/queue-thread.ts), as
// `npm run dev` and the bench run them: not on the HTTP functions' thread, at a lower priority,
// still fed by the HTTP functions' queue outputs; a thread that dies is reported, never silent.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServer } from '../../scripts/dev-server';
import { startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { QUEUE_THREAD_NICE } from '../../scripts/lib/queue-thread';
import { definitions } from '../fixtures/host/thread-definitions';

const MODULE = path.resolve(__dirname, '../fixtures/host/thread-definitions.ts');
let azurite: Azurite;
let dir: string;
let out: string;
let server: DevServer | undefined;

beforeAll(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'queue-thread-'));
  azurite = await startAzurite({ location: path.join(dir, 'azurite'), log: () => {} });
}, 60_000);
afterAll(async () => {
  await azurite?.stop();
  rmSync(dir, { recursive: true, force: true });
});
afterEach(async () => {
  const running = server;
  server = undefined;
  await running?.stop();
});

interface Ran {
  phase: 'start' | 'end';
  threadId: number;
  nice: number | null;
  at: number;
}
const runs = (): Ran[] =>
  existsSync(out)
    ? readFileSync(out, 'utf8')
        .trim()
        .split('\n')
        .filter(Boolean)
        .map((line) => JSON.parse(line) as Ran)
    : [];

/** What the host logged: the lines of the queue thread's functions reach it too. */
let logged: string[] = [];

async function start(onQueueFailure?: (error: Error) => void): Promise<DevServer> {
  logged = [];
  out = path.join(dir, `runs-${Date.now()}.jsonl`);
  process.env['THREAD_TEST_OUT'] = out;
  server = await startDevServer({
    definitions,
    port: 0,
    storage: { connectionString: azurite.connectionString },
    queueThread: { module: MODULE },
    ...(onQueueFailure ? { onQueueFailure } : {}),
    log: (level, name, message) => logged.push(`${level} ${name}: ${message}`),
  });
  return server;
}

const post = async (url: string, item: object) => {
  const res = await fetch(`${url}/api/enqueue`, { method: 'POST', body: JSON.stringify(item) });
  expect(res.status).toBe(200);
  return (await res.json()) as { threadId: number; nice: number | null; at: number };
};

describe('queue functions in their own thread', () => {
  it('run off the HTTP thread, at a lower priority, on what the HTTP functions queue', async () => {
    const running = await start();
    const { url } = running;
    const answer = await post(url, { busyMs: 0 });
    await running.idle({ timeoutMs: 30_000 });
    const ran = runs().find((r) => r.phase === 'end');
    expect(ran).toBeDefined();
    expect(answer.threadId).toBe(0);
    expect(ran?.threadId).not.toBe(0);
    expect(logged).toContain('information work: work ran');
    if (process.platform === 'linux') {
      expect(ran?.nice).toBeGreaterThanOrEqual(QUEUE_THREAD_NICE);
      expect(answer.nice).toBeLessThan(QUEUE_THREAD_NICE);
    }
  }, 60_000);

  it('leave the HTTP functions answering while one keeps its thread busy', async () => {
    const running = await start();
    const { url } = running;
    await post(url, { busyMs: 3_000 });
    const deadline = Date.now() + 20_000;
    while (!runs().some((r) => r.phase === 'start') && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 20));
    // The queue function has started and holds its thread: an HTTP request is answered meanwhile.
    const answer = await post(url, { busyMs: 0 });
    await running.idle({ timeoutMs: 30_000 });
    const busyEnd = runs().find((r) => r.phase === 'end');
    expect(busyEnd).toBeDefined();
    expect(answer.at).toBeLessThan(busyEnd?.at ?? 0);
  }, 60_000);

  it('report a thread that dies, instead of acknowledging with nothing behind', async () => {
    let reported: Error | undefined;
    const { url } = await start((error) => (reported = error));
    await post(url, { crash: true });
    const deadline = Date.now() + 20_000;
    while (!reported && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(reported?.message).toMatch(/queue functions' thread failed: Error: crashed on purpose/);
    // The host's log says where it was thrown, as one process dying of it would have printed, and
    // holds no number.
    const said = logged.find((line) => line.includes('thread failed: Error: crashed on purpose')) ?? '';
    expect(said).toMatch(/thread-definitions\.ts:\d+/);
    expect([...logged, reported?.message].join('\n')).not.toContain('447700900123');
  }, 60_000);

  it('stop as soon as the thread has failed, before it has exited', async () => {
    // The failure is reported on the thread's error, before its exit: a stop from there waited
    // for an answer no thread would give, for ever.
    let stopping: Promise<void> | undefined;
    const { url } = await start(() => {
      const running = server;
      server = undefined;
      stopping = running?.stop();
    });
    await post(url, { crash: true });
    const deadline = Date.now() + 20_000;
    while (!stopping && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(stopping).toBeDefined();
    const outcome = await Promise.race([
      stopping?.then(() => 'stopped'),
      new Promise((r) => setTimeout(() => r('still stopping after 15 s'), 15_000)),
    ]);
    expect(outcome).toBe('stopped');
  }, 60_000);

  it('says why the thread could not start, with no number in it', async () => {
    const missing = path.join(dir, '447700900123', 'definitions.ts');
    const started = startDevServer({
      definitions,
      port: 0,
      storage: { connectionString: azurite.connectionString },
      queueThread: { module: missing },
      log: () => {},
    });
    const error = await started.then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toMatch(/Cannot find module/);
    expect(error?.message).not.toContain('447700900123');
  }, 60_000);

  it('refuses queue functions its module does not define', async () => {
    out = path.join(dir, 'unused.jsonl');
    const stray = {
      kind: 'queue' as const,
      name: 'stray',
      queueName: 'stray',
      handler: async () => undefined,
    };
    await expect(
      startDevServer({
        definitions: [...definitions, stray],
        port: 0,
        storage: { connectionString: azurite.connectionString },
        queueThread: { module: MODULE },
        log: () => {},
      }),
    ).rejects.toThrow(/does not define stray/);
  }, 60_000);
});
