// Users: one document per person, with a denormalised conversation summary so lists never scan
// messages. Found by phone number (waId), else by business-scoped user id (bsuid).
import { createHash } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { Identity, User } from './types';
import { directGate, isDuplicateKey, withRetry, type UpdateGate } from './client';
import { prefixTerms } from './terms';
import type { StatsRepository } from './stats';
import type { LocksRepository } from './locks';

export interface UserDoc {
  _id: string;
  waId: string | null;
  bsuid: string | null;
  name: string | null;
  createdAt: Date;
  lastMessageAt: Date;
  lastMessagePreview: string | null;
  lastMessageId: string | null;
  messageCount: number;
  optedOut: boolean;
  welcomeSentAt: Date | null;
  contextResetAt: Date | null;
  /** Prefixes of the number and of the name's words, for `q` search. */
  searchKeys: string[];
  previousWaIds?: string[];
  /** The per-user reply lock; `generation` numbers its claims in `locks`. */
  replyLock?: { owner: string | null; until: Date; generation: number } | null;
}

export const toUser = (d: UserDoc): User => ({
  id: d._id,
  waId: d.waId,
  bsuid: d.bsuid,
  name: d.name,
  createdAt: d.createdAt,
  lastMessageAt: d.lastMessageAt,
  lastMessagePreview: d.lastMessagePreview,
  lastMessageId: d.lastMessageId ?? null,
  messageCount: d.messageCount,
  optedOut: d.optedOut,
  welcomeSentAt: d.welcomeSentAt ?? null,
  contextResetAt: d.contextResetAt ?? null,
});

/** A stable opaque id derived from the first identifier seen; never the phone number itself. */
export function userIdFor(identity: Pick<Identity, 'waId' | 'bsuid'>): string {
  const natural = identity.waId ? `wa:${identity.waId}` : `bsuid:${identity.bsuid ?? ''}`;
  return 'u_' + createHash('sha256').update(natural).digest('hex').slice(0, 24);
}

export const searchKeysFor = (waId: string | null, name: string | null): string[] => {
  const keys = new Set(prefixTerms(name));
  if (waId) for (let n = 1; n <= waId.length; n++) keys.add(waId.slice(0, n));
  return [...keys];
};

const PREVIEW_LENGTH = 120;
export const preview = (text: string): string =>
  text.length > PREVIEW_LENGTH ? `${text.slice(0, PREVIEW_LENGTH - 1)}…` : text;

export class UsersRepository {
  constructor(
    readonly users: Collection<UserDoc>,
    private readonly stats: StatsRepository,
    private readonly locks: LocksRepository,
    private readonly gate: UpdateGate = directGate,
  ) {}

  async getUser(id: string): Promise<User | null> {
    const doc = await withRetry(() => this.users.findOne({ _id: id }));
    return doc ? toUser(doc) : null;
  }

  async findByIdentity(identity: Pick<Identity, 'waId' | 'bsuid'>): Promise<User | null> {
    let doc: UserDoc | null = null;
    if (identity.waId) doc = await withRetry(() => this.users.findOne({ waId: identity.waId }));
    if (!doc && identity.bsuid) doc = await withRetry(() => this.users.findOne({ bsuid: identity.bsuid }));
    return doc ? toUser(doc) : null;
  }

