// Human handoff end to end on the real handlers: the webhook and reply worker, the management API
// and a loopback Graph stub. Operators take a conversation, reply (text within 24 hours, templates
// outside), hand it back; the user's `human` command; lazy expiry; validation and audit.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { decideAndApply } from '../../shared/bot/decide';
import type { AiResponder } from '../../shared/bot/ports';
import type { AiUsage } from '../../shared/data';
import { processReplyJob } from '../../shared/bot/reply';
import { createLogger } from '../../shared/log';
import { DEFAULT_ANSWER, HUMAN_ANSWER, STOP_ANSWER } from '../../shared/bot/texts';
import { MongoClient } from 'mongodb';
import {
  AUDIT_KIND,
  createDataStore,
  HANDOFF_BY_USER,
  INDEXES,
  observeCommands,
  watchClient,
  type ObservedCommand,
} from '../../shared/data';
import { BOOTSTRAP_TOKEN_NAME } from '../../shared/manage/auth';
import { createToken } from '../../shared/manage/tokens';
import {
  ChatsSchema,
  ErrorSchema,
  MessageSchema,
  StatsSchema,
  UserSchema,
  type MessageJson,
} from '../../shared/manage/schemas';
import { manageHandlers } from '../../functions/manage';
import { startTestApp, type TestApp } from '../helpers/app';
import { userIdOf } from '../helpers/users';
import { answersOf, call, conversationOf, userApi } from '../helpers/manage-fixture';
import { checkExchange } from '../helpers/openapi-check';
import { openApiHandler } from '../../functions/openapi';
import {
  PHONE_NUMBER_ID,
  notification,
  nowSeconds,
  status,
  textNotification,
  value,
  wamid,
} from '../helpers/meta';
import { parseBody } from '../helpers/shapes';
import { accepted, sentTextsOf } from '../helpers/graph-stub';
import { storeWithWriterBefore } from '../helpers/interleave';

const TOKEN = 'manage-token-for-handoff-tests-0123';
const HOUR = 3_600_000;

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
let n = 0;

const newNumber = () => `3460${Date.now().toString().slice(-6)}${++n}`;

const sentTexts = () => sentTextsOf(app.graph);

const api: ReturnType<typeof userApi> = (...args) => userApi(h, TOKEN)(...args);

const messagesOf = (id: string): Promise<MessageJson[]> => conversationOf(h, TOKEN, id);

/**
 * A user who wrote before asks something; the bot decides to answer it, and `operator` acts while
 * the answer is prepared (after the read receipt), whose text is then "the bot talking over".
 * Returns the user's id and the id of the question.
 */
async function whileTheBotAnswers(
  operator: (userId: string) => Promise<void>,
  usage: AiUsage | null = null,
): Promise<{ id: string; waId: string; asked: string }> {
  const waId = newNumber();
  await app.userWrites(waId, 'hola', 'Lena');
  const id = await userIdOf(app.services.data, waId);
  const question = textNotification(waId, 'una pregunta', 'Lena');
  const { jobs } = await app.post(question.payload);
  app.queued.length = 0;
  app.graph.requests.length = 0;
  const ai: AiResponder = {
    window: 10,
    respond: async ({ preparing }) => {
      await preparing();
      await operator(id);
      return { text: 'the bot talking over', role: 'conversation', ai: usage, failure: null };
    },
  };
  for (const job of jobs) await processReplyJob({ ...app.services, ai }, job, createLogger(app.context()));
  return { id, waId, asked: question.message.id };
}

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN, HANDOFF_HOURS: '2' });
  h = manageHandlers(runtimeOf(app.services));
});

afterAll(async () => {
  await app?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
});

