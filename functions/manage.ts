// The management API and the dashboard: thin adapters from HTTP to shared/manage. Every API path
// is one function, registered from the route table of shared/manage/routes.ts.
//
// authLevel is 'anonymous' on purpose: the API does its own bearer-token authentication (tokens
// that can be named, expired, revoked and audited), the dashboard page must load without a key,
// and a Functions key would be a second shared secret in URLs or headers that cannot be audited.
import type {
  HttpHandler,
  HttpMethod,
  HttpRequest,
  HttpResponseInit,
  InvocationContext,
} from '@azure/functions';
import { AppError, ErrorCode } from '../shared/errors';
import { defaultRuntime, type Runtime } from '../shared/deps';
import { createLogger } from '../shared/log';
import { authenticate, clientOf, FailureLimiter } from '../shared/manage/auth';
import { cursorCodec } from '../shared/manage/cursor';
import { DASHBOARD_CSP, DASHBOARD_CSS, DASHBOARD_HTML, dashboardScript } from '../shared/manage/dashboard';
import { MANAGE_ROUTES, MAX_BODY_BYTES, type ManageRoute } from '../shared/manage/routes';
import type { HttpDefinition } from './definition-types';
import { errorResponse, requireDeclaredLength, SECURITY_HEADERS } from './http';

/** A management handler (assignable to the host's HttpHandler; always async). */
export type ManageHandler = (request: HttpRequest, context: InvocationContext) => Promise<HttpResponseInit>;

async function readJson(request: HttpRequest): Promise<unknown> {
  requireDeclaredLength(request);
  const text = await request.text();
  if (Buffer.byteLength(text, 'utf8') > MAX_BODY_BYTES) {
    throw new AppError(ErrorCode.PAYLOAD_TOO_LARGE, 'the body is too large');
  }
  if (text.trim() === '') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text) as unknown;
  } catch {
    throw new AppError(ErrorCode.INVALID_INPUT, 'the body must be JSON');
  }
  // JSON.parse keeps the last of a repeated key: which one was meant is unknown (as for a query
  // parameter given twice), and for a message it decides what the user receives.
  const repeated = repeatedKey(text);
  if (repeated !== null) {
    throw new AppError(ErrorCode.INVALID_INPUT, `invalid body field "${repeated}": must be given once`);
  }
  return body;
}

