// The data module: the only code that talks to the database, and the only way in. Everything
// above it speaks in the domain types of ./types; no driver object leaves this folder.
import type { Db, Document } from 'mongodb';
import { adapterFor, type ServerAdapter } from './adapter';
import { sharedDb } from './client';
import { PersonalData } from './erase';
import { EventsRepository, type EventDoc } from './events';
import { execute, Gateway } from './gateway';
import { COLLECTIONS, ensureIndexes, type IndexReport } from './indexes';
import { Maintenance } from './maintenance';
import { ManageQueries } from './manage-queries';
import { MessagesRepository, type MessageDoc } from './messages';
import { PendingCounts } from './pending';
import { PoisonedRepository } from './poisoned';
import { Retention } from './retention';
import { SpillsRepository } from './spills';
import { SubjectKeys } from './subjects';
import { StatsRepository, type StatsDoc } from './stats';
import { TokensRepository, type TokenDoc } from './tokens';
import { UsersRepository, type UserDoc } from './users';
import { HandoffRepository } from './handoff';

export * from './types';
export {
  CLIENT_OPTIONS,
  closeAllClients,
  observeCommands,
  watchClient,
  type ObservedCommand,
} from './client';
export { COLLECTIONS, INDEXES, type IndexDefinition, type IndexReport } from './indexes';
export { STATUS_RANK, MAX_TEXT, isCutWhenStored } from './messages';
export { MAX_EVENT_JSON } from './events';
export { ErasureInProgress, SentBeforeErase } from './users';
export { activeHandoff, type WaitingChat } from './handoff';
export {
  DOC_BYTES_MAX,
  DOC_SCHEMAS,
  RETIRED_COLLECTIONS,
  checkStoredDocument,
  isStoredCollection,
  type StoredCollection,
} from './doc-schemas';
export { fold, queryTerms, userQueryTerms, words } from './terms';
export { CounterDelta, dayKey, type StatsSnapshot } from './stats';
export { ErasedSinceBackup, type AuditEntry, type BackedUpUser, type KeyedAudit } from './erase';
export { KEYS_ID } from './subjects';
export { preview, type SummaryMessage } from './summary';
export { boundedJson, MAX_RAW_JSON } from './bounded-json';
export { SPILL_KIND } from './spills';
export { POISONED_KIND, type KeptPiece, type PoisonedPiece } from './poisoned';
export { MAX_WA_ID_DIGITS } from './users';
export {
  AUDIT_KIND,
  ERASE_STALE_MS,
  MAX_EXPORT_BYTES,
  MAX_EXPORT_EVENTS,
  MAX_EXPORT_MESSAGES,
  type EraseReport,
  type UserExport,
} from './erase';
export { type Position, type Slice } from './manage-queries';
export { type ApiToken } from './tokens';
export { retentionCutoff, type RetentionResult } from './retention';
export type { LockedUser } from './users';
export type { SettledReply } from './messages';
export {
  BACKUP_COLLECTIONS,
  BACKUP_FORMAT,
  BACKUP_VERSION,
  fromEjsonLine,
  fromEjsonLineRelaxed,
  RestoreWriteError,
  toEjsonLine,
  type BackupHeader,
  describeCount,
  type CounterProblem,
  type ImportedMessage,
  type ImportedUser,
  type ImportSettlement,
  type StoredCounts,
  type SummaryProblem,
} from './maintenance';

export interface DataStore {
  readonly users: UsersRepository;
  readonly messages: MessagesRepository;
  readonly stats: StatsRepository;
  readonly events: EventsRepository;
  readonly tokens: TokensRepository;
  /** Paged lists, search and counts of the management API. */
  readonly manage: ManageQueries;
  /** Export, erase and the audit trail. */
  readonly personal: PersonalData;
  /** Migration import, backup/restore, health checks and repairs. */
  readonly maintenance: Maintenance;
  readonly retention: Retention;
  /** Webhook bodies too large for one queue message. */
  readonly spills: SpillsRepository;
  /** Notifications ingest failed on every attempt, kept per person until replayed. */
  readonly poisoned: PoisonedRepository;
  /** Creates the indexes (`npm run indexes`, dev and tests) or verifies them (Azure: infra/ owns them). */
  ensureIndexes(mode?: 'create' | 'verify'): Promise<IndexReport>;
  /** Conversations handed to operators. */
  readonly handoff: HandoffRepository;
  /** Round trip to the server (health check). */
  ping(): Promise<void>;
  /** Drops the whole database (tests and scripts only). */
  dropDatabase(): Promise<void>;
}

/** The data store on a database handle; `adapter` defaults to the one its server needs. */
export function createDataStore(db: Db, adapter: ServerAdapter = adapterFor(db)): DataStore {
  const gateway = <T extends Document & { _id: string }>(name: string) =>
    new Gateway<T>(db.collection<T>(name), adapter);
  const usersG = gateway<UserDoc>(COLLECTIONS.users);
  const messagesG = gateway<MessageDoc>(COLLECTIONS.messages);
  const statsG = gateway<StatsDoc>(COLLECTIONS.stats);
  const eventsG = gateway<EventDoc>(COLLECTIONS.events);
  const tokensG = gateway<TokenDoc>(COLLECTIONS.tokens);
  const stats = new StatsRepository(statsG, new PendingCounts(messagesG, usersG));
  const keys = new SubjectKeys(statsG);
  const users = new UsersRepository(usersG, messagesG, stats, keys, eventsG);
  const poisoned = new PoisonedRepository(eventsG, keys);
  const all = new Map<string, Gateway<Document & { _id: string }>>(
    [usersG, messagesG, statsG, eventsG, tokensG].map((g) => [
      g.name,
      g as unknown as Gateway<Document & { _id: string }>,
    ]),
  );
  return {
    users,
    messages: new MessagesRepository(messagesG, users, stats),
    stats,
    events: new EventsRepository(eventsG, keys),
    tokens: new TokensRepository(tokensG),
    manage: new ManageQueries(usersG, messagesG),
    personal: new PersonalData(usersG, messagesG, eventsG, stats, users, keys),
    maintenance: new Maintenance(usersG, messagesG, statsG, stats, users, all),
    retention: new Retention(messagesG, users, stats, poisoned, eventsG),
    spills: new SpillsRepository(eventsG),
    poisoned,
    ensureIndexes: (mode = 'create') => ensureIndexes(db, mode),
    handoff: new HandoffRepository(usersG, messagesG),
    ping: async () => {
      await execute(() => db.command({ ping: 1 }));
    },
    dropDatabase: async () => {
      await db.dropDatabase();
    },
  };
}

/**
 * Opens the data store on the process-wide client. Indexes are not checked here (no round trips
 * at each cold start): infra/ and `npm run indexes` create them, `npm run health` verifies them.
 */
export async function openDataStore(uri: string, database: string): Promise<DataStore> {
  return createDataStore(await sharedDb(uri, database));
}
