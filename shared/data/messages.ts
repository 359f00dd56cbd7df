// Messages, inbound and outbound. The `_id` is the WhatsApp message id when there is one (so a
// redelivery cannot store a message twice), else a natural key (`out:<inbound id>:<part>`,
// `legacy:<row>`). The reply state of an inbound message lives on it.
import { createHash } from 'node:crypto';
import type { AnyBulkWriteOperation, Filter } from 'mongodb';
import type { Gateway } from './gateway';
import { CounterDelta, type StatsRepository } from './stats';
import { COUNTED_FIELDS, countedAs, type MessageDoc } from './message-doc';
import type { SummaryMessage } from './summary';
import { prefixTerms } from './terms';
import type {
  AiUsage,
  InboundRecord,
  Message,
  MessageError,
  MessageStatus,
  OutboundRecord,
  ReplyPlan,
  ReplyState,
  StatusUpdate,
} from './types';

export type { MessageDoc };

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

/**
 * Longest text stored on a message, in characters (Unicode code points, as WhatsApp counts its
 * limits: an emoji is one; WhatsApp's own limit for a text is 65,536 characters).
 */
export const MAX_TEXT = 65_536;

/** The first MAX_TEXT characters of `text`: whole code points, never half of a surrogate pair. */
function keptText(text: string): string {
  // A string of at most MAX_TEXT UTF-16 units has at most MAX_TEXT code points.
  if (text.length <= MAX_TEXT) return text;
  let units = 0;
  let count = 0;
  for (const character of text) {
    if (count === MAX_TEXT) break;
    units += character.length;
    count++;
  }
  return text.slice(0, units);
}

/** Whether `text` is longer than a message keeps (MAX_TEXT characters). */
export const isCutWhenStored = (text: string): boolean => keptText(text).length < text.length;

/**
 * A message's stored text, cut at MAX_TEXT characters, and its search terms (./terms): one rule
 * for every writer (webhook, replies, operators, migration and seed).
 */
export function storedText(text: string): { text: string; terms: string[] } {
  const kept = keptText(text);
  return { text: kept, terms: prefixTerms(kept) };
}

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
  ...(d.receivedAt ? { receivedAt: d.receivedAt } : {}),
  role: d.role ?? 'conversation',
  phoneNumberId: d.phoneNumberId ?? null,
  replyState: d.replyState ?? null,
  error: d.error ?? null,
  ai: d.ai ?? null,
  relatedId: d.relatedId ?? null,
  ...(d.by ? { by: d.by } : {}),
  ...(d.replyPlan ? { replyPlan: d.replyPlan } : {}),
});

/** Reply states of an inbound message still waiting for its answer. */
export const WAITING: ReplyState[] = ['pending', 'sending'];
/** More than an answer has parts (`ReplyPlan`: at most 16 kept, 4 sent). */
const MAX_ANSWER_PARTS = 16;
const ANSWER_CLOCK_MARGIN_MS = 5 * 60_000;

/** Where an outbound message stored on its own updates the user's summary (UsersRepository). */
export interface SummaryWriter {
  /** False when the user is gone or being erased. */
  noteMessages(userId: string, messages: readonly SummaryMessage[]): Promise<boolean>;
  goneAfterErase(userId: string): Promise<boolean>;
}

/** How a reply was settled: what was newly stored (the summary counts it). */
export interface SettledReply {
  /** Outbound parts stored by this call (a redelivered settle stores none). */
  readonly stored: OutboundRecord[];
  /** The inbound message left the waiting states with this call. */
  readonly settled: boolean;
}

export class MessagesRepository {
  constructor(
    private readonly messages: Gateway<MessageDoc>,
    private readonly users: SummaryWriter,
    private readonly stats: StatsRepository,
  ) {}

  async getMessage(id: string): Promise<Message | null> {
    const doc = await this.messages.findOne({ _id: id });
    return doc?.userId ? toMessage(doc) : null;
  }