describe('an operator takes over a conversation', () => {
  it('takes, replies, keeps the bot silent, hands back, and the bot answers again', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hola', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    expect(sentTexts()).toEqual([DEFAULT_ANSWER]);

    const taken = await api('userHandoff', id, 'POST');
    expect(taken.status).toBe(200);
    const user = parseBody(UserSchema, taken.body);
    expect(user.handoff).toMatchObject({ by: BOOTSTRAP_TOKEN_NAME });
    expect(Date.parse(user.handoff!.expiresAt) - Date.parse(user.handoff!.since)).toBe(2 * HOUR);
    expect(
      parseBody(UserSchema, (await call(h.user, { token: TOKEN, params: { id } })).body).handoff,
    ).not.toBeNull();

    // The operator replies: it goes to Graph as text, is stored with role operator and shows at once.
    app.graph.requests.length = 0;
    const sent = await api('userMessages', id, 'POST', { text: 'Hi Lena, Ana from support here.' });
    expect(sent.status).toBe(201);
    const message = parseBody(MessageSchema, sent.body);
    expect(message).toMatchObject({
      userId: id,
      direction: 'outbound',
      type: 'text',
      text: 'Hi Lena, Ana from support here.',
      status: 'sent',
      role: 'operator',
      by: BOOTSTRAP_TOKEN_NAME,
    });
    expect(message.waMessageId).toMatch(/^wamid\.out\./);
    const [request] = app.graph.sends();
    expect(request?.path).toBe(`/v25.0/${PHONE_NUMBER_ID}/messages`);
    expect(request?.body).toMatchObject({
      to: waId,
      type: 'text',
      text: { body: 'Hi Lena, Ana from support here.' },
    });
    expect((await messagesOf(id))[0]).toEqual(message);

    // Its delivery status is tracked by wamid like any answer.
    await app.post(notification(value({ statuses: [status(message.waMessageId!, 'delivered', waId)] })));
    expect((await messagesOf(id))[0]?.status).toBe('delivered');

    // The user writes again: stored, marked read, counted, but no bot answer.
    app.graph.requests.length = 0;
    const before = parseBody(
      UserSchema,
      (await call(h.user, { token: TOKEN, params: { id } })).body,
    ).messageCount;
    await app.userWrites(waId, 'gracias, espero', 'Lena');
    expect(app.graph.sends()).toEqual([]);
    expect(app.graph.receipts()).toHaveLength(1);
    const after = parseBody(UserSchema, (await call(h.user, { token: TOKEN, params: { id } })).body);
    expect(after.messageCount).toBe(before + 1);
    // (Meta's timestamps are whole seconds: find it by text, not by position.)
    const latest = (await messagesOf(id)).find((m) => m.text === 'gracias, espero');
    expect(latest).toMatchObject({ direction: 'inbound', text: 'gracias, espero', status: 'read' });

    // Handed back: the bot answers the next message.
    const back = await api('userHandoff', id, 'DELETE');
    expect(back.status).toBe(200);
    expect(parseBody(UserSchema, back.body).handoff).toBeNull();
    await app.userWrites(waId, 'otra pregunta', 'Lena');
    expect(sentTexts()).toEqual([DEFAULT_ANSWER]);

    // Every action is audited with who, what and when, never the text.
    const audit = await app.services.data.personal.auditTrail(1000);
    const mine = audit.filter((e) => e.userId === id);
    expect(mine.map((e) => e.reason)).toEqual(['handoff', 'send', 'handback']);
    for (const e of mine) {
      expect(e.kind).toBe(AUDIT_KIND);
      expect(e.payload).toMatchObject({ tokenName: BOOTSTRAP_TOKEN_NAME, userId: id });
      expect(JSON.stringify(e.payload)).not.toContain('Ana from support');
    }
  });

  it('never calls the AI for a handed-over user, and stop/start still win', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hello', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    await api('userHandoff', id, 'POST');
    let aiCalls = 0;
    const ai: AiResponder = {
      window: 10,
      respond: async () => {
        aiCalls++;
        return null;
      },
    };
    const services = { ...app.services, ai };
    const user = (await app.services.data.users.getUser(id))!;
    const message = (await messagesOf(id))[0]!;
    const asMessage = (await app.services.data.messages.getMessage(message.id))!;
    expect((await decideAndApply(services, user, asMessage)).decision).toEqual({ kind: 'none' });
    expect(aiCalls).toBe(0);

    app.graph.requests.length = 0;
    await app.userWrites(waId, 'stop', 'Lena');
    expect(sentTexts()).toEqual([STOP_ANSWER]);
  });

  it('stays silent when an operator restarted a handoff that the worker read as expiring', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hello', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    const { handoff, users } = app.services.data;
    const start = new Date();
    await handoff.take(id, BOOTSTRAP_TOKEN_NAME, start, 2);
    // The reply worker read the user (its copy of the handoff started at `start`); just before
    // the two hours end, the operator replies and so restarts the handoff's clock.
    const read = (await users.getUser(id))!;
    const restart = new Date(start.getTime() + 2 * HOUR - 1_000);
    await handoff.take(id, BOOTSTRAP_TOKEN_NAME, restart, 2);
    // The worker decides after the first two hours, with the copy it read.
    const later = new Date(start.getTime() + 2 * HOUR + 1_000);
    const services = { ...app.services, now: () => later };
    const message = (await messagesOf(id)).find((m) => m.direction === 'inbound')!;
    const asMessage = (await app.services.data.messages.getMessage(message.id))!;
    expect((await decideAndApply(services, read, asMessage)).decision).toEqual({ kind: 'none' });
    expect((await users.getUser(id))?.handoff?.activeAt).toEqual(restart);
  });
});

describe('an operator and the bot at once', () => {
  // The bot decided to answer (no handoff yet); while its answer is prepared an operator takes the
  // conversation or writes: the bot's answer must not follow the operator's.
  for (const operator of ['takes', 'sends'] as const) {
    it(`the bot does not send an answer prepared before an operator ${operator === 'takes' ? 'took the conversation' : 'wrote'}`, async () => {
      let operatorStatus = 0;
      const before = await app.services.data.stats.totals();
      const usage = {
        provider: 'openai-compatible',
        model: 'm',
        promptTokens: 20,
        completionTokens: 7,
        totalTokens: 27,
        latencyMs: 5,
      };
      const { id, asked } = await whileTheBotAnswers(async (userId) => {
        const r =
          operator === 'takes'
            ? await api('userHandoff', userId, 'POST')
            : await api('userMessages', userId, 'POST', { text: 'Ana here, one moment.' });
        operatorStatus = r.status;
      }, usage);
      expect(operatorStatus).toBe(operator === 'takes' ? 200 : 201);
      expect(sentTexts()).toEqual(operator === 'takes' ? [] : ['Ana here, one moment.']);
      const messages = await messagesOf(id);
      expect(messages.map((m) => m.text)).not.toContain('the bot talking over');
      // The user's message is settled (read, counted), not left waiting for an answer.
      expect((await app.services.data.messages.getMessage(asked))?.replyState).toBe('none');
      // The model's tokens were spent all the same: counted in the stats.
      const after = await app.services.data.stats.totals();
      expect([after.aiRequests - before.aiRequests, after.aiTokens - before.aiTokens]).toEqual([1, 27]);
    });
  }
});

describe('an operator takes the conversation and hands it back while the bot answers', () => {
  // Taken and handed back (or written to and handed back) while the model answered: the answer
  // was prepared without what the operator did or said, and the handoff it missed is over by the
  // time it would go out. It is dropped all the same, as when the handoff is still in force.
  for (const operator of ['takes', 'sends'] as const) {
    it(`drops an answer prepared before an operator ${operator === 'takes' ? 'took' : 'wrote to'} the conversation and handed it back`, async () => {
      const statuses: number[] = [];
      const { id, waId, asked } = await whileTheBotAnswers(async (userId) => {
        const r =
          operator === 'takes'
            ? await api('userHandoff', userId, 'POST')
            : await api('userMessages', userId, 'POST', { text: 'Ana here: it ships today.' });
        statuses.push(r.status, (await api('userHandoff', userId, 'DELETE')).status);
      });
      expect(statuses).toEqual([operator === 'takes' ? 200 : 201, 200]);
      expect(sentTexts()).toEqual(operator === 'takes' ? [] : ['Ana here: it ships today.']);
      const messages = await messagesOf(id);
      expect(messages.map((m) => m.text)).not.toContain('the bot talking over');
      expect((await app.services.data.messages.getMessage(asked))?.replyState).toBe('none');
      // Handed back: the user's next message is answered by the bot again.
      app.graph.requests.length = 0;
      await app.userWrites(waId, 'thanks', 'Lena');
      expect(app.graph.sends()).toHaveLength(1);
    });
  }
});

