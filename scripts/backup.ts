// npm run backup [-- --out FILE]: every collection into one gzip file of Extended JSON lines
// (canonical, so types survive): a header line, then one `{"c": collection, "d": document}` per line.
import { createWriteStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import {
  BACKUP_COLLECTIONS,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  toEjsonLine,
  type BackupHeader,
  type DataStore,
} from '../shared/data';
import {
  parseCli,
  printSummary,
  progress,
  runMain,
  ScriptError,
  seconds,
  withDataStore,
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run backup [-- --out FILE]

Writes every collection (${BACKUP_COLLECTIONS.join(', ')}) to one gzip-compressed file of Extended
JSON lines. Restore it with \`npm run restore -- FILE\`.

  --out FILE    where to write (default .data/backups/backup-<UTC time>.jsonl.gz)
  -h, --help    this help

Exit code: 0 on success, 1 on failure. The file holds personal data: keep it safe.
`;

async function* lines(store: DataStore, header: BackupHeader, onDoc: () => void): AsyncGenerator<string> {
  yield `${toEjsonLine(header)}\n`;
  for (const c of BACKUP_COLLECTIONS) {
    for await (const d of store.maintenance.readCollection(c)) {
      onDoc();
      yield `${toEjsonLine({ c, d })}\n`;
    }
  }
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { out: { type: 'string', short: 'o' } });
  const started = Date.now();
  const createdAt = new Date();
  const out =
    values['out'] ??
    path.join('.data', 'backups', `backup-${createdAt.toISOString().replace(/[:.]/g, '-')}.jsonl.gz`);
  await fs.mkdir(path.dirname(path.resolve(out)), { recursive: true });
  const counts = await withDataStore(env, io, async (store) => {
    const collections = await store.maintenance.countCollections();
    const header: BackupHeader = { format: BACKUP_FORMAT, version: BACKUP_VERSION, createdAt, collections };
    const total = Object.values(collections).reduce((a, b) => a + b, 0);
    const bar = progress(io, 'backing up', total);
    let done = 0;
    const written: Record<string, number> = {};
    try {
      await pipeline(
        Readable.from(lines(store, header, () => bar.update(++done))),
        createGzip(),
        createWriteStream(out, { mode: 0o600 }),
      );
    } catch (error) {
      await fs.rm(out, { force: true });
      if ((error as NodeJS.ErrnoException).code) {
        throw new ScriptError(`cannot write ${out}: ${(error as NodeJS.ErrnoException).code ?? ''}`);
      }
      throw error;
    }
    bar.done();
    for (const c of BACKUP_COLLECTIONS) written[c] = collections[c] ?? 0;
    return { written, total: done };
  });
  printSummary(io, 'backup done', [
    ['file', out],
    ...Object.entries(counts.written).map(([c, n]) => [c, n] as [string, number]),
    ['documents', counts.total],
    ['time', seconds(started)],
  ]);
  return 0;
}

if (require.main === module) runMain(main, HELP);
