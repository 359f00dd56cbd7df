// `npm run dev` over HTTP, as Meta, the Graph API and an operator see it.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { collectionOf } from '../helpers/raw';
import { startGraphStub, type GraphStub } from '../helpers/graph-stub';
import {
  descendants,
  freePort,
  startDev,
  stillRunning,
  storedAndAnswered,
  waitFor,
  type DevProcess,
} from '../helpers/dev-process';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { notification, signed, status, textNotification, value } from '../helpers/meta';
import { signBody } from '../../shared/whatsapp/signature';
import { LEASE_MS } from '../../shared/bot/reply';
import { SWEEPER_SCHEDULE } from '../../functions/sweeper';
import { nextOccurrence, parseSchedule } from '../../scripts/lib/ncrontab';

/** The time between two sweeps (the sweeper's schedule). */
const SWEEP_PERIOD_MS = (() => {
  const schedule = parseSchedule(SWEEPER_SCHEDULE);
  const first = nextOccurrence(schedule, new Date(0));
  return nextOccurrence(schedule, first).getTime() - first.getTime();
})();

const ROOT = path.resolve(__dirname, '..', '..');
/** The contract's bound on a stop: exit within 10 s, with everything it started. */
const STOP_MS = 10_000;
const SECRET = 'e2e-app-secret';
const TOKEN = 'EAA-e2e-token-DO-NOT-LOG';

describe('npm run dev with settings', () => {
  let graph: GraphStub;
  let dev: DevProcess;
  let database: TestDatabase;

  beforeAll(async () => {
    graph = await startGraphStub();
    database = await testDatabase('e2e');
    dev = await startDev({
      MONGODB_URI: database.uri,
      MONGODB_DATABASE: database.dbName,
      WHATSAPP_VERIFY_TOKEN: 'e2e-verify',
      WHATSAPP_APP_SECRET: SECRET,
      WHATSAPP_ACCESS_TOKEN: TOKEN,
      WHATSAPP_GRAPH_URL: graph.url,
      WHATSAPP_API_VERSION: 'v25.0',
    });
  }, 120_000);

  afterAll(async () => {
    await dev?.stop();
    await graph?.close();
    await database?.drop();
  });

  const post = async (payload: unknown, secret = SECRET) => {
    const { body, signature } = signed(payload, secret);
    return fetch(`${dev.url}/api/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
      body,
    });
  };

  it('says where replies go (a token is set: the Graph API at WHATSAPP_GRAPH_URL)', () => {
    expect(dev.output()).toContain(`replies are sent through the Graph API at ${new URL(graph.url).host}`);
    expect(dev.output()).not.toContain('dry run');
  });

  it('verifies the webhook and reports health', async () => {
    const ok = await fetch(
      `${dev.url}/api/webhook?hub.mode=subscribe&hub.verify_token=e2e-verify&hub.challenge=12345`,
    );
    expect(ok.status).toBe(200);
    expect(await ok.text()).toBe('12345');
    expect(
      (await fetch(`${dev.url}/api/webhook?hub.mode=subscribe&hub.verify_token=no&hub.challenge=1`)).status,
    ).toBe(403);
    const health = await fetch(`${dev.url}/api/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', database: 'ok' });
  });

  it('answers a message exactly once, even when Meta delivers it three times', async () => {
    const phone = '447700900123';
    const { message, payload } = textNotification(phone, 'hello from the e2e test', 'Renée');
    const responses = await Promise.all([post(payload), post(payload), post(payload)]);
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200]);
    const send = await waitFor(async () => graph.sends().find((s) => s.body['to'] === phone));
    expect(send.path).toBe(`/v25.0/106540352242922/messages`);
    expect(send.headers.authorization).toBe(`Bearer ${TOKEN}`);
    await waitFor(
      async () =>
        (await collectionOf(database.db, 'messages').findOne({ _id: message.id }))?.['replyState'] === 'sent',
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(graph.sends().filter((s) => s.body['to'] === phone)).toHaveLength(1);

    const wamid = String(
      (await database.db.collection('messages').findOne({ relatedId: message.id, direction: 'outbound' }))
        ?._id,
    );
    expect((await post(notification(value({ statuses: [status(wamid, 'delivered', phone)] })))).status).toBe(
      200,
    );
    // Acknowledged once queued; stored by the ingest function a moment later.
    await waitFor(
      async () =>
        (await collectionOf(database.db, 'messages').findOne({ _id: wamid }))?.['status'] === 'delivered',
    );
  });

  it('rejects bad requests in the contract order', async () => {
    const { payload } = textNotification('447700900999', 'bad');
    expect((await post(payload, 'wrong-secret')).status).toBe(401);
    const unsigned = await fetch(`${dev.url}/api/webhook`, { method: 'POST', body: JSON.stringify(payload) });
    expect(unsigned.status).toBe(401);
    const big = 'x'.repeat(3 * 1024 * 1024 + 1);
    expect((await fetch(`${dev.url}/api/webhook`, { method: 'POST', body: big })).status).toBe(413);
    const raw = '{"object":';
    const bad = await fetch(`${dev.url}/api/webhook`, {
      method: 'POST',
      headers: { 'x-hub-signature-256': signBody(raw, SECRET) },
      body: raw,
    });
    expect(bad.status).toBe(400);
    expect(await database.db.collection('users').countDocuments({ waId: '447700900999' })).toBe(0);
  });

  it('counts failed authentications by the address the local host saw, whatever X-Forwarded-For says', async () => {
    // Like Azure's front end, the local host appends the peer address (127.0.0.1 here) to the
    // header, so varying what the caller writes gains nothing.
    const stats = (token: string, forwardedFor: string) =>
      fetch(`${dev.url}/api/manage/stats`, {
        headers: { authorization: `Bearer ${token}`, 'x-forwarded-for': forwardedFor },
      });
    for (let i = 0; i < 10; i++) expect((await stats(`guess-${i}`, `203.0.113.${i}`)).status).toBe(401);
    const blocked = await stats('guess-10', '203.0.113.99, 198.51.100.1');
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(blocked.headers.get('retry-after'))).toBeLessThanOrEqual(60);
  });

  it('stops cleanly on SIGTERM and logs no numbers, texts or tokens', async () => {
    const { code, ms } = await dev.stop();
    expect(code).toBe(0);
    expect(ms).toBeLessThan(STOP_MS);
    const output = dev.output();
    expect(output).toContain('ready');
    expect(output).not.toContain('447700900123');
    expect(output).not.toContain('hello from the e2e test');
    expect(output).not.toContain(TOKEN);
  });
});

