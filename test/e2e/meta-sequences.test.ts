// What Meta sends over time, played against `npm run dev` over HTTP: a process killed in the middle
// of what it was doing, then Meta delivering again. Each case here failed before its fix.
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDev, waitFor, type DevProcess } from '../helpers/dev-process';
import { accepted, pairLimited, startGraphStub, type GraphStub } from '../helpers/graph-stub';
import { startHttpStub, type HttpStub } from '../helpers/http-stub';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { notification, signed, textMessage, textNotification, value } from '../helpers/meta';

const SECRET = 'meta-sequences-secret';

/** `npm run dev`'s settings: the test database, the Graph and AI stand-ins, a known app secret. */
const devSettings = (database: TestDatabase, graph: GraphStub, ai: HttpStub) => ({
  MONGODB_URI: database.uri,
  MONGODB_DATABASE: database.dbName,
  WHATSAPP_VERIFY_TOKEN: 'v',
  WHATSAPP_APP_SECRET: SECRET,
  WHATSAPP_ACCESS_TOKEN: 'EAA-meta-sequences',
  WHATSAPP_GRAPH_URL: graph.url,
  AI_ENDPOINT: ai.url,
  AI_MODEL: 'm',
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
    const env = devSettings(database, graph, ai);
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

describe('npm run dev: a user deletes or edits a message while earlier ones are answered', () => {
  let graph: GraphStub;
  let ai: HttpStub;
  let database: TestDatabase;
  let dev: DevProcess;

  /**
   * Lets the answer to "first" go: it is held until the test has seen its later notification
   * stored (a fixed delay raced that notification's ingest on a loaded machine).
   */
  let release: () => void = () => undefined;
  let held: Promise<void> = Promise.resolve();
  const hold = (): void => {
    held = new Promise<void>((resolve) => (release = resolve));
  };

  beforeAll(async () => {
    graph = await startGraphStub();
    // The answer to "first" waits: the user deletes and edits their later messages meanwhile.
    ai = await startHttpStub((req) => {
      const messages = req.body['messages'] as { content: string }[];
      return {
        status: 200,
        ...(messages.at(-1)?.content === 'first' ? { until: held } : {}),
        body: {
          model: 'm',
          choices: [
            {
              index: 0,
              message: { role: 'assistant', content: `answer to ${messages.at(-1)?.content}` },
              finish_reason: 'stop',
            },
          ],
          usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
        },
      };
    });
    database = await testDatabase('meta_sequences_edits');
    dev = await startDev(devSettings(database, graph, ai));
  }, 120_000);

  afterAll(async () => {
    release();
    await dev?.stop();
    await graph?.close();
    await ai?.close();
    await database?.drop();
  });

  const post = async (payload: unknown) => {
    const { body, signature } = signed(payload, SECRET);
    const response = await fetch(`${dev.url}/api/webhook`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
      body,
    });
    expect(response.status).toBe(200);
  };

  it('leaves the deleted one unanswered and answers the edited one with its latest text', async () => {
    const from = '447700900124';
    const contacts = [{ waId: from }];
    const [first, mistake, typo] = ['first', 'second, sent by mistake', 'thrid'].map((t) =>
      textMessage(from, t),
    );
    hold();
    await post(notification(value({ contacts, messages: [first, mistake, typo] })));
    await waitFor(async () => ai.requests.length >= 1, 20_000);
    const change = (type: 'edit' | 'revoke', original: string) => ({
      ...textMessage(from, ''),
      type,
      text: undefined,
      ...(type === 'edit'
        ? { edit: { original_message_id: original, message: { type: 'text', text: { body: 'third' } } } }
        : { revoke: { original_message_id: original } }),
    });
    await post(
      notification(value({ contacts, messages: [change('revoke', mistake!.id), change('edit', typo!.id)] })),
    );
    const messages = database.db.collection<{ _id: string } & Record<string, unknown>>('messages');
    // The deletion and the edit are stored while "first" is still being answered.
    await waitFor(
      async () =>
        (await messages.countDocuments({
          relatedId: { $in: [mistake!.id, typo!.id] },
          type: { $in: ['edit', 'revoke'] },
        })) === 2,
      20_000,
    );
    release();
    await waitFor(
      async () =>
        (await messages.countDocuments({ _id: { $in: [mistake!.id, typo!.id] }, replyState: 'pending' })) ===
        0,
      20_000,
    );
    const asked = ai.requests.map((r) => (r.body['messages'] as { content: string }[]).at(-1)?.content);
    expect(asked).toEqual(['first', 'third']);
    expect(graph.sends().map((s) => (s.body['text'] as { body: string }).body)).toEqual([
      'answer to first',
      'answer to third',
    ]);
    expect(await messages.findOne({ _id: mistake!.id })).toMatchObject({
      replyState: 'none',
      text: 'second, sent by mistake',
    });
    expect(await messages.countDocuments({ relatedId: mistake!.id, direction: 'outbound' })).toBe(0);
  }, 60_000);

  it('answers a message delivered late, while earlier ones are answered, before the later ones waiting', async () => {
    const from = '447700900125';
    const contacts = [{ waId: from }];
    const at = Math.floor(Date.now() / 1000);
    const [first, second, third] = ['first', 'second', 'third'].map((t, i) => ({
      ...textMessage(from, t),
      timestamp: String(at + i),
    }));
    const before = ai.requests.length;
    hold();
    await post(notification(value({ contacts, messages: [first, third] })));
    await waitFor(async () => ai.requests.length > before, 20_000);
    // Meta delivers the second message's notification after the third's, while "first" is answered.
    await post(notification(value({ contacts, messages: [second] })));
    const messages = database.db.collection<{ _id: string } & Record<string, unknown>>('messages');
    await waitFor(async () => (await messages.countDocuments({ _id: second!.id })) === 1, 20_000);
    release();
    await waitFor(
      async () =>
        (await messages.countDocuments({ _id: { $in: [second!.id, third!.id] }, replyState: 'pending' })) ===
        0,
      20_000,
    );
    const asked = ai.requests
      .slice(before)
      .map((r) => (r.body['messages'] as { content: string }[]).at(-1)?.content);
    expect(asked).toEqual(['first', 'second', 'third']);
  }, 60_000);
});
