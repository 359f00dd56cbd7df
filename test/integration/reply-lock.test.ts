// The per-user reply lock: a job that finds another worker answering the user ends at once (no
// waiting, no failure, no poison queue), a lock left by a worker that died is taken again once
// its lease ends, so the user is answered, and a live worker keeps its lock however long an answer
// takes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { LEASE_MS, processReplyJob } from '../../shared/bot/reply';
import { createLogger } from '../../shared/log';
import { sleep } from '../../shared/time';
import { startTestApp, type TestApp } from '../helpers/app';
import { startHttpStub } from '../helpers/http-stub';
import { textNotification } from '../helpers/meta';

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
});
