// Meta's webhook notification turned into flat, typed events: one per inbound message, status and
// thing to archive. All of Meta's envelope (object → entry → changes → value), its bounds and its
// error format are known here; the bot only sees the events.
import type { z } from 'zod';
import { normalize, normalizeUnreadable, type NormalizedMessage } from './normalize';
import {
  BSUID,
  ChangeSchema,
  ContactSchema,
  EntrySchema,
  InboundMessageSchema,
  MessageBaseSchema,
  NUMBER_CHANGES,
  NotificationSchema,
  StatusSchema,
  VALUE_PARTS,
  ValueHeadSchema,
  ValuePartSchema,
  WA_ID,
  type GraphErrorPayload,
  type InboundMessage,
} from './schemas';

/** An error as Meta reports it, in the shape the app stores. */
export interface GraphFailure {
  readonly code: number | string | null;
  readonly title: string;
  readonly detail?: string;
}

export interface SenderIdentity {
  readonly waId: string | null;
  readonly bsuid: string | null;
  readonly name: string | null;
}

export interface MessageEvent {
  readonly kind: 'message';
  readonly phoneNumberId: string;
  readonly sender: SenderIdentity;
  readonly id: string;
  /** Meta's timestamp, or when we received it if Meta's is impossible (see `settleTime`). */
  readonly at: Date;
  /**
   * Meta's timestamp as given, unless in the future (then `at`): what an erase judges a message by
   * (a message dated before an erase, even impossibly long before, may be one it erased).
   */
  readonly sentAt: Date;
  readonly normalized: NormalizedMessage;
  /** The validated message, when its body matched its type. */
  readonly message: InboundMessage | null;
  readonly raw: unknown;
}

export interface StatusEvent {
  readonly kind: 'status';
  readonly waMessageId: string;
  readonly status: 'sent' | 'delivered' | 'read' | 'failed';
  readonly at: Date;
  readonly recipient: string | null;
  readonly error: GraphFailure | null;
}

export interface ArchiveEvent {
  readonly kind: 'archive';
  readonly archiveKind: string;
  readonly reason: string;
  readonly payload: unknown;
  /** The number or bsuid the item carries, if any (erase finds the item by it). */
  readonly identifier: string | null;
  /** Meta's latest time in it (`latestTimeIn`), or null when it gives none. */
  readonly at: Date | null;
}

export type WebhookEvent = MessageEvent | StatusEvent | ArchiveEvent;

/** A name as WhatsApp shows it is short; control characters are dropped. */
export const MAX_NAME = 256;
/** How far ahead of our clock Meta's timestamp may be before we use our own time instead. */
const FUTURE_SLACK_MS = 5 * 60_000;
/**
 * Meta's times before this (2009-01-01, the year WhatsApp began; 0, a default left unset, is 1970)
 * are impossible: our time of receipt stands in.
 */
export const EARLIEST_META_TIME = new Date('2009-01-01T00:00:00Z');

export const toGraphFailure = (e: GraphErrorPayload | undefined): GraphFailure | null =>
  e
    ? {
        code: e.code,
        title: e.title ?? e.message ?? 'error',
        ...(e.error_data?.details ? { detail: e.error_data.details } : {}),
      }
    : null;

const waIdOf = (value: string | undefined | null): string | null =>
  value !== undefined && value !== null && WA_ID.test(value) ? value : null;
const bsuidOf = (value: string | undefined | null): string | null =>
  value !== undefined && value !== null && BSUID.test(value) ? value : null;
/** Control characters (Unicode's Cc: C0, DEL and C1). */
const CONTROL = /\p{Cc}/gu;
/** A profile name as stored: control characters dropped, trimmed, at most `MAX_NAME` characters. */
export const nameOf = (value: string | undefined | null): string | null => {
  const trimmed = value?.replace(CONTROL, '').trim();
  // Characters (code points), never half of an emoji: MAX_NAME of them fit in twice as many units.
  const clean =
    trimmed &&
    Array.from(trimmed.slice(0, 2 * MAX_NAME))
      .slice(0, MAX_NAME)
      .join('');
  return clean ? clean : null;
};

/** Meta's time as given, unless in the future (`MessageEvent.sentAt`: an erase judges by it). */
const sentAtOf = (seconds: number, now: Date): Date =>
  seconds * 1000 > now.getTime() + FUTURE_SLACK_MS ? now : new Date(seconds * 1000);

