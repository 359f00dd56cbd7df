// Reply jobs: what the webhook queues and the reply function consumes.
import { z } from 'zod';

export const REPLY_QUEUE = 'reply-jobs';
export const REPLY_POISON_QUEUE = `${REPLY_QUEUE}-poison`;
export const INBOUND_QUEUE = 'inbound';
export const INBOUND_POISON_QUEUE = `${INBOUND_QUEUE}-poison`;

export const ReplyJobSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('message'), userId: z.string().min(1), messageId: z.string().min(1) }),
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
