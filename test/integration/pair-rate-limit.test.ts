// Meta's pair rate limit (Graph code 131056: about one message every 6 s to one user, bursts
// first) on the real reply path: the reply worker waits and sends again while it holds the user's
// lock, so the answer goes out once, in order, without asking the AI again; past its bounded
// schedule the answer is recorded failed. An operator's send is not kept waiting: it answers at
// once with an error that says to try again in a few seconds.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { ingestNotification } from '../../shared/bot/ingest';
import type { ReplyJob } from '../../shared/bot/jobs';
import { processReplyJob } from '../../shared/bot/reply';
import type { RetryPolicy } from '../../shared/whatsapp/graph';
import { ErrorSchema } from '../../shared/manage/schemas';
import { manageHandlers } from '../../functions/manage';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { startHttpStub, type HttpStub, type StubRequest } from '../helpers/http-stub';
import { call } from '../helpers/manage-fixture';
import { notification, textMessage, value } from '../helpers/meta';
import { accepted, pairLimited } from '../helpers/graph-stub';
import { parseBody } from '../helpers/shapes';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-pair-limit-tests-0123';
/** Short waits for the tests (production: PAIR_RETRY, 6 s then doubling). */
const PAIR: RetryPolicy = { attempts: 6, baseDelayMs: 20, maxDelayMs: 80 };
const LONG_ANSWER = 'word '.repeat(1_500).trim();

let app: TestApp;
let ai: HttpStub;
let h: ReturnType<typeof manageHandlers>;
const { log, lines: logs } = capturedLog();
let n = 0;
const newNumber = () => `4470${Date.now().toString().slice(-6)}${++n}`;

/** The AI stub: a long answer (two parts) to "long", else "answer to <text>". */
function respond(request: StubRequest) {
  const messages = request.body['messages'] as { role: string; content: string }[];
  const last = messages.at(-1)?.content ?? '';
  return {
    status: 200,
    body: {
      model: 'pair-model',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: last.includes('long') ? LONG_ANSWER : `answer to ${last}` },
          finish_reason: 'stop',
        },
      ],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    },
  };
}

beforeAll(async () => {
  ai = await startHttpStub(respond);
  app = await startTestApp({
    AI_ENDPOINT: `${ai.url}/v1`,
    AI_MODEL: 'pair-model',
    AI_TIMEOUT_MS: '5000',
    MANAGE_API_TOKEN: TOKEN,
  });
  h = manageHandlers(runtimeOf(app.services));
});

afterAll(async () => {
  await app?.close();
  await ai?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
  ai.requests = [];
  logs.length = 0;
});

/** The user's texts in one notification, ingested; returns their ids and the reply job. */
async function userWrites(waId: string, texts: string[]): Promise<{ ids: string[]; job: ReplyJob }> {
  const messages = texts.map((text) => textMessage(waId, text));
  const { jobs } = await ingestNotification(
    app.services,
    notification(value({ contacts: [{ waId }], messages })),
    log,
  );
  const job = jobs[0];
  if (!job) throw new Error('no reply job');
  return { ids: messages.map((m) => m.id), job };
}

const sentTo = (waId: string) =>
  app.graph
    .sends()
    .filter((r) => r.body['to'] === waId)
    .map((r) => (r.body['text'] as { body: string }).body);

async function outbound(waId: string) {
  const userId = await userIdOf(app.services.data, waId);
  const recent = await app.services.data.messages.recent(userId, 50);
  return recent.filter((m) => m.direction === 'outbound').reverse();
}

