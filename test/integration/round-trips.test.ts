// Database round trips per path, counted with the driver's command monitoring against the real test
// server: one inbound text and its answer (AI included, history read included) within 8, a
// status within 1. Cosmos DB bills every request: a path over its budget fails here.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { processReplyJob } from '../../shared/bot/reply';
import { observeCommands, type ObservedCommand } from '../../shared/data';
import { createLogger } from '../../shared/log';
import { startTestApp, type TestApp } from '../helpers/app';
import { notification, status, textMessage, value } from '../helpers/meta';

const TURN_BUDGET = 8;
const STATUS_BUDGET = 1;

const log = createLogger({ log: () => undefined, warn: () => undefined, error: () => undefined });
let seq = 0;
const newPhone = () => `4915${String(1_000_000 + ++seq)}`;

/** A loopback OpenAI-compatible chat-completions endpoint that always answers. */
async function startAiStub(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.end(
        JSON.stringify({
          model: 'stub-model',
          choices: [{ message: { role: 'assistant', content: 'An answer from the model.' } }],
          usage: { prompt_tokens: 12, completion_tokens: 5, total_tokens: 17 },
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}/v1`, close: () => new Promise((r) => server.close(() => r())) };
}

function counter(dbName: string) {
  const seen: ObservedCommand[] = [];
  const stop = observeCommands((c) => {
    if (c.databaseName === dbName) seen.push(c);
  });
  return {
    async during(work: () => Promise<unknown>): Promise<string[]> {
      seen.length = 0;
      await work();
      return seen.map((c) => `${c.commandName} ${String(c.command[c.commandName])}`);
    },
    stop,
  };
}

describe.each([
  ['built-in answers', {}],
  ['AI answers', { ai: true }],
])('round trips with %s', (_label, mode) => {
  let app: TestApp;
  let ai: { url: string; close(): Promise<void> } | null = null;
  let count: ReturnType<typeof counter>;

  beforeAll(async () => {
    ai = 'ai' in mode ? await startAiStub() : null;
    app = await startTestApp(ai ? { AI_ENDPOINT: ai.url, AI_MODEL: 'stub-model', AI_API_KEY: 'k' } : {});
    count = counter(app.database.dbName);
  });
  afterAll(async () => {
    count.stop();
    await app.close();
    await ai?.close();
  });

  async function turn(from: string, body: string): Promise<{ ingest: string[]; reply: string[] }> {
    const payload = notification(value({ contacts: [{ waId: from }], messages: [textMessage(from, body)] }));
    let jobs: Awaited<ReturnType<typeof ingestNotification>>['jobs'] = [];
    const ingest = await count.during(async () => {
      jobs = (await ingestNotification(app.services, payload, log)).jobs;
    });
    const reply = await count.during(() =>
      Promise.all(jobs.map((job) => processReplyJob(app.services, job, log))),
    );
    return { ingest, reply };
  }

  it(`one inbound text and its answer take at most ${TURN_BUDGET} round trips`, async () => {
    const from = newPhone();
    await turn(from, 'first contact creates the user'); // a new user costs more, once
    await turn(from, 'some history');
    const { ingest, reply } = await turn(from, 'how are you?');
    const all = [...ingest, ...reply];
    process.stderr.write(
      `round-trips (${_label}): ingest ${ingest.length}, reply ${reply.length}: ${all.join(', ')}\n`,
    );
    expect(all.length, all.join('\n')).toBeLessThanOrEqual(TURN_BUDGET);
    // The answer went out and was recorded.
    expect(app.graph.sends().length).toBeGreaterThanOrEqual(3);
  });

  it(`a status notification takes at most ${STATUS_BUDGET} round trip`, async () => {
    const from = newPhone();
    await turn(from, 'hello');
    const sent = app.graph.sends().at(-1);
    const wamidOf = app.graph.requests.length; // the stub answers sends with fresh wamids
    expect(wamidOf).toBeGreaterThan(0);
    const last = await app.services.data.manage.listMessages({
      userId: (await app.services.data.users.findByIdentity({ waId: from, bsuid: null }))?.id ?? '',
      limit: 1,
      after: null,
    });
    const outbound = last.items[0];
    expect(outbound?.direction).toBe('outbound');
    expect(sent).toBeDefined();
    // `failed` last (it is terminal), with the error Meta sends along.
    for (const state of ['sent', 'delivered', 'read', 'failed']) {
      const commands = await count.during(() =>
        ingestNotification(
          app.services,
          notification(
            value({
              statuses: [
                status(
                  outbound?.id ?? '',
                  state,
                  from,
                  state === 'failed' ? { errors: [{ code: 131026, title: 'Message undeliverable' }] } : {},
                ),
              ],
            }),
          ),
          log,
        ),
      );
      expect(commands.length, commands.join('\n')).toBeLessThanOrEqual(STATUS_BUDGET);
    }
    expect((await app.services.data.messages.getMessage(outbound?.id ?? ''))?.status).toBe('failed');
    // Counted in the stats all the same (the sweeper folds it into the running counter).
    expect(await app.services.data.messages.uncountedFailures()).toBe(1);
  });
});
