// Operator maintenance of the data module: bulk import (migration), backup and restore, summary and
// counter checks and repairs. Only simple operations (find, bulkWrite, deleteMany, countDocuments),
// so it runs on Cosmos DB, MongoDB and FerretDB alike.
import {
  BSON,
  MongoBulkWriteError,
  type AnyBulkWriteOperation,
  type Collection,
  type Db,
  type Document,
  type WriteError,
} from 'mongodb';
import { isDuplicateKey, withRetry } from './client';
import { COLLECTIONS, type CollectionName } from './indexes';
import { STATUS_RANK, type MessageDoc } from './messages';
import { dayId, dayKey, TOTALS_ID, type StatsDoc } from './stats';
import { prefixTerms } from './terms';
import type { Direction } from './types';
import { preview, searchKeysFor, userIdFor, type UserDoc } from './users';

export { userIdFor } from './users';

/** Anything holding the database handle (a DataStore). */
export interface HasDb {
  readonly db: Db;
}

const users = (s: HasDb): Collection<UserDoc> => s.db.collection<UserDoc>(COLLECTIONS.users);
const messages = (s: HasDb): Collection<MessageDoc> => s.db.collection<MessageDoc>(COLLECTIONS.messages);

/** Stats totals as maintenance sees them: the running totals plus the record of retention runs. */
export interface TotalsDoc extends StatsDoc {
  retentionRuns?: number;
  lastRetentionAt?: Date;
}
const stats = (s: HasDb): Collection<TotalsDoc> => s.db.collection<TotalsDoc>(COLLECTIONS.stats);

// ---------------------------------------------------------------------------------------------
// Bulk import (migration from the legacy SQLite bot)

export interface ImportedUser {
  readonly waId: string;
  readonly name: string | null;
  readonly createdAt: Date;
  readonly optedOut: boolean;
}

export interface ImportedMessage {
  readonly id: string;
  readonly userId: string;
  readonly waMessageId: string | null;
  readonly direction: Direction;
  readonly text: string;
  readonly createdAt: Date;
  /** Position in the user's conversation (our clock); default createdAt. Ties keep legacy order. */
  readonly seqAt?: Date;
}

/**
 * Inserts documents keyed by a natural `_id`; returns the indexes of those this call inserted.
 * A duplicate key means the document is already there (an earlier run, a concurrent writer).
 */
async function insertMissing<T extends Document & { _id: string }>(
  collection: Collection<T>,
  docs: readonly T[],
): Promise<Set<number>> {
  const all = new Set(docs.map((_, i) => i));
  if (docs.length === 0) return all;
  try {
    await withRetry(() =>
      collection.bulkWrite(
        docs.map((document) => ({ insertOne: { document } }) as AnyBulkWriteOperation<T>),
        { ordered: false },
      ),
    );
    return all;
  } catch (error) {
    if (error instanceof MongoBulkWriteError) {
      const errors = ([] as WriteError[]).concat(error.writeErrors);
      if (errors.every((e) => e.code === 11000)) {
        for (const e of errors) all.delete(e.index);
        return all;
      }
    }
    if (isDuplicateKey(error) && docs.length === 1) return new Set();
    throw error;
  }
}

type Delta = { inbound?: number; outbound?: number; newUsers?: number };

/** Adds to the totals and to each day's document in one bulk write. */
async function bumpCounters(store: HasDb, total: Delta, byDay: Map<string, Delta>): Promise<void> {
  const ops: AnyBulkWriteOperation<TotalsDoc>[] = [];
  const clean = (d: Delta): Record<string, number> =>
    Object.fromEntries(Object.entries(d).filter(([, v]) => typeof v === 'number' && v !== 0));
  const totalInc = clean(total);
  if (Object.keys(totalInc).length) {
    ops.push({ updateOne: { filter: { _id: TOTALS_ID }, update: { $inc: totalInc }, upsert: true } });
  }
  for (const [date, delta] of byDay) {
    const inc = clean(delta);
    if (!Object.keys(inc).length) continue;
    ops.push({
      updateOne: {
        filter: { _id: dayId(date) },
        update: { $inc: inc, $setOnInsert: { date } },
        upsert: true,
      },
    });
  }
  if (ops.length) await withRetry(() => stats(store).bulkWrite(ops, { ordered: true }));
}

