// npm run restore -- FILE: writes a backup back (replace by _id, or insert), so restoring twice
// changes nothing. Checks every document against the data module's schemas, and the counts of the
// header, first and writes nothing unless all pass; refuses a file of another format or version.
import { constants as fsConstants, createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { createGunzip } from 'node:zlib';
import {
  AUDIT_KIND,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  checkStoredDocument,
  DOC_SCHEMAS,
  type ErasedSinceBackup,
  KEYS_ID,
  fromEjsonLine,
  fromEjsonLineRelaxed,
  isStoredCollection,
  RestoreWriteError,
  RETIRED_COLLECTIONS,
  type BackedUpUser,
  type DataStore,
  type ImportSettlement,
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
  working,
  givenPath,
  type Env,
  type Io,
} from './lib/cli';
import { AppError } from '../shared/errors';

export const HELP = `
Usage: npm run restore -- FILE [--include-tokens] [--batch-size N]

Writes the documents of a backup made with \`npm run backup\` back into the database: each
document replaces the one with the same _id, or is inserted. Documents not in the backup are left
alone; summaries and counters that then disagree with the stored messages (the database had
newer messages than the file, or the backup was taken while the app wrote) are rebuilt as
\`npm run health -- --repair\` does. A user the audit trail (the database's or the file's) says
was erased after the backup began (or up to ten minutes before: an erase still under way) stays
erased: the file's record of them, their messages and archived items are left out, and the
counters lose what the file held of them. Restoring the same file twice changes nothing.

Every document is checked against the schema of its collection before anything is written, and
the documents of each collection are counted against the file's header: on the first document
that does not fit (a wrong type or bound, or a field the schema does not have), or a count that
differs (a file cut short), nothing is written and the line, collection and field are named.
Should the database then refuse a write, restore stops, says what it had written, and running it
again (once the cause is fixed) completes it.
Management API tokens are not restored unless asked: a token in a file is a working credential.
Claims of the retired \`locks\` collection are skipped.

  --include-tokens  also restore the management API tokens of the file
  --batch-size N    documents per bulk write (default 500)
  -h, --help        this help

Exit code: 0 on success, 1 on failure (unreadable or incomplete file, incompatible format or
version, a document that does not fit its schema, a write the database refused), 2 on bad
arguments.
`;

/**
 * The lines of a gzip file. Read and gunzip errors surface in the iteration (every stream has a
 * handler, so none is left to crash the process), and the streams are destroyed when it ends.
 */
async function* readLines(file: string): AsyncGenerator<string> {
  try {
    await fs.access(file, fsConstants.R_OK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new ScriptError(
      // The whole path: a relative one is taken from the folder `npm run` was typed in, not the
      // project's, and the message shows where that was.
      `cannot read ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? 'unreadable')}`,
    );
  }
  const source = createReadStream(file);
  const input = pipeline(source, createGunzip(), () => undefined);
  const decoder = new StringDecoder('utf8');
  let pending: string[] = [];
  const line = (piece: string) => {
    const text = pending.join('') + piece;
    pending = [];
    return text.endsWith('\r') ? text.slice(0, -1) : text;
  };
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      let text = decoder.write(chunk);
      for (let at = text.indexOf('\n'); at >= 0; at = text.indexOf('\n')) {
        yield line(text.slice(0, at));
        text = text.slice(at + 1);
      }
      if (text) pending.push(text);
    }
    const last = line(decoder.end());
    if (last) yield last;
  } finally {
    input.destroy();
    source.destroy();
  }
}

type Counts = Record<string, number>;
const add = (counts: Counts, key: string, n = 1) => (counts[key] = (counts[key] ?? 0) + n);
const sum = (counts: Counts) => Object.values(counts).reduce((a, b) => a + b, 0);

/** The header line: format and version checked; returns the documents it counts per collection, and when the backup began. */
function readHeader(line: string | undefined, file: string): { counts: Counts; createdAt: Date | null } {
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
  const collections = h['collections'];
  const counts: Counts = {};
  if (typeof collections === 'object' && collections !== null && !Array.isArray(collections)) {
    for (const [c, n] of Object.entries(collections as Record<string, unknown>)) {
      // Canonical Extended JSON parses numbers as BSON wrappers (Int32, Double).
      const value = typeof n === 'object' || typeof n === 'number' ? Number(n) : NaN;
      if (!Number.isSafeInteger(value) || value < 0) return bad(`its count of ${safeName(c)}`);
      counts[c] = value;
    }
    const createdAt =
      h['createdAt'] instanceof Date && !Number.isNaN(h['createdAt'].getTime()) ? h['createdAt'] : null;
    return { counts, createdAt };
  }
  return bad('the documents it holds');

  function bad(what: string): never {
    throw new ScriptError(
      `${path.basename(file)}: the header line does not say ${what}; nothing was restored`,
    );
  }
}

