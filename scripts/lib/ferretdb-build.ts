// FerretDB v1 (SQLite backend), built once from the Go module proxy into the user cache, with the
// steps and the elapsed time shown (the first run takes about a minute), with the fixes of
// ferretdb-patches.ts (how it finds rows; unordered bulk updates as MongoDB runs them).
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { defaultLog, type Log } from './database-types';
import { withLock } from './locks';
import { applyFerretDbPatches, FERRETDB_PATCH_LEVEL } from './ferretdb-patches';
import { cacheRoot } from './paths';
import { errorMessage, firstLine, run, tail, type RunResult } from './subprocess';

export const FERRETDB_VERSION = 'v1.24.2';
/** The oldest Go that builds FerretDB (the `go` line of its go.mod). */
export const FERRETDB_GO_VERSION = '1.24';
const FERRETDB_MODULE = 'github.com/FerretDB/FerretDB';
const FERRETDB_PACKAGE = `${FERRETDB_MODULE}/cmd/ferretdb`;
const PROGRESS_EVERY_MS = 10_000;

/** Go is missing, or the build failed: the resolver turns this into the message with the ways out. */
export class FerretDbBuildError extends Error {
  override readonly name = 'FerretDbBuildError';
}

export function ferretDbBinaryPath(env: NodeJS.ProcessEnv = process.env): string {
  const name = process.platform === 'win32' ? 'ferretdb.exe' : 'ferretdb';
  return path.join(cacheRoot(env), 'ferretdb', `${FERRETDB_VERSION}-${FERRETDB_PATCH_LEVEL}`, name);
}

/** The FerretDB binary, built with `go install` on first use (about a minute). */
export async function ensureFerretDb(options: { env?: NodeJS.ProcessEnv; log?: Log } = {}): Promise<string> {
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog;
  const target = ferretDbBinaryPath(env);
  if (existsSync(target)) return target;
  const versionDir = path.dirname(target);
  await fs.mkdir(path.dirname(versionDir), { recursive: true });
  const onWait = (owner: number | undefined): void =>
    log(`database: waiting for another process installing FerretDB (pid ${owner ?? '?'})…`);
  return withLock(`${versionDir}.lock`, onWait, async () => {
    if (existsSync(target)) return target; // another process installed it while we waited
    const started = Date.now();
    const elapsed = (): string => `${Math.round((Date.now() - started) / 1000)} s`;
    let step = 'starting';
    const progress = (name: string): void => {
      step = name;
      log(`database:   [${elapsed()}] ${name}`);
    };
    log(
      `database: building FerretDB ${FERRETDB_VERSION} with Go (first run only, about a minute; set MONGODB_URI to use another server)…`,
    );
    // Built next to the target so the final rename is atomic (same file system).
    const work = await fs.mkdtemp(path.join(path.dirname(versionDir), '.build-'));
    const ticker = setInterval(() => log(`database:   [${elapsed()}] still ${step}…`), PROGRESS_EVERY_MS);
    ticker.unref();
    try {
      const built = await buildFerretDb(work, env, log, progress);
      await fs.mkdir(versionDir, { recursive: true });
      await fs.rename(built, target);
      log(`database: installed FerretDB ${FERRETDB_VERSION} at ${target} in ${elapsed()}`);
      return target;
    } finally {
      clearInterval(ticker);
      await fs.rm(work, { recursive: true, force: true }).catch(() => undefined);
    }
  });
}

async function buildFerretDb(
  work: string,
  baseEnv: NodeJS.ProcessEnv,
  log: Log,
  progress: (step: string) => void,
): Promise<string> {
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
      throw new FerretDbBuildError(
        `${step} failed: ${result.timedOut ? 'timed out' : tail(result.stderr || result.stdout, 800)}`,
      );
  };

  progress('checking the Go toolchain (go version)');
  const version = await go(['version']);
  if (version.code !== 0) {
    throw new FerretDbBuildError(
      `Go is not installed (Go ≥ ${FERRETDB_GO_VERSION} builds FerretDB; https://go.dev/dl/)`,
    );
  }
  check('go mod init', await go(['mod', 'init', 'ferretdb-build']));

  // `go install pkg@version` trips over a deprecation lookup some module proxies refuse (403);
  // resolving the module inside a throwaway module avoids that lookup.
  const attempt = async (extraEnv: NodeJS.ProcessEnv): Promise<string> => {
    progress(`1/4 downloading the source: go get ${FERRETDB_PACKAGE}@${FERRETDB_VERSION}`);
    check('go get', await go(['get', `${FERRETDB_PACKAGE}@${FERRETDB_VERSION}`], extraEnv));
    const dir = await go(['list', '-m', '-f', '{{.Dir}}', FERRETDB_MODULE], extraEnv);
    check('go list', dir);
    // FerretDB refuses to start unless build/version/version.txt holds its version (normally
    // generated by its release tooling), so build from a writable copy that has it.
    progress('2/4 preparing a writable, patched copy of the source');
    const source = path.join(work, 'src');
    await fs.rm(source, { recursive: true, force: true });
    await fs.cp(dir.stdout.trim(), source, { recursive: true });
    await makeWritable(source);
    await fs.writeFile(path.join(source, 'build', 'version', 'version.txt'), `${FERRETDB_VERSION}\n`);
    // Lookups by key that use the indexes, and MongoDB's unordered updates (see ferretdb-patches.ts).
    await applyFerretDbPatches(source);
    check('go mod edit', await go(['mod', 'edit', `-replace=${FERRETDB_MODULE}=./src`], extraEnv));
    progress(`3/4 compiling: go install ${FERRETDB_PACKAGE} (the longest step)`);
    check('go install', await go(['install', FERRETDB_PACKAGE], extraEnv));
    progress('4/4 checking the built binary');
    const binary = path.join(work, 'bin', process.platform === 'win32' ? 'ferretdb.exe' : 'ferretdb');
    const probe = await run(binary, ['--version'], { cwd: work, env: baseEnv, timeoutMs: 30_000 });
    if (!probe.stdout.includes(FERRETDB_VERSION))
      throw new FerretDbBuildError(
        `the built FerretDB does not run: ${tail(probe.stderr || probe.stdout, 400)}`,
      );
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
