// The welcome's claim (shared/bot/reply.ts `sendWelcome`, users.claimWelcome): a worker killed
// between claiming the welcome and sending it leaves a claim that ends with its lease, so the job
// the queue hands over again sends the welcome; while a claim holds, no other job sends it.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { LEASE_MS, processReplyJob } from '../../shared/bot/reply';
import { WELCOME_TEXT } from '../../shared/bot/texts';
import { startTestApp, type TestApp } from '../helpers/app';
import { capturedLog } from '../helpers/logs';
import { notification, nowSeconds, value, wamid } from '../helpers/meta';
import { userIdOf } from '../helpers/users';

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
    const opened = { from: waId, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
    const { jobs } = await ingestNotification(
      app.services,
      notification(value({ contacts: [{ waId, name: 'New' }], messages: [opened] })),
      log,
    );
    const [job] = jobs;
    expect(job).toMatchObject({ kind: 'welcome' });
    const { data } = app.services;
    const userId = await userIdOf(data, waId);
    // The first worker claimed the welcome, and its process was killed before the send.
    const claimedAt = new Date();
    expect(await data.users.claimWelcome(userId, claimedAt, 24, LEASE_MS)).toBe(true);
    // Another job while the claim holds (the first worker may still be sending): nothing.
    const at = (ms: number) => ({ ...app.services, now: () => new Date(claimedAt.getTime() + ms) });
    await processReplyJob(at(1_000), job!, log);
    expect(welcomesTo(waId)).toEqual([]);
    // The queue hands the job over again (in Azure, after its 10-minute lease): the welcome goes out.
    await processReplyJob(at(10 * 60_000), job!, log);
    expect(welcomesTo(waId)).toHaveLength(1);
    expect((await data.users.getUser(userId))?.welcomeSentAt).toBeInstanceOf(Date);
    const out = (await data.messages.recent(userId, 10)).filter((m) => m.direction === 'outbound');
    expect(out.map((m) => m.text)).toEqual([WELCOME_TEXT]);
    // Once sent, never again (a redelivered request_welcome, a later one).
    await processReplyJob(at(30 * 60_000), job!, log);
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
