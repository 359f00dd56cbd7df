// The management API's shapes: zod schemas that validate queries and describe responses; the
// OpenAPI document is generated from the same schemas (./openapi.ts).
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';

extendZodWithOpenApi(z);

export const MAX_LIMIT = 200;
export const DEFAULT_LIMIT = 50;

const LimitSchema = z.coerce
  .number({ error: 'must be a number' })
  .int('must be an integer')
  .min(1, 'must be at least 1')
  .max(MAX_LIMIT, `must be at most ${MAX_LIMIT}`)
  .default(DEFAULT_LIMIT)
  .openapi({ description: `Page size, 1–${MAX_LIMIT}`, example: DEFAULT_LIMIT });

const CursorSchema = z
  .string()
  .min(1)
  .max(512)
  .optional()
  .openapi({ description: 'Opaque cursor: the nextCursor of the previous page' });

export const UsersQuerySchema = z.object({
  limit: LimitSchema,
  cursor: CursorSchema,
  q: z
    .string()
    .trim()
    .min(1, 'must not be empty')
    .max(100, 'must be at most 100 characters')
    .optional()
    .openapi({ description: 'Start of a number or of a word of the name' }),
});
export type UsersQuery = z.infer<typeof UsersQuerySchema>;

export const PageQuerySchema = z.object({ limit: LimitSchema, cursor: CursorSchema });
export type PageQuery = z.infer<typeof PageQuerySchema>;

export const ChatsQuerySchema = z.object({ limit: LimitSchema });
export type ChatsQuery = z.infer<typeof ChatsQuerySchema>;

export const SearchQuerySchema = z.object({
  q: z
    .string({ error: 'is required' })
    .trim()
    .min(1, 'must not be empty')
    .max(200, 'must be at most 200 characters')
    .refine((q) => /[\p{L}\p{N}]/u.test(q), 'must contain a word')
    .openapi({ description: 'Words; each must start a word of the text (case and accents ignored)' }),
  limit: LimitSchema,
  cursor: CursorSchema,
});
export type SearchQuery = z.infer<typeof SearchQuerySchema>;

export const UserIdParamsSchema = z.object({
  id: z.string().min(1).max(200).openapi({ description: 'Opaque user id' }),
});

const IsoDate = z.string().openapi({ format: 'date-time', example: '2026-01-31T12:00:00.000Z' });

export const UserSchema = z
  .object({
    id: z.string(),
    waId: z.string().nullable(),
    bsuid: z.string().nullable(),
    name: z.string().nullable(),
    createdAt: IsoDate,
    lastMessageAt: IsoDate.nullable(),
    lastMessagePreview: z.string().nullable(),
    messageCount: z.number().int(),
    optedOut: z.boolean(),
  })
  .openapi('User');
export type UserJson = z.infer<typeof UserSchema>;

export const MessageSchema = z
  .object({
    id: z.string(),
    userId: z.string(),
    waMessageId: z.string().nullable(),
    direction: z.enum(['inbound', 'outbound']),
    type: z.string(),
    text: z.string(),
    status: z.enum(['received', 'read', 'pending', 'sent', 'delivered', 'failed', 'not_sent']),
    createdAt: IsoDate,
  })
  .openapi('Message');
export type MessageJson = z.infer<typeof MessageSchema>;

const NextCursor = z.string().nullable().openapi({ description: 'Opaque; null on the last page' });

export const UsersPageSchema = z
  .object({ items: z.array(UserSchema), nextCursor: NextCursor })
  .openapi('UsersPage');
export const MessagesPageSchema = z
  .object({ items: z.array(MessageSchema), nextCursor: NextCursor })
  .openapi('MessagesPage');
export const ChatsSchema = z
  .object({ items: z.array(z.object({ user: UserSchema, lastMessage: MessageSchema })) })
  .openapi('Chats');

export const StatsSchema = z
  .object({
    users: z.object({ total: z.number().int(), optedOut: z.number().int(), active24h: z.number().int() }),
    messages: z.object({
      total: z.number().int(),
      inbound: z.number().int(),
      outbound: z.number().int(),
      failed: z.number().int(),
    }),
    ai: z.object({ requests: z.number().int(), tokens: z.number().int() }),
    daily: z.array(
      z.object({
        date: z.string().openapi({ example: '2026-01-31' }),
        inbound: z.number().int(),
        outbound: z.number().int(),
        newUsers: z.number().int(),
      }),
    ),
  })
  .openapi('Stats');
export type StatsJson = z.infer<typeof StatsSchema>;

export const EventSchema = z
  .object({ id: z.string(), kind: z.string(), reason: z.string(), createdAt: IsoDate, payload: z.unknown() })
  .openapi('Event');

export const ExportSchema = z
  .object({ user: UserSchema, messages: z.array(MessageSchema), events: z.array(EventSchema) })
  .openapi('UserExport');
export type ExportJson = z.infer<typeof ExportSchema>;

export const ErrorSchema = z
  .object({ error: z.object({ code: z.string(), message: z.string() }) })
  .openapi('Error');