/**
 * Meta's time, unless it is impossible: in the future (`sentAtOf`: a wrong clock would pin a user
 * to the top forever), or before EARLIEST_META_TIME (a message dated 1970 would be listed first and
 * deleted by the next retention run).
 */
export function settleTime(seconds: number, now: Date): Date {
  const at = sentAtOf(seconds, now);
  return at < EARLIEST_META_TIME ? now : at;
}

type Contact = z.infer<typeof ContactSchema>;

/** Every event of an authentic notification, in order; never throws on odd input. */
export function parseNotification(payload: unknown, now: Date): WebhookEvent[] {
  const events: WebhookEvent[] = [];
  const archive = (archiveKind: string, reason: string, item: unknown, identifier: string | null = null) =>
    events.push({
      kind: 'archive',
      archiveKind,
      reason,
      payload: item,
      identifier,
      at: latestTimeIn(item, now),
    });

  const notification = NotificationSchema.safeParse(payload);
  if (!notification.success || notification.data.object !== 'whatsapp_business_account') {
    archive(
      'unhandled_notification',
      notification.success ? 'unknown object' : 'malformed envelope',
      payload,
    );
    return events;
  }
  for (const rawEntry of notification.data.entry) {
    const entry = EntrySchema.safeParse(rawEntry);
    if (!entry.success) {
      archive('unhandled_entry', 'malformed entry', rawEntry);
      continue;
    }
    for (const rawChange of entry.data.changes) {
      const change = ChangeSchema.safeParse(rawChange);
      if (!change.success) {
        archive('unhandled_change', 'malformed change', rawChange);
        continue;
      }
      if (change.data.field !== 'messages') {
        const reason = `field ${change.data.field.slice(0, 64)}`;
        for (const item of otherFieldItems(change.data.field, change.data.value))
          archive('unhandled_change', reason, item.payload, item.identifier);
        continue;
      }
      // Without its business number nothing of a value can be answered: the whole change is odd.
      const head = ValueHeadSchema.safeParse(change.data.value);
      if (!head.success) {
        archive(
          'unhandled_change',
          'malformed messages value',
          rawChange,
          firstIdentifier(change.data.value),
        );
        continue;
      }
      // The value as sent, not the schema's copy: that one leaves out a `__proto__` key, a part
      // like any other here.
      valueEvents(head.data.metadata.phone_number_id, change.data.value as Record<string, unknown>);
    }
  }
  return events;

  /** Each part of a value on its own: an odd part is archived whole, the others still count. */
  function valueEvents(phoneNumberId: string, value: Record<string, unknown>): void {
    const parts = { contacts: [], messages: [], statuses: [], errors: [] } as Record<
      (typeof VALUE_PARTS)[number],
      unknown[]
    >;
    for (const name of VALUE_PARTS) {
      const part = ValuePartSchema.safeParse(value[name]);
      if (part.success) parts[name] = part.data ?? [];
      else
        archive(
          'unhandled_value',
          `malformed ${name}`,
          { phoneNumberId, [name]: value[name] },
          firstIdentifier(value[name]),
        );
    }
    const contacts: Contact[] = [];
    for (const raw of parts.contacts) {
      const contact = ContactSchema.safeParse(raw);
      if (contact.success) contacts.push(contact.data);
      else archive('unhandled_contact', 'malformed contact', raw, firstIdentifier(raw));
    }
    const business = businessNumberOf(value);
    for (const raw of parts.messages) messageEvent(raw, phoneNumberId, contacts, business);
    for (const raw of parts.statuses) statusEvent(raw);
    if (parts.errors.length) {
      archive(
        'errors',
        'webhook errors',
        { phoneNumberId, errors: parts.errors },
        contactIdentifier(contacts[0]),
      );
    }
    // A part the bot does not read (`user_actions`: a click on a marketing message's link, which
    // Meta delivers on this field with no message) is still authentic data: archived, one item
    // per element of a list, each under the person it names. Plain values belong to the envelope.
    for (const [key, part] of Object.entries(value)) {
      if (
        key === 'metadata' ||
        key === 'messaging_product' ||
        (VALUE_PARTS as readonly string[]).includes(key)
      )
        continue;
      if (part === null || typeof part !== 'object') continue;
      const reason = `part ${key.slice(0, 64)}`;
      for (const element of Array.isArray(part) ? part : [part])
        archive(
          'unhandled_value',
          reason,
          { phoneNumberId, [key]: Array.isArray(part) ? [element] : part },
          personIn(element, business),
        );
    }
  }

  function messageEvent(
    raw: unknown,
    phoneNumberId: string,
    contacts: Contact[],
    business: string | null,
  ): void {
    const parsed = InboundMessageSchema.safeParse(raw);
    const base = parsed.success ? parsed.data : MessageBaseSchema.safeParse(raw).data;
    if (!base) {
      archive(
        'unhandled_message',
        'message without a valid id or timestamp',
        raw,
        messageIdentifier(raw, contacts),
      );
      return;
    }
    // What the business itself sent (an echo: from its own number, to a person; Meta delivers
    // them on `smb_message_echoes`, a relay may put them here): its own words are no one's message
    // to answer, and its number no user. Kept, filed under the person it went to.
    if (isRecord(raw) && isEcho(raw, business)) {
      archive('echo', 'message the business sent: never answered', raw, echoRecipient(raw, business));
      return;
    }
    const waId = waIdOf(base.from);
    const bsuid = bsuidOf(base.from_user_id);
    if ((base.from !== undefined && !waId) || (base.from_user_id !== undefined && !bsuid)) {
      archive('unhandled_message', 'sender out of bounds', raw, messageIdentifier(raw, contacts));
      return;
    }
    // A contact is the sender's only when its number or bsuid is the message's; a message that
    // names no sender takes the one contact of its notification.
    const contact =
      contacts.find((c) => (waId && c.wa_id === waId) || (bsuid && c.user_id === bsuid)) ??
      (!waId && !bsuid && contacts.length === 1 ? contacts[0] : undefined);
    const sender: SenderIdentity = {
      waId: waId ?? waIdOf(contact?.wa_id),
      // A change of id is the person's who leaves the previous one behind, when Meta names it: the
      // message's own sender may already be the new id, or it names none.
      bsuid: systemPreviousId(raw) ?? bsuid ?? bsuidOf(contact?.user_id),
      // "Usernames can be used in lieu of profile names" (Meta, Business-scoped user IDs).
      name: nameOf(contact?.profile?.name) ?? nameOf(contact?.profile?.username),
    };
    if (!sender.waId && !sender.bsuid) {
      archive('unhandled_message', 'message without sender', raw, messageIdentifier(raw, contacts));
      return;
    }
    // A message written in a group of the business (Groups API) is not the sender's one-to-one
    // chat: answering it there would carry a group's talk into a private conversation. It is
    // kept, filed under its sender, and not answered.
    if (isRecord(raw) && raw['group_id'] !== undefined && raw['group_id'] !== null) {
      archive(
        'group_message',
        'message in a group: only one-to-one chats are answered',
        raw,
        sender.waId ?? sender.bsuid,
      );
      return;
    }
    events.push({
      kind: 'message',
      phoneNumberId,
      sender,
      id: base.id,
      at: settleTime(base.timestamp, now),
      sentAt: sentAtOf(base.timestamp, now),
      normalized: parsed.success ? normalize(parsed.data) : normalizeUnreadable(boundedType(base.type)),
      message: parsed.success ? parsed.data : null,
      raw,
    });
  }

  function statusEvent(raw: unknown): void {
    const status = StatusSchema.safeParse(raw);
    if (!status.success) {
      archive('unhandled_status', 'malformed status', raw, firstIdentifier(raw));
      return;
    }
    const s = status.data;
    const recipient = digitsOfNumber(s.recipient_id) ?? bsuidOf(s.recipient_user_id);
    if (s.status !== 'sent' && s.status !== 'delivered' && s.status !== 'read' && s.status !== 'failed') {
      archive('status', `status ${s.status.slice(0, 32)}`, raw, recipient);
      return;
    }
    events.push({
      kind: 'status',
      waMessageId: s.id,
      status: s.status,
      at: settleTime(s.timestamp, now),
      recipient,
      error: toGraphFailure(s.errors?.[0]),
    });
  }
}

