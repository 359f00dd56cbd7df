// What the data module stores about one person, exported or erased: the user, their messages and
// every archived item that concerns them (by user id, or by the subject of a number or bsuid
// they used). Erase also lowers the counters by what it removes; the audit trail stays.
import { createHash, randomBytes } from 'node:crypto';
import type { Filter } from 'mongodb';
import { AppError, ErrorCode } from '../errors';
import {
  AUDIT_KIND,
  MAX_ERASED_ITEMS,
  MAX_ERASED_MESSAGES,
  MAX_ERASED_SUBJECTS,
  toEvent,
  type EventDoc,
} from './events';
import type { Gateway } from './gateway';
import { COUNTED_FIELDS, countedAs } from './message-doc';
import { toMessage, type MessageDoc } from './messages';
import { partId, pieceOfPart } from './poisoned';
import { CounterDelta, type StatsRepository } from './stats';
import type { SubjectKeys } from './subjects';
import type { ArchivedEvent, Message, User } from './types';
import { everyIdOfIdentity, toUser, type UserDoc, type UsersRepository } from './users';

export { AUDIT_KIND, MAX_ERASED_MESSAGES };
/** An export holds at most this many messages and archived items (the newest are left out). */
export const MAX_EXPORT_MESSAGES = 10_000;
export const MAX_EXPORT_EVENTS = 1_000;
/**
 * ...and at most this many bytes of JSON of messages and archived items together (messages first,
 * then archived items in what is left): a message weighs up to ~100 KiB (its raw notification is
 * kept up to 64 KiB) and a poisoned piece up to a few MiB, so the count bounds alone let a worst-
 * case user's export pass 1 GB, on an instance of 2 or 4 GB (Flex Consumption).
 */
export const MAX_EXPORT_BYTES = 32 * 1024 * 1024;
/** Messages read at a time by an export (the budget is checked message by message). */
const EXPORT_PAGE = 200;
/** Archived items read at a time by an export (each up to 256 KiB of JSON, more when in parts). */
const EXPORT_EVENT_PAGE = 16;
/** The owner of the reply lock an erase takes (it never ends: the user goes with it). */
const ERASE_LOCK_OWNER = 'erase';
const LOCK_FOREVER = new Date('9999-12-31T00:00:00Z');
/** An erase still under way this long after it began was interrupted: health, or another erase, finishes it. */
export const ERASE_STALE_MS = 10 * 60_000;
/** Messages read (then deleted) at a time. */
const ERASE_BATCH = 1_000;
/**
 * An erase remembers the ids of the inbound messages it erases that reached us this long before it
 * began (Meta retries a notification for up to 7 days): one delivered again later is known by its
 * id, whatever its `timestamp` says (./users `refuseSentBeforeErase`).
 */
export const ERASED_MESSAGES_WITHIN_MS = 7 * 24 * 3_600_000;
/** The fields of a stored message that writers change, and that decide how it is counted. */
const stateKey = (m: MessageDoc): string =>
  JSON.stringify([m.replyState ?? null, m.status ?? null, m.failedUncounted ?? null, m.uncounted ?? null]);

function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    const group = groups.get(k);
    if (group) group.push(item);
    else groups.set(k, [item]);
  }
  return groups;
}

/** A message as exported: with the message as WhatsApp delivered it (inbound; else null). */
export interface ExportedMessage extends Message {
  /** Parsed; the stored text when it was cut to its bound (then not JSON). */
  readonly raw: unknown;
}

/** What was kept of the message as Meta sent it: the JSON, or its text when it was cut. */
function rawOf(d: MessageDoc): unknown {
  if (d.rawJson === undefined) return d.raw ?? null;
  try {
    return JSON.parse(d.rawJson) as unknown;
  } catch {
    return d.rawJson;
  }
}

export interface UserExport {
  readonly user: User;
  /** Numbers the user wrote from before their current one (a `user_changed_number`). */
  readonly previousWaIds: string[];
  /** Business-scoped ids the user had before their current one. */
  readonly previousBsuids: string[];
  readonly messages: ExportedMessage[];
  readonly events: ArchivedEvent[];
  /** True when the bounds above cut the export. */
  readonly truncated: boolean;
}

export interface EraseReport {
  readonly messages: number;
  readonly events: number;
}

