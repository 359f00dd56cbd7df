// The management API and the dashboard: thin adapters from HTTP to shared/manage.
//
// authLevel is 'anonymous' on purpose: the API does its own bearer-token authentication (tokens
// that can be named, expired, revoked and audited), the dashboard page must load without a key,
// and a Functions key would be a second shared secret in URLs or headers that cannot be audited.
import type { HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { AppError, ErrorCode } from '../shared/errors';
import { getServices, type Services } from '../shared/deps';
import { createLogger } from '../shared/log';
import { authenticate, type Caller } from '../shared/manage/auth';
import { DASHBOARD_CSS, DASHBOARD_HTML, DASHBOARD_JS, DASHBOARD_CSP } from '../shared/manage/dashboard';
import {
  ChatsQuerySchema,
  PageQuerySchema,
  SearchQuerySchema,
  UsersQuerySchema,
} from '../shared/manage/schemas';
import * as manage from '../shared/manage/service';
import type { HttpDefinition } from './definition-types';
import { errorResponse, SECURITY_HEADERS } from './http';

type Action = (ctx: manage.ManageContext, request: HttpRequest, caller: Caller) => Promise<unknown>;

function param(request: HttpRequest, name: string): string {
  const value = request.params[name];
  if (!value) throw new AppError(ErrorCode.INVALID_INPUT, `invalid path parameter "${name}"`);
  return value;
}

/** Wraps an action: authenticate, run, answer JSON (or 204 for undefined), map errors. */
function api(services: () => Promise<Services>, action: Action) {
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    const started = Date.now();
    let status = 500;
    try {
      const s = await services();
      const now = s.now();
      const caller = await authenticate(request.headers.get('authorization'), {
        data: s.data,
        bootstrapToken: s.config.manageApiToken,
        now,
      });
      const result = await action({ data: s.data, now }, request, caller);
      status = result === undefined ? 204 : 200;
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

function asset(body: string, contentType: string) {
  return async (): Promise<HttpResponseInit> => ({
    status: 200,
    headers: {
      'Content-Type': contentType,
      'Content-Security-Policy': DASHBOARD_CSP,
      'X-Frame-Options': 'DENY',
      ...SECURITY_HEADERS,
    },
    body,
  });
}

/** The management handlers on the given services (tests pass their own). */
export function manageHandlers(services: () => Promise<Services>) {
  return {
    stats: api(services, (ctx) => manage.getStats(ctx)),
    users: api(services, (ctx, req) => manage.listUsers(ctx, manage.parseQuery(UsersQuerySchema, req.query))),
    user: api(services, (ctx, req, caller) =>
      req.method === 'DELETE'
        ? manage.eraseUser(ctx, caller, param(req, 'id'))
        : manage.getUser(ctx, param(req, 'id')),
    ),
    userMessages: api(services, (ctx, req) =>
      manage.listUserMessages(ctx, param(req, 'id'), manage.parseQuery(PageQuerySchema, req.query)),
    ),
    userExport: api(services, (ctx, req, caller) => manage.exportUser(ctx, caller, param(req, 'id'))),
    chats: api(services, (ctx, req) =>
      manage.latestChats(ctx, manage.parseQuery(ChatsQuerySchema, req.query)),
    ),
    messages: api(services, (ctx, req) =>
      manage.searchMessages(ctx, manage.parseQuery(SearchQuerySchema, req.query)),
    ),
    dashboard: asset(DASHBOARD_HTML, 'text/html; charset=utf-8'),
    appJs: asset(DASHBOARD_JS, 'text/javascript; charset=utf-8'),
    appCss: asset(DASHBOARD_CSS, 'text/css; charset=utf-8'),
  };
}

export function manageDefinitionsFor(services: () => Promise<Services>): HttpDefinition[] {
  const h = manageHandlers(services);
  const def = (
    name: string,
    route: string,
    methods: HttpDefinition['methods'],
    handler: HttpDefinition['handler'],
  ): HttpDefinition => ({
    kind: 'http',
    name,
    route,
    methods,
    authLevel: 'anonymous',
    handler,
  });
  return [
    def('manageStats', 'manage/stats', ['GET'], h.stats),
    def('manageUsers', 'manage/users', ['GET'], h.users),
    def('manageUser', 'manage/users/{id}', ['GET', 'DELETE'], h.user),
    def('manageUserMessages', 'manage/users/{id}/messages', ['GET'], h.userMessages),
    def('manageUserExport', 'manage/users/{id}/export', ['GET'], h.userExport),
    def('manageChats', 'manage/chats', ['GET'], h.chats),
    def('manageMessages', 'manage/messages', ['GET'], h.messages),
    def('manageAppJs', 'manage/app.js', ['GET'], h.appJs),
    def('manageAppCss', 'manage/app.css', ['GET'], h.appCss),
    def('manageDashboard', 'manage', ['GET'], h.dashboard),
  ];
}

/** Every management route, on the process's services. */
export const manageDefinitions: HttpDefinition[] = manageDefinitionsFor(getServices);