  /**
   * Stores an inbound message once: `duplicate` on a redelivery, which changes nothing. One that
   * waits for an answer counts once the answer is settled; any other is marked for the counters.
   */
  async recordInbound(record: InboundRecord): Promise<'inserted' | 'duplicate'> {
    const { text, terms } = storedText(record.text);
    return this.messages.insertOne({
      _id: record.id,
      userId: record.userId,
      waMessageId: record.id,
      direction: 'inbound',
      type: record.type,
      text,
      status: 'received',
      statusRank: 0,
      createdAt: record.createdAt,
      receivedAt: record.receivedAt,
      seqAt: record.receivedAt,
      role: record.role,
      phoneNumberId: record.phoneNumberId,
      terms,
      relatedId: record.relatedId,
      replyState: record.replyState,
      leaseUntil: null,
      rawJson: record.rawJson,
      ...(WAITING.includes(record.replyState) ? {} : { uncounted: true as const }),
    });
  }

  /** The messages an operator (`by`, a token's name) sent to a user at `at` (a request's time). */
  async operatorMessagesAt(userId: string, at: Date, by: string): Promise<Message[]> {
    const docs = await this.messages.find({ userId, createdAt: at, role: 'operator', by }, { limit: 10 });
    return docs.map(toMessage);
  }

  /** A user's latest messages on our clock, newest first (reply worker: what waits, and the context). */
  async recent(userId: string, limit: number): Promise<Message[]> {
    const docs = await this.messages.find({ userId }, { sort: { userId: -1, seqAt: -1, _id: -1 }, limit });
    return docs.map(toMessage);
  }

  /**
   * Inbound messages of a user still waiting for an answer, the first received first: Meta's
   * whole-second times tie within a burst, and a notification's messages are received in the
   * order Meta lists them.
   */
  async pendingReplies(userId: string, limit: number): Promise<Message[]> {
    const docs = await this.messages.find(
      { userId, direction: 'inbound', replyState: { $in: WAITING } },
      { sort: { userId: 1, seqAt: 1, _id: 1 }, limit },
    );
    return docs.map(toMessage);
  }

  /**
   * What was recorded as the answer to an inbound message (its parts), the first sent first: read
   * on its own when an answer of several parts is resumed, since the user may have written more
   * since than the worker's read of their latest messages holds. Parts go out after the message
   * was stored (a margin for the clocks of two instances).
   */
  async answersTo(inbound: Message): Promise<Message[]> {
    const docs = await this.messages.find(
      {
        userId: inbound.userId,
        seqAt: { $gte: new Date(inbound.seqAt.getTime() - ANSWER_CLOCK_MARGIN_MS) },
        relatedId: inbound.id,
        direction: 'outbound',
      },
      { sort: { userId: 1, seqAt: 1, _id: 1 }, limit: MAX_ANSWER_PARTS },
    );
    return docs.map(toMessage);
  }

  /**
   * Inbound messages whose answer looks abandoned (for the sweeper): still `pending` (or `sending`,
   * kept by earlier versions) and stored more than `graceMs` ago. Looks only at messages received in
   * the last `windowMs`, a range of the `receivedAt` index, so a sweep costs what that window holds.
   */
  async staleReplies(
    now: Date,
    limit: number,
    { graceMs = 60_000, windowMs = 6 * 60 * 60 * 1000 }: { graceMs?: number; windowMs?: number } = {},
  ): Promise<Message[]> {
    // On our clock: Meta's timestamp (createdAt) of a notification it delivered late may be days old.
    const docs = await this.messages.find(
      {
        receivedAt: { $gte: new Date(now.getTime() - windowMs), $lt: new Date(now.getTime() - graceMs) },
        direction: 'inbound',
        replyState: { $in: WAITING },
        // Not while a re-queue's wait runs (`deferRequeue`); `null` matches a missing field.
        $or: [{ requeueAfter: null }, { requeueAfter: { $lte: now } }],
      } as Filter<MessageDoc>,
      { sort: { receivedAt: 1 }, limit, projection: { rawJson: 0, raw: 0, terms: 0 } },
    );
    return docs.map(toMessage);
  }

