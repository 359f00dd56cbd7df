// Management queries: keyset-paged lists, search, export, erase, API tokens and the audit trail.
// Every list is bounded and every sort is backed by an index of ./indexes.
import { randomBytes } from 'node:crypto';
import type { Collection, Filter } from 'mongodb';
import type { ArchivedEvent, Message, User } from './types';
import { withRetry } from './client';
import { toEvent, type EventDoc } from './events';
import { toMessage, type MessageDoc } from './messages';
import { dayKey, type StatsRepository } from './stats';
import { queryTerms, fold } from './terms';
import { toUser, type UserDoc } from './users';

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

function slice<D, T>(docs: D[], limit: number, map: (d: D) => T, position: (d: D) => Position): Slice<T> {
  const more = docs.length > limit;
  const page = more ? docs.slice(0, limit) : docs;
  const last = page[page.length - 1];
  return { items: page.map(map), next: more && last ? position(last) : null };
}

export interface TokenDoc {
  _id: string;
  name: string;
  /** SHA-256 (hex) of the token; the token itself is never stored. */
  hash: string;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

export interface ApiToken {
  readonly id: string;
  readonly name: string;
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly lastUsedAt: Date | null;
}

const toToken = (d: TokenDoc): ApiToken => ({
  id: d._id,
  name: d.name,
  createdAt: d.createdAt,
  expiresAt: d.expiresAt,
  revokedAt: d.revokedAt,
  lastUsedAt: d.lastUsedAt,
});

/** Last-use times are written at most this often (a write per request would cost RUs). */
const LAST_USED_GRANULARITY_MS = 60_000;

export class TokensRepository {
  constructor(readonly tokens: Collection<TokenDoc>) {}

  async create(input: {
    name: string;
    hash: string;
    createdAt: Date;
    expiresAt: Date | null;
  }): Promise<ApiToken> {
    const doc: TokenDoc = {
      _id: randomBytes(5).toString('hex'),
      name: input.name,
      hash: input.hash,
      createdAt: input.createdAt,
      expiresAt: input.expiresAt,
      revokedAt: null,
      lastUsedAt: null,
    };
    await withRetry(() => this.tokens.insertOne(doc));
    return toToken(doc);
  }

  async findByHash(hash: string): Promise<ApiToken | null> {
    const doc = await withRetry(() => this.tokens.findOne({ hash }));
    return doc ? toToken(doc) : null;
  }

  async list(limit = 1000): Promise<ApiToken[]> {
    const docs = await withRetry(() => this.tokens.find({}).sort({ _id: 1 }).limit(limit).toArray());
    return docs.map(toToken);
  }

  /** True when the token exists (revoking twice keeps the first time). */
  async revoke(id: string, at: Date): Promise<boolean> {
    const result = await withRetry(() =>
      this.tokens.updateOne({ _id: id }, [{ $set: { revokedAt: { $ifNull: ['$revokedAt', at] } } }]),
    ).catch(async () => {
      // Servers without update pipelines (FerretDB v1): two steps.
      const found = await withRetry(() => this.tokens.findOne({ _id: id }));
      if (!found) return { matchedCount: 0 };
      await withRetry(() => this.tokens.updateOne({ _id: id, revokedAt: null }, { $set: { revokedAt: at } }));
      return { matchedCount: 1 };
    });
    return result.matchedCount === 1;
  }

  async touch(id: string, at: Date): Promise<void> {
    await withRetry(() =>
      this.tokens.updateOne(
        {
          _id: id,
          $or: [
            { lastUsedAt: null },
            { lastUsedAt: { $lt: new Date(at.getTime() - LAST_USED_GRANULARITY_MS) } },
          ],
        },
        { $set: { lastUsedAt: at } },
      ),
    );
  }
}

export interface UserExport {
  readonly user: User;
  readonly messages: Message[];
  readonly events: ArchivedEvent[];
}

export interface EraseReport {
  readonly messages: number;
  readonly events: number;
}

export const AUDIT_KIND = 'audit';

export class ManageQueries {
  constructor(
    private readonly users: Collection<UserDoc>,
    private readonly messages: Collection<MessageDoc>,
    private readonly events: Collection<EventDoc>,
    private readonly stats: StatsRepository,
  ) {}

