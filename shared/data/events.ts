// Archived payloads that could not be processed (dead letters) and the audit trail. Payloads are
// kept as bounded JSON text (see ./bounded-json), and each archived item names whom it concerns
// (the user, else the subject of the number or business-scoped id it carries: ./subjects) so that
// erase and export find it.
import { createHash, randomUUID } from 'node:crypto';
import type { Filter } from 'mongodb';
import { boundedJson } from './bounded-json';
import type { Gateway } from './gateway';
import type { SubjectKeys } from './subjects';
import type { ArchivedEvent } from './types';

/** The kind of the audit trail's entries (./erase): who did what to which user, and when. */
export const AUDIT_KIND = 'audit';

/** The most message ids an erase remembers (`EventDoc.erasedMessages`): ~560 KB as BSON. */
export const MAX_ERASED_MESSAGES = 20_000;
/** The most archived items an erase remembers (`EventDoc.erasedItems`): ~140 KB as BSON. */
export const MAX_ERASED_ITEMS = 5_000;
/** The most subjects an erase names (`EventDoc.erasedSubjects`). */
export const MAX_ERASED_SUBJECTS = 1_000;
/**
 * A message (or archived item) dated at most this long before an erase began is from before it,
 * remembered or not (the erase remembers at most MAX_ERASED_MESSAGES ids, of messages that reached
 * us within 7 days); one dated earlier is from before it only when the erase remembers its id:
 * Meta's timestamps can be far older than a new message (a client copying an old example, a
 * phone's wrong clock). ./users `refuseSentBeforeErase`, `EventsRepository.archiveUnlessErased`.
 */
export const ERASE_RECENT_MS = 8 * 24 * 3_600_000;

export interface EventDoc {
  _id: string;
  kind: string;
  reason: string;
  createdAt: Date;
  userId: string | null;
  /** Pseudonym of the identifier an archived item carries when no user is known. */
  subject?: string | null;
  payloadJson?: string;
  /** True when the payload was cut (too deep or too long), or is one part of several (`parts`). */
  truncated?: boolean;
  /** A payload kept in several documents (./poisoned): the first says how many there are... */
  parts?: number;
  /** ...and each of the others which one it is (1, 2, ...). */
  part?: number;
  /** Audit entries (and items archived before payloadJson) keep a small object. */
  payload?: unknown;
  /**
   * An erase's audit entry: keyed hashes (./subjects) of the ids of the inbound messages it erased
   * that had reached us within ERASED_MESSAGES_WITHIN_MS (./erase), and of the answers sent in that
   * time (their wamids), at most MAX_ERASED_MESSAGES.
   * Kept beside the payload, so that the audit trail's readers never carry them.
   */
  erasedMessages?: string[];
  /**
   * An erase's audit entry: the subjects (./subjects) of every number and business-scoped id of
   * the user, and keyed hashes of the ids of the archived items filed under them that it deleted
   * (those archived within ERASED_MESSAGES_WITHIN_MS, at most MAX_ERASED_ITEMS): an item from
   * before the erase, delivered again after it, is not filed again (`archiveUnlessErased`).
   */
  erasedSubjects?: string[];
  erasedItems?: string[];
}

/** Archived payloads are cut at this length (the whole notification is at most 3 MiB). */
export const MAX_EVENT_JSON = 256 * 1024;
/**
 * `archiveMany` writes at most this many items, of about this many payload bytes, per bulk write
 * (the gateway sends each in requests under Cosmos DB's 2 MB: `runBulk`).
 */
const MAX_BATCH_ITEMS = 1_000;
const MAX_BATCH_BYTES = 2 * 1024 * 1024;

export const toEvent = (d: EventDoc): ArchivedEvent => {
  let payload: unknown = d.payload ?? null;
  if (d.payloadJson !== undefined) {
    try {
      payload = d.truncated ? d.payloadJson : JSON.parse(d.payloadJson);
    } catch {
      payload = d.payloadJson;
    }
  }
  return {
    id: d._id,
    kind: d.kind,
    reason: d.reason,
    createdAt: d.createdAt,
    userId: d.userId ?? null,
    payload,
  };
};

/** What to archive: `identifier` is the number or bsuid it carries, if any. */
export interface ArchiveInput {
  readonly kind: string;
  readonly reason: string;
  readonly payload: unknown;
  readonly userId?: string | null;
  readonly identifier?: string | null;
  /** Meta's latest time in it, if it gives one (`archiveUnlessErased`). */
  readonly sentAt?: Date | null;
}