  /**
   * After a sweep re-queued their users (one job answers all a user waits for), given each user's
   * oldest waiting message: leaves every message the user still waits on out of `staleReplies` for
   * as long as that oldest has waited (at least `minMs`, at most `maxMs`), so a user whose job waits
   * in a long queue gets another after about 1, 3, 7, 15 minutes, then every `maxMs`, not one at
   * every sweep (each sweep adding a job per waiting user to the backlog they wait behind). One
   * round trip.
   */
  async deferRequeue(
    oldest: readonly Pick<Message, 'userId' | 'receivedAt'>[],
    now: Date,
    { minMs, maxMs }: { minMs: number; maxMs: number },
  ): Promise<void> {
    if (oldest.length === 0) return;
    const ops = oldest.map(({ userId, receivedAt }): AnyBulkWriteOperation<MessageDoc> => {
      const waited = now.getTime() - (receivedAt ?? now).getTime();
      const wait = Math.min(maxMs, Math.max(minMs, waited));
      return {
        updateMany: {
          filter: { userId, direction: 'inbound', replyState: { $in: WAITING } },
          update: { $set: { requeueAfter: new Date(now.getTime() + wait) } },
        },
      };
    });
    await this.messages.bulkWrite(ops, false);
  }

  /**
   * Records the answer to an inbound message in one round trip: its outbound parts (joining a
   * status placeholder that arrived first) and the inbound message's reply state (and `read`).
   */
  async settleReply(input: {
    inbound: Message;
    parts: readonly OutboundRecord[];
    state: 'sent' | 'failed' | 'none';
    error: MessageError | null;
    read: boolean;
    /** The usage of a model call whose answer did not go out as such (counted with the message). */
    ai?: AiUsage | null;
  }): Promise<SettledReply> {
    const ops = input.parts.map(upsertOutbound);
    ops.push({
      updateOne: {
        filter: { _id: input.inbound.id, replyState: { $in: WAITING } },
        update: {
          $set: {
            replyState: input.state,
            leaseUntil: null,
            uncounted: true,
            ...(input.error ? { error: input.error } : {}),
            ...(input.ai ? { ai: input.ai } : {}),
            ...(input.read ? { status: 'read', statusRank: STATUS_RANK.read } : {}),
          },
          $unset: { replyPlan: '' },
        },
      },
    });
    const { result, duplicates } = await this.messages.bulkWriteKeyed(ops);
    const upserted = new Set(Object.keys(result?.upsertedIds ?? {}).map(Number));
    // A part that joined a placeholder whose status was `failed` keeps its failedUncounted mark:
    // the sweep counts it, like any failure a status reported.
    const stored = input.parts.filter((_, index) => !duplicates.has(index));
    const inboundOp = input.parts.length;
    const settled =
      !duplicates.has(inboundOp) && (result?.modifiedCount ?? 0) - (stored.length - upserted.size) > 0;
    const rekeyed = await this.rekeyCollisions(input.parts.filter((_, index) => duplicates.has(index)));
    return { stored: [...stored, ...rekeyed], settled };
  }

  /**
   * Keeps an answer of several parts on the inbound message it answers, before its first part is
   * sent (see `ReplyPlan`); settling the answer removes it.
   */
  async planReply(inboundId: string, plan: ReplyPlan): Promise<void> {
    await this.messages.updateOne(
      { _id: inboundId, replyState: { $in: WAITING } },
      { $set: { replyPlan: plan } },
    );
  }

  /**
   * Records a part of an answer of several parts as soon as Graph accepted it, before the next is
   * sent (the last goes with the inbound message's new state, in `settleReply`). False when it was
   * recorded before.
   */
  async recordPart(record: OutboundRecord): Promise<OutboundRecord | null> {
    return (await this.settleParts([record]))[0] ?? null;
  }

