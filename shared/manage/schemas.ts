// The management API's shapes: zod schemas that validate queries and describe responses; the
// OpenAPI document is generated from the same schemas (./openapi.ts).
import { extendZodWithOpenApi } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { MAX_EXPORT_BYTES, MAX_EXPORT_EVENTS, MAX_EXPORT_MESSAGES } from '../data';
import {
  TEMPLATE_LANGUAGE,
  TEMPLATE_NAME,
  TEMPLATE_PARAMETER_LIMIT,
  TEMPLATE_PARAMETERS_MAX,
  templateParameterProblem,
  TEXT_BODY_LIMIT,
} from '../whatsapp/outbound';

extendZodWithOpenApi(z);

export const MAX_LIMIT = 200;
export const DEFAULT_LIMIT = 50;

// Plain decimal digits only: Number() would also take 1e2, 0x10, +5 or " 5".
const LimitSchema = z
  .string()
  .regex(/^[0-9]+$/, 'must be a whole number written in digits')
  .transform(Number)
  .pipe(z.number().min(1, 'must be at least 1').max(MAX_LIMIT, `must be at most ${MAX_LIMIT}`))
  .default(DEFAULT_LIMIT)
  .openapi({
    type: 'integer',
    minimum: 1,
    maximum: MAX_LIMIT,
    default: DEFAULT_LIMIT,
    description: `Page size, 1–${MAX_LIMIT}; empty or absent: ${DEFAULT_LIMIT}`,
    example: DEFAULT_LIMIT,
    param: { allowEmptyValue: true },
  });

const CursorSchema = z
  .string()
  .min(1)
  .max(512)
  .optional()
  .openapi({
    description:
      'Opaque cursor: the nextCursor of the previous page of the same list (route, user and q); another is a 400; empty or absent: the first page',
    param: { allowEmptyValue: true },
  });

const UsersQSchema = z
  .string({ error: (issue) => (issue.input === undefined ? 'is required' : 'must be a string') })
  .trim()
  .min(1, 'must not be empty')
  .max(100, 'must be at most 100 characters')
  .openapi({
    description:
      'Digits with phone punctuation: the start of the number; else each word starts a word of the name or the number',
  });

export const UsersQuerySchema = z.object({
  limit: LimitSchema,
  cursor: CursorSchema,
  q: UsersQSchema.optional().openapi({
    description:
      'Digits with phone punctuation: the start of the number; else each word starts a word of the name or the number; empty or absent: every user',
    param: { allowEmptyValue: true },
  }),
});
export type UsersQuery = z.infer<typeof UsersQuerySchema>;

// The searches again with their words in a JSON body: request logs keep URLs, query strings
// included, so a number or words searched for must not travel in one.
const BodyLimitSchema = z
  .number({ error: 'must be a whole number' })
  .int('must be a whole number')
  .min(1, 'must be at least 1')
  .max(MAX_LIMIT, `must be at most ${MAX_LIMIT}`)
  .default(DEFAULT_LIMIT)
  .openapi({ description: `Page size, 1–${MAX_LIMIT}; absent: ${DEFAULT_LIMIT}` });

/**
 * A search body's fields given as "" are absent ones, as in a query string (`{"cursor": ""}` on a
 * first page, `{"limit": ""}` for the default): `q` stays required.
 */
const emptyIsAbsent = (body: unknown): unknown =>
  typeof body === 'object' && body !== null && !Array.isArray(body)
    ? Object.fromEntries(Object.entries(body).filter(([, value]) => value !== ''))
    : body;

/**
 * A search body's cursor: as in a query string, and null (the API's own `nextCursor` of a last
 * page, where a client's paging loop may start) for the first page, as an absent one.
 */
const BodyCursorSchema = z
  .string()
  .min(1)
  .max(512)
  .nullable()
  .optional()
  .transform((cursor) => cursor ?? undefined)
  .openapi({
    description:
      'Opaque cursor: the nextCursor of the previous page of the same search (GET or POST); another is a 400; "", null or absent: the first page',
  });

export const UsersSearchBodySchema = z
  .preprocess(
    emptyIsAbsent,
    z.object({ q: UsersQSchema, limit: BodyLimitSchema, cursor: BodyCursorSchema }).strict(),
  )
  .openapi('UsersSearch', {
    description:
      'The search of GET /manage/users, kept out of the URL (request logs keep URLs); a field given as "" is an absent one, and so is a null cursor (`q` is required)',
  });

export const PageQuerySchema = z.object({ limit: LimitSchema, cursor: CursorSchema });
export type PageQuery = z.infer<typeof PageQuerySchema>;

