// npm run migrate -- <legacy.db> [--dry-run]: moves the previous version's SQLite data (SQLModel
// tables `user` and `message`) into the document database. Idempotent: documents are keyed by
// natural ids (a message without a WhatsApp id by a hash of its user, time and content), counters
// grow for documents this run inserted, and what an interrupted run left uncounted is counted.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import initSqlJs, { type Database, type SqlValue } from 'sql.js';
import { MAX_TEXT, userIdFor, type DataStore, type ImportedMessage, type ImportedUser } from '../shared/data';
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
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run migrate -- <legacy.db> [--dry-run] [--batch-size N]

Moves the users and messages of the previous (SQLite) version of the bot into the database
(MONGODB_URI, else the embedded database of \`npm run dev\`; MONGODB_DATABASE, default
whatsapp_chatbot). Running it again changes nothing.

  --dry-run         read and report; write nothing
  --batch-size N    documents per bulk write (default 500)
  -h, --help        this help

Exit code: 0 on success, 1 on failure (unreadable file, database error), 2 on bad arguments.
`;

export interface LegacyMessage extends ImportedMessage {
  /** The key an earlier version gave a message without a WhatsApp id (`legacy:<row>`), if any. */
  readonly oldKey: string | null;
}

export interface LegacyData {
  users: ImportedUser[];
  messages: LegacyMessage[];
  report: {
    legacyUsers: number;
    legacyMessages: number;
    /** Legacy users whose numbers normalise to one already seen (merged into it). */
    mergedUsers: number;
    /** Users without a number within bounds (skipped; their messages count as orphans). */
    invalidUsers: number;
    /** Users sharing a legacy id with another (a schema without a primary key): their messages are skipped. */
    ambiguousUsers: number;
    /** Names cut to the bound the webhook keeps. */
    namesCut: number;
    /** Users whose creation date was unreadable: the time of their first message instead. */
    userDatesReplaced: number;
    duplicates: number;
    /** Messages whose user is missing, NULL, unknown, skipped or ambiguous. */
    orphans: number;
    /** Rows with an unknown role or an unreadable date. */
    invalidMessages: number;
    /** Legacy row ids of the skipped messages (orphans and invalid rows), as found; `?` for none. */
    skippedRows: string[];
    /** WhatsApp ids out of bounds: the message is kept under a derived key, without that id. */
    idsOutOfBounds: number;
    /** Texts longer than the bound the webhook keeps (cut to it). */
    textsCut: number;
    /** Binary (BLOB) contents read as UTF-8. */
    binaryTexts: number;
    /** Times in the future replaced by the time of the migration (the webhook's rule). */
    futureTimes: number;
    inbound: number;
    outbound: number;
  };
}

const DATETIME =
  /^(\d{4})([-/])(\d{2})\2(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/** Epoch integers below this are seconds, from it on milliseconds (1e11 s is the year 5138). */
const EPOCH_MS_FROM = 1e11;

/**
 * A SQLite DATETIME as SQLAlchemy writes it: `YYYY-MM-DD HH:MM:SS[.ffffff]`, also with `T`,
 * without seconds or fractions, with an offset, or with `/` for `-`; or an integer of epoch seconds
 * (milliseconds from 1e11), as a number or digits. Naive times are UTC. Precision: milliseconds
 * (further digits are truncated, as a JavaScript Date cannot hold them). Day-first or month-first
 * dates (`01/02/2024`) are ambiguous and refused, as are fractions and years before 1970.
 */
export function parseLegacyDate(value: SqlValue | undefined): Date | null {
  if (typeof value === 'number' || (typeof value === 'string' && /^\s*\d{1,16}\s*$/.test(value))) {
    const n = Number(value);
    if (!Number.isSafeInteger(n) || n <= 0) return null;
    return new Date(n < EPOCH_MS_FROM ? n * 1000 : n);
  }
  if (typeof value !== 'string') return null;
  const m = DATETIME.exec(value.trim());
  if (!m) return null;
  const [, y, , mo, d, h = '0', mi = '0', s = '0', frac = '', zone] = m;
  if (Number(y) < 1970) return null;
  const ms = Number(frac.slice(0, 3).padEnd(3, '0'));
  let time = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s), ms);
  if (zone && zone.toUpperCase() !== 'Z') {
    const sign = zone.startsWith('-') ? -1 : 1;
    const digits = zone.slice(1).replace(':', '');
    const offset = Number(digits.slice(0, 2)) * 60 + Number(digits.slice(2, 4) || '0');
    time -= sign * offset * 60_000;
  }
  const date = new Date(time);
  // Reject impossible calendar values (2024-02-31) instead of rolling them over.
  if (Number.isNaN(time) || (!zone && date.getUTCDate() !== Number(d))) return null;
  return date;
}

