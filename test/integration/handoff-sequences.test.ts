// Sequences around a handoff on the real handlers and the loopback Graph stub, on a clock the test
// moves: HANDOFF_HOURS at its edge with the user writing meanwhile, `stop` and `start` during a
// handoff, and what the user, the waiting list and the stats show after each.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { DEFAULT_ANSWER, START_ANSWER, STOP_ANSWER } from '../../shared/bot/texts';
import {
  ChatsSchema,
  ErrorSchema,
  StatsSchema,
  UserSchema,
  type MessageJson,
} from '../../shared/manage/schemas';
import { BOOTSTRAP_TOKEN_NAME } from '../../shared/manage/auth';
import { manageHandlers } from '../../functions/manage';
import { startTestApp, type TestApp } from '../helpers/app';
import { sentTextsOf } from '../helpers/graph-stub';
import { call, conversationOf, userApi } from '../helpers/manage-fixture';
import { textMessage, notification, value } from '../helpers/meta';
import { parseBody } from '../helpers/shapes';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-handoff-sequence-tests-0123';
const HOUR = 3_600_000;

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
let clock = Date.now();
let n = 0;
const newNumber = () => `3480${Date.now().toString().slice(-6)}${++n}`;

const api: ReturnType<typeof userApi> = (...args) => userApi(h, TOKEN)(...args);

const sentTexts = () => sentTextsOf(app.graph);

const messagesOf = (id: string): Promise<MessageJson[]> => conversationOf(h, TOKEN, id);

/** The user writes `text`, dated now on the test's clock (Meta's time), and the reply worker runs. */
async function writes(waId: string, text: string): Promise<void> {
  const message = { ...textMessage(waId, text), timestamp: String(Math.floor(clock / 1000)) };
  const { status } = await app.post(
    notification(value({ contacts: [{ waId, name: 'Lena' }], messages: [message] })),
  );
  expect(status).toBe(200);
  await app.drain();
}

const userOf = async (id: string) => parseBody(UserSchema, (await api('user', id, 'GET')).body);
const waitingIds = async () =>
  parseBody(
    ChatsSchema,
    (await call(h.chats, { token: TOKEN, query: { state: 'waiting', limit: '200' } })).body,
  ).items.map((c) => c.user.id);
const stats = async () => parseBody(StatsSchema, (await call(h.stats, { token: TOKEN })).body);

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN, HANDOFF_HOURS: '2' }, { now: () => new Date(clock) });
  h = manageHandlers(runtimeOf(app.services));
});

afterAll(async () => {
  await app?.close();
});

beforeEach(() => {
  clock = Date.now();
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
  app.graph.delayMs = 0;
});

describe('HANDOFF_HOURS at its edge, the user writing meanwhile', () => {
  it('holds until the last millisecond, then the bot answers the next message and not those written during the handoff', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    const taken = await api('userHandoff', id, 'POST');
    expect(taken.status).toBe(200);
    const takenAt = clock;
    app.graph.requests.length = 0;
    clock = takenAt + 2 * HOUR - 1;
    await writes(waId, 'anyone there?');
    expect(sentTexts()).toEqual([]);
    expect((await userOf(id)).handoff?.expiresAt).toBe(new Date(takenAt + 2 * HOUR).toISOString());
    expect(await waitingIds()).toContain(id);
    clock = takenAt + 2 * HOUR;
    expect((await userOf(id)).handoff).toBeNull();
    expect(await waitingIds()).not.toContain(id);
    await writes(waId, 'hello?');
    expect(sentTexts()).toEqual([DEFAULT_ANSWER]);
    const messages = await messagesOf(id);
    const during = messages.find((m) => m.text === 'anyone there?');
    expect(during?.status).toBe('read');
    // Answered once: the reply to "hello?", nothing for the message of the handoff.
    expect(messages.filter((m) => m.direction === 'outbound' && m.text === DEFAULT_ANSWER)).toHaveLength(2);
    const user = await userOf(id);
    expect(DEFAULT_ANSWER.startsWith(user.lastMessagePreview ?? '-')).toBe(true);
    expect(user.messageCount).toBe(messages.length);
  });

  it('an operator reply restarts the clock; the user writing does not', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    const takenAt = clock;
    clock = takenAt + HOUR;
    await writes(waId, 'still there?');
    expect((await userOf(id)).handoff?.expiresAt).toBe(new Date(takenAt + 2 * HOUR).toISOString());
    expect((await api('userMessages', id, 'POST', { text: 'yes' })).status).toBe(201);
    expect((await userOf(id)).handoff?.expiresAt).toBe(new Date(takenAt + 3 * HOUR).toISOString());
    app.graph.requests.length = 0;
    clock = takenAt + 3 * HOUR - 1;
    await writes(waId, 'ok');
    expect(sentTexts()).toEqual([]);
  });
});

