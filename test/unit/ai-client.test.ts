// The chat-completions client against loopback stubs (real HTTP): auth headers for Azure and other
// hosts, Microsoft Entra ID through a managed-identity token endpoint (App Service protocol),
// token caching, exactly one retry on any failure (other turns when the caller gives them), and the parsed usage.
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { EnvSchema, type AiConfig } from '../../shared/config';
import { AiError, createAiClient, isAzureHost } from '../../shared/ai/client';
import { startHttpStub, type HttpStub } from '../helpers/http-stub';

const completion = (content: string) => ({
  status: 200,
  body: {
    id: 'chatcmpl-1',
    model: 'gpt-4o-mini-2024-07-18',
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 },
  },
});

/**
 * AI_TIMEOUT_MS's default: a call's bound where a test is not about timing out (under load, a
 * first Entra ID sign-in alone, DefaultAzureCredential's chain, took over 2 s).
 */
const DEFAULT_TIMEOUT_MS = EnvSchema.shape.AI_TIMEOUT_MS.parse(undefined);

const aiConfig = (endpoint: string, extra: Partial<AiConfig> = {}): AiConfig => ({
  endpoint,
  apiKey: undefined,
  model: 'my-deployment',
  systemPrompt: 'system',
  historyLimit: 10,
  timeoutMs: DEFAULT_TIMEOUT_MS,
  maxPerMinute: 10,
  ...extra,
});

const API_KEY = 'sk-test-key-0123456789';
const ask = [{ role: 'user' as const, content: 'hello' }];

let ai: HttpStub;
beforeAll(async () => {
  ai = await startHttpStub(() => completion('hi there'));
});
afterAll(async () => {
  await ai.close();
});
beforeEach(() => {
  ai.requests = [];
  ai.respond = () => completion('hi there');
});

describe('Azure host recognition', () => {
  it('recognises the Azure OpenAI / AI Foundry hosts only', () => {
    expect(isAzureHost('https://res.openai.azure.com/openai/v1')).toBe(true);
    expect(isAzureHost('https://res.cognitiveservices.azure.com/openai/v1')).toBe(true);
    expect(isAzureHost('https://res.services.ai.azure.com/openai/v1')).toBe(true);
    expect(isAzureHost('https://api.openai.com/v1')).toBe(false);
    expect(isAzureHost('https://openai.azure.com.evil.example/v1')).toBe(false);
    expect(isAzureHost('http://127.0.0.1:8080/v1')).toBe(false);
  });
});

