// The Graph API client against a loopback node:http stub: retries 429/5xx/network errors with a
// bounded backoff, never retries permanent Graph codes, never leaks the token in its errors, and
// sends the documented bodies (BSUID `recipient`, read receipt with typing indicator), parses every
// response with the client's schemas, and refuses a body over WhatsApp's limits before any request.
import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createGraphClient, GraphError, type RetryPolicy } from '../../shared/whatsapp/graph';
import {
  characters,
  OutboundLimitError,
  readReceipt,
  TEMPLATE_PARAMETER_LIMIT,
  templateMessage,
  TEXT_BODY_LIMIT,
  textMessage,
} from '../../shared/whatsapp/outbound';

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
  /** Answer this late (a slow Graph). */
  delayMs?: number;
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
      setTimeout(() => {
        if (res.destroyed) return;
        res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
        res.end(JSON.stringify(reply.body ?? {}));
      }, reply.delayMs ?? 0);
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

function client(retry: RetryPolicy = FAST, url = baseUrl, timeoutMs = 5_000) {
  return createGraphClient({
    baseUrl: url,
    apiVersion: 'v25.0',
    accessToken: TOKEN,
    timeoutMs,
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

  it.each([131016, 131057])(
    "retries Meta's outage code %i by its code, even under a 4xx (Meta: handle errors by code)",
    async (code) => {
      replies = [{ status: 400, body: graphError(code, 'Service unavailable') }, ok];
      const result = await client({ attempts: 3, baseDelayMs: 1, maxDelayMs: 5 }).sendText(
        PHONE_NUMBER_ID,
        { waId: '1', bsuid: null },
        'x',
      );
      expect(result.waMessageId).toBe(WAMID);
      expect(requests).toHaveLength(2);
    },
  );

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

  it('honours a Retry-After given as an HTTP date (RFC 9110), as a proxy in front of Graph may write it', async () => {
    replies = [
      {
        status: 429,
        headers: { 'retry-after': new Date(Date.now() + 2_000).toUTCString() },
        body: graphError(130429, 'Rate limit hit'),
      },
      ok,
    ];
    const result = await client({ attempts: 3, baseDelayMs: 1, maxDelayMs: 5_000 }).sendText(
      PHONE_NUMBER_ID,
      { waId: '1', bsuid: null },
      'x',
    );
    expect(result.waMessageId).toBe(WAMID);
    expect(requests).toHaveLength(2);
    // The date has whole seconds: 2 s ahead is at least 1 s ahead.
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

  it("does not retry Meta's capability or permissions error (code 3), which comes with a 500", async () => {
    replies = [
      {
        status: 500,
        body: graphError(3, '(#3) Application does not have the capability to make this API call.'),
      },
    ];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
    expect([error.status, error.graphCode]).toEqual([500, 3]);
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

  // Graph's own throttling codes (https://developers.facebook.com/docs/graph-api/using-graph-api/error-handling/:
  // 17 "API User Too Many Calls", 341 "Application limit reached": "wait and retry the operation";
  // 613 "Calls to this API have exceeded the rate limit", https://developers.facebook.com/docs/messenger-platform/reference/send-api/error-codes)
  // come with a 400 like WhatsApp's: nothing went out, and the same send succeeds once the limit clears.
  it.each([4, 80007, 613, 17, 341])(
    'retries the rate limit code %i sent with a 400, and does not call it permanent',
    async (code) => {
      replies = [
        { status: 400, body: graphError(code, 'Calls to this api have exceeded the rate limit.') },
        ok,
      ];
      const result = await client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x');
      expect(result.waMessageId).toBe(WAMID);
      expect(requests).toHaveLength(2);
      replies = [1, 2, 3, 4].map(() => ({ status: 400, body: graphError(code, 'rate limit') }));
      const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
      expect(error.permanent).toBe(false);
      expect(error.graphCode).toBe(code);
    },
  );

  it("leaves Meta's pair rate limit (131056) to the caller: one request, at once, not permanent", async () => {
    // Meta's pair limit is about one message every 6 s to one user: the general policy's waits
    // (DEFAULT_RETRY, about 2 s in all) mostly spent requests and kept an operator's send waiting.
    replies = [
      { status: 400, body: graphError(131056, '(Business Account, Consumer Account) pair rate limit hit') },
    ];
    const started = Date.now();
    // The production policy (no `retry` given).
    const production = createGraphClient({ baseUrl, apiVersion: 'v25.0', accessToken: TOKEN });
    const error = await caught(
      production.sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'Hi'),
    );
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(requests).toHaveLength(1);
    expect(error.graphCode).toBe(131056);
    expect(error.permanent).toBe(false);
    expect(error.pairRateLimited).toBe(true);
    expectNoToken(error);
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

  // Graph has no idempotency key: a send that timed out may have reached the user, and a second
  // request would deliver the answer twice.
  it('never sends a message again after a timeout (it may have gone out): one request, permanent', async () => {
    replies = [{ ...ok, delayMs: 400 }];
    const error = await caught(
      client(FAST, baseUrl, 150).sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'Hi'),
    );
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(requests).toHaveLength(1);
    expect(error.permanent).toBe(true);
    expect(error.status).toBeNull();
    expect(error.message).toMatch(/timed out/);
    expectNoToken(error);
  });

  it('retries a read receipt that timed out (marking read twice does no harm)', async () => {
    replies = [
      { status: 200, body: { success: true }, delayMs: 400 },
      { status: 200, body: { success: true } },
    ];
    await client(FAST, baseUrl, 150).markRead(PHONE_NUMBER_ID, WAMID, false);
    expect(requests).toHaveLength(2);
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

  it.each([
    ['a wamid of the wrong type', { messaging_product: 'whatsapp', messages: [{ id: 42 }] }],
    ['no messaging_product', { messages: [{ id: WAMID }] }],
    ['an empty object', {}],
    ['a bare string', 'ok'],
  ])('turns a malformed 200 (%s) into a clear, permanent GraphError after one request', async (_, body) => {
    replies = [{ status: 200, body }];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect(requests).toHaveLength(1);
    expect(error.status).toBe(200);
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/unexpected response/);
    expectNoToken(error);
  });

  it('turns a malformed read-receipt answer into a GraphError', async () => {
    replies = [{ status: 200, body: { success: 'yes' } }];
    const error = await caught(client().markRead(PHONE_NUMBER_ID, WAMID, false));
    expect(error.message).toMatch(/unexpected response: success/);
  });

  it("reads Meta's error format: code, subcode and the user title when given", async () => {
    replies = [
      {
        status: 400,
        body: {
          error: {
            message: '(#131009) Parameter value is not valid',
            type: 'OAuthException',
            code: 131009,
            error_subcode: 2494010,
            error_user_title: 'Invalid parameter',
            error_data: { messaging_product: 'whatsapp', details: 'bad' },
            fbtrace_id: 'AbCdEf123',
          },
        },
      },
    ];
    const error = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect(error.graphCode).toBe(131009);
    expect(error.subcode).toBe(2494010);
    expect(error.title).toBe('Invalid parameter');
    expect(error.permanent).toBe(true);
  });

  it('reads the code of an error whose other fields Graph wrote otherwise (error_data as JSON text)', async () => {
    // The Graph API writes `error_data` as a JSON-encoded string on some errors
    // ("error_data":"{\"blame_field_specs\":[[\"to\"]]}"); the code still decides.
    const odd = (code: number, message: string) => ({
      status: 400,
      body: {
        error: {
          message,
          type: 'OAuthException',
          code,
          error_subcode: 33,
          error_data: '{"blame_field_specs":[["to"]]}',
          fbtrace_id: 'AKTXGER-zZPW',
        },
      },
    });
    replies = [odd(100, '(#100) Invalid parameter')];
    const invalid = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect([invalid.graphCode, invalid.subcode, invalid.title]).toEqual([
      100,
      33,
      '(#100) Invalid parameter',
    ]);
    // Decisions hang on the code: the pair rate limit is left to the caller, not recorded for good.
    replies = [odd(131056, '(#131056) (Business Account, Consumer Account) pair rate limit hit')];
    const paired = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect([paired.pairRateLimited, paired.permanent]).toEqual([true, false]);
    // Without a message at all, the code is still read.
    replies = [{ status: 400, body: { error: { code: 131047, type: 'OAuthException' } } }];
    const window = await caught(client().sendText(PHONE_NUMBER_ID, { waId: '1', bsuid: null }, 'x'));
    expect([window.graphCode, window.permanent]).toEqual([131047, true]);
  });

  it('refuses a 4097-character text before any request, and sends 4096', async () => {
    const to = { waId: '16505551234', bsuid: null };
    let refused: unknown;
    try {
      await client().sendText(PHONE_NUMBER_ID, to, 'x'.repeat(TEXT_BODY_LIMIT + 1));
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(OutboundLimitError);
    expect((refused as OutboundLimitError).message).toMatch(/4097 characters.*at most 4096/);
    expect(requests).toEqual([]);

    await client().sendText(PHONE_NUMBER_ID, to, 'x'.repeat(TEXT_BODY_LIMIT));
    expect(requests).toHaveLength(1);
    expect(requests[0]?.body).toMatchObject({ text: { body: 'x'.repeat(TEXT_BODY_LIMIT) } });
  });

  it('refuses a template over the bounds before any request, and sends a valid one', async () => {
    const to = { waId: '16505551234', bsuid: null };
    const bad = [
      { name: 'Order Update', language: 'en', parameters: [] },
      { name: 'order_update', language: 'english', parameters: [] },
      { name: 'order_update', language: 'en', parameters: [''] },
      { name: 'order_update', language: 'en', parameters: ['y'.repeat(1025)] },
      { name: 'order_update', language: 'en', parameters: Array.from({ length: 21 }, () => 'p') },
    ];
    for (const template of bad) {
      await expect(client().sendTemplate(PHONE_NUMBER_ID, to, template)).rejects.toBeInstanceOf(
        OutboundLimitError,
      );
    }
    expect(requests).toEqual([]);

    const result = await client().sendTemplate(PHONE_NUMBER_ID, to, {
      name: 'order_update',
      language: 'en_US',
      parameters: ['Ana', '#42'],
    });
    expect(result.waMessageId).toBe(WAMID);
    expect(requests[0]?.body).toEqual({
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: '16505551234',
      type: 'template',
      template: {
        name: 'order_update',
        language: { code: 'en_US' },
        components: [
          {
            type: 'body',
            parameters: [
              { type: 'text', text: 'Ana' },
              { type: 'text', text: '#42' },
            ],
          },
        ],
      },
    });
  });
});

describe('outbound builders', () => {
  it('build the documented bodies', () => {
    expect(textMessage({ waId: null, bsuid: 'US.1349' }, 'Hola')).toEqual({
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      recipient: 'US.1349',
      type: 'text',
      text: { preview_url: false, body: 'Hola' },
    });
    expect(
      templateMessage({ waId: '1', bsuid: null }, { name: 'hello', language: 'en', parameters: [] }),
    ).toEqual({
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      to: '1',
      type: 'template',
      template: { name: 'hello', language: { code: 'en' } },
    });
    expect(readReceipt(WAMID, true)).toEqual({
      messaging_product: 'whatsapp',
      status: 'read',
      message_id: WAMID,
      typing_indicator: { type: 'text' },
    });
  });

  it('count the limits in characters (code points: an emoji counts 1) and refuse empty bodies and recipients', () => {
    const to = { waId: '1', bsuid: null };
    const emoji = '\u{1F600}';
    expect(characters(emoji.repeat(3))).toBe(3);
    expect(() => textMessage(to, emoji.repeat(TEXT_BODY_LIMIT))).not.toThrow();
    expect(() => textMessage(to, `${emoji.repeat(TEXT_BODY_LIMIT)}x`)).toThrow(/is 4097 characters/);
    const template = (parameter: string) => ({ name: 'hello', language: 'en', parameters: [parameter] });
    expect(() => templateMessage(to, template(emoji.repeat(TEMPLATE_PARAMETER_LIMIT)))).not.toThrow();
    expect(() => templateMessage(to, template(emoji.repeat(TEMPLATE_PARAMETER_LIMIT + 1)))).toThrow(
      OutboundLimitError,
    );
    // Graph refuses the whole send over such a parameter (code 132018): refused before it.
    for (const bad of ['a\nb', 'a\r\nb', 'a\tb', 'a     b']) {
      expect(() => templateMessage(to, template(bad)), JSON.stringify(bad)).toThrow(/template parameter 1/);
    }
    expect(() => templateMessage(to, template('a    b'))).not.toThrow();
    expect(() => textMessage(to, '  ')).toThrow(/must not be empty/);
    expect(() => textMessage({ waId: null, bsuid: null }, 'x')).toThrow(/recipient/);
  });
});

// A Graph that misbehaves at the transport level: the test answers on the raw response or socket.
describe('createGraphClient against a misbehaving transport', () => {
  type Handler = (req: IncomingMessage, res: ServerResponse) => void;
  let raw: Server;
  let rawUrl: string;
  let handle: Handler = (_req, res) => res.end();
  let count = 0;

  beforeAll(async () => {
    raw = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        count++;
        handle(req, res);
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, '127.0.0.1', resolve));
    rawUrl = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    raw.closeAllConnections();
    await new Promise<void>((resolve) => raw.close(() => resolve()));
  });
  beforeEach(() => {
    count = 0;
  });
  const send = (timeoutMs = 5_000) =>
    caught(
      client(FAST, rawUrl, timeoutMs).sendText(PHONE_NUMBER_ID, { waId: '16505551234', bsuid: null }, 'Hi'),
    );
  const sent = JSON.stringify(ok.body);

  // Graph read the message before the connection broke: it may have gone out.
  it.each([
    ['a connection reset after the request was read', (req: IncomingMessage) => req.socket.destroy()],
    [
      'a 200 cut off mid-body',
      (_req: IncomingMessage, res: ServerResponse) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(sent.length) });
        res.write(sent.slice(0, 20));
        setTimeout(() => res.socket?.destroy(), 20);
      },
    ],
  ] as const)('never sends a message again after %s: one request, permanent', async (_, handler) => {
    handle = handler;
    const error = await send();
    expect(count).toBe(1);
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/may have been sent/);
    expectNoToken(error);
  });

  it('still retries a read receipt after a connection reset', async () => {
    handle = (req, res) => {
      if (count === 1) req.socket.destroy();
      else res.end(JSON.stringify({ success: true }));
    };
    await client(FAST, rawUrl).markRead(PHONE_NUMBER_ID, WAMID, false);
    expect(count).toBe(2);
  });

  // Node's socket timeout is an idle timeout: a Graph that trickles bytes would hold the worker
  // (and the user's reply lock) forever.
  it('bounds the whole call: an answer that trickles in stops at the time limit, not sent again', async () => {
    handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const timer = setInterval(() => (res.destroyed ? clearInterval(timer) : res.write(' ')), 50);
    };
    const started = Date.now();
    const error = await send(400);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(count).toBe(1);
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/may have been sent/);
  });

  it('reads at most 1 MiB of an answer: a huge body fails the call without buffering it, not sent again', async () => {
    handle = (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 32);
      let written = 0;
      const write = (): void => {
        while (written < 64 * 1024 * 1024 && !res.destroyed) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', write);
        }
        res.end(sent);
      };
      write();
    };
    const error = await send();
    expect(count).toBe(1);
    expect(error.permanent).toBe(true);
  });

  it('refuses a wamid that is not one (over 256 characters, or not printable ASCII) as permanent', async () => {
    for (const id of ['w'.repeat(257), 'wamid.with space', 'wamid.\u00e9']) {
      count = 0;
      handle = (_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ messaging_product: 'whatsapp', messages: [{ id }] }));
      };
      const error = await send();
      expect(count).toBe(1);
      expect(error.permanent).toBe(true);
      expect(error.message).toMatch(/unexpected response/);
    }
  });
});