describe('stop during a handoff, start after', () => {
  it('confirms both, refuses operator messages while opted out, and keeps the handoff', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    app.graph.requests.length = 0;
    const before = await stats();
    await writes(waId, 'stop');
    expect(sentTexts()).toEqual([STOP_ANSWER]);
    let user = await userOf(id);
    expect(user.optedOut).toBe(true);
    const refused = await api('userMessages', id, 'POST', { text: 'are you sure?' });
    expect(refused.status).toBe(409);
    expect(parseBody(ErrorSchema, refused.body).error.code).toBe('OPTED_OUT');
    await writes(waId, 'hola?');
    expect(sentTexts()).toEqual([STOP_ANSWER]);
    await writes(waId, 'start');
    expect(sentTexts()).toEqual([STOP_ANSWER, START_ANSWER]);
    user = await userOf(id);
    expect(user.optedOut).toBe(false);
    // The handoff holds: the bot stays silent, an operator can write again.
    await writes(waId, 'a question');
    expect(sentTexts()).toEqual([STOP_ANSWER, START_ANSWER]);
    expect((await api('userMessages', id, 'POST', { text: 'Ana here' })).status).toBe(201);
    const after = await stats();
    expect(after.messages.inbound - before.messages.inbound).toBe(4);
    expect(after.messages.outbound - before.messages.outbound).toBe(3);
    expect(after.users.optedOut).toBe(before.users.optedOut);
    const logged = app.logs.join('\n');
    for (const secret of [waId, 'Ana here', 'a question', 'are you sure'])
      expect(logged).not.toContain(secret);
  });
});

describe("the user's number changes during a handoff", () => {
  it("keeps the operator's handoff on the user, silent to the new number, and operators write to it", async () => {
    const oldNumber = newNumber();
    const newOne = newNumber();
    await writes(oldNumber, 'hola');
    const id = await userIdOf(app.services.data, oldNumber);
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    app.graph.requests.length = 0;
    const change = {
      from: oldNumber,
      id: `wamid.change.${++n}`,
      timestamp: String(Math.floor(clock / 1000)),
      type: 'system',
      system: { body: 'changed', wa_id: newOne, type: 'user_changed_number' },
    };
    expect(
      (await app.post(notification(value({ contacts: [{ waId: oldNumber }], messages: [change] })))).status,
    ).toBe(200);
    await app.drain();
    await writes(newOne, 'from my new number');
    expect(sentTexts()).toEqual([]);
    const user = await userOf(id);
    expect([user.waId, user.handoff?.by]).toEqual([newOne, BOOTSTRAP_TOKEN_NAME]);
    expect(await waitingIds()).toContain(id);
    expect((await api('userMessages', id, 'POST', { text: 'Ana here' })).status).toBe(201);
    expect(app.graph.sends().map((r) => r.body['to'])).toEqual([newOne]);
  });
});

