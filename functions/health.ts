// GET /api/health: the app answers and its database is reachable.
import type { HttpRequest, HttpResponseInit, InvocationContext } from '@azure/functions';
import { appVersion } from '../shared/config';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { HttpDefinition } from './definition-types';
import { json, loggerOf } from './http';

export function healthCheck(runtime: Runtime = defaultRuntime) {
  return async (_request: HttpRequest, context: InvocationContext): Promise<HttpResponseInit> => {
    try {
      await (await runtime.services()).data.ping();
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
