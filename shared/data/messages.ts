// Messages, inbound and outbound. The `_id` is the WhatsApp message id when there is one (so a
// redelivery cannot store a message twice), else a natural key (`out:<inbound id>:<part>`,
// `legacy:<row>`). The reply state of an inbound message lives on it.
import type { Collection, Filter } from 'mongodb';
import type {
  AiUsage,
  Direction,
  InboundRecord,
  Message,
  MessageError,
  MessageRole,
  MessageStatus,
  OutboundRecord,
  ReplyState,
  StatusUpdate,
} from './types';
import { directGate, isDuplicateKey, withRetry, type UpdateGate } from './client';
import { prefixTerms } from './terms';
import type { StatsRepository } from './stats';
import type { UsersRepository } from './users';
import type { LocksRepository } from './locks';

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
  replyAttempts?: number;
  error?: MessageError | null;
  ai?: AiUsage | null;
  raw?: unknown;
}

/** sent < delivered < read; failed is terminal. */
export const STATUS_RANK: Record<MessageStatus, number> = {
  received: 0,
  pending: 0,
  not_sent: 1,
  sent: 1,
  delivered: 2,
  read: 3,
  failed: 9,
};

export const toMessage = (d: MessageDoc): Message => ({
  id: d._id,
  userId: d.userId ?? '',
  waMessageId: d.waMessageId ?? null,
  direction: d.direction ?? 'outbound',
  type: d.type ?? 'unknown',
  text: d.text ?? '',
  status: d.status,
  createdAt: d.createdAt ?? d.statusTimes?.sent ?? new Date(0),
  seqAt: d.seqAt ?? d.createdAt ?? new Date(0),
  role: d.role ?? 'conversation',
  phoneNumberId: d.phoneNumberId ?? null,
  replyState: d.replyState ?? null,
  error: d.error ?? null,
  ai: d.ai ?? null,
  relatedId: d.relatedId ?? null,
});

export class MessagesRepository {
  constructor(
    readonly messages: Collection<MessageDoc>,
    private readonly users: UsersRepository,
    private readonly stats: StatsRepository,
    private readonly locks: LocksRepository,
    private readonly gate: UpdateGate = directGate,
  ) {}

  async getMessage(id: string): Promise<Message | null> {
    const doc = await withRetry(() => this.messages.findOne({ _id: id }));
    return doc?.userId ? toMessage(doc) : null;
  }

  /**
   * Stores an inbound message once. Only the first insert updates the user's summary and the
   * counters; a redelivery answers `duplicate` and changes nothing.
   */
  async recordInbound(record: InboundRecord): Promise<'inserted' | 'duplicate'> {
    const { receivedAt } = record;
    const doc: MessageDoc = {
      _id: record.id,
      userId: record.userId,
      waMessageId: record.id,
      direction: 'inbound',
      type: record.type,
      text: record.text,
      status: 'received',
      statusRank: 0,
      createdAt: record.createdAt,
      receivedAt,
      seqAt: receivedAt,
      role: record.role,
      phoneNumberId: record.phoneNumberId,
      terms: prefixTerms(record.text),
      relatedId: record.relatedId,
      replyState: record.replyState,
      leaseUntil: null,
      replyAttempts: 0,
      raw: record.raw,
    };
    try {
      await withRetry(() => this.messages.insertOne(doc));
    } catch (error) {
      if (isDuplicateKey(error)) return 'duplicate';
      throw error;
    }
    await this.users.noteMessage(record.userId, record);
    await this.stats.bump({ inbound: 1 }, record.createdAt);
    return 'inserted';
  }

  /** Inbound messages of a user still waiting for an answer, oldest first. */
  async pendingReplies(userId: string, limit: number): Promise<Message[]> {
    const docs = await withRetry(() =>
      this.messages
        .find({ userId, direction: 'inbound', replyState: { $in: ['pending', 'sending'] } })
        .sort({ userId: 1, createdAt: 1, _id: 1 })
        .limit(limit)
        .toArray(),
    );
    return docs.map(toMessage);
  }

