// Starts the FerretDB binary on SQLite files (a temporary folder, or .data/ferretdb for dev and the
// scripts) on a free port, and stops it; it dies with this process (./watchdog).
import { promises as fs, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Log, ResolvedDatabase } from './database-types';
import { FERRETDB_VERSION } from './ferretdb-build';
import { displayPath, privateDir } from './paths';
import { canConnect, freePort, ping } from './probe';
import { sleep } from '../../shared/time';
import { errorMessage, lastLine, tail, within } from './subprocess';
import { spawnWatched } from './watchdog';

const READY_TIMEOUT_MS = 30_000;

/**
 * SQLite settings passed through FerretDB's `--sqlite-url` (`_pragma=name(value)`; FerretDB adds
 * busy_timeout(10000), journal_mode(wal) and auto_vacuum(none) itself). synchronous(NORMAL) with
 * WAL syncs at checkpoints instead of at every commit: an acknowledged write survives the end of
 * the process, even SIGKILL (it is in the OS's page cache; test/integration/embedded-database.test.ts),
 * and the file is never corrupted; only an OS crash or power loss can take back the last commits.
 * Right for a development database: sequential inserts ran 2.5-5 times faster than with the default
 * FULL (`npm run bench:ferretdb`); OFF was faster still in some runs but can corrupt the file on
 * an OS crash or power loss, which a developer's database should survive.
 */
export const SQLITE_PRAGMAS: readonly string[] = ['synchronous(NORMAL)'];

export interface FerretDbOptions {
  /** The SQLite files' folder; default a temporary one, removed at stop. */
  persistentDir?: string | undefined;
  /** `_pragma` values for the SQLite URL; default SQLITE_PRAGMAS. */
  pragmas?: readonly string[];
}

/** A started FerretDB; `pid` is the server's process (tests kill it to check durability). */
export type FerretDbServer = ResolvedDatabase & { readonly pid: number | undefined };

export async function startFerretDb(
  binary: string,
  log: Log,
  options: FerretDbOptions = {},
): Promise<FerretDbServer> {
  const persistentDir = options.persistentDir;
  const dir = persistentDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'ferretdb-test-')));
  await privateDir(dir);
  const started = Date.now();
  let lastError: unknown;
  try {
    // A free port can be taken by someone else before FerretDB binds it: try a few.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      try {
        const server = await launchFerretDb(binary, {
          dir,
          port,
          temporary: !persistentDir,
          pragmas: options.pragmas ?? SQLITE_PRAGMAS,
        });
        const uri = `mongodb://127.0.0.1:${port}/`;
        const description = `FerretDB ${FERRETDB_VERSION} (SQLite, ${persistentDir ? `files in ${displayPath(dir)}` : 'temporary files'}) at ${uri}`;
        log(`database: ${description} (started in ${Date.now() - started} ms)`);
        return {
          uri,
          kind: 'ferretdb',
          description,
          pid: server.pid,
          exited: server.exited,
          async stop() {
            await server.stop();
            if (!persistentDir) await fs.rm(dir, { recursive: true, force: true });
          },
        };
      } catch (error) {
        lastError = error;
        if (!/address already in use/i.test(errorMessage(error))) break;
      }
    }
  } catch (error) {
    lastError = error;
  }
  if (!persistentDir) await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  throw new Error(`FerretDB did not start: ${errorMessage(lastError)}`);
}

/** The `--sqlite-url` for a folder and SQLite pragmas. */
export function sqliteUrl(dir: string, pragmas: readonly string[]): string {
  const query = pragmas.map((p) => `_pragma=${encodeURIComponent(p)}`).join('&');
  return `file:${dir.split(path.sep).join('/')}/${query ? `?${query}` : ''}`;
}

async function launchFerretDb(
  binary: string,
  options: { dir: string; port: number; temporary: boolean; pragmas: readonly string[] },
): Promise<{ pid: number | undefined; exited: Promise<string>; stop(): Promise<void> }> {
  const { dir, port, temporary } = options;
  const args = [
    '--handler=sqlite',
    `--sqlite-url=${sqliteUrl(dir, options.pragmas)}`,
    `--listen-addr=127.0.0.1:${port}`,
    `--state-dir=${dir}`,
    '--telemetry=disable',
    '--log-level=error',
    // The debug HTTP listener defaults to 127.0.0.1:8088, which parallel instances would fight over.
    // FERRETDB_DEBUG_ADDR=127.0.0.1:8089 opens it on purpose (Go pprof, for profiling).
    process.env['FERRETDB_DEBUG_ADDR']
      ? `--debug-addr=${process.env['FERRETDB_DEBUG_ADDR']}`
      : '--debug-addr=-',
  ];
  // Go's collector at a quarter of its default pace: FerretDB decodes every document it reads into
  // short-lived objects; about 15 % less CPU per turn for some 20 MB more memory (npm run bench).
  const server = spawnWatched(binary, args, { ...process.env, GOGC: process.env['GOGC'] ?? '400' });
  const { child } = server;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  let stopping: Promise<void> | undefined;
  void exited.then(() => {
    running = false;
    child.stdin?.destroy(); // lets the watcher go
  });
  // Its end without stop(): `npm run dev` must not run on with a database that is gone.
  const died = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => {
      if (stopping) return;
      const said = lastLine(server.stderr());
      resolve(signal ? `was killed by ${signal}` : `exited with code ${code}${said ? ` (${said})` : ''}`);
    }),
  );
  // Fallback for an orderly exit without stop(); the watcher covers the other ways of dying.
  const onExit = (): void => {
    if (running) child.kill('SIGKILL');
    if (temporary) rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', onExit);
  // Neither the child nor its pipes keep this process alive.
  child.unref();
  for (const stream of [child.stdin, child.stderr])
    (stream as unknown as { unref?: () => void } | null)?.unref?.();

  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      process.off('exit', onExit);
      if (running) {
        child.kill('SIGTERM');
        if (!(await within(exited, 5_000))) {
          child.kill('SIGKILL');
          await within(exited, 2_000);
        }
      }
      child.stdin?.destroy();
    })());

  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    for (;;) {
      if (!running) throw new Error(tail(server.stderr(), 800) || 'exited at start');
      if (await canConnect(port)) break;
      if (Date.now() > deadline)
        throw new Error(
          `no connection on port ${port} within ${READY_TIMEOUT_MS / 1000} s ${tail(server.stderr(), 400)}`,
        );
      await sleep(50);
    }
    if (!(await ping(`mongodb://127.0.0.1:${port}/`, Math.max(1_000, deadline - Date.now())))) {
      throw new Error(`no answer to ping on port ${port} ${tail(server.stderr(), 400)}`);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  // The watchdog `exec`s the server, so the child's pid is the server's.
  return { pid: child.pid, exited: died, stop };
}
