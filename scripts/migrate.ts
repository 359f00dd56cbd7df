// npm run migrate -- <legacy.db> [--dry-run]: moves the previous version's SQLite data (SQLModel
// tables `user` and `message`) into the document database. Idempotent: documents are keyed by
// natural ids and counters only grow for documents this run inserted.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import initSqlJs, { type Database, type SqlValue } from 'sql.js';
import { userIdFor, type ImportedMessage, type ImportedUser } from '../shared/data';
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

export interface LegacyData {
  users: ImportedUser[];
  messages: ImportedMessage[];
  report: {
    legacyUsers: number;
    legacyMessages: number;
    /** Legacy users whose numbers normalise to one already seen (merged into it). */
    mergedUsers: number;
    /** Users without a usable phone number (their messages count as orphans). */
    invalidUsers: number;
    duplicates: number;
    orphans: number;
    /** Rows with an unknown role or an unreadable date. */
    invalidMessages: number;
    inbound: number;
    outbound: number;
  };
}

const DATETIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?\s*(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/**
 * A SQLite DATETIME as SQLAlchemy writes it: `YYYY-MM-DD HH:MM:SS[.ffffff]`, also with `T`,
 * without seconds or fractions, or with an offset. Naive times are UTC. Precision: milliseconds
 * (further digits are truncated, as a JavaScript Date cannot hold them).
 */
export function parseLegacyDate(value: SqlValue | undefined): Date | null {
  if (typeof value !== 'string') return null;
  const m = DATETIME.exec(value.trim());
  if (!m) return null;
  const [, y, mo, d, h = '0', mi = '0', s = '0', frac = '', zone] = m;
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

const isFalse = (value: SqlValue | undefined): boolean =>
  value === 0 || value === '0' || (typeof value === 'string' && /^(false|f|no)$/i.test(value.trim()));

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
export async function readLegacy(file: string): Promise<LegacyData> {
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
    return mapLegacy(legacyUsers, legacyMessages);
  } finally {
    db.close();
  }
}

function mapLegacy(
  legacyUsers: Record<string, SqlValue>[],
  legacyMessages: Record<string, SqlValue>[],
): LegacyData {
  const report: LegacyData['report'] = {
    legacyUsers: legacyUsers.length,
    legacyMessages: legacyMessages.length,
    mergedUsers: 0,
    invalidUsers: 0,
    duplicates: 0,
    orphans: 0,
    invalidMessages: 0,
    inbound: 0,
    outbound: 0,
  };
  const userIdByLegacy = new Map<number, string>();
  const users = new Map<string, ImportedUser>();
  for (const row of legacyUsers) {
    const waId = String(row['phone_number'] ?? '').replace(/\D/g, '');
    if (!waId) {
      report.invalidUsers++;
      continue;
    }
    const id = userIdFor({ waId, bsuid: null });
    userIdByLegacy.set(Number(row['id']), id);
    if (users.has(id)) {
      report.mergedUsers++;
      continue;
    }
    const name = typeof row['name'] === 'string' && row['name'].trim() !== '' ? row['name'] : null;
    users.set(id, {
      waId,
      name,
      createdAt: parseLegacyDate(row['created_at']) ?? parseLegacyDate(row['updated_at']) ?? new Date(0),
      optedOut: isFalse(row['is_active']),
    });
  }

  const parsed: (ImportedMessage & { row: number })[] = [];
  for (const row of legacyMessages) {
    const createdAt = parseLegacyDate(row['created_at']);
    const role = row['role'];
    if (!createdAt || (role !== 'user' && role !== 'assistant')) {
      report.invalidMessages++;
      continue;
    }
    const userId = userIdByLegacy.get(Number(row['user_id']));
    if (!userId) {
      report.orphans++;
      continue;
    }
    const rowId = Number(row['id']);
    const meta =
      typeof row['meta_message_id'] === 'string' && row['meta_message_id'].trim()
        ? row['meta_message_id'].trim()
        : null;
    parsed.push({
      row: rowId,
      id: meta ?? `legacy:${rowId}`,
      userId,
      waMessageId: meta,
      direction: role === 'user' ? 'inbound' : 'outbound',
      text: row['content'] === null || row['content'] === undefined ? '' : String(row['content']),
      createdAt,
    });
  }
  // Legacy order: by created_at, then row id (the text of mixed formats does not sort by time).
  parsed.sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.row - b.row);
  const seen = new Set<string>();
  const messages: ImportedMessage[] = [];
  // A user's messages at the same instant keep the legacy order in the conversation (seqAt, the
  // order the AI history reads), one millisecond apart; createdAt stays exact.
  const lastSeq = new Map<string, number>();
  // The legacy row id stays on the object; only the mapped fields are written.
  for (const m of parsed) {
    if (seen.has(m.id)) {
      report.duplicates++;
      continue;
    }
    seen.add(m.id);
    const seq = Math.max(m.createdAt.getTime(), (lastSeq.get(m.userId) ?? -Infinity) + 1);
    lastSeq.set(m.userId, seq);
    messages.push(seq === m.createdAt.getTime() ? m : { ...m, seqAt: new Date(seq) });
    report[m.direction]++;
  }
  return { users: [...users.values()], messages, report };
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
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
    ['users without a number', r.invalidUsers],
    ['users merged (same number)', r.mergedUsers],
  ];
  if (values['dry-run']) {
    printSummary(io, 'migration (dry run: nothing written)', [...common, ['time', seconds(started)]]);
    return 0;
  }
  const written = await withDataStore(env, io, async (store) => {
    await store.ensureIndexes('create');
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
    for (let i = 0; i < legacy.messages.length; i += batchSize) {
      const batch = legacy.messages.slice(i, i + batchSize);
      const result = await store.maintenance.importMessages(batch);
      messagesInserted.inserted += result.inserted;
      messagesInserted.inbound += result.inbound;
      messagesInserted.outbound += result.outbound;
      bar.update((done += batch.length));
    }
    bar.done();
    return { usersInserted, ...messagesInserted };
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
    ['time', seconds(started)],
  ]);
  return 0;
}

if (require.main === module) runMain(main, HELP);
