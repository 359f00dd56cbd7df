// Helpers shared by the HTTP functions: the logger of an invocation and the one table that maps
// errors to responses (AppError codes → status; anything else → a generic 500, details logged).
import type { HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { AppError, ensureError, ErrorCode, httpStatusOf } from '../shared/errors';
import { createLogger, scrub, type Logger } from '../shared/log';

export const loggerOf = (context: InvocationContext): Logger => createLogger(context);

export const SECURITY_HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  // HTTPS only for a year: App Service answers http:// with a redirect (httpsOnly) but sends no
  // HSTS, so each http:// visit could be taken over on the way and serve a page that asks for the
  // token. Browsers ignore it over plain HTTP (the local host). No includeSubDomains: a custom
  // domain's subdomains are not ours to decide.
  'Strict-Transport-Security': 'max-age=31536000',
  // An answer opened as a page (a JSON body, an echoed challenge) loads and runs nothing, and no
  // other site may frame it; the dashboard's own files replace the policy with the page's.
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
} as const;

/**
 * Refuses a body sent without Content-Length (Transfer-Encoding: chunked): with HTTP streaming off,
 * the Functions host passes such a request on without its body, so what the function would read is
 * empty, not what was sent (a 411 says so, instead of a bad signature or a missing field).
 */
export function requireDeclaredLength(request: HttpRequest): void {
  if (request.headers.has('transfer-encoding') && !request.headers.has('content-length')) {
    throw new AppError(ErrorCode.LENGTH_REQUIRED, 'a body needs a Content-Length header (not chunked)');
  }
}

export function json(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponseInit {
  return { status, jsonBody: body, headers: { ...SECURITY_HEADERS, ...headers } };
}

export function errorResponse(error: unknown, context: InvocationContext): HttpResponseInit {
  if (error instanceof AppError) {
    const status = httpStatusOf[error.code];
    if (status >= 500)
      loggerOf(context).error('request failed', { code: error.code, error: scrub(error.message) });
    const shown = status < 500 || error.code === ErrorCode.UNAVAILABLE || error.exposed;
    const message = shown ? error.message : 'internal error';
    const headers: Record<string, string> = {
      ...(error.code === ErrorCode.UNAUTHORIZED ? { 'WWW-Authenticate': 'Bearer' } : {}),
      ...(error.retryAfterSeconds === undefined ? {} : { 'Retry-After': String(error.retryAfterSeconds) }),
    };
    return json(status, { error: { code: error.code, message } }, headers);
  }
  const e = ensureError(error);
  loggerOf(context).error('unexpected error', { name: e.name, error: scrub(e.message) });
  return json(500, { error: { code: ErrorCode.INTERNAL, message: 'internal error' } });
}
