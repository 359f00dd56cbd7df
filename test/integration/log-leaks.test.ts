// Hostile runs through the error paths with a known number, name, text and every secret of the
// run: none of them may appear in what was logged — the invocation logs, and the errors thrown to
// the host (which the Functions host logs with their message and stack).
import { HttpRequest } from '@azure/functions';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { healthCheck } from '../../functions/health';
import { ingestWorker } from '../../functions/ingest';
import { manageHandlers } from '../../functions/manage';
import { poisonWorker, replyWorker } from '../../functions/reply';
import { receiveWebhook, verifyWebhook } from '../../functions/webhook';
import { loadConfig } from '../../shared/config';
import { buildServices, runtimeOf, type Runtime } from '../../shared/deps';
import { signBody } from '../../shared/whatsapp/signature';
import { ACCESS_TOKEN, APP_SECRET, startTestApp, VERIFY_TOKEN, type TestApp } from '../helpers/app';
import { startHttpStub, type HttpStub } from '../helpers/http-stub';
import { notification, textMessage, value } from '../helpers/meta';

const PHONE = '4917099887766';
const NAME = 'Zyxwvut Qwertyname';
const TEXT = 'hushhush marker text';
const AI_KEY = 'sk-ai-key-SENTINEL-0123456789';
const MANAGE_TOKEN = 'manage-token-SENTINEL-0123456789';
const DB_PASSWORD = 'DbPassw0rdSENTINEL';

/** What must never be logged, with the number also as WhatsApp and people write it. */
const NEEDLES = [
  PHONE,
  '170 99887766',
  '170-998-877',
  '99887766',
  NAME,
  'Zyxwvut',
  'Qwertyname',
  'hushhush',
  AI_KEY,
  MANAGE_TOKEN,
  DB_PASSWORD,
  ACCESS_TOKEN,
  APP_SECRET,
  VERIFY_TOKEN,
];

let app: TestApp;
let ai: HttpStub;
/** Errors the functions threw to the host, as it logs them. */
const thrown: string[] = [];
let clientSeq = 0;

beforeAll(async () => {
  ai = await startHttpStub(() => ({ status: 500, body: {} }));
  app = await startTestApp({
    AI_ENDPOINT: ai.url,
    AI_MODEL: 'test-model',
    AI_API_KEY: AI_KEY,
    AI_TIMEOUT_MS: '300',
    MANAGE_API_TOKEN: MANAGE_TOKEN,
  });
});
afterAll(async () => {
  await ai.close();
  await app.close();
});
let logStart = 0;
let thrownStart = 0;
beforeEach(() => {
  logStart = app.logs.length;
  thrownStart = thrown.length;
});
afterEach(() => {
  const logged = [...app.logs.slice(logStart), ...thrown.slice(thrownStart)].join('\n');
  expect(NEEDLES.filter((needle) => logged.includes(needle))).toEqual([]);
});

/** Runs a function as the host would, keeping what it throws. */
async function host(run: () => Promise<unknown>): Promise<void> {
  try {
    await run();
  } catch (error) {
    thrown.push(error instanceof Error ? `${error.name}: ${error.message}\n${error.stack}` : String(error));
  }
}

const fromUser = (text: string) =>
  notification(value({ contacts: [{ waId: PHONE, name: NAME }], messages: [textMessage(PHONE, text)] }));

/** Graph's and the AI's error bodies echo what they were sent, and the key. */
const echo = { message: `bad ${PHONE} +49 170 99887766 ${TEXT} ${NAME} ${AI_KEY}`, type: TEXT };