describe('an operator and a built-in answer at once', () => {
  // No AI: the bot read the user (no handoff) and decided on a built-in answer; while its read
  // receipt goes out, an operator takes the conversation or writes. Only `stop` and `start` are
  // confirmed whatever an operator did.
  const cases = [
    { operator: 'takes', text: 'una pregunta', answered: [] },
    { operator: 'sends', text: 'help', answered: ['Ana here, one moment.'] },
    { operator: 'takes', text: 'stop', answered: [STOP_ANSWER] },
  ] as const;
  for (const { operator, text, answered } of cases) {
    it(`"${text}" while an operator ${operator === 'takes' ? 'takes the conversation' : 'writes'}: ${answered.length ? 'answered' : 'no answer'}`, async () => {
      const waId = newNumber();
      await app.userWrites(waId, 'hola', 'Lena');
      const id = await userIdOf(app.services.data, waId);
      const { jobs } = await app.post(textNotification(waId, text, 'Lena').payload);
      app.queued.length = 0;
      app.graph.requests.length = 0;
      let operatorStatus = 0;
      app.graph.beforeReceipt = async () => {
        const r =
          operator === 'takes'
            ? await api('userHandoff', id, 'POST')
            : await api('userMessages', id, 'POST', { text: 'Ana here, one moment.' });
        operatorStatus = r.status;
      };
      for (const job of jobs) await processReplyJob(app.services, job, createLogger(app.context()));
      expect(app.graph.beforeReceipt).toBeNull();
      expect(operatorStatus).toBe(operator === 'takes' ? 200 : 201);
      expect(sentTexts()).toEqual(answered);
      const asked = (await messagesOf(id)).find((m) => m.text === text)!;
      expect((await app.services.data.messages.getMessage(asked.id))?.replyState).toBe(
        text === 'stop' ? 'sent' : 'none',
      );
    });
  }
});

describe('an operator send and an erase at once', () => {
  it('answers 404 when the erase began right after the sent message was stored: nothing of the user is left', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hola', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;
    const sent = wamid();
    app.graph.sendResponses.push(accepted(sent));
    // The send stored its message; the erase runs before the send reads it back for its answer.
    const { store, ran } = storeWithWriterBefore(
      app.database.db,
      'messages',
      async () => {
        expect(await app.services.data.personal.eraseUser(id)).not.toBeNull();
      },
      'findOne',
      (filter) => (filter as { _id?: unknown })._id === sent,
    );
    const handlers = manageHandlers(runtimeOf({ ...app.services, data: store }));
    const r = await call(handlers.userMessages, {
      token: TOKEN,
      method: 'POST',
      params: { id },
      body: { text: 'Ana here.' },
    });
    expect(ran()).toBe(1);
    expect(r.status).toBe(404);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('NOT_FOUND');
    // Graph had it (it went out); it was taken back with the user.
    expect(sentTexts()).toEqual(['Ana here.']);
    expect(await app.services.data.messages.getMessage(sent)).toBeNull();
    expect((await api('user', id, 'GET')).status).toBe(404);
  });
});

describe('an operator and the welcome at once', () => {
  it('sends no welcome to a user an operator took before it went out', async () => {
    const waId = newNumber();
    const welcome = { from: waId, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
    const { jobs } = await app.post(
      notification(value({ contacts: [{ waId, name: 'New' }], messages: [welcome] })),
    );
    app.queued.length = 0;
    expect(jobs).toMatchObject([{ kind: 'welcome' }]);
    const id = await userIdOf(app.services.data, waId);
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    for (const job of jobs) await app.runJob(job);
    expect(app.graph.sends()).toEqual([]);
    expect(await messagesOf(id)).toEqual([]);
  });
});

describe('a user whose erase is under way', () => {
  it('is not taken, handed back, messaged or exported: 404, nothing sent, no audit entry', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hola', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    // Another operator's erase has begun (its mark) and is deleting the user's data.
    await app.database.db
      .collection('users')
      .updateOne({ _id: id as never }, { $set: { erasing: true, erasingSince: new Date() } });
    app.graph.requests.length = 0;
    const answers = [
      await api('userHandoff', id, 'POST'),
      await api('userHandoff', id, 'DELETE'),
      await api('userMessages', id, 'POST', { text: 'are you still there?' }),
      await api('userMessages', id, 'POST', {
        template: { name: 'hello_world', language: 'en_US', parameters: [] },
      }),
      await call(h.userExport, { token: TOKEN, params: { id } }),
      await call(h.user, { token: TOKEN, params: { id } }),
    ];
    expect(answers.map((a) => a.status)).toEqual([404, 404, 404, 404, 404, 404]);
    expect(app.graph.sends()).toEqual([]);
    const audit = await app.services.data.personal.auditTrail(1000);
    expect(audit.filter((e) => e.userId === id)).toEqual([]);
    expect((await app.services.data.users.getUser(id))?.handoff).toBeNull();
  });
});

describe('the human command', () => {
  it('hands the conversation over with one confirmation and shows it as waiting', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'Human!', 'Lena');
    const id = await userIdOf(app.services.data, waId);
    expect(sentTexts()).toEqual([HUMAN_ANSWER]);
    const user = parseBody(UserSchema, (await call(h.user, { token: TOKEN, params: { id } })).body);
    expect(user.handoff?.by).toBe('user');

    app.graph.requests.length = 0;
    await app.userWrites(waId, 'agent', 'Lena');
    await app.userWrites(waId, 'is anyone there?', 'Lena');
    expect(app.graph.sends()).toEqual([]);

    const waiting = await call(h.chats, { token: TOKEN, query: { state: 'waiting' } });
    expect(waiting.status).toBe(200);
    const items = parseBody(ChatsSchema, waiting.body).items;
    const mine = items.find((c) => c.user.id === id);
    // (Meta's whole-second timestamps can order the last two messages either way.)
    expect(mine?.lastMessage?.userId).toBe(id);
    expect(items.every((c) => c.user.handoff !== null)).toBe(true);
  });
});