describe("Meta's pair rate limit (131056) on the reply path", () => {
  it('waits and sends again: the answer goes out once, not failed, and the AI is asked once', async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['hello there']);
    // More refusals than the Graph client's own attempts (4 in the test app).
    app.graph.sendResponses.push(...Array.from({ length: 5 }, pairLimited));
    const started = Date.now();
    await processReplyJob(app.services, job, log, { pairRetry: PAIR });
    // 20 + 40 + 80 + 80 + 80 ms of waiting (the schedule, not the client's short backoff).
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(sentTo(waId)).toEqual(Array.from({ length: 6 }, () => 'answer to hello there'));
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(ids[0]!))?.replyState).toBe('sent');
    const out = await outbound(waId);
    expect(out.map((m) => [m.text, m.status])).toEqual([['answer to hello there', 'sent']]);
    expect(logs.filter((l) => l.includes('pair rate limit'))).toHaveLength(5);
    expect(logs.join('\n')).not.toContain(waId);
  });

  it('a split answer whose second part is refused waits for it, and the next message is answered after it', async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['a long one please', 'and a short one']);
    app.graph.sendResponses.push(accepted('wamid.out.pair.part1'), ...Array.from({ length: 4 }, pairLimited));
    await processReplyJob(app.services, job, log, { pairRetry: PAIR });
    const sent = sentTo(waId);
    expect(sent).toHaveLength(7);
    const [first, ...rest] = sent;
    const second = rest.slice(0, 5);
    expect(new Set(second).size).toBe(1);
    expect(`${first} ${second[0]}`).toBe(LONG_ANSWER);
    expect(rest[5]).toBe('answer to and a short one');
    expect(ai.requests).toHaveLength(2);
    for (const id of ids) expect((await app.services.data.messages.getMessage(id))?.replyState).toBe('sent');
    const out = await outbound(waId);
    expect(out.map((m) => [m.text, m.status])).toEqual([
      [first, 'sent'],
      [second[0], 'sent'],
      ['answer to and a short one', 'sent'],
    ]);
  });

  it('gives up after its bounded schedule: recorded failed with 131056, AI asked once, the job ends', async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['still there?']);
    app.graph.sendResponses.push(...Array.from({ length: 10 }, pairLimited));
    const policy: RetryPolicy = { attempts: 3, baseDelayMs: 10, maxDelayMs: 20 };
    await processReplyJob(app.services, job, log, { pairRetry: policy });
    expect(sentTo(waId)).toHaveLength(3);
    expect(ai.requests).toHaveLength(1);
    const inbound = await app.services.data.messages.getMessage(ids[0]!);
    expect(inbound?.replyState).toBe('failed');
    const out = await outbound(waId);
    expect(out.map((m) => [m.status, m.error?.code])).toEqual([['failed', 131056]]);
  });
});