describe('npm run dev with no settings', () => {
  it('generates development secrets and records replies as not_sent', async () => {
    const database = await testDatabase('e2e_nosettings');
    const dev = await startDev({ MONGODB_URI: database.uri, MONGODB_DATABASE: database.dbName });
    try {
      const secret = /WHATSAPP_APP_SECRET=(\S+)/.exec(dev.output())?.[1];
      const verify = /WHATSAPP_VERIFY_TOKEN=(\S+)/.exec(dev.output())?.[1];
      expect(secret).toBeTruthy();
      const check = await fetch(
        `${dev.url}/api/webhook?hub.mode=subscribe&hub.verify_token=${verify}&hub.challenge=ok`,
      );
      expect(await check.text()).toBe('ok');
      const { message, payload } = textNotification('447700900555', 'dry run please');
      const { body, signature } = signed(payload, secret as string);
      const res = await fetch(`${dev.url}/api/webhook`, {
        method: 'POST',
        headers: { 'x-hub-signature-256': signature },
        body,
      });
      expect(res.status).toBe(200);
      const reply = await waitFor(() =>
        database.db.collection('messages').findOne({ relatedId: message.id, direction: 'outbound' }),
      );
      expect(reply['status']).toBe('not_sent');
    } finally {
      const { code } = await dev.stop();
      expect(code).toBe(0);
      await database.drop();
    }
  }, 120_000);
});