describe('the waiting list', () => {
  it('lists handed-over conversations longest-waiting first, in pages, without expired ones', async () => {
    const { data } = app.services;
    const now = Date.now();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const waId = newNumber();
      await app.userWrites(waId, `waiting ${i}`, 'Lena');
      ids.push(await userIdOf(app.services.data, waId));
    }
    const expiredWaId = newNumber();
    await app.userWrites(expiredWaId, 'long ago', 'Lena');
    const expired = await userIdOf(app.services.data, expiredWaId);
    // Handed over at known times: 90, 60 and 30 minutes ago; one 3 hours ago (HANDOFF_HOURS is 2).
    await data.handoff.take(ids[2]!, 'ops', new Date(now - 90 * 60_000), 2);
    await data.handoff.take(ids[0]!, 'ops', new Date(now - 60 * 60_000), 2);
    await data.handoff.take(ids[1]!, 'ops', new Date(now - 30 * 60_000), 2);
    await data.handoff.take(expired, 'ops', new Date(now - 3 * HOUR), 2);

    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const r = await call(h.chats, {
        token: TOKEN,
        query: { state: 'waiting', limit: '2', ...(cursor ? { cursor } : {}) },
      });
      const page = parseBody(ChatsSchema, r.body);
      seen.push(...page.items.map((c) => c.user.id));
      cursor = page.nextCursor;
    } while (cursor);
    const order = seen.filter((id) => ids.includes(id) || id === expired);
    expect(order).toEqual([ids[2], ids[0], ids[1]]);

    // Expired: the user is answered by the bot again, and the handoff is gone.
    expect(
      parseBody(UserSchema, (await call(h.user, { token: TOKEN, params: { id: expired } })).body).handoff,
    ).toBeNull();
    app.graph.requests.length = 0;
    await app.userWrites(expiredWaId, 'still there?', 'Lena');
    expect(sentTexts()).toEqual([DEFAULT_ANSWER]);
    expect((await data.users.getUser(expired))?.handoff).toBeNull();

    // Without state the chats are the latest ones, as before.
    const latest = await call(h.chats, { token: TOKEN, query: { limit: '1' } });
    expect(parseBody(ChatsSchema, latest.body).items[0]?.user.id).toBe(expired);
    expect((await call(h.chats, { token: TOKEN, query: { state: 'open' } })).status).toBe(400);
  });
});

