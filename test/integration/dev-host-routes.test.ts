// The local host's answers to requests no function takes: a path it does not serve (404), and a
// method the path does not have (405 naming the ones it has, as RFC 9110 requires); and the request
// a function gets, built as the Functions host builds it (scripts/lib/host-request.ts).
import type { HttpRequest } from '@azure/functions';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpDefinition } from '../../functions/definition-types';
import { startDevServer, type DevServer } from '../../scripts/dev-server';
import { simulatorDefinitions } from '../../scripts/dev/simulator';
import type { Runtime } from '../../shared/deps';

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
      {
        ...definition('echo', 'echo', ['POST']),
        handler: async (request: HttpRequest) => ({
          status: 200,
          jsonBody: {
            query: Object.fromEntries(request.query),
            fromUrl: [...new URL(request.url).searchParams],
            signature: request.headers.get('x-hub-signature-256'),
            forwardedFor: request.headers.get('x-forwarded-for'),
            body: Buffer.from(await request.arrayBuffer()).toString('hex'),
          },
        }),
      },
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
      // The local host's own answers carry the app's headers, as the app's answers on the path do.
      expect(r.headers.get('cache-control')).toBe('no-store');
      expect(r.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(r.headers.get('x-frame-options')).toBe('DENY');
    }
    // The route exists: the message says the method is the problem, not that there is no route.
    const put = await fetch(`${server.url}/api/manage/users/u_1`, { method: 'PUT' });
    expect(await put.json()).toEqual({
      error: { code: 'METHOD_NOT_ALLOWED', message: 'method PUT is not allowed here (allowed: GET, DELETE)' },
    });
    const list = await fetch(`${server.url}/api/manage/users/`, { method: 'DELETE' });
    expect(list.status).toBe(405);
    expect(list.headers.get('allow')).toBe('GET, POST');
    const badHost = await rawPost('/api/echo', [['content-length', '0']], Buffer.alloc(0), 'a b');
    expect(badHost).toMatchObject({ error: { code: 'INVALID_INPUT', message: 'invalid Host header' } });
    const missing = await fetch(`${server.url}/api/manage/nothing`);
    expect(missing.status).toBe(404);
    expect(missing.headers.get('allow')).toBeNull();
    expect(missing.headers.get('x-frame-options')).toBe('DENY');
    const badEncoding = await fetch(`${server.url}/api/manage/users/%E0%A4%A`);
    expect(badEncoding.status).toBe(400);
    expect(badEncoding.headers.get('cache-control')).toBe('no-store');
    expect((await fetch(`${server.url}/api/manage/users/u_1`)).status).toBe(200);
  });
});

describe("a body past the local host's cap (16 MiB)", () => {
  it('answers 413 with the error body, declared or chunked, without calling the function', async () => {
    const big = Buffer.alloc(16 * 1024 * 1024 + 1, 0x61);
    const declared = await fetch(`${server.url}/api/echo`, { method: 'POST', body: big });
    expect(declared.status).toBe(413);
    expect(await declared.json()).toEqual({
      error: { code: 'PAYLOAD_TOO_LARGE', message: 'body too large' },
    });
    const chunked = await fetch(`${server.url}/api/echo`, {
      method: 'POST',
      body: new Blob([big]).stream(),
      duplex: 'half',
    });
    expect(chunked.status).toBe(413);
    expect(await chunked.json()).toMatchObject({ error: { code: 'PAYLOAD_TOO_LARGE' } });
  });
});

