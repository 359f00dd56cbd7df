// Database round trips per path, counted with the driver's command monitoring against the real test
// server: one inbound text and its answer (AI included, history read included) within 8, a
// status within 1. Cosmos DB bills every request: a path over its budget fails here. Of the 8, one
// is the user read again just before the answer goes out (an operator may have taken over).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { processReplyJob } from '../../shared/bot/reply';
import { observeCommands, type ObservedCommand } from '../../shared/data';
import { createLogger } from '../../shared/log';
import { startTestApp, type TestApp } from '../helpers/app';
import {
  notification,
  nowSeconds,
  status,
  textMessage,
  value,
  wamid,
  PHONE_NUMBER_ID,
  WABA_ID,
} from '../helpers/meta';

/**
 * The issue asks for at most 8: ingest 3, reply 5 (no counter write: the sweep folds counters in),
 * the user read again before a built-in answer as before an AI one.
 */
const TURN_BUDGET = 8;
/** An AI answer reads the user again once the model answered (an operator may have taken over). */
const AI_TURN_BUDGET = 8;
const STATUS_BUDGET = 1;
/** A notification of another field, whatever its size (up to the webhook's 3 MiB): archived in bulk. */
const ARCHIVE_BUDGET = 12;

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

  const budget = 'ai' in mode ? AI_TURN_BUDGET : TURN_BUDGET;
  it(`one inbound text and its answer take at most ${budget} round trips`, async () => {
    const from = newPhone();
    await turn(from, 'first contact creates the user'); // a new user costs more, once
    await turn(from, 'some history');
    const { ingest, reply } = await turn(from, 'how are you?');
    const all = [...ingest, ...reply];
    process.stderr.write(
      `round-trips (${_label}): ingest ${ingest.length}, reply ${reply.length}: ${all.join(', ')}\n`,
    );
    expect(all.length, all.join('\n')).toBeLessThanOrEqual(budget);
    // The answer went out and was recorded.
    expect(app.graph.sends().length).toBeGreaterThanOrEqual(3);
  });

  it('a command that changes the user writes that first: reset 9; stop, start and human 8 (no read again)', async () => {
    const from = newPhone();
    await turn(from, 'first contact creates the user');
    const costs: Record<string, number> = {};
    for (const word of ['reset', 'stop', 'start', 'human']) {
      const { ingest, reply } = await turn(from, word);
      costs[word] = ingest.length + reply.length;
    }
    expect(costs).toEqual({ reset: 9, stop: 8, start: 8, human: 8 });
  });

  it('statuses of one message in one notification never share a bulk write (Cosmos DB may run its writes at once)', async () => {
    const phone = newPhone();
    const ids = [wamid(), wamid()];
    const seen: ObservedCommand[] = [];
    const stop = observeCommands((c) => {
      if (c.databaseName === app.database.dbName && c.commandName === 'update') seen.push(c);
    });
    try {
      await ingestNotification(
        app.services,
        notification(
          value({
            statuses: [
              status(ids[0] as string, 'sent', phone),
              status(ids[1] as string, 'sent', phone),
              status(ids[0] as string, 'delivered', phone),
              status(ids[0] as string, 'read', phone),
              status(ids[1] as string, 'delivered', phone),
            ],
          }),
        ),
        log,
      );
    } finally {
      stop();
    }
    const writes = seen.map((c) =>
      (c.command['updates'] as { q: { _id?: unknown } }[]).map((u) => String(u.q._id)),
    );
    expect(writes.flat().sort()).toEqual([...ids, ...ids, ids[0]].sort());
    for (const write of writes) expect(new Set(write).size).toBe(write.length);
    // Each message ends at its highest status, whatever ran when.
    const stored = (id: string) =>
      app.database.db.collection('messages').findOne({ _id: id } as Record<string, unknown>);
    expect((await stored(ids[0] as string))?.['status']).toBe('read');
    expect((await stored(ids[1] as string))?.['status']).toBe('delivered');
  });

  // Graph giving wamids it gave before (a stand-in answering every send with one id): the parts
  // whose wamid is taken are read in one round trip, whatever their number, and stored apart.
  it('an answer whose parts all got taken wamids reads what those wamids hold once', async () => {
    const from = newPhone();
    await turn(from, 'hello');
    const userId = (await app.services.data.users.findByIdentity({ waId: from, bsuid: null }))?.id ?? '';
    const taken = (await app.services.data.manage.listMessages({ userId, limit: 1, after: null })).items[0];
    expect(taken?.direction).toBe('outbound');
    const inbound = (await app.services.data.manage.listMessages({ userId, limit: 2, after: null })).items[1];
    expect(inbound?.direction).toBe('inbound');
    const createdAt = new Date();
    const parts = [1, 2, 3].map((n) => ({
      id: taken?.id ?? '',
      waMessageId: taken?.id ?? '',
      userId,
      type: 'text',
      text: `part ${n}`,
      status: 'sent' as const,
      createdAt: new Date(createdAt.getTime() + n),
      role: 'conversation' as const,
      phoneNumberId: PHONE_NUMBER_ID,
      relatedId: inbound?.id ?? null,
      error: null,
      ai: null,
    }));
    let stored: string[] = [];
    const commands = await count.during(async () => {
      const settled = await app.services.data.messages.settleReply({
        inbound: inbound as NonNullable<typeof inbound>,
        parts,
        state: 'sent',
        error: null,
        read: false,
      });
      stored = settled.stored.map((r) => r.text);
    });
    const reads = commands.filter((c) => /^(find|findOne|aggregate) /.test(c));
    expect(reads, commands.join('\n')).toHaveLength(1);
    expect(stored.sort()).toEqual(['part 1', 'part 2', 'part 3']);
    const kept = await app.database.db
      .collection('messages')
      .find({ waMessageId: taken?.id, text: /^part / } as Record<string, unknown>)
      .toArray();
    expect(kept).toHaveLength(3);
    for (const doc of kept) expect(String(doc._id)).toMatch(/^out:/);
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
    const { stats } = app.services.data;
    expect((await stats.totals()).failed - (await stats.runningTotals()).failed).toBe(1);
  });
});

