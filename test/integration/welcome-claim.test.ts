// The welcome's claim (shared/bot/reply.ts `sendWelcome`, users.claimWelcome): a worker killed
// between claiming the welcome and sending it leaves a claim that ends with its lease, so the job
// the queue hands over again sends the welcome; while a claim holds, no other job sends it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import {
  handlePoisonJob,
  LEASE_MS,
  MAX_WELCOME_POISONINGS,
  processReplyJob,
  WELCOME_POISON_PAUSE_MS,
} from '../../shared/bot/reply';
import { SWEEP_GRACE_MS, sweepStaleReplies } from '../../shared/bot/sweeper';
import { WELCOME_TEXT } from '../../shared/bot/texts';
import { startTestApp, type TestApp } from '../helpers/app';
import { capturedLog } from '../helpers/logs';
import { collectionOf } from '../helpers/raw';
import { notification, nowSeconds, value, wamid } from '../helpers/meta';
import { userIdOf } from '../helpers/users';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as health } from '../../scripts/health';
import { captureIo } from '../fixtures/scripts';

let app: TestApp;
const { log } = capturedLog();
let n = 0;
const newNumber = () => `4473${Date.now().toString().slice(-6)}${++n}`;

beforeAll(async () => {
  app = await startTestApp();
});

afterAll(async () => {
  await app?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
});

const welcomesTo = (waId: string) =>
  app.graph
    .sends()
    .filter((r) => r.body['to'] === waId && (r.body['text'] as { body: string }).body === WELCOME_TEXT);

describe('the welcome when its worker is killed after claiming it', () => {
  it('is sent by the job handed over again once the claim has ended, once, and not while it holds', async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    // The first worker claimed the welcome, and its process was killed before the send.
    const claimedAt = new Date();
    expect(await data.users.claimWelcome(userId, claimedAt, 24, LEASE_MS, job)).toBe(true);
    // Another job while the claim holds (the first worker may still be sending): nothing.
    const at = (ms: number) => ({ ...app.services, now: () => new Date(claimedAt.getTime() + ms) });
    await processReplyJob(at(1_000), job, log);
    expect(welcomesTo(waId)).toEqual([]);
    // The queue hands the job over again (in Azure, after its 10-minute lease): the welcome goes out.
    await processReplyJob(at(10 * 60_000), job, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => m.text)).toEqual([WELCOME_TEXT]);
    // Once sent, never again (a redelivered request_welcome, a later one).
    await processReplyJob(at(30 * 60_000), job, log);
    expect(welcomesTo(waId)).toHaveLength(1);
  });
});

/** A user who only opened the chat: their welcome job, and their id. */
async function opensChat(waId: string) {
  const opened = { from: waId, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
  const { jobs } = await ingestNotification(
    app.services,
    notification(value({ contacts: [{ waId, name: 'New' }], messages: [opened] })),
    log,
  );
  const [job] = jobs;
  if (job?.kind !== 'welcome') throw new Error('no welcome job');
  return { job, userId: await userIdOf(app.services.data, waId) };
}

describe('the welcome when its send fails with an error Graph did not give', () => {
  it('is not settled as refused: the job fails, the claim is freed, and the queue retry sends it once', async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data, graph } = app.services;
    // A failure that is not Graph's answer (a bug in building the request, say): nothing went out.
    const broken = {
      ...graph,
      sendText: () => Promise.reject(new TypeError("Cannot read properties of undefined (reading 'id')")),
    };
    await expect(processReplyJob({ ...app.services, graph: broken }, job, log)).rejects.toThrow(TypeError);
    const user = await data.users.getUser(userId);
    expect(user?.welcomeSentAt).toBeNull();
    // The queue hands the job over again (in 15 s, host.json visibilityTimeout): the welcome goes out.
    await processReplyJob(app.services, job, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
  });
});

describe('the welcome when Graph refuses it for good', () => {
  it("is recorded as a failed outbound message (with Graph's code) and counted, and not tried again", async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    const before = await data.stats.totals();
    // 131026: message undeliverable (the number cannot receive it); Graph answers 400.
    app.graph.sendResponses.push({
      status: 400,
      body: {
        error: {
          message: '(#131026) Message Undeliverable.',
          type: 'OAuthException',
          code: 131026,
          error_data: { messaging_product: 'whatsapp', details: 'Message Undeliverable.' },
          fbtrace_id: 'AbCdEf',
        },
      },
    });
    await processReplyJob(app.services, job, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ text: WELCOME_TEXT, status: 'failed', waMessageId: null });
    expect(out[0]?.error?.code).toBe(131026);
    const after = await data.stats.totals();
    expect(after.outbound - before.outbound).toBe(1);
    expect(after.failed - before.failed).toBe(1);
    // Settled: the job handed over again (a redelivered request_welcome) sends nothing more.
    await processReplyJob(app.services, job, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound')).toHaveLength(
      1,
    );
  });
});

