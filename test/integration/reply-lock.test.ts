// The per-user reply lock: a job that finds another worker answering the user ends at once (no
// waiting, no failure, no poison queue), a lock left by a worker that died is taken again once
// its lease ends, so the user is answered, and a live worker keeps its lock however long an answer
// takes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import type { ReplyJob } from '../../shared/bot/jobs';
import { LEASE_MS, processReplyJob } from '../../shared/bot/reply';
import { createLogger } from '../../shared/log';
import { sleep } from '../../shared/time';
import { startTestApp, type TestApp } from '../helpers/app';
import { startHttpStub } from '../helpers/http-stub';
import { textNotification } from '../helpers/meta';
import { storeWithWriterBefore } from '../helpers/interleave';
import { collectionOf } from '../helpers/raw';
import { operatorMessage } from '../helpers/records';

let app: TestApp;
const log = createLogger({ log: () => undefined, warn: () => undefined, error: () => undefined });

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

describe('reply lock', () => {
  it('a job for a user another worker is answering ends at once and leaves the message waiting', async () => {
    const { message, payload } = textNotification('4420700000001', 'hello');
    const { jobs } = await ingestNotification(app.services, payload, log);
    const job = jobs[0];
    if (job?.kind !== 'message') throw new Error('no reply job');
    expect(
      await app.services.data.users.lockForReply(job.userId, 'live-worker', LEASE_MS, new Date()),
    ).not.toBeNull();
    const started = Date.now();
    await processReplyJob(app.services, job, log);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect((await app.services.data.messages.getMessage(message.id))?.replyState).toBe('pending');
    expect(app.graph.sends().filter((s) => s.body['to'] === '4420700000001')).toHaveLength(0);
  });

  it('a lock whose lease ended (its worker died) is taken again and the user answered', async () => {
    const { message, payload } = textNotification('4420700000002', 'anyone there?');
    const { jobs } = await ingestNotification(app.services, payload, log);
    const job = jobs[0];
    if (job?.kind !== 'message') throw new Error('no reply job');
    const longAgo = new Date(Date.now() - 2 * LEASE_MS);
    expect(
      await app.services.data.users.lockForReply(job.userId, 'dead-worker', LEASE_MS, longAgo),
    ).not.toBeNull();
    await processReplyJob(app.services, job, log);
    expect((await app.services.data.messages.getMessage(message.id))?.replyState).toBe('sent');
    expect(app.graph.sends().filter((s) => s.body['to'] === '4420700000002')).toHaveLength(1);
  });

  it('a message whose answer was recorded but not settled (a crash between the two) is settled without a second send', async () => {
    const phone = '4420700000003';
    const { message, payload } = textNotification(phone, 'half done');
    const { jobs } = await ingestNotification(app.services, payload, log);
    const job = jobs[0];
    if (job?.kind !== 'message') throw new Error('no reply job');
    // The outbound half of the record write landed, the inbound half did not.
    await app.services.data.messages.recordOutbound({
      id: 'wamid.already-sent',
      waMessageId: 'wamid.already-sent',
      userId: job.userId,
      type: 'text',
      text: 'the answer that went out',
      status: 'sent',
      createdAt: new Date(),
      role: 'conversation',
      phoneNumberId: message.id ? '106540352242922' : null,
      relatedId: message.id,
      error: null,
      ai: null,
    });
    const sendsBefore = app.graph.sends().length;
    await processReplyJob(app.services, job, log);
    expect(app.graph.sends().length).toBe(sendsBefore);
    expect((await app.services.data.messages.getMessage(message.id))?.replyState).toBe('sent');
  });

  it('a worker killed after recording its answer, before it freed the lock, leaves the counters exact', async () => {
    const phone = '4420700000005';
    const { message, payload } = textNotification(phone, 'count me');
    const [job] = (await ingestNotification(app.services, payload, log)).jobs;
    if (job?.kind !== 'message') throw new Error('no reply job');
    const { data } = app.services;
    const before = await data.stats.totals();
    // The process dies right after the write that records the answer: the lock is never freed.
    const users = Object.create(data.users, {
      releaseReplyLock: { value: () => Promise.reject(new Error('killed')) },
    }) as typeof data.users;
    const leaseMs = 300;
    await expect(
      processReplyJob({ ...app.services, data: { ...data, users } }, job, log, { leaseMs }),
    ).rejects.toThrow('killed');
    expect((await data.messages.getMessage(message.id))?.replyState).toBe('sent');
    // The stats count the message and its answer at once, and the health check agrees.
    const after = await data.stats.totals();
    expect([after.inbound - before.inbound, after.outbound - before.outbound]).toEqual([1, 1]);
    expect(await data.maintenance.checkCounters(await data.maintenance.countStored())).toEqual([]);
    // The sweep folds them into the running counters: the figures do not move.
    const folded = await data.stats.foldPending();
    expect(folded.messages).toBeGreaterThanOrEqual(2);
    expect(await data.stats.runningTotals()).toEqual(after);
    expect(await data.stats.totals()).toEqual(after);
    expect((await data.stats.foldPending()).messages).toBe(0);

    // The summary lacks the answer until the next worker takes the lock over, once the dead
    // worker's lease has ended: it recounts the summary from what is stored.
    const summaryOf = async () => {
      const u = await data.users.getUser(job.userId);
      return [u?.messageCount, u?.lastMessagePreview];
    };
    expect(await summaryOf()).toEqual([1, 'count me']);
    await sleep(leaseMs + 50);
    const next = textNotification(phone, 'still there?');
    const [nextJob] = (await ingestNotification(app.services, next.payload, log)).jobs;
    if (nextJob?.kind !== 'message') throw new Error('no reply job');
    await processReplyJob(app.services, nextJob, log);
    const latest = app.graph.sends().at(-1)?.body['text'] as { body: string } | undefined;
    expect(await summaryOf()).toEqual([4, latest?.body]);
    expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
  });

  it('a notification stored before its writer died (no summary) is recounted when Meta or the queue delivers it again', async () => {
    const phone = '4420700000006';
    const { message, payload } = textNotification(phone, 'first try');
    const { data } = app.services;
    // A first delivery created the user, then died between storing the message and the summary.
    const { user } = await data.users.resolve({ waId: phone, bsuid: null, name: null }, new Date());
    await data.messages.recordInbound({
      id: message.id,
      userId: user.id,
      type: 'text',
      text: 'first try',
      createdAt: new Date(),
      receivedAt: new Date(),
      phoneNumberId: '106540352242922',
      role: 'conversation',
      replyState: 'pending',
      relatedId: null,
      rawJson: '{}',
    });
    expect((await data.users.getUser(user.id))?.messageCount).toBe(0);
    const [job] = (await ingestNotification(app.services, payload, log)).jobs;
    expect(job).toMatchObject({ kind: 'message', messageId: message.id, recount: true });
    if (job?.kind !== 'message') throw new Error('no reply job');
    await processReplyJob(app.services, job, log);
    expect((await data.messages.getMessage(message.id))?.replyState).toBe('sent');
    expect((await data.users.getUser(user.id))?.messageCount).toBe(2);
    expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
  });

  it('a recount loses nothing an operator sends meanwhile (an outbound message moves no inbound count)', async () => {
    const phone = '4420700000007';
    const { payload } = textNotification(phone, 'hello again');
    const [job] = (await ingestNotification(app.services, payload, log)).jobs;
    if (job?.kind !== 'message') throw new Error('no reply job');
    await processReplyJob(app.services, job, log);
    const { data } = app.services;
    // The summary lacks the answer (its worker died before noting it).
    await collectionOf(app.database.db, 'users').updateOne(
      { _id: job.userId },
      { $inc: { messageCount: -1 } },
    );
    // Meta delivers the notification again: its job recounts the summary. Between the recount's
    // reads and its write, an operator's message is stored and noted.
    const [again] = (await ingestNotification(app.services, payload, log)).jobs;
    if (again?.kind !== 'message' || !again.recount) throw new Error('no recount job');
    const { store, ran } = storeWithWriterBefore(app.database.db, 'users', async () => {
      expect(
        await data.messages.recordOutbound(
          operatorMessage(job.userId, 'wamid.operator-during-recount', 'an operator here'),
        ),
      ).toBe('inserted');
    });
    const users = store.users;
    await processReplyJob({ ...app.services, data: { ...data, users } }, again, log);
    expect(ran()).toBeGreaterThan(0);
    const user = await data.users.getUser(job.userId);
    expect([user?.messageCount, user?.lastMessagePreview]).toEqual([3, 'an operator here']);
    expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
  });

  it('keeps the lock while one answer outlasts the lease (a slow model): no message is answered twice', async () => {
    const model = await startHttpStub((_req, index) => ({
      status: 200,
      // The first question keeps the model busy well past the lease.
      delayMs: index === 0 ? 2_500 : 0,
      body: { choices: [{ message: { role: 'assistant', content: `answer ${index + 1}` } }] },
    }));
    const slowApp = await startTestApp({
      AI_ENDPOINT: `${model.url}/v1`,
      AI_MODEL: 'm',
      AI_TIMEOUT_MS: '10000',
    });
    try {
      const phone = '4420700000004';
      const lease = { leaseMs: 900 };
      const first = textNotification(phone, 'a hard question');
      const [job] = (await ingestNotification(slowApp.services, first.payload, log)).jobs;
      if (job?.kind !== 'message') throw new Error('no reply job');
      const answering = processReplyJob(slowApp.services, job, log, lease);
      await sleep(1_500);
      // Another message's job, once the first worker's original lease is over.
      const second = textNotification(phone, 'hello?');
      const [next] = (await ingestNotification(slowApp.services, second.payload, log)).jobs;
      if (next?.kind !== 'message') throw new Error('no reply job');
      await processReplyJob(slowApp.services, next, log, lease);
      await answering;
      const answers = await slowApp.database.db
        .collection('messages')
        .find({ direction: 'outbound', relatedId: { $in: [first.message.id, second.message.id] } })
        .toArray();
      expect(answers.map((a) => a['relatedId'] as string).sort()).toEqual(
        [first.message.id, second.message.id].sort(),
      );
      expect(slowApp.graph.sends()).toHaveLength(2);
    } finally {
      await slowApp.close();
      await model.close();
    }
  });

  it('a worker paused past its lease sends nothing once another worker may have taken the user over', async () => {
    const phone = '4420700000008';
    const { message, payload } = textNotification(phone, 'paused?');
    const [job] = (await ingestNotification(app.services, payload, log)).jobs;
    if (job?.kind !== 'message') throw new Error('no reply job');
    let clock = Date.now();
    const { graph, data } = app.services;
    // The process stops (a frozen instance, a long pause) right after the read receipt, for two
    // leases; meanwhile another worker takes the user's lock, whose lease is over. No renewal
    // ran during the pause, so only the clock can tell the worker its lease is gone.
    const paused = Object.create(graph, {
      markRead: {
        value: async (...args: Parameters<typeof graph.markRead>) => {
          await graph.markRead(...args);
          clock += 2 * LEASE_MS;
          expect(
            await data.users.lockForReply(job.userId, 'other-worker', LEASE_MS, new Date(clock)),
          ).not.toBeNull();
        },
      },
    }) as typeof graph;
    const ports = { ...app.services, graph: paused, now: () => new Date(clock) };
    await processReplyJob(ports, job, log).catch(() => undefined);
    expect(app.graph.sends().filter((s) => s.body['to'] === phone)).toHaveLength(0);
    expect((await data.messages.getMessage(message.id))?.replyState).toBe('pending');
  });

  it('a user with more waiting than one job answers is handed to a follow-up job, the lock freed (not held until its lease ends)', async () => {
    const phone = '4420700000031';
    let first: Awaited<ReturnType<typeof ingestNotification>>['jobs'][number] | undefined;
    for (let i = 0; i < 45; i++) {
      const { jobs } = await ingestNotification(
        app.services,
        textNotification(phone, `burst ${i}`).payload,
        log,
      );
      first ??= jobs[0];
    }
    if (first?.kind !== 'message') throw new Error('no reply job');
    const sent = () => app.graph.sends().filter((s) => s.body['to'] === phone);
    const followUp = await processReplyJob(app.services, first, log, { maxLooks: 2 });
    // Two looks of 20 answered; the rest is a new job's, and nobody holds the user meanwhile.
    expect(sent()).toHaveLength(40);
    expect(followUp).toEqual([{ kind: 'message', userId: first.userId, messageId: first.messageId }]);
    const { users } = app.services.data;
    expect(await users.lockForReply(first.userId, 'another-worker', LEASE_MS, new Date())).not.toBeNull();
    await users.releaseReplyLock(first.userId, 'another-worker', []);
    const [next] = followUp;
    if (!next) throw new Error('no follow-up job');
    expect(await processReplyJob(app.services, next, log, { maxLooks: 2 })).toEqual([]);
    expect(sent()).toHaveLength(45);
    const waiting = await app.services.data.messages.pendingReplies(first.userId, 100);
    expect(waiting).toHaveLength(0);
  });

  it('a job whose time is spent starts no further answer: what waits goes to a follow-up job, in order, the lock freed', async () => {
    const phone = '4420700000032';
    let first: Awaited<ReturnType<typeof ingestNotification>>['jobs'][number] | undefined;
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const { message, payload } = textNotification(phone, `slow ${i}`);
      const { jobs } = await ingestNotification(app.services, payload, log);
      ids.push(message.id);
      first ??= jobs[0];
    }
    if (first?.kind !== 'message') throw new Error('no reply job');
    const sent = () => app.graph.sends().filter((s) => s.body['to'] === phone);
    const { users } = app.services.data;
    // A budget already spent after the first answer (production: minutes of slow answers).
    let job: ReplyJob | undefined = first;
    for (let jobs = 1; jobs <= 3; jobs++) {
      if (!job) throw new Error('no follow-up job');
      const followUp = await processReplyJob(app.services, job, log, { budgetMs: 0 });
      // One answer per job: the one the job started, never a second within the spent budget.
      expect(sent()).toHaveLength(jobs);
      expect(followUp).toEqual(
        jobs < 3 ? [{ kind: 'message', userId: first.userId, messageId: first.messageId }] : [],
      );
      // Nobody holds the user between the jobs.
      expect(await users.lockForReply(first.userId, 'another-worker', LEASE_MS, new Date())).not.toBeNull();
      await users.releaseReplyLock(first.userId, 'another-worker', []);
      job = followUp[0];
    }
    // Answered in the order sent, each once.
    const answers = (await app.services.data.messages.recent(first.userId, 20))
      .filter((m) => m.direction === 'outbound')
      .reverse();
    expect(answers.map((m) => m.relatedId)).toEqual(ids);
    expect(await app.services.data.messages.pendingReplies(first.userId, 100)).toHaveLength(0);
  });
});
