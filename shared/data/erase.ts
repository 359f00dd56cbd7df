// What the data module stores about one person, exported or erased: the user, their messages and
// every archived item that concerns them (by user id, or by the pseudonym of a number or bsuid
// they used). Erase also lowers the counters by what it removes; the audit trail stays.
import { randomBytes } from 'node:crypto';
import { subjectOf, toEvent, type EventDoc } from './events';
import type { Gateway } from './gateway';
import { countedAs } from './message-doc';
import { toMessage, type MessageDoc } from './messages';
import { CounterDelta, type StatsRepository } from './stats';
import type { ArchivedEvent, Message, User } from './types';
import { toUser, type UserDoc } from './users';

export const AUDIT_KIND = 'audit';
/** An export holds at most this many messages and archived items (the newest are left out). */
export const MAX_EXPORT_MESSAGES = 10_000;
export const MAX_EXPORT_EVENTS = 1_000;

export interface UserExport {
  readonly user: User;
  readonly messages: Message[];
  readonly events: ArchivedEvent[];
  /** True when the bounds above cut the export. */
  readonly truncated: boolean;
}

export interface EraseReport {
  readonly messages: number;
  readonly events: number;
}

const subjectsOf = (u: UserDoc): string[] =>
  [u.waId, u.bsuid, ...(u.previousWaIds ?? [])].filter((v): v is string => Boolean(v)).map(subjectOf);

export class PersonalData {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
    private readonly events: Gateway<EventDoc>,
    private readonly stats: StatsRepository,
  ) {}

  private async archivedOf(user: UserDoc, limit: number): Promise<EventDoc[]> {
    const byUser = await this.events.find(
      { userId: user._id, kind: { $ne: AUDIT_KIND } },
      { sort: { userId: 1, createdAt: 1 }, limit },
    );
    const bySubject: EventDoc[] = [];
    for (const subject of subjectsOf(user)) {
      bySubject.push(...(await this.events.find({ subject }, { sort: { subject: 1, createdAt: 1 }, limit })));
    }
    const seen = new Set(byUser.map((e) => e._id));
    return [...byUser, ...bySubject.filter((e) => !seen.has(e._id) && seen.add(e._id))]
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .slice(0, limit);
  }

  /** Everything stored about a user, oldest first, bounded. Null when the user does not exist. */
  async exportUser(userId: string): Promise<UserExport | null> {
    const user = await this.users.findOne({ _id: userId });
    if (!user) return null;
    const [messages, events] = await Promise.all([
      this.messages.find(
        { userId },
        { sort: { userId: 1, createdAt: 1, _id: 1 }, limit: MAX_EXPORT_MESSAGES + 1 },
      ),
      this.archivedOf(user, MAX_EXPORT_EVENTS + 1),
    ]);
    return {
      user: toUser(user),
      messages: messages.slice(0, MAX_EXPORT_MESSAGES).map(toMessage),
      events: events.slice(0, MAX_EXPORT_EVENTS).map(toEvent),
      truncated: messages.length > MAX_EXPORT_MESSAGES || events.length > MAX_EXPORT_EVENTS,
    };
  }

  /**
   * Erases a user: messages, archived items, the user (with their reply lock), and lowers the
   * counters by what is erased. The user goes last, so an interrupted erase can be run again.
   * The same person writing later is a new user. Null when the user does not exist.
   */
  async eraseUser(userId: string): Promise<EraseReport | null> {
    const user = await this.users.findOne({ _id: userId });
    if (!user) return null;
    const delta = new CounterDelta().user(user.createdAt, -1);
    let count = 0;
    for await (const m of this.messages.iterate(
      { userId },
      { projection: { direction: 1, status: 1, ai: 1, createdAt: 1, replyState: 1, failedUncounted: 1 } },
    )) {
      count++;
      // What the counters hold of it (nothing yet for an answer still awaited, say).
      const counted = countedAs(m);
      if (counted) delta.message(counted, -1);
    }
    await this.messages.deleteMany({ userId });
    let events = await this.events.deleteMany({ userId, kind: { $ne: AUDIT_KIND } });
    for (const subject of subjectsOf(user)) events += await this.events.deleteMany({ subject });
    await this.stats.apply(delta);
    await this.users.deleteOne({ _id: userId });
    return { messages: count, events };
  }

  /**
   * Records who (a token's name) did what to which user, and when; never a message's text.
   * Returns the entry's id.
   */
  async audit(entry: { tokenName: string; action: string; userId: string; at: Date }): Promise<string> {
    const id = `audit:${randomBytes(8).toString('hex')}`;
    await this.events.insertOne({
      _id: id,
      kind: AUDIT_KIND,
      reason: entry.action,
      createdAt: entry.at,
      userId: entry.userId,
      payload: { tokenName: entry.tokenName, action: entry.action, userId: entry.userId, at: entry.at },
    });
    return id;
  }

  /**
   * Takes back an audit entry for an action that did not happen after all (an operator message
   * WhatsApp refused with a 4xx: nothing was sent). Entries are recorded before their action, so
   * that no action is ever unaudited; this is the only way one leaves the trail.
   */
  async withdrawAudit(id: string): Promise<void> {
    await this.events.deleteOne({ _id: id, kind: AUDIT_KIND });
  }

  async auditTrail(limit = 100): Promise<ArchivedEvent[]> {
    const docs = await this.events.find({ kind: AUDIT_KIND }, { sort: { kind: 1, createdAt: 1 }, limit });
    return docs.map(toEvent);
  }
}