describe('chat completions', () => {
  it('posts {model, messages, stream: false} to {endpoint}/chat/completions with a Bearer key and parses the answer and usage', async () => {
    const client = createAiClient(aiConfig(`${ai.url}/v1`, { apiKey: API_KEY }));
    const result = await client.complete(ask);
    expect(ai.requests).toHaveLength(1);
    const [request] = ai.requests;
    expect(request?.method).toBe('POST');
    expect(request?.url).toBe('/v1/chat/completions');
    expect(request?.headers['authorization']).toBe(`Bearer ${API_KEY}`);
    expect(request?.headers['api-key']).toBeUndefined();
    expect(JSON.parse(request?.text ?? '{}')).toEqual({
      model: 'my-deployment',
      messages: ask,
      stream: false,
    });
    expect(result).toMatchObject({
      text: 'hi there',
      provider: 'openai-compatible',
      model: 'gpt-4o-mini-2024-07-18',
      promptTokens: 12,
      completionTokens: 5,
      totalTokens: 17,
    });
    expect(result.latencyMs).toBeGreaterThanOrEqual(0);
  });

  it('sends the key as api-key to an Azure endpoint', async () => {
    const client = createAiClient(aiConfig(`${ai.url}/openai/v1`, { apiKey: API_KEY }), { azure: true });
    const result = await client.complete(ask);
    expect(ai.requests[0]?.headers['api-key']).toBe(API_KEY);
    expect(ai.requests[0]?.headers['authorization']).toBeUndefined();
    expect(result.provider).toBe('azure-openai');
  });

  // Azure OpenAI's deployment form takes `api-version` in the query
  // (learn.microsoft.com/azure/ai-foundry/openai/reference: POST
  // {endpoint}/openai/deployments/{deployment-id}/chat/completions?api-version=2024-10-21), and
  // the Foundry portal's Target URI for a deployment is that whole URL. Both used to be posted to
  // `…?api-version=…/chat/completions`: the path without /chat/completions, the version garbled.
  it('keeps the endpoint query (Azure api-version) and takes a Target URI that already ends in /chat/completions', async () => {
    const deployment = `${ai.url}/openai/deployments/gpt-4o?api-version=2024-10-21`;
    await createAiClient(aiConfig(deployment, { apiKey: API_KEY }), { azure: true }).complete(ask);
    const target = `${ai.url}/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview`;
    await createAiClient(aiConfig(target, { apiKey: API_KEY }), { azure: true }).complete(ask);
    await createAiClient(aiConfig(`${ai.url}/openai/v1/?api-version=preview`)).complete(ask);
    expect(ai.requests.map((r) => r.url)).toEqual([
      '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21',
      '/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview',
      '/openai/v1/chat/completions?api-version=preview',
    ]);
  });

  it('sends no auth to a non-Azure endpoint without a key, and falls back to the configured model name', async () => {
    ai.respond = () => ({ status: 200, body: { choices: [{ message: { content: 'ok' } }] } });
    const client = createAiClient(aiConfig(ai.url));
    const result = await client.complete(ask);
    expect(ai.requests[0]?.headers['authorization']).toBeUndefined();
    expect(ai.requests[0]?.headers['api-key']).toBeUndefined();
    expect(result).toMatchObject({ text: 'ok', model: 'my-deployment', totalTokens: 0 });
  });

  it('retries once after a 500, then succeeds', async () => {
    let n = 0;
    ai.respond = () =>
      n++ === 0 ? { status: 500, body: { error: { message: 'boom' } } } : completion('second time');
    const client = createAiClient(aiConfig(ai.url, { apiKey: API_KEY }), { retryDelayMs: 10 });
    await expect(client.complete(ask)).resolves.toMatchObject({ text: 'second time' });
    expect(ai.requests).toHaveLength(2);
  });

  it('gives up after one retry of a 429 and keeps no key in the error', async () => {
    ai.respond = () => ({ status: 429, body: { error: { code: 'rate_limit', message: 'slow down' } } });
    const client = createAiClient(aiConfig(ai.url, { apiKey: API_KEY }), { retryDelayMs: 10 });
    const error = await client.complete(ask).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AiError);
    expect((error as AiError).status).toBe(429);
    expect(ai.requests).toHaveLength(2);
    expect(JSON.stringify(error) + String(error) + ((error as Error).stack ?? '')).not.toContain(API_KEY);
  });

  it.each([400, 401, 403, 404, 409, 422])('retries a %i once, then fails with it', async (status) => {
    ai.respond = () => ({ status, body: { error: { code: 'some_code' } } });
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).rejects.toMatchObject({ status, detail: 'some_code' });
    expect(ai.requests).toHaveLength(2);
  });

  it('asks the retry with the turns the caller gives for the failure, and no third time', async () => {
    ai.respond = () => ({ status: 400, body: { error: { code: 'context_length_exceeded' } } });
    const alone = [{ role: 'user' as const, content: 'alone' }];
    const seen: (string | undefined)[] = [];
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    const retryWith = (error: AiError) => (seen.push(error.detail), alone);
    await expect(client.complete(ask, { retryWith })).rejects.toMatchObject({ status: 400 });
    expect(seen).toEqual(['context_length_exceeded']);
    expect(ai.requests.map((r) => r.body['messages'])).toEqual([ask, alone]);
    ai.requests = [];
    ai.respond = (_req, index) =>
      index === 0 ? { status: 400, body: { error: { code: 'x' } } } : completion('fine');
    await expect(client.complete(ask, { retryWith })).resolves.toMatchObject({ text: 'fine', turns: alone });
  });

  it('times out after timeoutMs, retries once, then fails with reason timeout', async () => {
    ai.respond = () => ({ ...completion('late'), delayMs: 1_500 });
    const client = createAiClient(aiConfig(ai.url, { timeoutMs: 200 }), { retryDelayMs: 10 });
    const started = Date.now();
    await expect(client.complete(ask)).rejects.toMatchObject({ reason: 'timeout', status: null });
    expect(Date.now() - started).toBeLessThan(1_400);
    expect(ai.requests).toHaveLength(2);
  });

  const withoutAnswer = (message: Record<string, unknown>) => ({
    status: 200,
    body: { choices: [{ index: 0, message: { role: 'assistant', ...message }, finish_reason: 'stop' }] },
  });

  it.each([
    ['no choices', { status: 200, body: { choices: [] } }],
    ['content null', withoutAnswer({ content: null })],
    ['a refusal', withoutAnswer({ content: null, refusal: 'I cannot help with that.' })],
    ['blank content', withoutAnswer({ content: ' \n ' })],
    ['a body that is not JSON', { status: 200, body: '<html>upstream hiccup</html>' }],
  ])('treats a response without an answer (%s) as a failure, after one retry', async (_, reply) => {
    ai.respond = () => reply;
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).rejects.toMatchObject({ reason: 'bad_response' });
    expect(ai.requests).toHaveLength(2);
  });

  it('waits the Retry-After of a 429 (retry-after-ms, else retry-after) before the one retry', async () => {
    for (const headers of [{ 'retry-after-ms': '400' }, { 'retry-after': '1' }]) {
      ai.requests = [];
      const at: number[] = [];
      ai.respond = (_req, index) => {
        at.push(Date.now());
        return index === 0 ? { status: 429, body: { error: { code: '429' } }, headers } : completion('later');
      };
      const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
      await expect(client.complete(ask)).resolves.toMatchObject({ text: 'later' });
      expect(ai.requests).toHaveLength(2);
      expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(headers['retry-after'] ? 950 : 380);
    }
  });

  it('does not retry a 429 whose Retry-After is longer than a call may take', async () => {
    ai.respond = () => ({ status: 429, body: { error: { code: '429' } }, headers: { 'retry-after': '30' } });
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    const started = Date.now();
    await expect(client.complete(ask)).rejects.toMatchObject({ status: 429, retryAfterMs: 30_000 });
    expect(ai.requests).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  // RFC 9110 §10.2.3: Retry-After is delay-seconds or an HTTP-date (as a gateway in front of the
  // endpoint may write it).
  it('reads a Retry-After given as an HTTP date: waits until then, or does not retry when it is too far', async () => {
    const at: number[] = [];
    ai.respond = (_req, index) => {
      at.push(Date.now());
      const when = new Date(Date.now() + 2_000).toUTCString();
      return index === 0
        ? { status: 429, body: { error: { code: '429' } }, headers: { 'retry-after': when } }
        : completion('later');
    };
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).resolves.toMatchObject({ text: 'later' });
    // The date has whole seconds: 2 s ahead is at least 1 s ahead.
    expect(at[1]! - at[0]!).toBeGreaterThanOrEqual(950);

    ai.requests = [];
    const later = new Date(Date.now() + 3_600_000).toUTCString();
    ai.respond = () => ({ status: 429, body: { error: { code: '429' } }, headers: { 'retry-after': later } });
    const started = Date.now();
    await expect(client.complete(ask)).rejects.toMatchObject({ status: 429 });
    expect(ai.requests).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it('treats an answer the content filter stopped as a failure, without sending its part, after one retry', async () => {
    ai.respond = () => ({
      status: 200,
      body: {
        choices: [
          { message: { role: 'assistant', content: 'Here is how' }, finish_reason: 'content_filter' },
        ],
      },
    });
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).rejects.toMatchObject({
      reason: 'bad_response',
      detail: 'answer stopped by the content filter',
    });
    expect(ai.requests).toHaveLength(2);
  });

  it('keeps a long answer whole, and refuses one over 4 MiB without buffering it', async () => {
    const long = 'word '.repeat(20_000);
    ai.respond = () => completion(long);
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).resolves.toMatchObject({ text: long.trim() });
    ai.respond = () => completion('x'.repeat(5 * 1024 * 1024));
    await expect(client.complete(ask)).rejects.toMatchObject({ reason: 'bad_response' });
  });

  it('answers when the retry after a response without an answer succeeds', async () => {
    ai.respond = (_req, index) =>
      index === 0 ? { status: 200, body: { choices: [] } } : completion('there');
    const client = createAiClient(aiConfig(ai.url), { retryDelayMs: 10 });
    await expect(client.complete(ask)).resolves.toMatchObject({ text: 'there' });
    expect(ai.requests).toHaveLength(2);
  });
});