/** A raw request (what fetch cannot send: a header line twice, a chunked body), its JSON answer. */
function rawPost(
  path: string,
  headers: [string, string][],
  body: Buffer,
  host = '127.0.0.1',
): Promise<unknown> {
  const { port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), '127.0.0.1');
    const parts: Buffer[] = [];
    socket.on('data', (c: Buffer) => parts.push(c));
    socket.on('error', reject);
    socket.on('end', () => {
      const text = Buffer.concat(parts).toString('utf8');
      // The answer comes chunked: join its chunks.
      let rest = text.slice(text.indexOf('\r\n\r\n') + 4);
      let json = '';
      for (let size = parseInt(rest, 16); size > 0; size = parseInt(rest, 16)) {
        const start = rest.indexOf('\r\n') + 2;
        json += rest.slice(start, start + size);
        rest = rest.slice(start + size + 2);
      }
      resolve(JSON.parse(json));
    });
    const head = [
      `POST ${path} HTTP/1.1`,
      `Host: ${host}`,
      'Connection: close',
      ...headers.map(([k, v]) => `${k}: ${v}`),
    ];
    socket.write(Buffer.concat([Buffer.from(`${head.join('\r\n')}\r\n\r\n`), body]));
  });
}

describe('the request a function gets', () => {
  it("is the Functions host's: a repeated parameter joined into one value, the URL as sent", async () => {
    const got = await rawPost(
      '/api/echo?q=a+b&q=c%2Cd&Limit=5&limit=6',
      [['content-length', '0']],
      Buffer.alloc(0),
    );
    expect(got).toMatchObject({
      query: { q: 'a b,c,d', Limit: '5,6' },
      fromUrl: [
        ['q', 'a b'],
        ['q', 'c,d'],
        ['Limit', '5'],
        ['limit', '6'],
      ],
    });
  });

  it('joins a header given twice with a comma, appends the peer to X-Forwarded-For, and keeps the body bytes exactly', async () => {
    // Bytes that are not UTF-8, a BOM, and an escaped character: the signature covers these bytes.
    const bytes = Buffer.concat([
      Buffer.from([0xef, 0xbb, 0xbf, 0xff, 0xfe]),
      Buffer.from('{"a":"\\u00e9"}'),
    ]);
    const got = (await rawPost(
      '/api/echo',
      [
        ['x-hub-signature-256', 'sha256=one'],
        ['X-Hub-Signature-256', 'sha256=two'],
        ['x-forwarded-for', '203.0.113.9'],
        ['content-length', String(bytes.length)],
      ],
      bytes,
    )) as { signature: string; forwardedFor: string; body: string };
    expect(got.signature).toBe('sha256=one,sha256=two');
    expect(got.forwardedFor).toMatch(/^203\.0\.113\.9, 127\.0\.0\.1:\d+$/);
    expect(got.body).toBe(bytes.toString('hex'));
  });

  it('hands no body from a request without Content-Length (chunked), as the host does', async () => {
    const got = await rawPost(
      '/api/echo',
      [['transfer-encoding', 'chunked']],
      Buffer.from('7\r\n{"a":1}\r\n0\r\n\r\n'),
    );
    expect(got).toMatchObject({ body: '' });
  });
});

describe('the simulator', () => {
  it('answers a send whose body came chunked with 411, as the app does, not a misleading 400', async () => {
    const sim = await startDevServer({
      port: 0,
      log: () => undefined,
      definitions: simulatorDefinitions({} as Runtime),
    });
    try {
      const { port } = new URL(sim.url);
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = net.connect(Number(port), '127.0.0.1');
        const parts: Buffer[] = [];
        socket.on('data', (c: Buffer) => parts.push(c));
        socket.on('error', reject);
        socket.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
        const body = '{"kind":"text","waId":"34600111333","name":"Ana","text":"hi"}';
        socket.write(
          [
            'POST /api/dev/chat/send HTTP/1.1',
            `Host: 127.0.0.1:${port}`,
            'Connection: close',
            'Content-Type: application/json',
            'Transfer-Encoding: chunked',
            '',
            `${Buffer.byteLength(body).toString(16)}\r\n${body}\r\n0\r\n\r\n`,
          ].join('\r\n'),
        );
      });
      expect(answer).toMatch(/^HTTP\/1\.1 411 /);
      expect(answer).toMatch(/LENGTH_REQUIRED/);
    } finally {
      await sim.stop();
    }
  });
});
