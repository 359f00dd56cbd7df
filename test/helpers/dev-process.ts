// Runs `npm run dev` (scripts/dev.ts) as a child process, the way a black-box client would.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { sleep } from '../../shared/time';

export interface DevProcess {
  url: string;
  output: () => string;
  child: ChildProcess;
  /** The data folder (DEV_DATA_DIR): Azurite's files, and the embedded database's without MONGODB_URI. */
  dataDir: string;
  /** SIGTERM, resolves with the exit code and how long the stop took. */
  stop(): Promise<{ code: number | null; ms: number }>;
  /**
   * SIGKILL to the app's process group and to every process under it (Azurite and an embedded
   * database run in groups of their own), all at once, as a crash.
   */
  kill(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const ROOT = path.resolve(__dirname, '../..');

/** npm as the user runs it: the npm-cli.js running these tests (`npm test`, `npx`), else `npm`. */
function npmCommand(): [string, string[]] {
  const cli = process.env['npm_execpath'];
  return cli && /npm-cli\.[cm]?js$/.test(cli) ? [process.execPath, [cli]] : ['npm', []];
}

/**
 * Starts `npm run dev` in its own process group. Without DEV_DATA_DIR in `env` it gets a temporary
 * data folder, removed when it stops. By default it runs scripts/dev.ts directly, without the web
 * build (the run's global setup did it); `npm: true` runs `npm run dev` itself, build included.
 */
export async function startDev(
  env: Record<string, string>,
  options: { port?: number; npm?: boolean } = {},
): Promise<DevProcess> {
  const port = options.port ?? (Number(env['PORT']) || (await freePort()));
  const ownDir = env['DEV_DATA_DIR'] === undefined;
  const dataDir = env['DEV_DATA_DIR'] ?? mkdtempSync(path.join(os.tmpdir(), 'wa-dev-'));
  const cleanup = () => {
    if (ownDir) rmSync(dataDir, { recursive: true, force: true });
  };
  const base: Record<string, string> = {};
  for (const key of ['PATH', 'HOME', 'XDG_CACHE_HOME', 'GOPATH', 'GOCACHE', 'TMPDIR']) {
    const v = process.env[key];
    if (v !== undefined) base[key] = v;
  }
  const [command, args] = options.npm
    ? [npmCommand()[0], [...npmCommand()[1], 'run', 'dev']]
    : [path.join(ROOT, 'node_modules/.bin/tsx'), ['scripts/dev.ts']];
  const child = spawn(command, args, {
    cwd: ROOT,
    env: {
      ...base,
      // The suite's setup built the browser scripts; building them again here would rewrite
      // files that other test files may be reading at that moment.
      DEV_SKIP_WEB_BUILD: '1',
      ...env,
      PORT: String(port),
      DEV_DATA_DIR: dataDir,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  child.stdout?.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`dev server not ready:\n${out}`)), 90_000);
    const check = () => {
      if (/^ready/m.test(out) || out.includes('ready on')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`dev server exited ${code}:\n${out}`));
    });
  }).catch((error: unknown) => {
    killGroup(child);
    cleanup();
    throw error;
  });
  return {
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    child,
    dataDir,
    stop: () =>
      new Promise((resolve) => {
        const started = Date.now();
        if (child.exitCode !== null || child.signalCode !== null) {
          killGroup(child);
          cleanup();
          return resolve({ code: child.exitCode, ms: 0 });
        }
        child.once('exit', (code) => {
          // Whatever it left behind (it should have stopped its children itself).
          killGroup(child);
          cleanup();
          resolve({ code, ms: Date.now() - started });
        });
        child.kill('SIGTERM');
      }),
    kill: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        killGroup(child);
      }),
  };
}

/** The processes running now (POSIX `ps`; a zombie has ended): pid, parent pid, command. */
function processTable(): { pid: number; ppid: number; command: string }[] {
  return execFileSync('ps', ['-A', '-o', 'pid=,ppid=,stat=,args='], { encoding: 'utf8' })
    .split('\n')
    .map((line) => /^\s*(\d+)\s+(\d+)\s+(\S+)\s+(.*)$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !m[3]?.startsWith('Z'))
    .map((m) => ({ pid: Number(m[1]), ppid: Number(m[2]), command: m[4] ?? '' }));
}

/** Every process below `pid`, as `pid command` lines. */
export function descendants(pid: number): string[] {
  const table = processTable();
  const found: { pid: number; command: string }[] = [];
  for (let i = -1; i < found.length; i++) {
    const parent = i < 0 ? pid : found[i]?.pid;
    for (const p of table) if (p.ppid === parent) found.push(p);
  }
  return found.map((p) => `${p.pid} ${p.command}`);
}

/** Those of `processes` (from `descendants`) still running. */
export function stillRunning(processes: readonly string[]): string[] {
  const running = new Set(processTable().map((p) => p.pid));
  return processes.filter((p) => running.has(Number(p.split(' ')[0])));
}

/** SIGKILL to the child's process group and to every process under it (see `kill`). */
function killGroup(child: ChildProcess): void {
  if (!child.pid) return;
  const below = descendants(child.pid).map((line) => Number(line.split(' ')[0]));
  for (const target of [-child.pid, ...below]) {
    try {
      process.kill(target, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

export async function waitFor<T>(
  probe: () => Promise<T | undefined | null | false>,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await sleep(100);
  }
}

/** The database a run said it uses: the last `database: … at mongodb://…` line of its output. */
export function databaseUriOf(output: string): string {
  const uri = [...output.matchAll(/database: .* at (mongodb:\/\/\S+)/g)].at(-1)?.[1];
  if (!uri) throw new Error(`no database URI in the output:\n${output}`);
  return uri;
}

/**
 * How many of the inbound messages `ids` the run's database holds (and, with `answered`, how many
 * have an answer), once every one is there or `timeoutMs` has passed.
 */
export async function storedAndAnswered(
  dev: DevProcess,
  ids: readonly string[],
  { answered = false, timeoutMs = 30_000 }: { answered?: boolean; timeoutMs?: number } = {},
): Promise<{ stored: number; answered?: number }> {
  const client = await MongoClient.connect(databaseUriOf(dev.output()));
  try {
    const messages = client.db('whatsapp_chatbot').collection<{ _id: string }>('messages');
    const count = async () => ({
      stored: await messages.countDocuments({ _id: { $in: [...ids] } }),
      ...(answered
        ? { answered: await messages.countDocuments({ direction: 'outbound', relatedId: { $in: [...ids] } }) }
        : {}),
    });
    await waitFor(async () => {
      const now = await count();
      return now.stored >= ids.length && (now.answered ?? ids.length) >= ids.length;
    }, timeoutMs).catch(() => undefined);
    return await count();
  } finally {
    await client.close();
  }
}
