// Users: one document per person, with the conversation summary of ./summary and the per-user
// reply lock. A user is found by their current WhatsApp number (waId), else by their
// business-scoped user id (bsuid); a number change moves the user to the new number.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AnyBulkWriteOperation, Filter } from 'mongodb';
import { AUDIT_KIND, ERASE_RECENT_MS, type EventDoc } from './events';

export { ERASE_RECENT_MS };
import type { Gateway } from './gateway';
import type { MessageDoc } from './message-doc';
import { WAITING } from './messages';
import { CounterDelta, type StatsRepository } from './stats';
import type { SubjectKeys } from './subjects';
import {
  placeOf,
  raisedInbound,
  rebuiltSummary,
  summaryChange,
  tallyMessage,
  TALLY_FIELDS,
  type StoredTally,
  type SummaryMessage,
} from './summary';
import { prefixTerms } from './terms';
import { HANDOFF_BY_USER, type Handoff, type Identity, type User } from './types';

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
  /** Meta's time of the latest inbound message (the 24-hour customer service window). */
  lastInboundAt?: Date | null;
  /** Inbound messages stored: a reply worker that sees it change while it holds the lock looks again. */
  inboundCount?: number;
  optedOut: boolean;
  welcomeSentAt: Date | null;
  /** A worker's claim on the welcome, until when (while it sends it). */
  welcomeClaim?: Date | null;
  /** The welcome job of that claim: the sweeper re-queues it when the claim ends unsent. */
  welcomeJob?: WelcomeJob;
  /**
   * How many times the welcome's job failed every attempt (reply-jobs-poison): kept while it waits
   * for the sweeper, and once given up (`giveUpWelcome`); removed when the welcome is settled.
   */
  welcomePoisoned?: number;
  contextResetAt: Date | null;
  /** Prefixes of the number and of the name's words, for `q` search. */
  searchKeys: string[];
  previousWaIds?: string[];
  /**
   * Business-scoped ids the user had before their current one (a system message, or a message
   * carrying a new one): items archived under them are still the user's (erase, export).
   */
  previousBsuids?: string[];
  /**
   * The name and business-scoped id the user had before a message (sent at `until`, Meta's time)
   * changed either: when the number proves recycled (./users changeIdentity), what came from it
   * since was another person's, and the previous owner gets theirs back.
   */
  earlier?: { name: string | null; bsuid: string | null; until: Date };
  /** The per-user reply lock: one worker answers a user's messages, in order (no owner: free). */
  replyLock?: { owner: string | null; until: Date } | null;
  /** Operators answer instead of the bot (./handoff). */
  handoff?: Handoff | null;
  /**
   * When the conversation was last taken (by an operator or the user's `human`), kept after it is
   * handed back: a reply worker whose answer was prepared before it drops the answer (../bot/reply).
   */
  handoffTakenAt?: Date | null;
  /** An erase is under way (./erase): writers leave the user alone until it is gone. */
  erasing?: true;
  /** When that erase began: one still under way long after was interrupted (health finishes it). */
  erasingSince?: Date;
  /** Created and not in the running counters yet: the sweep folds it in (./pending). */
  uncounted?: true;
  /**
   * Random, set when the user is created: tells a user from a new one under the same id (the
   * same person writing after an erase). Absent on users created before it existed.
   */
  generation?: string;
  /**
   * When an erase of the person began, on a record a message dated before it made (a new message
   * with an old `timestamp`): a later message dated before that erase is looked at as one older
   * than the record is (`refuseSentBeforeErase`). Absent when the record is dated after its erase.
   */
  priorErase?: Date;
}

/**
 * Thrown for a person whose erase is under way: their notification is tried again later (the
 * queue's retry), when the same person writing is a new user.
 */
export class ErasureInProgress extends Error {
  override readonly name = 'ErasureInProgress';
  constructor() {
    super('the user is being erased; try again once the erase is over');
  }
}

/**
 * A message its sender wrote before their erase (Meta's timestamp a whole second or more before
 * the erase began, and the erase remembers its id or it is dated at most ERASE_RECENT_MS before),
 * delivered again or late: an erase is for good, so it is not stored, answered or counted, and
 * makes no one new.
 */
export class SentBeforeErase extends Error {
  override readonly name = 'SentBeforeErase';
  constructor() {
    super('the message was sent before its sender was erased');
  }
}

/** How long a writer waits for an erase under way to end (`goneAfterErase`). */
const ERASE_WAIT_MS = 30_000;
/** A user document writers may change (not being erased). */

/**
 * A user whose latest message is not newer than `at`: the new latest message's rule. A user with
 * no message noted yet (created at Meta's time, which may run ahead of our clock) takes the first.
 */
const notNewerThan = (at: Date): Filter<UserDoc> => ({
  $or: [{ lastMessageAt: { $lte: at } }, { lastMessageId: null }],
});
const LIVE = { erasing: { $ne: true } } as const;

export const toUser = (d: UserDoc): User => ({
  id: d._id,
  waId: d.waId,
  bsuid: d.bsuid,
  name: d.name,
  createdAt: d.createdAt,
  lastMessageAt: d.lastMessageAt,
  lastMessagePreview: d.lastMessagePreview,
  lastMessageId: d.lastMessageId ?? null,
  lastInboundAt: d.lastInboundAt ?? null,
  messageCount: d.messageCount,
  optedOut: d.optedOut,
  welcomeSentAt: d.welcomeSentAt ?? null,
  contextResetAt: d.contextResetAt ?? null,
  handoff: d.handoff ?? null,
  handoffTakenAt: d.handoffTakenAt ?? null,
});

/** Longest number kept: E.164 allows 15 digits. */
export const MAX_WA_ID_DIGITS = 20;

/** A stored message as the summary sees it (./summary), or null for none or a status placeholder. */
export const summaryMessageOf = (m: MessageDoc | undefined): SummaryMessage | null => {
  const at = m && placeOf(m);
  return m && at ? { id: m._id, text: m.text ?? '', at, direction: m.direction ?? 'outbound' } : null;
};

export const MAX_ID_ATTEMPTS = 20;

/** Users per round of `recountSummaries` (an `$in` of ids, and one bulk write). */
const RECOUNT_CHUNK = 500;
/** Recounts of one chunk's users whose counts writers keep moving before `recountSummaries` gives up. */
const RECOUNT_ROUNDS = 10;

/** The summary fields of a user a recount reads first: its snapshot, and its write's guard. */
type SummarySnapshot = Pick<
  UserDoc,
  | '_id'
  | 'messageCount'
  | 'inboundCount'
  | 'lastInboundAt'
  | 'lastMessageAt'
  | 'lastMessageId'
  | 'lastMessagePreview'
>;
const SNAPSHOT_FIELDS = {
  messageCount: 1,
  inboundCount: 1,
  lastInboundAt: 1,
  lastMessageAt: 1,
  lastMessageId: 1,
  lastMessagePreview: 1,
} as const;

/**
 * A record of a number that began this long before a change to that number is a previous owner's
 * (see `changeIdentity`).
 */
const RECYCLED_AFTER_MS = 24 * 60 * 60 * 1000;

/**
 * What a user id is derived from (./subjects, `userIds`), never the phone number itself. `n` > 1
 * when the id of a number is held by someone who moved away from it (a recycled number is a new
 * person).
 */
