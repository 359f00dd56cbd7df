// What Meta sends over time, played against `npm run dev` over HTTP: a process killed in the middle
// of what it was doing, then Meta delivering again. Each case here failed before its fix.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDev, waitFor, type DevProcess } from '../helpers/dev-process';
import { startGraphStub, type GraphStub, type StubResponse } from '../helpers/graph-stub';
import { startHttpStub, type HttpStub } from '../helpers/http-stub';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { signed, textNotification } from '../helpers/meta';

const SECRET = 'meta-sequences-secret';

const pairLimited = (): StubResponse => ({
  status: 400,
  body: {
    error: {
      message: '(#131056) (Business Account, Consumer Account) pair rate limit hit',
      type: 'OAuthException',
      code: 131056,
      fbtrace_id: 'AbCdEf123',
    },
  },
});

const accepted = (id: string): StubResponse => ({
  status: 200,
  body: { messaging_product: 'whatsapp', contacts: [], messages: [{ id }] },
});

// An answer of two paragraphs of 3,000 characters: two WhatsApp messages.
const FIRST = 'alpha '.repeat(500).trim();
const SECOND = 'omega '.repeat(500).trim();
const label = (text: unknown) =>
  text === FIRST ? 'first' : text === SECOND ? 'second' : String(text).slice(0, 40);

describe('npm run dev killed during a split reply', () => {
  let graph: GraphStub;
  let ai: HttpStub;
  let database: TestDatabase;
  const cleanups: (() => unknown)[] = [];

  beforeAll(async () => {
    graph = await startGraphStub();
    ai = await startHttpStub(() => ({
      status: 200,
      body: {
        model: 'm',
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: `${FIRST}\n\n${SECOND}` },
            finish_reason: 'stop',
          },
        ],
        usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
      },
    }));
    database = await testDatabase('meta_sequences');
  });

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
    await graph?.close();
    await ai?.close();
    await database?.drop();
  });

  it('sends each part once: the parts already out are not sent again after the restart', async () => {
    const env = {
      MONGODB_URI: database.uri,
      MONGODB_DATABASE: database.dbName,
      WHATSAPP_VERIFY_TOKEN: 'v',
      WHATSAPP_APP_SECRET: SECRET,
      WHATSAPP_ACCESS_TOKEN: 'EAA-meta-sequences',
      WHATSAPP_GRAPH_URL: graph.url,
      AI_ENDPOINT: ai.url,
      AI_MODEL: 'm',
    };
    let dev: DevProcess = await startDev(env);
    const dataDir = dev.dataDir;
    cleanups.push(() => rmSync(dataDir, { recursive: true, force: true }));
    // The first part goes out; the second meets the pair rate limit, and the worker waits 6 s.
    graph.sendResponses.push(accepted('wamid.part.1'), pairLimited());
    const from = '447700900123';
    const { message, payload } = textNotification(from, 'tell me everything');
    const { body, signature } = signed(payload, SECRET);
    const deliver = () =>
      fetch(`${dev.url}/api/webhook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
        body,
      });
    expect((await deliver()).status).toBe(200);
    await waitFor(async () => graph.sends().length >= 2, 30_000);
    await dev.kill();

    dev = await startDev({ ...env, DEV_DATA_DIR: dataDir });
    cleanups.push(() => dev.stop());
    // The killed worker's lease has run out (LEASE_MS), and Meta delivers the notification again.
    await database.db
      .collection<{ _id: string }>('users')
      .updateMany({}, { $set: { 'replyLock.until': new Date(Date.now() - 1000) } });
    expect((await deliver()).status).toBe(200);
    const messages = database.db.collection<{ _id: string } & Record<string, unknown>>('messages');
    await waitFor(
      async () => (await messages.findOne({ _id: message.id }))?.['replyState'] === 'sent',
      30_000,
    );

    const went = graph
      .sends()
      .map((s, i) => ({ text: (s.body['text'] as { body: string }).body, refused: i === 1 }))
      .filter((s) => !s.refused)
      .map((s) => label(s.text));
    expect(went).toEqual(['first', 'second']);
    expect(ai.requests).toHaveLength(1);
    const parts = await messages.find({ relatedId: message.id, direction: 'outbound' }).toArray();
    parts.sort((a, b) => (a['seqAt'] as Date).getTime() - (b['seqAt'] as Date).getTime());
    expect(parts.map((p) => [label(p['text']), p['status']])).toEqual([
      ['first', 'sent'],
      ['second', 'sent'],
    ]);
  }, 120_000);
});
