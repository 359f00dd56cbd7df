// Retention: deletes messages older than a cutoff in batches, oldest first, and rebuilds the
// summaries of the users whose last message went (the summary rule of ./summary). Running totals
// stay (docs/contract.md, "Stats"); each run is recorded on the totals document so that a health
// repair knows counters can no longer be rebuilt from the documents. A message still marked for
// the counters (./pending), or still waiting for its answer (while it can be), goes at a later
// run. Archived items (./events: what the bot kept without storing it as a message) go by the same
// cutoff.
import type { Gateway } from './gateway';
import type { Filter } from 'mongodb';
import { AUDIT_KIND, ERASE_RECENT_MS, type EventDoc } from './events';
import { WAITING, type MessageDoc } from './messages';
import { POISONED_KIND, type PoisonedRepository } from './poisoned';
import { SPILL_KIND } from './spills';
import type { StatsRepository } from './stats';
import type { UsersRepository } from './users';

export interface RetentionResult {
  deleted: number;
  /** Poisoned notifications (./poisoned) deleted: their messages were never stored. */
  poisoned: number;
  /** Other archived items deleted (odd input, echoes, history, system messages, legacy rows). */
  archived: number;
  usersUpdated: number;
  batches: number;
}

/** Cutoff for a retention of `days` days before `now`. */
export const retentionCutoff = (days: number, now: Date): Date => new Date(now.getTime() - days * 86_400_000);

/**
 * How long a message can still be answered after it reached us: a reply job lives at most 7 days
 * in its queue (Azure Storage's default time to live, which the app keeps), the sweeper re-queues
 * only what came in the last 6 hours, and WhatsApp's 24-hour window has closed long before.
 */
export const ANSWERABLE_MS = 7 * 24 * 3_600_000;

/**
 * Messages created before the cutoff that the counters hold: one marked for the counters, or
 * whose reported failure is (./pending), is left for the sweep to count first; an inbound one
 * still waiting for its answer (Meta delivered it late: its time is Meta's) is left to be answered,
 * while it can be (received within ANSWERABLE_MS; one without a time of receipt, from an earlier
 * version, never is): kept for ever, a message whose job was lost would outlive the setting.
 */
const olderThan = (cutoff: Date, now: Date): Filter<MessageDoc> => ({
  createdAt: { $lt: cutoff },
  uncounted: { $ne: true },
  failedUncounted: { $ne: true },
  $or: [
    { replyState: { $nin: WAITING } },
    { receivedAt: { $lt: new Date(now.getTime() - ANSWERABLE_MS) } },
    { receivedAt: { $exists: false } },
  ],
});

/**
 * Archived items retention deletes: not the audit trail, not a spilled body still to be ingested,
 * not poisoned pieces (./poisoned, by Meta's time). One archived within ERASE_RECENT_MS stays
 * whatever the cutoff: its id is how a notification Meta delivers again (for up to 7 days) is
 * known, and not archived or applied twice (a number change undone by its redelivery).
 */
const archivedOlderThan = (cutoff: Date, now: Date): Filter<EventDoc> => ({
  kind: { $nin: [AUDIT_KIND, SPILL_KIND, POISONED_KIND] },
  createdAt: { $lt: new Date(Math.min(cutoff.getTime(), now.getTime() - ERASE_RECENT_MS)) },
});

export class Retention {
  constructor(
    private readonly messages: Gateway<MessageDoc>,
    private readonly usersRepo: UsersRepository,
    private readonly stats: StatsRepository,
    private readonly poisoned: PoisonedRepository,
    private readonly events: Gateway<EventDoc>,
  ) {}

  /** How many messages are older than the cutoff (for dry runs and progress). */
  countOlderThan(cutoff: Date, now = new Date()): Promise<number> {
    return this.messages.count(olderThan(cutoff, now));
  }

  /** How many poisoned notifications Meta's times put before the cutoff (for dry runs). */
  countPoisonedOlderThan(cutoff: Date): Promise<number> {
    return this.poisoned.countOlderThan(cutoff);
  }

  /** How many other archived items would go (for dry runs). */
  countArchivedOlderThan(cutoff: Date, now = new Date()): Promise<number> {
    return this.events.count(archivedOlderThan(cutoff, now));
  }

  async deleteOlderThan(
    cutoff: Date,
    batchSize = 500,
    onProgress: (deleted: number) => void = () => undefined,
    /** How many of the touched users' summaries were rebuilt so far. */
    onRecount?: (done: number, of: number) => void,
  ): Promise<RetentionResult> {
    const result: RetentionResult = { deleted: 0, poisoned: 0, archived: 0, usersUpdated: 0, batches: 0 };
    const touched = new Set<string>();
    const now = new Date();
    for (;;) {
      // Status placeholders (no user) carry the time of their status, so they go too. In no order:
      // every one goes, and an unsorted read streams from the `createdAt` range (a sort makes the
      // server read and order all old messages before the first batch, at every batch).
      const batch = await this.messages.find(olderThan(cutoff, now), {
        projection: { _id: 1, userId: 1 },
        limit: batchSize,
      });
      if (batch.length === 0) break;
      // Deleted only while unmarked: a failure a status reports meanwhile waits for the sweep too.
      result.deleted += await this.messages.deleteMany({
        ...olderThan(cutoff, now),
        _id: { $in: batch.map((m) => m._id) },
      });
      result.batches++;
      for (const m of batch) if (m.userId) touched.add(m.userId);
      onProgress(result.deleted);
      if (batch.length < batchSize) break;
    }
    // A poisoned notification holds messages the retention period covers too (by Meta's time),
    // never stored: replayed, they would be deleted at the next run.
    result.poisoned = await this.poisoned.deleteOlderThan(cutoff);
    // What else was archived of those days (a group message, an echo, a history thread, ...)
    // holds what people wrote as much as a message does.
    result.archived = await this.events.deleteMany(archivedOlderThan(cutoff, now));
    result.usersUpdated = await this.usersRepo.recountSummaries(touched, (done) =>
      onRecount?.(done, touched.size),
    );
    // Only a run that deleted something makes the counters impossible to rebuild from documents.
    if (result.deleted > 0) await this.stats.recordRetention(new Date(), cutoff);
    return result;
  }
}