/** The first key given twice in one object of a valid JSON text (dotted path), or null. */
function repeatedKey(text: string): string | null {
  const stack: { keys: Set<string> | null; key: string }[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{' || c === '[') stack.push({ keys: c === '{' ? new Set() : null, key: '' });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      // A string is a key when it is in an object and a colon follows it.
      let next = end + 1;
      while (next < text.length && ' \t\n\r'.includes(text[next] ?? '')) next++;
      if (top?.keys && text[next] === ':') {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        // The path only for the answer: built per key, it cost time quadratic in the depth (a
        // 64 KiB body of nested objects held the instance for over a second).
        if (top.keys.has(key))
          return [...stack.slice(0, -1).map((f) => f.key), key].filter(Boolean).join('.');
        top.keys.add(key);
        top.key = key;
      }
      i = end;
    }
  }
  return null;
}

/** Serves one path: authenticate, pick the route by method, validate and run it, answer JSON. */
function pathHandler(
  runtime: Runtime,
  routes: readonly ManageRoute[],
  limiter: FailureLimiter,
): ManageHandler {
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    const started = Date.now();
    let status = 500;
    try {
      const s = await runtime.services();
      const now = s.now();
      const caller = await authenticate(request.headers.get('authorization'), {
        data: s.data,
        bootstrapToken: s.config.manageApiToken,
        now,
        limiter,
        client: clientOf(request.headers.get('x-forwarded-for')),
      });
      const route = routes.find((r) => r.method === request.method.toUpperCase());
      if (!route) throw new AppError(ErrorCode.INVALID_INPUT, `method ${request.method} is not allowed here`);
      const body = route.body ? await readJson(request) : undefined;
      const ctx = {
        data: s.data,
        now,
        graph: s.graph,
        handoffHours: s.config.handoffHours,
        cursors: cursorCodec(s.config.whatsapp.appSecret),
      };
      // From the URL, not request.query: the Functions host joins a parameter given twice into one
      // value ("a,b"), which would hide the repetition parseQuery refuses.
      const query = new URL(request.url).searchParams;
      const result = await route.invoke(
        ctx,
        { params: request.params, query, body, headers: request.headers },
        caller,
      );
      status = result === undefined ? 204 : route.status;
      return result === undefined
        ? { status, headers: SECURITY_HEADERS }
        : { status, headers: SECURITY_HEADERS, jsonBody: result };
    } catch (error) {
      const response = errorResponse(error, context);
      status = response.status ?? 500;
      return response;
    } finally {
      createLogger(context).info('manage request', {
        fn: context.functionName,
        status,
        ms: Date.now() - started,
      });
    }
  };
}

const assetHeaders = (contentType: string) => ({
  ...SECURITY_HEADERS,
  'Content-Type': contentType,
  'Content-Security-Policy': DASHBOARD_CSP,
});

function asset(body: string, contentType: string): ManageHandler {
  return async () => ({ status: 200, headers: assetHeaders(contentType), body });
}

/** The dashboard's compiled modules (dist/web/dashboard/<name>.js), built by `npm run build:web`. */
const script: ManageHandler = async (request) => {
  const body = dashboardScript(request.params['name'] ?? '');
  if (body === null) {
    return {
      status: 404,
      headers: SECURITY_HEADERS,
      jsonBody: { error: { code: 'NOT_FOUND', message: 'no such script' } },
    };
  }
  return { status: 200, headers: assetHeaders('text/javascript; charset=utf-8'), body };
};

/** Routes grouped by path, in table order: one function each. */
export function manageApiPaths(): { fn: string; path: string; routes: ManageRoute[] }[] {
  const byPath = new Map<string, { fn: string; path: string; routes: ManageRoute[] }>();
  for (const r of MANAGE_ROUTES) {
    const group = byPath.get(r.path) ?? { fn: r.fn, path: r.path, routes: [] };
    if (group.fn !== r.fn) throw new Error(`routes on ${r.path} must share one function name`);
    group.routes.push(r);
    byPath.set(r.path, group);
  }
  return [...byPath.values()];
}

export function manageDefinitionsFor(runtime: Runtime): HttpDefinition[] {
  // Failed authentications are counted per client across every management route of this app.
  const limiter = new FailureLimiter();
  const def = (name: string, route: string, methods: HttpMethod[], handler: HttpHandler): HttpDefinition => ({
    kind: 'http',
    name,
    route,
    methods,
    authLevel: 'anonymous',
    handler,
  });
  return [
    ...manageApiPaths().map((p) =>
      def(
        p.fn,
        p.path,
        p.routes.map((r) => r.method),
        pathHandler(runtime, p.routes, limiter),
      ),
    ),
    def('manageScript', 'manage/js/{name}', ['GET'], script),
    def('manageAppCss', 'manage/app.css', ['GET'], asset(DASHBOARD_CSS, 'text/css; charset=utf-8')),
    def('manageDashboard', 'manage', ['GET'], asset(DASHBOARD_HTML, 'text/html; charset=utf-8')),
  ];
}

/** The handlers tests call directly, by key, and the function each is. */
export const HANDLER_NAMES = {
  stats: 'manageStats',
  users: 'manageUsers',
  user: 'manageUser',
  userMessages: 'manageUserMessages',
  userHandoff: 'manageUserHandoff',
  userExport: 'manageUserExport',
  chats: 'manageChats',
  messages: 'manageMessages',
  dashboard: 'manageDashboard',
  script: 'manageScript',
  appCss: 'manageAppCss',
} as const;

/** The management handlers on the given services (tests call them directly). */
export function manageHandlers(runtime: Runtime): Record<keyof typeof HANDLER_NAMES, ManageHandler> {
  const byName = new Map(manageDefinitionsFor(runtime).map((d) => [d.name, d.handler as ManageHandler]));
  const entries = Object.entries(HANDLER_NAMES).map(([key, name]) => {
    const handler = byName.get(name);
    if (!handler) throw new Error(`no management function ${name}`);
    return [key, handler];
  });
  return Object.fromEntries(entries) as Record<keyof typeof HANDLER_NAMES, ManageHandler>;
}

/** Every management route, on the process's services. */
export const manageDefinitions: HttpDefinition[] = manageDefinitionsFor(defaultRuntime);
