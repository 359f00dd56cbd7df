// The data module: the only code that talks to the database. Everything above it speaks in the
// domain types of ./types.
import type { Db } from 'mongodb';
import { sharedDb, updateGateFor, withRetry } from './client';
import { COLLECTIONS, ensureIndexes } from './indexes';
import { EventsRepository, type EventDoc } from './events';
import { MessagesRepository, type MessageDoc } from './messages';
import { StatsRepository, type StatsDoc } from './stats';
import { UsersRepository, type UserDoc } from './users';
import { LocksRepository, type LockDoc } from './locks';
import { ManageQueries, TokensRepository, type TokenDoc } from './manage-queries';
import { SpillsRepository } from './spills';

export * from './types';
// The database on the process-wide client, without creating indexes (the health script checks them).
export { closeAllClients, observeCommands, sharedDb, watchClient, type ObservedCommand } from './client';
export { COLLECTIONS, INDEXES, ensureIndexes, type IndexDefinition, type IndexReport } from './indexes';
export { STATUS_RANK } from './messages';
export { SPILL_KIND } from './spills';
export { fold, queryTerms, words } from './terms';
export {
  AUDIT_KIND,
  type ApiToken,
  type EraseReport,
  type Position,
  type Slice,
  type UserExport,
} from './manage-queries';

export interface DataStore {
  readonly users: UsersRepository;
  readonly messages: MessagesRepository;
  readonly stats: StatsRepository;
  readonly events: EventsRepository;
  readonly tokens: TokensRepository;
  readonly manage: ManageQueries;
  /** Webhook bodies too large for one queue message. */
  readonly spills: SpillsRepository;
  /** Round trip to the server (health check). */
  ping(): Promise<void>;
  /** Drops the whole database (tests and scripts only). */
  dropDatabase(): Promise<void>;
  /** The database handle, for the other repositories of this module. */
  readonly db: Db;
}

export function createDataStore(db: Db): DataStore {
  const gate = updateGateFor(db);
  const stats = new StatsRepository(db.collection<StatsDoc>(COLLECTIONS.stats), gate);
  const locks = new LocksRepository(db.collection<LockDoc>(COLLECTIONS.locks));
  const users = new UsersRepository(db.collection<UserDoc>(COLLECTIONS.users), stats, locks, gate);
  const messages = new MessagesRepository(
    db.collection<MessageDoc>(COLLECTIONS.messages),
    users,
    stats,
    locks,
    gate,
  );
  const events = new EventsRepository(db.collection<EventDoc>(COLLECTIONS.events));
  const spills = new SpillsRepository(db.collection<EventDoc>(COLLECTIONS.events));
  const tokens = new TokensRepository(db.collection<TokenDoc>(COLLECTIONS.tokens));
  const manage = new ManageQueries(
    db.collection<UserDoc>(COLLECTIONS.users),
    db.collection<MessageDoc>(COLLECTIONS.messages),
    db.collection<EventDoc>(COLLECTIONS.events),
    stats,
  );
  return {
    users,
    messages,
    stats,
    events,
    tokens,
    manage,
    spills,
    db,
    ping: async () => {
      await withRetry(() => db.command({ ping: 1 }));
    },
    dropDatabase: async () => {
      await db.dropDatabase();
    },
  };
}

/**
 * Opens the data store on the process-wide client and makes sure the indexes exist (created where
 * the app may, verified where infra/ owns them).
 */
export async function openDataStore(uri: string, database: string): Promise<DataStore> {
  const db = await sharedDb(uri, database);
  await ensureIndexes(db, 'create');
  return createDataStore(db);
}
export * from './maintenance';
export * from './retention';
