// The app's queues and their items: the webhook queues each verified notification on `inbound`
// (the raw body, or a reference to a spilled body), the ingest function queues reply jobs on
// `reply-jobs`, which the reply function consumes.
import { createHash } from 'node:crypto';
import { z } from 'zod';

export const INBOUND_QUEUE = 'inbound';
export const INBOUND_POISON_QUEUE = `${INBOUND_QUEUE}-poison`;
export const REPLY_QUEUE = 'reply-jobs';
export const REPLY_POISON_QUEUE = `${REPLY_QUEUE}-poison`;

/**
 * The largest body queued as it is: a queue message holds 64 KiB after the host's base64
 * encoding (host.json `messageEncoding`), which leaves 48 KiB of content.
 */
export const MAX_INLINE_BYTES = 48 * 1024;

/** The `inbound` item of a body too large to queue: where it was spilled (its SHA-256). */
export const SpillReferenceSchema = z.object({
  spill: z.string().regex(/^[0-9a-f]{64}$/),
  bytes: z.number().int().positive(),
});
export type SpillReference = z.infer<typeof SpillReferenceSchema>;

/**
 * Spills a body too large to queue (the webhook's, or a kept notification put back) under its
 * SHA-256, and returns the `inbound` item that refers to it.
 */
export async function spillBody(
  spills: { put(id: string, body: Buffer): Promise<void> },
  body: Buffer,
): Promise<SpillReference> {
  const id = createHash('sha256').update(body).digest('hex');
  await spills.put(id, body);
  return { spill: id, bytes: body.length };
}

/**
 * What an `inbound` item stands for: the item itself (`json`: false for a string that is not JSON,
 * which the webhook never queues: the host hands JSON over parsed), or the spilled body it refers
 * to, as text; `gone` when that spill was already taken (spills are removed only once what they
 * hold was stored: the item was handled before).
 */
export async function inboundBody(
  spills: { take(id: string): Promise<Buffer | null> },
  item: unknown,
): Promise<
  | { kind: 'item'; value: unknown; json: boolean }
  | { kind: 'spill'; spill: string; text: string }
  | { kind: 'gone'; bytes: number }
> {
  let value = item;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      return { kind: 'item', value, json: false };
    }
  }
  const reference = SpillReferenceSchema.safeParse(value);
  if (!reference.success || (value as Record<string, unknown>)['object'] !== undefined)
    return { kind: 'item', value, json: true };
  const body = await spills.take(reference.data.spill);
  return body
    ? { kind: 'spill', spill: reference.data.spill, text: body.toString('utf8') }
    : { kind: 'gone', bytes: reference.data.bytes };
}

export const ReplyJobSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('message'),
    userId: z.string().min(1),
    messageId: z.string().min(1),
    // Its message was found already stored by a later delivery: the user's summary may lack it.
    recount: z.literal(true).optional(),
  }),
  z.object({
    kind: z.literal('welcome'),
    userId: z.string().min(1),
    phoneNumberId: z.string().min(1),
    requestId: z.string().min(1),
  }),
]);
export type ReplyJob = z.infer<typeof ReplyJobSchema>;

/** A queue item as the trigger hands it over: parsed JSON, a JSON string, or base64 of JSON. */
export function parseReplyJob(item: unknown): ReplyJob | null {
  let value = item;
  if (typeof value === 'string') {
    const text = value.trim().startsWith('{') ? value : Buffer.from(value, 'base64').toString('utf8');
    try {
      value = JSON.parse(text);
    } catch {
      return null;
    }
  }
  const parsed = ReplyJobSchema.safeParse(value);
  return parsed.success ? parsed.data : null;
}
