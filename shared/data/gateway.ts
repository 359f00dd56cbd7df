// The one executor of the data module: every operation of every repository goes through a
// Gateway, which retries Cosmos DB throttling (16500) after the advised delay, translates driver
// errors into application errors, and applies the server adapter (see ./adapter). Repositories
// never hold a driver `Collection` themselves.
import {
  BSON,
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
import { AppError, ErrorCode } from '../errors';
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

/** What a bulk write did, over all its attempts; keys of `upsertedIds` are the caller's indexes. */
export interface BulkResult {
  readonly insertedCount: number;
  readonly matchedCount: number;
  readonly modifiedCount: number;
  readonly deletedCount: number;
  readonly upsertedCount: number;
  readonly upsertedIds: Readonly<Record<number, unknown>>;
}

/**
 * Operations of a bulk write the server refused (not throttled), by the caller's indexes, with
 * their codes (never the server's message: it may quote a value), and what the others did.
 */
export class BulkWriteFailure extends Error {
  override readonly name = 'BulkWriteFailure';
  constructor(
    readonly writeErrors: readonly { readonly index: number; readonly code: number | undefined }[],
    readonly result: BulkResult,
    options?: { cause?: unknown },
  ) {
    super(`${writeErrors.length} write(s) of a bulk write refused`, options);
  }
}

/** Sends one bulk write to the server (the driver's `bulkWrite`). */
export type BulkSender<T extends Document> = (
  ops: AnyBulkWriteOperation<T>[],
  ordered: boolean,
) => Promise<BulkWriteResult>;

/**
 * Cosmos DB refuses a request over 2 MB ("Request size is too large"; concepts-limits, Per-request
 * limits), whatever the number of documents in it, while the driver splits a bulk write only at
 * the message size the server announces (48 MB from MongoDB). A bulk write is therefore sent in parts whose
 * operations add up to this, leaving room for the command's own fields.
 */
const MAX_REQUEST_BYTES = 2 * 1024 * 1024;
const REQUEST_BUDGET = MAX_REQUEST_BYTES - 64 * 1024;
/**
 * Cosmos DB takes at most 1,000 documents in one write ("accepts writes in batches of up to 1,000
 * documents"; optimize-write-performance), while the driver splits only at the batch size the
 * server announces (100,000 from MongoDB): a part holds at most this many operations too.
 */
const MAX_WRITE_OPERATIONS = 1_000;
/** What the driver adds around each operation of a write command ({q, u, upsert, multi}, index keys). */
const PER_OPERATION_BYTES = 64;

function operationBytes(op: AnyBulkWriteOperation<Document>): number {
  try {
    return BSON.calculateObjectSize(op) + PER_OPERATION_BYTES;
  } catch {
    return PER_OPERATION_BYTES; // not BSON: the driver refuses it with its own error
  }
}

/**
 * Consecutive parts of `ops`, each under the request budget and of at most MAX_WRITE_OPERATIONS
 * operations (one operation over the budget alone: the server refuses it as the document it is).
 */
function requestParts<T extends Document>(
  ops: readonly AnyBulkWriteOperation<T>[],
): AnyBulkWriteOperation<T>[][] {
  const parts: AnyBulkWriteOperation<T>[][] = [];
  let part: AnyBulkWriteOperation<T>[] = [];
  let bytes = 0;
  for (const op of ops) {
    const size = operationBytes(op as AnyBulkWriteOperation<Document>);
    if (part.length > 0 && (bytes + size > REQUEST_BUDGET || part.length >= MAX_WRITE_OPERATIONS)) {
      parts.push(part);
      part = [];
      bytes = 0;
    }
    part.push(op);
    bytes += size;
  }
  if (part.length > 0) parts.push(part);
  return parts;
}

type MutableResult = {
  -readonly [K in keyof BulkResult]: K extends 'upsertedIds' ? Record<number, unknown> : number;
};

const emptyResult = (): MutableResult => ({
  insertedCount: 0,
  matchedCount: 0,
  modifiedCount: 0,
  deletedCount: 0,
  upsertedCount: 0,
  upsertedIds: {},
});

/** Adds a result's counts to `total`, its upserted ids under the caller's indexes (`indexOf`). */
function addResult(
  total: MutableResult,
  result: BulkResult,
  indexOf: (at: number) => number | undefined,
): void {
  total.insertedCount += result.insertedCount;
  total.matchedCount += result.matchedCount;
  total.modifiedCount += result.modifiedCount;
  total.deletedCount += result.deletedCount;
  total.upsertedCount += result.upsertedCount;
  for (const [at, id] of Object.entries(result.upsertedIds)) {
    const index = indexOf(Number(at));
    if (index !== undefined) total.upsertedIds[index] = id;
  }
}

/**
 * Runs a bulk write in parts under Cosmos DB's request limit (`requestParts`), one after another;
 * an ordered write stops at the part where a write was refused. Indexes (refused writes, upserted
 * ids) are the caller's, across parts.
 */
export async function runBulk<T extends Document>(
  ops: readonly AnyBulkWriteOperation<T>[],
  ordered: boolean,
  send: BulkSender<T>,
): Promise<BulkResult> {
  const parts = requestParts(ops);
  if (parts.length <= 1) return runPart(ops, ordered, send);
  const total = emptyResult();
  const add = (result: BulkResult, offset: number): void => addResult(total, result, (at) => at + offset);
  const refused: { index: number; code: number | undefined }[] = [];
  let cause: unknown;
  let offset = 0;
  for (const part of parts) {
    try {
      add(await runPart(part, ordered, send), offset);
    } catch (error) {
      if (!(error instanceof BulkWriteFailure)) throw error;
      add(error.result, offset);
      refused.push(...error.writeErrors.map((e) => ({ index: e.index + offset, code: e.code })));
      cause = error.cause;
      if (ordered) break;
    }
    offset += part.length;
  }
  if (refused.length > 0) throw new BulkWriteFailure(refused, total, { cause });
  return total;
}

/**
 * Runs a bulk write, retrying what Cosmos DB throttled. Cosmos DB applies a bulk write's
 * operations one by one and answers a throttled one with its own write error 16500 while the
 * others are applied (an ordered write stops there): sending the whole write again would apply
 * those twice (a counter's `$inc`) or report them as duplicates. So only the throttled operations,
 * and in an ordered write those after them, are sent again, after the advised delay. A write the
 * server refused as a whole (a command error) is sent again only when it changed nothing.
 */
async function runPart<T extends Document>(
  ops: readonly AnyBulkWriteOperation<T>[],
  ordered: boolean,
  send: BulkSender<T>,
): Promise<BulkResult> {
  const total = emptyResult();
  const refused: { index: number; code: number | undefined }[] = [];
  let cause: unknown;
  let pending = ops.map((op, index) => ({ op, index }));
  for (let attempt = 0; pending.length > 0; attempt++) {
    let result: BulkWriteResult;
    let errors: WriteError[] = [];
    try {
      result = await send(
        pending.map((p) => p.op),
        ordered,
      );
    } catch (error) {
      const perWrite = error instanceof MongoBulkWriteError ? [error.writeErrors].flat() : [];
      if (!(error instanceof MongoBulkWriteError) || perWrite.length === 0) {
        const changed =
          error instanceof MongoBulkWriteError &&
          error.result.insertedCount +
            error.result.matchedCount +
            error.result.deletedCount +
            error.result.upsertedCount >
            0;
        if (isThrottled(error) && !changed && attempt < MAX_THROTTLE_RETRIES) {
          await sleep(retryAfterMs(error, attempt));
          continue;
        }
        throw translateError(error);
      }
      result = error.result;
      errors = perWrite;
      cause = error;
    }
    addResult(total, result, (at) => pending[at]?.index);
    const throttled = errors.filter((e) => isThrottled(e));
    const next: typeof pending = [];
    if (ordered) {
      // An ordered write stops at its first error: what follows it did not run.
      const first = errors[0];
      if (first && isThrottled(first)) next.push(...pending.slice(first.index));
      else if (first) refused.push({ index: pending[first.index]?.index ?? -1, code: first.code });
    } else {
      for (const e of errors) {
        const original = pending[e.index];
        if (!original) continue;
        if (isThrottled(e)) next.push(original);
        else refused.push({ index: original.index, code: e.code });
      }
    }
    if (next.length > 0 && attempt >= MAX_THROTTLE_RETRIES)
      throw new AppError(ErrorCode.THROTTLED, 'database throttled the request', { cause });
    if (next.length > 0) await sleep(retryAfterMs(throttled[0], attempt));
    pending = next;
  }
  if (refused.length > 0) throw new BulkWriteFailure(refused, total, { cause });
  return total;
}

/** Whether a sort is by `_id` ascending alone (a read can then go on after the last `_id`). */
function isIdOrder(sort: Sort | undefined): boolean {
  if (!sort || typeof sort !== 'object' || Array.isArray(sort) || sort instanceof Map) return false;
  const entries = Object.entries(sort);
  return entries.length === 1 && entries[0]?.[0] === '_id' && entries[0][1] === 1;
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

  /**
   * Every matching document, fetched in batches (bulk jobs: health, backup, erase). The driver
   * closes a cursor whose `find` or `getMore` failed, and a closed cursor reads as exhausted: a
   * throttled batch is never asked of it again. It is read anew instead, from the start when
   * nothing came yet, after the last `_id` when sorted by `_id`; otherwise the error is thrown, never
   * a shortened list.
   */
  async *iterate(filter: Filter<T>, options: FindOptions & { batchSize?: number } = {}): AsyncGenerator<T> {
    const byId = isIdOrder(options.sort);
    let lastId: string | null = null;
    let yielded = false;
    for (let attempt = 0; ;) {
      const from = lastId === null ? filter : ({ $and: [filter, { _id: { $gt: lastId } }] } as Filter<T>);
      let cursor = this.collection.find(from).batchSize(options.batchSize ?? 500);
      if (options.projection) cursor = cursor.project(options.projection);
      if (options.sort) cursor = cursor.sort(options.sort);
      try {
        for (;;) {
          let next: T | null;
          try {
            next = (await cursor.next()) as T | null;
          } catch (error) {
            const resumable = lastId === null ? !yielded : byId;
            if (isThrottled(error) && resumable && attempt < MAX_THROTTLE_RETRIES) {
              await sleep(retryAfterMs(error, attempt++));
              break;
            }
            throw translateError(error);
          }
          if (!next) return;
          yielded = true;
          if (byId) lastId = next._id;
          yield next;
        }
      } finally {
        await cursor.close();
      }
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
   * natural `_id`): returns what the writes did and the indexes of the operations that hit one.
   * Any other write error is thrown (a BulkWriteFailure).
   */
  async bulkWriteKeyed(
    ops: readonly AnyBulkWriteOperation<T>[],
  ): Promise<{ result: BulkResult | null; duplicates: Set<number> }> {
    try {
      return { result: await this.bulkWrite(ops, false), duplicates: new Set() };
    } catch (error) {
      if (!(error instanceof BulkWriteFailure)) throw error;
      if (!error.writeErrors.every((e) => e.code === 11000)) throw error;
      return { result: error.result, duplicates: new Set(error.writeErrors.map((e) => e.index)) };
    }
  }

  /**
   * Several writes to this collection in one round trip (more when Cosmos DB throttles some of
   * them: only those are sent again, see `runBulk`).
   */
  bulkWrite(ops: readonly AnyBulkWriteOperation<T>[], ordered = true): Promise<BulkResult> {
    return this.adapter.write(this.name, bulkIds(ops), () =>
      runBulk(ops, ordered, (batch, inOrder) => this.collection.bulkWrite(batch, { ordered: inOrder })),
    );
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
