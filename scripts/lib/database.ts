// Finds the database server for the tests, `npm run dev` and the operator scripts (docs/contract.md,
// "Database resolution"): MONGODB_URI, else the running dev server (scripts), else a mongod through
// mongodb-memory-server, else FerretDB v1 on SQLite built once with `go install`.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';

export type DatabaseKind = 'uri' | 'mongod' | 'ferretdb' | 'dev-server';

export interface ResolvedDatabase {
  uri: string;
  kind: DatabaseKind;
  description: string;
  stop(): Promise<void>;
}

export interface ResolveOptions {
  purpose: 'test' | 'dev' | 'script';
  log?: (line: string) => void;
  /** Where dev/script servers keep their files; default `<repo>/.data`. */
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
}

export const FERRETDB_VERSION = 'v1.24.2';
const FERRETDB_MODULE = 'github.com/FerretDB/FerretDB';
const FERRETDB_PACKAGE = `${FERRETDB_MODULE}/cmd/ferretdb`;
const DEV_SERVER_FILE = 'dev-server.json';
const MONGOD_DOWNLOAD_TIMEOUT_MS = 20_000;
// A failed mongod download costs seconds each run; remember it for a while instead.
const MONGOD_DOWNLOAD_RETRY_AFTER_MS = 60 * 60 * 1000;
const FERRETDB_READY_TIMEOUT_MS = 30_000;
const INSTALL_LOCK_TIMEOUT_MS = 15 * 60 * 1000;

type Log = (line: string) => void;

// Diagnostics go to stderr: scripts print their results (tokens, lists) on stdout.
const defaultLog: Log = (line) => process.stderr.write(`${line}\n`);

const noop = async (): Promise<void> => undefined;

export async function resolveDatabase(options: ResolveOptions): Promise<ResolvedDatabase> {
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog;
  const dataDir = options.dataDir ?? defaultDataDir();
  const persistent = options.purpose !== 'test';

  const configured = env['MONGODB_URI']?.trim();
  if (configured) {
    const description = `MONGODB_URI (${maskUri(configured)})`;
    log(`database: ${description}`);
    return { uri: configured, kind: 'uri', description, stop: noop };
  }

  if (options.purpose === 'script') {
    const record = await findDevServer(dataDir);
    if (record) {
      const description = `the server of the running \`npm run dev\` (pid ${record.pid}, ${record.kind}) at ${maskUri(record.uri)}`;
      log(`database: ${description}`);
      return { uri: record.uri, kind: 'dev-server', description, stop: noop };
    }
  }

  const mongod = await startMongod(env, log, persistent ? path.join(dataDir, 'mongod') : undefined);
  if (mongod) return mongod;

  const binary = await ensureFerretDb({ env, log });
  return startFerretDb(binary, log, persistent ? path.join(dataDir, 'ferretdb') : undefined);
}

