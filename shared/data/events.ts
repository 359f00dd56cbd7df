// Archived payloads that could not be processed (dead letters) and the audit trail. Payloads are
// kept as bounded JSON text (see ./bounded-json), and each archived item names whom it concerns
// (the user, else the subject of the number or business-scoped id it carries: ./subjects) so that
// erase and export find it.
import { createHash, randomUUID } from 'node:crypto';
import { boundedJson } from './bounded-json';
import type { Gateway } from './gateway';
import type { SubjectKeys } from './subjects';
import type { ArchivedEvent } from './types';

/** The kind of the audit trail's entries (./erase): who did what to which user, and when. */
export const AUDIT_KIND = 'audit';

/** The most message ids an erase remembers (`EventDoc.erasedMessages`): ~560 KB as BSON. */
export const MAX_ERASED_MESSAGES = 20_000;

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
   * that had reached us within ERASED_MESSAGES_WITHIN_MS (./erase), at most MAX_ERASED_MESSAGES.
   * Kept beside the payload, so that the audit trail's readers never carry them.
   */
  erasedMessages?: string[];
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
