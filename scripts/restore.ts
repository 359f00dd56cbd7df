// npm run restore -- FILE: writes a backup back (replace by _id, or insert), so restoring twice
// changes nothing. Refuses a file of another format or version.
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { Document } from 'mongodb';
import {
  BACKUP_COLLECTIONS,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  fromEjsonLine,
  type DataStore,
} from '../shared/data';
import {
  intOption,
  parseCli,
  printSummary,
  progress,
  runMain,
  ScriptError,
  seconds,
  UsageError,
  withDataStore,
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run restore -- FILE [--batch-size N]

Writes the documents of a backup made with \`npm run backup\` back into the database: each
document replaces the one with the same _id, or is inserted. Documents not in the backup are left
alone. Restoring the same file twice changes nothing.

  --batch-size N  documents per bulk write (default 500)
  -h, --help      this help

Exit code: 0 on success, 1 on failure (unreadable file, incompatible format or version).
`;

async function openLines(file: string): Promise<AsyncIterableIterator<string>> {
  try {
    await fs.access(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ScriptError(
      `cannot read ${path.basename(file)}: ${code === 'ENOENT' ? 'no such file' : (code ?? 'unreadable')}`,
    );
  }
  const gunzip = createGunzip();
  const input = createReadStream(file).pipe(gunzip);
  return createInterface({ input, crlfDelay: Infinity })[Symbol.asyncIterator]();
}

function readHeader(line: string | undefined, file: string): Record<string, number> {
  let header: unknown;
  try {
    header = line === undefined ? undefined : fromEjsonLine(line);
  } catch {
    header = undefined;
  }
  const h = (header ?? {}) as Record<string, unknown>;
  if (h['format'] !== BACKUP_FORMAT) {
    throw new ScriptError(
      `${path.basename(file)} is not a backup of this bot (format ${JSON.stringify(h['format'] ?? null)}, expected ${BACKUP_FORMAT})`,
    );
  }
  // Canonical Extended JSON parses numbers as BSON wrappers (Int32, Double): compare their values.
  const version =
    typeof h['version'] === 'object' || typeof h['version'] === 'number' ? Number(h['version']) : NaN;
  if (version !== BACKUP_VERSION) {
    throw new ScriptError(
      `${path.basename(file)} is backup format version ${Number.isNaN(version) ? 'unknown' : version}; this version restores only version ${BACKUP_VERSION}`,
    );
  }
  return (h['collections'] ?? {}) as Record<string, number>;
}

async function restore(
  store: DataStore,
  lines: AsyncIterableIterator<string>,
  file: string,
  batchSize: number,
  io: Io,
) {
  const first = await lines.next();
  const expected = readHeader(first.done ? undefined : first.value, file);
  const total = Object.values(expected).reduce((a, b) => a + (Number(b) || 0), 0);
  const bar = progress(io, 'restoring', total);
  const pending = new Map<string, Document[]>();
  const restored: Record<string, number> = Object.fromEntries(BACKUP_COLLECTIONS.map((c) => [c, 0]));
  let done = 0;
  const flush = async (c: string) => {
    const docs = pending.get(c) ?? [];
    if (!docs.length) return;
    await store.maintenance.restoreDocuments(c, docs);
    restored[c] = (restored[c] ?? 0) + docs.length;
    pending.set(c, []);
    bar.update((done += docs.length));
  };
  let lineNo = 1;
  for await (const line of lines) {
    lineNo++;
    if (!line.trim()) continue;
    let entry: { c?: unknown; d?: unknown };
    try {
      entry = fromEjsonLine(line) as { c?: unknown; d?: unknown };
    } catch {
      throw new ScriptError(`${path.basename(file)}: line ${lineNo} is not Extended JSON`);
    }
    const c = entry.c;
    if (
      typeof c !== 'string' ||
      !BACKUP_COLLECTIONS.includes(c as never) ||
      typeof entry.d !== 'object' ||
      entry.d === null
    ) {
      throw new ScriptError(`${path.basename(file)}: line ${lineNo} is not a document of a known collection`);
    }
    const docs = pending.get(c) ?? [];
    docs.push(entry.d);
    pending.set(c, docs);
    if (docs.length >= batchSize) await flush(c);
  }
  for (const c of pending.keys()) await flush(c);
  bar.done();
  await store.ensureIndexes('create');
  return { restored, done };
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values, positionals } = parseCli(argv, { 'batch-size': { type: 'string' } }, { positionals: 1 });
  const file = positionals[0];
  if (!file) throw new UsageError('the backup file is required: npm run restore -- FILE');
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  const started = Date.now();
  // Check the header before touching the database.
  const probe = await openLines(file);
  try {
    const first = await probe.next();
    readHeader(first.done ? undefined : first.value, file);
  } catch (error) {
    if (error instanceof ScriptError) throw error;
    throw new ScriptError(
      `${path.basename(file)} is not a gzip backup file (${(error as NodeJS.ErrnoException).code ?? 'unreadable'})`,
    );
  } finally {
    await probe.return?.();
  }
  const result = await withDataStore(env, io, async (store) => {
    try {
      return await restore(store, await openLines(file), file, batchSize, io);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'Z_DATA_ERROR' || code === 'Z_BUF_ERROR')
        throw new ScriptError(`${path.basename(file)} is corrupt (${code})`);
      throw error;
    }
  });
  printSummary(io, 'restore done', [
    ['file', path.basename(file)],
    ...Object.entries(result.restored).map(([c, n]) => [c, n] as [string, number]),
    ['documents', result.done],
    ['time', seconds(started)],
  ]);
  return 0;
}

if (require.main === module) runMain(main, HELP);