/** The numbers and business-scoped ids a user wrote from: their archived items carry one. */
const identifiersOf = (u: Omit<BackedUpUser, '_id' | 'createdAt'>): string[] =>
  [u.waId, u.bsuid, ...(u.previousWaIds ?? []), ...(u.previousBsuids ?? [])].filter((v): v is string =>
    Boolean(v),
  );

/** What is left of an export's bytes of JSON: items are taken whole, or not at all. */
class ExportBudget {
  constructor(private left: number) {}

  /** Takes `item` (its JSON and the comma after it) when it fits in what is left. */
  take(item: unknown): boolean {
    const bytes = Buffer.byteLength(JSON.stringify(item)) + 1;
    // The caller stops at the first item refused: an export is the oldest items, without gaps.
    if (bytes > this.left) return false;
    this.left -= bytes;
    return true;
  }
}

export class PersonalData {
  constructor(
    private readonly users: Gateway<UserDoc>,
    private readonly messages: Gateway<MessageDoc>,
    private readonly events: Gateway<EventDoc>,
    private readonly stats: StatsRepository,
    private readonly usersRepo: UsersRepository,
    private readonly keys: SubjectKeys,
  ) {}

  /**
   * The archived items that concern a user, oldest first, bounded: a poisoned notification kept in
   * parts (./poisoned) counts once, by its first part, which `archivedWithin` makes whole again.
   */
  private async archivedOf(user: UserDoc, limit: number): Promise<{ docs: EventDoc[]; subjects: string[] }> {
    const first = { part: { $exists: false } } as const;
    // Without their payloads (up to 256 KiB each): `archivedWithin` reads those within the budget.
    const light = { payloadJson: 0, payload: 0 } as const;
    const byUser = await this.events.find(
      { userId: user._id, kind: { $ne: AUDIT_KIND }, ...first },
      { sort: { userId: 1, createdAt: 1 }, limit, projection: light },
    );
    const bySubject: EventDoc[] = [];
    const subjects = await this.keys.subjectsOf(identifiersOf(user));
    for (const subject of subjects) {
      bySubject.push(
        ...(await this.events.find(
          { subject, ...first },
          { sort: { subject: 1, createdAt: 1 }, limit, projection: light },
        )),
      );
    }
    const others = await this.othersAmong(user._id, bySubject);
    const seen = new Set(byUser.map((e) => e._id));
    const theirs = bySubject.filter((e) => !(e.userId && others.has(e.userId)));
    const docs = [...byUser, ...theirs.filter((e) => !seen.has(e._id) && seen.add(e._id))]
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime())
      .slice(0, limit);
    return { docs, subjects };
  }

  /**
   * The ids of the live users other than `userId` that some of `items` (found by the subject of a
   * number or id the user has or had) are filed with: the number's previous or next owner, who held
   * it when the item came. A record merged into the user, or erased, is no one now: its items under
   * the user's subjects are the user's. One read, when an item is filed with another id.
   */
  private async othersAmong(
    userId: string,
    items: readonly Pick<EventDoc, 'userId'>[],
  ): Promise<Set<string>> {
    const ids = [...new Set(items.flatMap((e) => (e.userId && e.userId !== userId ? [e.userId] : [])))];
    if (!ids.length) return new Set();
    const live = await this.users.find({ _id: { $in: ids } }, { projection: { _id: 1 } });
    return new Set(live.map((u) => u._id));
  }

  /**
   * The archived items (`heads`, read without payloads by `archivedOf`) with their payloads, oldest
   * first, as many as `budget` holds: reading stops at the first that does not fit (`cut`). Each
   * piece kept in parts is whole again: one item, its payload the whole text (read as JSON when it
   * is), not parts to put in order. A part whose first part is gone (a removal interrupted after
   * the piece was put back) is exported as it is: erase removes it too.
   */
  private async archivedWithin(
    heads: readonly EventDoc[],
    subjects: readonly string[],
    budget: ExportBudget,
  ): Promise<{ events: ArchivedEvent[]; cut: boolean }> {
    const parts = new Map<string, EventDoc>();
    for (const subject of subjects) {
      const found = await this.events.find(
        { subject, part: { $exists: true } },
        { sort: { subject: 1, createdAt: 1 }, projection: { _id: 1, createdAt: 1 } },
      );
      for (const d of found) parts.set(d._id, d);
    }
    // Parts of a piece left out by the count bound stay out with it (`truncated` says so).
    const pieces = [...new Set([...parts.keys()].map(pieceOfPart))];
    const present = new Set(
      pieces.length === 0
        ? []
        : (await this.events.find({ _id: { $in: pieces } }, { projection: { _id: 1 } })).map((d) => d._id),
    );
    const orphans = [...parts.values()].filter((p) => !present.has(pieceOfPart(p._id)));
    const order = [...heads, ...orphans].sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime());
    const events: ArchivedEvent[] = [];
    for (let at = 0; at < order.length; at += EXPORT_EVENT_PAGE) {
      const page = order.slice(at, at + EXPORT_EVENT_PAGE);
      const docs = new Map(
        (await this.events.find({ _id: { $in: page.map((d) => d._id) } })).map((d) => [d._id, d]),
      );
      for (const { _id } of page) {
        const doc = docs.get(_id);
        // Gone since it was listed (retention, or put back on the queue): not the user's any more.
        if (!doc) continue;
        const event = toEvent(await this.whole(doc));
        if (!budget.take(event)) return { events, cut: true };
        events.push(event);
      }
    }
    return { events, cut: false };
  }

  /** A piece kept in parts, whole again; as it is when one of its parts is missing. */
  private async whole(d: EventDoc): Promise<EventDoc> {
    if (!d.parts) return d;
    const ids = Array.from({ length: d.parts - 1 }, (_, i) => partId(d._id, i + 1));
    const found = new Map(
      (await this.events.find({ _id: { $in: ids } })).map((p) => [p._id, p.payloadJson] as const),
    );
    const texts = ids.map((id) => found.get(id));
    if (texts.some((t) => t === undefined)) return d;
    const rest = { ...d };
    delete rest.parts;
    return {
      ...rest,
      reason: d.reason.replace(/ \(part 1 of \d+\)$/, ''),
      payloadJson: [d.payloadJson ?? '', ...texts].join(''),
      truncated: false,
    };
  }

  /**
   * A user's messages with what was kept of them as WhatsApp delivered them, oldest first, at most
   * `limit` and as many as `budget` holds; `cut` when more exist. Read a page at a time (keyset on
   * createdAt then _id: every stored message of a user has its createdAt), so that memory holds the
   * budget and one page, whatever the user's history weighs.
   */
  private async messagesWithin(
    userId: string,
    limit: number,
    budget: ExportBudget,
  ): Promise<{ messages: ExportedMessage[]; cut: boolean }> {
    const messages: ExportedMessage[] = [];
    let after: MessageDoc | null = null;
    for (;;) {
      const t = after?.createdAt;
      const filter: Filter<MessageDoc> = t
        ? {
            userId,
            createdAt: { $gte: t },
            $or: [{ createdAt: { $gt: t } }, { _id: { $gt: (after as MessageDoc)._id } }],
          }
        : { userId };
      const page = await this.messages.find(filter, {
        sort: { userId: 1, createdAt: 1, _id: 1 },
        limit: Math.min(EXPORT_PAGE, limit + 1 - messages.length),
        // Search terms are derived from the text (and weigh up to 640 KiB a message): left out.
        projection: { terms: 0 },
      });
      for (const d of page) {
        if (messages.length === limit) return { messages, cut: true };
        const message = { ...toMessage(d), raw: rawOf(d) };
        if (!budget.take(message)) return { messages, cut: true };
        messages.push(message);
      }
      const last = page.at(-1);
      if (!last || page.length < EXPORT_PAGE || !(last.createdAt instanceof Date))
        return { messages, cut: false };
      after = last;
    }
  }

  /**
   * Everything stored about a user, oldest first, bounded (MAX_EXPORT_MESSAGES, MAX_EXPORT_EVENTS,
   * and `maxBytes` of JSON: messages first, archived items in what is left). Null when the user
   * does not exist.
   */
  async exportUser(userId: string, maxBytes = MAX_EXPORT_BYTES): Promise<UserExport | null> {
    const live = { _id: userId, erasing: { $ne: true } } as const;
    const user = await this.users.findOne(live);
    if (!user) return null;
    const budget = new ExportBudget(maxBytes);
    const messages = await this.messagesWithin(userId, MAX_EXPORT_MESSAGES, budget);
    const heads = await this.archivedOf(user, MAX_EXPORT_EVENTS + 1);
    const archived = await this.archivedWithin(
      heads.docs.slice(0, MAX_EXPORT_EVENTS),
      heads.subjects,
      budget,
    );
    // An erase begun meanwhile may have deleted part of what was read: no partial export of them.
    if (!(await this.users.findOne(live, { projection: { _id: 1 } }))) return null;
    return {
      user: toUser(user),
      previousWaIds: user.previousWaIds ?? [],
      previousBsuids: user.previousBsuids ?? [],
      messages: messages.messages,
      events: archived.events,
      truncated: messages.cut || archived.cut || heads.docs.length > MAX_EXPORT_EVENTS,
    };
  }

  /**
   * Erases a user: messages, archived items, the user (with their reply lock), and lowers the
   * counters by what is erased. Null when the user does not exist.
   *
   * Writers may be at work on the user meanwhile (a reply being sent, a message arriving), and
   * nothing here is a transaction. So the erase first marks the user `erasing` and takes their
   * reply lock for good: no worker starts on them, ingest tries their notifications again later,
   * and a writer that stored something meanwhile finds out at its next write to the user, waits
   * for the erase to end and takes it back (`MessagesRepository.takeBack`). Each message is
   * deleted only in the state it was read in, so the counters lose exactly what they held of it.
   * The user goes last, so an interrupted erase can be run again; `npm run health` finds one left
   * under way and `--repair` finishes it (`unfinishedErases`). Its audit entry remembers which of
   * the user's recent inbound messages and archived items it erased (`rememberer`), so that Meta
   * delivering one again brings nothing back, whatever the message's `timestamp` says.
   */
  async eraseUser(userId: string, at = new Date()): Promise<EraseReport | null> {
    // One erase of a user works at a time: a second one (a double click, a retry) waits for the
    // first; one begun ERASE_STALE_MS ago and still under way was interrupted, and is taken over.
    const user = await this.users.findOneAndUpdate(
      {
        _id: userId,
        $or: [
          { erasing: { $ne: true } },
          { erasingSince: { $lt: new Date(at.getTime() - ERASE_STALE_MS) } },
          { erasingSince: { $exists: false } },
        ],
      },
      {
        $set: {
          erasing: true,
          erasingSince: at,
          replyLock: { owner: ERASE_LOCK_OWNER, until: LOCK_FOREVER },
        },
      },
      { returnDocument: 'before' },
    );
    if (!user) return this.otherErase(userId);
    const subjects = await this.keys.subjectsOf(identifiersOf(user));
    const remember = await this.rememberer(userId, at, subjects);
    const delta = new CounterDelta();
    let count = 0;
    for (;;) {
      const batch = await this.messages.find(
        { userId },
        { projection: { ...COUNTED_FIELDS, receivedAt: 1, waMessageId: 1 }, limit: ERASE_BATCH },
      );
      if (batch.length === 0) break;
      // Remembered before they go: an erase interrupted after the delete, run again, cannot.
      await remember.messages(batch);
      for (const docs of groupBy(batch, stateKey).values()) {
        const ids = docs.map((m) => m._id);
        const first = docs[0] as MessageDoc;
        // Deleted only as read: a message whose state moved meanwhile stays for the next batch.
        const deleted = await this.messages.deleteMany({
          userId,
          _id: { $in: ids },
          replyState: first.replyState ?? null,
          status: first.status ?? null,
          failedUncounted: first.failedUncounted ?? null,
          uncounted: first.uncounted ?? null,
        } as Filter<MessageDoc>);
        const left =
          deleted === docs.length
            ? new Set<string>()
            : new Set(
                (await this.messages.find({ userId, _id: { $in: ids } }, { projection: { _id: 1 } })).map(
                  (m) => m._id,
                ),
              );
        for (const m of docs) {
          if (left.has(m._id)) continue;
          count++;
          // What the counters hold of it (nothing yet for an answer still awaited, say).
          const counted = countedAs(m);
          if (counted) delta.message(counted, -1);
        }
      }
    }
    await remember.archived();
    let events = await this.events.deleteMany({ userId, kind: { $ne: AUDIT_KIND } });
    // Not what another live user holds of it: the number's previous or next owner (`othersAmong`).
    const others = subjects.length
      ? await this.othersAmong(
          userId,
          await this.events.find(
            { subject: { $in: [...subjects] }, userId: { $nin: [null, userId] } },
            { projection: { userId: 1 } },
          ),
        )
      : new Set<string>();
    for (const subject of subjects)
      events += await this.events.deleteMany(
        others.size ? { subject, userId: { $nin: [...others] } } : { subject },
      );
    await this.stats.apply(delta);
    // Two erases at once: the one that deletes the user counts it.
    await this.usersRepo.deleteUser(userId, user.createdAt);
    return { messages: count, events };
  }

  /**
   * What remembers, in the erase's audit entry (the latest `erase` of the user at or before `at`),
   * what lets nothing that comes back from before the erase bring the person back. `subjects` (those of the user's
   * numbers and ids), written first, so that an item filed under them from before the erase is
   * left out (./events `archiveUnlessErased`). `messages`: the keyed hashes of the ids of the
   * inbound messages it is about to delete that reached us within ERASED_MESSAGES_WITHIN_MS before
   * that entry, and of the answers WhatsApp took in that time (a status of one arriving after the
   * erase leaves no placeholder: ./events `erasedAmong`), up to MAX_ERASED_MESSAGES in all (those of an earlier run of the same erase
   * included): one write per batch that adds any. `archived`: those of the items filed under
   * `subjects` archived within that time, up to MAX_ERASED_ITEMS (one read, one write), before
   * they are deleted. Without an entry (an erase no request audited) nothing is remembered: ingest
   * only drops what an entry names.
   */
  private async rememberer(
    userId: string,
    at: Date,
    subjects: readonly string[],
  ): Promise<{
    messages: (batch: readonly MessageDoc[]) => Promise<void>;
    archived: () => Promise<void>;
  }> {
    // The latest only (on the userId_createdAt index): an earlier entry's lists are not read.
    const [latest] = await this.events.find(
      { userId, kind: AUDIT_KIND, reason: 'erase', createdAt: { $lte: at } },
      {
        sort: { userId: -1, createdAt: -1 },
        limit: 1,
        projection: { createdAt: 1, erasedMessages: 1, erasedSubjects: 1, erasedItems: 1 },
      },
    );
    if (!latest) return { messages: async () => undefined, archived: async () => undefined };
    const entry = { _id: latest._id, kind: AUDIT_KIND };
    const named = new Set(latest.erasedSubjects);
    const unnamed = subjects.filter((s) => !named.has(s)).slice(0, MAX_ERASED_SUBJECTS - named.size);
    if (unnamed.length) await this.events.updateOne(entry, { $push: { erasedSubjects: { $each: unnamed } } });
    const hashOf = await this.keys.messageHashes();
    const since = latest.createdAt.getTime() - ERASED_MESSAGES_WITHIN_MS;
    const remembered = new Set(latest.erasedMessages);
    const items = new Set(latest.erasedItems);
    return {
      messages: async (batch) => {
        const added: string[] = [];
        for (const m of batch) {
          if (remembered.size >= MAX_ERASED_MESSAGES) break;
          // An inbound message by when it reached us; an answer (its statuses come later) by when
          // it was sent, if WhatsApp took it (its id is then the wamid its statuses name).
          const at =
            m.direction === 'inbound' ? m.receivedAt : m.waMessageId === m._id ? m.createdAt : undefined;
          if (!(at instanceof Date) || at.getTime() < since) continue;
          const hash = hashOf(m._id);
          if (remembered.has(hash)) continue;
          remembered.add(hash);
          added.push(hash);
        }
        if (added.length) await this.events.updateOne(entry, { $push: { erasedMessages: { $each: added } } });
      },
      archived: async () => {
        if (!subjects.length || items.size >= MAX_ERASED_ITEMS) return;
        const found = await this.events.find(
          { subject: { $in: [...subjects] }, createdAt: { $gte: new Date(since) } },
          { projection: { _id: 1 }, limit: MAX_ERASED_ITEMS },
        );
        const added: string[] = [];
        for (const { _id } of found) {
          if (items.size >= MAX_ERASED_ITEMS) break;
          const hash = hashOf(_id);
          if (items.has(hash)) continue;
          items.add(hash);
          added.push(hash);
        }
        if (added.length) await this.events.updateOne(entry, { $push: { erasedItems: { $each: added } } });
      },
    };
  }

  /**
   * The user was not there to mark: unknown (null), or another erase of them is under way, which
   * this one waits for (nothing is left for it to erase). Still under way after the wait: 503.
   */
  private async otherErase(userId: string): Promise<EraseReport | null> {
    if (!(await this.users.findOne({ _id: userId }, { projection: { _id: 1 } }))) return null;
    if (await this.usersRepo.goneAfterErase(userId)) return { messages: 0, events: 0 };
    throw new AppError(ErrorCode.UNAVAILABLE, 'an erase of this user is under way; try again later', {
      retryAfterSeconds: 30,
    });
  }

  /**
   * Users an erase began on before `before` and never finished (the host stopped mid-way, say):
   * ingest keeps trying their notifications again, and in the end puts them in `inbound-poison`.
   */
  async unfinishedErases(before: Date): Promise<string[]> {
    const docs = await this.users.find({ erasing: true }, { projection: { erasingSince: 1 } });
    return docs.filter((u) => !(u.erasingSince instanceof Date) || u.erasingSince < before).map((u) => u._id);
  }

  /**
   * Records who (a token's name, and its id: names may repeat) did what to which user, and when;
   * never a message's text. Returns the entry's id.
   */
  async audit(entry: AuditEntry): Promise<string> {
    const id = `audit:${randomBytes(8).toString('hex')}`;
    await this.events.insertOne(auditDoc(id, entry));
    return id;
  }

  /**
   * The audit entry of an operator's request that carried an Idempotency-Key, or null: one per key
   * for a user (its id is derived from both), written by `auditOnce` before the action. `request`:
   * the request as the caller writes it down whole (what it asks for), compared with the one that
   * wrote the entry.
   */
  async auditOf(userId: string, idempotencyKey: string, request: string): Promise<KeyedAudit | null> {
    const doc = await this.events.findOne({ _id: keyedAuditId(userId, idempotencyKey), kind: AUDIT_KIND });
    return doc ? keyedAudit(doc, requestPrint(userId, idempotencyKey, request)) : null;
  }

  /**
   * `audit` for a request that carries an Idempotency-Key: the entry is written only if the key has
   * none yet for this user. `first` when this call wrote it; else the entry already there (another
   * request with the key, which began at its `at`).
   */
  async auditOnce(
    entry: AuditEntry,
    idempotencyKey: string,
    request: string,
  ): Promise<{ readonly id: string; readonly first: boolean; readonly entry: KeyedAudit }> {
    const id = keyedAuditId(entry.userId, idempotencyKey);
    const print = requestPrint(entry.userId, idempotencyKey, request);
    for (;;) {
      const inserted = await this.events.insertOne(auditDoc(id, entry, print));
      if (inserted === 'inserted')
        return {
          id,
          first: true,
          entry: {
            at: entry.at,
            tokenName: entry.tokenName,
            tokenId: entry.tokenId ?? null,
            sameRequest: true,
          },
        };
      const existing = await this.auditOf(entry.userId, idempotencyKey, request);
      // Withdrawn between the two (that request sent nothing): the key is free again.
      if (existing) return { id, first: false, entry: existing };
    }
  }

  /**
   * Takes back an audit entry for an action that did not happen after all (an operator message
   * WhatsApp refused with a 4xx: nothing was sent). Entries are recorded before their action, so
   * that no action is ever unaudited; this is the only way one leaves the trail.
   */
  async withdrawAudit(id: string): Promise<void> {
    await this.events.deleteOne({ _id: id, kind: AUDIT_KIND });
  }

  /**
   * The users erased at or after `since`, by the audit trail (the latest erase of each): a restore
   * of a backup made before must not bring them back (`ErasedSinceBackup`).
   */
  private async erasuresSince(since: Date): Promise<Map<string, Date>> {
    const docs = await this.events.find(
      { kind: AUDIT_KIND, createdAt: { $gte: since } },
      { projection: { reason: 1, userId: 1, createdAt: 1 } },
    );
    const erased = new Map<string, Date>();
    for (const d of docs) {
      if (d.reason !== 'erase' || !d.userId) continue;
      const known = erased.get(d.userId);
      if (!known || d.createdAt > known) erased.set(d.userId, d.createdAt);
    }
    return erased;
  }

  /**
   * What a restore of a backup begun at `backupAt` leaves out (`ErasedSinceBackup`): the file's
   * users erased since, or up to ERASE_STALE_MS before (an erase still under way then). `filedWith`:
   * the user ids the file's archived items are filed with; of those filed under an erased user's
   * subjects, the items of another live user (one of the file's that stays, or one the database
   * holds) are written, as the erase left them (`othersAmong`). `recorded`: the erases the file's
   * own audit trail holds (restored into another database, an erase that ran while the backup read
   * is known only there). An id erased since whose user the file does not hold (the erase came
   * between the backup's reads of messages and of users) has its messages and items left out too.
   */
  async erasedSinceBackup(
    backupAt: Date | null,
    backedUp: readonly BackedUpUser[],
    filedWith: Iterable<string> = [],
    recorded: Iterable<{ readonly userId: string; readonly at: Date }> = [],
  ): Promise<ErasedSinceBackup> {
    const since = new Date((backupAt?.getTime() ?? 0) - ERASE_STALE_MS);
    const erasures = await this.erasuresSince(since);
    for (const { userId, at } of recorded) {
      const known = erasures.get(userId);
      if (at >= since && (!known || at > known)) erasures.set(userId, at);
    }
    // An erase of a user the file does not hold may be of one of its users under another id: a
    // database with a key of its own (the app ran on an empty one) named the person otherwise.
    // Users are one person by number, else bsuid: the ids that person may have had here are tried.
    const inFile = new Set(backedUp.map((u) => u._id));
    const idsOf = [...erasures.keys()].some((id) => !inFile.has(id)) ? await this.keys.everyUserIdOf() : null;
    const erasedAt = (u: BackedUpUser): Date | undefined => {
      const at = erasures.get(u._id);
      if (at || !idsOf) return at;
      for (const id of everyIdOfIdentity(idsOf, u)) {
        const other = inFile.has(id) ? undefined : erasures.get(id);
        if (other) return other;
      }
      return undefined;
    };
    const erased = backedUp.filter((u) => {
      const at = erasedAt(u);
      return at !== undefined && at >= u.createdAt;
    });
    const subjects = await this.keys.subjectsOf(erased.flatMap(identifiersOf));
    const gone = new Set(erased.map((u) => u._id));
    const others = subjects.length ? [...new Set(filedWith)].filter((id) => !gone.has(id)) : [];
    const live = others.filter((id) => inFile.has(id));
    const elsewhere = others.filter((id) => !inFile.has(id));
    for (let at = 0; at < elsewhere.length; at += 1000) {
      const found = await this.users.find(
        { _id: { $in: elsewhere.slice(at, at + 1000) } },
        { projection: { _id: 1 } },
      );
      live.push(...found.map((u) => u._id));
    }
    const absent = [...erasures.keys()].filter((id) => !inFile.has(id));
    return new ErasedSinceBackup(gone, subjects, live, absent);
  }

  /** The subject keys of a restored backup, kept after the database's own (./subjects). */
  adoptSubjectKeys(keys: readonly string[]): Promise<void> {
    return this.keys.adopt(keys);
  }

  /** Takes out of the counters what a restore left out of what it wrote (`ErasedSinceBackup.delta`). */
  async uncount(delta: CounterDelta): Promise<void> {
    await this.stats.apply(delta);
  }

  async auditTrail(limit = 100): Promise<ArchivedEvent[]> {
    const docs = await this.events.find(
      { kind: AUDIT_KIND },
      {
        sort: { kind: 1, createdAt: 1 },
        limit,
        projection: { erasedMessages: 0, erasedSubjects: 0, erasedItems: 0 },
      },
    );
    return docs.map(toEvent);
  }
}