/** A collection name from a file, as printed: a plain name, else `?`. */
const safeName = (name: string) => (/^[A-Za-z_][\w.-]{0,63}$/.test(name) ? name : '?');

/** Refuses a file whose document lines are not the ones its header counts (a file cut short). */
function checkCounts(file: string, expected: Counts, found: Counts): void {
  const differ = [...new Set([...Object.keys(expected), ...Object.keys(found)])]
    .filter((c) => (expected[c] ?? 0) !== (found[c] ?? 0))
    .map((c) => `${safeName(c)}: ${expected[c] ?? 0} in the header, ${found[c] ?? 0} in the file`);
  if (differ.length) {
    throw new ScriptError(
      `${path.basename(file)} does not hold the documents its header counts (${differ.join('; ')}); the file is incomplete or was altered; nothing was restored`,
    );
  }
}

/** What the first pass keeps of a file: when the backup began, its users, their message counts. */
interface FileContents {
  createdAt: Date | null;
  readonly users: BackedUpUser[];
  /** The file's keys of archived items' subjects (adopted, never written over the database's). */
  readonly subjectKeys: string[];
  readonly messagesPerUser: Map<string, number>;
  /** The user ids its archived items are filed with (another user's stay when one is erased). */
  readonly filedWith: Set<string>;
  /** The erases its audit trail records. */
  readonly erasures: { userId: string; at: Date }[];
  /** Its users who hold a reply lock: their summary is the lock's (whoever takes it next recounts). */
  readonly locked: Set<string>;
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

/**
 * First pass: every document against its schema, nothing written. Throws on the first that does
 * not fit, naming the line, the collection and the field (never the content: it may be personal).
 */
async function check(
  lines: AsyncIterableIterator<string>,
  file: string,
  io: Io,
  seen: FileContents,
): Promise<Counts> {
  const first = await lines.next();
  const header = readHeader(first.done ? undefined : first.value, file);
  const expected = header.counts;
  seen.createdAt = header.createdAt;
  const bar = progress(io, 'checking', sum(expected));
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
    const userId = collection === 'messages' ? (doc as { userId?: unknown }).userId : null;
    if (typeof userId === 'string')
      seen.messagesPerUser.set(userId, (seen.messagesPerUser.get(userId) ?? 0) + 1);
    const filed = doc as { kind?: unknown; userId?: unknown };
    if (collection === 'events' && filed.kind !== AUDIT_KIND && typeof filed.userId === 'string')
      seen.filedWith.add(filed.userId);
    const audit = doc as { kind?: unknown; reason?: unknown; userId?: unknown; createdAt?: unknown };
    if (
      collection === 'events' &&
      audit.kind === AUDIT_KIND &&
      audit.reason === 'erase' &&
      typeof audit.userId === 'string' &&
      audit.createdAt instanceof Date
    )
      seen.erasures.push({ userId: audit.userId, at: audit.createdAt });
    if (collection === 'stats' && (doc as { _id?: unknown })._id === KEYS_ID)
      seen.subjectKeys.push(...((doc as { subjectKeys?: string[] }).subjectKeys ?? []));
    if (collection === 'users') {
      const { _id, createdAt, waId, bsuid, previousWaIds, previousBsuids } = doc as BackedUpUser;
      seen.users.push({ _id, createdAt, waId, bsuid, previousWaIds, previousBsuids });
      if ((doc as { replyLock?: unknown }).replyLock) seen.locked.add(_id);
    }
    if (++done % 1000 === 0) bar.update(done);
  }
  bar.update(done);
  bar.done();
  checkCounts(file, expected, found);
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
  restored: Counts,
  erased: ErasedSinceBackup,
  moved: ReadonlyMap<string, string>,
): Promise<void> {
  await lines.next(); // the header, checked in the first pass
  // Indexes first: Cosmos DB builds a unique index (tokens.hash) only on an empty collection.
  await store.ensureIndexes('create');
  const bar = progress(io, 'restoring', total);
  const pending = new Map<StoredCollection, Record<string, unknown>[]>();
  let done = 0;
  const flush = async (c: StoredCollection) => {
    const docs = pending.get(c) ?? [];
    if (!docs.length) return;
    try {
      await store.maintenance.restoreDocuments(c, docs);
    } catch (error) {
      if (error instanceof RestoreWriteError) add(restored, c, error.written);
      throw new WriteFailure(c, error);
    }
    add(restored, c, docs.length);
    pending.set(c, []);
    bar.update((done += docs.length));
  };
  for await (const { collection: c, doc } of entries(lines, file, fromEjsonLine)) {
    if (!isStoredCollection(c) || !wanted(c)) continue;
    // The keys document was adopted (merged) before: written over, it would lose the database's.
    const adopted = c === 'stats' && (doc as { _id?: unknown })._id === KEYS_ID;
    if (adopted || erased.leavesOut(c, doc as Record<string, unknown>)) {
      if (adopted) add(restored, c);
      bar.update(++done);
      continue;
    }
    const docs = pending.get(c) ?? [];
    docs.push(underStoredId(c, doc as Record<string, unknown>, moved));
    pending.set(c, docs);
    if (docs.length >= batchSize) await flush(c);
  }
  for (const c of pending.keys()) await flush(c);
  bar.done();
}