/** An archived item's id: from its kind and content, so that the same item is archived once. */
const archivedId = (kind: string, json: string): string =>
  `${kind}:${createHash('sha256').update(json).digest('hex').slice(0, 32)}`;

export class EventsRepository {
  constructor(
    private readonly events: Gateway<EventDoc>,
    private readonly keys: SubjectKeys,
  ) {}

  /** The subject an item about `identifier` (a number or business-scoped id) is filed under. */
  subjectOf(identifier: string): Promise<string> {
    return this.keys.subjectOf(identifier);
  }

  /**
   * Archives a payload once: the id derives from its kind and content, so a redelivered
   * notification is archived once. `identifier`: the number or bsuid it carries, if any.
   */
  async archive(input: ArchiveInput & { at: Date }): Promise<string> {
    const { _id, ...fields } = await this.docFor(input, input.at);
    await this.events.updateOne({ _id }, { $setOnInsert: fields }, { upsert: true });
    return _id;
  }

  /**
   * `archive` for many items in one bulk write (the migration's rows that cannot be imported);
   * returns how many were archived now (the others were archived before).
   */
  async archiveMany(items: readonly ArchiveInput[], at: Date): Promise<number> {
    const docs: EventDoc[] = [];
    for (const input of items) docs.push(await this.docFor(input, at));
    return this.insertMissing(docs);
  }

  /**
   * `archiveMany` for what a webhook notification holds, leaving out each item from before the
   * erase of a person it is filed under (the erase's audit entry names their subjects): Meta's
   * latest time in it (`sentAt`) a whole second or more before the erase began and at most
   * ERASE_RECENT_MS before it, or an item the erase deleted (`erasedItems`: delivered again). An
   * erase is for good: what it removed is not filed again. One read when an item names a person
   * (of the erases of the last ERASE_RECENT_MS, or after the items' times); none otherwise.
   * Returns how many items were left out.
   */
  async archiveUnlessErased(items: readonly ArchiveInput[], at: Date): Promise<number> {
    const docs: EventDoc[] = [];
    for (const input of items) docs.push(await this.docFor(input, at));
    const erased = await this.fromBeforeErase(docs, items, at);
    await this.insertMissing(docs.filter((_, i) => !erased.has(i)));
    return erased.size;
  }

  /** The indexes of `docs` (made of `items`) from before the erase of the person they are filed under. */
  private async fromBeforeErase(
    docs: readonly EventDoc[],
    items: readonly ArchiveInput[],
    at: Date,
  ): Promise<Set<number>> {
    const left = new Set<number>();
    if (!docs.some((d) => d.subject)) return left;
    // An erase names subjects, and remembers items, under the keys the database had then: one
    // recorded before a restore into a database with a key of its own (which files new items)
    // names them under the file's key. Every key's are tried (one read, of the keys).
    const every = await this.keys.everyIdAndHashOf();
    const subjectsAt = docs.map((d, i) => {
      const identifier = items[i]?.identifier;
      return d.subject ? [...new Set([d.subject, ...(identifier ? every.subjects(identifier) : [])])] : [];
    });
    const subjects = [...new Set(subjectsAt.flat())];
    const times = items.flatMap((item, i) =>
      docs[i]?.subject && item.sentAt ? [item.sentAt.getTime()] : [],
    );
    // Erases that may remember an item delivered again (Meta retries for 7 days), and those that
    // began within ERASE_RECENT_MS after the items' times.
    const windows: Filter<EventDoc>[] = [{ createdAt: { $gte: new Date(at.getTime() - ERASE_RECENT_MS) } }];
    if (times.length)
      windows.push({
        createdAt: {
          $gte: new Date(Math.min(...times) + 1000),
          $lte: new Date(Math.max(...times) + ERASE_RECENT_MS),
        },
      });
    const erases = await this.events.find(
      { kind: AUDIT_KIND, reason: 'erase', erasedSubjects: { $in: subjects }, $or: windows },
      { projection: { createdAt: 1, erasedSubjects: 1, erasedItems: 1 } },
    );
    if (!erases.length) return left;
    docs.forEach((doc, i) => {
      const sentAt = items[i]?.sentAt?.getTime();
      const filed = subjectsAt[i] ?? [];
      const hashes = every.messageHashes(doc._id);
      for (const erase of erases) {
        if (!filed.some((s) => erase.erasedSubjects?.includes(s))) continue;
        const gap = sentAt === undefined ? NaN : erase.createdAt.getTime() - sentAt;
        if ((gap >= 1000 && gap <= ERASE_RECENT_MS) || hashes.some((h) => erase.erasedItems?.includes(h)))
          left.add(i);
      }
    });
    return left;
  }

