// Claims decided by inserting a document with a natural `_id`: the unique `_id` makes exactly one
// insert win, on MongoDB, Cosmos DB and FerretDB alike (FerretDB v1 does not apply conditional
// updates atomically under concurrency, so a filtered update cannot arbitrate between workers).
import type { Collection } from 'mongodb';
import { isDuplicateKey, withRetry } from './client';

export interface LockDoc {
  _id: string;
  createdAt: Date;
}

export class LocksRepository {
  constructor(private readonly locks: Collection<LockDoc>) {}

  /** True for the one caller whose insert of `key` succeeded. */
  async claim(key: string): Promise<boolean> {
    try {
      await withRetry(() => this.locks.insertOne({ _id: key, createdAt: new Date() }));
      return true;
    } catch (error) {
      if (isDuplicateKey(error)) return false;
      throw error;
    }
  }

  /** True when `key` was claimed before `time` (a claim that old was orphaned if nobody recorded it). */
  async claimedBefore(key: string, time: Date): Promise<boolean> {
    return (
      (await withRetry(() =>
        this.locks.countDocuments({ _id: key, createdAt: { $lt: time } }, { limit: 1 }),
      )) > 0
    );
  }

  async release(key: string): Promise<void> {
    await withRetry(() => this.locks.deleteOne({ _id: key }));
  }
}