  /**
   * Finds the user of an identity (by waId, else bsuid) and refreshes what is newly known of them,
   * or creates them. Concurrent first contacts create one user: the id is natural, so a second
   * insert hits the duplicate key and re-reads.
   */
  async upsertFromContact(identity: Identity, at: Date): Promise<{ user: User; created: boolean }> {
    if (!identity.waId && !identity.bsuid) throw new Error('an identity needs a waId or a bsuid');
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.findByIdentity(identity);
      if (existing) {
        const set: Partial<UserDoc> = {};
        if (identity.waId && existing.waId !== identity.waId && !existing.waId) set.waId = identity.waId;
        if (identity.bsuid && existing.bsuid !== identity.bsuid) set.bsuid = identity.bsuid;
        if (identity.name && existing.name !== identity.name) set.name = identity.name;
        if (Object.keys(set).length === 0) return { user: existing, created: false };
        set.searchKeys = searchKeysFor(set.waId ?? existing.waId, set.name ?? existing.name);
        const updated = await withRetry(() =>
          this.users.findOneAndUpdate({ _id: existing.id }, { $set: set }, { returnDocument: 'after' }),
        );
        if (updated) return { user: toUser(updated), created: false };
        continue; // erased meanwhile: create it again
      }
      const doc: UserDoc = {
        _id: userIdFor(identity),
        waId: identity.waId,
        bsuid: identity.bsuid,
        name: identity.name,
        createdAt: at,
        lastMessageAt: at,
        lastMessagePreview: null,
        lastMessageId: null,
        messageCount: 0,
        optedOut: false,
        welcomeSentAt: null,
        contextResetAt: null,
        searchKeys: searchKeysFor(identity.waId, identity.name),
      };
      try {
        await withRetry(() => this.users.insertOne(doc));
        await this.stats.bump({ newUsers: 1 }, at);
        return { user: toUser(doc), created: true };
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
      }
    }
    throw new Error('could not record the user after concurrent updates');
  }

  /** Updates the conversation summary for a newly stored message (never twice for one message). */
  async noteMessage(userId: string, message: { id: string; text: string; createdAt: Date }): Promise<void> {
    await this.gate.run(() => this.applyNote(userId, message));
  }

  private async applyNote(
    userId: string,
    message: { id: string; text: string; createdAt: Date },
  ): Promise<void> {
    await withRetry(() =>
      this.users.updateOne(
        { _id: userId },
        { $inc: { messageCount: 1 }, $max: { lastMessageAt: message.createdAt } },
      ),
    );
    // The preview follows the latest message; an older message arriving late does not replace it.
    await withRetry(() =>
      this.users.updateOne(
        { _id: userId, lastMessageAt: { $lte: message.createdAt } },
        { $set: { lastMessagePreview: preview(message.text), lastMessageId: message.id } },
      ),
    );
  }

  async setOptedOut(userId: string, optedOut: boolean): Promise<void> {
    await withRetry(() => this.users.updateOne({ _id: userId }, { $set: { optedOut } }));
  }

  /** Marks the welcome as sent; true only the first time (the welcome goes out once per user). */
  async claimWelcome(userId: string, at: Date): Promise<boolean> {
    if (!(await this.locks.claim(`welcome:${userId}`))) return false;
    await withRetry(() => this.users.updateOne({ _id: userId }, { $set: { welcomeSentAt: at } }));
    return true;
  }

  /** Undoes `claimWelcome` when the welcome could not be sent (it will be tried again). */
  async releaseWelcome(userId: string): Promise<void> {
    await withRetry(() => this.users.updateOne({ _id: userId }, { $set: { welcomeSentAt: null } }));
    await this.locks.release(`welcome:${userId}`);
  }

  async resetContext(userId: string, at: Date): Promise<void> {
    await withRetry(() => this.users.updateOne({ _id: userId }, { $max: { contextResetAt: at } }));
  }

  /** A `system` user_changed_number message: the user keeps their record under the new number. */
  async changeNumber(userId: string, newWaId: string): Promise<void> {
    const user = await this.getUser(userId);
    if (!user || user.waId === newWaId) return;
    await withRetry(() =>
      this.users.updateOne(
        { _id: userId },
        {
          $set: { waId: newWaId, searchKeys: searchKeysFor(newWaId, user.name) },
          ...(user.waId ? { $addToSet: { previousWaIds: user.waId } } : {}),
        },
      ),
    );
  }

  /**
   * Takes (or extends) the per-user reply lock, so one user's answers go out in order, one at a
   * time. A free or expired lock is taken by claiming its next generation in `locks`.
   */
  async acquireReplyLock(userId: string, owner: string, leaseMs: number): Promise<boolean> {
    const doc = await withRetry(() => this.users.findOne({ _id: userId }, { projection: { replyLock: 1 } }));
    if (!doc) return false;
    const lock = doc.replyLock ?? null;
    const now = new Date();
    const until = new Date(now.getTime() + leaseMs);
    if (lock?.owner === owner) {
      await withRetry(() =>
        this.users.updateOne(
          { _id: userId, 'replyLock.owner': owner },
          { $set: { 'replyLock.until': until } },
        ),
      );
      return true;
    }
    if (lock?.owner && lock.until > now) return false;
    let generation = (lock?.generation ?? 0) + 1;
    while (!(await this.locks.claim(`reply-lock:${userId}:${generation}`))) {
      // A claim older than a lease that the user never recorded was orphaned by a crash between
      // the two writes: skip it, or no worker could ever take this user's lock again.
      const stale = new Date(now.getTime() - leaseMs);
      if (!(await this.locks.claimedBefore(`reply-lock:${userId}:${generation}`, stale))) return false;
      generation++;
    }
    await withRetry(() =>
      this.users.updateOne({ _id: userId }, { $set: { replyLock: { owner, until, generation } } }),
    );
    return true;
  }

  async releaseReplyLock(userId: string, owner: string): Promise<void> {
    await withRetry(() =>
      this.users.updateOne({ _id: userId, 'replyLock.owner': owner }, { $set: { 'replyLock.owner': null } }),
    );
  }
}