/**
 * A message the business sent rather than received: from its own display number, or addressed
 * `to` someone (Meta's inbound messages carry no `to`; its echoes do).
 */
const isEcho = (raw: JsonRecord, business: string | null): boolean =>
  (business !== null && digitsOfNumber(raw['from']) === business) ||
  raw['to'] !== undefined ||
  raw['to_user_id'] !== undefined;

/** The person an echo went to (its `to`, else `to_user_id`), never the business. */
function echoRecipient(raw: JsonRecord, business: string | null): string | null {
  const to = digitsOfNumber(raw['to']);
  if (to && to !== business) return to;
  const id = raw['to_user_id'];
  return typeof id === 'string' ? bsuidOf(id) : null;
}

/** A type name to store: Meta's, when it looks like one. */
const boundedType = (type: string): string => (/^[a-z_]{1,32}$/.test(type) ? type : 'unknown');

const contactIdentifier = (c: Contact | undefined): string | null => waIdOf(c?.wa_id) ?? bsuidOf(c?.user_id);

/**
 * Whom an archived message concerns: the sender it names, else (a system message, which comes
 * without contacts) the person it gives a new id or number to, else the one contact of its
 * notification.
 */
const messageIdentifier = (raw: unknown, contacts: Contact[]): string | null =>
  firstIdentifier(raw) ??
  systemIdentifier(raw) ??
  (contacts.length === 1 ? contactIdentifier(contacts[0]) : null);

