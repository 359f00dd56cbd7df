// What an operator wrote (through the management API) is part of the conversation the model is
// given once the bot answers again: an assistant turn in its place, marked as a human agent's.
// The real webhook, reply worker and management handlers, a loopback AI endpoint and Graph stub.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { OPERATOR_PREFIX } from '../../shared/bot/ai-responder';
import { RESET_ANSWER } from '../../shared/bot/texts';
import { startTestApp, type TestApp } from '../helpers/app';
import { startHttpStub, type HttpStub } from '../helpers/http-stub';
import { call } from '../helpers/manage-fixture';
import { notification, textMessage, value } from '../helpers/meta';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-ai-operator-tests-0123';
const SYSTEM_PROMPT = 'You are the test assistant.';

let app: TestApp;
let ai: HttpStub;
let h: ReturnType<typeof manageHandlers>;
let n = 0;
const newNumber = () => `3470${Date.now().toString().slice(-6)}${++n}`;

type Turn = { role: string; content: string };
const asked = (index = ai.requests.length - 1) => ai.requests[index]?.body['messages'] as Turn[];
const sys = { role: 'system', content: SYSTEM_PROMPT };
const user = (content: string) => ({ role: 'user', content });
const assistant = (content: string) => ({ role: 'assistant', content });
const operator = (content: string) => assistant(`${OPERATOR_PREFIX}${content}`);

beforeAll(async () => {
  ai = await startHttpStub((_req, index) => ({
    status: 200,
    body: {
      model: 'm',
      choices: [{ message: { role: 'assistant', content: `answer ${index + 1}` }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
    },
  }));
  app = await startTestApp({
    MANAGE_API_TOKEN: TOKEN,
    AI_ENDPOINT: `${ai.url}/v1`,
    AI_MODEL: 'm',
    AI_SYSTEM_PROMPT: SYSTEM_PROMPT,
  });
  h = manageHandlers(runtimeOf(app.services));
});

afterAll(async () => {
  await app?.close();
  await ai?.close();
});

beforeEach(() => {
  ai.requests = [];
});

/** An operator writes `text` to the user (which takes the conversation), then hands it back. */
async function operatorWrites(id: string, ...texts: string[]): Promise<void> {
  for (const text of texts) {
    const sent = await call(h.userMessages, { token: TOKEN, method: 'POST', params: { id }, body: { text } });
    expect(sent.status).toBe(201);
  }
  const back = await call(h.userHandoff, { token: TOKEN, method: 'DELETE', params: { id } });
  expect(back.status).toBe(200);
}

describe("an operator's messages in the AI's context", () => {
  it('gives the model what the operator wrote, in place, as marked assistant turns', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'where is my order?');
    const id = await userIdOf(app.services.data, waId);
    await operatorWrites(id, 'Hi, Ana here. It ships Monday.', 'Tracking follows by e-mail.');
    expect(ai.requests).toHaveLength(1);
    await app.userWrites(waId, 'which day again?');
    expect(ai.requests).toHaveLength(2);
    expect(asked()).toEqual([
      sys,
      user('where is my order?'),
      assistant('answer 1'),
      operator('Hi, Ana here. It ships Monday.'),
      operator('Tracking follows by e-mail.'),
      user('which day again?'),
    ]);
    // Stored as the operator wrote it: the mark is only in what the model is given.
    const stored = await app.services.data.manage.listMessages({ userId: id, limit: 10, after: null });
    expect(stored.items.filter((m) => m.role === 'operator').map((m) => m.text)).toEqual([
      'Tracking follows by e-mail.',
      'Hi, Ana here. It ships Monday.',
    ]);
  });

  it('keeps what the operator wrote after a reset, and nothing from before it', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'my name is Lena');
    const id = await userIdOf(app.services.data, waId);
    await operatorWrites(id, 'Noted, Lena.');
    await app.userWrites(waId, 'reset');
    expect(app.graph.sends().at(-1)?.body['text']).toMatchObject({ body: RESET_ANSWER });
    await operatorWrites(id, 'Your refund is on its way.');
    await app.userWrites(waId, 'thanks');
    expect(asked()).toEqual([sys, operator('Your refund is on its way.'), user('thanks')]);
  });

  it('reads them from the database as well (a burst longer than the worker reads)', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'is it in stock?');
    const id = await userIdOf(app.services.data, waId);
    await operatorWrites(id, 'Yes, two left.');
    ai.requests = [];
    // More than the worker reads (40 with the defaults): the history comes from the database.
    const burst = Array.from({ length: 45 }, (_, i) => textMessage(waId, `b${i + 1}`));
    const { status } = await app.post(notification(value({ contacts: [{ waId }], messages: burst })));
    expect(status).toBe(200);
    await app.drain();
    expect(asked(0)).toEqual([
      sys,
      user('is it in stock?'),
      assistant('answer 1'),
      operator('Yes, two left.'),
      user('b1'),
    ]);
  });
});
