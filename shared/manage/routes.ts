// The one table of management API routes: functions/manage.ts registers a function per path from
// it, ./openapi.ts documents it, and the tests walk it, so the three cannot drift apart.
import type { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import type { Caller } from './auth';
import {
  ChatsQuerySchema,
  ChatsSchema,
  ExportSchema,
  MessageSchema,
  MessagesPageSchema,
  PageQuerySchema,
  SearchBodySchema,
  SearchQuerySchema,
  SendBodySchema,
  SendHeadersSchema,
  StatsSchema,
  UserIdParamsSchema,
  UserSchema,
  UsersPageSchema,
  UsersQuerySchema,
  UsersSearchBodySchema,
} from './schemas';
import * as manage from './service';

export type RouteMethod = 'GET' | 'POST' | 'DELETE';

/** Largest JSON body a route reads (a text is at most 4096 characters); over it: 413. */
export const MAX_BODY_BYTES = 64 * 1024;

/** A request as the route table sees it: path parameters, query and parsed JSON body. */
export interface RawInput {
  readonly params: Readonly<Record<string, string | undefined>>;
  readonly query: URLSearchParams;
  readonly body: unknown;
  /** Request headers (a header given twice comes joined with `, `, as the Functions host gives it). */
  readonly headers: { get(name: string): string | null };
}

type Infer<S> = S extends z.ZodType ? z.infer<S> : undefined;

interface RouteSpec<
  Q extends z.ZodObject | undefined,
  B extends z.ZodType | undefined,
  H extends z.ZodObject | undefined = undefined,
> {
  /** The function that serves this path (routes on one path share it). */
  readonly fn: string;
  readonly method: RouteMethod;
  /** Azure route template under /api. */
  readonly path: string;
  readonly summary: string;
  readonly query?: Q;
  readonly body?: B;
  /** Request headers the route reads (lower-case names), validated like the query. */
  readonly headers?: H;
  readonly status: 200 | 201 | 204;
  readonly response?: z.ZodType;
  readonly responseDescription: string;
  /** Extra error answers of this route, by status. */
  readonly errors?: Readonly<Partial<Record<404 | 409 | 422 | 502 | 503, string>>>;
  run(
    ctx: manage.ManageContext,
    input: { id: string; query: Infer<Q>; body: Infer<B>; headers: Infer<H> },
    caller: Caller,
  ): Promise<unknown>;
}

export interface ManageRoute extends Omit<
  RouteSpec<z.ZodObject | undefined, z.ZodType | undefined, z.ZodObject | undefined>,
  'run'
> {
  /** True when the path has an `{id}` parameter. */
  readonly hasId: boolean;
  /** Validates the request (400 naming the bad field; nothing else happens) and runs the route. */
  invoke(ctx: manage.ManageContext, raw: RawInput, caller: Caller): Promise<unknown>;
}

/** Validates a JSON body; a bad value is a 400 whose message names the field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  if (body === undefined) throw new AppError(ErrorCode.INVALID_INPUT, 'a JSON body is required');
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (issue?.code === 'unrecognized_keys') {
    // Named by their path, as the other fields are: `template.lang`, not `lang`.
    const at = issue.path.map((part) => `${String(part)}.`).join('');
    throw new AppError(
      ErrorCode.INVALID_INPUT,
      `invalid body field "${issue.keys.map((key) => at + key).join('", "')}": unknown field`,
    );
  }
  const name = issue?.path.length ? issue.path.join('.') : 'body';
  throw new AppError(ErrorCode.INVALID_INPUT, `invalid body field "${name}": ${issue?.message ?? 'invalid'}`);
}

/** Validates the headers a route reads; a bad value is a 400 whose message names the header. */
function parseHeaders<S extends z.ZodObject>(schema: S, headers: RawInput['headers']): z.infer<S> {
  const present = Object.fromEntries(
    Object.keys(schema.shape).flatMap((name) => {
      const value = headers.get(name);
      return value === null ? [] : [[name, value]];
    }),
  );
  const result = schema.safeParse(present);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  throw new AppError(
    ErrorCode.INVALID_INPUT,
    `invalid header "${String(issue?.path[0] ?? 'header')}": ${issue?.message ?? 'invalid'}`,
  );
}

function route<
  Q extends z.ZodObject | undefined = undefined,
  B extends z.ZodType | undefined = undefined,
  H extends z.ZodObject | undefined = undefined,
>(spec: RouteSpec<Q, B, H>): ManageRoute {
  const hasId = spec.path.includes('{id}');
  return {
    ...spec,
    hasId,
    invoke: (ctx, raw, caller) => {
      let id = '';
      if (hasId) {
        const parsed = UserIdParamsSchema.safeParse(raw.params);
        if (!parsed.success) throw new AppError(ErrorCode.INVALID_INPUT, 'invalid path parameter "id"');
        id = parsed.data.id;
      }
      const query = (spec.query ? manage.parseQuery(spec.query, raw.query) : undefined) as Infer<Q>;
      const body = (spec.body ? parseBody(spec.body, raw.body) : undefined) as Infer<B>;
      const headers = (spec.headers ? parseHeaders(spec.headers, raw.headers) : undefined) as Infer<H>;
      return spec.run(ctx, { id, query, body, headers }, caller);
    },
  };
}

const UNKNOWN_USER = { 404: 'Unknown user' } as const;

export const MANAGE_ROUTES: readonly ManageRoute[] = [
  route({
    fn: 'manageStats',
    method: 'GET',
    path: 'manage/stats',
    summary: 'Counters, users, AI tokens per model and the daily series of the last 30 UTC days',
    status: 200,
    response: StatsSchema,
    responseDescription: 'Stats',
    run: (ctx) => manage.getStats(ctx),
  }),
  route({
    fn: 'manageUsers',
    method: 'GET',
    path: 'manage/users',
    summary: 'Users, most recent activity first',
    query: UsersQuerySchema,
    status: 200,
    response: UsersPageSchema,
    responseDescription: 'A page of users',
    run: (ctx, { query }) => manage.listUsers(ctx, query),
  }),
  route({
    fn: 'manageUsers',
    method: 'POST',
    path: 'manage/users',
    summary:
      'Search users as GET does, with `q`, `limit` and `cursor` in the body: request logs keep URLs, ' +
      'so the number or name searched for stays out of them',
    body: UsersSearchBodySchema,
    status: 200,
    response: UsersPageSchema,
    responseDescription: 'A page of users',
    run: (ctx, { body }) => manage.listUsers(ctx, body, 'body field'),
  }),
  route({
    fn: 'manageUser',
    method: 'GET',
    path: 'manage/users/{id}',
    summary: 'One user',
    status: 200,
    response: UserSchema,
    responseDescription: 'The user',
    errors: UNKNOWN_USER,
    run: (ctx, { id }) => manage.getUser(ctx, id),
  }),
  route({
    fn: 'manageUser',
    method: 'DELETE',
    path: 'manage/users/{id}',
    summary: 'Erase a user, their messages and archived events (audited)',
    status: 204,
    responseDescription: 'Erased (also when another erase of the user, under way, did it)',
    errors: {
      ...UNKNOWN_USER,
      503: 'UNAVAILABLE: another erase of this user is still under way after 30 s (Retry-After)',
    },
    run: (ctx, { id }, caller) => manage.eraseUser(ctx, caller, id),
  }),
  route({
    fn: 'manageUserMessages',
    method: 'GET',
    path: 'manage/users/{id}/messages',
    summary: "A user's messages, newest first",
    query: PageQuerySchema,
    status: 200,
    response: MessagesPageSchema,
    responseDescription: 'A page of messages',
    errors: UNKNOWN_USER,
    run: (ctx, { id, query }) => manage.listUserMessages(ctx, id, query),
  }),
  route({
    fn: 'manageUserMessages',
    method: 'POST',
    path: 'manage/users/{id}/messages',
    summary:
      "An operator's message to the user (audited, never with its text): free text within 24 hours of " +
      "the user's last message, else a template. Takes the conversation if it was not handed over.",
    body: SendBodySchema,
    headers: SendHeadersSchema,
    status: 201,
    response: MessageSchema,
    responseDescription: 'The stored message (role `operator`)',
    errors: {
      404: 'Unknown user',
      409:
        'OUTSIDE_WINDOW: free text more than 24 hours after the user wrote or when the user never ' +
        'wrote, any message when no business number is known for the user (only migrated messages), ' +
        'or WhatsApp refused it for the window (code 131047); OPTED_OUT: the user sent stop; ' +
        'UNREACHABLE: the user has no number or business-scoped id (a previous owner of a number ' +
        'now someone else’s). ' +
        'Nothing is stored, taken or audited. IN_PROGRESS: a send with this Idempotency-Key has ' +
        'stored no outcome yet (still under way, or interrupted): nothing was sent again',
      422: 'IDEMPOTENCY_KEY_REUSED: the Idempotency-Key was given with another body or by another token (another id, even of the same name)',
      502:
        'WhatsApp did not accept the message (stored as failed); for its pair rate limit (code 131056) ' +
        "the message says to try again in a few seconds. The message ends with Graph's code and title " +
        '(`Graph: code 131026, "Message undeliverable".`), as the failed message keeps them',
    },
    run: (ctx, { id, body, headers }, caller) =>
      manage.sendMessage(ctx, caller, id, body, headers['idempotency-key']),
  }),
  route({
    fn: 'manageUserHandoff',
    method: 'POST',
    path: 'manage/users/{id}/handoff',
    summary: 'Take the conversation: the bot stays silent for this user until it is handed back (audited)',
    status: 200,
    response: UserSchema,
    responseDescription: 'The user, with `handoff` set',
    errors: UNKNOWN_USER,
    run: (ctx, { id }, caller) => manage.takeHandoff(ctx, caller, id),
  }),
  route({
    fn: 'manageUserHandoff',
    method: 'DELETE',
    path: 'manage/users/{id}/handoff',
    summary: 'Hand the conversation back to the bot (audited)',
    status: 200,
    response: UserSchema,
    responseDescription: 'The user, with `handoff` null',
    errors: UNKNOWN_USER,
    run: (ctx, { id }, caller) => manage.handBack(ctx, caller, id),
  }),
  route({
    fn: 'manageUserExport',
    method: 'GET',
    path: 'manage/users/{id}/export',
    summary: 'Everything stored about a user (audited)',
    status: 200,
    response: ExportSchema,
    responseDescription: 'The export',
    errors: UNKNOWN_USER,
    run: (ctx, { id }, caller) => manage.exportUser(ctx, caller, id),
  }),
  route({
    fn: 'manageChats',
    method: 'GET',
    path: 'manage/chats',
    summary:
      'Latest chats: users by last activity with their last message; `state=waiting`: only the ' +
      'conversations handed to operators, the longest-waiting first',
    query: ChatsQuerySchema,
    status: 200,
    response: ChatsSchema,
    responseDescription: 'Chats',
    run: (ctx, { query }) => manage.listChats(ctx, query),
  }),
  route({
    fn: 'manageMessages',
    method: 'GET',
    path: 'manage/messages',
    summary: 'Search messages by word prefixes, newest first',
    query: SearchQuerySchema,
    status: 200,
    response: MessagesPageSchema,
    responseDescription: 'A page of messages',
    run: (ctx, { query }) => manage.searchMessages(ctx, query),
  }),
  route({
    fn: 'manageMessages',
    method: 'POST',
    path: 'manage/messages',
    summary:
      'Search messages as GET does, with `q`, `limit` and `cursor` in the body: request logs keep ' +
      'URLs, so the words searched for stay out of them',
    body: SearchBodySchema,
    status: 200,
    response: MessagesPageSchema,
    responseDescription: 'A page of messages',
    run: (ctx, { body }) => manage.searchMessages(ctx, body, 'body field'),
  }),
];