/**
 * The business-scoped id a change of number or id says the person left behind
 * (`system.previous_user_id`, Meta's changelog, Aug 11, 2026), or null.
 */
function systemPreviousId(raw: unknown): string | null {
  const system = isRecord(raw) ? raw['system'] : undefined;
  if (!isRecord(system) || !IDENTITY_CHANGES.includes(String(system['type']))) return null;
  const previous = system['previous_user_id'];
  return typeof previous === 'string' ? bsuidOf(previous) : null;
}

const IDENTITY_CHANGES = [...NUMBER_CHANGES, 'user_changed_user_id'];

/**
 * The new business-scoped id (`system.user_id`), else the new number (`system.wa_id`, `new_wa_id`
 * before v12), a `user_changed_user_id` or `user_changed_number` gives: the person holds it once
 * the change is theirs, so erase and export of that user find the item.
 */
function systemIdentifier(raw: unknown): string | null {
  const system = isRecord(raw) ? raw['system'] : undefined;
  if (!isRecord(system)) return null;
  const bsuid = typeof system['user_id'] === 'string' ? bsuidOf(system['user_id']) : null;
  return bsuid ?? digitsOfNumber(system['wa_id']) ?? digitsOfNumber(system['new_wa_id']);
}

/**
 * A number written oddly, when it is recognisably one (an odd webhook item, a legacy database):
 * a leading '+', spaces, dashes, dots and parentheses dropped, a JSON number read as its digits;
 * null unless the result is within a number's bounds.
 */
export function digitsOfNumber(value: unknown): string | null {
  const text = typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? String(value) : value;
  if (typeof text !== 'string' || !/^\+?[\d\s().-]+$/.test(text.trim())) return null;
  const digits = text.replace(/\D/g, '');
  return WA_ID.test(digits) ? digits : null;
}

type JsonRecord = Record<string, unknown>;
/**
 * Gives a record an own field, whatever its key: JSON.parse makes `__proto__` an own key like any
 * other, where `record['__proto__'] = value` would replace the record's prototype instead (and
 * what the key held would be in no JSON written from it).
 */
function setOwn(record: JsonRecord, key: string, value: unknown): void {
  Object.defineProperty(record, key, { value, writable: true, enumerable: true, configurable: true });
}
const isRecord = (v: unknown): v is JsonRecord => typeof v === 'object' && v !== null && !Array.isArray(v);
/** The business's own number, from a value's metadata: never the person an item is filed under. */
function businessNumberOf(value: JsonRecord): string | null {
  const metadata = value['metadata'];
  return isRecord(metadata) ? digitsOfNumber(metadata['display_phone_number']) : null;
}

/** A list of items to archive one by one (a list of objects). */
const isList = (v: unknown): v is unknown[] => Array.isArray(v) && v.some(isRecord);

/**
 * A change of a field other than `messages` (an app may subscribe to more: `smb_message_echoes`,
 * `history`, `smb_app_state_sync`, `user_preferences`, `calls`, account and template updates...),
 * as items to archive: one per element of each list of its value (one per thread of a history),
 * each shaped like the change with that one element and filed under the person it names, so that
 * erasing one person finds what concerns them and leaves the others' items alone.
 */