/** Who did what to which user, and when. */
export interface AuditEntry {
  /** The token's name: who, as the audit trail shows it. */
  readonly tokenName: string;
  /** The token's id (null: MANAGE_API_TOKEN): several tokens may share a name. */
  readonly tokenId?: string | null;
  readonly action: string;
  readonly userId: string;
  readonly at: Date;
}

/** An audit entry as stored (`audit`, `auditOnce`): who did what to which user, and when. */
const auditDoc = (id: string, entry: AuditEntry, request?: string): EventDoc => ({
  _id: id,
  kind: AUDIT_KIND,
  reason: entry.action,
  createdAt: entry.at,
  userId: entry.userId,
  payload: {
    tokenName: entry.tokenName,
    ...(entry.tokenId === undefined ? {} : { tokenId: entry.tokenId }),
    action: entry.action,
    userId: entry.userId,
    at: entry.at,
    ...(request === undefined ? {} : { request }),
  },
});

/** What an audit entry written for an Idempotency-Key says of the request that wrote it. */
export interface KeyedAudit {
  readonly at: Date;
  readonly tokenName: string;
  /**
   * The id of the token that used the key (null: MANAGE_API_TOKEN); undefined for an entry written
   * before ids were recorded, when token names were unique.
   */
  readonly tokenId: string | null | undefined;
  /**
   * Whether the request asking now is the one that wrote the entry (the same body); undefined for
   * an entry written before requests were recorded with it.
   */
  readonly sameRequest: boolean | undefined;
}

