// Every index of the database, defined once. infra/ creates the same ones (a test compares them);
// `ensureIndexes` creates them where the app may and verifies them where infra/ owns them.
import type { Db } from 'mongodb';
import { AppError, ErrorCode } from '../errors';
import { execute } from './gateway';

export const COLLECTIONS = {
  users: 'users',
  messages: 'messages',
  stats: 'stats',
  tokens: 'tokens',
  events: 'events',
} as const;
export type CollectionName = (typeof COLLECTIONS)[keyof typeof COLLECTIONS];

export interface IndexDefinition {
  readonly name: string;
  /** Ascending keys only (Cosmos DB for MongoDB RU). */
  readonly keys: Readonly<Record<string, 1>>;
  readonly unique?: true;
}

/** Index definitions by collection. Every sort in the data module is backed by one of these. */
export const INDEXES: Readonly<Record<CollectionName, readonly IndexDefinition[]>> = {
  users: [
    // users list: newest activity first, ties by id; active-in-24h count
    { name: 'lastMessageAt_id', keys: { lastMessageAt: 1, _id: 1 } },
    // user search by prefix of a number or of a name word (an array: Cosmos DB allows no compound
    // index over an array field, so the list order comes from lastMessageAt_id)
    { name: 'searchKeys', keys: { searchKeys: 1 } },
    { name: 'waId', keys: { waId: 1 } },
    { name: 'bsuid', keys: { bsuid: 1 } },
    { name: 'optedOut', keys: { optedOut: 1 } },
    // conversations handed to operators, the longest-waiting first
    { name: 'handoff.since_id', keys: { 'handoff.since': 1, _id: 1 } },
    // users created and not in the running counters yet (stats, the sweep: ./pending)
    { name: 'uncounted', keys: { uncounted: 1 } },
    // the sweep: welcomes whose claim ended unsent (a worker killed before the send)
    { name: 'welcomeClaim', keys: { welcomeClaim: 1 } },
  ],
  messages: [
    // a conversation (newest first for the API, oldest first for replies and AI history)
    { name: 'userId_createdAt_id', keys: { userId: 1, createdAt: 1, _id: 1 } },
    // AI history: a user's conversation in the order of our clock (seqAt)
    { name: 'userId_seqAt_id', keys: { userId: 1, seqAt: 1, _id: 1 } },
    // message search by stored word prefixes (an array: single-field), newest first by createdAt_id
    { name: 'terms', keys: { terms: 1 } },
    { name: 'createdAt_id', keys: { createdAt: 1, _id: 1 } },
    // retention: the range of messages older than the cutoff, read in no order
    { name: 'createdAt', keys: { createdAt: 1 } },
    // the sweep: inbound messages by when we received them (Meta's time may be days old)
    { name: 'receivedAt', keys: { receivedAt: 1 } },
    // failures reported by statuses and not in the running counter yet (stats, the sweep)
    { name: 'failedUncounted', keys: { failedUncounted: 1 } },
    // messages stored or settled and not in the running counters yet (stats, the sweep: ./pending)
    { name: 'uncounted', keys: { uncounted: 1 } },
  ],
  stats: [],
  tokens: [{ name: 'hash', keys: { hash: 1 }, unique: true }],
  events: [
    { name: 'userId_createdAt', keys: { userId: 1, createdAt: 1 } },
    // archived items that carry a number or bsuid but no known user (erase and export find them)
    { name: 'subject_createdAt', keys: { subject: 1, createdAt: 1 } },
    { name: 'kind_createdAt', keys: { kind: 1, createdAt: 1 } },
  ],
};

export interface IndexReport {
  readonly created: string[];
  readonly present: string[];
  readonly missing: string[];
}

const sameKeys = (a: Record<string, unknown>, b: Record<string, unknown>): boolean =>
  JSON.stringify(Object.entries(a)) === JSON.stringify(Object.entries(b));

/**
 * Creates every index (mode `create`), or only checks them (mode `verify`). In `create` mode an
 * index the server refuses to create (Cosmos DB with key-based metadata writes disabled, where
 * infra/ owns collections and indexes) is verified instead. Throws CONFIG when any is missing.
 */
export async function ensureIndexes(db: Db, mode: 'create' | 'verify' = 'create'): Promise<IndexReport> {
  const report: IndexReport = { created: [], present: [], missing: [] };
  const existing = new Set(
    (await execute(() => db.listCollections({}, { nameOnly: true }).toArray())).map((c) => c.name),
  );
  for (const [collection, indexes] of Object.entries(INDEXES)) {
    if (mode === 'create' && !existing.has(collection)) {
      // Another process may create it first, or infra/ owns collections: the checks below decide.
      await execute(() => db.createCollection(collection)).catch(() => undefined);
    }
    // listIndexes fails on a collection that does not exist: then nothing is present.
    const current: { key: Record<string, unknown>; unique?: boolean }[] = await execute(() =>
      db.collection(collection).listIndexes().toArray(),
    ).catch(() => []);
    for (const index of indexes) {
      const label = `${collection}.${index.name}`;
      const found = current.find((i) => sameKeys(i.key, index.keys));
      if (found && Boolean(found.unique) === Boolean(index.unique)) {
        report.present.push(label);
        continue;
      }
      if (mode === 'create') {
        try {
          await execute(() =>
            db.collection(collection).createIndex(index.keys, {
              name: index.name,
              ...(index.unique ? { unique: true } : {}),
            }),
          );
          report.created.push(label);
          continue;
        } catch {
          // fall through: reported as missing
        }
      }
      report.missing.push(label);
    }
  }
  if (report.missing.length) {
    throw new AppError(ErrorCode.CONFIG, `missing database indexes: ${report.missing.join(', ')}`);
  }
  return report;
}
