// The Graph API client against a loopback node:http stub: retries 429/5xx/network errors with a
// bounded backoff, never retries permanent Graph codes, never leaks the token in its errors, and
// sends the documented bodies (BSUID `recipient`, read receipt with typing indicator).
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGraphClient, GraphError, type RetryPolicy } from '../../shared/whatsapp/graph';

const TOKEN = 'EAAGm0PX4ZCpsBAKtestSecretBearerToken1234567890';
const PHONE_NUMBER_ID = '106540352242922';
const WAMID = 'wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Record<string, unknown>;
  at: number;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

let server: Server;
let baseUrl: string;
let requests: Recorded[] = [];
let replies: Reply[] = [];
const ok: Reply = {
  status: 200,
  body: {
    messaging_product: 'whatsapp',
    contacts: [{ input: '16505551234', wa_id: '16505551234' }],
    messages: [{ id: WAMID }],
  },
};

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
        at: Date.now(),
      });
      const reply = replies.shift() ?? ok;
      res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
      res.end(JSON.stringify(reply.body ?? {}));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  requests = [];
  replies = [];
});

const FAST: RetryPolicy = { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 };

function client(retry: RetryPolicy = FAST, url = baseUrl) {
  return createGraphClient({
    baseUrl: url,
    apiVersion: 'v25.0',
    accessToken: TOKEN,
    timeoutMs: 5_000,
    retry,
  });
}

async function caught(promise: Promise<unknown>): Promise<GraphError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(GraphError);
    return error as GraphError;
  }
  throw new Error('expected a GraphError');
}

function expectNoToken(error: unknown): void {
  const e = error as Error;
  expect(e.message).not.toContain(TOKEN);
  expect(String(e)).not.toContain(TOKEN);
  expect(JSON.stringify(e)).not.toContain(TOKEN);
  expect(e.stack ?? '').not.toContain(TOKEN);
  expect(JSON.stringify(e.cause ?? null)).not.toContain(TOKEN);
}

const graphError = (code: number, message: string) => ({
  error: {
    message,
    type: 'OAuthException',
    code,
    error_data: { messaging_product: 'whatsapp', details: message },
    fbtrace_id: 'AbCdEf123',
  },
});