/** The audit entry id of a user's request with `key`: the key is the client's, never shown. */
const keyedAuditId = (userId: string, key: string): string =>
  `audit:key:${createHash('sha256').update(`${userId}\n${key}`).digest('hex').slice(0, 32)}`;

/**
 * What a keyed audit entry keeps of its request: a hash of it keyed with the user and the
 * Idempotency-Key (never stored in clear), so that the trail keeps no message's text and a text
 * cannot be guessed from it without the key.
 */
const requestPrint = (userId: string, key: string, request: string): string =>
  createHash('sha256').update(`${userId}\n${key}\n${request}`).digest('hex').slice(0, 32);

const keyedAudit = (doc: EventDoc, print: string): KeyedAudit => {
  const payload = (doc.payload ?? {}) as { tokenName?: unknown; tokenId?: unknown; request?: unknown };
  return {
    at: doc.createdAt,
    tokenName: typeof payload.tokenName === 'string' ? payload.tokenName : '',
    tokenId: typeof payload.tokenId === 'string' || payload.tokenId === null ? payload.tokenId : undefined,
    sameRequest: typeof payload.request === 'string' ? payload.request === print : undefined,
  };
};

/** What a backup holds of a user that decides whether an erase recorded since applies to it. */
export interface BackedUpUser {
  readonly _id: string;
  readonly createdAt: Date;
  readonly waId?: string | null | undefined;
  readonly bsuid?: string | null | undefined;
  readonly previousWaIds?: readonly string[] | null | undefined;
  readonly previousBsuids?: readonly string[] | null | undefined;
}

