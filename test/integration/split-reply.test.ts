// An answer in several parts (shared/bot/reply.ts: `replyPlan`, each part but the last recorded as
// soon as Graph accepted it) when its worker loses the user's lock between two parts: another
// worker completes it from what is recorded, and no part goes out twice.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import type { ReplyJob } from '../../shared/bot/jobs';
import { processReplyJob } from '../../shared/bot/reply';
import { HELP_TEXT, STOP_ANSWER } from '../../shared/bot/texts';
import { sleep } from '../../shared/time';
import type { RetryPolicy } from '../../shared/whatsapp/graph';
import { startTestApp, type TestApp } from '../helpers/app';
import { accepted, pairLimited } from '../helpers/graph-stub';
import { startHttpStub, type HttpStub, type StubRequest } from '../helpers/http-stub';
import { capturedLog } from '../helpers/logs';
import { notification, nowSeconds, textMessage, value } from '../helpers/meta';
import { userIdOf } from '../helpers/users';

// Two paragraphs of 3,000 characters: two WhatsApp messages.
const FIRST = 'alpha '.repeat(500).trim();
const SECOND = 'omega '.repeat(500).trim();

let app: TestApp;
let ai: HttpStub;
const { log } = capturedLog();
let n = 0;
const newNumber = () => `4471${Date.now().toString().slice(-6)}${++n}`;

/** The AI stub: the two-part answer, or a short one to a message that begins with "more". */
function respond(request: StubRequest) {
  const messages = request.body['messages'] as { role: string; content: string }[];
  const last = messages.at(-1)?.content ?? '';
  const content = last.startsWith('more') ? `ok ${last}` : `${FIRST}\n\n${SECOND}`;
  return {
    status: 200,
    body: {
      model: 'split-model',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    },
  };
}

beforeAll(async () => {
  ai = await startHttpStub(respond);
  app = await startTestApp({ AI_ENDPOINT: `${ai.url}/v1`, AI_MODEL: 'split-model', AI_TIMEOUT_MS: '5000' });
});

afterAll(async () => {
  await app?.close();
  await ai?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
  ai.requests = [];
});

async function userWrites(waId: string, text: string): Promise<{ id: string; job: ReplyJob }> {
  const message = textMessage(waId, text);
  const { jobs } = await ingestNotification(
    app.services,
    notification(value({ contacts: [{ waId }], messages: [message] })),
    log,
  );
  const job = jobs[0];
  if (!job) throw new Error('no reply job');
  return { id: message.id, job };
}

const label = (text: unknown) => (text === FIRST ? 'first' : text === SECOND ? 'second' : String(text));
const sentTo = (waId: string) =>
  app.graph
    .sends()
    .filter((r) => r.body['to'] === waId)
    .map((r) => label((r.body['text'] as { body: string }).body));