describe('round trips of large notifications of other fields', () => {
  let app: TestApp;
  let count: ReturnType<typeof counter>;
  beforeAll(async () => {
    app = await startTestApp();
    count = counter(app.database.dbName);
  });
  afterAll(async () => {
    count.stop();
    await app.close();
  });

  const business = { display_phone_number: '15550783881', phone_number_id: PHONE_NUMBER_ID };
  const change = (field: string, v: Record<string, unknown>) => ({
    object: 'whatsapp_business_account',
    entry: [{ id: WABA_ID, changes: [{ field, value: v }] }],
  });

  it(`a history of 1,000 threads (Meta's chat history sync, near 3 MB) takes at most ${ARCHIVE_BUDGET} round trips, each thread filed under its person`, async () => {
    const at = Math.floor(Date.now() / 1000) - 30 * 86_400;
    const people = Array.from({ length: 1_000 }, () => newPhone());
    // Ten messages a thread, from the person and from the business (history_context: Meta's).
    const threads = people.map((id, t) => ({
      id,
      messages: Array.from({ length: 10 }, (_, i) => ({
        from: i % 2 ? business.display_phone_number : id,
        ...(i % 2 ? { to: id } : {}),
        id: wamid(),
        timestamp: String(at + t * 10 + i),
        type: 'text',
        text: { body: `history message ${i} of a thread, with a few more words in it` },
        history_context: { status: i % 2 ? 'DELIVERED' : 'READ' },
      })),
    }));
    const payload = change('history', {
      messaging_product: 'whatsapp',
      metadata: business,
      history: [{ metadata: { phase: 1, chunk_order: 1, progress: 40 }, threads }],
    });
    expect(JSON.stringify(payload).length).toBeGreaterThan(2_500_000);
    const commands = await count.during(() => ingestNotification(app.services, payload, log));
    process.stderr.write(`round-trips (history of 1,000 threads): ${commands.length}\n`);
    expect(commands.length, commands.join('\n')).toBeLessThanOrEqual(ARCHIVE_BUDGET);
    const events = app.database.db.collection('events');
    expect(await events.countDocuments({ reason: 'field history' })).toBe(1_000);
    // Filed per person: each thread under the subject of its own number.
    for (const person of [people[0], people[499], people[999]]) {
      const subject = await app.services.data.events.subjectOf(person ?? '');
      const filed = await events.find({ subject }).toArray();
      expect(filed).toHaveLength(1);
      expect(String(filed[0]?.['payloadJson'])).toContain(`"id":"${person ?? ''}"`);
    }
    // Delivered again: nothing new, in as few round trips.
    const again = await count.during(() => ingestNotification(app.services, payload, log));
    expect(again.length).toBeLessThanOrEqual(ARCHIVE_BUDGET);
    expect(await events.countDocuments({ reason: 'field history' })).toBe(1_000);
  });

  it(`2,000 echoes of the Business app in one notification take at most ${ARCHIVE_BUDGET} round trips`, async () => {
    const echoes = Array.from({ length: 2_000 }, (_, i) => ({
      from: business.display_phone_number,
      to: newPhone(),
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'text',
      text: { body: `echo ${i}` },
    }));
    const payload = change('smb_message_echoes', {
      messaging_product: 'whatsapp',
      metadata: business,
      message_echoes: echoes,
    });
    const commands = await count.during(() => ingestNotification(app.services, payload, log));
    process.stderr.write(`round-trips (2,000 Business app echoes): ${commands.length}\n`);
    expect(commands.length, commands.join('\n')).toBeLessThanOrEqual(ARCHIVE_BUDGET);
    expect(
      await app.database.db.collection('events').countDocuments({ reason: 'field smb_message_echoes' }),
    ).toBe(2_000);
  });
});