/**
 * What a restore leaves out so that an erase the audit trail records after the backup was made
 * stays done: a user of the file erased after that record of them was made (a person who wrote
 * again after an erase, and whose new record the file holds, is kept), their messages and the
 * archived items that concern them, as the erase found them. The file's counters still count
 * what is left out: `delta` takes it out again, as the erase did, once the counters are written.
 */
export class ErasedSinceBackup {
  private readonly userIds: ReadonlySet<string>;
  private readonly subjects: ReadonlySet<string>;
  /** Live users other than those left out: their items under the subjects are theirs, and stay. */
  private readonly others: ReadonlySet<string>;
  /**
   * Ids erased since whose user the file does not hold: their messages and items are left out;
   * the file's counters, read after the erase took them out, are left as they are.
   */
  private readonly absent: ReadonlySet<string>;
  readonly delta = new CounterDelta();
  readonly left = { users: 0, messages: 0, events: 0 };

  constructor(
    userIds: Iterable<string>,
    subjects: Iterable<string>,
    others: Iterable<string> = [],
    absent: Iterable<string> = [],
  ) {
    this.userIds = new Set(userIds);
    this.subjects = new Set(subjects);
    this.others = new Set(others);
    this.absent = new Set(absent);
  }

  get users(): number {
    return this.userIds.size;
  }