const addTo = (map: Map<string, Delta>, date: string, key: keyof Delta, n = 1): void => {
  const d = map.get(date) ?? {};
  d[key] = (d[key] ?? 0) + n;
  map.set(date, d);
};

/** Inserts the users not stored yet; counts new users on the day they were created. */
export async function importUsers(
  store: HasDb,
  batch: readonly ImportedUser[],
): Promise<{ inserted: number }> {
  const docs: UserDoc[] = batch.map((u) => ({
    _id: userIdFor({ waId: u.waId, bsuid: null }),
    waId: u.waId,
    bsuid: null,
    name: u.name,
    createdAt: u.createdAt,
    lastMessageAt: u.createdAt,
    lastMessagePreview: null,
    lastMessageId: null,
    messageCount: 0,
    optedOut: u.optedOut,
    welcomeSentAt: null,
    contextResetAt: null,
    searchKeys: searchKeysFor(u.waId, u.name),
  }));
  const inserted = await insertMissing(users(store), docs);
  const byDay = new Map<string, Delta>();
  for (const i of inserted) {
    const doc = docs[i];
    if (doc) addTo(byDay, dayKey(doc.createdAt), 'newUsers');
  }
  await bumpCounters(store, { newUsers: inserted.size }, byDay);
  return { inserted: inserted.size };
}

/**
 * Inserts the messages not stored yet (given oldest first) and, for those only, updates the users'
 * summaries and the counters. Migrated inbound messages are never answered (`replyState: none`).
 */
export async function importMessages(
  store: HasDb,
  batch: readonly ImportedMessage[],
): Promise<{ inserted: number; inbound: number; outbound: number }> {
  const docs: MessageDoc[] = batch.map((m) => ({
    _id: m.id,
    userId: m.userId,
    waMessageId: m.waMessageId,
    direction: m.direction,
    type: 'text',
    text: m.text,
    status: m.direction === 'inbound' ? 'received' : 'sent',
    statusRank: m.direction === 'inbound' ? STATUS_RANK.received : STATUS_RANK.sent,
    createdAt: m.createdAt,
    seqAt: m.seqAt ?? m.createdAt,
    role: 'conversation',
    phoneNumberId: null,
    terms: prefixTerms(m.text),
    relatedId: null,
    replyState: m.direction === 'inbound' ? 'none' : null,
    error: null,
    ai: null,
  }));
  const inserted = await insertMissing(messages(store), docs);
  const total = { inbound: 0, outbound: 0 };
  const byDay = new Map<string, Delta>();
  const perUser = new Map<string, { count: number; last: ImportedMessage }>();
  batch.forEach((m, i) => {
    if (!inserted.has(i)) return;
    total[m.direction]++;
    addTo(byDay, dayKey(m.createdAt), m.direction);
    const summary = perUser.get(m.userId);
    // Given in order, so the later one is the last (ties on createdAt keep the order given).
    if (summary) {
      summary.count++;
      summary.last = m;
    } else perUser.set(m.userId, { count: 1, last: m });
  });
  if (perUser.size) {
    const entries = [...perUser];
    await withRetry(() =>
      users(store).bulkWrite(
        entries.map(([userId, s]) => ({
          updateOne: {
            filter: { _id: userId },
            update: { $inc: { messageCount: s.count }, $max: { lastMessageAt: s.last.createdAt } },
          },
        })),
        { ordered: false },
      ),
    );
    // The preview follows the latest message (a message older than the user's creation still
    // becomes the preview of a user who has none).
    await withRetry(() =>
      users(store).bulkWrite(
        entries.map(([userId, s]) => ({
          updateOne: {
            filter: {
              _id: userId,
              $or: [{ lastMessageId: null }, { lastMessageAt: { $lte: s.last.createdAt } }],
            },
            update: { $set: { lastMessagePreview: preview(s.last.text), lastMessageId: s.last.id } },
          },
        })),
        { ordered: false },
      ),
    );
  }
  await bumpCounters(store, total, byDay);
  return { inserted: inserted.size, ...total };
}

