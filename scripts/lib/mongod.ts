// mongod through mongodb-memory-server: a binary from the environment or the caches, else one
// download attempt in a child process (killed when it hangs, and not retried for an hour).
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { Log, ResolvedDatabase } from './database-types';
import { cacheRoot, displayPath, homeDir, privateDir, repoRoot } from './paths';
import { errorMessage, lastLine, run } from './subprocess';

const DOWNLOAD_TIMEOUT_MS = 20_000;
// A failed download costs seconds each run; remember it for a while instead.
const DOWNLOAD_RETRY_AFTER_MS = 60 * 60 * 1000;

/** A started server, or why there is none (for the message that lists the ways out). */
export type MongodOutcome = { database: ResolvedDatabase } | { unavailable: string };

export async function startMongod(
  env: NodeJS.ProcessEnv,
  log: Log,
  dbPath: string | undefined,
): Promise<MongodOutcome> {
  // A production install has no dev dependencies: then there is no mongod fallback.
  const mms = await import('mongodb-memory-server').catch(() => undefined);
  if (!mms) return { unavailable: 'mongodb-memory-server is not installed (dev dependency)' };
  const found = await findMongodBinary(env, log);
  if ('unavailable' in found) return found;
  const binary = found.binary;
  const started = Date.now();
  try {
    if (dbPath) await privateDir(dbPath);
    const server = await mms.MongoMemoryServer.create({
      binary: { systemBinary: binary },
      instance: dbPath ? { ip: '127.0.0.1', dbPath, storageEngine: 'wiredTiger' } : { ip: '127.0.0.1' },
      // A process group of its own (POSIX): a terminal's Ctrl-C reaches only us, and we stop
      // mongod once our work has ended (its killer process stops it if we die).
      spawn: { detached: process.platform !== 'win32' },
    });
    const uri = server.getUri();
    const description = `mongod (${path.basename(binary)}) via mongodb-memory-server, ${dbPath ? `files in ${displayPath(dbPath)}` : 'temporary files'}, at ${uri}`;
    log(`database: ${description} (started in ${Date.now() - started} ms)`);
    let stopped = false;
    // Its end without stop(): `npm run dev` must not run on with a database that is gone.
    const exited = new Promise<string>((resolve) =>
      server.instanceInfo?.instance.mongodProcess?.once('exit', (code, signal) => {
        if (!stopped) resolve(signal ? `was killed by ${signal}` : `exited with code ${code}`);
      }),
    );
    return {
      database: {
        uri,
        kind: 'mongod',
        description,
        exited,
        async stop() {
          if (stopped) return;
          stopped = true;
          await server.stop({ doCleanup: !dbPath });
        },
      },
    };
  } catch (error) {
    log(`database: mongod ${binary} did not start (${errorMessage(error)}); trying FerretDB`);
    return { unavailable: `${binary} did not start (${errorMessage(error)})` };
  }
}

/** A mongod binary that can be had without a network download that might hang. */
async function findMongodBinary(
  env: NodeJS.ProcessEnv,
  log: Log,
): Promise<{ binary: string } | { unavailable: string }> {
  const system = env['MONGOMS_SYSTEM_BINARY']?.trim();
  if (system) return { binary: system };

  const cacheDirs = [
    env['MONGOMS_DOWNLOAD_DIR'],
    path.join(repoRoot(), 'node_modules', '.cache', 'mongodb-memory-server'),
    path.join(homeDir(env), '.cache', 'mongodb-binaries'),
  ].filter((dir): dir is string => Boolean(dir));
  const cached = await newestMongodIn(cacheDirs);
  if (cached) return { binary: cached };

  if (/^(0|false|no|off)$/i.test(env['MONGOMS_RUNTIME_DOWNLOAD'] ?? ''))
    return { unavailable: 'no mongod binary in the caches, and MONGOMS_RUNTIME_DOWNLOAD forbids a download' };
  const marker = path.join(cacheRoot(env), 'mongod-download-failed');
  const failedAt = await fs.stat(marker).then(
    (s) => s.mtimeMs,
    () => 0,
  );
  if (Date.now() - failedAt < DOWNLOAD_RETRY_AFTER_MS) {
    const minutes = Math.round((Date.now() - failedAt) / 60_000);
    log(`database: no mongod binary (download failed ${minutes} min ago; delete ${marker} to retry now)`);
    return { unavailable: `the mongod download failed ${minutes} min ago (delete ${marker} to retry)` };
  }
  log('database: no mongod binary in the caches; trying the mongodb-memory-server download…');
  // In a child process so a hanging download can be killed.
  const script =
    "require('mongodb-memory-server').MongoBinary.getPath().then((p) => process.stdout.write(p), (e) => { process.stderr.write(String(e && e.message)); process.exit(1); })";
  const result = await run(process.execPath, ['-e', script], {
    cwd: repoRoot(),
    env,
    timeoutMs: DOWNLOAD_TIMEOUT_MS,
  });
  const downloaded = result.stdout.trim();
  if (result.code === 0 && downloaded && existsSync(downloaded)) return { binary: downloaded };
  const reason = result.timedOut
    ? `no answer in ${DOWNLOAD_TIMEOUT_MS / 1000} s`
    : lastLine(result.stderr) || `exit ${result.code}`;
  log(`database: mongod download failed (${reason}); using FerretDB`);
  await fs.mkdir(path.dirname(marker), { recursive: true });
  await fs.writeFile(marker, `${new Date().toISOString()} ${reason}\n`);
  return { unavailable: `the mongod download failed (${reason})` };
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