// Graph throttling (429, code 130429: the number's throughput, which Meta says to wait out), a 5xx
// or no connection outlasting the Graph client's own quick retries (about 2 s): the original design
// records only permanent errors ("retry 429/5xx with backoff; permanent errors recorded"), so the
// worker waits and sends again on the same schedule as for the pair rate limit.
describe('a passing Graph failure longer than the Graph client retries, on the reply path', () => {
  const unavailable = () => ({
    status: 503,
    body: { error: { message: 'Service temporarily unavailable', type: 'OAuthException', code: 2 } },
  });
  const throttled = () => ({
    status: 429,
    body: { error: { message: 'Rate limit hit', type: 'OAuthException', code: 130429 } },
  });

  it('waits and sends again: the answer goes out once, not failed, and the AI is asked once', async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['are you up?']);
    // More failures than the Graph client's own attempts (4 in the test app), then success.
    app.graph.sendResponses.push(...Array.from({ length: 4 }, unavailable), throttled(), throttled());
    await processReplyJob(app.services, job, log, { pairRetry: PAIR });
    expect(sentTo(waId)).toEqual(Array.from({ length: 7 }, () => 'answer to are you up?'));
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(ids[0]!))?.replyState).toBe('sent');
    const out = await outbound(waId);
    expect(out.map((m) => [m.text, m.status])).toEqual([['answer to are you up?', 'sent']]);
    expect(logs.filter((l) => l.includes('reply waits'))).toHaveLength(1);
  });

  // Graph's own rate limit (code 613, under a 400 as Graph sends it): "wait and retry the operation"
  // (https://developers.facebook.com/docs/graph-api/using-graph-api/error-handling/), never a
  // refusal for good recorded at once.
  it("waits out Graph's rate limit code 613 under a 400: the answer goes out, not recorded failed", async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['still there?']);
    const limited = () => ({
      status: 400,
      body: {
        error: {
          message: '(#613) Calls to this api have exceeded the rate limit.',
          type: 'OAuthException',
          code: 613,
        },
      },
    });
    app.graph.sendResponses.push(...Array.from({ length: 5 }, limited));
    await processReplyJob(app.services, job, log, { pairRetry: PAIR });
    expect(sentTo(waId)).toHaveLength(6);
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(ids[0]!))?.replyState).toBe('sent');
    const out = await outbound(waId);
    expect(out.map((m) => [m.text, m.status])).toEqual([['answer to still there?', 'sent']]);
  });

  it('gives up after the same bounded schedule: recorded failed with the last status, the job ends', async () => {
    const waId = newNumber();
    const { ids, job } = await userWrites(waId, ['anyone?']);
    app.graph.sendResponses.push(...Array.from({ length: 12 }, unavailable));
    const policy: RetryPolicy = { attempts: 3, baseDelayMs: 10, maxDelayMs: 20 };
    await processReplyJob(app.services, job, log, { pairRetry: policy });
    // Three rounds of the client's four attempts.
    expect(sentTo(waId)).toHaveLength(12);
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(ids[0]!))?.replyState).toBe('failed');
    const out = await outbound(waId);
    expect(out.map((m) => [m.status, m.error?.code])).toEqual([['failed', 2]]);
  });
});

describe("an operator's send under the pair rate limit", () => {
  it('answers 502 UPSTREAM_FAILED at once, saying to try again in a few seconds; one request to Graph', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hi');
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;
    app.graph.sendResponses.push(pairLimited());
    const answer = await call(h.userMessages, {
      token: TOKEN,
      method: 'POST',
      params: { id },
      body: { text: 'Operator here' },
    });
    expect(answer.status).toBe(502);
    const error = parseBody(ErrorSchema, answer.body).error;
    expect(error.code).toBe('UPSTREAM_FAILED');
    expect(error.message).toMatch(/pair rate limit/);
    expect(error.message).toMatch(/try again in a few seconds/);
    // A retry with the same key replays this answer (the contract's Idempotency-Key): said so.
    expect(error.message).toMatch(/new Idempotency-Key/);
    expect(error.message).toMatch(/Graph: code 131056, "\(#131056\) .*pair rate limit hit"\.$/);
    expect(app.graph.sends()).toHaveLength(1);
    const out = await outbound(waId);
    expect(out.at(-1)).toMatchObject({ text: 'Operator here', status: 'failed', role: 'operator' });
  });

  it('answers the same pair-limit 502 again to the same Idempotency-Key, sending nothing', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'hi');
    const id = await userIdOf(app.services.data, waId);
    app.graph.requests.length = 0;
    app.graph.sendResponses.push(pairLimited());
    const send = () =>
      call(h.userMessages, {
        token: TOKEN,
        method: 'POST',
        params: { id },
        body: { text: 'Operator, keyed' },
        headers: { 'idempotency-key': 'pair-limit-replay-1' },
      });
    const first = await send();
    const again = await send();
    expect(first.status).toBe(502);
    expect(again.status).toBe(502);
    const firstError = parseBody(ErrorSchema, first.body).error;
    expect(firstError.message).toMatch(/pair rate limit/);
    expect(parseBody(ErrorSchema, again.body).error).toMatchObject({
      code: 'UPSTREAM_FAILED',
      message: firstError.message,
    });
    expect(app.graph.sends()).toHaveLength(1);
    expect((await outbound(waId)).filter((m) => m.role === 'operator')).toHaveLength(1);
  });
});
