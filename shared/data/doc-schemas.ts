// Run-time schemas of the documents each collection stores, to check documents that come from
// outside the app (a backup being restored) before anything is written. They are strict: a field
// they do not name is refused, so a restore writes only what the app itself would have written.
import { BSON } from 'mongodb';
import { z } from 'zod';
import { MAX_ERASED_ITEMS, MAX_ERASED_MESSAGES, MAX_ERASED_SUBJECTS, type EventDoc } from './events';
import type { CollectionName } from './indexes';
import type { TokenDoc } from './tokens';
import type { MessageDoc } from './messages';
import type { StatsDoc } from './stats';
import { MAX_SUBJECT_KEYS } from './subjects';
import { MAX_TERMS } from './terms';
import type { UserDoc } from './users';

/** Cosmos DB for MongoDB refuses documents over 2 MB (BSON size). */
export const DOC_BYTES_MAX = 2 * 1024 * 1024;
/** Document ids and references to them (wamids, `out:<id>:<part>`, hashes of archived items). */
export const ID_MAX = 512;
/** A WhatsApp number or business-scoped user id (up to 140: see BSUID in shared/whatsapp/schemas). */
const NUMBER_MAX = 140;
/** Names, previews, kinds, reasons, error titles. */
const SHORT_TEXT_MAX = 1024;
/** A message's text (WhatsApp allows 4096 characters; captions and descriptions add some). */
const TEXT_MAX = 100_000;
/** Archived payloads kept as JSON text (`rawJson`, `payloadJson`). */
const JSON_TEXT_MAX = 1024 * 1024;
/** Entries of a stored array (search keys, previous numbers; a message's terms: MAX_TERMS). */
const ARRAY_MAX = 2000;

const Id = z.string().min(1).max(ID_MAX);
const Count = z.number().int().min(0);
const ShortText = z.string().max(SHORT_TEXT_MAX);
const Strings = (max: number) => z.array(z.string().min(1).max(max)).max(ARRAY_MAX);

/**
 * A `T | null` field written by an upsert: FerretDB v1 drops a null from `$setOnInsert`, so it may
 * be absent, and reads as null.
 */
const nullOrAbsent = <T extends z.ZodType>(schema: T) =>
  schema
    .nullable()
    .optional()
    .transform((v) => v ?? null);

const DirectionSchema = z.enum(['inbound', 'outbound']);
const MessageStatusSchema = z.enum([
  'received',
  'read',
  'pending',
  'sent',
  'delivered',
  'failed',
  'not_sent',
]);
const ReplyStateSchema = z.enum(['pending', 'sending', 'sent', 'failed', 'none']);
const MessageRoleSchema = z.enum(['conversation', 'command', 'notice', 'operator']);

const MessageErrorSchema = z.strictObject({
  code: z.union([z.number(), z.string().max(SHORT_TEXT_MAX), z.null()]),
  title: ShortText,
  detail: z.string().max(TEXT_MAX).exactOptional(),
});

const AiUsageSchema = z.strictObject({
  provider: ShortText,
  model: ShortText,
  promptTokens: Count,
  completionTokens: Count,
  totalTokens: Count,
  latencyMs: z.number().min(0),
});

export const UserDocSchema = z.strictObject({
  _id: Id,
  waId: z.string().min(1).max(NUMBER_MAX).nullable(),
  bsuid: z.string().min(1).max(NUMBER_MAX).nullable(),
  name: ShortText.nullable(),
  createdAt: z.date(),
  lastMessageAt: z.date(),
  lastMessagePreview: ShortText.nullable(),
  lastMessageId: Id.nullable(),
  messageCount: Count,
  optedOut: z.boolean(),
  welcomeSentAt: z.date().nullable(),
  // A worker's claim on the welcome, until when (while it sends it).
  welcomeClaim: z.date().exactOptional(),
  // The welcome job of that claim (the sweeper re-queues it when the claim ends unsent).
  welcomeJob: z.strictObject({ phoneNumberId: Id, requestId: Id }).exactOptional(),
  // How many times the welcome's job failed every attempt (kept once given up).
  welcomePoisoned: Count.exactOptional(),
  contextResetAt: z.date().nullable(),
  searchKeys: Strings(256),
  lastInboundAt: z.date().nullable().exactOptional(),
  inboundCount: Count.exactOptional(),
  previousWaIds: Strings(NUMBER_MAX).exactOptional(),
  previousBsuids: Strings(NUMBER_MAX).exactOptional(),
  earlier: z
    .strictObject({
      name: ShortText.nullable(),
      bsuid: z.string().min(1).max(NUMBER_MAX).nullable(),
      until: z.date(),
    })
    .exactOptional(),
  handoff: z.strictObject({ since: z.date(), by: ShortText, activeAt: z.date() }).nullable().exactOptional(),
  handoffTakenAt: z.date().nullable().exactOptional(),
  // Earlier versions kept a free lock as {owner: null, generation}.
  replyLock: z
    .object({ owner: ShortText.nullable(), until: z.date(), generation: Count.exactOptional() })
    .nullable()
    .exactOptional(),
  erasing: z.literal(true).exactOptional(),
  erasingSince: z.date().exactOptional(),
  // Not in the running counters yet (./pending).
  uncounted: z.literal(true).exactOptional(),
  generation: z
    .string()
    .regex(/^[0-9a-f]{12}$/)
    .exactOptional(),
  // When an erase of the person began, on a record a message dated before it made.
  priorErase: z.date().exactOptional(),
});

