// The stored shape of a message (its own file so that users.ts can name it without importing
// messages.ts, which imports users.ts).
import type {
  AiUsage,
  Direction,
  MessageError,
  MessageRole,
  MessageStatus,
  ReplyPlan,
  ReplyState,
} from './types';

export interface MessageDoc {
  _id: string;
  /** Absent on a status placeholder whose message has not been stored (yet). */
  userId?: string;
  waMessageId: string | null;
  direction?: Direction;
  type?: string;
  text?: string;
  status: MessageStatus;
  /** Order of outbound statuses: they only move forward. */
  statusRank: number;
  statusTimes?: Partial<Record<MessageStatus, Date>>;
  /** A placeholder's is the time of its first status, so that retention removes it too. */
  createdAt?: Date;
  receivedAt?: Date;
  /**
   * Order of the conversation on our clock: when an inbound message was stored, when an outbound
   * one was sent. Meta's timestamps (whole seconds, the sender's clock) cannot order a message
   * against our answers.
   */
  seqAt?: Date;
  role?: MessageRole;
  phoneNumberId?: string | null;
  terms?: string[];
  relatedId?: string | null;
  replyState?: ReplyState | null;
  leaseUntil?: Date | null;
  /** Inbound, waiting: a sweep re-queued its answer; the next sweep leaves it until then. */
  requeueAfter?: Date;
  /** Inbound, while an answer of several parts goes out (removed when it is settled). */
  replyPlan?: ReplyPlan;
  error?: MessageError | null;
  /**
   * A `failed` status set this, in the same write; the running `failed` counter takes the message
   * in at the next sweep (./pending). Until then the stats add it.
   */
  failedUncounted?: true;
  /**
   * Set in the write that stores or settles the message (./pending): the running counters do not
   * hold it yet. The stats add it; the sweep folds it in. A crash between a message's write and
   * its count so leaves nothing to repair.
   */
  uncounted?: true;
  ai?: AiUsage | null;
  /** An operator message: the token's name. */
  by?: string;
  /** The message as Meta sent it, as bounded JSON text (see ./bounded-json). */
  rawJson?: string;
  /** Documents stored before rawJson kept the object itself. */
  raw?: unknown;
}

/** A failure a status reported on a stored outbound message, not in the running counter yet. */
export const UNCOUNTED_FAILURES = { failedUncounted: true, direction: 'outbound' } as const;

/** The fields `countedAs` reads (a projection). */
export const COUNTED_FIELDS = {
  direction: 1,
  status: 1,
  ai: 1,
  createdAt: 1,
  replyState: 1,
  failedUncounted: 1,
  uncounted: 1,
} as const;

/** What one message adds to the counters (`CounterDelta.message`). */
export interface MessageCount {
  direction: Direction;
  createdAt: Date;
  failed: boolean;
  aiTokens: number | null;
  aiModel: string | null;
}

type CountedFields = Pick<
  MessageDoc,
  'direction' | 'createdAt' | 'status' | 'replyState' | 'ai' | 'failedUncounted' | 'uncounted'
>;

/**
 * How a stored message counts in the running counters (the rule of `CounterDelta.message`), or
 * null while it does not count yet: an inbound message waiting for its answer (counted when the
 * answer is settled), a status placeholder, and a message marked `uncounted` (the sweep folds it
 * in: `pendingAs`). A failure a status reported counts once the sweep has folded it into the
 * counter. Erase and the health check count stored messages with this.
 */
export function countedAs(m: CountedFields): MessageCount | null {
  if (m.uncounted) return null;
  return countOf(m);
}

/** How a message marked `uncounted` will count once the sweep folds it in, else null. */
export function pendingAs(m: CountedFields): MessageCount | null {
  return m.uncounted ? countOf(m) : null;
}

function countOf(m: CountedFields): MessageCount | null {
  if (!m.direction || !(m.createdAt instanceof Date)) return null;
  if (m.direction === 'inbound' && (m.replyState === 'pending' || m.replyState === 'sending')) return null;
  return {
    direction: m.direction,
    createdAt: m.createdAt,
    failed: m.status === 'failed' && !m.failedUncounted,
    aiTokens: m.ai?.totalTokens ?? null,
    aiModel: m.ai?.model ?? null,
  };
}