describe('createGraphClient', () => {
  it('sends a text with the bearer token to /{version}/{phone_number_id}/messages', async () => {
    const result = await client().sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'Hello');
    expect(result).toEqual({ waMessageId: WAMID });
    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request?.method).toBe('POST');
    expect(request?.url).toBe(`/v25.0/${PHONE_NUMBER_ID}/messages`);
    expect(request?.headers.authorization).toBe(`Bearer ${TOKEN}`);
    expect(request?.body).toMatchObject({
      messaging_product: 'whatsapp',
      to: '16505551234',
      type: 'text',
      text: { body: 'Hello' },
    });
    expect(request?.body).not.toHaveProperty('recipient');
  });

  it('retries 503 twice then succeeds: 3 requests and a wamid', async () => {
    replies = [
      { status: 503, body: { error: { message: 'Service temporarily unavailable', code: 2 } } },
      { status: 503, body: 'upstream down' },
      ok,
    ];
    const result = await client().sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'Hi');
    expect(result.waMessageId).toBe(WAMID);
    expect(requests).toHaveLength(3);
  });

  it('gives up after `attempts` requests on repeated 5xx, with a retryable GraphError', async () => {
    replies = Array.from({ length: 5 }, () => ({
      status: 500,
      body: { error: { message: 'boom', code: 1 } },
    }));
    const error = await caught(
      client({ attempts: 3, baseDelayMs: 1, maxDelayMs: 5 }).sendText(
        PHONE_NUMBER_ID,
        { waId: '1', bsuid: null },
        'x',
      ),
    );
    expect(requests).toHaveLength(3);
    expect(error.status).toBe(500);
    expect(error.permanent).toBe(false);
    expectNoToken(error);
  });

  it('honours Retry-After on 429', async () => {
    replies = [
      { status: 429, headers: { 'retry-after': '1' }, body: graphError(130429, 'Rate limit hit') },
      ok,
    ];
    const result = await client({ attempts: 3, baseDelayMs: 1, maxDelayMs: 5_000 }).sendText(
      PHONE_NUMBER_ID,
      { waId: '1', bsuid: null },
      'x',
    );
    expect(result.waMessageId).toBe(WAMID);
    expect(requests).toHaveLength(2);
    const gap = (requests[1]?.at ?? 0) - (requests[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(900);
    expect(gap).toBeLessThan(3_000);
  });

  it('caps Retry-After at maxDelayMs', async () => {
    replies = [
      { status: 429, headers: { 'retry-after': '30' }, body: graphError(130429, 'Rate limit hit') },
      ok,
    ];
    const started = Date.now();
    await client({ attempts: 3, baseDelayMs: 1, maxDelayMs: 200 }).sendText(
      PHONE_NUMBER_ID,
      { waId: '1', bsuid: null },
      'x',
    );
    expect(requests).toHaveLength(2);
    const gap = (requests[1]?.at ?? 0) - (requests[0]?.at ?? 0);
    expect(gap).toBeGreaterThanOrEqual(150);
    expect(Date.now() - started).toBeLessThan(2_000);
  });

  it('does not retry a permanent error (400, code 131026): one request, permanent, no token', async () => {
    replies = [{ status: 400, body: graphError(131026, 'Message undeliverable') }];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'x'));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
    expect(error.status).toBe(400);
    expect(error.graphCode).toBe(131026);
    expect(error.message).toContain('131026');
    expectNoToken(error);
  });

  it('does not retry a permanent code even on a 5xx', async () => {
    replies = [{ status: 500, body: graphError(131047, 'Re-engagement message') }];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
  });

  it('does not retry an expired token (401, code 190) and does not echo it', async () => {
    replies = [{ status: 401, body: graphError(190, 'Error validating access token: Session has expired') }];
    const error = await caught(client().markRead(PHONE_NUMBER_ID, WAMID, false));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
    expectNoToken(error);
  });

  it('retries a throttling code sent with a 400 (130429)', async () => {
    replies = [{ status: 400, body: graphError(130429, 'Rate limit hit') }, ok];
    await client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x');
    expect(requests).toHaveLength(2);
  });

  it('network error (closed port): GraphError after the bounded attempts, token nowhere', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const error = await caught(
      client({ attempts: 2, baseDelayMs: 1, maxDelayMs: 5 }, `http://127.0.0.1:${port}`).sendText(
        PHONE_NUMBER_ID,
        { waId: '1', bsuid: null },
        'x',
      ),
    );
    expect(error.status).toBeNull();
    expect(error.permanent).toBe(false);
    expect(error.message).toMatch(/network error/);
    expectNoToken(error);
  });

  it('addresses a BSUID-only user with `recipient`, not `to`', async () => {
    await client().sendText(PHONE_NUMBER_ID, { waId: null, bsuid: 'US.13491208655302741918' }, 'Hola');
    const body = requests[0]?.body;
    expect(body).toMatchObject({
      messaging_product: 'whatsapp',
      recipient: 'US.13491208655302741918',
      type: 'text',
    });
    expect(body).not.toHaveProperty('to');
  });

  it('prefers `to` when both wa_id and BSUID are known', async () => {
    await client().sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: 'US.13491208655302741918' }, 'Hi');
    expect(requests[0]?.body).toMatchObject({ to: '16505551234' });
    expect(requests[0]?.body).not.toHaveProperty('recipient');
  });

  it('marks read with a typing indicator', async () => {
    replies = [{ status: 200, body: { success: true } }];
    await client().markRead(PHONE_NUMBER_ID, WAMID, true);
    expect(requests[0]?.url).toBe(`/v25.0/${PHONE_NUMBER_ID}/messages`);
    expect(requests[0]?.body).toEqual({
      messaging_product: 'whatsapp',
      status: 'read',
      message_id: WAMID,
      typing_indicator: { type: 'text' },
    });
  });

  it('marks read without a typing indicator', async () => {
    replies = [{ status: 200, body: { success: true } }];
    await client().markRead(PHONE_NUMBER_ID, WAMID, false);
    expect(requests[0]?.body).toEqual({ messaging_product: 'whatsapp', status: 'read', message_id: WAMID });
  });

  it('rejects a 200 without a message id as permanent (not retried)', async () => {
    replies = [{ status: 200, body: { messaging_product: 'whatsapp', messages: [] } }];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
  });
});