export const MessageDocSchema = z.strictObject({
  _id: Id,
  // Absent on a status placeholder whose message has not been stored (yet).
  userId: Id.exactOptional(),
  waMessageId: nullOrAbsent(Id),
  direction: DirectionSchema.exactOptional(),
  type: z.string().max(64).exactOptional(),
  text: z.string().max(TEXT_MAX).exactOptional(),
  status: MessageStatusSchema,
  statusRank: z.number().int().min(0).max(9),
  statusTimes: z.partialRecord(MessageStatusSchema, z.date()).exactOptional(),
  createdAt: z.date().exactOptional(),
  receivedAt: z.date().exactOptional(),
  seqAt: z.date().exactOptional(),
  role: MessageRoleSchema.exactOptional(),
  phoneNumberId: z.string().min(1).max(NUMBER_MAX).nullable().exactOptional(),
  terms: z.array(z.string().min(1).max(256)).max(MAX_TERMS).exactOptional(),
  relatedId: Id.nullable().exactOptional(),
  replyState: ReplyStateSchema.nullable().exactOptional(),
  leaseUntil: z.date().nullable().exactOptional(),
  requeueAfter: z.date().exactOptional(),
  replyAttempts: Count.exactOptional(),
  replyPlan: z
    .strictObject({
      parts: z.array(z.string().min(1).max(TEXT_MAX)).min(2).max(16), // at most 4 (../bot/split), with room
      role: MessageRoleSchema,
      ai: AiUsageSchema.nullable(),
    })
    .exactOptional(),
  error: MessageErrorSchema.nullable().exactOptional(),
  failedUncounted: z.literal(true).exactOptional(),
  uncounted: z.literal(true).exactOptional(),
  ai: AiUsageSchema.nullable().exactOptional(),
  // An operator message: the token's name.
  by: z.string().min(1).max(200).exactOptional(),
  raw: z.unknown().exactOptional(),
  rawJson: z.string().max(JSON_TEXT_MAX).exactOptional(),
});

/** The running totals (`totals`), one document per UTC day (`day:YYYY-MM-DD`) and per AI model (`model:<name>`). */
export const StatsDocSchema = z.strictObject({
  _id: z.union([
    z.literal('totals'),
    z.literal('keys'),
    z.string().regex(/^day:\d{4}-\d{2}-\d{2}$/),
    z.string().regex(/^model:.{1,200}$/s),
  ]),
  date: z
    .string()
    .regex(/^\d{4}-\d{2}-\d{2}$/)
    .exactOptional(),
  // Counters are integers; erasure may take some back, so no lower bound.
  inbound: z.number().int().exactOptional(),
  outbound: z.number().int().exactOptional(),
  failed: z.number().int().exactOptional(),
  newUsers: z.number().int().exactOptional(),
  aiRequests: z.number().int().exactOptional(),
  aiTokens: z.number().int().exactOptional(),
  subjectKeys: z
    .array(z.string().regex(/^[0-9a-f]{64}$/))
    .min(1)
    .max(MAX_SUBJECT_KEYS)
    .exactOptional(),
  retentionRuns: Count.exactOptional(),
  lastRetentionAt: z.date().exactOptional(),
  lastRetentionCutoff: z.date().exactOptional(),
  foldUntil: z.date().exactOptional(),
  foldOwner: z.string().min(1).max(100).exactOptional(),
});

export const TokenDocSchema = z.strictObject({
  _id: Id,
  name: z.string().min(1).max(200),
  // SHA-256 of the token, in hex: anything else could never match a presented token.
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  createdAt: z.date(),
  expiresAt: z.date().nullable(),
  revokedAt: z.date().nullable(),
  lastUsedAt: z.date().nullable(),
});

