// Operators and the bot at the same time, through the management API's routes and the loopback
// Graph stub: an operator takes the conversation (or writes, which takes it) while the bot's answer
// is still on its way out — waiting out WhatsApp's pair rate limit, or between two parts of a long
// answer. The bot never talks after the operator took over: what had not gone out is dropped.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import type { ReplyJob } from '../../shared/bot/jobs';
import type { AiResponder } from '../../shared/bot/ports';
import { processReplyJob } from '../../shared/bot/reply';
import { createLogger } from '../../shared/log';
import type { RetryPolicy } from '../../shared/whatsapp/graph';
import { StatsSchema, UserSchema, type MessageJson } from '../../shared/manage/schemas';
import { BOOTSTRAP_TOKEN_NAME } from '../../shared/manage/auth';
import { manageHandlers } from '../../functions/manage';
import { startTestApp, type TestApp } from '../helpers/app';
import { call, conversationOf, userApi } from '../helpers/manage-fixture';
import { textNotification } from '../helpers/meta';
import { pairLimited, sentTextsOf } from '../helpers/graph-stub';
import { parseBody } from '../helpers/shapes';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-handoff-race-tests-0123';
/** Long enough for an operator to act while the worker waits (production: 6 s, then doubling). */
// Two seconds: the operator's call must land inside it on a loaded CI machine too.
const PAIR: RetryPolicy = { attempts: 4, baseDelayMs: 2_000, maxDelayMs: 2_000 };
const USAGE = {
  provider: 'openai-compatible',
  model: 'race-model',
  promptTokens: 20,
  completionTokens: 7,
  totalTokens: 27,
  latencyMs: 5,
};
/** Two parts: over WhatsApp's 4096 characters. */
const LONG_ANSWER = 'word '.repeat(1_500).trim();

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
let n = 0;
const newNumber = () => `3470${Date.now().toString().slice(-6)}${++n}`;

const api: ReturnType<typeof userApi> = (...args) => userApi(h, TOKEN)(...args);

const sentTexts = () => sentTextsOf(app.graph);

const messagesOf = (id: string): Promise<MessageJson[]> => conversationOf(h, TOKEN, id);

async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !done(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!done()) throw new Error(`timed out waiting for ${what}`);
}

/** A user who wrote before asks something; returns their id, the question's id and its reply job. */
async function asks(): Promise<{ id: string; waId: string; asked: string; jobs: ReplyJob[] }> {
  const waId = newNumber();
  await app.userWrites(waId, 'hola', 'Lena');
  const id = await userIdOf(app.services.data, waId);
  const question = textNotification(waId, 'una pregunta', 'Lena');
  const { jobs } = await app.post(question.payload);
  app.queued.length = 0;
  app.graph.requests.length = 0;
  return { id, waId, asked: question.message.id, jobs };
}

/** Nothing logged names the user's number or what anyone wrote. */
function expectCleanLogs(waId: string): void {
  const logged = app.logs.join('\n');
  for (const secret of [waId, 'talking over', 'Ana here', 'una pregunta', 'word word'])
    expect(logged).not.toContain(secret);
}

/** The reply worker answers `jobs` with `text` from the model, waiting out the pair rate limit. */
function botAnswers(jobs: ReplyJob[], text: string): Promise<void> {
  const ai: AiResponder = {
    window: 10,
    respond: async ({ preparing }) => {
      await preparing();
      return { text, role: 'conversation', ai: USAGE, failure: null };
    },
  };
  return (async () => {
    for (const job of jobs)
      await processReplyJob({ ...app.services, ai }, job, createLogger(app.context()), { pairRetry: PAIR });
  })();
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
  app.graph.delayMs = 0;
});

describe("an operator acts while the bot's answer waits out the pair rate limit", () => {
  for (const operator of ['takes', 'sends'] as const) {
    it(`the answer is not sent again after the operator ${operator === 'takes' ? 'took the conversation' : 'wrote'}: dropped, the message settled unanswered`, async () => {
      const before = parseBody(StatsSchema, (await call(h.stats, { token: TOKEN })).body);
      const { id, waId, asked, jobs } = await asks();
      // Graph refuses the bot's answer for the pair rate limit: the worker waits to send it again.
      app.graph.sendResponses.push(pairLimited());
      const worker = botAnswers(jobs, 'the bot talking over');
      await until(() => app.graph.sends().length === 1, 'the refused answer');
      const r =
        operator === 'takes'
          ? await api('userHandoff', id, 'POST')
          : await api('userMessages', id, 'POST', { text: 'Ana here, one moment.' });
      expect(r.status).toBe(operator === 'takes' ? 200 : 201);
      await worker;
      // The refused try, then only the operator: the bot's answer never follows them.
      expect(sentTexts()).toEqual(
        operator === 'takes' ? ['the bot talking over'] : ['the bot talking over', 'Ana here, one moment.'],
      );
      const messages = await messagesOf(id);
      expect(messages.map((m) => m.text)).not.toContain('the bot talking over');
      expect((await app.services.data.messages.getMessage(asked))?.replyState).toBe('none');
      // Still the operator's, and the model's tokens counted once; no failed answer counted.
      const user = parseBody(UserSchema, (await api('user', id, 'GET')).body);
      expect(user.handoff?.by).toBe(BOOTSTRAP_TOKEN_NAME);
      const after = parseBody(StatsSchema, (await call(h.stats, { token: TOKEN })).body);
      expect([after.ai.requests - before.ai.requests, after.ai.tokens - before.ai.tokens]).toEqual([1, 27]);
      expect(after.messages.failed - before.messages.failed).toBe(0);
      expect(after.messages.inbound - before.messages.inbound).toBe(2);
      expect(app.logs.some((l) => l.includes('answer dropped: the conversation was taken meanwhile'))).toBe(
        true,
      );
      expectCleanLogs(waId);
    });
  }
});

describe('an operator takes the conversation while the first part of a long answer goes out', () => {
  it('the parts not yet out are dropped: the message settled answered by the part that went out', async () => {
    const { id, waId, asked, jobs } = await asks();
    // The first part's send takes 1.5 s: the operator takes the conversation meanwhile.
    app.graph.delayMs = 1_500;
    const worker = botAnswers(jobs, LONG_ANSWER);
    await until(() => app.graph.sends().length === 1, 'the first part');
    expect((await api('userHandoff', id, 'POST')).status).toBe(200);
    await worker;
    expect(app.graph.sends()).toHaveLength(1);
    const out = (await messagesOf(id)).filter((m) => m.direction === 'outbound' && m.role === 'conversation');
    // The reply to "hola" (no model then) and the one part that went out.
    expect(out.filter((m) => m.text.startsWith('word'))).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(asked))?.replyState).toBe('sent');
    const user = parseBody(UserSchema, (await api('user', id, 'GET')).body);
    expect(user.handoff?.by).toBe(BOOTSTRAP_TOKEN_NAME);
    // The part that went out is the conversation's latest message.
    expect(user.lastMessagePreview?.startsWith('word word')).toBe(true);
    expectCleanLogs(waId);
  });
});