  /** Marks an inbound message's reply settled without an answer (poison queue: `failed`). */
  async finishReply(
    id: string,
    state: 'sent' | 'failed' | 'none',
    error: MessageError | null = null,
  ): Promise<boolean> {
    const result = await this.messages.updateOne(
      { _id: id, replyState: { $in: WAITING } },
      {
        $set: { replyState: state, leaseUntil: null, uncounted: true, ...(error ? { error } : {}) },
        $unset: { replyPlan: '' },
      },
    );
    return result.modified === 1;
  }

  /**
   * Stores an outbound message on its own (a welcome, an operator's message). A status may have
   * arrived first and left a placeholder under the same wamid: the content joins it.
   */
  async recordOutbound(record: OutboundRecord): Promise<'inserted' | 'duplicate' | 'erased'> {
    return (await this.storeOutbound(record)).outcome;
  }

  /** `recordOutbound`, with the id the message was stored under (see `rekeyCollisions`). */
  async storeOutbound(
    input: OutboundRecord,
  ): Promise<{ outcome: 'inserted' | 'duplicate' | 'erased'; id: string }> {
    const record = (await this.settleParts([input]))[0];
    if (!record) return { outcome: 'duplicate', id: input.id };
    // The summary rule, as for answers (./summary); the write marked it for the counters (./pending).
    const noted = await this.users.noteMessages(record.userId, [
      { id: record.id, text: record.text, at: record.createdAt, direction: 'outbound' },
    ]);
    if (
      !noted &&
      (await this.users.goneAfterErase(record.userId)) &&
      (await this.takeBack(record.userId, [record.id])).size
    )
      return { outcome: 'erased', id: record.id };
    return { outcome: 'inserted', id: record.id };
  }

  /**
   * Deletes messages a writer stored for a user erased meanwhile (./erase), once the erase is
   * over (see `goneAfterErase`), and returns those it deleted. Like the erase, it takes out of the
   * counters what they hold of each message as it deletes it (`countedAs`), so its writer counts
   * what it stored as usual, whoever deletes it.
   */
  async takeBack(userId: string, ids: readonly string[]): Promise<Set<string>> {
    const deleted = new Set<string>();
    const delta = new CounterDelta();
    for (const id of ids) {
      const doc = await this.messages.findOneAndDelete({ _id: id, userId }, { projection: COUNTED_FIELDS });
      if (!doc) continue;
      deleted.add(id);
      const counted = countedAs(doc);
      if (counted) delta.message(counted, -1);
    }
    if (deleted.size) await this.stats.apply(delta);
    return deleted;
  }

  /** Stores outbound records; returns those this call stored (a record stored before is left out). */
  private async settleParts(records: OutboundRecord[]): Promise<OutboundRecord[]> {
    const { duplicates } = await this.messages.bulkWriteKeyed(records.map(upsertOutbound));
    const stored = records.filter((_, index) => !duplicates.has(index));
    if (duplicates.size === 0) return stored;
    return [...stored, ...(await this.rekeyCollisions(records.filter((_, index) => duplicates.has(index))))];
  }

  /**
   * Outbound records whose wamid was already stored: a record stored before (a write repeated) is
   * left out; one whose wamid names another message (a Graph stand-in answering every send with
   * the same id, as Meta's examples do) is stored under an id of its own, keeping `waMessageId`,
   * so that no message the bot sent is missing from the conversation (statuses for that wamid
   * apply to the message stored under it first). Returns those stored, with their new id.
   */
  private async rekeyCollisions(records: readonly OutboundRecord[]): Promise<OutboundRecord[]> {
    if (records.length === 0) return [];
    // One read for all of them: what each colliding record's wamid already holds.
    const existing = new Map(
      (
        await this.messages.find(
          { _id: { $in: [...new Set(records.map((r) => r.id))] } },
          { projection: { userId: 1, relatedId: 1, role: 1, createdAt: 1 } },
        )
      ).map((doc) => [doc._id, doc] as const),
    );
    const others = records
      .filter((record) => {
        const held = existing.get(record.id);
        return !(held && isSameOutbound(held, record));
      })
      .map((record) => ({ ...record, id: collisionId(record) }));
    if (others.length === 0) return [];
    const { duplicates } = await this.messages.bulkWriteKeyed(others.map(upsertOutbound));
    return others.filter((_, index) => !duplicates.has(index));
  }