/**
 * A document of the file with the id the database holds its user under (`storedUnderOtherIds`):
 * the user, their messages and archived items (not the audit trail: a record of what was done to
 * the id it names).
 */
function underStoredId(
  collection: StoredCollection,
  doc: Record<string, unknown>,
  moved: ReadonlyMap<string, string>,
): Record<string, unknown> {
  const field =
    collection === 'users' ? '_id' : collection === 'messages' || collection === 'events' ? 'userId' : null;
  const to = field && typeof doc[field] === 'string' ? moved.get(doc[field]) : undefined;
  if (!field || to === undefined || (collection === 'events' && doc['kind'] === AUDIT_KIND)) return doc;
  return { ...doc, [field]: to };
}

/** A write of the second pass that failed (the database's error, not the file's). */
class WriteFailure extends Error {
  override readonly name = 'WriteFailure';
  constructor(
    readonly collection: string,
    override readonly cause: unknown,
  ) {
    super(`writing ${collection} failed`);
  }
}

/** Why the database did not take a batch, in words that quote nothing of the data. */
function writeReason(error: unknown): string {
  if (error instanceof RestoreWriteError)
    return `the database refused ${error.refused} of them (${error.reason})`;
  if (error instanceof AppError) return error.message;
  const code = (error as { code?: unknown }).code;
  const name = error instanceof Error ? error.name : 'error';
  return typeof code === 'string' || typeof code === 'number' ? `${name}, code ${code}` : name;
}

/** The message of a restore that stopped after it started writing: what was written, and what next. */
function writeStopped(file: string, error: unknown, restored: Counts): ScriptError {
  const written = Object.entries(restored)
    .filter(([, n]) => n > 0)
    .map(([c, n]) => `${c} ${n}`);
  const what =
    error instanceof WriteFailure
      ? `writing ${error.collection} failed: ${writeReason(error.cause)}`
      : isReadError(error)
        ? `${path.basename(file)} could not be read again (${(error as NodeJS.ErrnoException).code})`
        : writeReason(error);
  const done = written.length
    ? `written before it stopped: ${written.join(', ')} (${sum(restored)} documents); the rest was not`
    : 'nothing was written';
  return new ScriptError(
    `restore of ${path.basename(file)} stopped: ${what}; ${done}. Restore writes by id, so running it again (once the cause is fixed) completes it`,
  );
}

/** An error of reading or gunzipping the file (not of the database). */
const isReadError = (error: unknown) => {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return (
    typeof code === 'string' && (/^Z_/.test(code) || /^E[A-Z]+$/.test(code)) && !(error instanceof AppError)
  );
};