describe('npm run dev with an AI endpoint', () => {
  it('sends the system prompt, history in order, the model, honours reset, and falls back on failure', async () => {
    const calls: { body: { model: string; messages: { role: string; content: string }[] } }[] = [];
    let fail = false;
    const ai = http.createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        calls.push({ body: JSON.parse(text) });
        if (fail) {
          res.writeHead(500).end('{}');
          return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(
          JSON.stringify({
            model: 'stub-model',
            choices: [{ message: { role: 'assistant', content: `answer ${calls.length}` } }],
            usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
          }),
        );
      });
    });
    await new Promise<void>((r) => ai.listen(0, '127.0.0.1', () => r()));
    const aiUrl = `http://127.0.0.1:${(ai.address() as AddressInfo).port}/v1`;
    const graph = await startGraphStub();
    const database = await testDatabase('e2e_ai');
    const dev = await startDev({
      MONGODB_URI: database.uri,
      MONGODB_DATABASE: database.dbName,
      WHATSAPP_VERIFY_TOKEN: 'v',
      WHATSAPP_APP_SECRET: SECRET,
      WHATSAPP_ACCESS_TOKEN: TOKEN,
      WHATSAPP_GRAPH_URL: graph.url,
      AI_ENDPOINT: aiUrl,
      AI_MODEL: 'my-deployment',
      AI_SYSTEM_PROMPT: 'You are the e2e bot.',
      AI_HISTORY_LIMIT: '2',
    });
    const phone = '447700900777';
    const say = async (text: string) => {
      const sendsBefore = graph.sends().length;
      const { body, signature } = signed(textNotification(phone, text).payload, SECRET);
      expect(
        (
          await fetch(`${dev.url}/api/webhook`, {
            method: 'POST',
            headers: { 'x-hub-signature-256': signature },
            body,
          })
        ).status,
      ).toBe(200);
      await waitFor(async () => graph.sends().length > sendsBefore);
      return (graph.sends().at(-1)?.body['text'] as { body: string }).body;
    };
    try {
      expect(await say('one')).toBe('answer 1');
      expect(await say('two')).toBe('answer 2');
      expect(await say('three')).toBe('answer 3');
      const third = calls[2]!.body;
      expect(third.model).toBe('my-deployment');
      expect(third.messages[0]).toEqual({ role: 'system', content: 'You are the e2e bot.' });
      expect(third.messages.slice(1).map((m) => [m.role, m.content])).toEqual([
        ['user', 'two'],
        ['assistant', 'answer 2'],
        ['user', 'three'],
      ]);
      await say('reset');
      expect(await say('four')).toBe('answer 4');
      expect(calls[3]!.body.messages.slice(1).map((m) => m.content)).toEqual(['four']);
      fail = true;
      const apology = await say('five');
      expect(apology).toMatch(/sorry/i);
    } finally {
      await dev.stop();
      await graph.close();
      ai.close();
      await database.drop();
    }
  }, 120_000);
});

describe('npm run dev started with npm', () => {
  it.each(['SIGTERM', 'SIGINT'] as const)(
    'stops within 10 s, with all it started, when only the npm process gets %s',
    async (signal) => {
      // No MONGODB_URI: the embedded database and Azurite are started too.
      const dev = await startDev({}, { npm: true });
      try {
        const npmPid = dev.child.pid as number;
        const started = descendants(npmPid);
        // The app, the embedded database, Azurite (and whatever helps them).
        expect(started.length, started.join('\n')).toBeGreaterThanOrEqual(3);
        expect((await fetch(`${dev.url}/api/health`)).status).toBe(200);
        const answers = () =>
          fetch(`${dev.url}/api/health`, { signal: AbortSignal.timeout(1_000) }).then(
            () => true,
            () => false,
          );
        const signalled = Date.now();
        process.kill(npmPid, signal); // npm alone, not its process group
        const gone = async () => !(await answers()) && stillRunning(started).length === 0;
        await waitFor(gone, STOP_MS).catch(() => undefined);
        expect({ answering: await answers(), running: stillRunning(started) }).toEqual({
          answering: false,
          running: [],
        });
        expect(Date.now() - signalled).toBeLessThan(STOP_MS);
        expect(dev.output()).toContain('stopped');
      } finally {
        await dev.stop();
      }
    },
    120_000,
  );
});

/**
 * `npm run dev` in a process group of its own (npm's pid is the group's id), with what is left of
 * it (zombies aside): the group, and the database and Azurite it started in groups of their own
 * (found by the data folder in their command line). The cleanup kills whatever is left and removes
 * the data folder.
 */