/** Hides credentials: user:password and secret-looking query parameters. */
export function maskUri(uri: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(uri)?.[0] ?? '';
  let masked = uri;
  // The host follows the last '@' before the query (Cosmos puts `appName=@account@` in the query;
  // its keys may contain '/', '+' and '=').
  const at = uri.split('?')[0]?.lastIndexOf('@') ?? -1;
  if (scheme && at >= scheme.length) masked = `${scheme}***:***${uri.slice(at)}`;
  return masked.replace(
    /([?&](?:[^=&]*(?:password|secret|token|key|sig)[^=&]*|authMechanismProperties)=)[^&#]*/gi,
    '$1***',
  );
}

// ---------------------------------------------------------------------------------------------
// The running dev server, published so scripts do not start a second server on the same files.

interface DevServerRecord {
  uri: string;
  pid: number;
  kind: DatabaseKind;
}

export async function publishDevServer(
  db: ResolvedDatabase,
  dataDir: string = defaultDataDir(),
): Promise<void> {
  // A MONGODB_URI server is found by the scripts the same way; keep its credentials off the disk.
  if (db.kind === 'uri' || db.kind === 'dev-server') return;
  const record: DevServerRecord = { uri: db.uri, pid: process.pid, kind: db.kind };
  await fs.mkdir(dataDir, { recursive: true });
  const file = path.join(dataDir, DEV_SERVER_FILE);
  const temp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(temp, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  await fs.rename(temp, file);
}

/** Removes the record if this process wrote it (another dev server may have replaced it). */
export async function unpublishDevServer(dataDir: string = defaultDataDir()): Promise<void> {
  const file = path.join(dataDir, DEV_SERVER_FILE);
  const record = await readDevServer(file);
  if (record?.pid === process.pid) await fs.rm(file, { force: true });
}

/** The published dev server, when its process is alive and it answers a ping. */
export async function findDevServer(
  dataDir: string = defaultDataDir(),
): Promise<DevServerRecord | undefined> {
  const record = await readDevServer(path.join(dataDir, DEV_SERVER_FILE));
  if (!record || !isAlive(record.pid)) return undefined;
  return (await ping(record.uri, 2_000)) ? record : undefined;
}

async function readDevServer(file: string): Promise<DevServerRecord | undefined> {
  try {
    const value: unknown = JSON.parse(await fs.readFile(file, 'utf8'));
    if (typeof value !== 'object' || value === null) return undefined;
    const { uri, pid, kind } = value as Record<string, unknown>;
    if (typeof uri !== 'string' || typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0)
      return undefined;
    const kinds: readonly unknown[] = ['mongod', 'ferretdb'];
    return { uri, pid, kind: kinds.includes(kind) ? (kind as DatabaseKind) : 'mongod' };
  } catch {
    return undefined; // missing or half-written: treated as no dev server
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function ping(uri: string, timeoutMs: number): Promise<boolean> {
  const client = new MongoClient(uri, {
    serverSelectionTimeoutMS: timeoutMs,
    connectTimeoutMS: timeoutMs,
    socketTimeoutMS: timeoutMs,
  });
  try {
    await client.connect();
    await client.db('admin').command({ ping: 1 });
    return true;
  } catch {
    return false;
  } finally {
    await client.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// mongod through mongodb-memory-server

async function startMongod(
  env: NodeJS.ProcessEnv,
  log: Log,
  dbPath: string | undefined,
): Promise<ResolvedDatabase | undefined> {
  // A production install has no dev dependencies: then there is no mongod fallback.
  const mms = await import('mongodb-memory-server').catch(() => undefined);
  if (!mms) return undefined;
  const binary = await findMongodBinary(env, log);
  if (!binary) return undefined;
  const started = Date.now();
  try {
    if (dbPath) await fs.mkdir(dbPath, { recursive: true });
    const server = await mms.MongoMemoryServer.create({
      binary: { systemBinary: binary },
      instance: dbPath ? { ip: '127.0.0.1', dbPath, storageEngine: 'wiredTiger' } : { ip: '127.0.0.1' },
    });
    const uri = server.getUri();
    const description = `mongod (${path.basename(binary)}) via mongodb-memory-server, ${dbPath ? `files in ${displayPath(dbPath)}` : 'temporary files'}, at ${uri}`;
    log(`database: ${description} (started in ${Date.now() - started} ms)`);
    let stopped = false;
    return {
      uri,
      kind: 'mongod',
      description,
      async stop() {
        if (stopped) return;
        stopped = true;
        await server.stop({ doCleanup: !dbPath });
      },
    };
  } catch (error) {
    log(`database: mongod ${binary} did not start (${errorMessage(error)}); trying FerretDB`);
    return undefined;
  }
}

/** A mongod binary that can be had without a network download that might hang. */
async function findMongodBinary(env: NodeJS.ProcessEnv, log: Log): Promise<string | undefined> {
  const system = env['MONGOMS_SYSTEM_BINARY']?.trim();
  if (system) return system;

  const cacheDirs = [
    env['MONGOMS_DOWNLOAD_DIR'],
    path.join(repoRoot(), 'node_modules', '.cache', 'mongodb-memory-server'),
    path.join(os.homedir(), '.cache', 'mongodb-binaries'),
  ].filter((dir): dir is string => Boolean(dir));
  const cached = await newestMongodIn(cacheDirs);
  if (cached) return cached;

  if (/^(0|false|no|off)$/i.test(env['MONGOMS_RUNTIME_DOWNLOAD'] ?? '')) return undefined;
  const marker = path.join(cacheRoot(env), 'mongod-download-failed');
  const failedAt = await fs.stat(marker).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  if (Date.now() - failedAt < MONGOD_DOWNLOAD_RETRY_AFTER_MS) {
    log(
      `database: no mongod binary (download failed ${Math.round((Date.now() - failedAt) / 60_000)} min ago; delete ${marker} to retry now)`,
    );
    return undefined;
  }
  log('database: no mongod binary in the caches; trying the mongodb-memory-server download…');
  // In a child process so a hanging download can be killed.
  const script =
    "require('mongodb-memory-server').MongoBinary.getPath().then((p) => process.stdout.write(p), (e) => { process.stderr.write(String(e && e.message)); process.exit(1); })";
  const result = await run(process.execPath, ['-e', script], {
    cwd: repoRoot(),
    env,
    timeoutMs: MONGOD_DOWNLOAD_TIMEOUT_MS,
  });
  const downloaded = result.stdout.trim();
  if (result.code === 0 && downloaded && existsSync(downloaded)) return downloaded;
  const reason = result.timedOut
    ? `no answer in ${MONGOD_DOWNLOAD_TIMEOUT_MS / 1000} s`
    : lastLine(result.stderr) || `exit ${result.code}`;
  log(`database: mongod download failed (${reason}); using FerretDB`);
  await fs.mkdir(path.dirname(marker), { recursive: true });
  await fs.writeFile(marker, `${new Date().toISOString()} ${reason}\n`);
  return undefined;
}

async function newestMongodIn(dirs: readonly string[]): Promise<string | undefined> {
  let best: { file: string; mtime: number } | undefined;
  for (const dir of dirs) {
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      if (!/^mongod(-[\w.-]+)?(\.exe)?$/.test(name) || name.endsWith('.lock') || name.endsWith('.md5'))
        continue;
      const file = path.join(dir, name);
      const stat = await fs.stat(file).catch(() => undefined);
      const executable = process.platform === 'win32' || (stat !== undefined && (stat.mode & 0o111) !== 0);
      if (stat?.isFile() && executable && (!best || stat.mtimeMs > best.mtime))
        best = { file, mtime: stat.mtimeMs };
    }
  }
  return best?.file;
}

// ---------------------------------------------------------------------------------------------
// FerretDB v1 (SQLite backend), built from the Go module proxy into a cache folder

export function ferretDbBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  const name = process.platform === 'win32' ? 'ferretdb.exe' : 'ferretdb';
  return path.join(cacheRoot(env), 'ferretdb', FERRETDB_VERSION, name);
}

/** The FerretDB binary, built with `go install` on first use (about a minute). */
export async function ensureFerretDb(options: { env?: NodeJS.ProcessEnv; log?: Log } = {}): Promise<string> {
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog;
  const target = ferretDbBinaryPath(env);
  if (existsSync(target)) return target;
  const versionDir = path.dirname(target);
  await fs.mkdir(path.dirname(versionDir), { recursive: true });
  return withLock(`${versionDir}.lock`, log, async () => {
    if (existsSync(target)) return target; // another process installed it while we waited
    const started = Date.now();
    log(
      `database: installing FerretDB ${FERRETDB_VERSION} with go install (first run only, about a minute)…`,
    );
    // Built next to the target so the final rename is atomic (same file system).
    const work = await fs.mkdtemp(path.join(path.dirname(versionDir), '.build-'));
    const ticker = setInterval(
      () => log(`database:   still building FerretDB (${Math.round((Date.now() - started) / 1000)} s)…`),
      20_000,
    );
    ticker.unref();
    try {
      const built = await buildFerretDb(work, env, log);
      await fs.mkdir(versionDir, { recursive: true });
      await fs.rename(built, target);
      log(
        `database: installed FerretDB ${FERRETDB_VERSION} at ${target} in ${Math.round((Date.now() - started) / 1000)} s`,
      );
      return target;
    } finally {
      clearInterval(ticker);
      await fs.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
  });
}

async function buildFerretDb(work: string, baseEnv: NodeJS.ProcessEnv, log: Log): Promise<string> {
  const go = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
    run('go', args, {
      cwd: work,
      // No VCS stamping (there is no repository), a static binary, and no user go.work in the way.
      env: {
        ...baseEnv,
        GOFLAGS: '-buildvcs=false -modcacherw',
        CGO_ENABLED: '0',
        GOWORK: 'off',
        GOBIN: path.join(work, 'bin'),
        ...extraEnv,
      },
      timeoutMs: 10 * 60 * 1000,
    });
  const check = (step: string, result: RunResult): void => {
    if (result.code !== 0)
      throw new Error(
        `${step} failed: ${result.timedOut ? 'timed out' : tail(result.stderr || result.stdout, 800)}`,
      );
  };

  const version = await go(['version']);
  if (version.code !== 0) {
    throw new Error(
      'no database server: MONGODB_URI is unset, no mongod binary could be had, and Go (needed to build FerretDB) is not installed. ' +
        'Set MONGODB_URI or MONGOMS_SYSTEM_BINARY, or install Go (https://go.dev/dl/).',
    );
  }
  check('go mod init', await go(['mod', 'init', 'ferretdb-build']));

  // `go install pkg@version` trips over a deprecation lookup some module proxies refuse (403);
  // resolving the module inside a throwaway module avoids that lookup.
  const attempt = async (extraEnv: NodeJS.ProcessEnv): Promise<string> => {
    log(`database:   go get ${FERRETDB_PACKAGE}@${FERRETDB_VERSION}`);
    check('go get', await go(['get', `${FERRETDB_PACKAGE}@${FERRETDB_VERSION}`], extraEnv));
    const dir = await go(['list', '-m', '-f', '{{.Dir}}', FERRETDB_MODULE], extraEnv);
    check('go list', dir);
    // FerretDB refuses to start unless build/version/version.txt holds its version (normally
    // generated by its release tooling), so build from a writable copy that has it.
    const source = path.join(work, 'src');
    await fs.rm(source, { recursive: true, force: true });
    await fs.cp(dir.stdout.trim(), source, { recursive: true });
    await makeWritable(source);
    await fs.writeFile(path.join(source, 'build', 'version', 'version.txt'), `${FERRETDB_VERSION}\n`);
    check('go mod edit', await go(['mod', 'edit', `-replace=${FERRETDB_MODULE}=./src`], extraEnv));
    log(`database:   go install ${FERRETDB_PACKAGE}`);
    check('go install', await go(['install', FERRETDB_PACKAGE], extraEnv));
    const binary = path.join(work, 'bin', process.platform === 'win32' ? 'ferretdb.exe' : 'ferretdb');
    const probe = await run(binary, ['--version'], { cwd: work, env: baseEnv, timeoutMs: 30_000 });
    if (!probe.stdout.includes(FERRETDB_VERSION))
      throw new Error(`the built FerretDB does not run: ${tail(probe.stderr || probe.stdout, 400)}`);
    return binary;
  };

  try {
    return await attempt({});
  } catch (error) {
    // This Go may be too old or too new for FerretDB: retry once with the toolchain it declares.
    const toolchain = await declaredToolchain(work, baseEnv);
    if (!toolchain) throw error;
    log(
      `database:   build failed with ${version.stdout.trim()} (${firstLine(errorMessage(error))}); retrying with GOTOOLCHAIN=${toolchain}`,
    );
    await fs.rm(path.join(work, 'src'), { recursive: true, force: true });
    await go(['mod', 'edit', '-dropreplace', FERRETDB_MODULE]);
    check('go mod edit', await go(['mod', 'edit', `-go=${toolchain.replace(/^go/, '')}`, '-toolchain=none']));
    return attempt({ GOTOOLCHAIN: toolchain });
  }
}

/** The toolchain FerretDB's go.mod asks for (`toolchain go1.24.3`, else `go 1.24` → go1.24.0). */
async function declaredToolchain(work: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  const modCache = (
    await run('go', ['env', 'GOMODCACHE'], { cwd: work, env, timeoutMs: 30_000 })
  ).stdout.trim();
  if (!modCache) return undefined;
  const escaped = FERRETDB_MODULE.replace(/[A-Z]/g, (c) => `!${c.toLowerCase()}`);
  const candidates = [
    path.join(modCache, ...escaped.split('/')) + `@${FERRETDB_VERSION}`,
    path.join(modCache, 'cache', 'download', ...escaped.split('/'), '@v', `${FERRETDB_VERSION}.mod`),
  ];
  for (const candidate of candidates) {
    const file = candidate.endsWith('.mod') ? candidate : path.join(candidate, 'go.mod');
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    const toolchain = /^toolchain\s+(go\d+\.\d+\.\d+)\s*$/m.exec(text)?.[1];
    if (toolchain) return toolchain;
    const goVersion = /^go\s+(\d+\.\d+)(\.\d+)?\s*$/m.exec(text);
    if (goVersion) return `go${goVersion[1]}${goVersion[2] ?? '.0'}`;
  }
  return undefined;
}

async function makeWritable(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await makeWritable(full);
    else await fs.chmod(full, 0o644);
  }
}

/** A cross-process lock (mkdir is atomic); stale locks of dead or long-gone owners are broken. */
async function withLock<T>(lockDir: string, log: Log, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + INSTALL_LOCK_TIMEOUT_MS;
  let announced = false;
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      await fs.writeFile(path.join(lockDir, 'owner'), String(process.pid));
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number(await fs.readFile(path.join(lockDir, 'owner'), 'utf8').catch(() => ''));
    const age =
      Date.now() -
      (await fs.stat(lockDir).then(
        (s) => s.mtimeMs,
        () => Date.now(),
      ));
    if ((owner > 0 && !isAlive(owner)) || age > INSTALL_LOCK_TIMEOUT_MS) {
      await fs.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${lockDir}`);
    if (!announced) {
      log(`database: waiting for another process installing FerretDB (pid ${owner || '?'})…`);
      announced = true;
    }
    await sleep(1_000);
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockDir, { recursive: true, force: true }).catch(() => undefined);
  }
}

// Runs the real server under `sh`, which keeps our stdin on fd 3: when this process goes away in any
// way (even SIGKILL) the pipe closes and the watcher stops FerretDB. `exec` keeps the pid the same.
const WATCHDOG =
  'exec 3<&0; (read -r _ <&3; kill -TERM $$ 2>/dev/null) >/dev/null 2>&1 & exec "$@" 3<&- </dev/null';

async function startFerretDb(
  binary: string,
  log: Log,
  persistentDir: string | undefined,
): Promise<ResolvedDatabase> {
  const dir = persistentDir ?? (await fs.mkdtemp(path.join(os.tmpdir(), 'ferretdb-test-')));
  await fs.mkdir(dir, { recursive: true });
  const started = Date.now();
  let lastError: unknown;
  try {
    // A free port can be taken by someone else before FerretDB binds it: try a few.
    for (let attempt = 0; attempt < 3; attempt++) {
      const port = await freePort();
      try {
        const server = await launchFerretDb(binary, dir, port, !persistentDir);
        const uri = `mongodb://127.0.0.1:${port}/`;
        const description = `FerretDB ${FERRETDB_VERSION} (SQLite, ${persistentDir ? `files in ${displayPath(dir)}` : 'temporary files'}) at ${uri}`;
        log(`database: ${description} (started in ${Date.now() - started} ms)`);
        return {
          uri,
          kind: 'ferretdb',
          description,
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

async function launchFerretDb(
  binary: string,
  dir: string,
  port: number,
  temporary: boolean,
): Promise<{ stop(): Promise<void> }> {
  const args = [
    '--handler=sqlite',
    `--sqlite-url=file:${dir.split(path.sep).join('/')}/`,
    `--listen-addr=127.0.0.1:${port}`,
    `--state-dir=${dir}`,
    '--telemetry=disable',
    '--log-level=error',
    // The debug HTTP listener defaults to 127.0.0.1:8088, which parallel instances would fight over.
    '--debug-addr=-',
  ];
  const child: ChildProcess =
    process.platform === 'win32'
      ? spawn(binary, args, { stdio: ['pipe', 'ignore', 'pipe'], windowsHide: true })
      : spawn('/bin/sh', ['-c', WATCHDOG, 'ferretdb-watchdog', binary, ...args], {
          stdio: ['pipe', 'ignore', 'pipe'],
        });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let running = true;
  void exited.then(() => {
    running = false;
    child.stdin?.destroy(); // lets the watcher go
  });
  child.once('error', (error) => {
    stderr += `\n${error.message}`;
  });
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

  let stopping: Promise<void> | undefined;
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

  const deadline = Date.now() + FERRETDB_READY_TIMEOUT_MS;
  try {
    for (;;) {
      if (!running) throw new Error(tail(stderr, 800) || 'exited at start');
      if (await canConnect(port)) break;
      if (Date.now() > deadline)
        throw new Error(
          `no connection on port ${port} within ${FERRETDB_READY_TIMEOUT_MS / 1000} s ${tail(stderr, 400)}`,
        );
      await sleep(50);
    }
    if (!(await ping(`mongodb://127.0.0.1:${port}/`, Math.max(1_000, deadline - Date.now())))) {
      throw new Error(`no answer to ping on port ${port} ${tail(stderr, 400)}`);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { stop };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        address && typeof address === 'object' ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

// ---------------------------------------------------------------------------------------------
// helpers

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

function run(
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr
      ?.setEncoding('utf8')
      .on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-20_000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${error.message}`, timedOut });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

function repoRoot(): string {
  // From scripts/lib (tsx) or dist/scripts/lib (built): the first folder with a package.json.
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

function defaultDataDir(): string {
  return path.join(repoRoot(), '.data');
}

function cacheRoot(env: NodeJS.ProcessEnv): string {
  return path.join(env['XDG_CACHE_HOME'] || path.join(os.homedir(), '.cache'), 'whatsapp-cosmos-bot');
}

function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

const errorMessage = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const tail = (text: string, max: number): string => text.trim().slice(-max);
const firstLine = (text: string): string => text.split('\n')[0] ?? '';
const lastLine = (text: string): string => text.trim().split('\n').pop() ?? '';
