// Retention: deletes messages older than a cutoff in batches, oldest first, and rebuilds the
// summaries of the users whose last message went (the summary rule of ./summary). Running totals
// stay (docs/contract.md, "Stats"); each run is recorded on the totals document so that a health
// repair knows counters can no longer be rebuilt from the documents.
import type { Gateway } from './gateway';
import { isUncountedFailure } from './message-doc';
import type { MessageDoc } from './messages';
import { CounterDelta, type StatsRepository } from './stats';
import type { UsersRepository } from './users';

export interface RetentionResult {
  deleted: number;
  usersUpdated: number;
  batches: number;
}

/** Cutoff for a retention of `days` days before `now`. */
export const retentionCutoff = (days: number, now: Date): Date => new Date(now.getTime() - days * 86_400_000);

export class Retention {
  constructor(
    private readonly messages: Gateway<MessageDoc>,
    private readonly usersRepo: UsersRepository,
    private readonly stats: StatsRepository,
  ) {}

  /** How many messages are older than the cutoff (for dry runs and progress). */
  countOlderThan(cutoff: Date): Promise<number> {
    return this.messages.count({ createdAt: { $lt: cutoff } });
  }

  async deleteOlderThan(
    cutoff: Date,
    batchSize = 500,
    onProgress: (deleted: number) => void = () => undefined,
  ): Promise<RetentionResult> {
    const result: RetentionResult = { deleted: 0, usersUpdated: 0, batches: 0 };
    const touched = new Set<string>();
    for (;;) {
      // Status placeholders (no user) carry the time of their status, so they go too.
      const batch = await this.messages.find(
        { createdAt: { $lt: cutoff } },
        {
          projection: { _id: 1, userId: 1, direction: 1, failedUncounted: 1 },
          sort: { createdAt: 1 },
          limit: batchSize,
        },
      );
      if (batch.length === 0) break;
      result.deleted += await this.messages.deleteMany({
        _id: { $in: batch.map((m) => m._id) },
        createdAt: { $lt: cutoff },
      });
      result.batches++;
      // Reported failures not folded into the running counter yet: counted now, after the delete
      // (a crash in between loses them from the counter, never counts one twice).
      const uncounted = batch.filter(isUncountedFailure).length;
      if (uncounted) await this.stats.apply(new CounterDelta().failed(uncounted));
      for (const m of batch) if (m.userId) touched.add(m.userId);
      onProgress(result.deleted);
      if (batch.length < batchSize) break;
    }
    for (const userId of touched) {
      const [count, latest] = await Promise.all([
        this.messages.count({ userId }),
        this.messages.find({ userId }, { sort: { userId: -1, seqAt: -1, _id: -1 }, limit: 1 }),
      ]);
      const last = latest[0];
      const changed = await this.usersRepo.rebuildSummary(
        userId,
        count,
        last?.createdAt
          ? {
              id: last._id,
              text: last.text ?? '',
              at: last.seqAt ?? last.createdAt,
              direction: last.direction ?? 'outbound',
            }
          : null,
      );
      if (changed) result.usersUpdated++;
    }
    // Only a run that deleted something makes the counters impossible to rebuild from documents.
    if (result.deleted > 0) await this.stats.recordRetention(new Date(), cutoff);
    return result;
  }
}
