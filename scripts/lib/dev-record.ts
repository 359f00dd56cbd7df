// The running dev server's database, published in .data/dev-server.json so that scripts use it
// instead of starting a second server on the same files.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { DatabaseKind, ResolvedDatabase } from './database-types';
import { defaultDataDir } from './paths';
import { ping } from './probe';
import { sleep } from '../../shared/time';
import { withLock } from './locks';
import { isAlive } from './subprocess';

const DEV_SERVER_FILE = 'dev-server.json';

export interface DevServerRecord {
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

// ---------------------------------------------------------------------------------------------
// One `npm run dev` per data folder: a second one would start another embedded database and
// another Azurite on the same files (each Azurite saves its whole state over the other's), and
// replace, then remove, the records by which scripts find the first.

const OWNER_FILE = 'dev.pid';
const CLAIM_LOCK = 'dev.pid.lock';

/**
 * Makes this process the data folder's `npm run dev` (a file created exclusively, holding its pid;
 * one of a dead process is taken over). Returns the pid of the live one that holds it, if any.
 * Claims are made one at a time, under a lock beside the file: two runs started at once on a
 * folder a killed run left its file in both found it dead and removed it, the second one the
 * first one's new claim, and both ran on the folder.
 */
export async function claimDataDir(dataDir: string): Promise<number | undefined> {
  await fs.mkdir(dataDir, { recursive: true });
  const file = path.join(dataDir, OWNER_FILE);
  return withLock(
    path.join(dataDir, CLAIM_LOCK),
    () => undefined,
    async () => {
      for (;;) {
        try {
          await fs.writeFile(file, `${process.pid}\n`, { flag: 'wx', mode: 0o600 });
          return undefined;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        }
        // Written as it is created, under the lock: empty only if that run was killed in between.
        const owner = await readOwner(file);
        if (owner !== undefined && owner !== process.pid && (await stillRunning(owner))) return owner;
        await fs.rm(file, { force: true });
      }
    },
  );
}

/** Gives the data folder up, if this process holds it. */
export async function releaseDataDir(dataDir: string): Promise<void> {
  const file = path.join(dataDir, OWNER_FILE);
  if ((await readOwner(file)) === process.pid) await fs.rm(file, { force: true });
}

/**
 * Whether `pid` runs, waiting up to a second for one being killed: a process killed with its group
 * (the crash test's SIGKILL) can still exist for a moment, or as a zombie its parent has not reaped.
 */
async function stillRunning(pid: number): Promise<boolean> {
  for (let tries = 0; tries < 10; tries++) {
    if (!isAlive(pid)) return false;
    // Linux: the state after the command's closing parenthesis in /proc/<pid>/stat; Z is a zombie.
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (/\)\s+Z\b/.test(stat)) return false;
    // A pid of a run before a reboot may belong to another program now.
    const command = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => undefined);
    if (command !== undefined && !command.includes('dev.ts')) return false;
    await sleep(100);
  }
  return true;
}

async function readOwner(file: string): Promise<number | undefined> {
  const pid = Number((await fs.readFile(file, 'utf8').catch(() => '')).trim());
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