  /** Applies one delivery status (see `applyStatuses`). */
  async applyStatus(update: StatusUpdate): Promise<'applied' | 'stale'> {
    return (await this.applyStatuses([update])).applied ? 'applied' : 'stale';
  }

  /**
   * Applies delivery statuses to outbound messages in one round trip (a notification may carry
   * hundreds), only ever forward, whatever the order of arrival. A status for a message not stored
   * yet leaves a placeholder that the message joins. A `failed` status also marks the message
   * `failedUncounted` in the same write; the sweep folds it into the running counter. A status
   * naming an inbound message changes nothing (statuses describe what we sent): it is stale.
   */
  async applyStatuses(
    updates: readonly StatusUpdate[],
  ): Promise<{ applied: number; stale: number; placeholders: string[] }> {
    // An unordered bulk write may run its operations at once (Cosmos DB does): two statuses of one
    // message in one write could race, the second finding the first's new placeholder and taken
    // for stale. So one message's statuses go in successive writes ("waves"), in the order given;
    // a notification with one status per message, the usual case, is one write.
    const waves: StatusUpdate[][] = [];
    const seen = new Map<string, number>();
    for (const update of updates) {
      const wave = seen.get(update.waMessageId) ?? 0;
      seen.set(update.waMessageId, wave + 1);
      (waves[wave] ??= []).push(update);
    }
    let applied = 0;
    const placeholders = new Set<string>();
    for (const wave of waves) {
      const ops: AnyBulkWriteOperation<MessageDoc>[] = wave.map((update) => ({
        updateOne: {
          filter: {
            _id: update.waMessageId,
            statusRank: { $lt: STATUS_RANK[update.status] },
            direction: { $ne: 'inbound' },
          },
          update: statusChange(update),
          upsert: true,
        },
      }));
      // A duplicate key: the message exists and is inbound or not behind that status (stale).
      const { result, duplicates } = await this.messages.bulkWriteKeyed(ops);
      applied += wave.length - duplicates.size;
      // Upserted: a placeholder (no message under that wamid yet).
      for (const index of Object.keys(result?.upsertedIds ?? {})) {
        const update = wave[Number(index)];
        if (update) placeholders.add(update.waMessageId);
      }
    }
    return { applied, stale: updates.length - applied, placeholders: [...placeholders] };
  }

  /**
   * Deletes the status placeholders of these wamids (messages an erase removed: ./erase), never a
   * message stored under one since. Returns how many went.
   */
  async dropPlaceholdersOf(wamids: readonly string[]): Promise<number> {
    if (wamids.length === 0) return 0;
    return this.messages.deleteMany({
      userId: null,
      _id: { $in: [...wamids] },
    } as unknown as Filter<MessageDoc>);
  }

  /**
   * Deletes up to `limit` status placeholders older than `before`: statuses for a message never
   * stored (one another tool sent from the number, or one whose record a crash lost). A message
   * joins its placeholder within seconds; an old one only holds a wamid, which carries the
   * recipient's number, for good. Returns how many went. A placeholder joined meanwhile stays.
   */
  async dropPlaceholders(before: Date, limit = 500): Promise<number> {
    // `null` matches a missing field, and the userId_createdAt_id index serves it.
    const placeholder = { userId: null } as unknown as Filter<MessageDoc>;
    const docs = await this.messages.find(
      { ...placeholder, createdAt: { $lt: before } },
      { projection: { _id: 1 }, limit },
    );
    if (docs.length === 0) return 0;
    return this.messages.deleteMany({ ...placeholder, _id: { $in: docs.map((d) => d._id) } });
  }

