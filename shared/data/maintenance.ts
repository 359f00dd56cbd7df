// Operator maintenance of the data module: bulk import (migration), backup and restore, summary and
// counter checks and repairs. Only simple operations (find, bulkWrite, deleteMany, countDocuments),
// so it runs on Cosmos DB, MongoDB and FerretDB alike. Summaries and counters go through the same
// rules as the webhook and reply paths (./summary, ./stats).
import { BSON, type AnyBulkWriteOperation, type Document, type Filter } from 'mongodb';
import { AppError } from '../errors';
import { checkStoredDocument, type StoredCollection } from './doc-schemas';
import { BulkWriteFailure, type Gateway } from './gateway';
import { AUDIT_KIND, MAX_ERASED_ITEMS, MAX_ERASED_MESSAGES, MAX_ERASED_SUBJECTS } from './events';
import { COLLECTIONS, type CollectionName } from './indexes';
import { countedAs } from './message-doc';
import { STATUS_RANK, storedText, type MessageDoc } from './messages';
import { CounterDelta, TOTALS_ID, type StatsDoc, type StatsRepository } from './stats';
import { placeOf, tallyMessage, type StoredTally, type SummaryMessage } from './summary';
import { RUN_TERMS_MARK, SPACELESS_TEXT_PATTERN, UNFOLDED_LETTER_PATTERN } from './terms';
import type { AiUsage, Direction, MessageRole } from './types';
import { searchKeysFor, type UserDoc, type UsersRepository } from './users';

/** What an erase's audit entry remembers (./erase `rememberer`), each list with its bound. */
const REMEMBERED = [
  ['erasedMessages', MAX_ERASED_MESSAGES],
  ['erasedSubjects', MAX_ERASED_SUBJECTS],
  ['erasedItems', MAX_ERASED_ITEMS],
] as const;

/**
 * A restore batch the server refused in part: how many of its documents were written, how many
 * refused, and why as a code (never the server's message: it may quote a document's value).
 */