  /** Users by last activity, newest first, ties by id; `q` matches a prefix of the number or of a name word. */
  async listUsers(input: { limit: number; after: Position | null; q: string | null }): Promise<Slice<User>> {
    const key = input.q === null ? null : fold(input.q.trim()).replace(/^\+/, '');
    // With `q`, the equality on searchKeys leads the index {searchKeys, lastMessageAt, _id}, which
    // then yields the documents in sort order. The sort names only the non-array fields: a sort on
    // an array field uses its largest element (not the matched one) and could not use the index.
    const filter: Filter<UserDoc> = {
      ...(key === null ? {} : { searchKeys: key }),
      ...after<UserDoc>('lastMessageAt', input.after),
    };
    const docs = await withRetry(() =>
      this.users
        .find(filter)
        .sort({ lastMessageAt: -1, _id: -1 })
        .limit(input.limit + 1)
        .toArray(),
    );
    return slice(docs, input.limit, toUser, (d) => ({ t: d.lastMessageAt, id: d._id }));
  }

  async getUser(id: string): Promise<User | null> {
    const doc = await withRetry(() => this.users.findOne({ _id: id }));
    return doc ? toUser(doc) : null;
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
    const docs = await withRetry(() =>
      this.messages
        .find(filter)
        .sort({ userId: -1, createdAt: -1, _id: -1 })
        .limit(input.limit + 1)
        .toArray(),
    );
    return slice(docs, input.limit, toMessage, (d) => ({ t: d.createdAt ?? new Date(0), id: d._id }));
  }

  /** The most recently active users with their last message (two bounded queries). */
  async latestChats(limit: number): Promise<{ user: User; lastMessage: Message }[]> {
    const users = await withRetry(() =>
      this.users.find({}).sort({ lastMessageAt: -1, _id: -1 }).limit(limit).toArray(),
    );
    const ids = users.map((u) => u.lastMessageId).filter((id): id is string => typeof id === 'string');
    const messages = ids.length
      ? await withRetry(() => this.messages.find({ _id: { $in: ids }, userId: { $exists: true } }).toArray())
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
    // The equality on one term leads the index {terms, createdAt, _id}; as for users, the sort
    // names only the non-array fields so that the index provides it.
    const filter: Filter<MessageDoc> = {
      terms: terms.length === 1 ? (terms[0] as string) : { $all: terms },
      ...after<MessageDoc>('createdAt', input.after),
    };
    const docs = await withRetry(() =>
      this.messages
        .find(filter)
        .sort({ createdAt: -1, _id: -1 })
        .limit(input.limit + 1)
        .toArray(),
    );
    return slice(docs, input.limit, toMessage, (d) => ({ t: d.createdAt ?? new Date(0), id: d._id }));
  }

  async countUsers(now: Date): Promise<{ total: number; optedOut: number; active24h: number }> {
    const [total, optedOut, active24h] = await Promise.all([
      // O(1) from collection metadata; a count of all users would read every one.
      withRetry(() => this.users.estimatedDocumentCount()),
      withRetry(() => this.users.countDocuments({ optedOut: true })),
      withRetry(() =>
        this.users.countDocuments({ lastMessageAt: { $gte: new Date(now.getTime() - 86_400_000) } }),
      ),
    ]);
    return { total, optedOut, active24h };
  }