export function naturalIdOf(identity: Pick<Identity, 'waId' | 'bsuid'>, n = 1): string {
  const natural = identity.waId ? `wa:${identity.waId}` : `bsuid:${identity.bsuid ?? ''}`;
  return n === 1 ? natural : `${natural}#${n}`;
}

/**
 * Every id a user of `identity` may have had: the n-th person on its number and on its
 * business-scoped id (n = 1..MAX_ID_ATTEMPTS), each under every id `everyIdOf` derives (every key,
 * and the unkeyed hash of earlier versions).
 */
export function* everyIdOfIdentity(
  everyIdOf: (natural: string) => readonly string[],
  identity: { readonly waId?: string | null | undefined; readonly bsuid?: string | null | undefined },
): Generator<string> {
  for (const one of [
    identity.waId ? { waId: identity.waId, bsuid: null } : null,
    identity.bsuid ? { waId: null, bsuid: identity.bsuid } : null,
  ])
    if (one) for (let n = 1; n <= MAX_ID_ATTEMPTS; n++) yield* everyIdOf(naturalIdOf(one, n));
}

/** A user's search terms: the prefixes of the words of the name and of the number. */
export const searchKeysFor = (waId: string | null, name: string | null): string[] =>
  prefixTerms(name, waId?.slice(0, MAX_WA_ID_DIGITS));

/**
 * What a message newly tells of its user (`resolve`), written with the next summary update:
 * fields to set, and the business-scoped id it replaces (kept among the previous ones).
 */
export type UserChanges = Partial<Omit<UserDoc, 'previousBsuids'>> & { replacedBsuid?: string };

/** The update operators of `changes` (beside a summary's). */
function changeUpdate(changes: UserChanges): {
  set: Partial<UserDoc>;
  addToSet: { $addToSet?: { previousBsuids: string } };
} {
  const { replacedBsuid, ...set } = changes;
  return { set, addToSet: replacedBsuid ? { $addToSet: { previousBsuids: replacedBsuid } } : {} };
}

const matches = (doc: UserDoc, identity: Pick<Identity, 'waId' | 'bsuid'>): boolean =>
  identity.waId ? doc.waId === identity.waId : doc.bsuid === identity.bsuid;

/** What a welcome job names besides the user: the business number and the `request_welcome`. */
export interface WelcomeJob {
  readonly phoneNumberId: string;
  readonly requestId: string;
}

export interface LockedUser {
  readonly user: User;
  readonly inboundCount: number;
  /** See `UserDoc.generation`. */
  readonly generation: string | null;
  /**
   * The lock was taken from a worker whose lease had ended: that worker may have died between
   * recording its answers and recording them in the summary (`recountSummary`).
   */
  readonly tookOver: boolean;
}

/** Whether a user's summary already holds these values (nothing to write). */
function sameSummary(u: SummarySnapshot, summary: Partial<UserDoc>): boolean {
  return Object.entries(summary).every(([key, value]) => {
    const current = (u as unknown as Record<string, unknown>)[key];
    return value instanceof Date
      ? current instanceof Date && current.getTime() === value.getTime()
      : (current ?? null) === (value ?? null);
  });
}

/** The numbers and ids in `had` other than `kept`, to add to a user's previous ones. */
function previousOf(kept: string | null, ...had: (string | null | undefined)[]) {
  const left = [...new Set(had.filter((v): v is string => Boolean(v) && v !== kept))];
  return left.length ? { $each: left } : undefined;
}

/**
 * The number and business-scoped id `user` leaves behind for `kept` stay theirs (their archived
 * items, the redelivery of a change), with those of a record merged into theirs.
 */
function previousUpdate(
  user: UserDoc,
  kept: { waId: string | null; bsuid: string | null },
  merged?: UserDoc,
  via?: string | null,
): { $addToSet?: { previousWaIds?: { $each: string[] }; previousBsuids?: { $each: string[] } } } {
  const waIds = previousOf(kept.waId, user.waId, via, merged?.waId, ...(merged?.previousWaIds ?? []));
  const bsuids = previousOf(kept.bsuid, user.bsuid, merged?.bsuid, ...(merged?.previousBsuids ?? []));
  const addToSet = {
    ...(waIds ? { previousWaIds: waIds } : {}),
    ...(bsuids ? { previousBsuids: bsuids } : {}),
  };
  return Object.keys(addToSet).length ? { $addToSet: addToSet } : {};
}