describe('the welcome when its worker is killed and the job comes back while the claim still holds', () => {
  it('is re-queued by the sweeper once the claim has ended, and goes out once', async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    // The first worker claimed the welcome and was killed before the send (the claim as the job
    // makes it, naming the business number and the request).
    const claimedAt = new Date();
    const at = (ms: number) => ({ ...app.services, now: () => new Date(claimedAt.getTime() + ms) });
    const killed = {
      ...app.services.graph,
      sendText: () => new Promise<never>(() => undefined), // the process stops here
    };
    void processReplyJob({ ...at(0), graph: killed }, job, log);
    const users = collectionOf(app.database.db, 'users');
    // Until the first worker has claimed the welcome, however long a loaded machine takes (after a
    // fixed 1 s the job below could run first, take the claim itself and send).
    while (!(await users.findOne({ _id: userId }))?.welcomeClaim)
      await new Promise((resolve) => setTimeout(resolve, 10));
    // The queue hands the job over again while the claim holds (locally after the 30 s lease; in
    // Azure 15 s after a failed attempt, say one past functionTimeout): that job ends, sending nothing.
    await processReplyJob(at(30_000), job, log);
    expect(welcomesTo(waId)).toEqual([]);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeNull();
    // The sweeper leaves a claim that still holds alone.
    const welcomeJobs = async (ms: number) =>
      (await sweepStaleReplies(at(ms), log)).filter((j) => j.userId === userId);
    expect(await welcomeJobs(60_000)).toEqual([]);
    // Once the claim has ended (and the sweep's grace after it), the sweeper re-queues the welcome.
    const requeued = await welcomeJobs(LEASE_MS + SWEEP_GRACE_MS);
    expect(requeued).toEqual([job]);
    await processReplyJob(at(LEASE_MS + SWEEP_GRACE_MS + 1_000), requeued[0]!, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
    // Sent: never re-queued again, nor sent again by the job the sweep queued twice.
    expect(await welcomeJobs(LEASE_MS * 10)).toEqual([]);
    await processReplyJob(at(LEASE_MS * 10), requeued[0]!, log);
    expect(welcomesTo(waId)).toHaveLength(1);
  });
});

describe('a welcome claim left by a killed worker for a user an operator took since', () => {
  it('is re-queued once: that job sends nothing and removes the claim, so no sweep re-queues it again', async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    const claimedAt = new Date();
    expect(await data.users.claimWelcome(userId, claimedAt, 24, LEASE_MS, job)).toBe(true);
    expect(await data.handoff.take(userId, 'ops-token', claimedAt, 24)).not.toBeNull();
    const at = (ms: number) => ({ ...app.services, now: () => new Date(claimedAt.getTime() + ms) });
    const welcomeJobs = async (ms: number) =>
      (await sweepStaleReplies(at(ms), log)).filter((j) => j.userId === userId);
    const [requeued] = await welcomeJobs(LEASE_MS + SWEEP_GRACE_MS);
    expect(requeued).toEqual(job);
    await processReplyJob(at(LEASE_MS + SWEEP_GRACE_MS), requeued!, log);
    expect(welcomesTo(waId)).toEqual([]);
    expect(await welcomeJobs(LEASE_MS * 10)).toEqual([]);
  });
});