/** A legacy phone number as WhatsApp digits, by the webhook's rule (`digitsOfNumber`). */
export const legacyWaId = (value: SqlValue | undefined): string | null => digitsOfNumber(value);

/** A legacy integer id (user or row), or null (NULL, text, fraction). */
const legacyId = (value: SqlValue | undefined): number | null =>
  typeof value === 'number' && Number.isSafeInteger(value) ? value : null;

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

function rows(db: Database, sql: string): Record<string, SqlValue>[] {
  const statement = db.prepare(sql);
  const out: Record<string, SqlValue>[] = [];
  try {
    while (statement.step()) out.push(statement.getAsObject());
  } finally {
    statement.free();
  }
  return out;
}

/** Reads and maps the legacy database: users (by new id), messages in legacy order, and counts. */
export async function readLegacy(file: string, now = new Date()): Promise<LegacyData> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'it is a directory'
          : code === 'EACCES'
            ? 'permission denied'
            : (code ?? 'unreadable');
    throw new ScriptError(`cannot read the legacy database ${path.basename(file)}: ${reason}`);
  }
  const SQL = await initSqlJs();
  let db: Database;
  try {
    db = new SQL.Database(bytes);
  } catch {
    throw new ScriptError(`${path.basename(file)} is not a SQLite database`);
  }
  try {
    let tables: string[];
    try {
      tables = rows(db, "SELECT name FROM sqlite_master WHERE type = 'table'").map((r) => String(r['name']));
    } catch {
      throw new ScriptError(`${path.basename(file)} is not a SQLite database`);
    }
    for (const table of ['user', 'message']) {
      if (!tables.includes(table)) {
        throw new ScriptError(
          `${path.basename(file)} is not a database of the previous version (no table "${table}")`,
        );
      }
    }
    let legacyUsers: Record<string, SqlValue>[];
    let legacyMessages: Record<string, SqlValue>[];
    try {
      legacyUsers = rows(
        db,
        'SELECT id, phone_number, name, is_active, created_at, updated_at FROM "user" ORDER BY id',
      );
      legacyMessages = rows(
        db,
        'SELECT id, user_id, role, content, meta_message_id, created_at FROM "message"',
      );
    } catch (error) {
      throw new ScriptError(
        `unexpected legacy schema: ${error instanceof Error ? error.message : String(error)}`,
      );
    }
    return mapLegacy(legacyUsers, legacyMessages, now);
  } finally {
    db.close();
  }
}

/** A time as stored: one in the future becomes `now`, the webhook's rule (`settleTime`). */
function settled(at: Date, now: Date, report: LegacyData['report']): Date {
  const result = settleTime(at.getTime() / 1000, now);
  if (result === now) report.futureTimes++;
  return result;
}

function textOf(value: SqlValue | undefined, report: LegacyData['report']): string {
  if (value === null || value === undefined) return '';
  if (value instanceof Uint8Array) {
    report.binaryTexts++;
    return new TextDecoder('utf-8').decode(value);
  }
  return String(value);
}