  /** Everything stored about a user: the user, their messages oldest first, their archived events. */
  async exportUser(userId: string): Promise<UserExport | null> {
    const user = await this.getUser(userId);
    if (!user) return null;
    const [messages, events] = await Promise.all([
      withRetry(() => this.messages.find({ userId }).sort({ userId: 1, createdAt: 1, _id: 1 }).toArray()),
      withRetry(() =>
        this.events
          .find({ userId, kind: { $ne: AUDIT_KIND } })
          .sort({ userId: 1, createdAt: 1 })
          .toArray(),
      ),
    ]);
    return { user, messages: messages.map(toMessage), events: events.map(toEvent) };
  }

  /**
   * Erases a user, their messages and archived events (the audit trail stays), and lowers the
   * counters by what is erased. The user goes last, so an interrupted erase can be run again.
   * Null when the user does not exist.
   */
  async eraseUser(userId: string): Promise<EraseReport | null> {
    const user = await withRetry(() => this.users.findOne({ _id: userId }));
    if (!user) return null;
    const byDay = new Map<string, { inbound: number; outbound: number }>();
    let failed = 0;
    let aiRequests = 0;
    let aiTokens = 0;
    const byModel = new Map<string, { requests: number; tokens: number }>();
    let count = 0;
    const cursor = this.messages
      .find({ userId })
      .sort({ userId: 1, createdAt: 1, _id: 1 })
      .project<Pick<MessageDoc, '_id' | 'direction' | 'status' | 'ai' | 'createdAt'>>({
        direction: 1,
        status: 1,
        ai: 1,
        createdAt: 1,
      });
    for await (const m of cursor) {
      count++;
      const day = dayKey(m.createdAt ?? new Date(0));
      const entry = byDay.get(day) ?? { inbound: 0, outbound: 0 };
      if (m.direction === 'inbound') entry.inbound++;
      else {
        entry.outbound++;
        if (m.status === 'failed') failed++;
        if (m.ai) {
          aiRequests++;
          aiTokens += m.ai.totalTokens;
          const model = byModel.get(m.ai.model) ?? { requests: 0, tokens: 0 };
          model.requests++;
          model.tokens += m.ai.totalTokens;
          byModel.set(m.ai.model, model);
        }
      }
      byDay.set(day, entry);
    }
    await withRetry(() => this.messages.deleteMany({ userId }));
    const createdDay = dayKey(user.createdAt);
    if (!byDay.has(createdDay)) byDay.set(createdDay, { inbound: 0, outbound: 0 });
    for (const [day, c] of byDay) {
      await this.stats.bump(
        { inbound: -c.inbound, outbound: -c.outbound, newUsers: day === createdDay ? -1 : 0 },
        new Date(`${day}T12:00:00Z`),
      );
    }
    await this.stats.bump({ failed: -failed, aiRequests: -aiRequests, aiTokens: -aiTokens }, new Date());
    for (const [model, used] of byModel) await this.stats.bumpModel(model, -used.requests, -used.tokens);
    const events = await withRetry(() => this.events.deleteMany({ userId, kind: { $ne: AUDIT_KIND } }));
    await withRetry(() => this.users.deleteOne({ _id: userId }));
    return { messages: count, events: events.deletedCount };
  }

  /** Records who (a token's name) did what to which user, and when. */
  async audit(entry: {
    tokenName: string;
    action: 'export' | 'erase' | 'handoff' | 'handback' | 'send';
    userId: string;
    at: Date;
  }): Promise<void> {
    const doc: EventDoc = {
      _id: `audit:${randomBytes(8).toString('hex')}`,
      kind: AUDIT_KIND,
      reason: entry.action,
      createdAt: entry.at,
      userId: entry.userId,
      payload: { tokenName: entry.tokenName, action: entry.action, userId: entry.userId, at: entry.at },
    };
    await withRetry(() => this.events.insertOne(doc));
  }

  async auditTrail(limit = 100): Promise<ArchivedEvent[]> {
    const docs = await withRetry(() =>
      this.events.find({ kind: AUDIT_KIND }).sort({ kind: 1, createdAt: 1 }).limit(limit).toArray(),
    );
    return docs.map(toEvent);
  }
}
