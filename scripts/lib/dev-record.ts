// The running dev server's database, published in .data/dev-server.json so that scripts use it
// instead of starting a second server on the same files.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { DatabaseKind, ResolvedDatabase } from './database-types';
import { defaultDataDir } from './paths';
import { ping } from './probe';
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