function mapLegacy(
  legacyUsers: Record<string, SqlValue>[],
  legacyMessages: Record<string, SqlValue>[],
  now: Date,
): LegacyData {
  const report: LegacyData['report'] = {
    legacyUsers: legacyUsers.length,
    legacyMessages: legacyMessages.length,
    mergedUsers: 0,
    invalidUsers: 0,
    ambiguousUsers: 0,
    namesCut: 0,
    userDatesReplaced: 0,
    duplicates: 0,
    orphans: 0,
    invalidMessages: 0,
    skippedRows: [],
    idsOutOfBounds: 0,
    textsCut: 0,
    binaryTexts: 0,
    futureTimes: 0,
    inbound: 0,
    outbound: 0,
  };
  const rowName = (row: Record<string, SqlValue>): string => {
    const id = legacyId(row['id']);
    return id === null ? '?' : String(id);
  };
  // A legacy id held by two rows (no primary key) names no one for sure: its messages are skipped.
  const legacyIds = new Map<number, number>();
  for (const row of legacyUsers) {
    const id = legacyId(row['id']);
    if (id !== null) legacyIds.set(id, (legacyIds.get(id) ?? 0) + 1);
  }
  const ambiguous = new Set([...legacyIds].filter(([, n]) => n > 1).map(([id]) => id));
  const userIdByLegacy = new Map<number, string>();
  const users = new Map<string, { user: ImportedUser; datedByMessage: boolean }>();
  for (const row of legacyUsers) {
    const waId = legacyWaId(row['phone_number']);
    if (!waId) {
      report.invalidUsers++;
      continue;
    }
    const id = userIdFor({ waId, bsuid: null });
    const legacy = legacyId(row['id']);
    if (legacy !== null && !ambiguous.has(legacy)) userIdByLegacy.set(legacy, id);
    if (users.has(id)) {
      report.mergedUsers++;
      continue;
    }
    const raw = typeof row['name'] === 'string' ? row['name'] : null;
    const name = nameOf(raw);
    if (raw !== null && raw.trim().length > MAX_NAME && name?.length === MAX_NAME) report.namesCut++;
    const dated = parseLegacyDate(row['created_at']) ?? parseLegacyDate(row['updated_at']);
    users.set(id, {
      user: {
        waId,
        name,
        createdAt: dated ? settled(dated, now, report) : now,
        optedOut: isFalse(row['is_active']),
      },
      datedByMessage: !dated,
    });
  }
  report.ambiguousUsers = [...legacyUsers].filter((r) => {
    const id = legacyId(r['id']);
    return id !== null && ambiguous.has(id);
  }).length;

  // keyAt: the time as the file has it (a future one is replaced by now, which changes every run).
  const parsed: { row: number | null; position: number; keyAt: Date; m: Omit<LegacyMessage, 'id'> }[] = [];
  legacyMessages.forEach((row, position) => {
    const parsedAt = parseLegacyDate(row['created_at']);
    const role = typeof row['role'] === 'string' ? row['role'].trim().toLowerCase() : null;
    if (!parsedAt || (role !== 'user' && role !== 'assistant')) {
      report.invalidMessages++;
      report.skippedRows.push(rowName(row));
      return;
    }
    const legacyUser = legacyId(row['user_id']);
    const userId = legacyUser === null ? undefined : userIdByLegacy.get(legacyUser);
    if (!userId) {
      report.orphans++;
      report.skippedRows.push(rowName(row));
      return;
    }
    const rowId = legacyId(row['id']);
    const given = typeof row['meta_message_id'] === 'string' ? row['meta_message_id'].trim() : '';
    const meta = MESSAGE_ID.test(given) ? given : null;
    if (given && !meta) report.idsOutOfBounds++;
    const text = textOf(row['content'], report);
    if (text.length > MAX_TEXT) report.textsCut++;
    parsed.push({
      row: rowId,
      position,
      keyAt: parsedAt,
      m: {
        oldKey: meta === null && rowId !== null ? `legacy:${rowId}` : null,
        userId,
        waMessageId: meta,
        direction: role === 'user' ? 'inbound' : 'outbound',
        text: text.slice(0, MAX_TEXT),
        createdAt: settled(parsedAt, now, report),
      },
    });
  });
  // Legacy order: by created_at, then row id (the text of mixed formats does not sort by time),
  // then the order read.
  parsed.sort(
    (a, b) =>
      a.m.createdAt.getTime() - b.m.createdAt.getTime() ||
      (a.row ?? Infinity) - (b.row ?? Infinity) ||
      a.position - b.position,
  );
  const waIdOf = new Map([...users].map(([id, u]) => [id, u.user.waId]));
  const seen = new Set<string>();
  const messages: LegacyMessage[] = [];
  // A user's messages at the same instant keep the legacy order in the conversation (seqAt, the
  // order the AI history reads), one millisecond apart; createdAt stays exact.
  const lastSeq = new Map<string, number>();
  for (const { row, keyAt, m } of parsed) {
    const id = m.waMessageId ?? derivedKey(waIdOf.get(m.userId) ?? '', keyAt, m.direction, row, m.text);
    if (seen.has(id)) {
      report.duplicates++;
      continue;
    }
    seen.add(id);
    // A user whose creation date was unreadable was created with their first message.
    const owner = users.get(m.userId);
    if (owner?.datedByMessage) {
      owner.datedByMessage = false;
      owner.user = { ...owner.user, createdAt: m.createdAt };
      report.userDatesReplaced++;
    }
    const seq = Math.max(m.createdAt.getTime(), (lastSeq.get(m.userId) ?? -Infinity) + 1);
    lastSeq.set(m.userId, seq);
    messages.push({ ...m, id, ...(seq === m.createdAt.getTime() ? {} : { seqAt: new Date(seq) }) });
    report[m.direction]++;
  }
  for (const u of users.values()) if (u.datedByMessage) report.userDatesReplaced++;
  return { users: [...users.values()].map((u) => u.user), messages, report };
}