describe('operator messages', () => {
  async function userWithOldMessage(hoursAgo: number): Promise<string> {
    const waId = newNumber();
    const at = new Date(Date.now() - hoursAgo * HOUR);
    const { user } = await app.services.data.users.resolve({ waId, bsuid: null, name: 'Old' }, at);
    const id = `wamid.old.${waId}`;
    await app.services.data.maintenance.importMessages([
      {
        id,
        userId: user.id,
        waMessageId: id,
        direction: 'inbound',
        text: 'an old question',
        createdAt: at,
        phoneNumberId: PHONE_NUMBER_ID,
      },
    ]);
    return user.id;
  }

  it('refuses free text outside the 24-hour window and sends a template instead', async () => {
    const id = await userWithOldMessage(25);
    const refused = await api('userMessages', id, 'POST', { text: 'are you still there?' });
    expect(refused.status).toBe(409);
    expect(parseBody(ErrorSchema, refused.body).error.code).toBe('OUTSIDE_WINDOW');
    expect(app.graph.sends()).toEqual([]);
    expect(await messagesOf(id)).toHaveLength(1);

    const sent = await api('userMessages', id, 'POST', {
      template: { name: 'order_update', language: 'en_US', parameters: ['Lena', '#1234'] },
    });
    expect(sent.status).toBe(201);
    const template = parseBody(MessageSchema, sent.body);
    expect(template).toMatchObject({ type: 'template', role: 'operator', status: 'sent' });
    expect(template.text).toContain('order_update');
    expect(app.graph.sends()[0]?.body).toMatchObject({
      type: 'template',
      template: {
        name: 'order_update',
        language: { code: 'en_US' },
        components: [
          {
            type: 'body',
            parameters: [
              { type: 'text', text: 'Lena' },
              { type: 'text', text: '#1234' },
            ],
          },
        ],
      },
    });
  });

  it('allows free text within 24 hours of the last message', async () => {
    const id = await userWithOldMessage(23);
    const sent = await api('userMessages', id, 'POST', { text: 'Sorry for the wait!' });
    expect(sent.status).toBe(201);
  });

  it('answers 400 naming the field, and sends, stores and audits nothing', async () => {
    const id = await userWithOldMessage(1);
    const auditBefore = (await app.services.data.personal.auditTrail(1000)).length;
    const cases: [unknown, RegExp][] = [
      [{}, /"text"/],
      [{ text: 5 }, /"text"/],
      [{ text: '   ' }, /"text"/],
      [{ text: 'x'.repeat(4097) }, /"text".*4096/],
      [{ text: 'a', template: { name: 'x', language: 'en' } }, /"text"/],
      [{ template: { name: 'Bad Name', language: 'en' } }, /"template\.name"/],
      [{ template: { name: 'ok', language: 'english!' } }, /"template\.language"/],
      [{ template: { name: 'ok', language: 'en', parameters: [1] } }, /"template\.parameters\.0"/],
      // What Graph refuses in a parameter (code 132018) is refused here, before anything is sent.
      [
        { template: { name: 'ok', language: 'en', parameters: ['Lena', 'line one\nline two'] } },
        /"template\.parameters\.1".*line breaks/,
      ],
      [{ template: { name: 'ok', language: 'en', parameters: ['a\tb'] } }, /"template\.parameters\.0".*tabs/],
      [
        { template: { name: 'ok', language: 'en', parameters: ['a     b'] } },
        /"template\.parameters\.0".*4 spaces/,
      ],
      [{ text: 'hi', extra: true }, /"extra"/],
      ['{not json', /JSON/],
      // A field given twice: JSON.parse would keep the last, but which one was meant is unknown.
      ['{"text": "send this", "text" : "or this?"}', /"text": must be given once/],
      [
        '{"template": {"name": "ok", "language": "en", "name": "other"}}',
        /"template\.name": must be given once/,
      ],
    ];
    for (const [body, message] of cases) {
      const r = await api('userMessages', id, 'POST', body);
      expect(r.status, JSON.stringify(body).slice(0, 60)).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringMatching(message),
      });
    }
    expect((await api('userMessages', id, 'POST', { text: 'x'.repeat(4096) })).status).toBe(201);
    expect(app.graph.sends()).toHaveLength(1);
    expect(await messagesOf(id)).toHaveLength(2);
    expect((await app.services.data.personal.auditTrail(1000)).length).toBe(auditBefore + 1);
    // The same key in two objects is no repetition; nor is a key-like string among values.
    const twice = await api(
      'userMessages',
      id,
      'POST',
      '{"template": {"name": "ok", "language": "en", "parameters": ["name", "language"]}}',
    );
    expect(twice.status, JSON.stringify(twice.body)).toBe(201);
    // Four spaces in a row and line breaks in free text are WhatsApp's to take.
    const spaced = await api('userMessages', id, 'POST', {
      template: { name: 'ok', language: 'en', parameters: ['a    b'] },
    });
    expect(spaced.status, JSON.stringify(spaced.body)).toBe(201);
    expect((await api('userMessages', id, 'POST', { text: 'line one\n\tline two' })).status).toBe(201);
  });

  it('counts the text and template limits in characters, not UTF-16 units', async () => {
    const id = await userWithOldMessage(1);
    const emoji = '\u{1F600}';
    const messageCount = async () => (await app.services.data.users.getUser(id))?.messageCount;
    const before = await messageCount();
    for (const [body, field] of [
      [{ text: emoji.repeat(4097) }, 'text'],
      [
        { template: { name: 'order_update', language: 'en', parameters: [emoji.repeat(1025)] } },
        'template.parameters.0',
      ],
    ] as const) {
      const r = await api('userMessages', id, 'POST', body);
      expect(r.status).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringMatching(
          new RegExp(`^invalid body field "${field}": must be at most \\d+ characters$`),
        ),
      });
    }
    expect(app.graph.sends()).toEqual([]);
    expect(await messageCount()).toBe(before);

    // 2,049 emoji are 4,098 UTF-16 units but 2,049 characters; 4,096 emoji are exactly the limit.
    for (const text of [emoji.repeat(2049), emoji.repeat(4096)]) {
      const sent = await api('userMessages', id, 'POST', { text });
      expect(sent.status).toBe(201);
      expect(parseBody(MessageSchema, sent.body).text).toBe(text);
    }
    const template = { name: 'order_update', language: 'en', parameters: [emoji.repeat(1024)] };
    expect((await api('userMessages', id, 'POST', { template })).status).toBe(201);
    expect(app.graph.sends().map((r) => r.body['type'])).toEqual(['text', 'text', 'template']);
    expect(await messageCount()).toBe((before ?? 0) + 3);
  });

  it('refuses control characters in the text or a template parameter, naming the field: nothing sent, stored, taken or audited', async () => {
    const id = await userWithOldMessage(1);
    const auditBefore = (await app.services.data.personal.auditTrail(1000)).length;
    const before = await app.services.data.users.getUser(id);
    const template = (parameter: string) => ({
      template: { name: 'order_update', language: 'en', parameters: ['ok', parameter] },
    });
    // NUL, BEL, vertical tab, form feed, ESC (a pasted terminal colour), DEL, C1 (NEL, CSI).
    const controls = ['\u0000', '\u0007', '\u000b', '\u000c', '\u001b[31m', '\u007f', '\u0085', '\u009b'];
    for (const c of controls) {
      for (const [body, field] of [
        [{ text: `hello ${c} there` }, 'text'],
        [template(`order ${c}`), 'template.parameters.1'],
      ] as const) {
        const r = await api('userMessages', id, 'POST', body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
          code: 'INVALID_INPUT',
          message: `invalid body field "${field}": must not contain control characters (other than tab, line feed and carriage return)`,
        });
      }
    }
    expect(app.graph.sends()).toEqual([]);
    expect(await messagesOf(id)).toHaveLength(1);
    expect((await app.services.data.users.getUser(id))?.handoff).toEqual(before?.handoff);
    expect((await app.services.data.personal.auditTrail(1000)).length).toBe(auditBefore);

    // Tab, line feed and carriage return are text; so are other invisible characters (ZWJ in an emoji).
    const text = 'Line one\r\nLine two\tend \u{1F469}\u200d\u{1F4BB}';
    const sent = await api('userMessages', id, 'POST', { text });
    expect(sent.status).toBe(201);
    expect(parseBody(MessageSchema, sent.body).text).toBe(text);
    expect(sentTexts()).toEqual([text]);
  });

  it('answers 404 for an unknown user on every handoff route', async () => {
    for (const [handler, method, body] of [
      ['userHandoff', 'POST', undefined],
      ['userHandoff', 'DELETE', undefined],
      ['userMessages', 'POST', { text: 'hi' }],
    ] as const) {
      const r = await api(handler, 'u_unknown', method, body);
      expect(r.status).toBe(404);
    }
    expect(app.graph.sends()).toEqual([]);
    const noToken = await call(h.userHandoff, { token: null, method: 'POST', params: { id: 'x' } });
    expect(noToken.status).toBe(401);
  });

  it('records a message Graph refuses as failed, and maps the window error to 409', async () => {
    const id = await userWithOldMessage(1);
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Message undeliverable' } },
    });
    const failed = await api('userMessages', id, 'POST', { text: 'will fail' });
    expect(failed.status).toBe(502);
    // The operator is told what happened, not "internal error", with Graph's code and title: an
    // undeliverable message (131026) is told from a policy block (368) without the logs.
    expect(failed.body).toEqual({
      error: {
        code: 'UPSTREAM_FAILED',
        message:
          'WhatsApp did not accept the message, or did not answer (it may then still arrive): it is stored as failed. ' +
          'Graph: code 131026, "Message undeliverable".',
      },
    });
    const stored = (await messagesOf(id))[0];
    expect(stored).toMatchObject({ text: 'will fail', status: 'failed', role: 'operator' });
    // The stored message keeps the same code and title.
    expect((await app.services.data.messages.getMessage(stored!.id))?.error).toEqual({
      code: 131026,
      title: 'Message undeliverable',
    });

    // Graph's own words are bounded, on one line, and keep no number or token they may echo.
    app.graph.sendResponses.push({
      status: 400,
      body: {
        error: {
          code: 368,
          error_user_title:
            'Temporarily blocked for policies violations:\n to +49 151 2345 6789 with EAAGm0PX4ZCpsBAKZAZBcdefghijklmnopqrstuvw ' +
            'lorem '.repeat(60),
        },
      },
    });
    const blocked = parseBody(
      ErrorSchema,
      (await api('userMessages', id, 'POST', { text: 'blocked' })).body,
    ).error;
    expect(blocked.message).toMatch(
      /stored as failed\. Graph: code 368, "Temporarily blocked for policies violations: to \*\*\* with \*\*\* [lorem ]+…"\.$/,
    );
    expect(blocked.message).not.toMatch(/151|EAAG/);
    expect(blocked.message.length).toBeLessThan(400);

    // An expired token (401, code 190) is said to be the deployment's configuration, not the message.
    app.graph.sendResponses.push({
      status: 401,
      body: { error: { code: 190, type: 'OAuthException', message: 'Error validating access token' } },
    });
    const token = await api('userMessages', id, 'POST', { text: 'no token' });
    expect(token.status).toBe(502);
    const said = parseBody(ErrorSchema, token.body).error;
    expect(said.code).toBe('UPSTREAM_FAILED');
    expect(said.message).toMatch(
      /access token \(WHATSAPP_ACCESS_TOKEN expired.*Nothing went out.*Graph: code 190, "Error validating access token"\.$/,
    );
    expect((await messagesOf(id))[0]).toMatchObject({ text: 'no token', status: 'failed' });

    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131047, message: 'Re-engagement message' } },
    });
    const outside = await api('userMessages', id, 'POST', { text: 'too late' });
    expect(outside.status).toBe(409);
    expect(parseBody(ErrorSchema, outside.body).error.code).toBe('OUTSIDE_WINDOW');
  });

  it('leaves no trace when Graph refuses for the window (131047): nothing stored, counted, taken or audited', async () => {
    const { data } = app.services;
    const id = await userWithOldMessage(1);
    const stats = async () => parseBody(StatsSchema, (await call(h.stats, { token: TOKEN })).body).messages;
    const userNow = async () =>
      parseBody(UserSchema, (await call(h.user, { token: TOKEN, params: { id } })).body);
    const audits = async () => (await data.personal.auditTrail(1000)).filter((e) => e.userId === id);
    const refuse = () =>
      app.graph.sendResponses.push({
        status: 400,
        body: { error: { code: 131047, message: 'Re-engagement message' } },
      });
    const before = { stats: await stats(), user: await userNow(), messages: await messagesOf(id) };
    expect(before.user.handoff).toBeNull();

    const unchanged = async () => {
      expect(await messagesOf(id)).toEqual(before.messages);
      expect(await userNow()).toEqual(before.user);
      expect(await stats()).toEqual(before.stats);
      expect(await audits()).toEqual([]);
    };

    refuse();
    const text = await api('userMessages', id, 'POST', { text: 'too late' });
    expect(text.status).toBe(409);
    expect(parseBody(ErrorSchema, text.body).error).toMatchObject({
      code: 'OUTSIDE_WINDOW',
      message: expect.stringMatching(/24-hour window/),
    });
    await unchanged();

    refuse();
    const template = await api('userMessages', id, 'POST', {
      template: { name: 'order_update', language: 'en' },
    });
    expect(template.status).toBe(409);
    const templateError = parseBody(ErrorSchema, template.body).error;
    expect(templateError.code).toBe('OUTSIDE_WINDOW');
    expect(templateError.message).toMatch(/template.*re-engagement/);
    expect(templateError.message).not.toMatch(/free text/);
    await unchanged();
    expect(app.graph.sends()).toHaveLength(2);

    // A conversation handed over before (here by the user) stays exactly as it was.
    const asked = await data.handoff.take(id, HANDOFF_BY_USER, new Date(Date.now() - 60_000), 2);
    const handedOver = await userNow();
    expect(handedOver.handoff).toMatchObject({ by: 'user', since: asked?.user.handoff?.since.toISOString() });
    refuse();
    expect((await api('userMessages', id, 'POST', { text: 'still too late' })).status).toBe(409);
    expect(await userNow()).toEqual(handedOver);
    expect(await messagesOf(id)).toEqual(before.messages);
    expect(await stats()).toEqual(before.stats);
    expect(await audits()).toEqual([]);

    // A refusal that is Graph's failure (502) is still stored as failed, counted, taken and audited.
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Undeliverable' } },
    });
    expect((await api('userMessages', id, 'POST', { text: 'will fail' })).status).toBe(502);
    expect((await messagesOf(id))[0]).toMatchObject({ text: 'will fail', status: 'failed' });
    const after = await stats();
    expect(after).toMatchObject({
      total: before.stats.total + 1,
      outbound: before.stats.outbound + 1,
      failed: before.stats.failed + 1,
    });
    expect((await userNow()).handoff).toMatchObject({ by: BOOTSTRAP_TOKEN_NAME });
    expect((await audits()).map((e) => e.reason)).toEqual(['send']);
  });

  it("sends a template, never free text, to a user who only opened the chat (through the welcome's number)", async () => {
    const waId = newNumber();
    const businessNumber = '109876543210987';
    const welcome = { from: waId, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
    const opened = value({ contacts: [{ waId, name: 'New' }], messages: [welcome] });
    const payload = notification({
      ...opened,
      metadata: { ...opened.metadata, phone_number_id: businessNumber },
    });
    expect((await app.post(payload)).status).toBe(200);
    await app.drain();
    const id = await userIdOf(app.services.data, waId);
    expect(await messagesOf(id)).toHaveLength(1); // the welcome
    app.graph.requests.length = 0;

    const text = await api('userMessages', id, 'POST', { text: 'hello there' });
    expect(text.status).toBe(409);
    expect(parseBody(ErrorSchema, text.body).error.code).toBe('OUTSIDE_WINDOW');
    expect(app.graph.sends()).toEqual([]);

    const sent = await api('userMessages', id, 'POST', {
      template: { name: 'order_update', language: 'en_US', parameters: [] },
    });
    expect(sent.status).toBe(201);
    expect(app.graph.sends().map((r) => r.path)).toEqual([
      expect.stringContaining(`/${businessNumber}/messages`),
    ]);
    expect(parseBody(MessageSchema, sent.body)).toMatchObject({ type: 'template', status: 'sent' });
  });

  it('sends free text through the business number the user last wrote to', async () => {
    const waId = newNumber();
    const other = '109876543210988';
    const wrote = (phoneNumberId: string, text: string, timestamp: string) => {
      const base = value({
        contacts: [{ waId, name: 'Two numbers' }],
        messages: [{ from: waId, id: wamid(), timestamp, type: 'text', text: { body: text } }],
      });
      return notification({ ...base, metadata: { ...base.metadata, phone_number_id: phoneNumberId } });
    };
    expect((await app.post(wrote(PHONE_NUMBER_ID, 'to the first number', nowSeconds(-120)))).status).toBe(
      200,
    );
    expect((await app.post(wrote(other, 'then to the second', nowSeconds()))).status).toBe(200);
    await app.drain();
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;

    expect((await api('userMessages', id, 'POST', { text: 'an operator here' })).status).toBe(201);
    expect(app.graph.sends().map((r) => r.path)).toEqual([expect.stringContaining(`/${other}/messages`)]);
  });

  it('refuses any message to a user known only from migrated history (no business number), leaving no trace', async () => {
    const waId = newNumber();
    const at = new Date(Date.now() - HOUR);
    const { user } = await app.services.data.users.resolve({ waId, bsuid: null, name: 'Legacy' }, at);
    await app.services.data.maintenance.importMessages([
      {
        id: `legacy:${waId}`,
        userId: user.id,
        waMessageId: null,
        direction: 'inbound',
        text: 'old',
        createdAt: at,
      },
    ]);
    const before = await call(h.stats, { token: TOKEN });
    for (const body of [
      { text: 'hi' },
      { template: { name: 'order_update', language: 'en_US', parameters: [] } },
    ]) {
      const r = await api('userMessages', user.id, 'POST', body);
      expect(r.status).toBe(409);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'OUTSIDE_WINDOW',
        message: expect.stringContaining('business number'),
      });
    }
    expect(app.graph.sends()).toEqual([]);
    expect(await messagesOf(user.id)).toHaveLength(1);
    expect((await call(h.stats, { token: TOKEN })).body).toEqual(before.body);
    expect((await app.services.data.users.getUser(user.id))?.handoff ?? null).toBeNull();
  });

  it('refuses to message a user who opted out', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'stop', 'Lena');
    app.graph.requests.length = 0;
    const r = await api('userMessages', await userIdOf(app.services.data, waId), 'POST', { text: 'hello?' });
    expect(r.status).toBe(409);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('OPTED_OUT');
    expect(app.graph.sends()).toEqual([]);
  });
});

