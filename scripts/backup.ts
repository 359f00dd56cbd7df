// npm run backup [-- --out FILE]: every collection into one gzip file of Extended JSON lines
// (canonical, so types survive): a header line, then one `{"c": collection, "d": document}` per line.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs, rmSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync } from 'node:zlib';
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
  cleanUpIfInterrupted,
  ScriptError,
  seconds,
  UsageError,
  withDataStore,
  working,
  givenPath,
  type Env,
  type Io,
} from './lib/cli';
import { defaultDataDir, displayPath, privateDir } from './lib/paths';

export const HELP = `
Usage: npm run backup [-- --out FILE]

Writes every collection (${BACKUP_COLLECTIONS.join(', ')}) to one gzip-compressed file of Extended
JSON lines. Restore it with \`npm run restore -- FILE\`.

  --out FILE    where to write (default .data/backups/backup-<UTC time>.jsonl.gz, in a folder
                only its owner can open; with DEV_DATA_DIR, its backups/); written to a
                temporary file next to it and renamed when complete, so a failed or
                interrupted backup leaves an earlier FILE as it was
  -h, --help    this help

Exit code: 0 on success, 1 on failure, 2 on bad arguments. The file holds personal data: keep
it safe.
`;

/** The document lines, counting them per collection as they go. */
async function* documentLines(store: DataStore, counts: Record<string, number>, onDoc: () => void) {
  for (const c of BACKUP_COLLECTIONS) {
    counts[c] = 0;
    for await (const d of store.maintenance.readCollection(c)) {
      counts[c]++;
      onDoc();
      yield `${toEjsonLine({ c, d })}\n`;
    }
  }
}

/**
 * Refuses an --out that cannot be a file (a folder, below a file, a device or a pipe, a blank name)
 * before the database is opened.
 */
async function checkOut(out: string, given: string | undefined): Promise<void> {
  // `--out " "` wrote the backup, personal data, to a file named " " in the project's folder.
  if (given !== undefined && given.trim() === '') throw new UsageError('--out needs a file name');
  if (given !== undefined && path.basename(given) !== path.basename(given).trim())
    throw new UsageError(`--out ${JSON.stringify(given)}: the file name starts or ends with whitespace`);
  const stat = await fs.stat(out).catch(() => null);
  if (stat?.isDirectory()) throw new UsageError(`--out ${out} is a folder; give a file name`);
  // The rename at the end would put a regular file in its place (`--out /dev/null` replaced the
  // device node); one cannot be written through either, so it is no place for a backup.
  if (stat && !stat.isFile())
    throw new UsageError(`--out ${out} is not a regular file (a device, pipe or socket); give a file name`);
  try {
    await fs.mkdir(path.dirname(path.resolve(out)), { recursive: true });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'unknown';
    if (code === 'ENOTDIR' || code === 'EEXIST') {
      throw new UsageError(`--out ${out}: a part of its folder is a file, not a folder`);
    }
    throw new ScriptError(`cannot create the folder of ${out}: ${code}`);
  }
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { out: { type: 'string', short: 'o' } });
  const started = Date.now();
  const createdAt = new Date();
  const given = values['out'];
  let out: string;
  if (given === undefined) {
    // Beside the data of `npm run dev` (DEV_DATA_DIR, else .data), in a folder only its owner can
    // open, as that data's own: the file holds every user's number and messages.
    const folder = path.join(env['DEV_DATA_DIR']?.trim() || defaultDataDir(), 'backups');
    await privateDir(folder);
    out = displayPath(path.join(folder, `backup-${createdAt.toISOString().replace(/[:.]/g, '-')}.jsonl.gz`));
  } else out = givenPath(given, env);
  await checkOut(out, given);
  // Written next to --out, renamed over it only when complete: a failed or killed backup never
  // touches the previous file of that name.
  const part = path.join(
    path.dirname(out),
    `.${path.basename(out)}.${process.pid}-${randomBytes(4).toString('hex')}.part`,
  );
  const body = `${part}-body`;
  const cleanedUp = cleanUpIfInterrupted(() => {
    for (const file of [part, body]) rmSync(file, { force: true });
  });
  const counts = await withDataStore(env, io, async (store) => {
    const counted = working(io, 'backing up: counting the documents');
    const total = sum(await store.maintenance.countCollections().finally(counted));
    const bar = progress(io, 'backing up', total);
    let done = 0;
    const collections: Record<string, number> = {};
    try {
      // The documents first, then the header before them (a gzip file may hold several members):
      // the header then counts exactly what the file holds, even while the app writes.
      await pipeline(
        Readable.from(documentLines(store, collections, () => bar.update(++done))),
        createGzip(),
        createWriteStream(body, { mode: 0o600, flags: 'wx' }),
      );
      const header: BackupHeader = { format: BACKUP_FORMAT, version: BACKUP_VERSION, createdAt, collections };
      await fs.writeFile(part, gzipSync(`${toEjsonLine(header)}\n`), { mode: 0o600, flag: 'wx' });
      await pipeline(createReadStream(body), createWriteStream(part, { flags: 'a' }));
      await fs.rename(part, out);
    } catch (error) {
      await fs.rm(part, { force: true });
      const code = (error as NodeJS.ErrnoException).code;
      if (typeof code === 'string')
        throw new ScriptError(`cannot write ${out}: ${code}; ${out} was not changed`);
      throw error;
    } finally {
      await fs.rm(body, { force: true });
      cleanedUp();
    }
    bar.done();
    return { written: collections, total: done };
  });
  printSummary(io, 'backup done', [
    ['file', out],
    ...Object.entries(counts.written).map(([c, n]) => [c, n] as [string, number]),
    ['documents', counts.total],
    ['time', seconds(started)],
  ]);
  return 0;
}

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

if (require.main === module)
  runMain(main, HELP, 'no backup was written and the file at --out was not changed');
