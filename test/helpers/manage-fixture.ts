// Services on a fresh test database and seeding helpers for the management API tests.
import { InvocationContext, type HttpRequest, type HttpResponseInit } from '@azure/functions';
import { hostRequest } from '../../scripts/lib/host-request';
import { loadConfig } from '../../shared/config';
import { createDataStore, type DataStore, type ImportedMessage } from '../../shared/data';
import { buildServices, runtimeOf, type Services } from '../../shared/deps';
import { HANDLER_NAMES, manageApiPaths, manageHandlers } from '../../functions/manage';
import { MessagesPageSchema, type MessageJson } from '../../shared/manage/schemas';
import { parseBody } from './shapes';
import type { Exchange } from './openapi-check';
import { testDatabase, type TestDatabase } from './db';

export const BOOTSTRAP = 'bootstrap-token-for-tests-0123456789';

export interface ManageFixture {
  readonly db: TestDatabase;
  readonly data: DataStore;
  readonly services: Services;
  readonly handlers: ReturnType<typeof manageHandlers>;
  readonly logs: string[];
  close(): Promise<void>;
}

export async function manageFixture(
  name: string,
  data?: (db: TestDatabase) => DataStore,
): Promise<ManageFixture> {
  const db = await testDatabase(name);
  const store = data ? data(db) : createDataStore(db.db);
  await store.ensureIndexes('create');
  const config = loadConfig({
    WHATSAPP_VERIFY_TOKEN: 'verify-token',
    WHATSAPP_APP_SECRET: 'app-secret',
    MANAGE_API_TOKEN: BOOTSTRAP,
  });
  const services = await buildServices(config, { data: store });
  return {
    db,
    data: store,
    services,
    handlers: manageHandlers(runtimeOf(services)),
    logs,
    close: () => db.drop(),
  };
}

const logs: string[] = [];

export function context(): InvocationContext {
  return new InvocationContext({
    functionName: 'manage-test',
    logHandler: (_level, ...args) => logs.push(args.map(String).join(' ')),
  });
}

export interface Call {
  token?: string | null;
  /** Query parameters; an array gives the parameter once per value. */
  query?: Record<string, string | readonly string[]>;
  params?: Record<string, string>;
  method?: string;
  path?: string;
  /** A JSON body (serialised), or a raw string sent as is. */
  body?: unknown;
  headers?: Record<string, string>;
}

/** Every answer `call` received (the OpenAPI check reads them), with the handler that gave it. */
export const exchanges: {
  handler: unknown;
  method: string;
  status: number;
  headers: Record<string, string>;
  body: unknown;
}[] = [];

/** The answers `handlers` gave, each with its route as the OpenAPI document writes it. */
export function answersOf(handlers: ReturnType<typeof manageHandlers>): Exchange[] {
  const paths = manageApiPaths();
  const pathOf = new Map<unknown, string>();
  for (const [key, handler] of Object.entries(handlers)) {
    const fn = HANDLER_NAMES[key as keyof typeof HANDLER_NAMES];
    const path = paths.find((p) => p.fn === fn)?.path;
    if (path) pathOf.set(handler, `/${path}`);
  }
  return exchanges.flatMap((e) => {
    const path = pathOf.get(e.handler);
    return path === undefined
      ? []
      : [{ method: e.method, path, status: e.status, headers: e.headers, body: e.body }];
  });
}

export async function call(
  handler: (req: HttpRequest, ctx: InvocationContext) => Promise<HttpResponseInit>,
  options: Call = {},
): Promise<{ status: number; body: unknown; headers: Record<string, string> }> {
  const token = options.token === undefined ? BOOTSTRAP : options.token;
  const url = new URL(`http://localhost/api/${options.path ?? 'manage/x'}`);
  for (const [k, v] of Object.entries(options.query ?? {}))
    for (const one of typeof v === 'string' ? [v] : v) url.searchParams.append(k, one);
  const body =
    options.body === undefined
      ? undefined
      : typeof options.body === 'string'
        ? options.body
        : JSON.stringify(options.body);
  // Built as the Functions host builds it (repeated parameters joined, body bytes with their length).
  const request = hostRequest({
    method: options.method ?? 'GET',
    url: url.toString(),
    headers: {
      ...(token === null ? {} : { authorization: `Bearer ${token}` }),
      ...(body === undefined
        ? {}
        : {
            'content-type': 'application/json',
            // A test that sends the body chunked gives Transfer-Encoding in `headers`.
            ...(options.headers?.['transfer-encoding'] === undefined
              ? { 'content-length': String(Buffer.byteLength(body, 'utf8')) }
              : {}),
          }),
      ...options.headers,
    },
    params: options.params ?? {},
    ...(body === undefined ? {} : { body }),
  });
  const response = await handler(request, context());
  const headers = Object.fromEntries(
    new Headers(response.headers as Record<string, string> | undefined).entries(),
  );
  const result = {
    status: response.status ?? 200,
    body: response.jsonBody ?? response.body ?? null,
    headers,
  };
  exchanges.push({ handler, method: request.method, ...result });
  return result;
}

let seq = 0;

/** A user with `count` alternating inbound/outbound text messages, one minute apart from `start`. */
export async function seedUser(
  data: DataStore,
  input: {
    waId: string;
    name: string | null;
    start: Date;
    texts: string[];
    failedLast?: boolean;
    ai?: boolean;
  },
): Promise<{ userId: string; messageIds: string[] }> {
  const { user } = await data.users.resolve({ waId: input.waId, bsuid: null, name: input.name }, input.start);
  const ids: string[] = [];
  const history: ImportedMessage[] = [];
  let lastInbound = '';
  for (const [i, text] of input.texts.entries()) {
    const createdAt = new Date(input.start.getTime() + i * 60_000);
    const id = `wamid.${input.waId}.${++seq}`;
    ids.push(id);
    const common = { id, userId: user.id, waMessageId: id, text, createdAt, phoneNumberId: 'PN1' };
    if (i % 2 === 0) {
      lastInbound = id;
      history.push({ ...common, direction: 'inbound' });
    } else {
      const last = i === input.texts.length - 1;
      history.push({
        ...common,
        direction: 'outbound',
        status: last && input.failedLast ? 'failed' : 'sent',
        relatedId: lastInbound,
        ai: input.ai
          ? {
              provider: 'test',
              model: 'm',
              promptTokens: 7,
              completionTokens: 3,
              totalTokens: 10,
              latencyMs: 5,
            }
          : null,
      });
    }
  }
  await data.maintenance.importMessages(history);
  return { userId: user.id, messageIds: ids };
}

type Handlers = ReturnType<typeof manageHandlers>;

/** Calls of one user's routes with `token`: `api('userHandoff', id, 'POST')`. */
export const userApi =
  (handlers: Handlers, token: string) =>
  (handler: keyof Handlers, id: string, method: string, body?: unknown) =>
    call(handlers[handler], { token, method, params: { id }, ...(body === undefined ? {} : { body }) });

/** A user's conversation as the API gives it (up to 200 messages, newest page). */
export async function conversationOf(handlers: Handlers, token: string, id: string): Promise<MessageJson[]> {
  const r = await call(handlers.userMessages, { token, params: { id }, query: { limit: '200' } });
  return parseBody(MessagesPageSchema, r.body).items;
}