describe('the reply path', () => {
  it('Graph 4xx, 5xx and timeouts, AI errors, timeouts and bad bodies', async () => {
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { ...echo, code: 100, error_user_title: TEXT, error_data: { details: echo.message } } },
    });
    await host(() => app.userWrites(PHONE, `${TEXT} one`, NAME));
    ai.respond = () => ({ status: 401, body: { error: { ...echo, code: 'invalid_api_key' } } });
    await host(() => app.userWrites(PHONE, `${TEXT} two`, NAME));
    ai.respond = () => ({ status: 200, body: `not json ${echo.message}` });
    await host(() => app.userWrites(PHONE, `${TEXT} three`, NAME));
    ai.respond = () => ({ status: 200, body: {}, delayMs: 1_000 });
    for (let i = 0; i < 4; i++) app.graph.sendResponses.push({ status: 503, body: echo.message });
    await host(() => app.userWrites(PHONE, `${TEXT} four`, NAME));
    app.graph.delayMs = 20_000;
    ai.respond = () => ({ status: 429, body: { error: echo } });
    const graphTimeout = app.post(fromUser(`${TEXT} five`));
    await graphTimeout;
    app.graph.delayMs = 0;
    expect(app.logs.join('\n')).toMatch(/ai failed/);
  }, 60_000);

  it('a welcome Graph keeps refusing with an error that echoes the number, name and text', async () => {
    // A first contact (a welcome goes once per user); Graph's error echoes the known needles.
    const NEWCOMER = '4917011122233';
    await host(() => app.drain()); // what an earlier test left queued
    const welcome = {
      from: NEWCOMER,
      id: `wamid.welcome.${Date.now()}`,
      timestamp: String(Math.floor(Date.now() / 1000)),
      type: 'request_welcome',
    };
    const opened = notification(value({ contacts: [{ waId: NEWCOMER, name: NAME }], messages: [welcome] }));
    for (let i = 0; i < 4; i++)
      app.graph.sendResponses.push({
        status: 503,
        body: {
          error: {
            ...echo,
            code: 2,
            error_user_title: `${TEXT} ${NAME}`,
            error_data: { details: echo.message },
          },
        },
      });
    await host(() => app.post(opened));
    await host(() => app.drain());
    expect(app.graph.sendResponses).toEqual([]);
    expect(thrown.length).toBeGreaterThan(thrownStart);
  });

  it('items no webhook queued, handed to ingest and the reply workers', async () => {
    const runtime = runtimeOf(app.services);
    const context = (name: string) => app.context(name);
    await host(() => ingestWorker(runtime)(`{"object": "${TEXT} ${PHONE}`, context('ingest')));
    await host(() => ingestWorker(runtime)({ spill: 'f'.repeat(64), bytes: 1 }, context('ingest')));
    await host(() =>
      ingestWorker(runtime)(
        {
          object: 'whatsapp_business_account',
          entry: [
            {
              changes: [
                {
                  field: 'messages',
                  value: {
                    metadata: { phone_number_id: PHONE },
                    contacts: { name: NAME },
                    messages: [{ from: `+${PHONE}`, id: `id ${TEXT}`, type: 'text', text: { body: TEXT } }],
                  },
                },
              ],
            },
          ],
        },
        context('ingest'),
      ),
    );
    // A real wamid: base64 holding the sender's number.
    const messageId = `wamid.${Buffer.from(`\u0015${PHONE}\u0015${TEXT}`).toString('base64')}`;
    for (const item of [{ kind: 'message', userId: PHONE, messageId }, `${TEXT} ${PHONE}`]) {
      await host(() => replyWorker(runtime)(item, context('reply')));
      await host(() => poisonWorker(runtime)(item, context('replyPoison')));
    }
  });
});

describe('message ids', () => {
  it('a wamid holding dots (Meta bounds ids only to printable ASCII) is pseudonymised whole', async () => {
    // Each id below is logged while the message is stored and answered; the pseudonym stopped at
    // the first dot, leaving the number after it in clear.
    for (const id of [`wamid.HBgN.${PHONE}`, `wamid.${PHONE}.1`, `wamid.a.b.${PHONE}_x`]) {
      const message = textMessage(PHONE, `${TEXT} six`, { id });
      expect(
        (
          await app.post(
            notification(value({ contacts: [{ waId: PHONE, name: NAME }], messages: [message] })),
          )
        ).status,
      ).toBe(200);
      await app.drain();
      expect(await app.services.data.messages.getMessage(id)).not.toBeNull();
    }
    expect(app.logs.slice(logStart).join('\n')).toMatch(/inbound message id=p_[0-9a-f]{12} /);
  });
});

