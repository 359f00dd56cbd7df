// The app wired for a test: a fresh database, a Graph stub, services built like production, and
// the real function handlers called with HttpRequest/InvocationContext, capturing logs and jobs.
// `post` runs the webhook and then, as the queue would, the ingest function on what it queued.
import { InvocationContext, type HttpResponseInit } from '@azure/functions';
import { loadConfig, type Env } from '../../shared/config';
import { createDataStore } from '../../shared/data';
import { buildServices, runtimeOf, type Services } from '../../shared/deps';
import type { ReplyJob } from '../../shared/bot/jobs';
import type { AiResponder } from '../../shared/bot/ports';
import { inboundQueueOutput, receiveWebhook, replyQueueOutput, verifyWebhook } from '../../functions/webhook';
import { ingestWorker } from '../../functions/ingest';
import { poisonWorker, replyWorker } from '../../functions/reply';
import { startGraphStub, type GraphStub } from './graph-stub';
import { testDatabase, type TestDatabase } from './db';
import { signed, textNotification } from './meta';
import { signBody } from '../../shared/whatsapp/signature';
import { hostRequest } from '../../scripts/lib/host-request';

export const APP_SECRET = 'test-app-secret-0123456789';
export const VERIFY_TOKEN = 'test-verify-token';
export const ACCESS_TOKEN = 'EAAtest-access-token-SECRET';

export interface TestApp {
  services: Services;
  graph: GraphStub;
  database: TestDatabase;
  logs: string[];
  /** Jobs the webhook queued and not run yet, in order. */
  queued: ReplyJob[];
  context(name?: string): InvocationContext;
  post(
    payload: unknown,
    options?: { signature?: string | null; raw?: string; escapeUnicode?: boolean; chunked?: boolean },
  ): Promise<{ status: number; body: string; jobs: ReplyJob[]; inbound: unknown }>;
  /** Runs the ingest function on one `inbound` item; returns the reply jobs it queued. */
  ingest(item: unknown): Promise<ReplyJob[]>;
  /** GET /api/webhook with this query (a raw query string may repeat a parameter), as the host builds it. */
  verify(query: Record<string, string> | string): Promise<{ status: number; body: string }>;
  runJob(job: ReplyJob): Promise<void>;
  runPoison(job: ReplyJob): Promise<void>;
  /** Runs (and removes) every queued job, in order. */
  drain(): Promise<void>;
  /** The user writes `text` (a text notification, 200 required), and the reply worker runs. */
  userWrites(waId: string, text: string, name?: string): Promise<void>;
  close(): Promise<void>;
}

async function bodyText(response: HttpResponseInit): Promise<string> {
  if (response.jsonBody !== undefined) return JSON.stringify(response.jsonBody);
  return typeof response.body === 'string' ? response.body : '';
}

export async function startTestApp(
  env: Env = {},
  options: { now?: () => Date; ai?: AiResponder | null } = {},
): Promise<TestApp> {
  const database = await testDatabase('app');
  const graph = await startGraphStub();
  const config = loadConfig({
    WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
    WHATSAPP_APP_SECRET: APP_SECRET,
    WHATSAPP_ACCESS_TOKEN: ACCESS_TOKEN,
    WHATSAPP_GRAPH_URL: graph.url,
    MONGODB_URI: database.uri,
    MONGODB_DATABASE: database.dbName,
    ...env,
  });
  const data = createDataStore(database.db);
  await data.ensureIndexes('create');
  const services = await buildServices(config, {
    data,
    graphRetry: { attempts: 4, baseDelayMs: 5, maxDelayMs: 20 },
    ...options,
  });
  const runtime = runtimeOf(services);
  const logs: string[] = [];
  const queued: ReplyJob[] = [];
  const context = (name = 'test') =>
    new InvocationContext({
      functionName: name,
      logHandler: (level, ...args) => logs.push(`${level} ${args.map(String).join(' ')}`),
    });
  const receive = receiveWebhook(runtime);
  const verifyHandler = verifyWebhook(runtime);
  const worker = replyWorker(runtime);
  const ingest = ingestWorker(runtime);
  const poison = poisonWorker(runtime);

  const app: TestApp = {
    services,
    graph,
    database,
    logs,
    queued,
    context,
    async post(payload, options = {}) {
      const { body, signature } =
        options.raw !== undefined
          ? { body: options.raw, signature: signBody(options.raw, APP_SECRET) }
          : signed(payload, APP_SECRET, options.escapeUnicode ?? true);
      const header = options.signature === undefined ? signature : options.signature;
      // Built as the Functions host builds it: the body's bytes, none when sent chunked.
      const request = hostRequest({
        method: 'POST',
        url: 'http://localhost/api/webhook',
        headers: {
          'content-type': 'application/json',
          ...(options.chunked
            ? { 'transfer-encoding': 'chunked' }
            : { 'content-length': String(Buffer.byteLength(body, 'utf8')) }),
          ...(header === null ? {} : { 'x-hub-signature-256': header }),
        },
        body,
      });
      const ctx = context('webhookReceive');
      const response = await receive(request, ctx);
      const inbound = ctx.extraOutputs.get(inboundQueueOutput);
      const jobs = inbound === undefined ? [] : await app.ingest(inbound);
      return { status: response.status ?? 200, body: await bodyText(response), jobs, inbound };
    },
    async ingest(item) {
      const ctx = context('ingest');
      // The queue hands JSON over parsed, like the host does.
      const text = typeof item === 'string' ? item : JSON.stringify(item);
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // handed over as a string
      }
      await ingest(parsed, ctx);
      const jobs = (ctx.extraOutputs.get(replyQueueOutput) as ReplyJob[] | undefined) ?? [];
      queued.push(...jobs);
      return jobs;
    },
    async verify(query) {
      const search = typeof query === 'string' ? query : new URLSearchParams(query).toString();
      const request = hostRequest({
        method: 'GET',
        url: `http://localhost/api/webhook?${search}`,
        headers: {},
      });
      const response = await verifyHandler(request, context('webhookVerify'));
      return { status: response.status ?? 200, body: await bodyText(response) };
    },
    async runJob(job) {
      const ctx = context('reply');
      await worker(JSON.parse(JSON.stringify(job)), ctx);
      // A follow-up job (more waited than one job's looks answer) is queued, as the host does.
      queued.push(...((ctx.extraOutputs.get(replyQueueOutput) as ReplyJob[] | undefined) ?? []));
    },
    // As the host hands it over: a new message on reply-jobs-poison, received for the first time.
    runPoison: (job) =>
      poison(
        JSON.parse(JSON.stringify(job)),
        new InvocationContext({
          functionName: 'replyPoison',
          logHandler: (level, ...args) => logs.push(`${level} ${args.map(String).join(' ')}`),
          triggerMetadata: { dequeueCount: 1, queueTrigger: JSON.stringify(job) },
        }),
      ),
    async drain() {
      for (let job = queued.shift(); job; job = queued.shift()) await app.runJob(job);
    },
    async userWrites(waId, text, name) {
      const { status } = await app.post(textNotification(waId, text, name).payload);
      if (status !== 200) throw new Error(`the webhook answered ${status} to a text notification`);
      await app.drain();
    },
    async close() {
      await graph.close();
      await database.drop();
    },
  };
  return app;
}