// ---------------------------------------------------------------------------------------------
// Backup and restore

export const BACKUP_FORMAT = 'whatsapp-bot-backup';
export const BACKUP_VERSION = 1;
export const BACKUP_COLLECTIONS: readonly CollectionName[] = Object.values(COLLECTIONS);

export interface BackupHeader {
  format: typeof BACKUP_FORMAT;
  version: typeof BACKUP_VERSION;
  createdAt: Date;
  collections: Record<string, number>;
}

/** Extended JSON, canonical, so dates, numbers and binaries round-trip exactly. */
export const toEjsonLine = (value: unknown): string => BSON.EJSON.stringify(value, { relaxed: false });
export const fromEjsonLine = (line: string): unknown => BSON.EJSON.parse(line, { relaxed: false });
/** A line read as the document schemas check it: numbers as JavaScript numbers, dates as Date. */
export const fromEjsonLineRelaxed = (line: string): unknown => BSON.EJSON.parse(line, { relaxed: true });

export async function countCollections(store: HasDb): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (const name of BACKUP_COLLECTIONS) {
    counts[name] = await withRetry(() => store.db.collection(name).countDocuments({}));
  }
  return counts;
}

/** Every document of a collection, in `_id` order. */
export async function* readCollection(store: HasDb, name: string): AsyncGenerator<Document> {
  const cursor = store.db.collection(name).find({}).sort({ _id: 1 }).batchSize(500);
  try {
    for await (const doc of cursor) yield doc;
  } finally {
    await cursor.close();
  }
}

