// POST/GET /api/webhook: Meta's verification handshake and its signed notifications. Checked in
// this order, nothing kept on any rejection: a body without Content-Length (411: the host passes
// none), size (413), signature (401), JSON (400). An authentic body is then put, raw, on the
// `inbound` queue (one durable write; the ingest function stores what it holds) and answered 200.
// A body too large for a queue message is spilled to the database first and queued by reference.
// A failed write answers 5xx so that Meta delivers again.
import { type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { MAX_INLINE_BYTES, spillBody } from '../shared/bot/jobs';
import { defaultRuntime, type Runtime } from '../shared/deps';
import { AppError, ErrorCode } from '../shared/errors';
import { sameSecret } from '../shared/secrets';
import { verifySignature } from '../shared/whatsapp/signature';
import type { HttpDefinition } from './definition-types';
import { errorResponse, loggerOf, requireDeclaredLength, SECURITY_HEADERS } from './http';
import { inboundQueueOutput, replyQueueOutput } from './queues';

export const MAX_BODY_BYTES = 3 * 1024 * 1024;

export { inboundQueueOutput, replyQueueOutput };

// The verification echoes what the caller wrote: text, never sniffed, loading and running nothing.
const text = (status: number, body = ''): HttpResponseInit => ({
  status,
  body,
  headers: { ...SECURITY_HEADERS, 'Content-Type': 'text/plain; charset=utf-8' },
});

/**
 * A parameter of the verification request, or null when it is missing or given more than once. Read
 * from the URL, not request.query: the Functions host joins repeated values with ',' (and compares
 * keys ignoring case), so `hub.challenge=1&hub.challenge=2` would be echoed as "1,2".
 */
function verifyParam(request: HttpRequest, name: string): string | null {
  const values = [...new URL(request.url).searchParams]
    .filter(([key]) => key.toLowerCase() === name)
    .map(([, value]) => value);
  return values.length === 1 ? (values[0] ?? null) : null;
}

export function verifyWebhook(runtime: Runtime = defaultRuntime) {
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    try {
      const mode = verifyParam(request, 'hub.mode');
      const token = verifyParam(request, 'hub.verify_token');
      const challenge = verifyParam(request, 'hub.challenge');
      if (
        mode === 'subscribe' &&
        token !== null &&
        challenge !== null &&
        sameSecret(token, runtime.config().whatsapp.verifyToken)
      ) {
        return text(200, challenge);
      }
      // Never the query's values: anyone may send anything there (a number, a token, line breaks).
      loggerOf(context).warn('webhook verification refused', {
        mode: mode === null ? '-' : mode === 'subscribe' ? 'subscribe' : 'other',
      });
      return text(403, 'Forbidden');
    } catch (error) {
      return errorResponse(error, context);
    }
  };
}

export function receiveWebhook(runtime: Runtime = defaultRuntime) {
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    const log = loggerOf(context);
    try {
      requireDeclaredLength(request);
      const declared = Number(request.headers.get('content-length') ?? '0');
      if (declared > MAX_BODY_BYTES) throw new AppError(ErrorCode.PAYLOAD_TOO_LARGE, 'body too large');
      const body = Buffer.from(await request.arrayBuffer());
      if (body.length > MAX_BODY_BYTES) throw new AppError(ErrorCode.PAYLOAD_TOO_LARGE, 'body too large');
      if (
        !verifySignature(
          body,
          request.headers.get('x-hub-signature-256'),
          runtime.config().whatsapp.appSecret,
        )
      ) {
        throw new AppError(ErrorCode.BAD_SIGNATURE, 'missing or invalid X-Hub-Signature-256');
      }
      const raw = body.toString('utf8');
      try {
        JSON.parse(raw);
      } catch {
        throw new AppError(ErrorCode.INVALID_INPUT, 'body is not JSON');
      }
      if (body.length <= MAX_INLINE_BYTES) {
        context.extraOutputs.set(inboundQueueOutput, raw);
        log.info('webhook queued', { bytes: body.length });
      } else {
        const reference = await spillBody((await runtime.services()).data.spills, body);
        context.extraOutputs.set(inboundQueueOutput, reference);
        log.info('webhook queued by reference', { bytes: body.length });
      }
      return text(200, 'OK');
    } catch (error) {
      if (
        error instanceof AppError &&
        error.code !== ErrorCode.UNAVAILABLE &&
        error.code !== ErrorCode.THROTTLED
      ) {
        log.warn('webhook rejected', { code: error.code });
      }
      return errorResponse(error, context);
    }
  };
}

export const webhookVerifyDefinition: HttpDefinition = {
  kind: 'http',
  name: 'webhookVerify',
  route: 'webhook',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: verifyWebhook(),
};

export const webhookReceiveDefinition: HttpDefinition = {
  kind: 'http',
  name: 'webhookReceive',
  route: 'webhook',
  methods: ['POST'],
  authLevel: 'anonymous',
  handler: receiveWebhook(),
  queueOutputs: [inboundQueueOutput],
};
