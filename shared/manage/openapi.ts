// The OpenAPI 3 document of the management API, generated from the route table (./routes.ts) and
// the zod schemas it validates with.
import { OpenAPIRegistry, OpenApiGeneratorV3, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import type { z } from 'zod';
import { MANAGE_ROUTES, MAX_BODY_BYTES } from './routes';
import { ErrorSchema, UserIdParamsSchema } from './schemas';

const json = (schema: z.ZodType, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});

const retryAfter = {
  description: 'Seconds to wait before trying again',
  schema: { type: 'integer' as const },
};

// The answer of a route that reads a path id, query, header or body (stats reads none: never 400).
const invalid = {
  400: json(
    ErrorSchema,
    'A path parameter, query parameter, header or body field is invalid (the message names it)',
  ),
};
// The answers every authenticated route can give, and those of a route with a body.
const errors = {
  401: json(ErrorSchema, 'Missing or unknown token'),
  403: json(ErrorSchema, 'Revoked or expired token'),
  429: {
    ...json(
      ErrorSchema,
      'TOO_MANY_REQUESTS: more than 10 failed authentications from this client this minute',
    ),
    headers: {
      'Retry-After': { description: 'Seconds until the minute ends', schema: { type: 'integer' as const } },
    },
  },
};
const bodyErrors = {
  411: json(ErrorSchema, 'LENGTH_REQUIRED: the body was sent without Content-Length (chunked)'),
  413: json(ErrorSchema, `PAYLOAD_TOO_LARGE: the body is over ${MAX_BODY_BYTES} bytes`),
};

let document: object | undefined;

export function openApiDocument(): object {
  if (document) return document;
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  for (const r of MANAGE_ROUTES) {
    const extra = Object.fromEntries(
      Object.entries(r.errors ?? {}).map(([status, text]) => [
        status,
        // A 503 says when to try again (the erase of a user still under way).
        status === '503'
          ? { ...json(ErrorSchema, text), headers: { 'Retry-After': retryAfter } }
          : json(ErrorSchema, text),
      ]),
    );
    const config: RouteConfig = {
      method: r.method.toLowerCase() as RouteConfig['method'],
      path: `/${r.path}`,
      summary: r.summary,
      request: {
        ...(r.hasId ? { params: UserIdParamsSchema } : {}),
        ...(r.query ? { query: r.query } : {}),
        ...(r.headers ? { headers: r.headers } : {}),
        ...(r.body ? { body: { content: { 'application/json': { schema: r.body } }, required: true } } : {}),
      },
      responses: {
        [r.status]: r.response
          ? json(r.response, r.responseDescription)
          : { description: r.responseDescription },
        ...(r.hasId || r.query || r.body || r.headers ? invalid : {}),
        ...errors,
        ...(r.body ? bodyErrors : {}),
        ...extra,
      },
      security: [{ bearer: [] }],
    };
    registry.registerPath(config);
  }
  document = new OpenApiGeneratorV3(registry.definitions).generateDocument({
    openapi: '3.0.3',
    info: { title: 'WhatsApp bot management API', version: '1.1.0' },
    servers: [{ url: '/api' }],
  });
  return document;
}