/** Writes documents back: replace by `_id`, or insert. Running it twice changes nothing. */
export async function restoreDocuments(store: HasDb, name: string, docs: readonly Document[]): Promise<void> {
  if (!docs.length) return;
  // Ids are whatever the backup holds (strings here); typed as strings only for the driver's types.
  type Keyed = Document & { _id: string };
  await withRetry(() =>
    store.db.collection<Keyed>(name).bulkWrite(
      docs.map((doc) => {
        const keyed = doc as Keyed;
        return { replaceOne: { filter: { _id: keyed._id }, replacement: keyed, upsert: true } };
      }),
      { ordered: false },
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Consistency of summaries and counters with the stored documents

export interface StoredCounts {
  users: number;
  inbound: number;
  outbound: number;
  failed: number;
  aiRequests: number;
  aiTokens: number;
  /** Per UTC day: messages by direction and users created. */
  days: Map<string, { inbound: number; outbound: number; newUsers: number }>;
  /** Per user: how many messages and the latest (createdAt, _id). */
  perUser: Map<string, { count: number; lastAt: Date; lastId: string }>;
}

/** One pass over users and messages (projected) counting what is stored. */
export async function countStored(store: HasDb, onProgress?: (done: number) => void): Promise<StoredCounts> {
  const counts: StoredCounts = {
    users: 0,
    inbound: 0,
    outbound: 0,
    failed: 0,
    aiRequests: 0,
    aiTokens: 0,
    days: new Map(),
    perUser: new Map(),
  };
  const day = (d: string) => {
    let v = counts.days.get(d);
    if (!v) counts.days.set(d, (v = { inbound: 0, outbound: 0, newUsers: 0 }));
    return v;
  };
  let done = 0;
  for await (const u of users(store)
    .find({}, { projection: { createdAt: 1 } })
    .batchSize(1000)) {
    counts.users++;
    if (u.createdAt instanceof Date) day(dayKey(u.createdAt)).newUsers++;
    if (++done % 1000 === 0) onProgress?.(done);
  }
  const projection = { userId: 1, direction: 1, createdAt: 1, status: 1, 'ai.totalTokens': 1 };
  for await (const m of messages(store).find({}, { projection }).batchSize(1000)) {
    if (++done % 1000 === 0) onProgress?.(done);
    if (!m.userId || !m.direction || !(m.createdAt instanceof Date)) continue; // status placeholder
    counts[m.direction]++;
    day(dayKey(m.createdAt))[m.direction]++;
    if (m.direction === 'outbound') {
      if (m.status === 'failed') counts.failed++;
      if (m.ai) {
        counts.aiRequests++;
        counts.aiTokens += m.ai.totalTokens ?? 0;
      }
    }
    const s = counts.perUser.get(m.userId);
    if (!s) counts.perUser.set(m.userId, { count: 1, lastAt: m.createdAt, lastId: m._id });
    else {
      s.count++;
      const t = m.createdAt.getTime();
      if (t > s.lastAt.getTime() || (t === s.lastAt.getTime() && m._id > s.lastId)) {
        s.lastAt = m.createdAt;
        s.lastId = m._id;
      }
    }
  }
  onProgress?.(done);
  return counts;
}

export interface SummaryProblem {
  userId: string;
  problem: string;
}

/** Users whose summary disagrees with their stored messages. */
export async function checkSummaries(store: HasDb, counts: StoredCounts): Promise<SummaryProblem[]> {
  const problems: SummaryProblem[] = [];
  const seen = new Set<string>();
  const projection = { messageCount: 1, lastMessageAt: 1, lastMessageId: 1 };
  for await (const u of users(store).find({}, { projection }).batchSize(1000)) {
    seen.add(u._id);
    const s = counts.perUser.get(u._id);
    const count = s?.count ?? 0;
    if (u.messageCount !== count) {
      problems.push({ userId: u._id, problem: `messageCount ${String(u.messageCount)}, stored ${count}` });
    }
    if (!s) {
      if (u.lastMessageId)
        problems.push({ userId: u._id, problem: 'lastMessageId set but no messages stored' });
      continue;
    }
    if (!(u.lastMessageAt instanceof Date) || u.lastMessageAt.getTime() < s.lastAt.getTime()) {
      problems.push({ userId: u._id, problem: 'lastMessageAt before the latest stored message' });
    } else if (u.lastMessageId !== s.lastId) {
      // Ties on createdAt: any message at the latest time is a correct "last message".
      const last = u.lastMessageId
        ? await withRetry(() =>
            messages(store).findOne(
              { _id: u.lastMessageId as string },
              { projection: { createdAt: 1, userId: 1 } },
            ),
          )
        : null;
      if (!last || last.userId !== u._id || last.createdAt?.getTime() !== s.lastAt.getTime()) {
        problems.push({ userId: u._id, problem: 'lastMessageId is not the latest stored message' });
      }
    }
  }
  for (const userId of counts.perUser.keys()) {
    if (!seen.has(userId))
      problems.push({ userId, problem: 'messages stored for a user that does not exist' });
  }
  return problems;
}

/** Rebuilds the summaries of the given users from their messages; returns how many changed. */
export async function repairSummaries(
  store: HasDb,
  counts: StoredCounts,
  userIds: Iterable<string>,
): Promise<number> {
  let changed = 0;
  for (const userId of new Set(userIds)) {
    const s = counts.perUser.get(userId);
    let set: Partial<UserDoc>;
    if (!s) set = { messageCount: 0, lastMessagePreview: null, lastMessageId: null };
    else {
      const last = await withRetry(() =>
        messages(store).findOne({ _id: s.lastId }, { projection: { text: 1 } }),
      );
      set = {
        messageCount: s.count,
        lastMessageAt: s.lastAt,
        lastMessagePreview: preview(last?.text ?? ''),
        lastMessageId: s.lastId,
      };
    }
    const result = await withRetry(() => users(store).updateOne({ _id: userId }, { $set: set }));
    changed += result.modifiedCount;
  }
  return changed;
}

export interface CounterProblem {
  counter: string;
  value: number;
  stored: number;
}

export async function readTotals(store: HasDb): Promise<TotalsDoc | null> {
  return withRetry(() => stats(store).findOne({ _id: TOTALS_ID }));
}

/** Counters below what is stored (running totals may exceed it after retention, never go below). */
export async function checkCounters(store: HasDb, counts: StoredCounts): Promise<CounterProblem[]> {
  const totals = (await readTotals(store)) ?? { _id: TOTALS_ID };
  const problems: CounterProblem[] = [];
  const check = (counter: string, value: number | undefined, stored: number) => {
    if ((value ?? 0) < stored) problems.push({ counter, value: value ?? 0, stored });
  };
  check('inbound', totals.inbound, counts.inbound);
  check('outbound', totals.outbound, counts.outbound);
  check('failed', totals.failed, counts.failed);
  check('newUsers', totals.newUsers, counts.users);
  check('aiRequests', totals.aiRequests, counts.aiRequests);
  check('aiTokens', totals.aiTokens, counts.aiTokens);
  const dayDocs = await withRetry(() =>
    stats(store)
      .find({ _id: { $in: [...counts.days.keys()].map(dayId) } })
      .toArray(),
  );
  const byId = new Map(dayDocs.map((d) => [d._id, d]));
  for (const [date, stored] of [...counts.days].sort(([a], [b]) => a.localeCompare(b))) {
    const doc = byId.get(dayId(date));
    check(`${date}.inbound`, doc?.inbound, stored.inbound);
    check(`${date}.outbound`, doc?.outbound, stored.outbound);
    check(`${date}.newUsers`, doc?.newUsers, stored.newUsers);
  }
  return problems;
}

/**
 * Counters from the stored documents. Without a retention run they are rebuilt exactly (totals and
 * every day); after one, deleted messages can no longer be counted, so counters are only raised
 * to what is stored. Returns a line per counter changed.
 */
export async function repairCounters(store: HasDb, counts: StoredCounts): Promise<string[]> {
  const totals = (await readTotals(store)) ?? { _id: TOTALS_ID };
  const exact = !totals.retentionRuns;
  const changes: string[] = [];
  const wanted: Record<string, number> = {
    inbound: counts.inbound,
    outbound: counts.outbound,
    failed: counts.failed,
    newUsers: counts.users,
    aiRequests: counts.aiRequests,
    aiTokens: counts.aiTokens,
  };
  const totalSet: Record<string, number> = {};
  for (const [key, stored] of Object.entries(wanted)) {
    const value = (totals as unknown as Record<string, number | undefined>)[key] ?? 0;
    if (exact ? value !== stored : value < stored) {
      totalSet[key] = stored;
      changes.push(`totals.${key}: ${value} → ${stored}`);
    }
  }
  const ops: AnyBulkWriteOperation<TotalsDoc>[] = [];
  if (Object.keys(totalSet).length)
    ops.push({ updateOne: { filter: { _id: TOTALS_ID }, update: { $set: totalSet }, upsert: true } });
  const dayDocs = await withRetry(() =>
    stats(store)
      .find({ _id: { $regex: '^day:' } })
      .toArray(),
  );
  const byDate = new Map(dayDocs.map((d) => [d._id.slice(4), d]));
  const dates = new Set([...counts.days.keys(), ...(exact ? byDate.keys() : [])]);
  for (const date of [...dates].sort()) {
    const doc = byDate.get(date);
    const stored = counts.days.get(date) ?? { inbound: 0, outbound: 0, newUsers: 0 };
    const set: Record<string, number> = {};
    for (const key of ['inbound', 'outbound', 'newUsers'] as const) {
      const value = doc?.[key] ?? 0;
      if (exact ? value !== stored[key] : value < stored[key]) {
        set[key] = stored[key];
        changes.push(`${date}.${key}: ${value} → ${stored[key]}`);
      }
    }
    if (Object.keys(set).length) {
      ops.push({
        updateOne: { filter: { _id: dayId(date) }, update: { $set: { ...set, date } }, upsert: true },
      });
    }
  }
  if (ops.length) await withRetry(() => stats(store).bulkWrite(ops, { ordered: true }));
  return changes;
}