describe('operator sends with an Idempotency-Key', () => {
  const send = (id: string, body: unknown, key: string | null, token = TOKEN) =>
    call(h.userMessages, {
      token,
      method: 'POST',
      params: { id },
      body,
      ...(key === null ? {} : { headers: { 'idempotency-key': key } }),
    });
  const sendAudits = async (id: string) =>
    (await app.services.data.personal.auditTrail(10_000)).filter(
      (e) => e.userId === id && e.reason === 'send',
    );
  const errorCode = (r: { body: unknown }) => parseBody(ErrorSchema, r.body).error.code;

  async function userInWindow(): Promise<string> {
    const waId = newNumber();
    await app.userWrites(waId, 'hello', 'Keyed');
    app.graph.requests.length = 0;
    return userIdOf(app.services.data, waId);
  }

  it('sends once however often the same request is repeated, and answers each repeat as the first', async () => {
    const id = await userInWindow();
    const key = '8e03978e-40d5-43e8-bc93-6894a57f9324';
    const first = await send(id, { text: 'Your order ships today' }, key);
    expect(first.status).toBe(201);
    const count = (await app.services.data.users.getUser(id))?.messageCount;
    // The IETF draft's form (a quoted string) and the bare form name the same key.
    for (const again of [key, `"${key}"`]) {
      const repeat = await send(id, { text: 'Your order ships today' }, again);
      expect(repeat.status).toBe(201);
      expect(parseBody(MessageSchema, repeat.body).id).toBe(parseBody(MessageSchema, first.body).id);
    }
    expect(sentTexts()).toEqual(['Your order ships today']);
    expect((await messagesOf(id)).filter((m) => m.role === 'operator')).toHaveLength(1);
    expect((await app.services.data.users.getUser(id))?.messageCount).toBe(count);
    expect(await sendAudits(id)).toHaveLength(1);
    // Without a key, or with another, a send is a new one.
    expect((await send(id, { text: 'Your order ships today' }, null)).status).toBe(201);
    expect((await send(id, { text: 'Your order ships today' }, 'another-key')).status).toBe(201);
    expect(app.graph.sends()).toHaveLength(3);
  });

  it('refuses the key with another body or from another token (422), sending nothing', async () => {
    const id = await userInWindow();
    expect((await send(id, { text: 'first words' }, 'k-reused')).status).toBe(201);
    const otherText = await send(id, { text: 'other words' }, 'k-reused');
    expect(otherText.status).toBe(422);
    expect(errorCode(otherText)).toBe('IDEMPOTENCY_KEY_REUSED');
    const template = { template: { name: 'order_update', language: 'en_US', parameters: [] } };
    expect(errorCode(await send(id, template, 'k-reused'))).toBe('IDEMPOTENCY_KEY_REUSED');
    const { token } = await createToken(app.services.data, {
      name: 'second operator',
      expiresDays: 1,
      now: new Date(),
    });
    const otherToken = await send(id, { text: 'first words' }, 'k-reused', token);
    expect(otherToken.status).toBe(422);
    expect(sentTexts()).toEqual(['first words']);
    expect(await sendAudits(id)).toHaveLength(1);
  });

  it('tells apart two tokens with one name: the key used by one is refused to the other (422)', async () => {
    // Token names need not be unique (a setup script run twice makes two "checker" tokens): the
    // key is bound to the token that used it, not to its name, or the second would be answered
    // with the first one's message as if it had sent it.
    const id = await userInWindow();
    const now = new Date();
    const a = await createToken(app.services.data, { name: 'checker', expiresDays: 1, now });
    const b = await createToken(app.services.data, { name: 'checker', expiresDays: 1, now });
    const first = await send(id, { text: 'from the first checker' }, 'k-namesake', a.token);
    expect(first.status).toBe(201);
    expect(parseBody(MessageSchema, first.body).by).toBe('checker');
    const other = await send(id, { text: 'from the first checker' }, 'k-namesake', b.token);
    expect(other.status).toBe(422);
    expect(errorCode(other)).toBe('IDEMPOTENCY_KEY_REUSED');
    // The token that used it still gets its answer again.
    const repeat = await send(id, { text: 'from the first checker' }, 'k-namesake', a.token);
    expect(repeat.status).toBe(201);
    expect(parseBody(MessageSchema, repeat.body).id).toBe(parseBody(MessageSchema, first.body).id);
    expect(sentTexts()).toEqual(['from the first checker']);
    // The audit trail names the token, as the brief says (who: the token's name), and keeps its id.
    const [audit] = await sendAudits(id);
    expect(audit?.payload).toMatchObject({ tokenName: 'checker', tokenId: a.record.id });
  });

  it('sends once when the same request comes twice at once: the other answers 409 IN_PROGRESS', async () => {
    const id = await userInWindow();
    app.graph.delayMs = 300;
    try {
      const answers = await Promise.all([
        send(id, { text: 'only once' }, 'k-concurrent'),
        send(id, { text: 'only once' }, 'k-concurrent'),
      ]);
      expect(answers.map((a) => a.status).sort()).toEqual([201, 409]);
      const conflict = answers.find((a) => a.status === 409);
      expect(conflict && errorCode(conflict)).toBe('IN_PROGRESS');
    } finally {
      app.graph.delayMs = 0;
    }
    expect(sentTexts()).toEqual(['only once']);
    // Once the first has stored its outcome, a repeat gives its answer.
    expect((await send(id, { text: 'only once' }, 'k-concurrent')).status).toBe(201);
    expect(app.graph.sends()).toHaveLength(1);
  });

  it('gives a failed send its 502 again without sending, and frees the key of a send WhatsApp refused (409)', async () => {
    const id = await userInWindow();
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Message undeliverable' } },
    });
    const first = await send(id, { text: 'will fail' }, 'k-failed');
    expect(first.status).toBe(502);
    const again = await send(id, { text: 'will fail' }, 'k-failed');
    expect(again.status).toBe(502);
    expect(errorCode(again)).toBe('UPSTREAM_FAILED');
    // In the same words, Graph's code included.
    expect(parseBody(ErrorSchema, again.body).error.message).toBe(
      parseBody(ErrorSchema, first.body).error.message,
    );
    expect(parseBody(ErrorSchema, again.body).error.message).toMatch(/code 131026/);
    expect(app.graph.sends()).toHaveLength(1);

    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131047, message: 'Re-engagement message' } },
    });
    expect(errorCode(await send(id, { text: 'try later' }, 'k-window'))).toBe('OUTSIDE_WINDOW');
    // Nothing went out and nothing was kept: the same key sends now.
    expect((await send(id, { text: 'try later' }, 'k-window')).status).toBe(201);
    expect(sentTexts()).toEqual(['will fail', 'try later', 'try later']);
  });

  // Graph accepted the send (201); WhatsApp reported later that it could not deliver it (a `failed`
  // status: 131026, say). A repeat of the request still answers as the first did: 201 with the
  // message as it is now, not the 502 of a send WhatsApp refused.
  it('answers a repeat 201 with the message as it is now when a status reported it failed after the send', async () => {
    const id = await userInWindow();
    const first = await send(id, { text: 'your parcel is here' }, 'k-failed-later');
    expect(first.status).toBe(201);
    const sent = parseBody(MessageSchema, first.body);
    const waId = (await app.services.data.users.getUser(id))?.waId ?? '';
    const failed = status(sent.id, 'failed', waId, {
      errors: [{ code: 131026, title: 'Message undeliverable' }],
    });
    expect((await app.post(notification(value({ statuses: [failed] })))).status).toBe(200);
    const again = await send(id, { text: 'your parcel is here' }, 'k-failed-later');
    expect(again.status).toBe(201);
    expect(parseBody(MessageSchema, again.body)).toMatchObject({ id: sent.id, status: 'failed' });
    expect(app.graph.sends()).toHaveLength(1);
  });

  it('answers a repeat as the first even when the user opted out since', async () => {
    const id = await userInWindow();
    const first = await send(id, { text: 'before stop' }, 'k-stop');
    expect(first.status).toBe(201);
    const waId = (await app.services.data.users.getUser(id))?.waId ?? '';
    await app.userWrites(waId, 'stop', 'Keyed');
    app.graph.requests.length = 0;
    const repeat = await send(id, { text: 'before stop' }, 'k-stop');
    expect(repeat.status).toBe(201);
    expect(repeat.body).toEqual(first.body);
    expect(errorCode(await send(id, { text: 'before stop' }, 'k-new'))).toBe('OPTED_OUT');
    expect(app.graph.sends()).toEqual([]);
  });

  it('answers 400 naming the header for a bad key (given twice, empty, too long, odd characters), sending nothing', async () => {
    const id = await userInWindow();
    for (const bad of ['a, b', '', '""', 'x'.repeat(256), 'with space', 'qu"ote', 'caf\u00e9']) {
      const r = await send(id, { text: 'never sent' }, bad);
      expect(r.status, bad).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error.message).toMatch(/^invalid header "idempotency-key": /);
    }
    expect((await send(id, { text: 'sent' }, 'x'.repeat(255))).status).toBe(201);
    expect(sentTexts()).toEqual(['sent']);
    expect(await sendAudits(id)).toHaveLength(1);
  });
});