function otherFieldItems(field: string, value: unknown): { payload: unknown; identifier: string | null }[] {
  if (!isRecord(value)) return [{ payload: { field, value }, identifier: null }];
  const business = businessNumberOf(value);
  const rest: JsonRecord = {};
  // Each list, with how an element of it is put back in the value's shape.
  const lists: [unknown[], (element: unknown) => JsonRecord][] = [];
  for (const [key, part] of Object.entries(value)) {
    if (isList(part)) lists.push([part, (element) => ({ ...rest, [key]: [element] })]);
    else if (key !== 'metadata' && isRecord(part) && Object.values(part).some(isList)) {
      // The lists of an object one level down, such as a standby value's `standby` (messages,
      // echoes and statuses of conversations Meta Business Agent handles), are split the same way.
      const inner: JsonRecord = {};
      for (const [innerKey, innerPart] of Object.entries(part)) {
        if (isList(innerPart))
          lists.push([innerPart, (element) => ({ ...rest, [key]: { ...inner, [innerKey]: [element] } })]);
        else setOwn(inner, innerKey, innerPart);
      }
    } else setOwn(rest, key, part);
  }
  if (!lists.length) return [{ payload: { field, value }, identifier: personIn(value, business) }];
  const items: { payload: unknown; identifier: string | null }[] = [];
  for (const [list, shaped] of lists) {
    for (const element of list) {
      const threads = isRecord(element) ? element['threads'] : undefined;
      const parts =
        Array.isArray(threads) && threads.length
          ? threads.flatMap(threadParts).map((thread) => ({ ...(element as JsonRecord), threads: [thread] }))
          : [element];
      for (const part of parts)
        for (const piece of peopleParts(part, business))
          items.push({ payload: { field, value: shaped(piece) }, identifier: personIn(piece, business) });
    }
  }
  return items;
}

/**
 * A history thread's messages in consecutive parts, each well under what an archived item keeps
 * (256 KiB of JSON): a busy customer's thread of 180 days holds thousands of messages, and an item
 * cut at the bound would lose all those past it.
 */
const MAX_THREAD_PART = 192 * 1024;

function threadParts(thread: unknown): unknown[] {
  const messages = isRecord(thread) ? thread['messages'] : undefined;
  if (!Array.isArray(messages)) return [thread];
  const parts: unknown[][] = [[]];
  let size = 0;
  for (const message of messages) {
    const length = jsonLength(message);
    const current = parts[parts.length - 1] as unknown[];
    if (current.length && size + length > MAX_THREAD_PART) {
      parts.push([message]);
      size = length;
    } else {
      current.push(message);
      size += length + 1;
    }
  }
  return parts.length === 1 ? [thread] : parts.map((part) => ({ ...(thread as JsonRecord), messages: part }));
}

/** The length of a value's JSON; too deep to write (it is cut when archived): as long as a part. */
function jsonLength(value: unknown): number {
  try {
    return JSON.stringify(value)?.length ?? 4;
  } catch {
    return MAX_THREAD_PART;
  }
}

/**
 * An element of another field's list that names several people in lists of its own, and none
 * itself (a group participants update: Meta lists each participant a business removed or added,
 * `removed_participants`, `added_participants`, `failed_participants`), as one part per person
 * listed: the element with that one entry, its other lists of people emptied, so that each person's
 * export and erase find what names them, and only that. An element that names its own person (a
 * message, an echo, a join request's `wa_id`) or one person at most stays whole.
 */
function peopleParts(element: unknown, business: string | null): unknown[] {
  if (!isRecord(element) || ownPersonOf(element, business, 0, false)) return [element];
  const lists = Object.entries(element).filter(
    (entry): entry is [string, unknown[]] =>
      Array.isArray(entry[1]) && entry[1].some((item) => personIn(item, business, 1) !== null),
  );
  const people = new Set(lists.flatMap(([, list]) => list.map((item) => personIn(item, business, 1))));
  people.delete(null);
  if (people.size < 2) return [element];
  const emptied: JsonRecord = {};
  for (const [key] of lists) setOwn(emptied, key, []);
  const parts: JsonRecord[] = [];
  for (const [key, list] of lists)
    for (const item of list) {
      const part: JsonRecord = { ...element, ...emptied };
      setOwn(part, key, [item]);
      parts.push(part);
    }
  return parts;
}

/**
 * Keys that hold a person's number in the other fields' items (`to`: the recipient of an echo;
 * `input`: a group participant as the business named them, number or business-scoped id).
 */
const PERSON_NUMBER_KEYS = ['to', 'from', 'wa_id', 'recipient_id', 'phone_number', 'input'];
const PERSON_BSUID_KEYS = ['to_user_id', 'from_user_id', 'user_id', 'recipient_user_id', 'input'];

