// What the running counters (./stats) do not hold yet. A writer marks what it stores in the very
// write that stores it: a message stored or settled, and a user created, carry `uncounted`; a
// failure a delivery status reported carries `failedUncounted` (./message-doc). The stats add the
// marked documents to the running counters; the sweep takes the marks off and adds what they
// counted. So a crash between a write and its count leaves nothing to repair, and the hot path
// spends no round trip on counters. A crash inside the sweep, between taking marks off and adding
// them, can leave counters low (it never counts twice); `npm run health` finds it.
import type { Document, Filter, UpdateFilter } from 'mongodb';
import type { Gateway } from './gateway';
import { COUNTED_FIELDS, pendingAs, UNCOUNTED_FAILURES, type MessageDoc } from './message-doc';
import { CounterDelta, type PendingSource } from './stats';
import type { UserDoc } from './users';

/** The mark of a message or user the running counters do not hold yet. */
export const UNCOUNTED = { uncounted: true } as const;

/** Reported failures the sweep may fold in: of messages no longer marked `uncounted`. */
const FOLDABLE_FAILURES = { ...UNCOUNTED_FAILURES, uncounted: { $ne: true } } as const;

/** What the marks of each kind add, and how many documents each kind had. */
export interface Taken {
  readonly delta: CounterDelta;
  readonly messages: number;
  readonly users: number;
  readonly failures: number;
}

export class PendingCounts implements PendingSource {
  constructor(
    private readonly messages: Gateway<MessageDoc>,
    private readonly users: Gateway<UserDoc>,
  ) {}

  /** What the marked documents add to the running counters (the stats read it). */
  async delta(): Promise<CounterDelta> {
    const [messages, users, failures] = await Promise.all([
      this.messages.find(UNCOUNTED, { projection: COUNTED_FIELDS }),
      this.users.find(UNCOUNTED, { projection: { createdAt: 1 } }),
      this.messages.count(UNCOUNTED_FAILURES),
    ]);
    return addUp(messages, users, failures);
  }

  /**
   * Takes the marks off up to `limit` documents of each kind and returns what they add: the caller
   * adds it to the running counters.
   */
  async take(limit: number): Promise<Taken> {
    const messages = await this.unmark(this.messages, UNCOUNTED, 'uncounted', COUNTED_FIELDS, limit);
    const users = await this.unmark(this.users, UNCOUNTED, 'uncounted', { createdAt: 1 }, limit);
    // Only of messages the counters hold: a message still marked counts as not failed while its
    // failure is marked (`countedAs`), so its failure waits for it, or it would count twice.
    const failures = await this.unmark(
      this.messages,
      FOLDABLE_FAILURES,
      'failedUncounted',
      { _id: 1 },
      limit,
    );
    return {
      delta: addUp(messages, users, failures.length),
      messages: messages.length,
      users: users.length,
      failures: failures.length,
    };
  }

  /**
   * Takes the mark (`field`, of the documents `marked` finds) off up to `limit` documents in one
   * bulk write and returns those it took it off. A document deleted meanwhile (an erase, a
   * take-back) went while marked, so uncounted: the deleter took nothing out of the counters for
   * it, and neither is it counted here.
   */
  private async unmark<T extends Document & { _id: string }>(
    gateway: Gateway<T>,
    marked: Record<string, unknown>,
    field: 'uncounted' | 'failedUncounted',
    projection: Document,
    limit: number,
  ): Promise<T[]> {
    const docs = await gateway.find(marked as Filter<T>, { projection, limit });
    if (docs.length === 0) return [];
    const { result } = await gateway.bulkWriteKeyed(
      docs.map((d) => ({
        updateOne: {
          filter: { _id: d._id, ...marked } as Filter<T>,
          update: { $unset: { [field]: '' } } as UpdateFilter<T>,
        },
      })),
    );
    if ((result?.modifiedCount ?? 0) === docs.length) return docs;
    const ids = docs.map((d) => d._id);
    const still = await gateway.find({ _id: { $in: ids } } as Filter<T>, { projection: { _id: 1 } });
    const kept = new Set(still.map((d) => d._id));
    return docs.filter((d) => kept.has(d._id));
  }
}

function addUp(
  messages: readonly MessageDoc[],
  users: readonly Pick<UserDoc, 'createdAt'>[],
  failures: number,
): CounterDelta {
  const delta = new CounterDelta().failed(failures);
  for (const m of messages) {
    const count = pendingAs({ ...m, uncounted: true });
    if (count) delta.message(count);
  }
  for (const u of users) if (u.createdAt instanceof Date) delta.user(u.createdAt);
  return delta;
}