  /** True when the restore must not write this document of the file (and counts it left out). */
  leavesOut(collection: string, doc: Record<string, unknown>): boolean {
    if (this.userIds.size === 0 && this.absent.size === 0) return false;
    if (
      (collection === 'messages' || (collection === 'events' && doc['kind'] !== AUDIT_KIND)) &&
      this.absent.has(doc['userId'] as string)
    ) {
      if (collection === 'messages') this.left.messages++;
      else this.left.events++;
      return true;
    }
    if (collection === 'users' && this.userIds.has(doc['_id'] as string)) {
      // One still marked `uncounted` is not in the file's counters (./pending).
      if (doc['createdAt'] instanceof Date && doc['uncounted'] !== true)
        this.delta.user(doc['createdAt'], -1);
      this.left.users++;
      return true;
    }
    if (collection === 'messages' && this.userIds.has(doc['userId'] as string)) {
      const counted = countedAs(doc as unknown as MessageDoc);
      if (counted) this.delta.message(counted, -1);
      this.left.messages++;
      return true;
    }
    if (
      collection === 'events' &&
      doc['kind'] !== AUDIT_KIND &&
      (this.userIds.has(doc['userId'] as string) ||
        (this.subjects.has(doc['subject'] as string) && !this.others.has(doc['userId'] as string)))
    ) {
      this.left.events++;
      return true;
    }
    return false;
  }
}