describe('an answer in several parts whose worker loses the lock between two parts', () => {
  it('is completed by the worker that took the user over, and the first worker sends nothing more', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    // Worker A: the first part goes out, the second meets the pair rate limit and A waits. A's
    // lease renewals fail meanwhile (a frozen instance, a database A cannot reach), so its lease
    // runs out and worker B takes the user over during the wait.
    app.graph.sendResponses.push(accepted('wamid.split.first'), pairLimited());
    // The lease must outlast A's first steps (its renewals fail from the start: under load the AI
    // call and the first send took more than a lease of 300 ms, and A stopped before the second
    // part), and the pair-limit wait must outlast the lease.
    const leaseMs = 2_000;
    const pairRetry: RetryPolicy = { attempts: 3, baseDelayMs: 5_000, maxDelayMs: 5_000 };
    const workerA = processReplyJob(lockedOnce(), job, log, {
      leaseMs,
      pairRetry,
    }).then(
      () => 'resolved',
      (error: unknown) => (error instanceof Error ? error.message : String(error)),
    );
    for (let i = 0; sentTo(waId).length < 2 && i < 200; i++) await sleep(20);
    expect(sentTo(waId)).toEqual(['first', 'second']); // the second refused: A waits 5 s
    await sleep(leaseMs + 100);
    // Worker B (a redelivered job, the sweeper's): the parts not recorded follow.
    await processReplyJob(app.services, job, log);
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
    expect(sentTo(waId)).toEqual(['first', 'second', 'second']);

    // A's wait ends: the user is B's now, and the second part went out already.
    const ended = await workerA;
    expect(sentTo(waId)).toEqual(['first', 'second', 'second']);
    expect(ended).toBe('the reply lock was lost');
    const userId = await userIdOf(data, waId);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound').reverse();
    expect(out.map((m) => [label(m.text), m.status])).toEqual([
      ['first', 'sent'],
      ['second', 'sent'],
    ]);
    expect(ai.requests).toHaveLength(1);
    // The first part is counted once in the user's summary: B's recount found it stored, and A,
    // freeing a lock that was no longer its own, does not add it again.
    await expectSummary(userId, 3, 'omega');
  }, 30_000);

  it('left by a worker whose lease ran out unnoticed: the part out is in the summary once the answer is completed', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    // No other worker came: A finds its lease run out after the wait, stops and frees the lock.
    await halfAnswered(job, 'wamid.split.alone');
    expect(sentTo(waId)).toEqual(['first', 'second']);
    const userId = await userIdOf(data, waId);
    // The queue runs the job again: the second part follows, the first is not sent again.
    await processReplyJob(app.services, job, log);
    expect(sentTo(waId)).toEqual(['first', 'second', 'second']);
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
    const user = await data.users.getUser(userId);
    expect([user?.messageCount, user?.lastMessagePreview?.startsWith('omega')]).toEqual([3, true]);
  }, 30_000);

  it('resumed after the user wrote more than one read of their messages holds: the part out is not sent again', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    await halfAnswered(job, 'wamid.split.buried');
    // Meanwhile the user wrote more than one read of their latest messages holds (`help`, answered
    // without the model): the first part is no longer among them.
    const count = (app.services.ai?.window ?? 20) + 5;
    const more = Array.from({ length: count }, () => textMessage(waId, 'help'));
    const { jobs } = await ingestNotification(
      app.services,
      notification(value({ contacts: [{ waId }], messages: more })),
      log,
    );
    for (const next of [job, ...jobs]) await processReplyJob(app.services, next, log);
    const sent = sentTo(waId);
    expect(sent.slice(0, 3)).toEqual(['first', 'second', 'second']);
    expect(sent.filter((t) => t === 'first')).toHaveLength(1);
    expect(sent.slice(3)).toEqual(more.map(() => HELP_TEXT));
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
    expect(ai.requests).toHaveLength(1);
  }, 30_000);

  it('not completed once an operator has taken the conversation meanwhile: the bot does not talk over them', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    await halfAnswered(job, 'wamid.split.handoff');
    // The user sees half an answer; an operator takes the conversation before the job runs again.
    const userId = await userIdOf(data, waId);
    expect(await data.handoff.take(userId, 'ops-token', new Date(), 24)).not.toBeNull();
    await processReplyJob(app.services, job, log);
    expect(sentTo(waId)).toEqual(['first', 'second']); // the second was refused: it never went out
    const inbound = await data.messages.getMessage(id);
    // Settled as answered (its first part went out), its plan removed.
    expect([inbound?.replyState, inbound?.replyPlan]).toEqual(['sent', undefined]);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => label(m.text))).toEqual(['first']);
  }, 30_000);

  it('not completed once an operator took the conversation and handed it back meanwhile: the rest is stale', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    await halfAnswered(job, 'wamid.split.handback');
    // The user sees half an answer; an operator takes the conversation, answers, and hands it back
    // before the job runs again: what the bot had planned no longer follows the conversation.
    const userId = await userIdOf(data, waId);
    expect(await data.handoff.take(userId, 'ops-token', new Date(), 24)).not.toBeNull();
    expect(await data.handoff.handBack(userId)).not.toBeNull();
    await processReplyJob(app.services, job, log);
    expect(sentTo(waId)).toEqual(['first', 'second']); // the second was refused: it never went out
    const inbound = await data.messages.getMessage(id);
    expect([inbound?.replyState, inbound?.replyPlan]).toEqual(['sent', undefined]);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => label(m.text))).toEqual(['first']);
  }, 30_000);

  it('a part whose record was written but its answer lost is counted once when the write is tried again', async () => {
    const waId = newNumber();
    const { job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    // The first part's record lands, and the connection drops before its answer is read.
    const messages = answerLostOnce('recordPart');
    await processReplyJob({ ...app.services, data: { ...data, messages } }, job, log);
    expect(sentTo(waId)).toEqual(['first', 'second']);
    const userId = await userIdOf(data, waId);
    await expectSummary(userId, 3, 'omega');
  }, 30_000);

  it('the settle write tried again after its answer was lost: the last part is counted once', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    const messages = answerLostOnce('settleReply');
    await processReplyJob({ ...app.services, data: { ...data, messages } }, job, log);
    expect(sentTo(waId)).toEqual(['first', 'second']);
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
    const userId = await userIdOf(data, waId);
    await expectSummary(userId, 3, 'omega');
  }, 30_000);
});

