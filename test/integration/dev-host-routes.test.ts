// The local host's answers to requests no function takes: a path it does not serve, and a method
// the path does not have (both 404, as the Functions host answers); its route matching on the path
// as Kestrel decodes it; and the request a function gets, built as the Functions host builds it
// (scripts/lib/host-request.ts).
import type { HttpRequest } from '@azure/functions';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HttpDefinition } from '../../functions/definition-types';
import { hostRoutePrefix, startDevServer, type DevServer } from '../../scripts/dev-server';
import { simulatorDefinitions } from '../../scripts/dev/simulator';
import type { Runtime } from '../../shared/deps';
import { startHttpStub } from '../helpers/http-stub';

let server: DevServer;
const definition = (name: string, route: string, methods: HttpDefinition['methods']): HttpDefinition => ({
  kind: 'http',
  name,
  route,
  methods,
  authLevel: 'anonymous',
  handler: async (request: HttpRequest) => ({ status: 200, jsonBody: { name, params: request.params } }),
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
  it('answers a method the path does not have with 404, as the Functions host does, and an unknown path with 404', async () => {
    for (const method of ['PUT', 'PATCH', 'OPTIONS', 'HEAD']) {
      const r = await fetch(`${server.url}/api/manage/users/u_1`, { method });
      // Azure/azure-functions-host#10098: a route's method constraint fails like a missing route.
      expect(r.status, method).toBe(404);
      expect(r.headers.get('allow')).toBeNull();
      expect(r.headers.get('x-content-type-options')).toBe('nosniff');
      // The local host's own answers carry the app's headers, as the app's answers on the path do.
      expect(r.headers.get('cache-control')).toBe('no-store');
      expect(r.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(r.headers.get('x-frame-options')).toBe('DENY');
    }
    // The message says the method is the problem, for whoever reads it locally.
    const put = await fetch(`${server.url}/api/manage/users/u_1`, { method: 'PUT' });
    expect(await put.json()).toEqual({
      error: { code: 'NOT_FOUND', message: 'no route takes PUT here (the path takes GET, DELETE)' },
    });
    const list = await fetch(`${server.url}/api/manage/users/`, { method: 'DELETE' });
    expect(list.status).toBe(404);
    const badHost = await rawPost('/api/echo', [['content-length', '0']], Buffer.alloc(0), 'a b');
    expect(badHost).toMatchObject({ error: { code: 'INVALID_INPUT', message: 'invalid Host header' } });
    const missing = await fetch(`${server.url}/api/manage/nothing`);
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'no such route' } });
    expect(missing.headers.get('x-frame-options')).toBe('DENY');
    expect((await fetch(`${server.url}/api/manage/users/u_1`)).status).toBe(200);
  });

  it('matches routes on the path as Kestrel decodes it: %2F and a sequence that is not UTF-8 stay as sent', async () => {
    const get = async (path: string) => {
      const r = await fetch(`${server.url}${path}`);
      return [r.status, r.status === 200 ? await r.json() : null];
    };
    // A literal segment written percent-encoded is the same segment.
    expect(await get('/api/manage/%75sers/u%5F1')).toEqual([200, { name: 'one', params: { id: 'u_1' } }]);
    // %2F never splits a segment, and reaches the parameter encoded (dotnet/aspnetcore#2655).
    expect(await get('/api/manage/users/a%2Fb')).toEqual([200, { name: 'one', params: { id: 'a%2Fb' } }]);
    expect(await get('/api/manage/users/a%2Fb%20c')).toEqual([
      200,
      { name: 'one', params: { id: 'a%2Fb c' } },
    ]);
    // Decoded once: %2520 is the text %20.
    expect(await get('/api/manage/users/a%2520')).toEqual([200, { name: 'one', params: { id: 'a%20' } }]);
    // Not UTF-8: left as sent, the function decides (was a 400 of the local host's own).
    expect(await get('/api/manage/users/%E0%A4%A')).toEqual([
      200,
      { name: 'one', params: { id: '%E0%A4%A' } },
    ]);
  });

  it('takes the request line as a path on the Host header, as Kestrel does: never a request to another host', async () => {
    const { port } = new URL(server.url);
    const status = async (target: string, host = `127.0.0.1:${port}`) =>
      (await rawRequest(Number(port), [`GET ${target} HTTP/1.1`, `Host: ${host}`])).split('\r\n')[0];
    // A path that begins with `//` is a path, not a host: no route has it.
    expect(await status('//evil.example/api/manage/users/u_1')).toMatch(/^HTTP\/1\.1 404 /);
    expect(await status('//evil.example/api/manage/users')).toMatch(/^HTTP\/1\.1 404 /);
    // A request line naming a host must name the Host header's (Kestrel: 400 otherwise).
    expect(await status('http://evil.example/api/manage/users/u_1')).toMatch(/^HTTP\/1\.1 400 /);
    expect(await status(`http://127.0.0.1:${port}/api/manage/users/u_1`)).toMatch(/^HTTP\/1\.1 200 /);
    // A Host header holding more than a host and port is none.
    expect(await status('/api/manage/users/u_1', `evil.example@127.0.0.1:${port}`)).toMatch(
      /^HTTP\/1\.1 400 /,
    );
    expect(await status('/api/manage/users/u_1', `127.0.0.1:${port}/api`)).toMatch(/^HTTP\/1\.1 400 /);
    expect(await status('/api/manage/users/u_1')).toMatch(/^HTTP\/1\.1 200 /);
  });

  it("serves the routes under host.json's routePrefix", async () => {
    expect(hostRoutePrefix()).toBe('api');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'route-prefix-'));
    try {
      writeFileSync(
        path.join(dir, 'host.json'),
        JSON.stringify({ extensions: { http: { routePrefix: '' } } }),
      );
      expect(hostRoutePrefix(path.join(dir, 'host.json'))).toBe('');
      writeFileSync(path.join(dir, 'host.json'), JSON.stringify({ version: '2.0' }));
      expect(hostRoutePrefix(path.join(dir, 'host.json'))).toBe('api');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const root = await startDevServer({
      port: 0,
      log: () => undefined,
      routePrefix: '',
      definitions: [definition('list', 'manage/users', ['GET'])],
    });
    try {
      expect((await fetch(`${root.url}/manage/users`)).status).toBe(200);
      expect((await fetch(`${root.url}/api/manage/users`)).status).toBe(404);
    } finally {
      await root.stop();
    }
  });
});