describe('two operators at once', () => {
  it('both sends go out and are stored, each by its token; the conversation stays taken', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;
    app.graph.delayMs = 50;
    try {
      const [a, b, c] = await Promise.all([
        api('userMessages', id, 'POST', { text: 'first operator' }),
        api('userMessages', id, 'POST', { text: 'second operator' }),
        api('userHandoff', id, 'POST'),
      ]);
      expect([a.status, b.status, c.status]).toEqual([201, 201, 200]);
    } finally {
      app.graph.delayMs = 0;
    }
    expect(sentTexts().sort()).toEqual(['first operator', 'second operator']);
    const user = await userOf(id);
    expect(user.handoff).not.toBeNull();
    const ops = (await messagesOf(id)).filter((m) => m.role === 'operator');
    expect(ops.map((m) => m.text).sort()).toEqual(['first operator', 'second operator']);
    await writes(waId, 'thanks');
    expect(sentTexts()).toHaveLength(2);
  });

  it('a hand back and a send at once: whichever is last decides, and the bot never answers over the send', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    app.graph.requests.length = 0;
    const [sent, back] = await Promise.all([
      api('userMessages', id, 'POST', { text: 'one more thing' }),
      api('userHandoff', id, 'DELETE'),
    ]);
    expect([sent.status, back.status]).toEqual([201, 200]);
    const handedBack = (await userOf(id)).handoff === null;
    await writes(waId, 'ok');
    expect(sentTexts()).toEqual(handedBack ? ['one more thing', DEFAULT_ANSWER] : ['one more thing']);
  });
});

describe('an operator send Graph fails', () => {
  it('is stored failed, counted once, shown as the latest message; the same key sends nothing again, a new one sends', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;
    const before = await stats();
    const failing = { status: 500, body: { error: { code: 1, message: 'An unknown error occurred' } } };
    app.graph.sendResponses.push(failing, failing, failing, failing, failing);
    const keyed = (key: string) =>
      call(h.userMessages, {
        token: TOKEN,
        method: 'POST',
        params: { id },
        headers: { 'idempotency-key': key },
        body: { text: 'operator text' },
      });
    const first = await keyed('k-1');
    expect(first.status).toBe(502);
    const tries = app.graph.sends().length;
    const again = await keyed('k-1');
    expect(again.status).toBe(502);
    expect(app.graph.sends()).toHaveLength(tries);
    let after = await stats();
    expect([
      after.messages.outbound - before.messages.outbound,
      after.messages.failed - before.messages.failed,
    ]).toEqual([1, 1]);
    const user = await userOf(id);
    expect(user.lastMessagePreview).toBe('operator text');
    app.graph.sendResponses.length = 0;
    expect((await keyed('k-2')).status).toBe(201);
    after = await stats();
    expect([
      after.messages.outbound - before.messages.outbound,
      after.messages.failed - before.messages.failed,
    ]).toEqual([2, 1]);
    expect(app.logs.join('\n')).not.toContain('operator text');
  });
});

describe('an Idempotency-Key used again with another body', () => {
  it('refuses a template whose stored text is that of free text sent with the key (422)', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    const keyed = (body: unknown) =>
      call(h.userMessages, {
        token: TOKEN,
        method: 'POST',
        params: { id },
        headers: { 'idempotency-key': 'same' },
        body,
      });
    app.graph.requests.length = 0;
    expect((await keyed({ text: '[template] hello_world (en_US)' })).status).toBe(201);
    const second = await keyed({ template: { name: 'hello_world', language: 'en_US', parameters: [] } });
    expect(second.status).toBe(422);
    expect(app.graph.sends()).toHaveLength(1);
  });

  it('refuses template parameters that read the same when joined (422)', async () => {
    const waId = newNumber();
    await writes(waId, 'hola');
    const id = await userIdOf(app.services.data, waId);
    const keyed = (parameters: string[]) =>
      call(h.userMessages, {
        token: TOKEN,
        method: 'POST',
        params: { id },
        headers: { 'idempotency-key': 'same' },
        body: { template: { name: 'order_update', language: 'en', parameters } },
      });
    app.graph.requests.length = 0;
    expect((await keyed(['a · b'])).status).toBe(201);
    expect((await keyed(['a', 'b'])).status).toBe(422);
    expect(app.graph.sends()).toHaveLength(1);
  });
});