export class RestoreWriteError extends Error {
  override readonly name = 'RestoreWriteError';
  constructor(
    readonly collection: string,
    readonly written: number,
    readonly refused: number,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${refused} document(s) of ${collection} refused (${reason})`, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Bulk import (migration from the legacy SQLite bot)

export interface ImportedUser {
  /** From `UsersRepository.idsForImport`: a stored user's id, else the one a first contact gets. */
  readonly id: string;
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
  // Seeded history (demo data, tests) may say more; migrated rows are plain conversation text.
  readonly type?: string;
  readonly role?: MessageRole;
  /** Outbound only: default `sent`. */
  readonly status?: 'sent' | 'failed' | 'not_sent' | 'delivered' | 'read';
  readonly ai?: AiUsage | null;
  readonly phoneNumberId?: string | null;
  readonly relatedId?: string | null;
}

export const BACKUP_FORMAT = 'whatsapp-bot-backup';
export const BACKUP_VERSION = 1;
/**
 * The collections of a backup, in the order it reads them. Messages before users: a user is never
 * deleted but by an erase, so every message read has its user in the users read after it (a
 * person who wrote first meanwhile too); a summary may then count a message stored after the
 * messages were read, and a restore rebuilds the summaries that disagree with the file's messages.
 */
export const BACKUP_COLLECTIONS: readonly CollectionName[] = [
  COLLECTIONS.messages,
  COLLECTIONS.users,
  ...Object.values(COLLECTIONS).filter((c) => c !== COLLECTIONS.messages && c !== COLLECTIONS.users),
];

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

export interface StoredCounts {
  users: number;
  /**
   * What the counters should hold, counted from the stored documents by the rule the writers use
   * (`CounterDelta`): totals, UTC days and AI models.
   */
  counters: CounterDelta;
  /** Per user: how many messages and the latest (seqAt or createdAt, _id). */
  perUser: Map<string, StoredTally>;
}

export interface SummaryProblem {
  userId: string;
  problem: string;
}

/** A counter and what the stored documents say it should hold. */
interface CounterRow {
  /** `inbound`, `2026-01-31.outbound`, `<model>.aiTokens`. */
  counter: string;
  scope: 'totals' | 'day' | 'model';
  /** The day or the model; '' for the totals. */
  id: string;
  key: string;
  /** As stored: a counter edited by hand may hold anything. */
  value: unknown;
  stored: number;
}

export interface CounterProblem {
  counter: string;
  /** The counter's value as stored (not always a number: see `isCount`). */
  value: unknown;
  stored: number;
}

/** A stored counter for a report: its number, or what kind of value stands in its place. */
export const describeCount = (value: unknown): string =>
  typeof value === 'number' ? String(value) : `${value === null ? 'null' : typeof value} (not a count)`;

/**
 * Versions before the terms' size budget (./terms) kept at most this many terms a message, so a
 * message holding exactly this many was most likely cut, and misses the words after the cut.
 */
const OLD_TERM_CAP = 400;

/** Messages whose terms an earlier rule made (`countStaleTerms`); `$regex` on literal ranges. */
const STALE_TERMS: Filter<MessageDoc> = {
  $or: [
    { terms: { $size: OLD_TERM_CAP } },
    { text: { $regex: SPACELESS_TEXT_PATTERN }, terms: { $ne: RUN_TERMS_MARK } },
    // Folded by lower case alone (ß, ς, ł, ø… kept): today's terms never hold them (`fold`).
    { terms: { $regex: UNFOLDED_LETTER_PATTERN } },
  ],
};

/** Users whose search keys an earlier rule made: a name holding such a run, or keys holding ß, ς, ł, ø…. */
const STALE_KEYS: Filter<UserDoc> = {
  $or: [
    { name: { $regex: SPACELESS_TEXT_PATTERN }, searchKeys: { $ne: RUN_TERMS_MARK } },
    { searchKeys: { $regex: UNFOLDED_LETTER_PATTERN } },
  ],
};

/** A literal text as a regular expression that matches it (its special characters escaped). */
const escapeRegex = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** A counter's value as the writers keep it: a whole number, never negative. */
const isCount = (value: unknown): value is number =>
  typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;

type AnyDoc = Document & { _id: string };

/** Refuses a batch holding a document the schemas (and Cosmos DB's 2 MB) would refuse; names the field. */
function checkImported(collection: StoredCollection, docs: readonly Document[]): void {
  docs.forEach((doc, i) => {
    const problem = checkStoredDocument(collection, doc);
    if (problem) {
      throw new AppError('INVALID_INPUT', `${collection} document ${i + 1} of the batch: ${problem}`);
    }
  });
}

/** What an import changed in the summaries and counters after the fact (`settleImport`). */
export interface ImportSettlement {
  summariesRebuilt: number;
  /** One line per counter changed (`inbound: 24500 → 25000`). */
  countersRepaired: string[];
}

export class Maintenance {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
    private readonly statsDocs: Gateway<StatsDoc>,
    private readonly stats: StatsRepository,
    private readonly usersRepo: UsersRepository,
    private readonly collections: ReadonlyMap<string, Gateway<AnyDoc>>,
  ) {}

  private collection(name: string): Gateway<AnyDoc> {
    const gateway = this.collections.get(name);
    if (!gateway) throw new Error(`unknown collection ${name}`);
    return gateway;
  }

  /** Inserts the users not stored yet; counts new users on the day they were created. */
  async importUsers(batch: readonly ImportedUser[]): Promise<{ inserted: number }> {
    const docs: UserDoc[] = batch.map((u) => ({
      _id: u.id,
      waId: u.waId,
      bsuid: null,
      name: u.name,
      createdAt: u.createdAt,
      lastMessageAt: u.createdAt,
      lastMessagePreview: null,
      lastMessageId: null,
      messageCount: 0,
      lastInboundAt: null,
      inboundCount: 0,
      optedOut: u.optedOut,
      welcomeSentAt: null,
      contextResetAt: null,
      searchKeys: searchKeysFor(u.waId, u.name),
      replyLock: null,
    }));
    checkImported('users', docs);
    const inserted = await this.users.insertMissing(docs);
    const delta = new CounterDelta();
    for (const i of inserted) {
      const doc = docs[i];
      if (doc) delta.user(doc.createdAt);
    }
    await this.stats.apply(delta);
    return { inserted: inserted.size };
  }

  /**
   * Inserts the messages not stored yet (given oldest first) and, for those only, updates the users'
   * summaries and the counters (the same rules as the webhook and reply paths). Imported inbound
   * messages are never answered (`replyState: none`). Texts are cut to `MAX_TEXT`, as the webhook
   * cuts them; a document the schemas refuse fails the batch before anything is written. Used by
   * the migration and the seed script. A run stopped between the insert and the counting leaves
   * documents that a later insert finds present: `settleImport` counts them.
   */
  async importMessages(
    batch: readonly ImportedMessage[],
    /** Test seam: runs between the insert and the counting (an interruption is injected there). */
    afterInsert?: () => Promise<void>,
  ): Promise<{ inserted: number; inbound: number; outbound: number }> {
    const docs: MessageDoc[] = batch.map((m) => {
      const status = m.direction === 'inbound' ? 'received' : (m.status ?? 'sent');
      const { text, terms } = storedText(m.text);
      return {
        _id: m.id,
        userId: m.userId,
        waMessageId: m.waMessageId,
        direction: m.direction,
        type: m.type ?? 'text',
        text,
        status,
        statusRank: STATUS_RANK[status],
        createdAt: m.createdAt,
        seqAt: m.seqAt ?? m.createdAt,
        role: m.role ?? 'conversation',
        phoneNumberId: m.phoneNumberId ?? null,
        terms,
        relatedId: m.relatedId ?? null,
        replyState: m.direction === 'inbound' ? 'none' : null,
        error: status === 'failed' ? { code: null, title: 'failed' } : null,
        ai: m.ai ?? null,
      };
    });
    checkImported('messages', docs);
    const inserted = await this.messages.insertMissing(docs);
    await afterInsert?.();
    const total = { inbound: 0, outbound: 0 };
    const delta = new CounterDelta();
    const perUser = new Map<string, SummaryMessage[]>();
    batch.forEach((m, i) => {
      if (!inserted.has(i)) return;
      total[m.direction]++;
      delta.message({
        direction: m.direction,
        createdAt: m.createdAt,
        failed: m.status === 'failed',
        aiTokens: m.ai?.totalTokens ?? null,
        aiModel: m.ai?.model ?? null,
      });
      const list = perUser.get(m.userId) ?? [];
      list.push({ id: m.id, text: docs[i]?.text ?? '', at: m.seqAt ?? m.createdAt, direction: m.direction });
      perUser.set(m.userId, list);
    });
    await this.usersRepo.noteImported(perUser);
    await this.stats.apply(delta);
    return { inserted: inserted.size, ...total };
  }

  /**
   * Whether any message is stored under a key that starts with `prefix` and matches `pattern`: one
   * read, so that a caller skips looking keys up batch by batch when none can match. The plain
   * prefix is a condition of its own: Cosmos DB serves a left-anchored `$regex` from the index only
   * without `$` or `|` (feature support, Evaluation query operators), and scans the whole
   * collection for a pattern that holds them.
   */
  async anyKeyMatching(prefix: string, pattern: RegExp): Promise<boolean> {
    const found = await this.messages.find(
      { $and: [{ _id: { $regex: `^${escapeRegex(prefix)}` } }, { _id: { $regex: pattern } }] },
      { projection: { _id: 1 }, limit: 1 },
    );
    return found.length > 0;
  }

  /**
   * The stored messages among `ids` (user, direction, time): the migration tells a message an
   * earlier version migrated under another key from a different one that happens to share it.
   */
  async findImported(
    ids: readonly string[],
  ): Promise<Map<string, { userId: string | null; direction: Direction | null; createdAt: Date | null }>> {
    const found = new Map<
      string,
      { userId: string | null; direction: Direction | null; createdAt: Date | null }
    >();
    if (!ids.length) return found;
    const projection = { userId: 1, direction: 1, createdAt: 1 };
    for await (const m of this.messages.iterate({ _id: { $in: [...ids] } }, { projection })) {
      found.set(m._id, {
        userId: m.userId ?? null,
        direction: m.direction ?? null,
        createdAt: m.createdAt instanceof Date ? m.createdAt : null,
      });
    }
    return found;
  }

  /**
   * After an import: rebuilds the summaries of the given users that disagree with their stored
   * messages, and the counters when any is below what is stored, with the rules and code of
   * `npm run health -- --repair`. A run that was interrupted after inserting a batch and before
   * counting it leaves exactly that; after a complete run it changes nothing. One pass over the
   * users and messages.
   */
  async settleImport(
    /** The users whose summaries the import may have left wrong, or a test on a user's stored count. */
    userIds: Iterable<string> | ((userId: string, storedMessages: number) => boolean),
    onProgress?: (done: number) => void,
  ): Promise<ImportSettlement> {
    // No sweep may fold between the count and the repair (`holdingFold`).
    return this.stats.holdingFold(() => this.settle(userIds, onProgress));
  }

  private async settle(
    userIds: Iterable<string> | ((userId: string, storedMessages: number) => boolean),
    onProgress?: (done: number) => void,
  ): Promise<ImportSettlement> {
    const counts = await this.countStored(onProgress);
    const listed = typeof userIds === 'function' ? null : new Set(userIds);
    const touched = (id: string) =>
      listed
        ? listed.has(id)
        : (userIds as (u: string, n: number) => boolean)(id, counts.perUser.get(id)?.count ?? 0);
    const wrong = [...new Set((await this.checkSummaries(counts)).map((p) => p.userId).filter(touched))];
    const summariesRebuilt = wrong.length ? await this.repairSummaries(wrong) : 0;
    const below = await this.checkCounters(counts);
    const countersRepaired = below.length ? await this.repairCounters(counts) : [];
    return { summariesRebuilt, countersRepaired };
  }

  // -------------------------------------------------------------------------------------------
  // Backup and restore

  async countCollections(): Promise<Record<string, number>> {
    const counts: Record<string, number> = {};
    for (const name of BACKUP_COLLECTIONS) counts[name] = await this.collection(name).count({});
    return counts;
  }

  /** Roughly how many users and messages are stored (collection metadata: no scan). */
  async estimatedSize(): Promise<number> {
    return (await this.users.estimatedCount()) + (await this.messages.estimatedCount());
  }

  /** Every document of a collection, in `_id` order. */
  readCollection(name: string): AsyncGenerator<Document> {
    return this.collection(name).iterate({}, { sort: { _id: 1 } });
  }

  /**
   * Writes documents back: replace by `_id`, or insert. Running it twice changes nothing. When the
   * server refuses some of them, throws a RestoreWriteError saying how many of the others it wrote.
   * An erase's audit entry keeps what the stored one remembers besides (`withRemembered`).
   */
  async restoreDocuments(name: string, docs: readonly Document[]): Promise<void> {
    if (!docs.length) return;
    if (name === 'events') docs = await this.withRemembered(docs);
    try {
      await this.collection(name).bulkWrite(
        docs.map((doc) => {
          const keyed = doc as AnyDoc;
          return { replaceOne: { filter: { _id: keyed._id }, replacement: keyed, upsert: true } };
        }),
        false,
      );
    } catch (error) {
      if (!(error instanceof BulkWriteFailure)) throw error;
      const errors = error.writeErrors;
      const { matchedCount, upsertedCount } = error.result;
      const first = errors[0]?.code;
      throw new RestoreWriteError(
        name,
        Math.min(docs.length, matchedCount + upsertedCount),
        errors.length,
        first === 11000 ? 'duplicate key, code 11000' : `code ${first ?? 'unknown'}`,
        { cause: error },
      );
    }
  }

  /**
   * The audit entries among `docs` with the lists of what their erase remembers (./erase
   * `rememberer`) joined to those of the entry stored under the same id: an erase adds to its
   * entry as it goes, so a backup taken while it ran holds less than the erase remembered, and
   * written over the entry it would let a message or item of the erased person, delivered again,
   * back in. The stored ones first, the file's after, each within its bound. One read per batch
   * that holds such an entry.
   */
  private async withRemembered(docs: readonly Document[]): Promise<readonly Document[]> {
    const ids = docs.flatMap((d): string[] =>
      d['kind'] === AUDIT_KIND && d['reason'] === 'erase' && typeof d['_id'] === 'string' ? [d['_id']] : [],
    );
    if (!ids.length) return docs;
    const stored = new Map(
      (
        await this.collection('events').find(
          { _id: { $in: ids }, kind: AUDIT_KIND },
          { projection: { erasedMessages: 1, erasedSubjects: 1, erasedItems: 1 } },
        )
      ).map((d) => [d._id, d as Document]),
    );
    if (!stored.size) return docs;
    return docs.map((doc) => {
      const known = stored.get(doc['_id'] as string);
      if (!known) return doc;
      const joined: Document = { ...doc };
      for (const [field, max] of REMEMBERED) {
        const lists = [known[field], doc[field]].filter((l): l is string[] => Array.isArray(l));
        if (lists.length) joined[field] = [...new Set(lists.flat())].slice(0, max);
      }
      return joined;
    });
  }

  // -------------------------------------------------------------------------------------------
  // Consistency of summaries and counters with the stored documents

  /** One pass over users and messages (projected) counting what is stored. */
  async countStored(onProgress?: (done: number) => void): Promise<StoredCounts> {
    const counts: StoredCounts = { users: 0, counters: new CounterDelta(), perUser: new Map() };
    let done = 0;
    for await (const u of this.users.iterate(
      {},
      { projection: { createdAt: 1, uncounted: 1 }, batchSize: 1000 },
    )) {
      counts.users++;
      // One marked `uncounted` is not in the running counters yet (./pending).
      if (u.createdAt instanceof Date && !u.uncounted) counts.counters.user(u.createdAt);
      if (++done % 1000 === 0) onProgress?.(done);
    }
    const projection = {
      userId: 1,
      direction: 1,
      createdAt: 1,
      seqAt: 1,
      status: 1,
      replyState: 1,
      'ai.totalTokens': 1,
      'ai.model': 1,
      failedUncounted: 1,
      uncounted: 1,
    };
    for await (const m of this.messages.iterate({}, { projection, batchSize: 1000 })) {
      if (++done % 1000 === 0) onProgress?.(done);
      tallyMessage(counts.perUser, m);
      if (!m.userId || !m.direction || !(m.createdAt instanceof Date)) continue; // status placeholder
      const counted = countedAs(m);
      if (counted) counts.counters.message(counted);
    }
    onProgress?.(done);
    return counts;
  }

  /**
   * Messages whose search terms an earlier version stored otherwise: cut at `OLD_TERM_CAP`,
   * without the words inside runs of scripts written without spaces (./terms, `RUN_TERMS_MARK`), or
   * with a letter `fold` now folds (ß, ς, ł, ø…); and users whose name holds such a run, or whose
   * search keys hold such a letter, by the same rules.
   */
  async countStaleTerms(): Promise<number> {
    return (await this.messages.count(STALE_TERMS)) + (await this.users.count(STALE_KEYS));
  }

  /**
   * Gives the messages an earlier version stored other terms (`countStaleTerms`) the terms of
   * today's rule (every word of a text of up to 4,096 characters, in any script), so search finds
   * all their words. Returns how many changed.
   */
  async recomputeStaleTerms(onProgress?: (done: number) => void): Promise<number> {
    let done = 0;
    let changed = 0;
    let ops: AnyBulkWriteOperation<MessageDoc>[] = [];
    const flush = async () => {
      if (ops.length) await this.messages.bulkWrite(ops, false);
      ops = [];
    };
    for await (const m of this.messages.iterate(STALE_TERMS, { projection: { text: 1 }, batchSize: 100 })) {
      onProgress?.(++done);
      const { terms } = storedText(typeof m.text === 'string' ? m.text : '');
      if (terms.length === OLD_TERM_CAP && !terms.includes(RUN_TERMS_MARK)) continue; // exactly 400 of its own
      ops.push({ updateOne: { filter: { _id: m._id, ...STALE_TERMS }, update: { $set: { terms } } } });
      changed++;
      if (ops.length >= 100) await flush();
    }
    await flush();
    // Users whose name holds such a run, or whose keys hold such a letter: its words, as a new user's are (`searchKeysFor`).
    let keyOps: AnyBulkWriteOperation<UserDoc>[] = [];
    const projection = { waId: 1, name: 1 };
    for await (const u of this.users.iterate(STALE_KEYS, { projection, batchSize: 100 })) {
      onProgress?.(++done);
      const searchKeys = searchKeysFor(u.waId ?? null, u.name ?? null);
      keyOps.push({ updateOne: { filter: { _id: u._id, ...STALE_KEYS }, update: { $set: { searchKeys } } } });
      changed++;
      if (keyOps.length >= 100) {
        await this.users.bulkWrite(keyOps, false);
        keyOps = [];
      }
    }
    if (keyOps.length) await this.users.bulkWrite(keyOps, false);
    return changed;
  }

  /** Users whose summary disagrees with their stored messages. */
  async checkSummaries(counts: StoredCounts): Promise<SummaryProblem[]> {
    const problems: SummaryProblem[] = [];
    const seen = new Set<string>();
    const projection = {
      messageCount: 1,
      lastMessageAt: 1,
      lastMessageId: 1,
      inboundCount: 1,
      lastInboundAt: 1,
    };
    for await (const u of this.users.iterate({}, { projection, batchSize: 1000 })) {
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
      // The inbound side is never below what is stored (retention lowers neither).
      if ((u.inboundCount ?? 0) < s.inbound)
        problems.push({
          userId: u._id,
          problem: `inboundCount ${String(u.inboundCount)}, stored ${s.inbound}`,
        });
      if (s.lastInboundAt && !(u.lastInboundAt instanceof Date && u.lastInboundAt >= s.lastInboundAt))
        problems.push({ userId: u._id, problem: 'lastInboundAt before the latest stored inbound message' });
      if (!(u.lastMessageAt instanceof Date) || u.lastMessageAt.getTime() < s.lastAt.getTime()) {
        problems.push({ userId: u._id, problem: 'lastMessageAt before the latest stored message' });
      } else if (u.lastMessageId !== s.lastId) {
        // Ties on createdAt: any message at the latest time is a correct "last message".
        const last = u.lastMessageId
          ? await this.messages.findOne(
              { _id: u.lastMessageId },
              { projection: { createdAt: 1, seqAt: 1, userId: 1 } },
            )
          : null;
        if (!last || last.userId !== u._id || placeOf(last)?.getTime() !== s.lastAt.getTime()) {
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

  /**
   * Rebuilds the summaries of the given users from their messages, as retention and the reply
   * worker do (`recountSummaries`: the summary rule, not set back by a writer meanwhile); returns
   * how many changed.
   */
  repairSummaries(userIds: Iterable<string>): Promise<number> {
    return this.usersRepo.recountSummaries(userIds);
  }

  /** The running totals (without what is marked and not folded in yet) and how often retention ran. */
  async readTotals() {
    const doc = await this.totalsDoc();
    return { ...(await this.stats.runningTotals()), retentionRuns: doc?.retentionRuns ?? 0 };
  }

  /** Counters below what is stored (running totals may exceed it after retention, never go below). */
  async checkCounters(counts: StoredCounts): Promise<CounterProblem[]> {
    const problems: CounterProblem[] = [];
    for (const c of await this.compareCounters(counts)) {
      if (!isCount(c.value) || c.value < c.stored)
        problems.push({ counter: c.counter, value: c.value, stored: c.stored });
    }
    return problems;
  }

  /**
   * Counters from the stored documents. Without a retention run they are rebuilt exactly (totals,
   * every day and every AI model); after one, deleted messages can no longer be counted, so
   * counters are only raised to what is stored. Returns a line per counter changed.
   */
  async repairCounters(counts: StoredCounts): Promise<string[]> {
    const exact = !(await this.readTotals()).retentionRuns;
    const changes: string[] = [];
    const totals: Record<string, number> = {};
    const days = new Map<string, Record<string, number>>();
    const models = new Map<string, Record<string, number>>();
    for (const c of await this.compareCounters(counts)) {
      if (isCount(c.value) && (exact ? c.value === c.stored : c.value >= c.stored)) continue;
      changes.push(
        `${c.scope === 'totals' ? 'totals.' : c.scope === 'model' ? 'model ' : ''}${c.counter}: ${describeCount(c.value)} → ${c.stored}`,
      );
      const target = c.scope === 'totals' ? totals : c.scope === 'day' ? days : models;
      if (target instanceof Map) target.set(c.id, { ...target.get(c.id), [c.key]: c.stored });
      else target[c.key] = c.stored;
    }
    await this.stats.set(totals, days, models);
    return changes;
  }

  /** Every counter next to what the stored documents say it should be (both sides' keys). */
  private async compareCounters(counts: StoredCounts): Promise<CounterRow[]> {
    const wanted = counts.counters;
    const rows: CounterRow[] = [];
    const row = (scope: CounterRow['scope'], id: string, key: string, value: number, stored: number) =>
      rows.push({ counter: `${id ? `${id}.` : ''}${key}`, scope, id, key, value, stored });
    const totals: Record<string, number> = { ...(await this.readTotals()) };
    for (const [key, stored] of Object.entries(wanted.totals))
      row('totals', '', key, totals[key] ?? 0, stored);
    const byDate = new Map((await this.stats.dayDocs()).map((d) => [d._id.slice(4), d]));
    for (const date of [...new Set([...wanted.days.keys(), ...byDate.keys()])].sort()) {
      const doc = byDate.get(date);
      const stored = wanted.days.get(date) ?? { inbound: 0, outbound: 0, newUsers: 0 };
      for (const key of ['inbound', 'outbound', 'newUsers'] as const)
        row('day', date, key, doc?.[key] ?? 0, stored[key]);
    }
    const byModel = new Map((await this.stats.modelDocs()).map((d) => [d.model, d]));
    for (const model of [...new Set([...wanted.models.keys(), ...byModel.keys()])].sort()) {
      const doc = byModel.get(model);
      const stored = wanted.models.get(model) ?? { aiRequests: 0, aiTokens: 0 };
      row('model', model, 'aiRequests', doc?.requests ?? 0, stored.aiRequests);
      row('model', model, 'aiTokens', doc?.tokens ?? 0, stored.aiTokens);
    }
    return rows;
  }

  /** Test and repair helper: the raw totals document. */
  totalsDoc(): Promise<StatsDoc | null> {
    return this.statsDocs.findOne({ _id: TOTALS_ID });
  }
}
