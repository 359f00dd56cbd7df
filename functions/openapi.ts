// GET /api/openapi.json: the OpenAPI 3 document of the management API (public, like the dashboard page).
import type { HttpResponseInit } from '@azure/functions';
import type { HttpDefinition } from './definition-types';
import { SECURITY_HEADERS } from './http';

export async function openApiHandler(): Promise<HttpResponseInit> {
  // Loaded on the first request: the generator is not worth a cold start of every other function.
  const { openApiDocument } = await import('../shared/manage/openapi');
  return {
    status: 200,
    headers: { ...SECURITY_HEADERS, 'Cache-Control': 'no-cache' },
    jsonBody: openApiDocument(),
  };
}

export const openApiDefinition: HttpDefinition = {
  kind: 'http',
  name: 'openapi',
  route: 'openapi.json',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: openApiHandler,
};