/**
 * Messages an earlier version of this script migrated under `legacy:<row>` keep that key when the
 * stored message is this row's (same user, direction and time), so running this version over a
 * file the earlier one migrated changes nothing; any other row gets its derived key.
 */
async function keepEarlierKeys(store: DataStore, messages: LegacyMessage[]): Promise<number> {
  const used = new Set(messages.map((m) => m.id));
  let kept = 0;
  for (let i = 0; i < messages.length; i += 500) {
    const batch = messages.slice(i, i + 500);
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
      messages[i + j] = { ...m, id: m.oldKey };
      kept++;
    });
  }
  return kept;
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
  const file = positionals[0];
  if (!file) throw new UsageError('the legacy database file is required: npm run migrate -- <legacy.db>');
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  const started = Date.now();
  io.err(`reading ${path.basename(file)}…`);
  const legacy = await readLegacy(file);
  const r = legacy.report;
  const common: [string, string | number][] = [
    ['legacy users', r.legacyUsers],
    ['legacy messages', r.legacyMessages],
    ['users', legacy.users.length],
    ['messages', legacy.messages.length],
    ['inbound', r.inbound],
    ['outbound', r.outbound],
    ['duplicates skipped', r.duplicates],
    ['orphans skipped', r.orphans],
    ['invalid messages skipped', r.invalidMessages],
    ['skipped rows (legacy message ids)', listed(r.skippedRows)],
    ['users without a valid number skipped', r.invalidUsers],
    ['users sharing a legacy id (their messages skipped)', r.ambiguousUsers],
    ['users merged (same number)', r.mergedUsers],
    ['user dates from the first message', r.userDatesReplaced],
    ['names cut', r.namesCut],
    ['texts cut', r.textsCut],
    ['binary texts read as UTF-8', r.binaryTexts],
    ['message ids out of bounds (derived key used)', r.idsOutOfBounds],
    ['future times replaced', r.futureTimes],
  ];
  if (values['dry-run']) {
    printSummary(io, 'migration (dry run: nothing written)', [...common, ['time', seconds(started)]]);
    return 0;
  }
  const written = await withDataStore(env, io, async (store) => {
    await store.ensureIndexes('create');
    const earlierKeys = await keepEarlierKeys(store, legacy.messages);
    const total = legacy.users.length + legacy.messages.length;
    const bar = progress(io, 'migrating', total);
    let done = 0;
    let usersInserted = 0;
    const messagesInserted = { inserted: 0, inbound: 0, outbound: 0 };
    for (let i = 0; i < legacy.users.length; i += batchSize) {
      const batch = legacy.users.slice(i, i + batchSize);
      usersInserted += (await store.maintenance.importUsers(batch)).inserted;
      bar.update((done += batch.length));
    }
    for (let i = 0, n = 0; i < legacy.messages.length; i += batchSize, n++) {
      const batch = legacy.messages.slice(i, i + batchSize).map(({ oldKey: _oldKey, ...m }) => m);
      const afterInsert = hooks.afterInsert;
      const result = await store.maintenance.importMessages(
        batch,
        afterInsert ? () => afterInsert(n) : undefined,
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
      legacy.users.map((u) => userIdFor({ waId: u.waId, bsuid: null })),
      (n) => checking.update(n),
    );
    checking.done();
    return { usersInserted, earlierKeys, ...messagesInserted, ...settled };
  });
  printSummary(io, 'migration done', [
    ...common,
    ['users inserted', written.usersInserted],
    ['messages inserted', written.inserted],
    ['inbound inserted', written.inbound],
    ['outbound inserted', written.outbound],
    [
      'already migrated',
      legacy.users.length + legacy.messages.length - written.usersInserted - written.inserted,
    ],
    ['messages under an earlier version’s key', written.earlierKeys],
    ['summaries rebuilt (left by an interrupted run)', written.summariesRebuilt],
    ['counters repaired (left by an interrupted run)', written.countersRepaired.length],
    ['time', seconds(started)],
  ]);
  for (const line of written.countersRepaired) io.out(`  counter ${line}`);
  return 0;
}

if (require.main === module)
  runMain(
    main,
    HELP,
    'what was imported so far is kept; run the same command again to complete the import (it adds only what is missing and counts what this run left uncounted)',
  );
