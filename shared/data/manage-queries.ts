// Management queries: keyset-paged lists, search and counts. Every list is bounded and every sort
// is backed by an index of ./indexes with exactly its paths (Cosmos DB's rule).
import type { Filter } from 'mongodb';
import type { Gateway } from './gateway';
import { toMessage, type MessageDoc } from './messages';
import {
  holdsEvery,
  longQueryWords,
  queryTerms,
  startsWordsIn,
  userLongQueryWords,
  userQueryTerms,
} from './terms';
import type { Message, User } from './types';
import { MAX_WA_ID_DIGITS, toUser, type UserDoc } from './users';

/** A keyset position: the sort time and id of the last item of the previous page. */
export interface Position {
  readonly t: Date;
  readonly id: string;
}

export interface Slice<T> {
  readonly items: T[];
  /** The position after the last item when more items exist. */
  readonly next: Position | null;
}

/**
 * Documents strictly after `position` in (time desc, _id desc) order. The range on the time field
 * bounds the index scan; the $or only settles ties on that time.
 */
function after<T>(field: string, position: Position | null): Filter<T> {
  if (!position) return {};
  return {
    [field]: { $lte: position.t },
    $or: [{ [field]: { $lt: position.t } }, { _id: { $lt: position.id } }],
  } as Filter<T>;
}

/**
 * Users no erase is taking: one under way is gone to the management API (its lists and searches
 * too). No index holds `erasing` (few users ever carry it): the sort's index serves the list and
 * the filter drops the rare user under erase as the scan passes it.
 */
export const LIVE_USER = { erasing: { $ne: true } } as const;

function slice<D, T>(docs: D[], limit: number, map: (d: D) => T, position: (d: D) => Position): Slice<T> {
  const more = docs.length > limit;
  const page = more ? docs.slice(0, limit) : docs;
  const last = page[page.length - 1];
  return { items: page.map(map), next: more && last ? position(last) : null };
}

export class ManageQueries {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
  ) {}

  /**
   * Users by last activity, newest first, ties by id. `q` written as a phone number matches the
   * start of the number; otherwise each of its words must start a word of the name or the number.
   */
  async listUsers(input: { limit: number; after: Position | null; q: string | null }): Promise<Slice<User>> {
    const terms = input.q === null ? null : userQueryTerms(input.q, MAX_WA_ID_DIGITS);
    if (terms?.length === 0) return { items: [], next: null };
    // The searchKeys index (single-field, multikey) finds the candidates; the lastMessageAt_id
    // index gives the order.
    const filter = {
      ...(terms ? holdsEvery('searchKeys', terms) : {}),
      ...after<UserDoc>('lastMessageAt', input.after),
      ...LIVE_USER,
    } as Filter<UserDoc>;
    const docs = await this.users.find(filter, {
      sort: { lastMessageAt: -1, _id: -1 },
      limit: input.limit + 1,
    });
    const found = slice(docs, input.limit, toUser, (d) => ({ t: d.lastMessageAt, id: d._id }));
    // A word longer than the stored prefixes is matched whole here (the page may then be short;
    // its cursor still goes on after the last user read).
    const long = input.q === null ? [] : userLongQueryWords(input.q);
    return long.length
      ? { items: found.items.filter((u) => startsWordsIn(long, u.name, u.waId)), next: found.next }
      : found;
  }

  /** A user's messages, newest first, ties by id. */
  async listMessages(input: {
    userId: string;
    limit: number;
    after: Position | null;
  }): Promise<Slice<Message>> {
    const filter: Filter<MessageDoc> = {
      userId: input.userId,
      ...after<MessageDoc>('createdAt', input.after),
    };
    const docs = await this.messages.find(filter, {
      sort: { userId: -1, createdAt: -1, _id: -1 },
      limit: input.limit + 1,
    });
    return slice(docs, input.limit, toMessage, (d) => ({ t: d.createdAt ?? new Date(0), id: d._id }));
  }

  /** The most recently active users with their last message (two bounded queries). */
  async latestChats(limit: number): Promise<{ user: User; lastMessage: Message }[]> {
    const users = await this.users.find(LIVE_USER, { sort: { lastMessageAt: -1, _id: -1 }, limit });
    const ids = users.map((u) => u.lastMessageId).filter((id): id is string => typeof id === 'string');
    const messages = ids.length
      ? await this.messages.find({ _id: { $in: ids }, userId: { $exists: true } })
      : [];
    const byId = new Map(messages.map((m) => [m._id, m]));
    const chats: { user: User; lastMessage: Message }[] = [];
    for (const u of users) {
      const m = u.lastMessageId ? byId.get(u.lastMessageId) : undefined;
      if (m) chats.push({ user: toUser(u), lastMessage: toMessage(m) });
    }
    return chats;
  }

  /** Messages whose words start with every word of `q` (case and accents ignored), newest first. */
  async searchMessages(input: { q: string; limit: number; after: Position | null }): Promise<Slice<Message>> {
    const terms = queryTerms(input.q);
    if (terms.length === 0) return { items: [], next: null };
    // The terms index (single-field, multikey) finds the candidates; the createdAt_id index gives
    // the order.
    const filter = {
      ...holdsEvery('terms', terms),
      ...after<MessageDoc>('createdAt', input.after),
    } as Filter<MessageDoc>;
    const docs = await this.messages.find(filter, {
      sort: { createdAt: -1, _id: -1 },
      limit: input.limit + 1,
    });
    const found = slice(
      docs,
      input.limit,
      (d) => d,
      (d) => ({ t: d.createdAt ?? new Date(0), id: d._id }),
    );
    // The messages of a user under erase are left out (the page may then be short; its cursor
    // still goes on after the last message read).
    const owners = [...new Set(found.items.map((d) => d.userId).filter((id): id is string => Boolean(id)))];
    const erasing = owners.length
      ? new Set(
          (await this.users.find({ _id: { $in: owners }, erasing: true }, { projection: { _id: 1 } })).map(
            (u) => u._id,
          ),
        )
      : new Set<string>();
    // A word longer than the stored prefixes is matched whole (the page may be short in the same way).
    const long = longQueryWords(input.q);
    return {
      items: found.items
        .filter((d) => !erasing.has(d.userId ?? '') && startsWordsIn(long, d.text))
        .map(toMessage),
      next: found.next,
    };
  }

  async countUsers(now: Date): Promise<{ total: number; optedOut: number; active24h: number }> {
    const [total, optedOut, active24h] = await Promise.all([
      // O(1) from collection metadata; a count of all users would read every one.
      this.users.estimatedCount(),
      this.users.count({ optedOut: true }),
      this.users.count({ lastMessageAt: { $gte: new Date(now.getTime() - 86_400_000) } }),
    ]);
    return { total, optedOut, active24h };
  }
}