describe('Cosmos DB rules', () => {
  it('backs every sort of the handoff queries with an index of exactly those keys', async () => {
    const client = watchClient(new MongoClient(app.database.uri, { monitorCommands: true }));
    await client.connect();
    const seen: ObservedCommand[] = [];
    const stop = observeCommands((c) => seen.push(c));
    try {
      const data = createDataStore(client.db(app.database.dbName));
      const waId = newNumber();
      await app.userWrites(waId, 'sorted?', 'Lena');
      const id = await userIdOf(app.services.data, waId);
      const now = new Date();
      await data.handoff.take(id, 'ops', now, 24);
      const page = await data.handoff.waiting({ limit: 1, after: null, now, hours: 24 });
      await data.handoff.waiting({ limit: 1, after: page.next, now, hours: 24 });
      expect(await data.handoff.lastInbound(id)).toMatchObject({ phoneNumberId: PHONE_NUMBER_ID });
      await data.stats.models();
    } finally {
      stop();
      await client.close();
    }
    const sorts = seen.filter((c) => c.commandName === 'find' && c.command['sort']);
    expect(sorts.length).toBeGreaterThanOrEqual(3);
    for (const c of sorts) {
      const collection = String(c.command['find']) as keyof typeof INDEXES;
      const raw = c.command['sort'] as Record<string, number> | Map<string, number>;
      const sort = raw instanceof Map ? Object.fromEntries(raw) : raw;
      const keys = Object.keys(sort);
      const directions = new Set(Object.values(sort));
      expect(directions.size, JSON.stringify(sort)).toBe(1);
      const backed = INDEXES[collection].some(
        (index) => JSON.stringify(Object.keys(index.keys)) === JSON.stringify(keys),
      );
      expect(backed, `${collection} ${JSON.stringify(sort)}`).toBe(true);
    }
  });
});

// Last in the file: the answers above (sends: 201, 400, 404, 409, 502) against the served document.
describe('every answer of these tests', () => {
  it('matches the OpenAPI document the app serves', async () => {
    const doc = (await openApiHandler()).jsonBody as Record<string, unknown>;
    const answers = answersOf(h);
    expect([...new Set(answers.filter((a) => a.method === 'POST').map((a) => a.status))]).toEqual(
      expect.arrayContaining([200, 201, 400, 404, 409, 502]),
    );
    expect(answers.flatMap((a) => checkExchange(doc, a))).toEqual([]);
  });
});
