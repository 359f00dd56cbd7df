// Two app instances on one database (Flex Consumption scales out: several hosts run the queue
// functions at once), each with its own data store, as two processes have. A job handed to both at
// once (a redelivery, two sweepers) is done once: the claims are single-document writes that the
// database isolates whichever process sends them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { ingestNotification } from '../../shared/bot/ingest';
import { processReplyJob } from '../../shared/bot/reply';
import { WELCOME_TEXT } from '../../shared/bot/texts';
import { createDataStore } from '../../shared/data';
import { CLIENT_OPTIONS } from '../../shared/data/client';
import { buildServices, type Services } from '../../shared/deps';
import type { ReplyJob } from '../../shared/bot/jobs';
import { startTestApp, type TestApp } from '../helpers/app';
import { capturedLog } from '../helpers/logs';
import { notification, nowSeconds, textMessage, value, wamid } from '../helpers/meta';

let app: TestApp;
let other: Services;
let otherClient: MongoClient;
const { log } = capturedLog();
let n = 0;
const newNumber = () => `4475${Date.now().toString().slice(-6)}${++n}`;

beforeAll(async () => {
  app = await startTestApp();
  // The second instance: its own connection and data store, the same database and Graph.
  otherClient = await new MongoClient(app.database.uri, CLIENT_OPTIONS).connect();
  other = await buildServices(app.services.config, {
    data: createDataStore(otherClient.db(app.database.dbName)),
    graphRetry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 },
  });
});

afterAll(async () => {
  await otherClient?.close();
  await app?.close();
});

const USERS = 30;

/** The reply jobs of one message from `waId`, stored by the first instance. */
async function jobsOf(waId: string, message: unknown): Promise<ReplyJob[]> {
  const notified = notification(value({ contacts: [{ waId }], messages: [message] }));
  return (await ingestNotification(app.services, notified, log)).jobs;
}

/** Each job run on both instances at once. */
const onBoth = (jobs: readonly ReplyJob[]) =>
  Promise.all(
    jobs.flatMap((job) => [processReplyJob(app.services, job, log), processReplyJob(other, job, log)]),
  );

describe('two instances handed the same job at once', () => {
  it('send each welcome once', async () => {
    const numbers = Array.from({ length: USERS }, newNumber);
    const jobs: ReplyJob[] = [];
    for (const waId of numbers) {
      const opened = { from: waId, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
      jobs.push(...(await jobsOf(waId, opened)));
    }
    expect(jobs).toHaveLength(USERS);
    await onBoth(jobs);
    const welcomes = (waId: string) =>
      app.graph
        .sends()
        .filter((r) => r.body['to'] === waId && (r.body['text'] as { body: string }).body === WELCOME_TEXT);
    expect(numbers.filter((waId) => welcomes(waId).length !== 1)).toEqual([]);
  });

  it('answer each message once', async () => {
    const numbers = Array.from({ length: USERS }, newNumber);
    const jobs: ReplyJob[] = [];
    for (const waId of numbers) {
      jobs.push(...(await jobsOf(waId, textMessage(waId, 'hello'))));
    }
    expect(jobs).toHaveLength(USERS);
    await onBoth(jobs);
    const sent = (waId: string) => app.graph.sends().filter((r) => r.body['to'] === waId).length;
    expect(numbers.filter((waId) => sent(waId) !== 1)).toEqual([]);
  });
});