  /**
   * The conversation before a message, for AI context: the last `limit` conversation messages of
   * the user, operators' messages among them (and the user's edits and deletions) after `since` (the last reset) and up to
   * `before`, oldest first, leaving out inbound
   * ones still waiting for their answer (later in the conversation: a burst longer than `limit`
   * filled the read and left no history). One indexed query.
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
    const docs = await this.messages.find(
      {
        userId,
        seqAt,
        // What operators wrote is part of the conversation. The user's edits and deletions of
        // their messages come along: the context shows the messages as the user left them (same
        // query, no round trip more).
        $or: [{ role: { $in: ['conversation', 'operator'] } }, { type: { $in: ['edit', 'revoke'] } }],
        _id: { $ne: beforeId },
        replyState: { $nin: WAITING },
      },
      { sort: { userId: -1, seqAt: -1, _id: -1 }, limit },
    );
    return docs.map(toMessage).reverse();
  }

  /**
   * How many outbound messages of a user since a time match: AI answers (with `orNotice`, also the
   * notices of that text: the apologies for failed calls), or the notices of one text.
   */
  async countOutboundSince(
    userId: string,
    since: Date,
    match: { ai: true; orNotice?: string } | { text: string },
  ): Promise<number> {
    const notice = (text: string) => ({ role: 'notice' as const, text });
    return this.messages.count({
      userId,
      createdAt: { $gte: since },
      direction: 'outbound',
      ...(!('ai' in match)
        ? notice(match.text)
        : match.orNotice === undefined
          ? { ai: { $ne: null } }
          : { $or: [{ ai: { $ne: null } }, notice(match.orNotice)] }),
    });
  }
}

function outboundContent(record: OutboundRecord) {
  const { text, terms } = storedText(record.text);
  return {
    userId: record.userId,
    waMessageId: record.waMessageId,
    direction: 'outbound' as const,
    type: record.type,
    text,
    createdAt: record.createdAt,
    seqAt: record.createdAt,
    role: record.role,
    phoneNumberId: record.phoneNumberId,
    terms,
    relatedId: record.relatedId,
    error: record.error,
    ai: record.ai,
    ...(record.by ? { by: record.by } : {}),
  };
}

/**
 * Records one outbound part; a status placeholder (a status that arrived first: no userId yet)
 * gets the content and keeps its status.
 */
function upsertOutbound(record: OutboundRecord): AnyBulkWriteOperation<MessageDoc> {
  return {
    updateOne: {
      filter: { _id: record.id, userId: { $exists: false } },
      update: {
        $set: { ...outboundContent(record), uncounted: true },
        $setOnInsert: { status: record.status, statusRank: STATUS_RANK[record.status] },
      },
      upsert: true,
    },
  };
}

/** True when a stored message is this outbound record (the same write repeated). */
function isSameOutbound(
  doc: Pick<MessageDoc, 'userId' | 'relatedId' | 'role' | 'createdAt'>,
  record: OutboundRecord,
) {
  return (
    doc.userId === record.userId &&
    (doc.relatedId ?? null) === record.relatedId &&
    doc.role === record.role &&
    doc.createdAt instanceof Date &&
    doc.createdAt.getTime() === record.createdAt.getTime()
  );
}

/** The id of an outbound message whose wamid another message holds: the same for the same record. */
function collisionId(record: OutboundRecord): string {
  const key = [record.id, record.userId, record.relatedId ?? '', record.role, record.createdAt.toISOString()];
  return `out:${createHash('sha256').update(key.join('\0')).digest('hex').slice(0, 32)}`;
}

/** A status moves a message forward; a placeholder gets its wamid and the status time. */
function statusChange(update: StatusUpdate) {
  return {
    $set: {
      status: update.status,
      statusRank: STATUS_RANK[update.status],
      [`statusTimes.${update.status}`]: update.at,
      ...(update.error ? { error: update.error } : {}),
      ...(update.status === 'failed' ? { failedUncounted: true as const } : {}),
    },
    $setOnInsert: { waMessageId: update.waMessageId, createdAt: update.at },
  };
}
