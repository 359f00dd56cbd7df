// npm run restore -- FILE: writes a backup back (replace by _id, or insert), so restoring twice
// changes nothing. Checks every document against the data module's schemas first and writes
// nothing unless all pass; refuses a file of another format or version.
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { createGunzip } from 'node:zlib';
import type { Document } from 'mongodb';
import {
  BACKUP_FORMAT,
  BACKUP_VERSION,
  checkStoredDocument,
  DOC_SCHEMAS,
  fromEjsonLine,
  fromEjsonLineRelaxed,
  isStoredCollection,
  RETIRED_COLLECTIONS,
  type DataStore,
  type StoredCollection,
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
Usage: npm run restore -- FILE [--include-tokens] [--batch-size N]

Writes the documents of a backup made with \`npm run backup\` back into the database: each
document replaces the one with the same _id, or is inserted. Documents not in the backup are left
alone. Restoring the same file twice changes nothing.

Every document is checked against the schema of its collection before anything is written: on
the first that does not fit, nothing is written and the line, collection and field are named.
Management API tokens are not restored unless asked: a token in a file is a working credential.
Claims of the retired \`locks\` collection are skipped.

  --include-tokens  also restore the management API tokens of the file
  --batch-size N    documents per bulk write (default 500)
  -h, --help        this help

Exit code: 0 on success, 1 on failure (unreadable file, incompatible format or version, a
document that does not fit its schema), 2 on bad arguments.
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

/** One document line of a backup, after the header. */
interface Entry {
  readonly lineNo: number;
  readonly collection: string;
  readonly doc: object;
}

/** The document lines of a backup, read with `parse`; a line that is not one is refused. */
async function* entries(
  lines: AsyncIterableIterator<string>,
  file: string,
  parse: (line: string) => unknown,
): AsyncGenerator<Entry> {
  let lineNo = 1;
  for await (const line of lines) {
    lineNo++;
    if (!line.trim()) continue;
    let entry: { c?: unknown; d?: unknown };
    try {
      entry = parse(line) as { c?: unknown; d?: unknown };
    } catch {
      throw new ScriptError(
        `${path.basename(file)}: line ${lineNo} is not Extended JSON; nothing was restored`,
      );
    }
    const { c, d } = entry ?? {};
    if (typeof c !== 'string' || typeof d !== 'object' || d === null) {
      throw new ScriptError(`${path.basename(file)}: line ${lineNo} is not a document of a known collection`);
    }
    yield { lineNo, collection: c, doc: d };
  }
}

type Counts = Record<string, number>;
const add = (counts: Counts, key: string, n = 1) => (counts[key] = (counts[key] ?? 0) + n);

/**
 * First pass: every document against its schema, nothing written. Throws on the first that does
 * not fit, naming the line, the collection and the field (never the content: it may be personal).
 */
async function check(lines: AsyncIterableIterator<string>, file: string, io: Io): Promise<Counts> {
  const first = await lines.next();
  const expected = readHeader(first.done ? undefined : first.value, file);
  const bar = progress(
    io,
    'checking',
    Object.values(expected).reduce((a, b) => a + (Number(b) || 0), 0),
  );
  const found: Counts = {};
  let done = 0;
  for await (const { lineNo, collection, doc } of entries(lines, file, fromEjsonLineRelaxed)) {
    if (!RETIRED_COLLECTIONS.includes(collection)) {
      if (!isStoredCollection(collection)) {
        throw new ScriptError(
          `${path.basename(file)}: line ${lineNo} is not a document of a known collection`,
        );
      }
      const problem = checkStoredDocument(collection, doc);
      if (problem) {
        throw new ScriptError(
          `${path.basename(file)}: line ${lineNo} (${collection}): ${problem}; nothing was restored`,
        );
      }
    }
    add(found, collection);
    if (++done % 1000 === 0) bar.update(done);
  }
  bar.update(done);
  bar.done();
  return found;
}

/** Second pass: the checked documents written in batches (canonical reading: number types kept). */
async function write(
  store: DataStore,
  lines: AsyncIterableIterator<string>,
  file: string,
  wanted: (collection: StoredCollection) => boolean,
  total: number,
  batchSize: number,
  io: Io,
): Promise<Counts> {
  await lines.next(); // the header, checked in the first pass
  // Indexes first: Cosmos DB builds a unique index (tokens.hash) only on an empty collection.
  await store.ensureIndexes('create');
  const bar = progress(io, 'restoring', total);
  const pending = new Map<StoredCollection, Document[]>();
  const restored: Counts = {};
  let done = 0;
  const flush = async (c: StoredCollection) => {
    const docs = pending.get(c) ?? [];
    if (!docs.length) return;
    await store.maintenance.restoreDocuments(c, docs);
    add(restored, c, docs.length);
    pending.set(c, []);
    bar.update((done += docs.length));
  };
  for await (const { collection: c, doc } of entries(lines, file, fromEjsonLine)) {
    if (!isStoredCollection(c) || !wanted(c)) continue;
    const docs = pending.get(c) ?? [];
    docs.push(doc);
    pending.set(c, docs);
    if (docs.length >= batchSize) await flush(c);
  }
  for (const c of pending.keys()) await flush(c);
  bar.done();
  return restored;
}

/** Runs a pass over the file, turning gzip and read errors into clear messages. */
async function pass<T>(file: string, work: (lines: AsyncIterableIterator<string>) => Promise<T>): Promise<T> {
  const lines = await openLines(file);
  try {
    return await work(lines);
  } catch (error) {
    if (error instanceof ScriptError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new ScriptError(
      `${path.basename(file)} is not a gzip backup file or is corrupt (${code ?? 'unreadable'}); nothing was restored`,
    );
  } finally {
    await lines.return?.();
  }
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values, positionals } = parseCli(
    argv,
    { 'batch-size': { type: 'string' }, 'include-tokens': { type: 'boolean' } },
    { positionals: 1 },
  );
  const file = positionals[0];
  if (!file) throw new UsageError('the backup file is required: npm run restore -- FILE');
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  const includeTokens = values['include-tokens'] === true;
  const started = Date.now();
  // The whole file is checked before the database is touched.
  const found = await pass(file, (lines) => check(lines, file, io));
  const wanted = (c: StoredCollection) => c !== 'tokens' || includeTokens;
  const collections = Object.keys(DOC_SCHEMAS).filter(isStoredCollection);
  const total = collections.filter(wanted).reduce((n, c) => n + (found[c] ?? 0), 0);
  const restored = await withDataStore(env, io, (store) =>
    pass(file, (lines) => write(store, lines, file, wanted, total, batchSize, io)),
  );
  const skippedTokens = includeTokens ? 0 : (found['tokens'] ?? 0);
  const rows: [string, string | number][] = [
    ['file', path.basename(file)],
    ...collections.filter(wanted).map((c): [string, number] => [c, restored[c] ?? 0]),
    ['documents', total],
  ];
  if (skippedTokens) rows.push(['tokens skipped', `${skippedTokens} (restore them with --include-tokens)`]);
  for (const c of RETIRED_COLLECTIONS) {
    if (found[c]) rows.push([`${c} skipped`, `${found[c]} (collection no longer used)`]);
  }
  rows.push(['time', seconds(started)]);
  printSummary(io, 'restore done', rows);
  return 0;
}

if (require.main === module) runMain(main, HELP);