/** The first person an item names (a number other than the business's own, else a bsuid), looking a few levels deep. */
function personIn(item: unknown, business: string | null, depth = 0, inThreads = false): string | null {
  if (depth > 6) return null;
  if (Array.isArray(item)) {
    for (const element of item.slice(0, 50)) {
      const found = personIn(element, business, depth + 1, inThreads);
      if (found) return found;
    }
    return null;
  }
  if (!isRecord(item)) return null;
  const own = ownPersonOf(item, business, depth, inThreads);
  if (own) return own;
  for (const [key, value] of Object.entries(item)) {
    if (key === 'metadata' || typeof value !== 'object' || value === null) continue;
    const found = personIn(value, business, depth + 1, key === 'threads');
    if (found) return found;
  }
  return null;
}

/** The person a record names in its own keys (not in what it holds), or null. */
function ownPersonOf(
  item: JsonRecord,
  business: string | null,
  depth: number,
  inThreads: boolean,
): string | null {
  // A history thread's id is the number of the person the business talked with.
  const keys = inThreads ? ['id', ...PERSON_NUMBER_KEYS] : PERSON_NUMBER_KEYS;
  for (const key of keys) {
    // A value's own `phone_number` (account_update) is the business's.
    if (key === 'phone_number' && depth === 0) continue;
    const number = digitsOfNumber(item[key]);
    if (number && number !== business) return number;
  }
  for (const key of PERSON_BSUID_KEYS) {
    const value = item[key];
    const bsuid = typeof value === 'string' ? bsuidOf(value) : null;
    if (bsuid) return bsuid;
  }
  return null;
}

const NUMBER_KEYS = ['from', 'recipient_id', 'wa_id'];
const BSUID_KEYS = ['from_user_id', 'recipient_user_id', 'user_id'];

/** The sender or recipient an odd item carries, best effort (so that erase can find it). */
function firstIdentifier(item: unknown, depth = 0): string | null {
  if (typeof item !== 'object' || item === null || depth > 3) return null;
  const record = item as Record<string, unknown>;
  for (const key of NUMBER_KEYS) {
    const identifier = digitsOfNumber(record[key]);
    if (identifier) return identifier;
  }
  for (const key of BSUID_KEYS) {
    const value = record[key];
    const identifier = typeof value === 'string' ? bsuidOf(value) : null;
    if (identifier) return identifier;
  }
  const contacts = record['contacts'];
  if (Array.isArray(contacts) && contacts.length) return firstIdentifier(contacts[0], depth + 1);
  const messages = record['messages'];
  if (Array.isArray(messages) && messages.length) return firstIdentifier(messages[0], depth + 1);
  return null;
}

/** One person's part of a notification (`splitByPerson`). */
export interface NotificationPiece {
  /** A notification of the same shape (object, entry ids, change fields, metadata) with only this person's items; the whole payload when it cannot be split. */
  readonly payload: unknown;
  /** The number or business-scoped id of the person its items name; null for items that name none. */
  readonly identifier: string | null;
  /** Meta's latest time in it (of its messages and statuses), or null when it gives none. */
  readonly at: Date | null;
}

/**
 * A piece holds about this much JSON at most (it grows past it only by one item larger than it):
 * a person's many items go in several pieces, each well under what an archived item keeps.
 */
export const MAX_PIECE_JSON = 192 * 1024;

/** One item of a notification and where it goes in a piece (built by `PieceDraft`). */
interface PieceItem {
  readonly identifier: string | null;
  readonly size: number;
  readonly at: Date | null;
  readonly place: (draft: PieceDraft) => void;
}

/** A piece being built: the envelope's own fields, and the entries and changes its items need. */
class PieceDraft {
  size = 0;
  at: Date | null = null;
  private readonly top: JsonRecord;
  private readonly entries = new Map<
    number,
    { raw: unknown } | { base: JsonRecord; changes: Map<string, unknown> }
  >();

  constructor(private readonly notification: JsonRecord) {
    this.top = primitivesOf(notification);
  }

  setTop(key: string, value: unknown): void {
    setOwn(this.top, key, value);
  }

  wholeEntry(index: number, raw: unknown): void {
    this.entries.set(index, { raw });
  }

  /** The entry at `index`, with its own fields (id, time) and no changes yet. */
  entry(index: number): { base: JsonRecord; changes: Map<string, unknown> } {
    let found = this.entries.get(index);
    if (!found || 'raw' in found) {
      const raw = (this.notification['entry'] as unknown[])[index];
      found = { base: primitivesOf(isRecord(raw) ? raw : {}), changes: new Map() };
      this.entries.set(index, found);
    }
    return found;
  }