  /**
   * Inbound messages whose answer looks abandoned (for the sweeper): `pending` and stored more
   * than `graceMs` ago, or `sending` past their lease. Looks only at messages created in the last
   * `windowMs`, a range of the `createdAt` index, so a sweep costs what that window holds.
   */
  async staleReplies(
    now: Date,
    limit: number,
    { graceMs = 60_000, windowMs = 6 * 60 * 60 * 1000 }: { graceMs?: number; windowMs?: number } = {},
  ): Promise<Message[]> {
    const docs = await withRetry(() =>
      this.messages
        .find({
          createdAt: { $gte: new Date(now.getTime() - windowMs) },
          direction: 'inbound',
          $or: [
            { replyState: 'pending', receivedAt: { $lt: new Date(now.getTime() - graceMs) } },
            { replyState: 'sending', leaseUntil: { $lt: now } },
          ],
        })
        .sort({ createdAt: 1 })
        .limit(limit)
        .toArray(),
    );
    return docs.map(toMessage);
  }

  /**
   * Claims the answer to an inbound message: `pending` (or `sending` whose lease expired) →
   * `sending` with a new lease. Null when it is taken, answered, or not answerable.
   */
  async claimReply(id: string, leaseMs: number): Promise<Message | null> {
    const doc = await withRetry(() => this.messages.findOne({ _id: id }));
    const now = new Date();
    if (!doc) return null;
    const claimable =
      doc.replyState === 'pending' || (doc.replyState === 'sending' && (doc.leaseUntil ?? new Date(0)) < now);
    if (!claimable) return null;
    // Attempts are numbered; exactly one worker wins the claim of the next one.
    let attempt = (doc.replyAttempts ?? 0) + 1;
    while (!(await this.locks.claim(`reply:${id}:${attempt}`))) {
      // Orphaned by a crash between the claim and the update below: skip it once a lease old.
      const stale = new Date(now.getTime() - leaseMs);
      if (!(await this.locks.claimedBefore(`reply:${id}:${attempt}`, stale))) return null;
      attempt++;
    }
    const updated = await withRetry(() =>
      this.messages.findOneAndUpdate(
        { _id: id },
        {
          $set: {
            replyState: 'sending',
            leaseUntil: new Date(now.getTime() + leaseMs),
            replyAttempts: attempt,
          },
        },
        { returnDocument: 'after' },
      ),
    );
    return updated ? toMessage(updated) : null;
  }

  /** Ends the reply of an inbound message. `failed` carries the reason. */
  async finishReply(
    id: string,
    state: 'sent' | 'failed' | 'none',
    error: MessageError | null = null,
  ): Promise<void> {
    await withRetry(() =>
      this.messages.updateOne(
        { _id: id, replyState: { $in: ['pending', 'sending'] } },
        { $set: { replyState: state, leaseUntil: null, ...(error ? { error } : {}) } },
      ),
    );
  }

  /** The inbound message was marked read on WhatsApp. */
  async markInboundRead(id: string): Promise<void> {
    await withRetry(() =>
      this.messages.updateOne(
        { _id: id, direction: 'inbound', statusRank: { $lt: STATUS_RANK.read } },
        { $set: { status: 'read', statusRank: STATUS_RANK.read } },
      ),
    );
  }

