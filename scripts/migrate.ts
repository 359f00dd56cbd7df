// npm run migrate -- <legacy.db> [--dry-run]: moves the previous version's SQLite data (SQLModel
// tables `user` and `message`) into the document database. Idempotent: documents are keyed by
// natural ids (a message without a WhatsApp id by a hash of its user, time and content), counters
// grow for documents this run inserted, and what an interrupted run left uncounted is counted.
// Messages are read twice, a row at a time: once in the file's order (what is archived, and each
// row's place in the legacy order, as numbers), then in that order as they are imported; so memory
// grows with the file (sql.js holds it) and a few numbers per row, never with every text at once.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import initSqlJs, { type Database, type SqlValue } from 'sql.js';
import {
  MAX_EVENT_JSON,
  isCutWhenStored,
  MAX_TEXT,
  type DataStore,
  type ImportedMessage,
  type ImportedUser,
} from '../shared/data';
import { digitsOfNumber, MAX_NAME, nameOf, settleTime } from '../shared/whatsapp/notification';
import { MESSAGE_ID } from '../shared/whatsapp/schemas';
import {
  parseCli,
  intOption,
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

export const HELP = `
Usage: npm run migrate -- <legacy.db> [--dry-run] [--batch-size N]

Moves the users and messages of the previous (SQLite) version of the bot into the database
(MONGODB_URI, else the embedded database of \`npm run dev\`; MONGODB_DATABASE, default
whatsapp_chatbot). Running it again changes nothing. An erase stays done: what the file holds of a
number from before its user's erase (by the audit trail) is left out, not archived, and counted.

  --dry-run         read the file and the database and report; write nothing
  --batch-size N    documents per bulk write (default 500)
  -h, --help        this help

Rows that cannot be imported (a user without a valid number and its messages, a message without
its user, with an unknown role or an unreadable date) are kept in the events collection (kind
legacy_row) and listed by legacy id. A file in write-ahead-log mode is read with the transactions
committed in <legacy.db>-wal, as SQLite reads it; a hot <legacy.db>-journal (a write cut short) is
refused until SQLite has opened the file once.

Exit code: 0 on success (orphans, messages whose user row is missing, are skipped, counted and
archived), 1 on failure (unreadable file, database error), 2 on bad arguments, 3 when other rows
could not be imported (everything else was).
`;

export interface LegacyMessage extends ImportedMessage {
  /** The key an earlier version gave a message without a WhatsApp id (`legacy:<row>`), if any. */
  readonly oldKey: string | null;
}

/** The archived item's kind for a legacy row that could not be imported (in `events`). */
export const LEGACY_ROW_KIND = 'legacy_row';

/** A legacy row kept in `events` instead of being imported (or beside its cut import). */
export interface ArchivedRow {
  readonly reason: string;
  /**
   * `{table, row}`: every column as the file holds it (BLOBs as `{"base64"}`). A row whose JSON
   * passes an archived item's bound is archived in `parts` items (`part` 1, 2, …), each with a
   * piece of its longest column (the other columns whole): the pieces joined in order give it back.
   */
  readonly payload: {
    table: 'user' | 'message';
    row: Record<string, unknown>;
    part?: number;
    parts?: number;
  };
  /** The user it concerns, when imported; else the number it carries (as a pseudonym). */
  readonly userId: string | null;
  readonly identifier: string | null;
  /** True when the row was not imported at all (false: imported, its whole text archived). */
  readonly notImported: boolean;
}

export interface LegacyData {
  users: ImportedUser[];
  /**
   * The messages to import, oldest first, read from the file as they are asked for (so that the
   * messages of a large file are never all in memory); once. Counts duplicates, inbound, outbound
   * and messages in `report` as it goes.
   */
  messages: () => Generator<LegacyMessage>;
  /** Messages `messages` gives before duplicates are left out (for progress). */
  candidates: number;
  /** Whether a message may have a key an earlier version gave (`legacy:<row>`). */
  anyOldKey: boolean;
  /** WhatsApp ids of the file shaped like such a key: no message takes one as its earlier key. */
  reservedKeys: ReadonlySet<string>;
  archived: ArchivedRow[];
  report: {
    legacyUsers: number;
    legacyMessages: number;
    /** Legacy users whose numbers normalise to one already seen (merged into it). */
    mergedUsers: number;
    /** Users without a number within bounds (archived, and so are their messages). */
    invalidUsers: number;
    /** Legacy ids of the users archived, as found; `?` for none. */
    skippedUsers: string[];
    /** Users sharing a legacy id with another (a schema without a primary key): their messages are archived. */
    ambiguousUsers: number;
    /** Names cut to the bound the webhook keeps. */
    namesCut: number;
    /** Names (TEXT or BLOB) whose bytes are not UTF-8: imported with U+FFFD, the whole row archived. */
    invalidNames: number;
    /** Users whose creation date was unreadable: the time of their first message instead. */
    userDatesReplaced: number;
    duplicates: number;
    /** Messages whose user is missing, NULL, unknown, archived or ambiguous (archived). */
    orphans: number;
    /**
     * Of those, the orphans proper: no user id, or one no user row has. The old bot's data holds
     * them; they are skipped and counted (and archived) without failing the run.
     */
    missingUser: number;
    /** Rows with an unknown role or an unreadable date (archived). */
    invalidMessages: number;
    /** Legacy row ids of the archived messages (orphans and invalid rows), as found; `?` for none. */
    skippedRows: string[];
    /** WhatsApp ids out of bounds: the message is kept under a derived key, without that id. */
    idsOutOfBounds: number;
    /** Texts longer than the bound the webhook keeps (cut to it; the whole row archived). */
    textsCut: number;
    /** Binary (BLOB) contents read as UTF-8. */
    binaryTexts: number;
    /** Texts (TEXT or BLOB) whose bytes are not UTF-8: imported with U+FFFD, the whole row archived. */
    invalidUtf8: number;
    /** Times in the future replaced by the time of the migration (the webhook's rule). */
    futureTimes: number;
    /**
     * Users whose number's user was erased (by the audit trail) after their creation, with no
     * message from after the erase: not imported (an erase stays done).
     */
    erasedUsers: number;
    /**
     * Messages of such a number dated before its latest erase (or undated): not imported, not
     * archived (an erase is a deliberate deletion).
     */
    erasedMessages: number;
    /** Messages to import (duplicates left out): known once `messages` was read through. */
    messages: number;
    inbound: number;
    outbound: number;
  };
}

const DATETIME =
  /^(\d{4})([-/])(\d{2})\2(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|UTC|GMT|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * Epoch numbers are seconds below 1e11, milliseconds below 1e14, microseconds below 1e17 and
 * nanoseconds from there (each bound is the year 5138 in the smaller unit).
 */
/** The earliest time an epoch number may name (2000-01-01): see `parseLegacyDate`. */
const EARLIEST_EPOCH_MS = Date.UTC(2000, 0, 1);

const epochMs = (n: number): number => (n < 1e11 ? n * 1000 : n < 1e14 ? n : n < 1e17 ? n / 1e3 : n / 1e6);

/**
 * A SQLite DATETIME as SQLAlchemy writes it: `YYYY-MM-DD HH:MM:SS[.ffffff]`, also with `T`,
 * without seconds or fractions, with an offset or `UTC`/`GMT` (as Ruby and some ORMs write it), or
 * with `/` for `-`; or an integer of epoch seconds
 * (milliseconds from 1e11, microseconds from 1e14, nanoseconds from 1e17), as a number or digits,
 * with or without a fraction. Naive times are UTC.
 * Precision: milliseconds (further digits are truncated, as a JavaScript Date cannot hold them).
 * Day-first or month-first dates (`01/02/2024`) are ambiguous and refused, as are years before 1970,
 * epoch numbers naming a time before 2000 (a Julian day or a spreadsheet's serial day, misread as
 * seconds) and values out of range (month 13, February 31, 10:61, an offset past ±23:59).
 */
export function parseLegacyDate(value: SqlValue | undefined): Date | null {
  if (typeof value === 'number' || (typeof value === 'string' && /^\s*\d{1,19}(?:\.\d+)?\s*$/.test(value))) {
    const n = Number(value);
    // Nanoseconds pass 2^53: their milliseconds are still exact.
    if (!Number.isFinite(n) || n <= 0 || n >= 1e19) return null;
    // Fractions of a millisecond (Python's time.time(), microseconds) truncated like text forms.
    const ms = Math.floor(epochMs(n));
    // A number naming a time before 2000 is no epoch time a chatbot wrote but another count read
    // as seconds (SQLite's julianday(), about 2,460,000; a spreadsheet's serial day, about 45,000;
    // a counter): unreadable, so the row is archived, never imported at a day of January 1970.
    return ms < EARLIEST_EPOCH_MS ? null : new Date(ms);
  }
  if (typeof value !== 'string') return null;
  const m = DATETIME.exec(value.trim());
  if (!m) return null;
  const [, y, , mo, d, h = '0', mi = '0', s = '0', frac = '', zone] = m;
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  // Impossible values (month 13, 2024-02-31, 10:61, 24:00, an offset of +99:99) name no instant:
  // refused, never rolled over into another date, whether or not an offset follows.
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate();
  if (year < 1970 || month < 1 || month > 12 || day < 1 || day > daysInMonth) return null;
  if (hour > 23 || minute > 59 || second > 59) return null;
  const ms = Number(frac.slice(0, 3).padEnd(3, '0'));
  let time = Date.UTC(year, month - 1, day, hour, minute, second, ms);
  if (zone && !['Z', 'UTC', 'GMT'].includes(zone.toUpperCase())) {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const [zoneHours, zoneMinutes] = [Number(digits.slice(0, 2)), Number(digits.slice(2, 4) || '0')];
    if (zoneHours > 23 || zoneMinutes > 59) return null;
    time -= sign * (zoneHours * 60 + zoneMinutes) * 60_000;
  }
  return Number.isNaN(time) ? null : new Date(time);
}

/**
 * A legacy phone number as WhatsApp digits: the webhook's rule (`digitsOfNumber`) once what people
 * and spreadsheets write around a number is read as they meant it: a `tel:` or `whatsapp:` prefix,
 * the international call prefix `00` for `+` (a WhatsApp id never starts with 0), a trunk `(0)`
 * after the country code (`+44 (0)20 …`), and the `.0` of a number kept in a float column.
 */
export function legacyWaId(value: SqlValue | undefined): string | null {
  if (typeof value !== 'string') return digitsOfNumber(value);
  const written = value
    .trim()
    .replace(/^(?:tel|whatsapp):\s*/i, '')
    .replace(/^(\+?\d+)\.0+$/, '$1')
    .replace(/^00[\s.-]*(?=[1-9])/, '+')
    .replace(/^(\+[\s.-]*\d{1,3})[\s.-]*\(0\)/, '$1 ');
  return digitsOfNumber(written);
}

/** The number as versions before `legacyWaId` read it: their users keep their ids (see `main`). */
export const earlierWaId = (value: SqlValue | undefined): string | null => digitsOfNumber(value);

/** Every digit of a value that is no valid number, when that is a number's length (erase finds it). */
const looseDigits = (value: SqlValue | undefined): string | null => {
  const digits =
    typeof value === 'string' || typeof value === 'number' ? String(value).replace(/\D/g, '') : '';
  return /^\d{1,20}$/.test(digits) ? digits : null;
};

/** A legacy integer id (user or row), or null (NULL, text, fraction). */
const legacyId = (value: SqlValue | undefined): number | null =>
  typeof value === 'number' && Number.isSafeInteger(value) ? value : null;

/**
 * A user id (of a user row, or a message's user_id): also digits as text, which a column without
 * a declared type keeps as text. (A message's own row id stays `legacyId`: it is part of its key.)
 */
const userRef = (value: SqlValue | undefined): number | null =>
  legacyId(typeof value === 'string' && /^\s*-?\d{1,15}\s*$/.test(value) ? Number(value) : value);

const isFalse = (value: SqlValue | undefined): boolean =>
  value === 0 || value === '0' || (typeof value === 'string' && /^(false|f|no)$/i.test(value.trim()));

/**
 * The key of a message without a WhatsApp id: a hash of the user's number, its time, direction,
 * legacy row id and text. The same row of the same file gets the same key on every run; a row of
 * another file (another bot's row 2) or another row with the same id (no primary key) does not.
 */
export function derivedKey(
  waId: string,
  createdAt: Date,
  direction: string,
  row: number | null,
  text: string,
): string {
  const hash = createHash('sha256')
    .update(JSON.stringify([waId, createdAt.toISOString(), direction, row, text]))
    .digest('hex');
  return `legacy:${hash.slice(0, 32)}`;
}

/** The rows of a query, by column name. */
function rows(db: Database, sql: string): Record<string, SqlValue>[] {
  return [...stepRows(db, sql)].map(({ row }) => row);
}

/** The columns read, by table; the others may be missing (read as NULL). Extra columns are ignored. */
const COLUMNS = {
  user: { required: ['phone_number'], optional: ['id', 'name', 'is_active', 'created_at', 'updated_at'] },
  message: {
    required: ['user_id', 'role', 'content', 'created_at'],
    optional: ['id', 'meta_message_id'],
  },
} as const;

/**
 * The legacy database, open (sql.js holds the file in memory; nothing more of it is held): its
 * users, and its messages read a row at a time, in the file's order or in the order given.
 */
export interface LegacySource {
  readonly users: Record<string, SqlValue>[];
  readonly messageRows: number;
  /** Every message row as stored, in the file's order, with a handle to it. */
  eachMessage(fn: (row: Record<string, SqlValue>, handle: number) => void): void;
  /**
   * Sets the order `ordered` reads: the rows of the handles given (others left out), by `time`,
   * then `row` (NULL last), then `position`.
   */
  order(keys: Iterable<readonly [handle: number, time: number, row: number | null, position: number]>): void;
  /** The rows `order` names, in its order, a row at a time. */
  ordered(): Generator<Record<string, SqlValue>>;
  close(): void;
}

/**
 * Message rows whose TEXT content, and user rows whose TEXT name, holds bytes that are not UTF-8
 * (written through a C API, say): the column is those bytes, as the file holds them (SQLite would
 * hand them over with U+FFFD in place of each bad sequence, and the bytes would be lost).
 */
const TEXT_NOT_UTF8 = new WeakSet<Record<string, SqlValue>>();

/**
 * The columns read as their bytes when TEXT (a message's text, a user's name), each with the name
 * its type is read under, beside it (not part of the row).
 */
const TEXT_COLUMNS = {
  message: { column: 'content', type: '__content_type' },
  user: { column: 'name', type: '__name_type' },
} as const;
/** The order's stand-in for a NULL row id: after every other (2^62; row ids are safe integers). */
const NULL_ROW_LAST = 2 ** 62;
/** A message row's handle (its rowid), read beside it. */
const HANDLE = '__handle';

/** Each row of a query, by column name, one at a time; columns named `__…` apart (`hidden`). */
function* stepRows(
  db: Database,
  sql: string,
): Generator<{ row: Record<string, SqlValue>; hidden: Record<string, SqlValue> }> {
  const statement = db.prepare(sql);
  try {
    const names = statement.getColumnNames();
    while (statement.step()) {
      const values = statement.get();
      const row: Record<string, SqlValue> = {};
      const hidden: Record<string, SqlValue> = {};
      names.forEach((name, i) => {
        (name.startsWith('__') ? hidden : row)[name] = values[i] ?? null;
      });
      yield { row, hidden };
    }
  } finally {
    statement.free();
  }
}

/** The first 16 bytes of every SQLite database file (its header string). */
const SQLITE_MAGIC = Buffer.from('SQLite format 3\0', 'latin1');

/** The first bytes of a rollback journal that SQLite has not finished with (its header's magic). */
const JOURNAL_MAGIC = Buffer.from('d9d505f920a163d7', 'hex');

/**
 * The database as SQLite reads it: the main file with the transactions committed in its
 * write-ahead log (`<file>-wal`) applied. In WAL mode what was committed since the last checkpoint
 * is only there (a bot killed, or files copied while it ran), and sql.js reads the main file alone.
 * Frames count up to the last commit frame whose salts and running checksum hold, as SQLite's
 * recovery counts them (https://www.sqlite.org/fileformat2.html#walformat): a torn tail is not
 * committed. A log that is not valid as a whole is ignored, as SQLite ignores it.
 */
export function withWal(main: Buffer, wal: Buffer): Buffer {
  if (wal.length < 32) return main;
  const magic = wal.readUInt32BE(0);
  if ((magic & ~1) !== 0x377f0682 || wal.readUInt32BE(4) !== 3007000) return main;
  const word = magic & 1 ? (at: number) => wal.readUInt32BE(at) : (at: number) => wal.readUInt32LE(at);
  const checksum = (from: number, to: number, [s0, s1]: [number, number]): [number, number] => {
    for (let at = from; at < to; at += 8) {
      s0 = (s0 + word(at) + s1) >>> 0;
      s1 = (s1 + word(at + 4) + s0) >>> 0;
    }
    return [s0, s1];
  };
  const pageSize = wal.readUInt32BE(8);
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return main;
  let sum = checksum(0, 24, [0, 0]);
  if (sum[0] !== wal.readUInt32BE(24) || sum[1] !== wal.readUInt32BE(28)) return main;
  const salts = wal.subarray(16, 24);
  const committed = new Map<number, Buffer>();
  const pending = new Map<number, Buffer>();
  let pages = 0;
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (!wal.subarray(at + 8, at + 16).equals(salts)) break;
    sum = checksum(at + 24, at + 24 + pageSize, checksum(at, at + 8, sum));
    if (sum[0] !== wal.readUInt32BE(at + 16) || sum[1] !== wal.readUInt32BE(at + 20)) break;
    pending.set(wal.readUInt32BE(at), wal.subarray(at + 24, at + 24 + pageSize));
    const commit = wal.readUInt32BE(at + 4);
    if (commit !== 0) {
      for (const [page, data] of pending) committed.set(page, data);
      pending.clear();
      pages = commit;
    }
  }
  if (pages === 0) return main;
  const out = Buffer.alloc(pages * pageSize);
  main.copy(out, 0, 0, Math.min(main.length, out.length));
  for (const [page, data] of committed) if (page <= pages) data.copy(out, (page - 1) * pageSize);
  // The copy in memory is an ordinary (rollback-journal) database: its log is in it now.
  out[18] = 1;
  out[19] = 1;
  return out;
}

/** Opens the legacy database and checks its `user` and `message` tables. */
export async function openLegacy(file: string): Promise<LegacySource> {
  let bytes: Buffer;
  try {
    // A device (`/dev/zero`, `/dev/stdin` on a terminal) would be read without end; a pipe, as
    // `<(…)` gives, ends, and is read.
    const stat = await fs.stat(file);
    if (stat.isCharacterDevice() || stat.isBlockDevice() || stat.isSocket())
      throw new ScriptError(`cannot read the legacy database ${file}: it is a device, not a file`);
    bytes = await fs.readFile(file);
    // Beside the file: absent (ENOENT) is the usual case; unreadable ones are an error, not nothing.
    const beside = (suffix: string) =>
      fs.readFile(`${file}${suffix}`).catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return undefined;
        throw error;
      });
    const journal = await beside('-journal');
    if (journal && journal.subarray(0, 8).equals(JOURNAL_MAGIC)) {
      const name = path.basename(file);
      throw new ScriptError(
        `${name} has a rollback journal (${name}-journal): a write to it was cut short, and SQLite ` +
          'rolls that back when it opens the file; open it once with SQLite (for example ' +
          `\`sqlite3 ${name} 'PRAGMA integrity_check'\`) with the old bot stopped, then run this again`,
      );
    }
    const wal = await beside('-wal');
    if (wal) bytes = withWal(bytes, wal);
  } catch (error) {
    if (error instanceof ScriptError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : (code ?? 'unreadable');
    // The whole path: a relative one is taken from the folder `npm run` was typed in, not the
    // project's, and the message shows where that was.
    throw new ScriptError(`cannot read the legacy database ${file}: ${reason}`);
  }
  const SQL = await initSqlJs();
  const name = path.basename(file);
  const notSqlite = () => new ScriptError(`${name} is not a SQLite database`);
  // A SQLite file cut short or with damaged pages: said before anything is read or written, since
  // a run would otherwise stop at the damage (a stack trace) with part of the file imported.
  const damaged = (problem: string) =>
    new ScriptError(
      `${name} is a damaged SQLite database (${problem}); nothing was imported: recover what it ` +
        `holds with SQLite (for example \`sqlite3 ${name} .recover | sqlite3 recovered.db\`) and run this ` +
        'on the recovered file',
    );
  let db: Database;
  try {
    db = new SQL.Database(bytes);
  } catch {
    throw notSqlite();
  }
  try {
    let check: string;
    try {
      check = String(rows(db, 'PRAGMA quick_check(1)')[0]?.['quick_check'] ?? 'ok');
    } catch (error) {
      if (!bytes.subarray(0, 16).equals(SQLITE_MAGIC)) throw notSqlite();
      throw damaged(error instanceof Error ? error.message : String(error));
    }
    if (check !== 'ok')
      throw damaged(`PRAGMA quick_check: ${check.replace(/\s+/g, ' ').trim().slice(0, 200)}`);
    let tables: string[];
    try {
      // SQLite's names ignore case (a table `User` is the `user` every query here names).
      tables = rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'").map((r) =>
        String(r['name']).toLowerCase(),
      );
    } catch {
      throw notSqlite();
    }
    for (const table of ['user', 'message']) {
      if (!tables.includes(table)) {
        throw new ScriptError(
          `${path.basename(file)} is not a database of the previous version (no table "${table}")`,
        );
      }
    }
    const utf8 = rows(db, 'PRAGMA encoding')[0]?.['encoding'] === 'UTF-8';
    const columnsOf = (table: keyof typeof COLUMNS, alias = ''): string => {
      // SQLite column names are case-insensitive; a missing optional column reads as NULL.
      const present = new Map(
        rows(db, `PRAGMA table_info("${table}")`).map((c) => [
          String(c['name']).toLowerCase(),
          String(c['name']),
        ]),
      );
      const missing = COLUMNS[table].required.filter((c) => !present.has(c));
      if (missing.length) {
        throw new ScriptError(
          `unexpected legacy schema: table "${table}" has no column ${missing.map((c) => `"${c}"`).join(', ')}`,
        );
      }
      return [...COLUMNS[table].required, ...COLUMNS[table].optional]
        .map((c) => {
          const name = present.get(c);
          if (name === undefined) return `NULL AS ${c}`;
          const quoted = `${alias}"${name.replace(/"/g, '""')}"`;
          // A message's text and a user's name are read as their bytes and decoded here, so that
          // bytes that are not UTF-8 are seen (and kept) rather than replaced (a UTF-16 file's
          // texts are read as they are).
          if (c === TEXT_COLUMNS[table].column && utf8)
            return `CASE WHEN typeof(${quoted}) = 'text' THEN CAST(${quoted} AS BLOB) ELSE ${quoted} END AS ${c}, typeof(${quoted}) AS ${TEXT_COLUMNS[table].type}`;
          return `${quoted} AS ${c}`;
        })
        .join(', ');
    };
    const decoder = new TextDecoder('utf-8', { fatal: true });
    const decoded = (
      table: keyof typeof TEXT_COLUMNS,
      row: Record<string, SqlValue>,
      hidden: Record<string, SqlValue>,
    ) => {
      const { column, type } = TEXT_COLUMNS[table];
      const value = row[column];
      if (hidden[type] !== 'text' || !(value instanceof Uint8Array)) return row;
      try {
        row[column] = decoder.decode(value);
      } catch {
        TEXT_NOT_UTF8.add(row);
      }
      return row;
    };
    let users: Record<string, SqlValue>[];
    let messageColumns: string;
    let orderedColumns: string;
    let messageRows: number;
    try {
      users = [...stepRows(db, `SELECT ${columnsOf('user')} FROM "user" ORDER BY id`)].map(
        ({ row, hidden }) => decoded('user', row, hidden),
      );
      messageColumns = columnsOf('message');
      orderedColumns = columnsOf('message', 'm.');
      // Rows are found again by rowid; a table without one (WITHOUT ROWID) is read from a copy.
      try {
        db.exec('SELECT _rowid_ FROM "message" LIMIT 0');
      } catch {
        db.exec('CREATE TEMP TABLE "message" AS SELECT * FROM main."message"');
      }
      messageRows = Number(rows(db, 'SELECT count(*) AS n FROM "message"')[0]?.['n'] ?? 0);
      db.exec(
        'CREATE TEMP TABLE legacy_order (handle INTEGER PRIMARY KEY, t REAL, r INTEGER, p INTEGER); ' +
          'CREATE INDEX temp.legacy_order_tp ON legacy_order (t, r, p)',
      );
    } catch (error) {
      if (error instanceof ScriptError) throw error;
      throw new ScriptError(
        `unexpected legacy schema: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    const source: LegacySource = {
      users,
      messageRows,
      eachMessage(fn) {
        for (const { row, hidden } of stepRows(
          db,
          `SELECT ${messageColumns}, _rowid_ AS ${HANDLE} FROM "message"`,
        ))
          fn(decoded('message', row, hidden), Number(hidden[HANDLE]));
      },
      order(keys) {
        db.exec('DELETE FROM legacy_order; BEGIN');
        const insert = db.prepare('INSERT INTO legacy_order VALUES (?, ?, ?, ?)');
        try {
          // A NULL row id sorts last (row ids are safe integers).
          for (const [handle, t, r, p] of keys) insert.run([handle, t, r ?? NULL_ROW_LAST, p]);
        } finally {
          insert.free();
          db.exec('COMMIT');
        }
      },
      *ordered() {
        // Along the order's index, each row found by rowid: nothing of the messages is sorted (SQLite
        // would hold them all in memory to sort them).
        const sql =
          `SELECT ${orderedColumns} FROM legacy_order AS k CROSS JOIN "message" AS m ON m._rowid_ = k.handle ` +
          'ORDER BY k.t, k.r, k.p';
        for (const { row, hidden } of stepRows(db, sql)) yield decoded('message', row, hidden);
      },
      close: () => db.close(),
    };
    return source;
  } catch (error) {
    db.close();
    throw error;
  }
}

/** A time as stored: one in the future becomes `now`, the webhook's rule (`settleTime`). */
function settled(at: Date, now: Date, report: LegacyData['report']): Date {
  const result = settleTime(at.getTime() / 1000, now);
  if (result === now) report.futureTimes++;
  return result;
}

/** A message's text, and whether its bytes were not UTF-8 (read with U+FFFD in their place). */
function textOf(
  row: Record<string, SqlValue>,
  report: LegacyData['report'],
): { text: string; lossy: boolean } {
  const value = row['content'];
  if (value === null || value === undefined) return { text: '', lossy: false };
  if (value instanceof Uint8Array) {
    if (!TEXT_NOT_UTF8.has(row)) report.binaryTexts++;
    try {
      return { text: new TextDecoder('utf-8', { fatal: true }).decode(value), lossy: false };
    } catch {
      report.invalidUtf8++;
      return { text: new TextDecoder('utf-8').decode(value), lossy: true };
    }
  }
  return { text: String(value), lossy: false };
}

/**
 * A user's name as read (a BLOB's bytes, or a TEXT's that are not UTF-8, decoded as UTF-8), and
 * whether its bytes were not UTF-8 (read with U+FFFD in their place).
 */
function nameTextOf(value: SqlValue | undefined): { raw: string | null; lossy: boolean } {
  if (value instanceof Uint8Array) {
    try {
      return { raw: new TextDecoder('utf-8', { fatal: true }).decode(value), lossy: false };
    } catch {
      return { raw: new TextDecoder('utf-8').decode(value), lossy: true };
    }
  }
  return { raw: typeof value === 'string' ? value : null, lossy: false };
}

/** A row as archived: JSON values only (a BLOB as base64, so nothing of it is lost). */
const rowPayload = (table: 'user' | 'message', row: Record<string, SqlValue>): ArchivedRow['payload'] => ({
  table,
  row: Object.fromEntries(
    Object.entries(row).map(([k, v]) => [
      k,
      v instanceof Uint8Array ? { base64: Buffer.from(v).toString('base64') } : v,
    ]),
  ),
});

/**
 * A row as archived items: one, or, when its JSON passes an item's bound (`MAX_EVENT_JSON`, past
 * which an item is cut), parts each holding a piece of its longest column (never inside a surrogate
 * pair), so that the whole row is kept.
 */
export function rowPayloads(
  table: 'user' | 'message',
  row: Record<string, SqlValue>,
): ArchivedRow['payload'][] {
  const whole = rowPayload(table, row);
  if (JSON.stringify(whole).length <= MAX_EVENT_JSON) return [whole];
  const textOfValue = (v: unknown): string | null =>
    typeof v === 'string' ? v : v && typeof v === 'object' && 'base64' in v ? String(v.base64) : null;
  const [column, longest] = Object.entries(whole.row).reduce<[string, string]>(
    (best, [k, v]) => {
      const text = textOfValue(v);
      return text !== null && text.length > best[1].length ? [k, text] : best;
    },
    ['', ''],
  );
  const wrap = (piece: string): unknown =>
    typeof whole.row[column] === 'string' ? piece : { base64: piece };
  const frame = JSON.stringify({
    ...whole,
    row: { ...whole.row, [column]: wrap('') },
    part: 1e6,
    parts: 1e6,
  });
  const budget = MAX_EVENT_JSON - frame.length;
  // Other columns past the bound too: kept as the events collection keeps any item.
  if (budget < 1024) return [whole];
  const pieces: string[] = [];
  for (let start = 0; start < longest.length;) {
    let end = Math.min(longest.length, start + budget);
    for (;;) {
      const size = JSON.stringify(longest.slice(start, end)).length - 2;
      if (size <= budget) break;
      end = start + Math.max(1, Math.floor(((end - start) * budget) / size));
    }
    const last = longest.charCodeAt(end - 1);
    if (end < longest.length && end - start > 1 && last >= 0xd800 && last <= 0xdbff) end--;
    pieces.push(longest.slice(start, end));
    start = end;
  }
  return pieces.map((piece, i) => ({
    ...whole,
    row: { ...whole.row, [column]: wrap(piece) },
    part: i + 1,
    parts: pieces.length,
  }));
}

/** Whether an archived item is its row's first (or only) one: one per row archived. */
const isFirstItem = (item: ArchivedRow): boolean => (item.payload.part ?? 1) === 1;

/** The rows archived, each counted once whatever the number of items it takes. */
const archivedRows = (legacy: LegacyData): number => legacy.archived.filter(isFirstItem).length;

/** A report with nothing counted yet. */
const emptyReport = (legacyUsers: number, legacyMessages: number): LegacyData['report'] => ({
  legacyUsers,
  legacyMessages,
  mergedUsers: 0,
  invalidUsers: 0,
  skippedUsers: [],
  ambiguousUsers: 0,
  namesCut: 0,
  invalidNames: 0,
  userDatesReplaced: 0,
  duplicates: 0,
  orphans: 0,
  missingUser: 0,
  invalidMessages: 0,
  skippedRows: [],
  idsOutOfBounds: 0,
  textsCut: 0,
  binaryTexts: 0,
  invalidUtf8: 0,
  futureTimes: 0,
  erasedUsers: 0,
  erasedMessages: 0,
  messages: 0,
  inbound: 0,
  outbound: 0,
});

function mapLegacy(
  source: LegacySource,
  now: Date,
  earlier: ReadonlySet<string>,
  idOf: (waId: string) => string,
  erasedAt: (row: Record<string, SqlValue>) => Date | null,
  onRead: (rows: number) => void = () => {},
): LegacyData {
  const legacyUsers = source.users;
  let archived: ArchivedRow[] = [];
  const keep = (
    table: 'user' | 'message',
    row: Record<string, SqlValue>,
    item: Omit<ArchivedRow, 'payload'>,
  ): void => {
    for (const payload of rowPayloads(table, row)) archived.push({ ...item, payload });
  };
  const report = emptyReport(legacyUsers.length, source.messageRows);
  const rowName = (row: Record<string, SqlValue>): string => {
    const id = legacyId(row['id']);
    return id === null ? '?' : String(id);
  };
  // A legacy id held by two rows (no primary key) names no one for sure: its messages are archived.
  const legacyIds = new Map<number, number>();
  for (const row of legacyUsers) {
    const id = userRef(row['id']);
    if (id !== null) legacyIds.set(id, (legacyIds.get(id) ?? 0) + 1);
  }
  const ambiguous = new Set([...legacyIds].filter(([, n]) => n > 1).map(([id]) => id));
  const userIdByLegacy = new Map<number, string>();
  // Users archived (no valid number), by legacy id: the digits their messages are archived under.
  const invalidByLegacy = new Map<number, string | null>();
  const users = new Map<string, { user: ImportedUser; datedByMessage: boolean }>();
  // The latest erase of each user's number (the audit trail's): what the file holds of them from
  // before it is left out.
  const erasedOf = new Map<string, Date>();
  for (const row of legacyUsers) {
    const before = earlierWaId(row['phone_number']);
    // A user an earlier version stored under the digits it read keeps them (and its messages' keys).
    const waId = before !== null && earlier.has(before) ? before : legacyWaId(row['phone_number']);
    const legacy = userRef(row['id']);
    if (!waId) {
      report.invalidUsers++;
      report.skippedUsers.push(legacy === null ? '?' : String(legacy));
      const identifier = looseDigits(row['phone_number']);
      if (legacy !== null && !ambiguous.has(legacy)) invalidByLegacy.set(legacy, identifier);
      keep('user', row, {
        reason: 'user without a valid number',
        userId: null,
        identifier,
        notImported: true,
      });
      continue;
    }
    const id = idOf(waId);
    if (legacy !== null && !ambiguous.has(legacy)) userIdByLegacy.set(legacy, id);
    const erase = erasedAt(row);
    const knownErase = erasedOf.get(id);
    if (erase && (!knownErase || erase > knownErase)) erasedOf.set(id, erase);
    const { raw, lossy } = nameTextOf(row['name']);
    const name = nameOf(raw);
    if (lossy) {
      // Imported readable (when this row names the user); the bytes as the file holds them stay
      // in the archive.
      report.invalidNames++;
      keep('user', row, {
        reason: 'user name not valid UTF-8 (imported with U+FFFD)',
        userId: id,
        identifier: null,
        notImported: false,
      });
    }
    const dated = parseLegacyDate(row['created_at']) ?? parseLegacyDate(row['updated_at']);
    const known = users.get(id);
    if (known) {
      // The same person under another row: they were created when the earliest row says, and
      // keep the name of the first row that gives one.
      report.mergedUsers++;
      const createdAt = dated ? settled(dated, now, report) : null;
      const earlierDate =
        createdAt && (known.datedByMessage || createdAt < known.user.createdAt) ? { createdAt } : {};
      if (createdAt) known.datedByMessage = false;
      const named = known.user.name === null && name !== null ? { name } : {};
      if (named.name && raw !== null && raw.trim().length > MAX_NAME && name?.length === MAX_NAME)
        report.namesCut++;
      known.user = { ...known.user, ...earlierDate, ...named };
      continue;
    }
    if (raw !== null && raw.trim().length > MAX_NAME && name?.length === MAX_NAME) report.namesCut++;
    users.set(id, {
      user: {
        id,
        waId,
        name,
        createdAt: dated ? settled(dated, now, report) : now,
        optedOut: isFalse(row['is_active']),
      },
      datedByMessage: !dated,
    });
  }
  report.ambiguousUsers = [...legacyUsers].filter((r) => {
    const id = userRef(r['id']);
    return id !== null && ambiguous.has(id);
  }).length;

  const waIdOf = new Map([...users].map(([id, u]) => [id, u.user.waId]));
  // A message row as imported (keyAt: the time as the file has it; a future one is replaced by
  // now, which changes every run), or null when it is archived instead. Read twice: once in the
  // file's order, which counts and archives, then in the legacy order (`first` false).
  const mapRow = (row: Record<string, SqlValue>, counts: LegacyData['report'], first: boolean) => {
    const parsedAt = parseLegacyDate(row['created_at']);
    const role = typeof row['role'] === 'string' ? row['role'].trim().toLowerCase() : null;
    const legacyUser = userRef(row['user_id']);
    const userId = legacyUser === null ? undefined : userIdByLegacy.get(legacyUser);
    // Sent before its user's erase (or undated: not shown to be after it): left out, unarchived.
    const erase = userId === undefined ? undefined : erasedOf.get(userId);
    if (erase && (!parsedAt || parsedAt <= erase)) {
      counts.erasedMessages++;
      return null;
    }
    const archive = (reason: string) => {
      if (!first) return;
      counts.skippedRows.push(rowName(row));
      keep('message', row, {
        reason,
        userId: userId ?? null,
        identifier: (legacyUser !== null && invalidByLegacy.get(legacyUser)) || null,
        notImported: true,
      });
    };
    if (!parsedAt || (role !== 'user' && role !== 'assistant')) {
      counts.invalidMessages++;
      archive(parsedAt ? 'message with an unknown role' : 'message with an unreadable date');
      return null;
    }
    if (!userId) {
      counts.orphans++;
      if (legacyUser !== null && invalidByLegacy.has(legacyUser))
        archive('message of a user without a valid number');
      else if (legacyUser !== null && ambiguous.has(legacyUser))
        archive('message of a user id that several user rows share');
      else {
        counts.missingUser++;
        archive(legacyUser === null ? 'message without a user id' : 'message of a missing user');
      }
      return null;
    }
    const rowId = legacyId(row['id']);
    const given = typeof row['meta_message_id'] === 'string' ? row['meta_message_id'].trim() : '';
    const meta = MESSAGE_ID.test(given) ? given : null;
    if (given && !meta) counts.idsOutOfBounds++;
    const { text, lossy } = textOf(row, counts);
    const cut = isCutWhenStored(text);
    // Counted under each that applies; the row is archived once.
    if (cut) counts.textsCut++;
    // Imported readable (and cut, as the webhook keeps it); the bytes as the file holds them, or
    // the whole text, stay in the archive.
    if (first && (lossy || cut))
      keep('message', row, {
        reason: lossy
          ? cut
            ? 'message text not valid UTF-8 and longer than 65,536 characters (imported with U+FFFD, cut)'
            : 'message text not valid UTF-8 (imported with U+FFFD)'
          : 'message text longer than 65,536 characters (imported cut)',
        userId,
        identifier: null,
        notImported: false,
      });
    const m: Omit<LegacyMessage, 'id'> = {
      oldKey: meta === null && rowId !== null ? `legacy:${rowId}` : null,
      userId,
      waMessageId: meta,
      direction: role === 'user' ? 'inbound' : 'outbound',
      // Cut at MAX_TEXT characters where it is stored (storedText), never half of an emoji.
      text,
      createdAt: settled(parsedAt, now, counts),
    };
    return { row: rowId, keyAt: parsedAt, m };
  };

  // First the file's order: what is archived, and the legacy order of the others (by created_at,
  // then row id, then the order read: the text of mixed formats does not sort by time), kept as
  // numbers only.
  const order = { handles: [] as number[], times: [] as number[], rows: [] as (number | null)[] };
  const firstAt = new Map<string, number>();
  let anyOldKey = false;
  const reservedKeys = new Set<string>();
  // Called a row at a time: this reading is synchronous, so a progress timer would never fire.
  let read = 0;
  source.eachMessage((row, handle) => {
    onRead(++read);
    const mapped = mapRow(row, report, true);
    if (!mapped) return;
    const at = mapped.m.createdAt.getTime();
    order.handles.push(handle);
    order.times.push(at);
    order.rows.push(mapped.row);
    if (mapped.m.oldKey) anyOldKey = true;
    if (mapped.m.waMessageId && EARLIER_KEY.test(mapped.m.waMessageId))
      reservedKeys.add(mapped.m.waMessageId);
    // A user whose creation date was unreadable was created with their first message.
    if (at < (firstAt.get(mapped.m.userId) ?? Infinity)) firstAt.set(mapped.m.userId, at);
  });
  source.order(
    (function* () {
      for (let i = 0; i < order.handles.length; i++) {
        onRead(++read);
        yield [order.handles[i] as number, order.times[i] as number, order.rows[i] ?? null, i] as const;
      }
    })(),
  );
  const candidates = order.handles.length;
  // A user erased after their creation is one again only with what they sent after the erase, and
  // from then on; without it they are not imported (nor is what was archived of their user row).
  const leftOut = new Set<string>();
  for (const [id, u] of users) {
    const erase = erasedOf.get(id);
    if (!erase || (!u.datedByMessage && u.user.createdAt > erase)) continue;
    const at = firstAt.get(id);
    if (at === undefined) {
      users.delete(id);
      leftOut.add(id);
      report.erasedUsers++;
    } else if (!u.datedByMessage) u.user = { ...u.user, createdAt: new Date(at) };
  }
  if (leftOut.size)
    archived = archived.filter((a) => !(a.payload.table === 'user' && a.userId && leftOut.has(a.userId)));
  for (const [id, u] of users) {
    if (!u.datedByMessage) continue;
    const at = firstAt.get(id);
    if (at !== undefined) u.user = { ...u.user, createdAt: new Date(at) };
    report.userDatesReplaced++;
  }

  function* messages(): Generator<LegacyMessage> {
    // What reading the rows again finds was counted the first time.
    const again = emptyReport(0, 0);
    const seen = new Set<string>();
    // A user's messages at the same instant keep the legacy order in the conversation (seqAt, the
    // order the AI history reads), one millisecond apart; createdAt stays exact.
    const lastSeq = new Map<string, number>();
    for (const row of source.ordered()) {
      const mapped = mapRow(row, again, false);
      if (!mapped) continue;
      const { row: rowId, keyAt, m } = mapped;
      // The key hashes the text's first MAX_TEXT UTF-16 units, as every earlier version did, so
      // that a run over a file migrated before finds the same rows.
      const id =
        m.waMessageId ??
        derivedKey(waIdOf.get(m.userId) ?? '', keyAt, m.direction, rowId, m.text.slice(0, MAX_TEXT));
      if (seen.has(id)) {
        report.duplicates++;
        continue;
      }
      seen.add(id);
      const seq = Math.max(m.createdAt.getTime(), (lastSeq.get(m.userId) ?? -Infinity) + 1);
      lastSeq.set(m.userId, seq);
      report.messages++;
      report[m.direction]++;
      yield { ...m, id, ...(seq === m.createdAt.getTime() ? {} : { seqAt: new Date(seq) }) };
    }
  }
  return {
    users: [...users.values()].map((u) => u.user),
    messages,
    candidates,
    anyOldKey,
    reservedKeys,
    archived,
    report,
  };
}

/** The key an earlier version gave a message without a WhatsApp id; this version's are `legacy:` and 32 hex digits. */
const EARLIER_KEY = /^legacy:-?\d{1,19}$/;

/**
 * Whether messages an earlier version of this script migrated under `legacy:<row>` may be stored
 * (then `keepEarlierKeys` looks each batch up).
 */
async function earlierKeysStored(store: DataStore, legacy: LegacyData, io: Io): Promise<boolean> {
  // Looking every batch up by key reads each message of the collection on some servers (FerretDB
  // does not use an index for `_id: {$in}`): only when an earlier version's keys are stored.
  if (!legacy.anyOldKey) return false;
  const done = working(io, 'looking for messages an earlier version migrated');
  try {
    return await store.maintenance.anyKeyMatching('legacy:', EARLIER_KEY);
  } finally {
    done();
  }
}

/**
 * Messages of a batch an earlier version migrated under `legacy:<row>` keep that key when the
 * stored message is this row's (same user, direction and time), so running this version over a
 * file the earlier one migrated changes nothing; any other row keeps its derived key. `used`: the
 * keys of the file's messages so far and the WhatsApp ids shaped like such a key.
 */
async function keepEarlierKeys(store: DataStore, batch: LegacyMessage[], used: Set<string>): Promise<number> {
  for (const m of batch) used.add(m.id);
  let kept = 0;
  const candidates = batch.flatMap((m) => (m.oldKey && !used.has(m.oldKey) ? [m.oldKey] : []));
  const stored = await store.maintenance.findImported(candidates);
  batch.forEach((m, j) => {
    const earlier = m.oldKey ? stored.get(m.oldKey) : undefined;
    if (
      !m.oldKey ||
      !earlier ||
      used.has(m.oldKey) ||
      earlier.userId !== m.userId ||
      earlier.direction !== m.direction ||
      earlier.createdAt?.getTime() !== m.createdAt.getTime()
    )
      return;
    used.add(m.oldKey);
    batch[j] = { ...m, id: m.oldKey };
    kept++;
  });
  return kept;
}

/** The items of `items` in arrays of `size`. */
function* chunks<T>(items: Iterable<T>, size: number): Generator<T[]> {
  let chunk: T[] = [];
  for (const item of items) {
    chunk.push(item);
    if (chunk.length >= size) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length) yield chunk;
}

/** At most `max` items, then how many more. */
const listed = (items: readonly string[], max = 20): string =>
  items.length === 0
    ? 'none'
    : items.slice(0, max).join(', ') + (items.length > max ? ` … and ${items.length - max} more` : '');

/** Test seam: called after each message batch's insert, before it is counted. */
export interface MigrateHooks {
  afterInsert?: (batch: number) => Promise<void>;
}

export async function main(
  argv: readonly string[],
  env: Env,
  io: Io,
  hooks: MigrateHooks = {},
): Promise<number> {
  const { values, positionals } = parseCli(
    argv,
    { 'dry-run': { type: 'boolean' }, 'batch-size': { type: 'string' } },
    { positionals: 1 },
  );
  const given = positionals[0];
  if (!given) throw new UsageError('the legacy database file is required: npm run migrate -- <legacy.db>');
  const file = givenPath(given, env);
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  const started = Date.now();
  const fileName = path.basename(file);
  io.err(`reading ${fileName}…`);
  const source = await openLegacy(file);
  try {
    return await migrateFrom(
      source,
      { dryRun: values['dry-run'] === true, fileName, batchSize, started },
      env,
      io,
      hooks,
    );
  } finally {
    source.close();
  }
}

/** The run of `main` on the open legacy database. */
async function migrateFrom(
  read: LegacySource,
  {
    dryRun,
    fileName,
    batchSize,
    started,
  }: { dryRun: boolean; fileName: string; batchSize: number; started: number },
  env: Env,
  io: Io,
  hooks: MigrateHooks,
): Promise<number> {
  const now = new Date();
  const common = (legacy: LegacyData): [string, string | number][] => {
    const r = legacy.report;
    return [
      ['legacy users', r.legacyUsers],
      ['legacy messages', r.legacyMessages],
      ['users', legacy.users.length],
      ['messages', r.messages],
      ['inbound', r.inbound],
      ['outbound', r.outbound],
      ['duplicates skipped', r.duplicates],
      // Orphans as the README and --help define them (no user id, or one no user row has): they do
      // not fail the run. The messages of a user row that was not imported do (exit 3).
      ['orphans not imported (archived)', r.missingUser],
      ['messages of users not imported (archived)', r.orphans - r.missingUser],
      ['invalid messages not imported (archived)', r.invalidMessages],
      ['messages not imported (legacy message ids)', listed(r.skippedRows)],
      ['users without a valid number not imported (archived)', r.invalidUsers],
      ['users not imported (legacy user ids)', listed(r.skippedUsers)],
      ['users sharing a legacy id (their messages archived)', r.ambiguousUsers],
      ['users merged (same number)', r.mergedUsers],
      ['user dates from the first message', r.userDatesReplaced],
      ['names cut', r.namesCut],
      ['names not valid UTF-8 (whole row archived)', r.invalidNames],
      ['texts cut (whole row archived)', r.textsCut],
      ['binary texts read as UTF-8', r.binaryTexts],
      ['texts not valid UTF-8 (whole row archived)', r.invalidUtf8],
      ['message ids out of bounds (derived key used)', r.idsOutOfBounds],
      ['future times replaced', r.futureTimes],
      ['users left out (erased)', r.erasedUsers],
      ['messages left out (their user was erased)', r.erasedMessages],
    ];
  };
  /**
   * 0, or 3 with one unmistakable line when rows of the file are not imported (archived). Orphans
   * (messages of no user row) are skipped and counted, as duplicates are: the old bot's data holds
   * them, and the summary says how many were archived.
   */
  const outcome = (legacy: LegacyData, archivedNow: string): number => {
    const users = legacy.report.skippedUsers.length;
    const messages = legacy.report.skippedRows.length - legacy.report.missingUser;
    if (users + messages === 0) return 0;
    io.err(
      `NOT EVERYTHING WAS IMPORTED: ${users} user row(s) and ${messages} message row(s) of ` +
        `${fileName} could not be imported (listed above by legacy id); ${archivedNow} ` +
        `in the events collection (kind ${LEGACY_ROW_KIND}, the row's columns in payloadJson). ` +
        'Correct them in the file and run again to import them. Exit code 3.',
    );
    return 3;
  };
  /**
   * The file mapped onto the database. Users are imported under the id of the user stored with
   * their number, whichever version made it (two numbers of one stored user are one user), else
   * the one a first contact would get. A user an earlier version stored under the digits it read
   * (`0044…`) keeps those digits. `new`: the users no user is stored for yet.
   */
  const mapOnto = async (store: DataStore, readOnly: boolean) => {
    const numbers = read.users.flatMap((row) =>
      [legacyWaId(row['phone_number']), earlierWaId(row['phone_number'])].filter((d) => d !== null),
    );
    const ids = await store.users.idsForImport(numbers, { readOnly });
    const earlier = new Set(
      read.users
        .map((row) => earlierWaId(row['phone_number']))
        .filter((d): d is string => d !== null && ids.stored.has(d)),
    );
    // The latest erase of the user of either reading of the row's number.
    const erasedAt = (row: Record<string, SqlValue>): Date | null => {
      const [a, b] = [legacyWaId(row['phone_number']), earlierWaId(row['phone_number'])].map((d) =>
        d === null ? null : ids.erasedAt(d),
      );
      return a && b ? (a > b ? a : b) : (a ?? b ?? null);
    };
    // Both passes over the file: its rows, then their order (a large file takes a while).
    const reading = progress(io, 'reading', 2 * read.messageRows);
    const legacy = mapLegacy(read, now, earlier, ids.idOf, erasedAt, (n) => reading.update(n));
    reading.done();
    return { legacy, new: legacy.users.filter((u) => !ids.stored.has(u.waId)).length };
  };
  if (dryRun) {
    // The database is read (the users stored, as a run finds them), never written.
    const { legacy, new: usersNew } = await withDataStore(env, io, (store) => mapOnto(store, true));
    // Read through, as a run would: duplicates, inbound and outbound counted.
    const counting = progress(io, 'counting', legacy.candidates);
    let n = 0;
    const reading = legacy.messages();
    while (!reading.next().done) counting.update(++n);
    counting.done();
    printSummary(io, 'migration (dry run: nothing written)', [
      ...common(legacy),
      ['users new (not stored yet)', usersNew],
      ['rows to archive', archivedRows(legacy)],
      ['time', seconds(started)],
    ]);
    return outcome(legacy, 'a run would keep them');
  }
  const written = await withDataStore(env, io, async (store) => {
    const { legacy } = await mapOnto(store, false);
    await store.ensureIndexes('create');
    // What cannot be imported is kept first: an interrupted run has lost nothing. A row's first
    // (or only) item goes last, so that a row counts as archived, by this run or an earlier one,
    // once all of its items are stored; rows are counted, not the items they take.
    let archived = 0;
    for (const first of [false, true]) {
      const items = legacy.archived.filter((a) => isFirstItem(a) === first);
      for (let i = 0; i < items.length; i += batchSize) {
        const stored = await store.events.archiveMany(
          items.slice(i, i + batchSize).map((a) => ({ kind: LEGACY_ROW_KIND, ...a })),
          now,
        );
        if (first) archived += stored;
      }
    }
    const lookUpEarlierKeys = await earlierKeysStored(store, legacy, io);
    const used = new Set(legacy.reservedKeys);
    let earlierKeys = 0;
    const total = legacy.users.length + legacy.candidates;
    const bar = progress(io, 'migrating', total);
    let done = 0;
    let usersInserted = 0;
    const messagesInserted = { inserted: 0, inbound: 0, outbound: 0 };
    for (let i = 0; i < legacy.users.length; i += batchSize) {
      const batch = legacy.users.slice(i, i + batchSize);
      usersInserted += (await store.maintenance.importUsers(batch)).inserted;
      bar.update((done += batch.length));
    }
    let n = 0;
    for (const legacyBatch of chunks(legacy.messages(), batchSize)) {
      if (lookUpEarlierKeys) earlierKeys += await keepEarlierKeys(store, legacyBatch, used);
      const batch = legacyBatch.map(({ oldKey: _oldKey, ...m }) => m);
      const afterInsert = hooks.afterInsert;
      const batchNumber = n++;
      const result = await store.maintenance.importMessages(
        batch,
        afterInsert ? () => afterInsert(batchNumber) : undefined,
      );
      messagesInserted.inserted += result.inserted;
      messagesInserted.inbound += result.inbound;
      messagesInserted.outbound += result.outbound;
      bar.update((done += batch.length));
    }
    bar.done();
    // What an interrupted run inserted without counting, counted now (nothing after a complete run).
    const checking = progress(io, 'checking summaries and counters', await store.maintenance.estimatedSize());
    const settled = await store.maintenance.settleImport(
      legacy.users.map((u) => u.id),
      (n) => checking.update(n),
    );
    checking.done();
    return { legacy, archived, usersInserted, earlierKeys, ...messagesInserted, ...settled };
  });
  const { legacy } = written;
  printSummary(io, 'migration done', [
    ...common(legacy),
    ['users inserted', written.usersInserted],
    ['messages inserted', written.inserted],
    ['inbound inserted', written.inbound],
    ['outbound inserted', written.outbound],
    [
      'already migrated',
      legacy.users.length + legacy.report.messages - written.usersInserted - written.inserted,
    ],
    ['rows archived (kind legacy_row)', written.archived],
    ['rows archived by an earlier run', archivedRows(legacy) - written.archived],
    ['messages under an earlier version’s key', written.earlierKeys],
    ['summaries rebuilt (left by an interrupted run)', written.summariesRebuilt],
    ['counters repaired (left by an interrupted run)', written.countersRepaired.length],
    ['time', seconds(started)],
  ]);
  for (const line of written.countersRepaired) io.out(`  counter ${line}`);
  return outcome(legacy, 'they are kept');
}

if (require.main === module)
  runMain(
    main,
    HELP,
    'what was imported so far is kept; run the same command again to complete the import (it adds only what is missing and counts what this run left uncounted)',
  );