export const EventDocSchema = z.strictObject({
  _id: Id,
  kind: z.string().min(1).max(128),
  reason: ShortText,
  createdAt: z.date(),
  userId: nullOrAbsent(Id),
  subject: z.string().min(1).max(ID_MAX).nullable().exactOptional(),
  // May be absent (kept as payloadJson, or nothing to keep); absent reads as undefined, as the app
  // reads it, hence required in the output type.
  payload: z
    .unknown()
    .exactOptional()
    .transform((p) => p),
  payloadJson: z.string().max(JSON_TEXT_MAX).exactOptional(),
  // payloadJson was cut at its bound (then read as text, not parsed).
  truncated: z.boolean().exactOptional(),
  // A payload kept in several documents (poisoned notifications): how many, and which one.
  parts: z.number().int().min(2).exactOptional(),
  part: z.number().int().min(1).exactOptional(),
  // An erase's audit entry: 64-bit keyed hashes of the message ids it erased.
  erasedMessages: z
    .array(z.string().regex(/^[0-9a-f]{16}$/))
    .max(MAX_ERASED_MESSAGES)
    .exactOptional(),
  // ...the subjects of the user's numbers and ids, and keyed hashes of the archived items it erased.
  erasedSubjects: z.array(z.string().min(1).max(ID_MAX)).max(MAX_ERASED_SUBJECTS).exactOptional(),
  erasedItems: z
    .array(z.string().regex(/^[0-9a-f]{16}$/))
    .max(MAX_ERASED_ITEMS)
    .exactOptional(),
});

/** The collections whose documents a backup carries, each with its schema. */
export const DOC_SCHEMAS = {
  users: UserDocSchema,
  messages: MessageDocSchema,
  stats: StatsDocSchema,
  tokens: TokenDocSchema,
  events: EventDocSchema,
} as const satisfies Record<Exclude<CollectionName, 'locks'>, z.ZodType>;
export type StoredCollection = keyof typeof DOC_SCHEMAS;

/**
 * Collections a backup of an earlier version may hold that are no longer restored: `locks` held
 * short-lived claims, meaningless in another database.
 */
export const RETIRED_COLLECTIONS: readonly string[] = ['locks'];

// Compile-time, both ways: whatever a schema accepts is a document of its interface (a restored
// document reads like one the app wrote), and every field of an interface is a field of its schema
// (a document the app wrote is never refused as holding an unknown field). Fails to compile when
// an interface and its schema drift apart.
type Conforms<S extends z.ZodType, Doc> = [z.output<S>] extends [Doc]
  ? [Exclude<keyof Doc, keyof z.input<S>>] extends [never]
    ? true
    : false
  : false;
export const SCHEMAS_MATCH = {
  users: true,
  messages: true,
  stats: true,
  tokens: true,
  events: true,
} as const satisfies {
  users: Conforms<typeof UserDocSchema, UserDoc>;
  messages: Conforms<typeof MessageDocSchema, MessageDoc>;
  stats: Conforms<typeof StatsDocSchema, StatsDoc>;
  tokens: Conforms<typeof TokenDocSchema, TokenDoc>;
  events: Conforms<typeof EventDocSchema, EventDoc>;
};

export const isStoredCollection = (name: string): name is StoredCollection =>
  Object.hasOwn(DOC_SCHEMAS, name);

/** A path into a document as printed: field names and indexes, never a key that could be data. */
const fieldPath = (path: readonly PropertyKey[]): string =>
  path
    .map((p) =>
      typeof p === 'number'
        ? String(p)
        : typeof p === 'string' && /^[$A-Za-z_][\w$]{0,63}$/.test(p)
          ? p
          : '?',
    )
    .join('.') || '(document)';

/**
 * What is wrong with a document of a collection, or null when it may be written. Says which field
 * and why, never the document's content (it may hold personal data). Numbers are expected as
 * JavaScript numbers (Extended JSON read in relaxed mode) and dates as Date.
 */
export function checkStoredDocument(collection: StoredCollection, doc: unknown): string | null {
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return 'not a document';
  let size: number;
  try {
    size = BSON.calculateObjectSize(doc);
  } catch {
    return 'not serialisable as BSON';
  }
  if (size > DOC_BYTES_MAX) return `${size} bytes, over the ${DOC_BYTES_MAX}-byte limit of a document`;
  const result = DOC_SCHEMAS[collection].safeParse(doc);
  if (result.success) return null;
  const issue = result.error.issues[0];
  if (issue?.code === 'unrecognized_keys') {
    const more = issue.keys.length > 1 ? ` (and ${issue.keys.length - 1} more)` : '';
    return `field ${fieldPath([...issue.path, issue.keys[0] ?? ''])}: not a field of ${collection} documents${more}`;
  }
  return issue ? `field ${fieldPath(issue.path)}: ${describeIssue(issue)}` : 'invalid';
}

/** zod's messages for these name the expected type, option or bound, never the value received. */
const SAFE_MESSAGES = new Set<string>([
  'invalid_type',
  'too_big',
  'too_small',
  'invalid_format',
  'invalid_value',
  'not_multiple_of',
  'invalid_union',
  'invalid_key',
  'invalid_element',
]);

function describeIssue(issue: z.core.$ZodIssue): string {
  return SAFE_MESSAGES.has(issue.code) ? issue.message : `invalid (${issue.code})`;
}
