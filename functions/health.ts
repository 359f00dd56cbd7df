// GET /api/health: the app answers and its database is reachable.
import type { HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { appVersion } from '../shared/config';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { HttpDefinition } from './definition-types';
import { json, loggerOf } from './http';

/**
 * How long the health check waits for the database, connecting included, before it answers 503.
 * A database that accepts connections and never answers would otherwise hold the answer for the
 * client's server selection (5 s) or, once connected, until its monitor gives up (10–15 s), and a
 * probe (Azure's health check, a load balancer, a client) has given up before that. A healthy
 * ping takes milliseconds; a cold start's first connection well under this.
 */
export const HEALTH_TIMEOUT_MS = 2_500;

class HealthTimeout extends Error {
  override readonly name = 'HealthTimeout';
}

/**
 * `work`, or a HealthTimeout after `ms`. Client-side only (no server-side time limit is sent, the
 * same on every server): what still runs goes on in the background, its end handled by the race
 * (the connection, once made, is the process's shared client; a stuck ping is ended by the driver
 * when its monitor finds the server unreachable).
 */
async function within<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new HealthTimeout(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

export function healthCheck(runtime: Runtime = defaultRuntime, timeoutMs = HEALTH_TIMEOUT_MS) {
  return async (_request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    try {
      await within((async () => (await runtime.services()).data.ping())(), timeoutMs);
      return json(200, { status: 'ok', database: 'ok', version: appVersion() });
    } catch (error) {
      loggerOf(context).error('health check failed', {
        error: error instanceof Error ? error.name : 'unknown',
      });
      return json(503, { status: 'error', database: 'unreachable' });
    }
  };
}

export const healthDefinition: HttpDefinition = {
  kind: 'http',
  name: 'health',
  route: 'health',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: healthCheck(),
};