async function npmRunDev(): Promise<{
  child: ReturnType<typeof spawn>;
  port: number;
  group: () => string[][];
  cleanup: () => void;
}> {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
  const port = await freePort();
  const cli = process.env['npm_execpath'];
  const [command, args] =
    cli && /npm-cli\.[cm]?js$/.test(cli) ? [process.execPath, [cli, 'run', 'dev']] : ['npm', ['run', 'dev']];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, DEV_SKIP_WEB_BUILD: '1', DEV_DATA_DIR: dataDir, PORT: String(port) },
    stdio: 'ignore',
    detached: true,
  });
  const group = () =>
    execFileSync('ps', ['-A', '-o', 'pid=,pgid=,stat=,args='], { encoding: 'utf8' })
      .split('\n')
      .map((l) => l.trim().split(/\s+/))
      .filter(
        ([, pgid, stat, ...args]) =>
          (Number(pgid) === child.pid || args.join(' ').includes(dataDir)) && !stat?.startsWith('Z'),
      )
      .map(([pid = '', pgid = '', stat = '']) => [pid, pgid, stat]);
  const cleanup = () => {
    for (const [pid] of group()) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    try {
      process.kill(-(child.pid as number), 'SIGKILL');
    } catch {
      // all gone
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  return { child, port, group, cleanup };
}

describe('npm run dev stopped as it starts', () => {
  it('stops within 10 s when only the npm process gets SIGTERM before the app has started', async () => {
    // npm passes the signal to its child, the shell or the node it `exec`s, before the app has
    // installed its handlers: nothing it would start may outlive it.
    const { child, group, cleanup } = await npmRunDev();
    try {
      // Once npm has started its shell, and before node could have loaded the app: however long a
      // loaded machine takes to start npm (no bound of the product's), within the test's time.
      await waitFor(async () => group().length >= 2, 60_000 - 2 * STOP_MS);
      process.kill(child.pid as number, 'SIGTERM');
      const signalled = Date.now();
      await waitFor(async () => group().length === 0, STOP_MS).catch(() => undefined);
      expect(group()).toEqual([]);
      expect(Date.now() - signalled).toBeLessThan(STOP_MS);
    } finally {
      cleanup();
    }
  }, 60_000);

  it('stops within 10 s when the npm process alone is killed with SIGKILL (it passes nothing on)', async () => {
    // npm's shell, and the app under it, outlive npm: the app watches npm itself.
    const { child, port, group, cleanup } = await npmRunDev();
    try {
      await waitFor(
        () =>
          fetch(`http://127.0.0.1:${port}/api/openapi.json`).then(
            (r) => r.ok,
            () => false,
          ),
        60_000,
      );
      process.kill(child.pid as number, 'SIGKILL');
      const killed = Date.now();
      await waitFor(async () => group().length === 0, STOP_MS).catch(() => undefined);
      expect(group()).toEqual([]);
      expect(Date.now() - killed).toBeLessThan(STOP_MS);
    } finally {
      cleanup();
    }
  }, 90_000);

  it('never says ready once stopping, when SIGTERM comes as the queue functions start', async () => {
    // Between Azurite's start and the queue functions' thread being up (the longest step once the
    // database answers), a SIGTERM starts the stop: a client waiting for `ready` must not get it.
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-early-'));
    const child = await spawnEmbeddedDev(
      path.join(ROOT, 'node_modules/.bin/tsx'),
      ['scripts/dev.ts'],
      dataDir,
    );
    let out = '';
    let signalled = false;
    const read = (chunk: Buffer) => {
      out += chunk.toString();
      if (!signalled && out.includes('queues: Azurite on')) {
        signalled = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    try {
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(signalled).toBe(true);
      expect(code).toBe(0);
      const afterStop = out.slice(out.indexOf('SIGTERM received, stopping'));
      expect(afterStop).toContain('stopped');
      expect(afterStop).not.toMatch(/ready/);
      // Nothing published for scripts to find: the server it would name is gone.
      expect(existsSync(path.join(dataDir, 'dev-server.json'))).toBe(false);
      expect(existsSync(path.join(dataDir, 'azurite.json'))).toBe(false);
    } finally {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // already gone
      }
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);
});

describe('npm run dev stopped with Ctrl-C (SIGINT to its whole process group, as a terminal sends it)', () => {
  // The terminal signals every process of its foreground group at once. The database and Azurite
  // must not take it: the app stops them itself once its work has ended, as on a SIGTERM to npm.
  it('stops cleanly within 10 s, also as the queue functions start, with all it started', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-ctrlc-'));
    // `npm run dev` is `exec node --import tsx scripts/dev.ts`: this process, as a terminal's job.
    const child = await spawnEmbeddedDev(process.execPath, ['--import', 'tsx', 'scripts/dev.ts'], dataDir);
    let out = '';
    let started: string[] = [];
    let signalled = 0;
    const read = (chunk: Buffer) => {
      out += chunk.toString();
      if (!signalled && out.includes('queues: Azurite on')) {
        // The embedded database and Azurite are up; the queue functions' thread is starting.
        started = descendants(child.pid as number);
        signalled = Date.now();
        process.kill(-(child.pid as number), 'SIGINT');
      }
    };
    child.stdout.on('data', read);
    child.stderr.on('data', read);
    try {
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      const took = Date.now() - signalled;
      expect(signalled).toBeGreaterThan(0);
      expect(started.length, started.join('\n')).toBeGreaterThanOrEqual(2);
      // All it started is gone within the contract's bound, counted from the signal.
      await waitFor(
        async () => stillRunning(started).length === 0,
        Math.max(0, signalled + STOP_MS - Date.now()),
      ).catch(() => undefined);
      expect({ code, running: stillRunning(started), stopped: /^stopped$/m.test(out) }).toEqual({
        code: 0,
        running: [],
        stopped: true,
      });
      expect(took).toBeLessThan(STOP_MS);
      expect(out).not.toMatch(/stopped before it finished/);
    } finally {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        // already gone
      }
      for (const line of stillRunning(started)) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);

  it('while 16 webhook POSTs are in flight: stops cleanly, and a restart on its data answers each acknowledged message once', async () => {
    const SECRET_C = 'ctrl-c-secret';
    const env = { WHATSAPP_VERIFY_TOKEN: 'ctrl-c-verify', WHATSAPP_APP_SECRET: SECRET_C };
    const dev = await startDev(env, { npm: true });
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-ctrlc-data-'));
    let again: DevProcess | undefined;
    try {
      const started = descendants(dev.child.pid as number);
      const acked: string[] = [];
      let sending = true;
      let sent = 0;
      const sender = async (n: number) => {
        while (sending) {
          const { message, payload } = textNotification(
            `4477009${String(30_000 + n).slice(1)}`,
            `m${sent++}`,
          );
          const { body, signature } = signed(payload, SECRET_C);
          const answer = await fetch(`${dev.url}/api/webhook`, {
            method: 'POST',
            headers: { 'x-hub-signature-256': signature },
            body,
          }).catch(() => undefined);
          if (answer?.status === 200) acked.push(message.id);
          else if (!answer) return; // the server has gone
        }
      };
      const senders = Array.from({ length: 16 }, (_, n) => sender(n));
      await waitFor(async () => acked.length >= 48, 30_000);
      const exited = new Promise<number | null>((resolve) => dev.child.once('exit', resolve));
      const signalled = Date.now();
      process.kill(-(dev.child.pid as number), 'SIGINT'); // npm's group: npm and the app
      const code = await exited;
      const took = Date.now() - signalled;
      sending = false;
      await Promise.all(senders);
      await waitFor(
        async () => stillRunning(started).length === 0,
        Math.max(0, signalled + STOP_MS - Date.now()),
      ).catch(() => undefined);
      expect({ code, running: stillRunning(started), stopped: /^stopped$/m.test(dev.output()) }).toEqual({
        code: 0,
        running: [],
        stopped: true,
      });
      expect(took).toBeLessThan(STOP_MS);
      expect(dev.output()).not.toMatch(/stopped before it finished|\[error\]/);

      // The same data folder (moved: the first run's helper removes its own on stop).
      rmSync(dataDir, { recursive: true, force: true });
      execFileSync('cp', ['-a', dev.dataDir, dataDir]);
      again = await startDev({ ...env, DEV_DATA_DIR: dataDir });
      // A stop under load may leave replies running (the 10 s bound comes first; it says so): their
      // users' reply locks are held until the lease ends, and the next sweep (every minute) answers
      // what those users still wait for. Otherwise the queues alone answer everything at once.
      const leftRunning = /stopped with \d+ function\(s\) still running/.test(dev.output());
      const res = await storedAndAnswered(again, acked, {
        answered: true,
        timeoutMs: leftRunning ? LEASE_MS + SWEEP_PERIOD_MS + 20_000 : 30_000,
      });
      expect(res).toEqual({
        stored: acked.length,
        answered: acked.length,
      });
    } finally {
      await again?.stop();
      await dev.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 330_000);
});

/**
 * `npm run dev` as `command args` in its own process group, on the embedded database and Azurite
 * (whatever this shell's settings), with its data in `dataDir` on a free port.
 */
async function spawnEmbeddedDev(command: string, args: string[], dataDir: string) {
  return spawn(command, args, {
    cwd: ROOT,
    env: {
      ...process.env,
      DEV_SKIP_WEB_BUILD: '1',
      DEV_DATA_DIR: dataDir,
      PORT: String(await freePort()),
      MONGODB_URI: '',
      AzureWebJobsStorage: '',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
}

/** Runs scripts/dev.ts to its end (it is expected to fail at start): exit code and output. */
function devFails(env: Record<string, string>): Promise<{ code: number | null; out: string }> {
  const base: Record<string, string> = {};
  for (const key of ['PATH', 'HOME', 'XDG_CACHE_HOME', 'TMPDIR']) {
    const v = process.env[key];
    if (v !== undefined) base[key] = v;
  }
  const child = spawn(path.join(ROOT, 'node_modules/.bin/tsx'), ['scripts/dev.ts'], {
    cwd: ROOT,
    env: { ...base, DEV_SKIP_WEB_BUILD: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

const lastLine = (out: string): string => out.trim().split('\n').at(-1) ?? '';

describe('npm run dev that cannot start says why and what to do, in one line', () => {
  it('a second one on the same data folder stops before starting anything, and the first keeps running', async () => {
    const database = await testDatabase('e2e_second');
    const env = { MONGODB_URI: database.uri, MONGODB_DATABASE: database.dbName };
    const first = await startDev(env);
    try {
      const record = () => readFileSync(path.join(first.dataDir, 'azurite.json'), 'utf8');
      const published = record();
      const second = await devFails({ ...env, DEV_DATA_DIR: first.dataDir, PORT: String(await freePort()) });
      expect(second.code).toBe(1);
      const named = /\(pid (\d+)\)/.exec(second.out)?.[1] ?? 'none';
      expect(lastLine(second.out)).toBe(
        `npm run dev failed: another \`npm run dev\` (pid ${named}) uses ${first.dataDir}: ` +
          'stop it first, or start this one with DEV_DATA_DIR set to another folder',
      );
      // The first one's app process.
      expect(descendants(first.child.pid as number).map((line) => line.split(' ')[0])).toContain(named);
      expect(second.out).not.toContain('queues: Azurite');
      expect(record()).toBe(published);
      expect((await fetch(`${first.url}/api/health`)).status).toBe(200);
    } finally {
      await first.stop();
      await database.drop();
    }
  }, 120_000);

  it('a port in use (after taking over a dev.pid that names another program, as after a reboot)', async () => {
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    const database = await testDatabase('e2e_port');
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
    // A live process that is not `npm run dev`: this test's own.
    writeFileSync(path.join(dataDir, 'dev.pid'), `${process.pid}\n`);
    try {
      const run = await devFails({
        MONGODB_URI: database.uri,
        MONGODB_DATABASE: database.dbName,
        DEV_DATA_DIR: dataDir,
        PORT: String(port),
      });
      expect(run.code).toBe(1);
      expect(lastLine(run.out)).toBe(
        `npm run dev failed: port ${port} on 127.0.0.1 is in use (another \`npm run dev\`?): ` +
          'stop what uses it, or set PORT to another port',
      );
    } finally {
      taken.close();
      rmSync(dataDir, { recursive: true, force: true });
      await database.drop();
    }
  }, 120_000);

  it('takes its port before it starts the database or Azurite (which take free ports, and could take it)', async () => {
    const closed = await freePort();
    const port = await freePort();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
    try {
      let exited = false;
      const run = devFails({
        // A database that never answers: the start waits on it for 3 s, then fails.
        MONGODB_URI: `mongodb://127.0.0.1:${closed}/?serverSelectionTimeoutMS=3000`,
        DEV_DATA_DIR: dataDir,
        PORT: String(port),
      }).finally(() => (exited = true));
      const listening = async () =>
        new Promise<boolean>((resolve) => {
          const socket = net.connect(port, '127.0.0.1');
          socket.once('connect', () => {
            socket.destroy();
            resolve(true);
          });
          socket.once('error', () => resolve(false));
        });
      let taken = false;
      while (!exited && !taken) {
        taken = await listening();
        if (!taken) await new Promise((r) => setTimeout(r, 50));
      }
      expect(taken).toBe(true);
      expect((await run).code).toBe(1);
      // The port is given back when the start fails.
      expect(await listening()).toBe(false);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('a MONGODB_URI server that does not answer', async () => {
    const closed = await freePort();
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
    try {
      const run = await devFails({
        MONGODB_URI: `mongodb://127.0.0.1:${closed}/?serverSelectionTimeoutMS=1000`,
        DEV_DATA_DIR: dataDir,
        PORT: String(await freePort()),
      });
      expect(run.code).toBe(1);
      expect(lastLine(run.out)).toBe(
        `npm run dev failed: the database at MONGODB_URI (mongodb://127.0.0.1:${closed}/?serverSelectionTimeoutMS=1000) ` +
          'does not answer: start it, or correct MONGODB_URI (unset, the embedded database is used)',
      );
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);

  it('a MONGODB_URI whose host name is not found, or that is no connection string, as the scripts say', async () => {
    // `.invalid` never resolves (RFC 2606); an SRV name is how Atlas and Cosmos DB vCore are given.
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
    try {
      const srv = await devFails({
        MONGODB_URI: 'mongodb+srv://u:secret-pw@cluster0.nonexistent.invalid/',
        DEV_DATA_DIR: dataDir,
        PORT: String(await freePort()),
      });
      expect(srv.code).toBe(1);
      expect(lastLine(srv.out)).toMatch(
        new RegExp(
          '^npm run dev failed: the host name of MONGODB_URI \\(mongodb\\+srv://\\*\\*\\*:\\*\\*\\*@cluster0\\.nonexistent\\.invalid/\\) ' +
            'was not found \\(querySrv E[A-Z_]+\\): correct MONGODB_URI \\(unset, the embedded database is used\\), ' +
            "or check this machine's network and DNS$",
        ),
      );
      // A mongodb:// host name: the driver only says server selection timed out (before, "does
      // not answer: start it"), its servers' own failures say the name was not found.
      const host = await devFails({
        MONGODB_URI: 'mongodb://u:secret-pw@db.nonexistent.invalid:27017/?serverSelectionTimeoutMS=1000',
        DEV_DATA_DIR: dataDir,
        PORT: String(await freePort()),
      });
      expect(host.code).toBe(1);
      expect(lastLine(host.out)).toMatch(
        new RegExp(
          '^npm run dev failed: the host name of MONGODB_URI \\(mongodb://\\*\\*\\*:\\*\\*\\*@db\\.nonexistent\\.invalid:27017/' +
            '\\?serverSelectionTimeoutMS=1000\\) was not found \\(getaddrinfo E[A-Z_]+\\): correct MONGODB_URI',
        ),
      );
      const word = await devFails({
        MONGODB_URI: 'localhost:27017',
        DEV_DATA_DIR: dataDir,
        PORT: String(await freePort()),
      });
      expect(word.code).toBe(1);
      expect(lastLine(word.out)).toBe(
        'npm run dev failed: MONGODB_URI is not a valid connection string (Invalid scheme, expected ' +
          'connection string to start with "mongodb://" or "mongodb+srv://"): correct MONGODB_URI ' +
          '(unset, the embedded database is used)',
      );
      expect(srv.out + host.out + word.out).not.toContain('secret-pw');
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 120_000);
});