export class UsersRepository {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
    private readonly stats: StatsRepository,
    private readonly keys: SubjectKeys,
    private readonly events: Gateway<EventDoc>,
  ) {}

  /**
   * Throws `SentBeforeErase` when a user the sender may have been was erased (by the audit trail,
   * which the erase writes first) a whole second or more after `at`, Meta's whole-second time of a
   * message, and that erase remembers `messageId` (by its keyed hash: ./erase) or began at most
   * ERASE_RECENT_MS after `at`: the message is from before the erase. The users looked for: `known`
   * (the sender's record now), and every id the identity may have had (its number's and its
   * business-scoped id's, the n-th person on either, under each key and as the unkeyed hash earlier
   * versions gave: an erased user's id need not be the one a new user gets). Else returns when the
   * latest erase begun a second or more after `at` began (the message is new, only dated long
   * before it), or null when there is none. Asked only of a message that would make a new user or
   * is older than its user's record (or its `priorErase`), so a known user's messages cost no read;
   * one more read when an erase of the sender began over ERASE_RECENT_MS after `at`.
   */
  async refuseSentBeforeErase(
    identity: Pick<Identity, 'waId' | 'bsuid'>,
    at: Date,
    messageId?: string | null,
    known: readonly string[] = [],
  ): Promise<Date | null> {
    return (await this.erasesOf(identity, at, messageId, known)).priorErase;
  }

  /**
   * `refuseSentBeforeErase`, and the ids of every user of the identity ever erased (whenever): a
   * new user of the identity never takes one of them (`resolve`), so that a late retry of the
   * erase (`DELETE` is idempotent: clients retry it) finds no one instead of the person's new
   * conversation. The same one read.
   */
  private async erasesOf(
    identity: Pick<Identity, 'waId' | 'bsuid'>,
    at: Date,
    messageId?: string | null,
    known: readonly string[] = [],
  ): Promise<{ priorErase: Date | null; erased: ReadonlySet<string> }> {
    const { userIds: everyIdOf, messageHashes } = await this.keys.everyIdAndHashOf();
    const ids = new Set([...known, ...everyIdOfIdentity(everyIdOf, identity)]);
    const all = await this.events.find(
      { userId: { $in: [...ids] }, kind: AUDIT_KIND, reason: 'erase' },
      { projection: { createdAt: 1, userId: 1 } },
    );
    const erased = new Set(all.flatMap((e) => (e.userId ? [e.userId] : [])));
    const erases = all.filter((e) => e.createdAt.getTime() >= at.getTime() + 1000);
    if (!erases.length) return { priorErase: null, erased };
    if (erases.some((e) => e.createdAt.getTime() - at.getTime() <= ERASE_RECENT_MS))
      throw new SentBeforeErase();
    const remembered =
      messageId &&
      (await this.events.findOne(
        { _id: { $in: erases.map((e) => e._id) }, erasedMessages: { $in: messageHashes(messageId) } },
        { projection: { _id: 1 } },
      ));
    if (remembered) throw new SentBeforeErase();
    return { priorErase: new Date(Math.max(...erases.map((e) => e.createdAt.getTime()))), erased };
  }

  /**
   * The ids to import users under (migration), by number: the id of the user stored with it
   * (whichever version made it), else of the first user who moved away from it, else the id a
   * first contact would get (never one an erase used: `resolve`); the numbers so found; and when
   * each number's latest erase began (`erasedAt`: by the audit trail, of any id the number may
   * have had, as `erasesOf` finds them), or null. One read per 500 numbers, one over the users who
   * changed number, and one of the erases (nothing more when there is none). `readOnly` (a dry
   * run) writes nothing: a number no one is stored with gets a stand-in id of its own
   * (`dry:<number>`) instead of one derived with the deployment's key, which would be made on
   * first use.
   */
  async idsForImport(
    waIds: readonly string[],
    { readOnly = false }: { readOnly?: boolean } = {},
  ): Promise<{
    idOf: (waId: string) => string;
    stored: ReadonlySet<string>;
    erasedAt: (waId: string) => Date | null;
  }> {
    const stored = new Map<string, string>();
    const unique = [...new Set(waIds)];
    for (let i = 0; i < unique.length; i += 500) {
      const batch = unique.slice(i, i + 500);
      for await (const u of this.users.iterate({ waId: { $in: batch } }, { projection: { waId: 1 } }))
        if (u.waId && !stored.has(u.waId)) stored.set(u.waId, u._id);
    }
    // A number no one holds now may be one a user moved away from (`user_changed_number`): the
    // first such user is the one an earlier run imported it under (its id was then the number's),
    // so running the import again adds no one. One pass over the users who moved.
    const left = new Set(unique.filter((waId) => !stored.has(waId)));
    const movers = new Map<string, { id: string; createdAt: Date }>();
    if (left.size) {
      const projection = { previousWaIds: 1, createdAt: 1 };
      for await (const u of this.users.iterate({ previousWaIds: { $exists: true } }, { projection })) {
        for (const waId of u.previousWaIds ?? []) {
          const known = movers.get(waId);
          if (left.has(waId) && (!known || u.createdAt < known.createdAt))
            movers.set(waId, { id: u._id, createdAt: u.createdAt });
        }
      }
    }
    for (const [waId, { id }] of movers) stored.set(waId, id);
    const { latest, erased } = await this.erasesForImport(unique);
    const keyed = readOnly ? (natural: string) => `dry:${natural}` : await this.keys.userIds();
    // An erased user's id is never given again (as `resolve`): a late retry of the erase finds no one.
    const free = (waId: string): string => {
      let n = 1;
      while (erased.has(keyed(naturalIdOf({ waId, bsuid: null }, n)))) n++;
      return keyed(naturalIdOf({ waId, bsuid: null }, n));
    };
    return {
      idOf: (waId) => stored.get(waId) ?? free(waId),
      stored: new Set(stored.keys()),
      erasedAt: (waId) => latest.get(waId) ?? null,
    };
  }

  /**
   * The erases of the users numbers may have had, by the audit trail (a user's erase is written
   * there first): every id of each number, the n-th person on it under each key and unhashed (as
   * `erasesOf`). `latest`: when each number's latest erase began; `erased`: the ids so erased. One
   * read of the erases; the ids are derived only when there is one.
   */
  private async erasesForImport(
    waIds: readonly string[],
  ): Promise<{ latest: Map<string, Date>; erased: Set<string> }> {
    const byId = new Map<string, Date>();
    for await (const e of this.events.iterate(
      { kind: AUDIT_KIND, reason: 'erase' },
      { projection: { userId: 1, createdAt: 1 } },
    )) {
      const known = e.userId ? byId.get(e.userId) : undefined;
      if (e.userId && (!known || e.createdAt > known)) byId.set(e.userId, e.createdAt);
    }
    const latest = new Map<string, Date>();
    const erased = new Set<string>();
    if (!byId.size) return { latest, erased };
    const everyIdOf = await this.keys.everyUserIdOf();
    for (const waId of waIds)
      for (const id of everyIdOfIdentity(everyIdOf, { waId, bsuid: null })) {
        const at = byId.get(id);
        if (!at) continue;
        erased.add(id);
        const known = latest.get(waId);
        if (!known || at > known) latest.set(waId, at);
      }
    return { latest, erased };
  }

  /**
   * For a restore: the users of a file (file id → stored id) that the database holds under another
   * id, found as a contact finds them (by number, else by bsuid). A database with a key of its own
   * (the app ran on an empty one before the restore) named a person who wrote to it otherwise than
   * the file does: written under the file's id, they would be two users. Only users whose own id
   * is not stored, and only stored users that no other user of the file is, or claims.
   */
  async storedUnderOtherIds(
    backedUp: readonly { _id: string; waId?: string | null | undefined; bsuid?: string | null | undefined }[],
  ): Promise<Map<string, string>> {
    const inFile = new Set(backedUp.map((u) => u._id));
    const found = async (field: '_id' | 'waId' | 'bsuid', values: (string | null | undefined)[]) => {
      const out = new Map<string, UserDoc>();
      const unique = [...new Set(values.filter((v): v is string => Boolean(v)))];
      for (let i = 0; i < unique.length; i += 500) {
        const filter = { [field]: { $in: unique.slice(i, i + 500) } } as Filter<UserDoc>;
        const projection = { waId: 1, bsuid: 1, erasing: 1 };
        for await (const u of this.users.iterate(filter, { projection })) {
          const key = u[field];
          if (key && !out.has(key)) out.set(key, u);
        }
      }
      return out;
    };
    const stored = await found('_id', [...inFile]);
    const candidates = backedUp.filter((u) => !stored.has(u._id));
    const byWaId = await found(
      'waId',
      candidates.map((u) => u.waId),
    );
    const byBsuid = await found(
      'bsuid',
      candidates.map((u) => u.bsuid),
    );
    const claims = new Map<string, string[]>();
    for (const u of candidates) {
      const holder =
        (u.waId ? byWaId.get(u.waId) : undefined) ?? (u.bsuid ? byBsuid.get(u.bsuid) : undefined);
      if (!holder || holder.erasing || inFile.has(holder._id)) continue;
      claims.set(holder._id, [...(claims.get(holder._id) ?? []), u._id]);
    }
    const moved = new Map<string, string>();
    for (const [holder, [fileId, ...others]] of claims)
      if (fileId && !others.length) moved.set(fileId, holder);
    return moved;
  }

  async getUser(id: string): Promise<User | null> {
    const doc = await this.users.findOne({ _id: id });
    return doc ? toUser(doc) : null;
  }

  /** The user, or null when unknown or being erased (an erase is for good: nothing may reach them). */
  async getLiveUser(id: string): Promise<User | null> {
    const doc = await this.users.findOne({ _id: id, ...LIVE });
    return doc ? toUser(doc) : null;
  }

  private async findDoc(identity: Pick<Identity, 'waId' | 'bsuid'>): Promise<UserDoc | null> {
    let doc: UserDoc | null = null;
    if (identity.waId) doc = await this.users.findOne({ waId: identity.waId });
    if (!doc && identity.bsuid) doc = await this.users.findOne({ bsuid: identity.bsuid });
    return doc;
  }

  /** The user of a stored message, if it is stored and its user is there. */
  private async holderOf(messageId: string): Promise<UserDoc | null> {
    const stored = await this.messages.findOne({ _id: messageId }, { projection: { userId: 1 } });
    return stored?.userId ? this.users.findOne({ _id: stored.userId }) : null;
  }

  /**
   * The live users holding these numbers or business-scoped ids now, by identifier: an archived
   * item is filed with the person who holds what it names when it comes (./events), so that the
   * previous or next owner of that number or id, who held it at another time, never exports or
   * erases it with theirs. One read.
   */
  async holdersOf(identifiers: readonly string[]): Promise<Map<string, string>> {
    const held = new Map<string, string>();
    const wanted = [...new Set(identifiers)];
    if (!wanted.length) return held;
    const found = await this.users.find(
      { $or: [{ waId: { $in: wanted } }, { bsuid: { $in: wanted } }], ...LIVE },
      { projection: { waId: 1, bsuid: 1 } },
    );
    for (const u of found) {
      if (u.waId) held.set(u.waId, u._id);
      if (u.bsuid) held.set(u.bsuid, u._id);
    }
    return held;
  }

  async findByIdentity(identity: Pick<Identity, 'waId' | 'bsuid'>): Promise<User | null> {
    const doc = await this.findDoc(identity);
    return doc ? toUser(doc) : null;
  }

  /**
   * Another live record holding the number or business-scoped id of `doc` (found by the same
   * fields as `findDoc`), and whether it is the older, or null: two records of one identity, made
   * by a number change and a first message from the new number ingested at the same time, or by
   * a new person's first messages with and without their number. Older: one that moved there,
   * else created first (Meta's time), then the smaller id, so that of two new records exactly
   * one yields.
   */
  private async rivalOf(doc: UserDoc): Promise<{ rival: UserDoc; older: boolean } | null> {
    const holders = [...(doc.waId ? [{ waId: doc.waId }] : []), ...(doc.bsuid ? [{ bsuid: doc.bsuid }] : [])];
    if (!holders.length) return null;
    const found = await this.users.find({ $or: holders, _id: { $ne: doc._id }, ...LIVE }, { limit: 10 });
    // A record that moved to the identity (it keeps what it left) is the person's, whatever the
    // times: its mover may have looked for this one before it was made, and would not merge it.
    const moved = (u: UserDoc) => Boolean(u.previousWaIds?.length || u.previousBsuids?.length);
    const older = (u: UserDoc) =>
      moved(u) ||
      u.createdAt < doc.createdAt ||
      (u.createdAt.getTime() === doc.createdAt.getTime() && u._id < doc._id);
    const first = found.find(older);
    if (first) return { rival: first, older: true };
    return found[0] ? { rival: found[0], older: false } : null;
  }

  /**
   * The user of an identity, created when there is none (one read for a known user). Concurrent
   * first contacts create one user: ids are derived from the identifier (and the erases of it: an
   * erased user's id is never given again), so a second insert hits the duplicate key and finds
   * the first. What is newly known (a name, a bsuid) is returned in
   * `changes`, to be written with the next summary update. `messageId`: the message being
   * ingested; one stored before (delivered again) is its user's, also when that user has moved to
   * another number or id since (a redelivery is not a new person writing). `sentAt`: Meta's time of
   * the message as given, when `at` stands in for an impossible one (dated 1970): an erase judges
   * the message by it (`refuseSentBeforeErase`).
   */
  async resolve(
    identity: Identity,
    at: Date,
    messageId?: string,
    sentAt: Date = at,
  ): Promise<{ user: User; created: boolean; changes: UserChanges; merged?: true }> {
    if (!identity.waId && !identity.bsuid) throw new Error('an identity needs a waId or a bsuid');
    const existing = await this.findDoc(identity);
    if (existing?.erasing) throw new ErasureInProgress();
    const holder = !existing && messageId ? await this.holderOf(messageId) : null;
    if (holder?.erasing) throw new ErasureInProgress();
    // What a message from before a change says of the identity is not news.
    if (holder) return { user: toUser(holder), created: false, changes: {} };
    if (existing) {
      // Older than the record (or than the erase before it, for a record an old-dated message
      // made): maybe the message of a person erased before this one wrote.
      if (
        existing.createdAt > sentAt ||
        (existing.priorErase && existing.priorErase.getTime() >= sentAt.getTime() + 1000)
      )
        await this.refuseSentBeforeErase(identity, sentAt, messageId, [existing._id]);
      const changes: UserChanges = {};
      if (identity.waId && !existing.waId) changes.waId = identity.waId;
      if (identity.bsuid && existing.bsuid !== identity.bsuid) {
        changes.bsuid = identity.bsuid;
        // Items archived under the one it replaces stay the user's.
        if (existing.bsuid) changes.replacedBsuid = existing.bsuid;
      }
      if (identity.name && existing.name !== identity.name) changes.name = identity.name;
      if (changes.waId !== undefined || changes.name !== undefined)
        changes.searchKeys = searchKeysFor(changes.waId ?? existing.waId, changes.name ?? existing.name);
      // What the record was known as is kept, should the number prove recycled: the first change
      // within a day (its new owner may rename themselves too, or write under their id again).
      const kept = existing.earlier;
      if (
        (changes.name !== undefined || changes.bsuid !== undefined) &&
        (!kept || kept.until.getTime() < at.getTime() - RECYCLED_AFTER_MS)
      )
        changes.earlier = { name: existing.name, bsuid: existing.bsuid, until: at };
      return { user: toUser(existing), created: false, changes };
    }
    const idOf = await this.keys.userIds();
    const { priorErase, erased } = await this.erasesOf(identity, sentAt, messageId);
    // An erased user's id is never given again: the person writing after their erase is the next
    // n (every first message of theirs reads the same erases, so concurrent ones still meet).
    const free = (n: number): number => {
      while (n <= MAX_ID_ATTEMPTS && erased.has(idOf(naturalIdOf(identity, n)))) n++;
      return n;
    };
    for (let n = free(1), attempt = 0; n <= MAX_ID_ATTEMPTS && attempt < 2 * MAX_ID_ATTEMPTS; attempt++) {
      const doc: UserDoc = {
        _id: idOf(naturalIdOf(identity, n)),
        waId: identity.waId,
        bsuid: identity.bsuid,
        name: identity.name,
        createdAt: at,
        lastMessageAt: at,
        lastMessagePreview: null,
        lastMessageId: null,
        messageCount: 0,
        lastInboundAt: null,
        inboundCount: 0,
        optedOut: false,
        welcomeSentAt: null,
        contextResetAt: null,
        searchKeys: searchKeysFor(identity.waId, identity.name),
        replyLock: null,
        generation: randomBytes(6).toString('hex'),
        uncounted: true,
        ...(priorErase ? { priorErase } : {}),
      };
      if ((await this.users.insertOne(doc)) === 'inserted') {
        // A number change (or a first message under the person's other id) applied at the same
        // time may have given this identity to an older record meanwhile: that one is the person,
        // and this new, still empty record yields to it (the change merges it if it sees it first).
        const found = await this.rivalOf(doc);
        if (found?.older) {
          await this.deleteUser(doc._id, doc.createdAt);
          return this.resolve(identity, at, messageId, sentAt);
        }
        // A newer record of the same person made at the same time (their first messages, one
        // with their number and one without) may not have seen this one: it joins this one.
        if (found) {
          await this.mergeInto(doc, found.rival, {
            waId: doc.waId ?? found.rival.waId,
            bsuid: doc.bsuid ?? found.rival.bsuid,
          });
          const merged = await this.users.findOne({ _id: doc._id });
          if (merged) return { user: toUser(merged), created: true, changes: {}, merged: true };
        }
        return { user: toUser(doc), created: true, changes: {} };
      }
      const holder = await this.users.findOne({ _id: doc._id });
      if (holder?.erasing) throw new ErasureInProgress();
      if (holder && matches(holder, identity)) return { user: toUser(holder), created: false, changes: {} };
      // The id is held by a user who moved to another number (or was erased meanwhile: retry it).
      if (holder) n = free(n + 1);
    }
    throw new Error('could not find a free user id');
  }

  /**
   * Updates the summary for messages newly stored (never twice for one message), with `changes`
   * to the user. The latest message becomes the preview unless the user already has a newer one:
   * one round trip, two when an older message arrives late. False when the user is gone or being
   * erased (nothing written): the caller takes back what it stored for them.
   */
  async noteMessages(
    userId: string,
    messages: readonly SummaryMessage[],
    changes: UserChanges = {},
    generation?: string | null,
  ): Promise<boolean> {
    // With `generation`, only that user: not a new one under the same id (after an erase).
    const live =
      generation === undefined ? LIVE : { ...LIVE, generation: generation ?? { $exists: false as const } };
    const change = summaryChange(messages);
    const { set: fields, addToSet } = changeUpdate(changes);
    const set = Object.keys(fields).length ? { $set: fields } : {};
    if (!change) {
      if (!Object.keys(changes).length) return true;
      return (await this.users.updateOne({ _id: userId, ...live }, { ...set, ...addToSet })).matched > 0;
    }
    const max = Object.keys(change.max).length ? { $max: change.max } : {};
    const latest = await this.users.updateOne(
      { _id: userId, ...live, ...notNewerThan(change.latest.lastMessageAt) },
      { $inc: change.inc, $set: { ...fields, ...change.latest }, ...max, ...addToSet },
    );
    if (latest.matched) return true;
    return (
      (
        await this.users.updateOne(
          { _id: userId, ...live },
          { $inc: change.inc, ...set, ...max, ...addToSet },
        )
      ).matched > 0
    );
  }

  /**
   * `noteMessages` for the messages an import stored, of many users at once (the migration and
   * the seed script): one bulk write per batch instead of a round trip per user. Per user, one
   * write counts the messages and one makes the latest the preview unless the user has a newer
   * one (the two halves of `noteMessages`' first write). A user gone or being erased is left as
   * is, as `noteMessages` leaves them.
   */
  async noteImported(perUser: ReadonlyMap<string, readonly SummaryMessage[]>): Promise<void> {
    const ops: AnyBulkWriteOperation<UserDoc>[] = [];
    for (const [userId, messages] of perUser) {
      const change = summaryChange(messages);
      if (!change) continue;
      const max = Object.keys(change.max).length ? { $max: change.max } : {};
      ops.push(
        { updateOne: { filter: { _id: userId, ...LIVE }, update: { $inc: change.inc, ...max } } },
        {
          updateOne: {
            filter: { _id: userId, ...LIVE, ...notNewerThan(change.latest.lastMessageAt) },
            update: { $set: change.latest },
          },
        },
      );
    }
    if (ops.length) await this.users.bulkWrite(ops, false);
  }

  /**
   * For a writer that found the user it knew erasing or gone (or, with `generation`, that lost
   * their reply lock): waits for an erase under way to end (at most `ERASE_WAIT_MS`), then says
   * whether that user is gone, so that the writer takes back what it stored for them. Only then:
   * while the erase runs, it may itself find and count what the writer stored. False when the
   * user is still there, or still being erased when the wait ends (the erase, run again, deletes
   * what the writer stored).
   */
  async goneAfterErase(userId: string, generation?: string | null): Promise<boolean> {
    const deadline = Date.now() + ERASE_WAIT_MS;
    for (let delay = 25; ; delay = Math.min(delay * 2, 1_000)) {
      const doc = await this.users.findOne({ _id: userId }, { projection: { generation: 1, erasing: 1 } });
      if (!doc) return true;
      // Erasing is for good. Without `generation` (the writer found the user erasing or gone), a
      // user who is not erasing is a new one; with it, the generation tells.
      if (!doc.erasing) return generation === undefined || (doc.generation ?? null) !== generation;
      if (Date.now() >= deadline) return false;
      await sleep(delay);
    }
  }

  /**
   * Rebuilds the summaries of these users from their stored messages (the one rule of ./summary,
   * `tallyMessage`): retention for the users whose messages it deleted, the health repair, and
   * the reply worker (`recountSummary`). Per chunk of users: the users first (a snapshot of their
   * counts), then one pass over their messages (ids and places), one read of the latest ones, and
   * one bulk write whose update of each user applies only while that user's counts are still the
   * snapshot's. A writer that notes a message meanwhile (ingest, the reply worker, an operator)
   * moves them: the users whose summary still disagrees are read again and recounted (at most
   * `RECOUNT_ROUNDS` times), instead of being set one message short. With `inbound`, the inbound
   * count is rebuilt too: only for the holder of the user's reply lock, which compares it (a
   * count moved down under another holder could look unchanged to it). Returns how many
   * summaries changed.
   */
  async recountSummaries(
    userIds: Iterable<string>,
    onProgress?: (done: number) => void,
    { inbound = false }: { inbound?: boolean } = {},
  ): Promise<number> {
    const all = [...new Set(userIds)];
    let changed = 0;
    for (let start = 0; start < all.length; start += RECOUNT_CHUNK) {
      let ids = all.slice(start, start + RECOUNT_CHUNK);
      for (let round = 1; ids.length > 0; round++) {
        const writes = await this.recountWrites(ids, inbound);
        if (writes.length === 0) break;
        const ops = writes.map((w) => w.op);
        const { modifiedCount } = await this.users.bulkWrite(ops, false);
        changed += modifiedCount;
        // Every guard held: done. Else some user's counts moved since the snapshot; the next
        // round reads those users again (one whose write did land then finds nothing to change).
        if (modifiedCount === ops.length || round === RECOUNT_ROUNDS) break;
        ids = writes.map((w) => w.userId);
      }
      onProgress?.(Math.min(start + RECOUNT_CHUNK, all.length));
    }
    return changed;
  }

  /** One round of `recountSummaries`: the guarded update of each user whose summary disagrees. */
  private async recountWrites(
    userIds: readonly string[],
    inbound: boolean,
  ): Promise<{ userId: string; op: AnyBulkWriteOperation<UserDoc> }[]> {
    const seen: SummarySnapshot[] = [];
    for await (const u of this.users.iterate({ _id: { $in: [...userIds] } }, { projection: SNAPSHOT_FIELDS }))
      seen.push(u);
    if (seen.length === 0) return [];
    const tallies = new Map<string, StoredTally>();
    for await (const m of this.messages.iterate(
      { userId: { $in: seen.map((u) => u._id) } },
      { projection: TALLY_FIELDS, batchSize: 1000 },
    ))
      tallyMessage(tallies, m);
    const latest = new Map<string, MessageDoc>();
    const lastIds = [...tallies.values()].map((s) => s.lastId);
    if (lastIds.length)
      for await (const m of this.messages.iterate(
        { _id: { $in: lastIds } },
        { projection: { text: 1, direction: 1, createdAt: 1, seqAt: 1 } },
      ))
        latest.set(m._id, m);
    const writes: { userId: string; op: AnyBulkWriteOperation<UserDoc> }[] = [];
    for (const u of seen) {
      const s = tallies.get(u._id);
      const summary: Partial<UserDoc> = {
        ...rebuiltSummary(s?.count ?? 0, s ? summaryMessageOf(latest.get(s.lastId)) : null, u.lastMessageAt),
        ...raisedInbound(s, u),
        ...(inbound ? { inboundCount: s?.inbound ?? 0 } : {}),
      };
      if (sameSummary(u, summary)) continue;
      const guard: Filter<UserDoc> = {
        _id: u._id,
        messageCount: u.messageCount,
        inboundCount: u.inboundCount ?? { $exists: false },
      };
      writes.push({ userId: u._id, op: { updateOne: { filter: guard, update: { $set: summary } } } });
    }
    return writes;
  }

  async setOptedOut(userId: string, optedOut: boolean): Promise<void> {
    await this.users.updateOne({ _id: userId }, { $set: { optedOut } });
  }

  /**
   * Claims the welcome for `leaseMs` (`welcomeClaim`: until when, with the job it is for); true
   * only while it is not sent yet (the welcome goes out once per user) and no other worker's claim
   * holds, and only while no operator holds the conversation (`handoffHours`: how long a handoff
   * lasts after its last activity): the bot does not talk over an operator, and this write is the
   * check. A claim whose worker died before sending (the process killed) ends with its lease: the
   * job handed over again after that sends the welcome, else the sweeper re-queues it
   * (`staleWelcomes`). When it is not claimed, a claim that has ended is removed (a user an
   * operator took, or welcomed already: the sweeper would re-queue it for ever); one that holds
   * is left to its worker.
   */
  async claimWelcome(
    userId: string,
    at: Date,
    handoffHours: number,
    leaseMs: number,
    job: WelcomeJob,
  ): Promise<boolean> {
    const ended = new Date(at.getTime() - handoffHours * 3_600_000);
    const result = await this.users.updateOne(
      {
        _id: userId,
        welcomeSentAt: null,
        $and: [
          { $or: [{ handoff: null }, { 'handoff.activeAt': { $lte: ended } }] },
          { $or: [{ welcomeClaim: null }, { welcomeClaim: { $lte: at } }] },
        ],
      },
      {
        $set: {
          welcomeClaim: new Date(at.getTime() + leaseMs),
          welcomeJob: { phoneNumberId: job.phoneNumberId, requestId: job.requestId },
        },
      },
    );
    if (result.modified === 1) return true;
    await this.dropEndedWelcomeClaim(userId, at);
    return false;
  }

  /**
   * Keeps the welcome of a job that failed every attempt (reply-jobs-poison) for the sweeper, which
   * re-queues it once `until` is past (`staleWelcomes`): a claim on it that ends then, unless it is
   * sent already or a worker's claim holds now (that worker sends it, or its claim ends). Returns
   * how many times its job has failed so, this one included (`welcomePoisoned`), when kept so;
   * else null.
   */
  async welcomeLater(userId: string, at: Date, until: Date, job: WelcomeJob): Promise<number | null> {
    const doc = await this.users.findOneAndUpdate(
      { _id: userId, welcomeSentAt: null, $or: [{ welcomeClaim: null }, { welcomeClaim: { $lte: at } }] },
      {
        $set: {
          welcomeClaim: until,
          welcomeJob: { phoneNumberId: job.phoneNumberId, requestId: job.requestId },
        },
        $inc: { welcomePoisoned: 1 },
      },
      { returnDocument: 'after', projection: { welcomePoisoned: 1 } },
    );
    return doc ? (doc.welcomePoisoned ?? 1) : null;
  }

  /**
   * The welcome whose job failed every attempt too many times is not tried again: settled unsent
   * (`welcomeSentAt`, the claim removed), its `welcomePoisoned` kept so that health counts it. True
   * when this call settled it (not sent, given up or settled meanwhile).
   */
  async giveUpWelcome(userId: string, at: Date): Promise<boolean> {
    const result = await this.users.updateOne(
      { _id: userId, welcomeSentAt: null },
      { $set: { welcomeSentAt: at }, $unset: { welcomeClaim: '', welcomeJob: '' } },
    );
    return result.modified === 1;
  }

  /**
   * Welcomes whose job failed every attempt (`welcomePoisoned`): those waiting for the sweeper to
   * re-queue them (or for their job handed over again), and those given up since `givenUpSince`.
   */
  async poisonedWelcomes(givenUpSince: Date): Promise<{ waiting: number; givenUp: number }> {
    const poisoned = { welcomePoisoned: { $gt: 0 } };
    const [waiting, givenUp] = await Promise.all([
      this.users.count({ ...poisoned, welcomeSentAt: null }),
      this.users.count({ ...poisoned, welcomeSentAt: { $gte: givenUpSince } }),
    ]);
    return { waiting, givenUp };
  }

  /** Removes a welcome claim that ended by `at` (its welcome is not to be re-queued). */
  async dropEndedWelcomeClaim(userId: string, at: Date): Promise<void> {
    await this.users.updateOne(
      { _id: userId, welcomeClaim: { $lte: at } },
      { $unset: { welcomeClaim: '', welcomeJob: '' } },
    );
  }

  /** The welcome went out (or Graph refused it for good): never sent again; the claim is removed. */
  async settleWelcome(userId: string, at: Date): Promise<void> {
    await this.users.updateOne(
      { _id: userId, welcomeSentAt: null },
      { $set: { welcomeSentAt: at }, $unset: { welcomeClaim: '', welcomeJob: '', welcomePoisoned: '' } },
    );
  }

  /** Undoes `claimWelcome` when the welcome could not be sent (the queue tries the job again). */
  async releaseWelcome(userId: string): Promise<void> {
    await this.users.updateOne(
      { _id: userId, welcomeSentAt: null },
      { $unset: { welcomeClaim: '', welcomeJob: '' } },
    );
  }

  /**
   * Welcomes claimed and not sent whose claim ended before `before` (their worker died, and the
   * job handed over again came while the claim held, or never came), oldest first, on the
   * `welcomeClaim` index: the jobs that send them. Only claims that name their job: one an
   * earlier version left names none, cannot be re-queued, and would take a place in `limit` on
   * every sweep.
   */
  async staleWelcomes(before: Date, limit: number): Promise<(WelcomeJob & { userId: string })[]> {
    const docs = await this.users.find(
      { welcomeClaim: { $lte: before }, welcomeSentAt: null, welcomeJob: { $exists: true } },
      { sort: { welcomeClaim: 1 }, limit, projection: { _id: 1, welcomeJob: 1 } },
    );
    return docs.flatMap((d) => (d.welcomeJob ? [{ userId: d._id, ...d.welcomeJob }] : []));
  }

  async resetContext(userId: string, at: Date): Promise<void> {
    await this.users.updateOne({ _id: userId }, { $max: { contextResetAt: at } });
  }

  /**
   * The user who already moved from `oldWaId` to `newWaId` (a `user_changed_number` applied
   * before), if any: its redelivery finds the move done instead of taking the old number for a
   * new person.
   */
  async movedAway(oldWaId: string, newWaId: string): Promise<User | null> {
    const doc = await this.users.findOne({ waId: newWaId, previousWaIds: oldWaId });
    return doc ? toUser(doc) : null;
  }

  /**
   * A `user_changed_number` system message: the user moves to the new number, and the old number,
   * if it writes again, is a new user. When the new number already wrote (the system message came
   * later), that user's messages join this one and the duplicate record goes.
   */
  async changeNumber(
    userId: string,
    newWaId: string,
  ): Promise<'moved' | 'merged' | 'reassigned' | 'unchanged'> {
    return this.changeIdentity(userId, { waId: newWaId, bsuid: null });
  }

  /**
   * A system message that gives the user a new number (`user_changed_number`) or a new
   * business-scoped id (`user_changed_number` carries the new one too, `user_changed_user_id`
   * only that): the user takes what is new. When a record already holds the new number (else the
   * new id), it wrote before the system message came: its messages join this user and it goes.
   */
  async changeIdentity(
    userId: string,
    next: { waId: string | null; bsuid: string | null; via?: string | null },
    at?: Date,
    optOutOf?: (text: string) => boolean | null,
  ): Promise<'moved' | 'merged' | 'reassigned' | 'unchanged'> {
    const read = await this.users.findOne({ _id: userId });
    if (!read) return 'unchanged';
    let user: UserDoc = read;
    const newWaId = next.waId && next.waId !== user.waId ? next.waId : null;
    let newBsuid = next.bsuid && next.bsuid !== user.bsuid ? next.bsuid : null;
    if (!newWaId && !newBsuid) return 'unchanged';
    let other =
      (newWaId ? await this.users.findOne({ waId: newWaId }) : null) ??
      (newBsuid ? await this.users.findOne({ bsuid: newBsuid }) : null);
    const waId = newWaId ?? user.waId;
    // A record that held the new number a day or more before the change is another person's, a
    // previous owner of a recycled number (carriers keep a number unused for months before they
    // give it again): it keeps its conversation, without the number, and only what came from the
    // number since then is this user's. Within the day it is this person's (Meta's time of the
    // system message may follow their first message from the new number).
    let reassigned = false;
    const before = at ? new Date(at.getTime() - RECYCLED_AFTER_MS) : null;
    if (
      before &&
      other &&
      other._id !== userId &&
      newWaId &&
      other.waId === newWaId &&
      other.createdAt < before
    ) {
      // Meta's times both: the user's messages from the number, and the answers to them.
      const since = await this.messages.find(
        { userId: other._id, direction: 'inbound', createdAt: { $gte: before } },
        { projection: { _id: 1, role: 1, text: 1, replyState: 1, createdAt: 1 } },
      );
      const ids = since.map((m) => m._id);
      // A `stop` or `start` the number sent since, already taken into effect on the record, is
      // this user's: it holds for them (as from either number of a merge), and the previous owner
      // is as their own last one left them (one still waiting takes effect when it is answered).
      const optOut = (docs: readonly MessageDoc[]) =>
        docs
          .filter((m) => m.role === 'command' && m.replyState && !WAITING.includes(m.replyState))
          .sort((x, y) => (y.createdAt?.getTime() ?? 0) - (x.createdAt?.getTime() ?? 0))
          .map((m) => (optOutOf && m.text ? optOutOf(m.text) : null))
          .find((v): v is boolean => v !== null);
      const askedSince = optOut(since);
      if (askedSince !== undefined) {
        const own = await this.messages.find(
          { userId: other._id, direction: 'inbound', role: 'command', createdAt: { $lt: before } },
          { projection: { _id: 1, role: 1, text: 1, replyState: 1, createdAt: 1 } },
        );
        await this.users.updateOne({ _id: other._id }, { $set: { optedOut: optOut(own) ?? false } });
        if (askedSince && !user.optedOut)
          await this.users.updateOne({ _id: userId }, { $set: { optedOut: true } });
      }
      // So is a handoff the number asked for since (`human`): this user waits for an operator,
      // the previous owner is answered by the bot again (the later of two handoffs holds, as in a
      // merge).
      const asked =
        ids.length && other.handoff?.by === HANDOFF_BY_USER && other.handoff.since >= before
          ? other.handoff
          : null;
      if (asked) {
        await this.users.updateOne(
          { _id: userId, $or: [{ handoff: null }, { 'handoff.activeAt': { $lt: asked.activeAt } }] },
          { $set: { handoff: asked } },
        );
      }
      if (ids.length) {
        // Read before they move: they are new to this user's summary (`noteMessages`, after the move).
        const moving = await this.messages.find(
          { userId: other._id, $or: [{ _id: { $in: ids } }, { relatedId: { $in: ids } }] },
          { projection: { _id: 1, text: 1, direction: 1, createdAt: 1, seqAt: 1 } },
        );
        await this.messages.updateMany({ userId: other._id, relatedId: { $in: ids } }, { $set: { userId } });
        await this.messages.updateMany({ _id: { $in: ids }, userId: other._id }, { $set: { userId } });
        const moved = moving.map(summaryMessageOf).filter((m): m is SummaryMessage => m !== null);
        await this.noteMessages(userId, moved);
        reassigned = true;
      }
      // The name and business-scoped id the record took from what the number sent since are the
      // new owner's (Meta gives a new number a new id): the previous owner keeps their own, and
      // never the id this user has or takes now (the record holding it would be merged below).
      const earlier = other.earlier && other.earlier.until >= before ? other.earlier : null;
      const name = earlier ? earlier.name : other.name;
      const ownBsuid = earlier ? earlier.bsuid : other.bsuid;
      const bsuid = ownBsuid && ownBsuid !== (newBsuid ?? user.bsuid) ? ownBsuid : null;
      // The id those messages gave is this user's, when the change gives none.
      if (earlier && !newBsuid && other.bsuid && other.bsuid !== bsuid && other.bsuid !== user.bsuid)
        newBsuid = other.bsuid;
      await this.users.updateOne(
        { _id: other._id },
        {
          $set: {
            waId: null,
            name,
            bsuid,
            searchKeys: searchKeysFor(null, name),
            ...(asked ? { handoff: null } : {}),
            ...(bsuid && other.previousBsuids?.includes(bsuid)
              ? { previousBsuids: other.previousBsuids.filter((id) => id !== bsuid) }
              : {}),
          },
          $addToSet: { previousWaIds: newWaId },
          ...(other.earlier ? { $unset: { earlier: '' as const } } : {}),
        },
      );
      if (reassigned) await this.recountSummary(other._id);
      other = null;
    }
    if (!other || other._id === userId) {
      await this.users.updateOne(
        { _id: userId },
        {
          $set: {
            waId,
            ...(newBsuid ? { bsuid: newBsuid } : {}),
            ...(newWaId ? { searchKeys: searchKeysFor(newWaId, user.name) } : {}),
          },
          ...previousUpdate(user, { waId, bsuid: newBsuid ?? user.bsuid }, undefined, next.via),
        },
      );
      // The first message from the new number (or id), ingested at the same time, may have made
      // a record of its own after the read above: it is this person's, merged as one found first.
      const late = await this.users.findOne({
        $or: [...(newWaId ? [{ waId: newWaId }] : []), ...(newBsuid ? [{ bsuid: newBsuid }] : [])],
        _id: { $ne: userId },
        ...LIVE,
      });
      if (!late) return reassigned ? 'reassigned' : 'moved';
      user = (await this.users.findOne({ _id: userId })) ?? user;
      other = late;
    }
    await this.mergeInto(
      user,
      other,
      { waId: waId ?? other.waId, bsuid: newBsuid ?? other.bsuid ?? user.bsuid },
      next.via,
    );
    return 'merged';
  }

  /**
   * Merges `other` into `user`, who keeps the number and business-scoped id `kept`: its messages
   * join the user, what the person asked under either record holds, and `other` goes.
   */
  private async mergeInto(
    user: UserDoc,
    other: UserDoc,
    kept: { waId: string | null; bsuid: string | null },
    via?: string | null,
  ): Promise<void> {
    const userId = user._id;
    await this.messages.updateMany({ userId: other._id }, { $set: { userId } });
    // A record that holds no message yet (made for a first message still being stored) gives
    // no summary: the stored one stays until that message is noted.
    const later = other.lastMessageId && other.lastMessageAt > user.lastMessageAt ? other : user;
    // What the person asked from either record holds: a `stop` or `human` sent from the new
    // number (or id) before the change arrived is not undone by the merge.
    const handoff =
      [user.handoff, other.handoff]
        .filter((h): h is Handoff => Boolean(h))
        .sort((x, y) => y.activeAt.getTime() - x.activeAt.getTime())[0] ?? null;
    const resetAt = [user.contextResetAt, other.contextResetAt]
      .filter((d): d is Date => d instanceof Date)
      .sort((x, y) => y.getTime() - x.getTime())[0];
    await this.users.updateOne(
      { _id: userId },
      {
        $set: {
          optedOut: user.optedOut || other.optedOut,
          handoff,
          welcomeSentAt: user.welcomeSentAt ?? other.welcomeSentAt ?? null,
          contextResetAt: resetAt ?? null,
          waId: kept.waId,
          // A new number comes with a new business-scoped id (Meta regenerates it): the record
          // that wrote from the new number holds the current one.
          bsuid: kept.bsuid,
          name: other.name ?? user.name,
          searchKeys: searchKeysFor(kept.waId, other.name ?? user.name),
          lastMessageAt: later.lastMessageAt,
          lastMessagePreview: later.lastMessagePreview,
          lastMessageId: later.lastMessageId,
        },
        $inc: { messageCount: other.messageCount, inboundCount: other.inboundCount ?? 0 },
        $max: { lastInboundAt: other.lastInboundAt ?? new Date(0) },
        ...previousUpdate(user, kept, other, via),
      },
    );
    await this.deleteUser(other._id, other.createdAt);
    // A message stored for the merged record while it was merged (ingested at the same time):
    // once the record is gone no further one can be noted for it (its writer takes it back and
    // tries again), so this second pass leaves none behind.
    await this.messages.updateMany({ userId: other._id }, { $set: { userId } });
  }

  /**
   * Deletes a user and takes them out of the counters if they are in them (one still marked
   * `uncounted` is not yet: ./pending). False when another writer deleted them first. A mark only
   * ever goes away: a user found marked may be found unmarked on the second try, never the reverse.
   */
  async deleteUser(userId: string, createdAt: Date): Promise<boolean> {
    for (const marked of [true, false]) {
      const filter = { _id: userId, uncounted: marked ? true : null } as Filter<UserDoc>;
      if (!(await this.users.deleteOne(filter))) continue;
      if (!marked) await this.stats.apply(new CounterDelta().user(createdAt, -1));
      return true;
    }
    return false;
  }

  /**
   * Takes the per-user reply lock (free, expired, or already ours) for `leaseMs`, in one round
   * trip that also reads the user. Null when another worker holds it.
   */
  async lockForReply(userId: string, owner: string, leaseMs: number, now: Date): Promise<LockedUser | null> {
    const doc = await this.users.findOneAndUpdate(
      {
        _id: userId,
        $or: [{ replyLock: null }, { 'replyLock.until': { $lt: now } }, { 'replyLock.owner': owner }],
      },
      { $set: { replyLock: { owner, until: new Date(now.getTime() + leaseMs) } } },
      { returnDocument: 'before' },
    );
    if (!doc) return null;
    const held = doc.replyLock;
    return {
      user: toUser(doc),
      inboundCount: doc.inboundCount ?? 0,
      generation: doc.generation ?? null,
      tookOver: Boolean(held?.owner && held.owner !== owner),
    };
  }

  /**
   * The user's inbound count (messages, edits, deletions and reactions stored), for the holder of
   * their reply lock: one that differs from the count read with the lock means something arrived
   * since. Null when the user is gone.
   */
  async inboundCount(userId: string): Promise<number | null> {
    const doc = await this.users.findOne({ _id: userId }, { projection: { inboundCount: 1 } });
    return doc ? (doc.inboundCount ?? 0) : null;
  }

  /**
   * Rebuilds a user's summary, inbound count included, from the stored messages
   * (`recountSummaries`), for the holder of their reply lock: a writer before it may have died
   * between storing messages and recording them in the summary (a lock taken over, a notification
   * found already stored when delivered again). A message stored and noted meanwhile by another
   * writer (ingest, an operator) is not set back: the recount is done again.
   */
  async recountSummary(userId: string): Promise<boolean> {
    return (await this.recountSummaries([userId], undefined, { inbound: true })) > 0;
  }

  /**
   * Frees the lock and records the answers sent while holding it (added to the counts; the latest
   * message unless the user has a newer one), in one round trip, two when there is a newer one.
   * Returns the user's inbound count (a change since the lock was taken means: look again), or
   * null when the lock was no longer ours. Then the answers are counted by rebuilding the summary
   * from what is stored (`recountSummaries`), never by adding them: the worker that took the user
   * over recounted it when it took the lock, and may have found them stored already (the parts of
   * an answer recorded one by one), or not.
   */
  async releaseReplyLock(
    userId: string,
    owner: string,
    answers: readonly SummaryMessage[],
    generation?: string | null,
  ): Promise<number | null> {
    const change = summaryChange(answers);
    const locked = { _id: userId, 'replyLock.owner': owner };
    const options = { returnDocument: 'after', projection: { inboundCount: 1 } } as const;
    // The answers become the latest message unless the user already has a newer one (a message
    // stored meanwhile, placed after them by its writer's clock), as `noteMessages` does: a
    // second round trip only then.
    const doc =
      (change &&
        (await this.users.findOneAndUpdate(
          { ...locked, ...notNewerThan(change.latest.lastMessageAt) },
          { $set: { replyLock: null, ...change.latest }, $inc: change.inc },
          options,
        ))) ||
      (await this.users.findOneAndUpdate(
        locked,
        change ? { $set: { replyLock: null }, $inc: change.inc } : { $set: { replyLock: null } },
        options,
      ));
    if (doc) return doc.inboundCount ?? 0;
    // Not for a user being erased, or a new one under the same id (the caller takes them back).
    const live =
      generation === undefined ? LIVE : { ...LIVE, generation: generation ?? { $exists: false as const } };
    if (change && (await this.users.findOne({ _id: userId, ...live }, { projection: { _id: 1 } })))
      await this.recountSummaries([userId]);
    return null;
  }
}