  /** A change slot of an entry (ordered by `order`), made by `make` the first time. */
  change(entry: number, slot: string, make: () => JsonRecord): JsonRecord {
    const { changes } = this.entry(entry);
    let found = changes.get(slot) as JsonRecord | undefined;
    if (!found) {
      found = make();
      changes.set(slot, found);
    }
    return found;
  }

  build(): JsonRecord {
    const order = (slot: string) => slot.split('.').map(Number);
    const compare = (a: string, b: string) => {
      const [x, y] = [order(a), order(b)];
      return (x[0] ?? 0) - (y[0] ?? 0) || (x[1] ?? 0) - (y[1] ?? 0);
    };
    return {
      ...this.top,
      entry: [...this.entries.entries()]
        .sort(([a], [b]) => a - b)
        .map(([, e]) =>
          'raw' in e
            ? e.raw
            : {
                ...e.base,
                changes: [...e.changes.entries()].sort(([a], [b]) => compare(a, b)).map(([, c]) => c),
              },
        ),
    };
  }
}

/** The fields of a record that hold no object (an entry's id, a change's field): every piece keeps them. */
function primitivesOf(record: JsonRecord): JsonRecord {
  const out: JsonRecord = {};
  for (const [key, value] of Object.entries(record))
    if (value === null || typeof value !== 'object') setOwn(out, key, value);
  return out;
}

/**
 * Meta's latest time in an item to archive: the greatest `timestamp` (seconds) it holds, as Meta
 * gives it (`sentAtOf`: an erase judges by it), looking a few levels deep (a message, a status, the
 * messages of a history thread), or null.
 */
export function latestTimeIn(item: unknown, now: Date, depth = 0): Date | null {
  if (depth > 8 || typeof item !== 'object' || item === null) return null;
  let latest: Date | null = null;
  const consider = (at: Date | null) => {
    if (at && (!latest || at > latest)) latest = at;
  };
  if (Array.isArray(item)) for (const element of item) consider(latestTimeIn(element, now, depth + 1));
  else
    for (const [key, value] of Object.entries(item)) {
      if (key === 'timestamp') {
        const seconds = typeof value === 'number' || typeof value === 'string' ? Number(value) : NaN;
        if (Number.isFinite(seconds) && seconds > 0) consider(sentAtOf(seconds, now));
      } else consider(latestTimeIn(value, now, depth + 1));
    }
  return latest;
}

/** Meta's time of a message or status (`timestamp`, seconds), or null. */
function timeOf(item: unknown, now: Date): Date | null {
  const seconds = isRecord(item) ? Number(item['timestamp']) : NaN;
  return Number.isFinite(seconds) && seconds > 0 ? settleTime(seconds, now) : null;
}

/**
 * A notification split by the person each of its items names (a message's sender, a status's
 * recipient, a contact's number, an item of another field by the person it names), so that each
 * piece can be filed under that person: erase and export of one person never touch another's
 * messages. Each piece is a notification of the same shape (object, entry id, change field,
 * metadata) with only that person's items, so ingest takes it as it would have taken the whole; a
 * person's items go in pieces of about MAX_PIECE_JSON at most. What cannot be split (not a
 * notification's shape) is one piece, whole, under the first person it names.
 */
