// Human handoff: a user handed to operators gets no bot answers until an operator hands them back,
// or until HANDOFF_HOURS pass without an operator reply (evaluated when read, never by a timer).
import type { Filter } from 'mongodb';
import type { Gateway } from './gateway';
import { HANDOFF_BY_USER, type Handoff, type Message, type User } from './types';
import { toMessage, type MessageDoc } from './messages';
import { toUser, type UserDoc } from './users';
import { LIVE_USER, type Position, type Slice } from './manage-queries';

const HOUR_MS = 3_600_000;
const EPOCH = new Date(0);
/** A user document operators may change (not being erased: an erase is for good). */
const LIVE = { erasing: { $ne: true } } as const;

/** The handoff in force at `now`, or null when there is none or it expired. */
export function activeHandoff(user: Pick<User, 'handoff'>, now: Date, hours: number): Handoff | null {
  const h = user.handoff;
  if (!h) return null;
  return h.activeAt.getTime() + hours * HOUR_MS > now.getTime() ? h : null;
}

/** A user's handoff as stored, with the mark of its last take: what `restore` puts back. */
export interface HandoffMark {
  readonly handoff: Handoff | null;
  readonly takenAt: Date | null;
}

const markOf = (doc: UserDoc): HandoffMark => ({
  handoff: doc.handoff ?? null,
  takenAt: doc.handoffTakenAt ?? null,
});

export interface WaitingChat {
  readonly user: User;
  readonly lastMessage: Message | null;
}