export const ChatsQuerySchema = z
  .object({
    limit: LimitSchema,
    state: z
      .enum(['waiting'], { error: 'must be "waiting"' })
      .optional()
      .openapi({
        description:
          '`waiting`: only conversations handed to operators, the longest-waiting first; empty or absent: the latest chats',
        param: { allowEmptyValue: true },
      }),
    cursor: CursorSchema.openapi({
      description:
        'Only with `state=waiting` (the latest chats are one page): the nextCursor of the previous page; empty or absent: the first page',
    }),
  })
  .superRefine((query, ctx) => {
    if (query.cursor !== undefined && query.state !== 'waiting') {
      ctx.addIssue({
        code: 'custom',
        path: ['cursor'],
        message: 'only with state=waiting (the latest chats are one page)',
      });
    }
  });
export type ChatsQuery = z.infer<typeof ChatsQuerySchema>;

const SearchQSchema = z
  .string({ error: 'is required' })
  .trim()
  .min(1, 'must not be empty')
  .max(200, 'must be at most 200 characters')
  .refine((q) => /[\p{L}\p{N}]/u.test(q), 'must contain a word')
  .openapi({ description: 'Words; each must start a word of the text (case and accents ignored)' });

export const SearchQuerySchema = z.object({
  q: SearchQSchema,
  limit: LimitSchema,
  cursor: CursorSchema,
});
export type SearchQuery = z.infer<typeof SearchQuerySchema>;

export const SearchBodySchema = z
  .preprocess(
    emptyIsAbsent,
    z.object({ q: SearchQSchema, limit: BodyLimitSchema, cursor: BodyCursorSchema }).strict(),
  )
  .openapi('MessagesSearch', {
    description:
      'The search of GET /manage/messages, kept out of the URL (request logs keep URLs); a field given as "" is an absent one, and so is a null cursor (`q` is required)',
  });

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
    handoff: z
      .object({
        since: IsoDate,
        by: z
          .string()
          .openapi({ description: 'The name of the token that took it, or `user` (the `human` command)' }),
        expiresAt: IsoDate.openapi({ description: 'When it ends by itself unless an operator replies' }),
      })
      .nullable()
      .openapi({ description: 'Set while operators answer this user instead of the bot' }),
  })
  .openapi('User');
export type UserJson = z.infer<typeof UserSchema>;

const MessageErrorSchema = z.object({
  code: z.union([z.number(), z.string()]).nullable().openapi({
    description:
      "WhatsApp's (Graph's) error code, else the HTTP status; or the app's own, such as `OUTSIDE_WINDOW`",
  }),
  title: z.string(),
  detail: z.string().nullable().openapi({ description: "Meta's details, when it gave them" }),
});

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
    receivedAt: IsoDate.nullable().openapi({
      description:
        "An inbound message: when it reached us (the user's 24-hour window runs from the later of it and `createdAt`); null for the bot's and operators' messages and migrated ones",
    }),
    role: z.enum(['conversation', 'command', 'notice', 'operator']).openapi({
      description: '`operator`: sent by an operator from the management API',
    }),
    by: z.string().nullable().openapi({ description: "An operator message: the token's name" }),
    error: MessageErrorSchema.nullable().openapi({
      description:
        'Why it failed (an outbound message WhatsApp refused, or a delivery status reported failed) or why the bot answered it as it did (an inbound message left unanswered, or answered with an apology); else null',
    }),
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
  .object({
    items: z.array(z.object({ user: UserSchema, lastMessage: MessageSchema.nullable() })),
    nextCursor: NextCursor,
  })
  .openapi('Chats');

/** WhatsApp's limit on the body of a text message (owned by shared/whatsapp/outbound.ts). */
export const MAX_TEXT_LENGTH = TEXT_BODY_LIMIT;

/**
 * Control characters (Unicode's Cc: C0, DEL and C1) other than tab, line feed and carriage return:
 * not text a person writes (a NUL, an escape sequence pasted from a terminal), so never sent.
 */
const CONTROL_CHARACTER = /[^\P{Cc}\t\n\r]/u;
const NO_CONTROL_CHARACTERS =
  'must not contain control characters (other than tab, line feed and carriage return)';
const withoutControls = (t: string) => !CONTROL_CHARACTER.test(t);

const TemplateSchema = z
  .object({
    name: z
      .string({ error: 'is required' })
      .regex(TEMPLATE_NAME, 'must be a template name (lower-case letters, digits, _)'),
    language: z
      .string({ error: 'is required' })
      .regex(TEMPLATE_LANGUAGE, 'must be a language code such as en or en_US'),
    parameters: z
      .array(
        z
          .string()
          .min(1, 'must not be empty')
          .max(TEMPLATE_PARAMETER_LIMIT, `must be at most ${TEMPLATE_PARAMETER_LIMIT} characters`)
          .refine(withoutControls, NO_CONTROL_CHARACTERS)
          .superRefine((text, ctx) => {
            const problem = templateParameterProblem(text);
            if (problem) ctx.addIssue({ code: 'custom', message: problem });
          }),
        {
          error: 'must be an array of strings',
        },
      )
      .max(TEMPLATE_PARAMETERS_MAX, `must have at most ${TEMPLATE_PARAMETERS_MAX} items`)
      .default([]),
  })
  .strict()
  .openapi('Template', { description: 'An approved template; `parameters` fill its body in order' });