  /**
   * Stores an answer. A status may have arrived first and left a placeholder under the same wamid:
   * the content is added to it and its (further) status kept.
   */
  async recordOutbound(record: OutboundRecord): Promise<'inserted' | 'duplicate'> {
    const content = {
      userId: record.userId,
      waMessageId: record.waMessageId,
      direction: 'outbound' as const,
      type: record.type,
      text: record.text,
      createdAt: record.createdAt,
      seqAt: record.createdAt,
      role: record.role,
      phoneNumberId: record.phoneNumberId,
      terms: prefixTerms(record.text),
      relatedId: record.relatedId,
      error: record.error,
      ai: record.ai,
    };
    const before = await withRetry(() =>
      this.messages.findOneAndUpdate(
        { _id: record.id, userId: { $exists: false } },
        { $set: content, $setOnInsert: { status: record.status, statusRank: STATUS_RANK[record.status] } },
        { upsert: true, returnDocument: 'before' },
      ),
    ).catch((error: unknown) => {
      if (isDuplicateKey(error)) return 'duplicate' as const;
      throw error;
    });
    if (before === 'duplicate') return 'duplicate';
    await this.users.noteMessage(record.userId, record);
    const failed = record.status === 'failed' || before?.status === 'failed';
    await this.stats.bump(
      {
        outbound: 1,
        failed: failed ? 1 : 0,
        aiRequests: record.ai ? 1 : 0,
        aiTokens: record.ai?.totalTokens ?? 0,
      },
      record.createdAt,
    );
    return 'inserted';
  }

  /**
   * Applies a delivery status to an outbound message, only ever forward, whatever the order of
   * arrival. A status for a message not stored yet leaves a placeholder that the message joins.
   */
  async applyStatus(update: StatusUpdate): Promise<'applied' | 'stale'> {
    const result = await this.gate.run(() => this.moveStatus(update));
    if (result === 'failed') await this.stats.bump({ failed: 1 }, update.at);
    return result === 'stale' ? 'stale' : 'applied';
  }

  private async moveStatus(update: StatusUpdate): Promise<'applied' | 'stale' | 'failed'> {
    const rank = STATUS_RANK[update.status];
    const filter: Filter<MessageDoc> = { _id: update.waMessageId, statusRank: { $lt: rank } };
    const change = {
      $set: {
        status: update.status,
        statusRank: rank,
        [`statusTimes.${update.status}`]: update.at,
        ...(update.error ? { error: update.error } : {}),
      },
      $setOnInsert: { waMessageId: update.waMessageId },
    };
    let before: MessageDoc | null;
    try {
      before = await withRetry(() =>
        this.messages.findOneAndUpdate(filter, change, { upsert: true, returnDocument: 'before' }),
      );
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
      // The message exists (perhaps inserted by a concurrent status a moment ago): move it forward
      // only if it is behind; otherwise this status is stale.
      before = await withRetry(() =>
        this.messages.findOneAndUpdate(filter, change, { returnDocument: 'before' }),
      );
      if (!before) return 'stale';
    }
    return update.status === 'failed' && before?.direction === 'outbound' ? 'failed' : 'applied';
  }

  /**
   * The conversation before a message, for AI context: the last `limit` conversation messages of
   * the user after `since` (the last reset) and before `before`, oldest first. One indexed query.
   */
  async conversationBefore(
    userId: string,
    before: Date,
    beforeId: string,
    since: Date | null,
    limit: number,
  ): Promise<Message[]> {
    if (limit <= 0) return [];
    const seqAt: Record<string, Date> = { $lte: before };
    if (since) seqAt['$gt'] = since;
    const docs = await withRetry(() =>
      this.messages
        .find({ userId, seqAt, role: 'conversation', _id: { $ne: beforeId } })
        .sort({ userId: -1, seqAt: -1, _id: -1 })
        .limit(limit)
        .toArray(),
    );
    return docs.map(toMessage).reverse();
  }

  /** How many outbound notices with this text a user got since a time (the AI rate-limit notice). */
  async countNoticesSince(userId: string, since: Date, text: string): Promise<number> {
    return withRetry(() =>
      this.messages.countDocuments({
        userId,
        createdAt: { $gte: since },
        direction: 'outbound',
        role: 'notice',
        text,
      }),
    );
  }

  /** How many AI answers a user got since a time (the per-minute limit). */
  async countAiAnswersSince(userId: string, since: Date): Promise<number> {
    return withRetry(() =>
      this.messages.countDocuments({
        userId,
        createdAt: { $gte: since },
        direction: 'outbound',
        ai: { $ne: null },
      }),
    );
  }
}
