// The local host's answers to requests no function takes: a path it does not serve (404), and a
// method the path does not have (405 naming the ones it has, as RFC 9110 requires).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpDefinition } from '../../functions/definition-types';
import { startDevServer, type DevServer } from '../../scripts/dev-server';

let server: DevServer;
const definition = (name: string, route: string, methods: HttpDefinition['methods']): HttpDefinition => ({
  kind: 'http',
  name,
  route,
  methods,
  authLevel: 'anonymous',
  handler: async () => ({ status: 200, jsonBody: { name } }),
});

beforeAll(async () => {
  server = await startDevServer({
    port: 0,
    log: () => undefined,
    definitions: [
      definition('one', 'manage/users/{id}', ['GET', 'DELETE']),
      definition('list', 'manage/users', ['GET', 'POST']),
    ],
  });
});
afterAll(async () => {
  await server?.stop();
});

describe('the local host', () => {
  it('answers a method the path does not have with 405 and Allow, and an unknown path with 404', async () => {
    for (const method of ['PUT', 'PATCH', 'OPTIONS', 'HEAD']) {
      const r = await fetch(`${server.url}/api/manage/users/u_1`, { method });
      expect(r.status, method).toBe(405);
      expect(r.headers.get('allow')).toBe('GET, DELETE');
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    }
    const list = await fetch(`${server.url}/api/manage/users/`, { method: 'DELETE' });
    expect(list.status).toBe(405);
    expect(list.headers.get('allow')).toBe('GET, POST');
    const missing = await fetch(`${server.url}/api/manage/nothing`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('allow')).toBeNull();
    expect((await fetch(`${server.url}/api/manage/users/u_1`)).status).toBe(200);
  });
});