export function splitByPerson(payload: unknown, now: Date): NotificationPiece[] {
  if (!isRecord(payload) || !Array.isArray(payload['entry']))
    return [{ payload, identifier: personIn(payload, null), at: null }];
  const items: PieceItem[] = [];
  const item = (
    identifier: string | null,
    value: unknown,
    place: (draft: PieceDraft) => void,
    at: Date | null = null,
  ) => items.push({ identifier, size: jsonLength(value), at, place });

  for (const [key, value] of Object.entries(payload))
    if (key !== 'entry' && value !== null && typeof value === 'object')
      item(personIn(value, null), value, (d) => d.setTop(key, value));
  (payload['entry'] as unknown[]).forEach((rawEntry, e) => {
    const entry = EntrySchema.safeParse(rawEntry);
    if (!entry.success || !isRecord(rawEntry)) {
      item(personIn(rawEntry, null), rawEntry, (d) => d.wholeEntry(e, rawEntry));
      return;
    }
    for (const [key, value] of Object.entries(rawEntry))
      if (key !== 'changes' && value !== null && typeof value === 'object')
        item(personIn(value, null), value, (d) => setOwn(d.entry(e).base, key, value));
    entry.data.changes.forEach((rawChange, c) => changeItems(e, c, rawChange));
  });

  function changeItems(e: number, c: number, rawChange: unknown): void {
    const change = ChangeSchema.safeParse(rawChange);
    const whole = (identifier: string | null): void => {
      item(identifier, rawChange, (d) => d.change(e, `${c}.0`, () => rawChange as JsonRecord));
    };
    if (!change.success || !isRecord(rawChange)) return whole(personIn(rawChange, null));
    const base = primitivesOf(rawChange);
    if (change.data.field !== 'messages') {
      // As ingest archives them: one item per element of the value's lists, under its person.
      otherFieldItems(change.data.field, change.data.value).forEach((other, n) => {
        item(other.identifier, other.payload, (d) =>
          d.change(e, `${c}.${n}`, () => ({ ...base, ...(other.payload as JsonRecord) })),
        );
      });
      return;
    }
    const value = change.data.value;
    if (!ValueHeadSchema.safeParse(value).success || !isRecord(value))
      return whole(firstIdentifier(value) ?? personIn(rawChange, null));
    const head: JsonRecord = {};
    for (const [key, part] of Object.entries(value))
      if (key === 'metadata' || part === null || typeof part !== 'object') setOwn(head, key, part);
    const valueOf = (d: PieceDraft) =>
      d.change(e, `${c}.0`, () => ({ ...base, value: { ...head } }))['value'] as JsonRecord;
    // A person's contact and their messages stay together: a bsuid a contact pairs with a number
    // is filed under that number.
    const contacts = Array.isArray(value['contacts']) ? value['contacts'].filter(isRecord) : [];
    const numberOf = new Map<string, string>();
    for (const contact of contacts) {
      const number = digitsOfNumber(contact['wa_id']);
      const bsuid = typeof contact['user_id'] === 'string' ? bsuidOf(contact['user_id']) : null;
      if (number && bsuid) numberOf.set(bsuid, number);
    }
    const only = contacts.length === 1 ? firstIdentifier(contacts[0]) : null;
    const business = businessNumberOf(value);
    const personOf = (key: string, element: unknown): string | null => {
      let found: string | null;
      if (key === 'messages' && isRecord(element) && isEcho(element, business))
        found = echoRecipient(element, business);
      else if (key === 'messages' && isRecord(element)) {
        const from_user_id = element['from_user_id'];
        found =
          digitsOfNumber(element['from']) ??
          systemPreviousId(element) ??
          (typeof from_user_id === 'string' ? bsuidOf(from_user_id) : null) ??
          systemIdentifier(element) ??
          only;
      } else if (VALUE_PARTS.includes(key as (typeof VALUE_PARTS)[number])) found = firstIdentifier(element);
      else found = personIn(element, business);
      return found ? (numberOf.get(found) ?? found) : null;
    };
    for (const [key, part] of Object.entries(value)) {
      // Own keys only: `constructor` or `toString` is a part like any other, never head's.
      if (Object.hasOwn(head, key)) continue;
      if (!Array.isArray(part)) {
        item(firstIdentifier(part), part, (d) => setOwn(valueOf(d), key, part));
        continue;
      }
      for (const element of part)
        item(
          personOf(key, element),
          element,
          (d) => {
            const list = valueOf(d);
            if (!Object.hasOwn(list, key)) setOwn(list, key, []);
            (list[key] as unknown[]).push(element);
          },
          key === 'messages' || key === 'statuses' ? timeOf(element, now) : null,
        );
    }
  }

  // Grouped by person, in the order each person first appears; a person's next piece begins when
  // the current one would grow past MAX_PIECE_JSON.
  const drafts: { identifier: string | null; draft: PieceDraft }[] = [];
  const current = new Map<string | null, PieceDraft>();
  for (const { identifier, size, at, place } of items) {
    let draft = current.get(identifier);
    if (!draft || (draft.size > 0 && draft.size + size > MAX_PIECE_JSON)) {
      draft = new PieceDraft(payload);
      current.set(identifier, draft);
      drafts.push({ identifier, draft });
    }
    place(draft);
    draft.size += size + 1;
    if (at && (!draft.at || at > draft.at)) draft.at = at;
  }
  if (!drafts.length) return [{ payload, identifier: null, at: null }];
  return drafts.map(({ identifier, draft }) => ({ payload: draft.build(), identifier, at: draft.at }));
}