export const SendBodySchema = z
  .object({
    text: z
      .string({ error: 'must be a string' })
      .max(MAX_TEXT_LENGTH, `must be at most ${MAX_TEXT_LENGTH} characters`)
      .refine((t) => t.trim().length > 0, 'must not be empty')
      .refine(withoutControls, NO_CONTROL_CHARACTERS)
      .openapi({
        description: `Free text, at most ${MAX_TEXT_LENGTH} characters (never split), without control characters other than tab, line feed and carriage return`,
      })
      .optional(),
    template: TemplateSchema.optional(),
  })
  .strict()
  .superRefine((body, ctx) => {
    if ((body.text === undefined) === (body.template === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['text'], message: 'give either "text" or "template"' });
    }
  })
  .openapi('SendMessage', {
    description: "Free text (only within 24 hours of the user's last message) or a template",
  });
export type SendBody = z.infer<typeof SendBodySchema>;

/** Longest Idempotency-Key accepted (the IETF draft sets none; Stripe's is 255). */
export const MAX_IDEMPOTENCY_KEY = 255;

/**
 * The send's request headers. `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header) is a
 * string structured field, `"…"`; the bare form clients such as Stripe's send is taken too. A
 * header given twice reaches the app joined with `, ` and is refused (a comma is not allowed).
 */
export const SendHeadersSchema = z.object({
  'idempotency-key': z
    .string()
    .transform((v) => {
      const t = v.trim();
      return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1) : t;
    })
    .pipe(
      z
        .string()
        .regex(
          new RegExp(`^[\\x21\\x23-\\x2b\\x2d-\\x5b\\x5d-\\x7e]{1,${MAX_IDEMPOTENCY_KEY}}$`),
          `must be 1–${MAX_IDEMPOTENCY_KEY} visible ASCII characters without quotes, commas or backslashes (a UUID, say), given once`,
        ),
    )
    .optional()
    .openapi({
      description:
        'Optional. A key of your choosing (a UUID, say) that makes the send safe to repeat: a request ' +
        "with a key already used for this user sends nothing and gives the first request's answer " +
        '(the same body and token are required: else 422 IDEMPOTENCY_KEY_REUSED; while the first ' +
        'has stored no outcome: 409 IN_PROGRESS)',
      example: '"8e03978e-40d5-43e8-bc93-6894a57f9324"',
    }),
});
export type SendHeaders = z.infer<typeof SendHeadersSchema>;

export const StatsSchema = z
  .object({
    users: z.object({ total: z.number().int(), optedOut: z.number().int(), active24h: z.number().int() }),
    messages: z.object({
      total: z.number().int(),
      inbound: z.number().int(),
      outbound: z.number().int(),
      failed: z.number().int(),
    }),
    ai: z.object({
      requests: z.number().int(),
      tokens: z.number().int(),
      models: z
        .array(z.object({ model: z.string(), requests: z.number().int(), tokens: z.number().int() }))
        .openapi({ description: 'AI answers and tokens per model, most tokens first' }),
    }),
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

export const ExportedMessageSchema = MessageSchema.extend({
  raw: z.unknown().openapi({
    description:
      "The message as WhatsApp delivered it (inbound), as kept: JSON, or its text when it was cut at 64 KiB; null for the bot's",
  }),
}).openapi('ExportedMessage');

export const ExportSchema = z
  .object({
    user: UserSchema,
    previousWaIds: z
      .array(z.string())
      .openapi({ description: 'Numbers the user wrote from before the current one (number changes)' }),
    previousBsuids: z.array(z.string()).openapi({
      description: 'Business-scoped user ids the user had before the current one (id or number changes)',
    }),
    messages: z.array(ExportedMessageSchema).openapi({
      description: `Oldest first; at most the oldest ${MAX_EXPORT_MESSAGES}, and those that fit in ${MAX_EXPORT_BYTES} bytes of JSON`,
    }),
    events: z.array(EventSchema).openapi({
      description: `Archived items, oldest first; at most the oldest ${MAX_EXPORT_EVENTS}, and those that fit in what the messages left of ${MAX_EXPORT_BYTES} bytes of JSON`,
    }),
    truncated: z.boolean().openapi({
      description:
        'True when the user has more messages or archived items than the export holds (by count or by size)',
    }),
  })
  .openapi('UserExport');
export type ExportJson = z.infer<typeof ExportSchema>;

export const ErrorSchema = z
  .object({ error: z.object({ code: z.string(), message: z.string() }) })
  .openapi('Error');
