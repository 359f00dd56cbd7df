// What the checker knows of the app without running it: its index definitions and the document
// fields that hold arrays (shared/data/users.ts UserDoc, shared/data/messages.ts MessageDoc).
import { INDEXES } from '../../shared/data';
import { NESTED_INDEX_CAPABILITY, type IndexSpec } from './rules';

export const APP_INDEXES: readonly IndexSpec[] = Object.entries(INDEXES).flatMap(([collection, list]) =>
  list.map((index) => ({
    collection,
    name: index.name,
    keys: index.keys,
    options: index.unique ? { unique: true } : {},
  })),
);

/** `collection.path` of every array field of the stored documents. */
export const APP_ARRAY_FIELDS: readonly string[] = [
  'users.searchKeys',
  'users.previousWaIds',
  'users.previousBsuids',
  'messages.terms',
];

/**
 * Capabilities the Cosmos DB account is created with beyond EnableMongo / EnableServerless
 * (infra/modules/cosmos.bicep; test/unit/infra-drift.test.ts compares them): the handoff list's
 * index {handoff.since, _id} is a compound index over a nested path.
 */
export const APP_CAPABILITIES: readonly string[] = [NESTED_INDEX_CAPABILITY];