/** The first pass over the file, turning gzip and read errors into clear messages. */
async function checkFile(file: string, io: Io, seen: FileContents): Promise<Counts> {
  const lines = readLines(file);
  try {
    return await check(lines, file, io, seen);
  } catch (error) {
    if (error instanceof ScriptError) throw error;
    if (!isReadError(error)) throw error;
    throw new ScriptError(
      `${path.basename(file)} is not a gzip backup file or is corrupt (${(error as NodeJS.ErrnoException).code}); nothing was restored`,
    );
  } finally {
    await lines.return(undefined);
  }
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values, positionals } = parseCli(
    argv,
    { 'batch-size': { type: 'string' }, 'include-tokens': { type: 'boolean' } },
    { positionals: 1 },
  );
  const given = positionals[0];
  if (!given) throw new UsageError('the backup file is required: npm run restore -- FILE');
  const file = givenPath(given, env);
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  const includeTokens = values['include-tokens'] === true;
  const started = Date.now();
  // The whole file is checked before the database is touched.
  const seen: FileContents = {
    createdAt: null,
    users: [],
    subjectKeys: [],
    messagesPerUser: new Map(),
    filedWith: new Set(),
    erasures: [],
    locked: new Set(),
  };
  const found = await checkFile(file, io, seen);
  const { messagesPerUser } = seen;
  const wanted = (c: StoredCollection) => c !== 'tokens' || includeTokens;
  const collections = Object.keys(DOC_SCHEMAS).filter(isStoredCollection);
  const total = collections.filter(wanted).reduce((n, c) => n + (found[c] ?? 0), 0);
  const restored: Counts = {};
  let settled: ImportSettlement = { summariesRebuilt: 0, countersRepaired: [] };
  let erased: ErasedSinceBackup | null = null;
  let writing = false;
  try {
    await withDataStore(env, io, async (store) => {
      // An erase recorded since the backup began (or one still under way then) stays done: the
      // file's records of those users, their messages and archived items are not written back.
      writing = true;
      // The file's archived items are filed under its subject keys: kept after the database's own.
      if (seen.subjectKeys.length) await store.personal.adoptSubjectKeys(seen.subjectKeys);
      const leftOut = await store.personal.erasedSinceBackup(
        seen.createdAt,
        seen.users,
        seen.filedWith,
        seen.erasures,
      );
      erased = leftOut;
      // A person the database knows under another id (it has a key of its own) stays one user:
      // the file's records of them are written under the database's id.
      const moved = await store.users.storedUnderOtherIds(seen.users);
      for (const [from, to] of moved) {
        messagesPerUser.set(to, messagesPerUser.get(from) ?? 0);
        messagesPerUser.delete(from);
      }
      // The users the file holds, or holds messages of: a backup taken while the app wrote read a
      // summary and the messages it counts at different times, so the file's may disagree. Not
      // one holding a reply lock: its summary waits for the answers, counted by the lock's holder,
      // and whoever takes the lock over recounts it (`recountSummary`).
      const locked = new Set([...seen.locked].map((id) => moved.get(id) ?? id));
      const held = new Set(
        [...seen.users.map((u) => moved.get(u._id) ?? u._id), ...messagesPerUser.keys()].filter(
          (id) => !locked.has(id),
        ),
      );
      const lines = readLines(file);
      try {
        await write(store, lines, file, wanted, total, batchSize, io, restored, leftOut, moved);
      } finally {
        await lines.return(undefined);
      }
      // The file's counters still count what was left out: taken out as the erase did.
      await store.personal.uncount(leftOut.delta);
      // Documents not in the file stay: over a database that moved on since the backup (newer
      // messages, a user who wrote again after an erase), a restored summary or counter would
      // disagree with the stored messages; so would one of a backup taken while the app wrote
      // (a message stored between its reads of messages and of users). Those users' summaries,
      // and counters below what is stored, are rebuilt by the rules of `npm run health --
      // --repair`; the file's own documents are otherwise left as it holds them.
      const sized = working(io, 'restore: sizing the collections');
      const checking = progress(
        io,
        'checking summaries and counters',
        await store.maintenance.estimatedSize().finally(sized),
      );
      settled = await store.maintenance.settleImport(
        (userId, stored) => held.has(userId) || stored !== (messagesPerUser.get(userId) ?? 0),
        (n) => checking.update(n),
      );
      checking.done();
    });
  } catch (error) {
    // Before the data store was open nothing can have been written: the error says why.
    throw writing ? writeStopped(file, error, restored) : error;
  }
  const skippedTokens = includeTokens ? 0 : (found['tokens'] ?? 0);
  const rows: [string, string | number][] = [
    ['file', path.basename(file)],
    ...collections.filter(wanted).map((c): [string, number] => [c, restored[c] ?? 0]),
    ['documents', total],
  ];
  if (skippedTokens) rows.push(['tokens skipped', `${skippedTokens} (restore them with --include-tokens)`]);
  const left = (erased as ErasedSinceBackup | null)?.left;
  if (left && left.users + left.messages + left.events > 0)
    rows.push([
      'left out (erased after the backup)',
      `${left.users} users, ${left.messages} messages, ${left.events} archived items`,
    ]);
  for (const c of RETIRED_COLLECTIONS) {
    if (found[c]) rows.push([`${c} skipped`, `${found[c]} (collection no longer used)`]);
  }
  rows.push(
    ['summaries rebuilt (disagreeing with the stored messages)', settled.summariesRebuilt],
    ['counters repaired (below the stored documents)', settled.countersRepaired.length],
  );
  rows.push(['time', seconds(started)]);
  printSummary(io, 'restore done', rows);
  for (const line of settled.countersRepaired) io.out(`  counter ${line}`);
  return 0;
}

if (require.main === module)
  runMain(
    main,
    HELP,
    'part of the backup may be written; run the same command again to complete it (restore writes by id)',
  );
