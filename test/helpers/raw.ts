// Typed handles on the app's collections, for tests that must see or break what is stored in a way
// the data module's API does not offer (a corrupted counter, a half-finished run). Only the data
// module's document types are borrowed: filters by a string `_id` type-check without casts.
import type { Collection, Db } from 'mongodb';
import type { EventDoc } from '../../shared/data/events';
import type { MessageDoc } from '../../shared/data/messages';
import type { StatsDoc } from '../../shared/data/stats';
import type { TokenDoc } from '../../shared/data/tokens';
import type { UserDoc } from '../../shared/data/users';

/** The document type each collection holds, as the data module writes it. */
export interface StoredDocs {
  users: UserDoc;
  messages: MessageDoc;
  stats: StatsDoc;
  tokens: TokenDoc;
  events: EventDoc;
}

export const collectionOf = <K extends keyof StoredDocs>(db: Db, name: K): Collection<StoredDocs[K]> =>
  db.collection<StoredDocs[K]>(name);