  /** Inserts the documents not archived yet, in bounded bulk writes; returns how many were new. */
  private async insertMissing(docs: readonly EventDoc[]): Promise<number> {
    // The same content twice in one batch is one item (the id derives from it).
    const unique = [...new Map(docs.map((d) => [d._id, d])).values()];
    // In requests of bounded size (a 3 MiB history is a few requests, not one per thread).
    let archived = 0;
    for (let start = 0; start < unique.length;) {
      let end = start;
      let bytes = 0;
      while (end < unique.length && end - start < MAX_BATCH_ITEMS) {
        bytes += Buffer.byteLength(unique[end]?.payloadJson ?? '');
        if (end > start && bytes > MAX_BATCH_BYTES) break;
        end++;
      }
      archived += (await this.events.insertMissing(unique.slice(start, end))).size;
      start = end;
    }
    return archived;
  }

  /**
   * The wamids among `wamids` of messages an erase begun within ERASE_RECENT_MS before `at`
   * removed (its audit entry remembers them by keyed hash: ./erase): a delivery status of an
   * answer sent before the erase, arriving after it, must not leave their number (a wamid carries
   * it) in a placeholder. Two reads (the keys, the erases), on the rare path of a status for a
   * message not stored.
   */
  async erasedAmong(wamids: readonly string[], at: Date): Promise<string[]> {
    if (wamids.length === 0) return [];
    const { messageHashes } = await this.keys.everyIdAndHashOf();
    const hashes = new Map(wamids.flatMap((id) => messageHashes(id).map((h) => [h, id] as const)));
    const erases = await this.events.find(
      {
        kind: AUDIT_KIND,
        createdAt: { $gte: new Date(at.getTime() - ERASE_RECENT_MS) },
        reason: 'erase',
        erasedMessages: { $in: [...hashes.keys()] },
      },
      { projection: { erasedMessages: 1 } },
    );
    const erased = new Set<string>();
    for (const e of erases)
      for (const h of e.erasedMessages ?? []) {
        const id = hashes.get(h);
        if (id) erased.add(id);
      }
    return [...erased];
  }

  /** Whether `payload` was archived as `kind` before (the same content: a redelivery). */
  async archivedBefore(kind: string, payload: unknown): Promise<boolean> {
    const { json } = boundedJson(payload, MAX_EVENT_JSON);
    return (await this.events.findOne({ _id: archivedId(kind, json) }, { projection: { _id: 1 } })) !== null;
  }

  /**
   * Up to `limit` items archived as `kind` under the number or business-scoped id `identifier`
   * (index-backed: subject), with the user each was filed with.
   */
  async archivedUnder(
    kind: string,
    identifier: string,
    limit: number,
  ): Promise<{ userId: string | null; payload: unknown }[]> {
    const subject = await this.keys.subjectOf(identifier);
    const docs = await this.events.find({ subject, kind }, { limit });
    return docs.map((d) => ({ userId: d.userId ?? null, payload: toEvent(d).payload }));
  }

  /** An archived item's document: its id from its kind and bounded content, filed under its subject. */
  private async docFor(input: ArchiveInput, at: Date): Promise<EventDoc> {
    const { json, truncated } = boundedJson(input.payload, MAX_EVENT_JSON);
    return {
      _id: archivedId(input.kind, json),
      kind: input.kind,
      reason: input.reason,
      createdAt: at,
      userId: input.userId ?? null,
      subject: input.identifier ? await this.keys.subjectOf(input.identifier) : null,
      payloadJson: json,
      truncated,
    };
  }

  /** A random-id entry (the audit trail). */
  async append(doc: Omit<EventDoc, '_id'>): Promise<void> {
    await this.events.insertOne({ _id: `${doc.kind}:${randomUUID()}`, ...doc });
  }
}