export class HandoffRepository {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
  ) {}

  /**
   * Hands a user to operators. A new handoff starts when none is in force; an operator taking a
   * conversation already handed over becomes its owner and restarts its clock (the user's own
   * request never does). `previous`: the handoff as stored before (expired ones included), for
   * `restore`. Null for an unknown user.
   */
  async take(
    userId: string,
    by: string,
    now: Date,
    hours: number,
  ): Promise<{ user: User; started: boolean; previous: HandoffMark } | null> {
    const cutoff = new Date(now.getTime() - hours * HOUR_MS);
    const handoff: Handoff = { since: now, by, activeAt: now };
    // Each take is marked (`handoffTakenAt`, kept after a hand back): a reply worker that prepared
    // an answer before it drops the answer, also when the conversation was handed back since.
    // Read as it was before the change, so that a refused operator message can put it back.
    const before = await this.users.findOneAndUpdate(
      { _id: userId, ...LIVE, $or: [{ handoff: null }, { 'handoff.activeAt': { $lte: cutoff } }] },
      { $set: { handoff, handoffTakenAt: now } },
      { returnDocument: 'before' },
    );
    if (before)
      return {
        user: toUser({ ...before, handoff, handoffTakenAt: now }),
        started: true,
        previous: markOf(before),
      };
    if (by === HANDOFF_BY_USER) {
      const kept = await this.users.findOne({ _id: userId, ...LIVE });
      if (kept) return { user: toUser(kept), started: false, previous: markOf(kept) };
    } else {
      const kept = await this.users.findOneAndUpdate(
        { _id: userId, ...LIVE, handoff: { $ne: null } },
        { $set: { 'handoff.by': by, 'handoff.activeAt': now, handoffTakenAt: now } },
        { returnDocument: 'before' },
      );
      if (kept?.handoff) {
        const owned = { ...kept.handoff, by, activeAt: now };
        return {
          user: toUser({ ...kept, handoff: owned, handoffTakenAt: now }),
          started: false,
          previous: markOf(kept),
        };
      }
    }
    // Handed back between the two updates: try once more from the start (not for a user gone or
    // being erased: null).
    const retry = await this.users.findOne({ _id: userId, ...LIVE });
    return retry ? this.take(userId, by, now, hours) : null;
  }

  /**
   * Undoes a `take` whose reason fell through (WhatsApp refused the operator's message): the
   * handoff and its mark go back to `previous`, only while it is still the one `take` left
   * (`taken`), so a change made since by someone else stays.
   */
  async restore(userId: string, taken: Handoff, previous: HandoffMark): Promise<void> {
    await this.users.updateOne(
      {
        _id: userId,
        'handoff.since': taken.since,
        'handoff.by': taken.by,
        'handoff.activeAt': taken.activeAt,
      },
      { $set: { handoff: previous.handoff, handoffTakenAt: previous.takenAt } },
    );
  }

  /** Ends the handoff (an operator handed back). Null for an unknown user, or one being erased. */
  async handBack(userId: string): Promise<User | null> {
    const doc = await this.users.findOneAndUpdate(
      { _id: userId, ...LIVE },
      { $set: { handoff: null } },
      { returnDocument: 'after' },
    );
    return doc ? toUser(doc) : null;
  }

  /**
   * Ends an expired handoff, only if it is still the one that expired; otherwise returns the user
   * as stored now (an operator may have restarted the handoff's clock since `handoff` was read),
   * or null for a user gone.
   */
  async expire(
    userId: string,
    handoff: Handoff,
  ): Promise<{ ended: true } | { ended: false; user: User | null }> {
    const result = await this.users.updateOne(
      { _id: userId, 'handoff.since': handoff.since, 'handoff.activeAt': handoff.activeAt },
      { $set: { handoff: null } },
    );
    if (result.modified === 1) return { ended: true };
    const doc = await this.users.findOne({ _id: userId });
    return { ended: false, user: doc ? toUser(doc) : null };
  }

  /** An operator replied: the handoff's clock restarts. */
  async noteOperatorReply(userId: string, at: Date): Promise<void> {
    await this.users.updateOne({ _id: userId, handoff: { $ne: null } }, { $max: { 'handoff.activeAt': at } });
  }

  /**
   * Conversations handed to operators whose handoff is in force, the longest-waiting first (by
   * `handoff.since`, ties by id), with their last message. Sorted by the index {handoff.since, _id}.
   */
  async waiting(input: {
    limit: number;
    after: Position | null;
    now: Date;
    hours: number;
  }): Promise<Slice<WaitingChat>> {
    const cutoff = new Date(input.now.getTime() - input.hours * HOUR_MS);
    const position = input.after;
    const filter: Filter<UserDoc> = position
      ? {
          'handoff.since': { $gte: position.t },
          $or: [{ 'handoff.since': { $gt: position.t } }, { _id: { $gt: position.id } }],
        }
      : { 'handoff.since': { $gt: EPOCH } };
    filter['handoff.activeAt'] = { $gt: cutoff };
    Object.assign(filter, LIVE_USER);
    const docs = await this.users.find(filter, {
      sort: { 'handoff.since': 1, _id: 1 },
      limit: input.limit + 1,
    });
    const more = docs.length > input.limit;
    const page = more ? docs.slice(0, input.limit) : docs;
    const ids = page.map((u) => u.lastMessageId).filter((id): id is string => typeof id === 'string');
    const messages = ids.length
      ? await this.messages.find({ _id: { $in: ids }, userId: { $exists: true } })
      : [];
    const byId = new Map(messages.map((m) => [m._id, m]));
    const items = page.map((u) => {
      const m = u.lastMessageId ? byId.get(u.lastMessageId) : undefined;
      return { user: toUser(u), lastMessage: m ? toMessage(m) : null };
    });
    const last = page[page.length - 1];
    return {
      items,
      next: more && last?.handoff ? { t: last.handoff.since, id: last._id } : null,
    };
  }

  /**
   * The user's latest inbound message on Meta's clock: the business number it came through
   * (operator messages go out through it), and Meta's time and ours, from which the 24-hour window
   * of free text runs (../whatsapp/outbound.ts `windowFrom`).
   */
  async lastInbound(
    userId: string,
  ): Promise<{ createdAt: Date; receivedAt: Date | null; phoneNumberId: string | null } | null> {
    const [doc] = await this.messages.find(
      { userId, direction: 'inbound' },
      {
        sort: { userId: -1, createdAt: -1, _id: -1 },
        limit: 1,
        projection: { createdAt: 1, receivedAt: 1, phoneNumberId: 1 },
      },
    );
    return doc?.createdAt
      ? {
          createdAt: doc.createdAt,
          receivedAt: doc.receivedAt ?? null,
          phoneNumberId: doc.phoneNumberId ?? null,
        }
      : null;
  }

  /**
   * The user's latest inbound message to a business number as it reached us (our clock: the
   * conversation's order, `seqAt`, which is when ingest stored it): Meta's time and ours, for the
   * 24-hour window of the reply worker and the operator send. One read on the `userId, seqAt` index.
   */
  async lastArrived(
    userId: string,
    phoneNumberId: string | null,
  ): Promise<{ createdAt: Date; receivedAt: Date | null } | null> {
    const [doc] = await this.messages.find(
      { userId, direction: 'inbound', phoneNumberId },
      {
        sort: { userId: -1, seqAt: -1, _id: -1 },
        limit: 1,
        projection: { createdAt: 1, receivedAt: 1 },
      },
    );
    return doc?.createdAt ? { createdAt: doc.createdAt, receivedAt: doc.receivedAt ?? null } : null;
  }

  /**
   * The business number of the user's latest message that names one, in either direction (a
   * welcome counts), or null: migrated messages carry none.
   */
  async lastBusinessNumber(userId: string): Promise<string | null> {
    const [doc] = await this.messages.find(
      { userId, phoneNumberId: { $ne: null } },
      {
        sort: { userId: -1, createdAt: -1, _id: -1 },
        limit: 1,
        projection: { phoneNumberId: 1 },
      },
    );
    return doc?.phoneNumberId ?? null;
  }
}