describe('a welcome job that failed every attempt (reply-jobs-poison)', () => {
  it('is not dropped: the sweeper re-queues it after a pause, and it goes out once', async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    // Graph failed every attempt (an outage): the host moves the job to reply-jobs-poison.
    app.graph.sendResponses.push(...Array.from({ length: 20 }, () => ({ status: 503, body: {} })));
    for (let attempt = 0; attempt < 5; attempt++)
      await expect(processReplyJob(app.services, job, log)).rejects.toThrow('503');
    app.graph.sendResponses.length = 0;
    app.graph.requests.length = 0;
    const poisonedAt = Date.now();
    await app.runPoison(job);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeNull();
    const at = (ms: number) => ({ ...app.services, now: () => new Date(poisonedAt + ms) });
    const welcomeJobs = async (ms: number) =>
      (await sweepStaleReplies(at(ms), log)).filter((j) => j.userId === userId);
    // Not at once (the outage may last), but once the pause is over.
    expect(await welcomeJobs(SWEEP_GRACE_MS * 2)).toEqual([]);
    const [requeued] = await welcomeJobs(WELCOME_POISON_PAUSE_MS + SWEEP_GRACE_MS + 1_000);
    expect(requeued).toEqual(job);
    await processReplyJob(at(WELCOME_POISON_PAUSE_MS + SWEEP_GRACE_MS + 2_000), requeued!, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
    expect(await welcomeJobs(WELCOME_POISON_PAUSE_MS * 10)).toEqual([]);
  }, 60_000);

  it(`is given up after failing so ${MAX_WELCOME_POISONINGS} times: recorded failed and counted, never queued again; npm run health shows it`, async () => {
    const waId = newNumber();
    const { job, userId } = await opensChat(waId);
    const { data } = app.services;
    const before = await data.stats.totals();
    const started = Date.now();
    const at = (ms: number) => ({ ...app.services, now: () => new Date(started + ms) });
    const welcomeJobs = async (ms: number) =>
      (await sweepStaleReplies(at(ms), log)).filter((j) => j.userId === userId);
    const healthNow = async () => {
      const io = captureIo();
      const env = { MONGODB_URI: app.database.uri, MONGODB_DATABASE: app.database.dbName };
      return { code: await runToExitCode(health, [], env, io), text: io.text() };
    };
    // Graph fails every attempt of every round (a cause that lasts: not an outage that ends).
    app.graph.sendResponses.push(...Array.from({ length: 3 * 20 }, () => ({ status: 503, body: {} })));
    const round = WELCOME_POISON_PAUSE_MS + SWEEP_GRACE_MS + 5_000;
    for (let r = 0; r < MAX_WELCOME_POISONINGS; r++) {
      if (r > 0) expect(await welcomeJobs(r * round)).toEqual([job]);
      for (let attempt = 0; attempt < 5; attempt++)
        await expect(processReplyJob(at(r * round + 1_000), job, log)).rejects.toThrow('503');
      // The host moves the job to reply-jobs-poison.
      await handlePoisonJob(at(r * round + 2_000), job, 'reply failed after 5 attempts', log);
      if (r === 0) {
        const waiting = await healthNow();
        expect(waiting.code).toBe(1);
        expect(waiting.text).toMatch(/welcomes waiting for a re-queue: +1\b/);
        expect(waiting.text).toMatch(/welcomes whose job failed every attempt, waiting for the sweeper/);
      }
    }
    app.graph.sendResponses.length = 0;
    app.graph.requests.length = 0;
    // Given up: settled, recorded as a failed welcome (the conversation and the stats show it).
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out).toHaveLength(1);
    expect(out[0]).toMatchObject({ text: WELCOME_TEXT, status: 'failed', waMessageId: null });
    expect(out[0]?.error?.title).toMatch(/given up/);
    const after = await data.stats.totals();
    expect(after.outbound - before.outbound).toBe(1);
    expect(after.failed - before.failed).toBe(1);
    // Never queued again, nor sent by a job handed over again.
    expect(await welcomeJobs(MAX_WELCOME_POISONINGS * round + WELCOME_POISON_PAUSE_MS * 10)).toEqual([]);
    await processReplyJob(at(MAX_WELCOME_POISONINGS * round + 3_000), job, log);
    expect(app.graph.sends()).toEqual([]);
    const givenUp = await healthNow();
    expect(givenUp.code).toBe(1);
    expect(givenUp.text).toMatch(/welcomes waiting for a re-queue: +0\b/);
    expect(givenUp.text).toMatch(/welcomes given up: +1\b/);
    expect(givenUp.text).toMatch(/welcomes given up in the last 7 days/);
  }, 120_000);
});

describe('welcome claims an earlier version left (no welcomeJob), a hundred or more', () => {
  it('do not keep the sweeper from re-queueing a welcome whose claim ended since', async () => {
    const { job, userId } = await opensChat(newNumber());
    const users = collectionOf(app.database.db, 'users');
    const claimedAt = new Date();
    // Claims of workers killed before this version: a claim, and nothing naming the job.
    const template = await users.findOne({ _id: userId });
    const legacy = Array.from({ length: 120 }, (_, i) => ({
      ...template,
      _id: `u_legacyclaim${String(i).padStart(11, '0')}`,
      waId: `4470000${String(i).padStart(5, '0')}`,
      welcomeClaim: new Date(claimedAt.getTime() - 3_600_000 + i),
    }));
    await users.insertMany(legacy as never[]);
    try {
      expect(await app.services.data.users.claimWelcome(userId, claimedAt, 24, LEASE_MS, job)).toBe(true);
      const at = (ms: number) => ({ ...app.services, now: () => new Date(claimedAt.getTime() + ms) });
      const jobs = await sweepStaleReplies(at(LEASE_MS + SWEEP_GRACE_MS), log);
      expect(jobs.filter((j) => j.userId === userId)).toEqual([job]);
      expect(jobs.filter((j) => j.userId.startsWith('u_legacyclaim'))).toEqual([]);
    } finally {
      await users.deleteMany({ _id: { $in: legacy.map((u) => u._id) } });
    }
  });
});