/** The user's summary: `count` messages, the preview starting with `word`; health finds nothing to repair. */
async function expectSummary(userId: string, count: number, word: string): Promise<void> {
  const { data } = app.services;
  const user = await data.users.getUser(userId);
  expect([user?.messageCount, user?.lastMessagePreview?.startsWith(word)]).toEqual([count, true]);
  const problems = await data.maintenance.checkSummaries(await data.maintenance.countStored());
  expect(problems.filter((p) => p.userId === userId)).toEqual([]);
}

/** The messages repository, with `method`'s first write landing and its answer lost (a connection reset). */
function answerLostOnce(method: 'recordPart' | 'settleReply'): typeof app.services.data.messages {
  const real = app.services.data.messages;
  let calls = 0;
  return Object.create(real, {
    [method]: {
      value: async (...args: unknown[]) => {
        const result: unknown = await (real[method] as (...a: unknown[]) => Promise<unknown>).apply(
          real,
          args,
        );
        if (++calls === 1) throw new Error('connection reset after the write');
        return result;
      },
    },
  }) as typeof real;
}

/**
 * The app's services for one worker whose lease renewals fail after it took the lock (a frozen
 * instance, a database it cannot reach): its lease runs out while it works.
 */
function lockedOnce(): typeof app.services {
  const { data } = app.services;
  let locks = 0;
  const users = Object.create(data.users, {
    lockForReply: {
      value: (...args: Parameters<typeof data.users.lockForReply>) =>
        ++locks === 1 ? data.users.lockForReply(...args) : Promise.reject(new Error('unreachable')),
    },
  }) as typeof data.users;
  return { ...app.services, data: { ...data, users } };
}

/**
 * The first part of the answer to `job` goes out, the second meets the pair rate limit, and the
 * worker finds its lease run out after the wait (a frozen instance): the job ends half-way, the
 * plan and the first part recorded, as a crash between two parts leaves them.
 */
async function halfAnswered(job: ReplyJob, wamid: string): Promise<void> {
  app.graph.sendResponses.push(accepted(wamid), pairLimited());
  await expect(
    // A lease A's first steps fit in under load, run out during the pair-limit wait.
    processReplyJob(lockedOnce(), job, log, {
      leaseMs: 2_000,
      pairRetry: { attempts: 3, baseDelayMs: 2_500, maxDelayMs: 2_500 },
    }),
  ).rejects.toThrow('the reply lock was lost');
}

