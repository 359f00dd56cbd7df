// GET /api/openapi.json: the OpenAPI 3 document of the management API (public, like the dashboard page).
import type { HttpResponseInit } from '@azure/functions';
import { openApiDocument } from '../shared/manage/openapi';
import type { HttpDefinition } from './definition-types';

export async function openApiHandler(): Promise<HttpResponseInit> {
  return { status: 200, headers: { 'Cache-Control': 'no-cache' }, jsonBody: openApiDocument() };
}

export const openApiDefinition: HttpDefinition = {
  kind: 'http',
  name: 'openapi',
  route: 'openapi.json',
  methods: ['GET'],
  authLevel: 'anonymous',
  handler: openApiHandler,
};
