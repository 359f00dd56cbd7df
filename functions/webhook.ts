// POST/GET /api/webhook: Meta's verification handshake and its signed notifications. Checked in
// this order, nothing stored on any rejection: size (413), signature (401), JSON (400). Everything
// authentic is stored before the 200; a storage failure answers 5xx so that Meta delivers again.
import { output, type HttpRequest, type HttpResponseInit, type InvocationContext } from '@azure/functions';
import { timingSafeEqual } from 'node:crypto';
import { ingestNotification } from '../shared/bot/ingest';
import { REPLY_QUEUE } from '../shared/bot/jobs';
import { defaultRuntime, type Runtime } from '../shared/deps';
import { AppError, ErrorCode } from '../shared/errors';
import { verifySignature } from '../shared/whatsapp/signature';
import type { HttpDefinition } from './definition-types';
import { errorResponse, loggerOf } from './http';

export const MAX_BODY_BYTES = 3 * 1024 * 1024;

export const replyQueueOutput = output.storageQueue({
  queueName: REPLY_QUEUE,
  connection: 'AzureWebJobsStorage',
});

const text = (status: number, body = ''): HttpResponseInit => ({
  status,
  body,
  headers: { 'Content-Type': 'text/plain; charset=utf-8' },
});

const sameSecret = (a: string, b: string): boolean => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

export function verifyWebhook(runtime: Runtime = defaultRuntime) {
  return async (request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    try {
      const mode = request.query.get('hub.mode');
      const token = request.query.get('hub.verify_token');
      const challenge = request.query.get('hub.challenge');
      if (
        mode === 'subscribe' &&
        token !== null &&
        challenge !== null &&
        sameSecret(token, runtime.config().whatsapp.verifyToken)
      ) {
        return text(200, challenge);
      }
      loggerOf(context).warn('webhook verification refused', { mode: mode ?? '-' });
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
      let payload: unknown;
      try {
        payload = JSON.parse(body.toString('utf8'));
      } catch {
        throw new AppError(ErrorCode.INVALID_INPUT, 'body is not JSON');
      }
      const services = await runtime.services();
      const { jobs, summary } = await ingestNotification(services, payload, log);
      if (jobs.length) context.extraOutputs.set(replyQueueOutput, jobs);
      log.info('webhook processed', { bytes: body.length, jobs: jobs.length, ...summary });
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
  queueOutputs: [replyQueueOutput],
};
