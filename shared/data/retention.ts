// Retention: deletes messages older than a cutoff in batches, oldest first, and keeps the users'
// summaries right. Running totals stay (docs/contract.md, "Stats"); each run is recorded on the totals
// document so that a health repair knows counters can no longer be rebuilt from the documents.
import type { Db } from 'mongodb';
import { withRetry } from './client';
import { COLLECTIONS } from './indexes';
import type { MessageDoc } from './messages';
import { TOTALS_ID } from './stats';
import { preview, type UserDoc } from './users';

export interface RetentionResult {
  deleted: number;
  usersUpdated: number;
  batches: number;
  /** Claims in `locks` older than the cutoff: their messages are long answered. */
  locksDeleted: number;
}

/** How many messages are older than the cutoff (for dry runs and progress). */
export async function countMessagesOlderThan(store: { readonly db: Db }, cutoff: Date): Promise<number> {
  return withRetry(() =>
    store.db.collection<MessageDoc>(COLLECTIONS.messages).countDocuments({ createdAt: { $lt: cutoff } }),
  );
}

export async function deleteMessagesOlderThan(
  store: { readonly db: Db },
  cutoff: Date,
  batchSize = 500,
  onProgress: (deleted: number) => void = () => undefined,
): Promise<RetentionResult> {
  const messages = store.db.collection<MessageDoc>(COLLECTIONS.messages);
  const users = store.db.collection<UserDoc>(COLLECTIONS.users);
  const result: RetentionResult = { deleted: 0, usersUpdated: 0, batches: 0, locksDeleted: 0 };
  const touched = new Set<string>();
  for (;;) {
    const batch = await withRetry(() =>
      messages
        .find({ createdAt: { $lt: cutoff } }, { projection: { _id: 1, userId: 1 } })
        .sort({ createdAt: 1 })
        .limit(batchSize)
        .toArray(),
    );
    if (batch.length === 0) break;
    const ids = batch.map((m) => m._id);
    const deleted = await withRetry(() =>
      messages.deleteMany({ _id: { $in: ids }, createdAt: { $lt: cutoff } }),
    );
    result.deleted += deleted.deletedCount;
    result.batches++;
    const perUser = new Map<string, { count: number; ids: string[] }>();
    for (const m of batch) {
      if (!m.userId) continue;
      const entry = perUser.get(m.userId) ?? { count: 0, ids: [] };
      entry.count++;
      entry.ids.push(m._id);
      perUser.set(m.userId, entry);
    }
    if (perUser.size) {
      await withRetry(() =>
        users.bulkWrite(
          [...perUser].map(([userId, e]) => ({
            updateOne: { filter: { _id: userId }, update: { $inc: { messageCount: -e.count } } },
          })),
          { ordered: false },
        ),
      );
      // Users whose last message went: the preview follows their latest remaining message.
      for (const [userId, e] of perUser) {
        const user = await withRetry(() =>
          users.findOne({ _id: userId, lastMessageId: { $in: e.ids } }, { projection: { _id: 1 } }),
        );
        if (user) touched.add(userId);
      }
    }
    onProgress(result.deleted);
    if (batch.length < batchSize) break;
  }
  for (const userId of touched) {
    const latest = await withRetry(() =>
      messages.find({ userId }).sort({ userId: -1, createdAt: -1, _id: -1 }).limit(1).toArray(),
    );
    const last = latest[0];
    // lastMessageAt stays: it is when the user was last active, which orders the users list.
    await withRetry(() =>
      users.updateOne(
        { _id: userId },
        {
          $set: last
            ? { lastMessagePreview: preview(last.text ?? ''), lastMessageId: last._id }
            : { lastMessagePreview: null, lastMessageId: null },
        },
      ),
    );
    result.usersUpdated++;
  }
  // Old claims can go: a claim is only ever contended while its message or lock is current.
  const locks = store.db.collection<{ _id: string; createdAt: Date }>(COLLECTIONS.locks);
  for (;;) {
    const old = await withRetry(() =>
      locks
        .find({ createdAt: { $lt: cutoff } }, { projection: { _id: 1 } })
        .sort({ createdAt: 1 })
        .limit(batchSize)
        .toArray(),
    );
    if (old.length === 0) break;
    const removed = await withRetry(() => locks.deleteMany({ _id: { $in: old.map((l) => l._id) } }));
    result.locksDeleted += removed.deletedCount;
    if (old.length < batchSize) break;
  }
  // Only a run that deleted something makes the counters impossible to rebuild from documents.
  if (result.deleted > 0) {
    await withRetry(() =>
      store.db
        .collection<{ _id: string }>(COLLECTIONS.stats)
        .updateOne(
          { _id: TOTALS_ID },
          { $inc: { retentionRuns: 1 }, $set: { lastRetentionAt: new Date(), lastRetentionCutoff: cutoff } },
          { upsert: true },
        ),
    );
  }
  return result;
}

/** Cutoff for a retention of `days` days before `now`. */
export const retentionCutoff = (days: number, now: Date): Date => new Date(now.getTime() - days * 86_400_000);