describe('an answer in several parts resumed once the rest may no longer go out', () => {
  it("after WhatsApp's 24-hour window closed: nothing more is sent, the message is settled failed with OUTSIDE_WINDOW", async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    await halfAnswered(job, 'wamid.split.window');
    expect(sentTo(waId)).toEqual(['first', 'second']); // the second was refused: it never went out
    const graphCalls = app.graph.requests.length;
    // The job runs again a day later (the user wrote nothing since): Meta would refuse the rest.
    const later = () => new Date(Date.now() + 25 * 3_600_000);
    await processReplyJob({ ...app.services, now: later }, job, log);
    expect(app.graph.requests.length).toBe(graphCalls);
    const inbound = await data.messages.getMessage(id);
    expect([inbound?.replyState, inbound?.error?.code, inbound?.replyPlan]).toEqual([
      'failed',
      'OUTSIDE_WINDOW',
      undefined,
    ]);
    const userId = await userIdOf(data, waId);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => [label(m.text), m.status])).toEqual([['first', 'sent']]);
    expect(ai.requests).toHaveLength(1);
  }, 30_000);

  it('after the user opted out (a `stop` sent before it, delivered late): only the confirmation goes out, the message settled with the part out', async () => {
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    const { data } = app.services;
    await halfAnswered(job, 'wamid.split.stop');
    // A `stop` the user sent a minute before, which Meta delivers only now: answered first.
    const stop = textMessage(waId, 'stop', { timestamp: nowSeconds(-60) });
    const { jobs } = await ingestNotification(
      app.services,
      notification(value({ contacts: [{ waId }], messages: [stop] })),
      log,
    );
    for (const next of [job, ...jobs]) await processReplyJob(app.services, next, log);
    expect(sentTo(waId)).toEqual(['first', 'second', STOP_ANSWER]);
    const inbound = await data.messages.getMessage(id);
    expect([inbound?.replyState, inbound?.replyPlan]).toEqual(['sent', undefined]);
    expect((await data.messages.getMessage(stop.id))?.replyState).toBe('sent');
    const userId = await userIdOf(data, waId);
    expect((await data.users.getUser(userId))?.optedOut).toBe(true);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound').reverse();
    expect(out.map((m) => label(m.text))).toEqual(['first', STOP_ANSWER]);
  }, 30_000);
});

describe('a reply job that failed every attempt (reply-jobs-poison)', () => {
  it('settles its message `sent` when parts of the answer went out, `failed` with the reason when none did', async () => {
    const { data } = app.services;
    // Half an answer out: the user got its start.
    const half = newNumber();
    const { id, job } = await userWrites(half, 'tell me everything');
    await halfAnswered(job, 'wamid.split.poison');
    await app.runPoison(job);
    const inbound = await data.messages.getMessage(id);
    expect([inbound?.replyState, inbound?.error, inbound?.replyPlan]).toEqual(['sent', null, undefined]);
    const userId = await userIdOf(data, half);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => [label(m.text), m.status])).toEqual([['first', 'sent']]);
    expect(sentTo(half)).toEqual(['first', 'second']); // the poison handler sends nothing

    // Nothing out: failed, with the reason.
    const none = newNumber();
    const other = await userWrites(none, 'tell me everything');
    await app.runPoison(other.job);
    const failed = await data.messages.getMessage(other.id);
    expect([failed?.replyState, failed?.error?.title]).toEqual([
      'failed',
      // host.json's maxDequeueCount, not the poison message's own count (1).
      'reply failed after 5 attempts',
    ]);
    expect(sentTo(none)).toEqual([]);
  }, 30_000);

  it('taking over the lock of a worker killed after a part went out, counts that part in the summary', async () => {
    const { data } = app.services;
    const waId = newNumber();
    const { id, job } = await userWrites(waId, 'tell me everything');
    // The first part goes out and is recorded; the process dies before it frees the lock, which
    // would have put the part in the user's summary: the lock is left held, the summary short.
    app.graph.sendResponses.push(accepted('wamid.split.poison-killed'), pairLimited());
    let locks = 0;
    const users = Object.create(data.users, {
      lockForReply: {
        value: (...args: Parameters<typeof data.users.lockForReply>) =>
          ++locks === 1 ? data.users.lockForReply(...args) : Promise.reject(new Error('unreachable')),
      },
      releaseReplyLock: { value: () => Promise.reject(new Error('killed')) },
    }) as typeof data.users;
    await expect(
      processReplyJob({ ...app.services, data: { ...data, users } }, job, log, {
        leaseMs: 300,
        pairRetry: { attempts: 3, baseDelayMs: 600, maxDelayMs: 600 },
      }),
    ).rejects.toThrow('killed');
    const userId = await userIdOf(data, waId);
    expect((await data.users.getUser(userId))?.messageCount).toBe(1);
    // The job was on its last attempt: the host hands it to reply-jobs-poison, whose handler takes
    // the dead worker's lock (its lease over), settles the message and frees the lock.
    await sleep(400);
    await app.runPoison(job);
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
    await expectSummary(userId, 2, 'alpha');
    // The next worker finds a lock freed by its holder: nothing left to recount.
    expect(await data.users.lockForReply(userId, 'next-worker', 1_000, new Date())).toMatchObject({
      tookOver: false,
    });
  }, 30_000);
});