describe("an HTTP function slower than Azure's front end waits (230 s)", () => {
  it('gets 502 at the limit while the function runs on to its end', async () => {
    let finished = false;
    const slow = await startDevServer({
      port: 0,
      log: () => undefined,
      responseLimitMs: 150,
      definitions: [
        {
          ...definition('slow', 'slow', ['GET']),
          handler: async () => {
            await new Promise((resolve) => setTimeout(resolve, 400));
            finished = true;
            return { status: 200 };
          },
        },
        definition('quick', 'quick', ['GET']),
      ],
    });
    try {
      const r = await fetch(`${slow.url}/api/slow`);
      expect(r.status).toBe(502);
      expect(await r.json()).toMatchObject({ error: { code: 'UPSTREAM_FAILED' } });
      expect(finished).toBe(false);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect(finished).toBe(true);
      expect((await fetch(`${slow.url}/api/quick`)).status).toBe(200);
    } finally {
      await slow.stop();
    }
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
/** The whole answer to a request written as these lines (headers included), on a fresh connection. */
function rawRequest(port: number, lines: string[], body = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    const parts: Buffer[] = [];
    socket.on('data', (c: Buffer) => parts.push(c));
    socket.on('error', reject);
    socket.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    socket.write([...lines, 'Connection: close', '', body].join('\r\n'));
  });
}

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
  it('signs only for its own host: a request line naming another host, or a path that begins with //, sends it nowhere', async () => {
    const elsewhere = await startHttpStub(() => ({ status: 200, body: {} }));
    const sim = await startDevServer({
      port: 0,
      log: () => undefined,
      definitions: simulatorDefinitions({
        config: () => ({ whatsapp: { appSecret: 'simulator-test-secret' } }),
      } as unknown as Runtime),
    });
    try {
      const port = Number(new URL(sim.url).port);
      const other = new URL(elsewhere.url).host;
      const body = '{"kind":"text","waId":"34600111333","name":"Ana","text":"hi"}';
      const send = (target: string) =>
        rawRequest(
          port,
          [
            `POST ${target} HTTP/1.1`,
            `Host: 127.0.0.1:${port}`,
            'Content-Type: application/json',
            `Content-Length: ${Buffer.byteLength(body)}`,
          ],
          body,
        );
      // Before: each passed the simulator's check on the Host header, and the simulator posted a
      // notification signed with the app secret to the other host.
      expect(await send(`http://${other}/api/dev/chat/send`)).toMatch(/^HTTP\/1\.1 400 /);
      expect(await send(`//${other}/api/dev/chat/send`)).toMatch(/^HTTP\/1\.1 404 /);
      expect(elsewhere.requests).toEqual([]);
    } finally {
      await sim.stop();
      await elsewhere.close();
    }
  });

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
