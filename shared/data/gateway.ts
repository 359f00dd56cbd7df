// The one executor of the data module: every operation of every repository goes through a
// Gateway, which retries Cosmos DB throttling (16500) after the advised delay, translates driver
// errors into application errors, and applies the server adapter (see ./adapter). Repositories
// never hold a driver `Collection` themselves.
import {
  MongoBulkWriteError,
  type AnyBulkWriteOperation,
  type BulkWriteResult,
  type Collection,
  type Document,
  type Filter,
  type OptionalUnlessRequiredId,
  type Sort,
  type UpdateFilter,
  type WriteError,
} from 'mongodb';
import { isDuplicateKey, retryAfterMs, translateError, isThrottled } from './client';
import { sleep } from '../time';
import type { ServerAdapter, ServerFeatures } from './adapter';

const MAX_THROTTLE_RETRIES = 5;

/** Runs one database operation, retrying throttling after the advised delay, up to a bound. */
export async function execute<T>(operation: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await operation();
    } catch (error) {
      if (isThrottled(error) && attempt < MAX_THROTTLE_RETRIES) {
        await sleep(retryAfterMs(error, attempt));
        continue;
      }
      throw translateError(error);
    }
  }
}

export interface FindOptions {
  readonly sort?: Sort;
  readonly limit?: number;
  readonly projection?: Document;
}

export interface UpdateResult {
  readonly matched: number;
  readonly modified: number;
  readonly upserted: boolean;
}

type Keyed = Document & { _id: string };

/** The `_id` a filter or bulk operation targets, when it names one (the adapter's key). */
function idOf(filter: Document | undefined): string | null {
  const id: unknown = filter?.['_id'];
  return typeof id === 'string' ? id : null;
}

/** The `_id`s a filter targets: one, or a list (`{_id: {$in: [...]}}`); else none known. */
function idsOf(filter: Document | undefined): (string | null)[] {
  const id: unknown = filter?.['_id'];
  if (typeof id === 'string') return [id];
  const list: unknown = id && typeof id === 'object' ? (id as Document)['$in'] : undefined;
  return Array.isArray(list) && list.every((v) => typeof v === 'string') ? list : [null];
}

function bulkIds<T extends Keyed>(ops: readonly AnyBulkWriteOperation<T>[]): (string | null)[] {
  return ops.map((op) => {
    if ('insertOne' in op) return idOf(op.insertOne.document);
    if ('updateOne' in op) return idOf(op.updateOne.filter);
    if ('replaceOne' in op) return idOf(op.replaceOne.filter);
    if ('deleteOne' in op) return idOf(op.deleteOne.filter);
    return null;
  });
}

export class Gateway<T extends Keyed> {
  constructor(
    private readonly collection: Collection<T>,
    private readonly adapter: ServerAdapter,
  ) {}

  get name(): string {
    return this.collection.collectionName;
  }

  private write<R>(
    ids: readonly (string | null)[],
    operation: (features: ServerFeatures) => Promise<R>,
  ): Promise<R> {
    return this.adapter.write(this.name, ids, (features) => execute(() => operation(features)));
  }

  findOne(filter: Filter<T>, options: { projection?: Document } = {}): Promise<T | null> {
    return execute(() => this.collection.findOne(filter, options) as Promise<T | null>);
  }

  find(filter: Filter<T>, options: FindOptions = {}): Promise<T[]> {
    return execute(() => {
      let cursor = this.collection.find(filter);
      if (options.projection) cursor = cursor.project(options.projection);
      if (options.sort) cursor = cursor.sort(options.sort);
      if (options.limit) cursor = cursor.limit(options.limit);
      return cursor.toArray() as Promise<T[]>;
    });
  }

  /** Every matching document, fetched in batches (bulk jobs: health, backup, erase). */
  async *iterate(filter: Filter<T>, options: FindOptions & { batchSize?: number } = {}): AsyncGenerator<T> {
    let cursor = this.collection.find(filter).batchSize(options.batchSize ?? 500);
    if (options.projection) cursor = cursor.project(options.projection);
    if (options.sort) cursor = cursor.sort(options.sort);
    try {
      for (;;) {
        const next = await execute(() => cursor.next());
        if (!next) return;
        yield next as T;
      }
    } finally {
      await cursor.close();
    }
  }

  count(filter: Filter<T>): Promise<number> {
    return execute(() => this.collection.countDocuments(filter));
  }