describe('Microsoft Entra ID (managed identity, App Service protocol)', () => {
  const IDENTITY_HEADER = 'identity-header-secret-0123';
  const ACCESS_TOKEN = 'entra-access-token-abcdef';
  let identity: HttpStub;
  const saved: Record<string, string | undefined> = {};
  const names = [
    'IDENTITY_ENDPOINT',
    'IDENTITY_HEADER',
    'MSI_ENDPOINT',
    'MSI_SECRET',
    'IDENTITY_SERVER_THUMBPRINT',
    'IMDS_ENDPOINT',
    'AZURE_CLIENT_ID',
    'AZURE_TENANT_ID',
    'AZURE_CLIENT_SECRET',
    'AZURE_FEDERATED_TOKEN_FILE',
  ];

  /** The managed identity endpoint's answer: a token for Azure OpenAI, valid for an hour. */
  const issuedToken = () => ({
    status: 200,
    body: {
      access_token: ACCESS_TOKEN,
      expires_on: String(Math.floor(Date.now() / 1000) + 3600),
      resource: 'https://cognitiveservices.azure.com',
      token_type: 'Bearer',
    },
  });

  beforeAll(async () => {
    identity = await startHttpStub(issuedToken);
    for (const name of names) {
      saved[name] = process.env[name];
      delete process.env[name];
    }
    process.env['IDENTITY_ENDPOINT'] = `${identity.url}/msi/token`;
    process.env['IDENTITY_HEADER'] = IDENTITY_HEADER;
  });

  afterAll(async () => {
    for (const name of names) {
      if (saved[name] === undefined) delete process.env[name];
      else process.env[name] = saved[name];
    }
    await identity.close();
  });

  afterEach(() => {
    identity.requests = [];
  });

  it('gets a token from the managed identity endpoint once, caches it, and sends it as Bearer', async () => {
    const client = createAiClient(aiConfig(`${ai.url}/openai/v1`), { azure: true });
    await client.complete(ask);
    await client.complete(ask);
    expect(identity.requests).toHaveLength(1);
    const tokenRequest = identity.requests[0];
    expect(tokenRequest?.headers['x-identity-header']).toBe(IDENTITY_HEADER);
    expect(decodeURIComponent(tokenRequest?.url ?? '')).toContain(
      'resource=https://cognitiveservices.azure.com',
    );
    expect(ai.requests).toHaveLength(2);
    for (const request of ai.requests) {
      expect(request.headers['authorization']).toBe(`Bearer ${ACCESS_TOKEN}`);
      expect(request.headers['api-key']).toBeUndefined();
    }
  });

  it('renews a token that is about to expire (within 5 minutes)', async () => {
    let calls = 0;
    const client = createAiClient(aiConfig(`${ai.url}/openai/v1`), {
      azure: true,
      credential: {
        getToken: () => {
          calls++;
          return Promise.resolve({ token: `t${calls}`, expiresOnTimestamp: Date.now() + 4 * 60_000 });
        },
      },
    });
    await client.complete(ask);
    await client.complete(ask);
    expect(calls).toBe(2);
    expect(ai.requests.map((r) => r.headers['authorization'])).toEqual(['Bearer t1', 'Bearer t2']);
  });

  it('counts the Entra ID sign-in in AI_TIMEOUT_MS: a token endpoint that hangs fails the call in time', async () => {
    identity.respond = () => ({ status: 200, body: {}, delayMs: 60_000 });
    // Another (user-assigned) identity: the token the tests above got is cached by the library.
    process.env['AZURE_CLIENT_ID'] = 'a-user-assigned-identity-that-hangs';
    try {
      const client = createAiClient(aiConfig(`${ai.url}/openai/v1`, { timeoutMs: 500 }), {
        azure: true,
        retryDelayMs: 10,
      });
      const started = Date.now();
      const failure = await client.complete(ask).then(
        () => null,
        (error: unknown) => error,
      );
      // Two attempts of at most 500 ms each, plus the pause between them.
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(failure).toBeInstanceOf(AiError);
      expect((failure as AiError).reason).toBe('timeout');
      expect(ai.requests).toHaveLength(0);
      // The hung sign-in is not left in place: the next call asks the endpoint again.
      const asked = identity.requests.length;
      await client.complete(ask).catch(() => undefined);
      expect(identity.requests.length).toBeGreaterThan(asked);
    } finally {
      delete process.env['AZURE_CLIENT_ID'];
      identity.respond = issuedToken;
    }
  });

  it('prefers a key over Entra ID', async () => {
    const client = createAiClient(aiConfig(`${ai.url}/openai/v1`, { apiKey: API_KEY }), { azure: true });
    await client.complete(ask);
    expect(identity.requests).toHaveLength(0);
    expect(ai.requests[0]?.headers['api-key']).toBe(API_KEY);
  });
});