describe('the HTTP routes', () => {
  const request = (init: {
    method?: string;
    url?: string;
    body?: string;
    headers?: Record<string, string>;
    params?: Record<string, string>;
  }) =>
    new HttpRequest({
      method: init.method ?? 'GET',
      url: init.url ?? 'http://localhost/api/x',
      headers: {
        'content-type': 'application/json',
        // Each request from its own client, so that the failure limiter answers every one.
        'x-forwarded-for': `10.1.${++clientSeq % 250}.${clientSeq % 199}`,
        ...init.headers,
      },
      params: init.params ?? {},
      ...(init.body === undefined ? {} : { body: { string: init.body } }),
    });

  it('the webhook, with a bad signature, bad JSON, a bad verify token', async () => {
    const receive = receiveWebhook(runtimeOf(app.services));
    const body = JSON.stringify(fromUser(TEXT));
    const bad = `{"entry": "${TEXT} ${PHONE} ${NAME}"`;
    for (const [payload, signature] of [
      [body, `sha256=${'0'.repeat(64)}`],
      [body, `sha256=${APP_SECRET}`],
      [bad, signBody(bad, APP_SECRET)],
    ] as const) {
      const response = await receive(
        request({ method: 'POST', body: payload, headers: { 'x-hub-signature-256': signature } }),
        app.context('webhookReceive'),
      );
      expect(response.status).toBeGreaterThanOrEqual(400);
    }
    const verify = verifyWebhook(runtimeOf(app.services));
    const query = new URLSearchParams({
      'hub.mode': `subscribe ${PHONE}\nerror forged line`,
      'hub.verify_token': `${VERIFY_TOKEN}x`,
      'hub.challenge': TEXT,
    });
    await verify(request({ url: `http://localhost/api/webhook?${query}` }), app.context('webhookVerify'));
    expect(app.logs.slice(logStart).join('\n')).not.toContain('forged line');
  });

  it('every management route, with bad tokens and bad input holding numbers, names and texts', async () => {
    const user = await app.services.data.users.resolve({ waId: PHONE, bsuid: null, name: NAME }, new Date());
    const authorized = { authorization: `Bearer ${MANAGE_TOKEN}` };
    const q = encodeURIComponent(`${PHONE} ${NAME}`);
    for (const [name, handler] of Object.entries(manageHandlers(runtimeOf(app.services)))) {
      for (const init of [
        { headers: { authorization: `Bearer ${MANAGE_TOKEN}x` } },
        { headers: { authorization: `Bearer ${AI_KEY}` } },
        { headers: { authorization: `${MANAGE_TOKEN}` } },
        { headers: authorized, url: `http://localhost/api/x?q=${q}&limit=${PHONE}&cursor=${q}&state=${q}` },
        { headers: authorized, url: `http://localhost/api/x?q=${q}&q=${q}` },
        { headers: authorized, params: { id: PHONE, name: `${PHONE}.js` } },
        { headers: authorized, params: { id: user.user.id } },
        { headers: authorized, method: 'POST', params: { id: PHONE }, body: `{"text": "${TEXT} ${PHONE}", ` },
        {
          headers: authorized,
          method: 'POST',
          params: { id: user.user.id },
          body: JSON.stringify({
            q: { $regex: TEXT },
            limit: PHONE,
            cursor: NAME,
            text: 5,
            template: { name: TEXT, language: PHONE, parameters: [NAME] },
          }),
        },
        { headers: authorized, method: 'POST', body: JSON.stringify({ q: `${PHONE} ${NAME}`, limit: 1 }) },
        {
          headers: authorized,
          method: 'POST',
          params: { id: user.user.id },
          body: JSON.stringify({ text: TEXT }),
        },
        { headers: authorized, method: 'PUT', params: { id: PHONE } },
      ])
        await host(() => handler(request(init), app.context(name)));
    }
  });

  it('the database down, its connection string holding a password', async () => {
    const config = loadConfig({
      WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
      WHATSAPP_APP_SECRET: APP_SECRET,
      WHATSAPP_ACCESS_TOKEN: ACCESS_TOKEN,
      MONGODB_URI: `mongodb://bot:${DB_PASSWORD}@127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200`,
      MANAGE_API_TOKEN: MANAGE_TOKEN,
    });
    const down: Runtime = { config: () => config, services: () => buildServices(config) };
    const health = await healthCheck(down)(request({}), app.context('health'));
    expect(health.status).toBe(503);
    const handlers = manageHandlers(down);
    await host(() =>
      handlers.users(
        request({ url: `http://localhost/api/x?q=${PHONE}`, headers: { authorization: `Bearer ${AI_KEY}` } }),
        app.context('users'),
      ),
    );
    // Too large for a queue message: spilled to the database first.
    const big = JSON.stringify(fromUser(`${TEXT} ${'x'.repeat(70_000)}`));
    const response = await receiveWebhook(down)(
      request({ method: 'POST', body: big, headers: { 'x-hub-signature-256': signBody(big, APP_SECRET) } }),
      app.context('webhookReceive'),
    );
    expect(response.status).toBe(503);
    await host(() => ingestWorker(down)(JSON.parse(JSON.stringify(fromUser(TEXT))), app.context('ingest')));
    expect(thrown.length).toBeGreaterThan(0);
  }, 60_000);
});