  estimatedCount(): Promise<number> {
    return execute(() => this.collection.estimatedDocumentCount());
  }

  /** Inserts a document keyed by a natural `_id`: `duplicate` when one is already there. */
  async insertOne(doc: T): Promise<'inserted' | 'duplicate'> {
    try {
      await this.write([doc._id], () => this.collection.insertOne(doc as OptionalUnlessRequiredId<T>));
      return 'inserted';
    } catch (error) {
      if (isDuplicateKey(error)) return 'duplicate';
      throw error;
    }
  }

  /** Inserts many documents; returns the indexes of those inserted (duplicates are left as they are). */
  async insertMissing(docs: readonly T[]): Promise<Set<number>> {
    const all = new Set(docs.map((_, i) => i));
    if (docs.length === 0) return all;
    const { duplicates } = await this.bulkWriteKeyed(
      docs.map((document) => ({ insertOne: { document } }) as AnyBulkWriteOperation<T>),
    );
    for (const index of duplicates) all.delete(index);
    return all;
  }

  async updateOne(
    filter: Filter<T>,
    update: UpdateFilter<T>,
    options: { upsert?: boolean } = {},
  ): Promise<UpdateResult> {
    const result = await this.write([idOf(filter)], () => this.collection.updateOne(filter, update, options));
    return {
      matched: result.matchedCount,
      modified: result.modifiedCount,
      upserted: result.upsertedCount > 0,
    };
  }

  async updateMany(filter: Filter<T>, update: UpdateFilter<T>): Promise<number> {
    const result = await this.write([null], () => this.collection.updateMany(filter, update));
    return result.modifiedCount;
  }

  findOneAndUpdate(
    filter: Filter<T>,
    update: UpdateFilter<T>,
    options: { upsert?: boolean; returnDocument: 'before' | 'after'; projection?: Document },
  ): Promise<T | null> {
    return this.write([idOf(filter)], (features) => {
      const { projection, ...rest } = options;
      const allowed = projection && features.findAndModifyProjection ? { projection } : {};
      return this.collection.findOneAndUpdate(filter, update, { ...rest, ...allowed }) as Promise<T | null>;
    });
  }

  /**
   * Several writes in one round trip, unordered, where a duplicate key means "already there" (a
   * natural `_id`): returns the driver's result and the indexes of the operations that hit one.
   * Any other write error is thrown.
   */
  async bulkWriteKeyed(
    ops: readonly AnyBulkWriteOperation<T>[],
  ): Promise<{ result: BulkWriteResult | null; duplicates: Set<number> }> {
    try {
      return { result: await this.bulkWrite(ops, false), duplicates: new Set() };
    } catch (error) {
      if (!(error instanceof MongoBulkWriteError)) throw error;
      const errors = ([] as WriteError[]).concat(error.writeErrors);
      if (!errors.every((e) => e.code === 11000)) throw error;
      return { result: error.result, duplicates: new Set(errors.map((e) => e.index)) };
    }
  }

  /** Several writes to this collection in one round trip. */
  bulkWrite(ops: readonly AnyBulkWriteOperation<T>[], ordered = true): Promise<BulkWriteResult> {
    return this.write(bulkIds(ops), () => this.collection.bulkWrite([...ops], { ordered }));
  }

  /** Writes a whole document under its `_id` (inserted when absent). */
  async replaceOne(filter: Filter<T> & { _id: string }, replacement: T): Promise<void> {
    await this.write([filter._id], () => this.collection.replaceOne(filter, replacement, { upsert: true }));
  }

  /** Deletes one document and returns it as it was (with `projection`), or null. */
  findOneAndDelete(filter: Filter<T>, options: { projection?: Document } = {}): Promise<T | null> {
    return this.write([idOf(filter)], (features) => {
      const allowed = options.projection && features.findAndModifyProjection ? options : {};
      return this.collection.findOneAndDelete(filter, allowed) as Promise<T | null>;
    });
  }

  async deleteOne(filter: Filter<T>): Promise<number> {
    const result = await this.write([idOf(filter)], () => this.collection.deleteOne(filter));
    return result.deletedCount;
  }

  async deleteMany(filter: Filter<T>): Promise<number> {
    // Keyed by the ids it names: on FerretDB, a delete that checks a document's state must not
    // run while another write to that document does (the adapter's serialisation).
    const result = await this.write(idsOf(filter), () => this.collection.deleteMany(filter));
    return result.deletedCount;
  }
}
