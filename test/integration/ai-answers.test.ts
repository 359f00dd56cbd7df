// AI answers through the real reply path: webhook payloads are ingested into a real database, the
// reply worker answers them against a loopback chat-completions stub and a loopback Graph stub.
// Checks the context (system prompt, order, limit, reset boundary, commands and notices left out,
// non-text descriptions), model name, one retry of any failure (at most two calls an answer),
// apology after it, per-minute limit, the
// typing indicator and token accounting; and that logs carry no text.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config';
import { createDataStore, type DataStore, type Message } from '../../shared/data';
import { buildServices, type Services } from '../../shared/deps';
import { ingestNotification } from '../../shared/bot/ingest';
import { processReplyJob } from '../../shared/bot/reply';
import {
  AI_APOLOGY,
  HELP_TEXT,
  NOT_ASKED,
  RATE_LIMIT_NOTICE,
  RESET_ANSWER,
  START_ANSWER,
  STOP_ANSWER,
} from '../../shared/bot/texts';
import { AI_CONTEXT_MAX_CHARS } from '../../shared/bot/ai-responder';
import { capturedLog } from '../helpers/logs';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { startHttpStub, type HttpStub, type StubRequest } from '../helpers/http-stub';
import { tokenExpired } from '../helpers/graph-stub';

const MODEL = 'my-gpt-deployment';
const SYSTEM_PROMPT = 'You are the test assistant. Answer briefly.';
const PHONE_NUMBER_ID = '106540352242922';

let tdb: TestDatabase;
let data: DataStore;
let ai: HttpStub;
let graph: HttpStub;
const { log, lines: logs, errors: errorLines } = capturedLog();

/** The AI stub's default: "answer N" with usage 10 + 5 tokens. */
const answerN = (_req: StubRequest, index: number) => ({
  status: 200,
  body: {
    model: MODEL,
    choices: [
      { index: 0, message: { role: 'assistant', content: `answer ${index + 1}` }, finish_reason: 'stop' },
    ],
    usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
  },
});

beforeAll(async () => {
  tdb = await testDatabase('ai-answers');
  data = createDataStore(tdb.db);
  ai = await startHttpStub(answerN);
  let wamid = 0;
  graph = await startHttpStub((req) =>
    req.body['status'] === 'read'
      ? { status: 200, body: { success: true } }
      : { status: 200, body: { messaging_product: 'whatsapp', messages: [{ id: `wamid.out.${++wamid}` }] } },
  );
});

afterAll(async () => {
  await ai.close();
  await graph.close();
  await tdb.drop();
});

beforeEach(() => {
  ai.requests = [];
  ai.respond = answerN;
  graph.requests = [];
  logs.length = 0;
  errorLines.length = 0;
});

let inboundSeq = 0;

/** A user's conversation driven through ingest and the reply worker, with a controlled clock. */
class Chat {
  private clock = Date.now() - 10 * 60_000;
  services!: Services;
  constructor(
    readonly waId: string,
    private readonly settings: Record<string, string> = {},
    private readonly stepMs = 10_000,
  ) {}

  async init(): Promise<this> {
    const config = loadConfig({
      WHATSAPP_VERIFY_TOKEN: 'verify-token-0123456789',
      WHATSAPP_APP_SECRET: 'app-secret-0123456789',
      WHATSAPP_ACCESS_TOKEN: 'EAAG-test-token-0123456789',
      WHATSAPP_GRAPH_URL: graph.url,
      AI_ENDPOINT: `${ai.url}/v1`,
      AI_MODEL: MODEL,
      AI_SYSTEM_PROMPT: SYSTEM_PROMPT,
      AI_TIMEOUT_MS: '2000',
      ...this.settings,
    });
    // No `ai` option: buildServices must build the real responder from AI_ENDPOINT.
    this.services = await buildServices(config, {
      data,
      graphRetry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 1 },
      now: () => new Date(this.clock),
    });
    return this;
  }

  /** Sends one inbound message (a WhatsApp message object without from/id/timestamp) and runs its reply jobs. */
  async send(message: Record<string, unknown>): Promise<string> {
    return (await this.burst([message]))[0]!;
  }

  /** Sends messages in one notification, in the same second, and runs their reply jobs. */
  async burst(messages: Record<string, unknown>[]): Promise<string[]> {
    this.clock += this.stepMs;
    // Message ids must not contain the number (the log check below looks for it).
    const ids = messages.map(() => `wamid.in.${++inboundSeq}`);
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: 'WABA',
          changes: [
            {
              field: 'messages',
              value: {
                messaging_product: 'whatsapp',
                metadata: { display_phone_number: '15550000000', phone_number_id: PHONE_NUMBER_ID },
                contacts: [{ profile: { name: 'Test User' }, wa_id: this.waId }],
                messages: messages.map((message, i) => ({
                  from: this.waId,
                  id: ids[i],
                  timestamp: String(Math.floor(this.clock / 1000)),
                  ...message,
                })),
              },
            },
          ],
        },
      ],
    };
    const { jobs } = await ingestNotification(this.services, payload, log);
    // The answer goes out a moment after the message arrived.
    this.clock += 1_000;
    for (const job of jobs) await processReplyJob(this.services, job, log);
    return ids;
  }

  /** Delivers a status of a message the bot sent. */
  async status(waMessageId: string, status: string): Promise<void> {
    this.clock += 1_000;
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: 'WABA',
          changes: [
            {
              field: 'messages',
              value: {
                messaging_product: 'whatsapp',
                metadata: { display_phone_number: '15550000000', phone_number_id: PHONE_NUMBER_ID },
                statuses: [
                  {
                    id: waMessageId,
                    status,
                    timestamp: String(Math.floor(this.clock / 1000)),
                    recipient_id: this.waId,
                    ...(status === 'failed'
                      ? { errors: [{ code: 131026, title: 'Message undeliverable' }] }
                      : {}),
                  },
                ],
              },
            },
          ],
        },
      ],
    };
    const { jobs } = await ingestNotification(this.services, payload, log);
    for (const job of jobs) await processReplyJob(this.services, job, log);
  }

  say(text: string): Promise<string> {
    return this.send({ type: 'text', text: { body: text } });
  }
}

const lastRequestMessages = () =>
  ai.requests[ai.requests.length - 1]?.body['messages'] as { role: string; content: string }[];

async function outboundFor(inboundId: string): Promise<Message[]> {
  const docs = await tdb.db
    .collection<{ _id: string }>('messages')
    .find({ relatedId: inboundId, direction: 'outbound' })
    .toArray();
  return Promise.all(docs.map(async (d) => (await data.messages.getMessage(d._id))!));
}

const sentTexts = () =>
  graph.requests
    .filter((r) => r.body['type'] === 'text')
    .map((r) => (r.body['text'] as { body: string }).body);

describe('AI answers', () => {
  it('sends the system prompt, the last AI_HISTORY_LIMIT conversation messages oldest first, then the new message, to the configured model', async () => {
    const chat = await new Chat('15550000001', { AI_HISTORY_LIMIT: '3' }).init();
    for (const text of ['one', 'two', 'three', 'four', 'five']) await chat.say(text);
    expect(ai.requests).toHaveLength(5);
    await chat.say('six');
    const request = ai.requests[5]!;
    expect(request.url).toBe('/v1/chat/completions');
    expect(request.body['model']).toBe(MODEL);
    expect(request.body['messages']).toEqual([
      // The last three messages: 'answer 4' first (its message is older than the limit).
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'assistant', content: 'answer 4' },
      { role: 'user', content: 'five' },
      { role: 'assistant', content: 'answer 5' },
      { role: 'user', content: 'six' },
    ]);
    // The second request saw the first exchange.
    expect(ai.requests[1]!.body['messages']).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'one' },
      { role: 'assistant', content: 'answer 1' },
      { role: 'user', content: 'two' },
    ]);
    expect(sentTexts()).toEqual(['answer 1', 'answer 2', 'answer 3', 'answer 4', 'answer 5', 'answer 6']);
    // Read receipt with the typing indicator before each AI answer.
    const reads = graph.requests.filter((r) => r.body['status'] === 'read');
    expect(reads).toHaveLength(6);
    expect(reads[0]!.body['typing_indicator']).toEqual({ type: 'text' });
  });

  it('leaves out everything before the last reset, and commands and their answers', async () => {
    const chat = await new Chat('15550000002').init();
    await chat.say('my name is Ana');
    await chat.say('Reset!');
    await chat.say('help');
    expect(ai.requests).toHaveLength(1);
    expect(sentTexts()[1]).toBe(RESET_ANSWER);
    await chat.say('what is my name?');
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'what is my name?' },
    ]);
    await chat.say('ok');
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'what is my name?' },
      { role: 'assistant', content: 'answer 2' },
      { role: 'user', content: 'ok' },
    ]);
  });

  it('leaves out the answer to a message from before a reset that arrived while it was prepared', async () => {
    const chat = await new Chat('15550000011').init();
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat.burst([text('my name is Ana'), text('reset'), text('what is my name?')]);
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1', RESET_ANSWER, 'answer 2']);
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'what is my name?' },
    ]);
    await chat.say('and now?');
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'what is my name?' },
      { role: 'assistant', content: 'answer 2' },
      { role: 'user', content: 'and now?' },
    ]);
  });

  it('keeps the history before a burst longer than the worker reads (the waiting messages fill it)', async () => {
    // AI_HISTORY_LIMIT 3 and 1 answer a minute: the worker reads the latest 26 messages.
    const chat = await new Chat(
      '15550000012',
      { AI_HISTORY_LIMIT: '3', AI_MAX_PER_MINUTE: '1' },
      61_000,
    ).init();
    for (const text of ['q1', 'q2', 'q3']) await chat.say(text);
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat.burst(Array.from({ length: 30 }, (_, i) => text(`b${i + 1}`)));
    expect(ai.requests).toHaveLength(4);
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'assistant', content: 'answer 2' },
      { role: 'user', content: 'q3' },
      { role: 'assistant', content: 'answer 3' },
      { role: 'user', content: 'b1' },
    ]);
  });

  it('puts each answer of a burst right after the message it answers, so the limit keeps whole exchanges', async () => {
    // Five messages sent before the first answer: all are stored before any answer is sent, so on
    // our clock the answers come after all five. The model must still read question, answer,
    // question, answer — not the questions, then answers to questions it may no longer see.
    const chat = await new Chat('15550000013', { AI_HISTORY_LIMIT: '4' }).init();
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat.burst(['b1', 'b2', 'b3', 'b4', 'b5'].map(text));
    expect(sentTexts()).toEqual(['answer 1', 'answer 2', 'answer 3', 'answer 4', 'answer 5']);
    const sys = { role: 'system', content: SYSTEM_PROMPT };
    const user = (content: string) => ({ role: 'user', content });
    const assistant = (content: string) => ({ role: 'assistant', content });
    expect(ai.requests[2]!.body['messages']).toEqual([
      sys,
      user('b1'),
      assistant('answer 1'),
      user('b2'),
      assistant('answer 2'),
      user('b3'),
    ]);
    expect(ai.requests[4]!.body['messages']).toEqual([
      sys,
      user('b3'),
      assistant('answer 3'),
      user('b4'),
      assistant('answer 4'),
      user('b5'),
    ]);
    // Read again from the database for the next message: the same order.
    await chat.say('next');
    expect(lastRequestMessages()).toEqual([
      sys,
      user('b4'),
      assistant('answer 4'),
      user('b5'),
      assistant('answer 5'),
      user('next'),
    ]);
  });

  it('leaves out an answer the user never got (Graph refused it, or its status came back failed)', async () => {
    const chat = await new Chat('15550000014').init();
    const answering = graph.respond;
    // The first answer is refused (131026: message undeliverable).
    graph.respond = (req, index) =>
      req.body['type'] === 'text' && !graph.requests.slice(0, index).some((r) => r.body['type'] === 'text')
        ? {
            status: 400,
            body: { error: { code: 131026, message: 'Message undeliverable', type: 'OAuthException' } },
          }
        : answering(req, index);
    try {
      const q1 = await chat.say('q1');
      expect((await outboundFor(q1)).map((m) => m.status)).toEqual(['failed']);
      const q2 = await chat.say('q2');
      expect(lastRequestMessages()).toEqual([
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: 'q1' },
        { role: 'user', content: 'q2' },
      ]);
      // Accepted, then reported failed by a status: the user never got it either.
      const [answer2] = await outboundFor(q2);
      expect(answer2?.status).toBe('sent');
      await chat.status(answer2!.waMessageId!, 'failed');
      expect((await data.messages.getMessage(answer2!.id))?.status).toBe('failed');
      await chat.say('q3');
      expect(lastRequestMessages()).toEqual([
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: 'q1' },
        { role: 'user', content: 'q2' },
        { role: 'user', content: 'q3' },
      ]);
    } finally {
      graph.respond = answering;
    }
  });

  // Meta's "Edit messages" and "Revoke messages" webhooks: the edit carries the message's new
  // content, the revoke only which message the user deleted for everyone. Both are stored linked
  // to the original, which stays as it came.
  it('gives the model an edited message with its latest text, and leaves out a deleted one with its answer, changing nothing stored', async () => {
    const edit = (id: string, message: Record<string, unknown>) => ({
      type: 'edit',
      edit: { original_message_id: id, message },
    });
    const revoke = (id: string) => ({ type: 'revoke', revoke: { original_message_id: id } });
    const chat = await new Chat('15550000015').init();
    const q1 = await chat.say('Do you have it in size M?');
    const q2 = await chat.say('my card number is 4111 1111');
    const q3 = await chat.send({
      type: 'image',
      image: { id: 'media-9', mime_type: 'image/jpeg', sha256: 'x', caption: 'old caption' },
    });
    await chat.send(edit(q1, { type: 'text', text: { body: 'Do you have it in size S?' } }));
    await chat.send(edit(q1, { type: 'text', text: { body: 'Do you have it in size L?' } }));
    await chat.send(revoke(q2));
    await chat.send(edit(q3, { type: 'image', image: { id: 'media-9', caption: 'my red bike' } }));
    await chat.say('and in blue?');
    const sys = { role: 'system', content: SYSTEM_PROMPT };
    expect(lastRequestMessages()).toEqual([
      sys,
      { role: 'user', content: 'Do you have it in size L?' },
      { role: 'assistant', content: 'answer 1' },
      { role: 'user', content: '(The user sent an image with the caption: my red bike)' },
      { role: 'assistant', content: 'answer 3' },
      { role: 'user', content: 'and in blue?' },
    ]);
    // Authentic data is kept: the originals as they came, the edits and the deletion beside them.
    expect((await data.messages.getMessage(q1))?.text).toBe('Do you have it in size M?');
    expect((await data.messages.getMessage(q2))?.text).toBe('my card number is 4111 1111');
    expect((await outboundFor(q2)).map((m) => m.text)).toEqual(['answer 2']);

    // The same when the history comes from the database (a burst longer than the worker reads).
    const chat2 = await new Chat(
      '15550000016',
      { AI_HISTORY_LIMIT: '3', AI_MAX_PER_MINUTE: '1' },
      61_000,
    ).init();
    ai.requests = [];
    await chat2.say('r1');
    const r2 = await chat2.say('r2');
    const r3 = await chat2.say('r3');
    await chat2.send(edit(r2, { type: 'text', text: { body: 'r2 edited' } }));
    await chat2.send(revoke(r3));
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat2.burst(Array.from({ length: 30 }, (_, i) => text(`b${i + 1}`)));
    expect(ai.requests).toHaveLength(4);
    expect(lastRequestMessages()).toEqual([
      sys,
      { role: 'assistant', content: 'answer 1' },
      { role: 'user', content: 'r2 edited' },
      { role: 'assistant', content: 'answer 2' },
      { role: 'user', content: 'b1' },
    ]);
  });

  it('does not answer a message the user deleted before it was answered, and answers an edited one as the user left it', async () => {
    const chat = await new Chat('15550000019').init();
    ai.requests = [];
    const text = (body: string) => ({ type: 'text', text: { body } });
    const [, second, third] = [inboundSeq + 1, inboundSeq + 2, inboundSeq + 3].map((n) => `wamid.in.${n}`);
    // All in one notification: stored before the first answer goes out.
    await chat.burst([
      text('first'),
      text('second, sent by mistake'),
      text('thrid'),
      { type: 'revoke', revoke: { original_message_id: second } },
      { type: 'edit', edit: { original_message_id: third, message: text('third') } },
    ]);
    const asked = ai.requests.map((r) => r.body['messages'] as { role: string; content: string }[]);
    expect(asked.map((messages) => messages[messages.length - 1])).toEqual([
      { role: 'user', content: 'first' },
      { role: 'user', content: 'third' },
    ]);
    expect(JSON.stringify(asked)).not.toContain('sent by mistake');
    expect(await outboundFor(second!)).toEqual([]);
    expect(await tdb.db.collection<{ _id: string }>('messages').findOne({ _id: second! })).toMatchObject({
      replyState: 'none',
      text: 'second, sent by mistake',
    });
    expect((await outboundFor(third!)).map((m) => m.status)).toEqual(['sent']);
  });

  // The brief: the system prompt, the user's last AI_HISTORY_LIMIT conversation messages before the
  // new one, then the new message. Each stored message is one turn, as an OpenAI-compatible API
  // takes them: none merged with the next, none dropped to make the roles alternate.
  it('gives each of the last AI_HISTORY_LIMIT messages its own turn, then the new message on its own', async () => {
    ai.respond = (req, index) =>
      index < 2 ? { status: 503, body: { error: { message: 'down' } } } : answerN(req, index);
    const chat = await new Chat('15550000030', { AI_HISTORY_LIMIT: '3' }).init();
    await chat.say('hello');
    await chat.say('are you there?');
    const sys = { role: 'system', content: SYSTEM_PROMPT };
    // The apology is left out: two user messages in a row, each its own turn.
    expect(lastRequestMessages()).toEqual([
      sys,
      { role: 'user', content: 'hello' },
      { role: 'user', content: 'are you there?' },
    ]);
    await chat.say('good');
    await chat.say('bye');
    // The last three: an answer first (its message is older than the limit), kept.
    expect(lastRequestMessages()).toEqual([
      sys,
      { role: 'assistant', content: 'answer 3' },
      { role: 'user', content: 'good' },
      { role: 'assistant', content: 'answer 4' },
      { role: 'user', content: 'bye' },
    ]);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 3', 'answer 4', 'answer 5']);
  });

  // Strict chat templates (Mistral or Llama served by vLLM) refuse a conversation whose roles do not
  // alternate: HTTP 400 "Conversation roles must alternate user/assistant/user/assistant/...".
  // OpenAI accepts it. Refused so, the bot asks once more with the turns made to alternate.
  it('asks a strict template again with alternating roles: turns of one role in a row merged, no assistant turn first', async () => {
    const strict = (req: StubRequest, index: number) => {
      const roles = (req.body['messages'] as { role: string }[]).map((m) => m.role);
      const alternate = roles.slice(1).every((role, i) => role === (i % 2 === 0 ? 'user' : 'assistant'));
      return roles[0] === 'system' && alternate && roles[roles.length - 1] === 'user'
        ? answerN(req, index)
        : {
            status: 400,
            body: {
              object: 'error',
              message: 'Conversation roles must alternate user/assistant/user/assistant/...',
              type: 'BadRequestError',
              code: 400,
            },
          };
    };
    // A failed answer leaves two user messages in a row.
    ai.respond = (req, index) =>
      index < 2 ? { status: 503, body: { error: { message: 'down' } } } : strict(req, index);
    const chat = await new Chat('15550000018', { AI_HISTORY_LIMIT: '1' }).init();
    await chat.say('hello');
    await chat.say('are you there?');
    const sys = { role: 'system', content: SYSTEM_PROMPT };
    const asked = () => ai.requests.map((r) => r.body['messages']);
    expect(asked()[2]).toEqual([
      sys,
      { role: 'user', content: 'hello' },
      { role: 'user', content: 'are you there?' },
    ]);
    expect(asked()[3]).toEqual([sys, { role: 'user', content: 'hello\n\nare you there?' }]);
    // The limit keeps an answer without its message: left out, the model starts with the user.
    await chat.say('third');
    expect(asked()[4]).toEqual([
      sys,
      { role: 'assistant', content: 'answer 4' },
      { role: 'user', content: 'third' },
    ]);
    expect(asked()[5]).toEqual([sys, { role: 'user', content: 'third' }]);
    expect(ai.requests).toHaveLength(6);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 4', 'answer 6']);
    // The merged turns refused as well: they were the one retry, so the apology (no third call).
    ai.respond = () => ({
      status: 400,
      body: { error: { message: 'Conversation roles must alternate user/assistant/user/assistant/...' } },
    });
    await chat.say('fourth');
    expect(ai.requests).toHaveLength(8);
    expect(asked()[7]).toEqual([sys, { role: 'user', content: 'fourth' }]);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 4', 'answer 6', AI_APOLOGY]);
  });

  // Some models take no system turn: OpenAI's o1-mini answers 400 "Unsupported value:
  // 'messages[0].role' does not support 'system' with this model." (code unsupported_value,
  // microsoft/agent-framework#1077), Gemma's template on vLLM 400 "System role not supported"
  // (vllm-project/vllm#2964). Every answer used to fail so (the same turns asked twice): the retry
  // now gives the system prompt in the first user turn, with the roles alternating (Gemma's
  // template demands that too).
  it('asks a model that refuses the system turn again with the system prompt in the first user turn', async () => {
    const noSystem = (req: StubRequest, index: number) => {
      const roles = (req.body['messages'] as { role: string }[]).map((m) => m.role);
      if (roles.includes('system'))
        return {
          status: 400,
          body: { object: 'error', message: 'System role not supported', type: 'BadRequestError', code: 400 },
        };
      const alternate = roles.every((role, i) => role === (i % 2 === 0 ? 'user' : 'assistant'));
      return alternate
        ? answerN(req, index)
        : { status: 400, body: { object: 'error', message: 'Conversation roles must alternate', code: 400 } };
    };
    // A failed answer leaves two user messages in a row.
    ai.respond = (req, index) =>
      index < 2 ? { status: 503, body: { error: { message: 'down' } } } : noSystem(req, index);
    const chat = await new Chat('15550000033').init();
    await chat.say('hello');
    await chat.say('are you there?');
    const asked = () => ai.requests.map((r) => r.body['messages']);
    expect(asked()[3]).toEqual([{ role: 'user', content: `${SYSTEM_PROMPT}\n\nhello\n\nare you there?` }]);
    // OpenAI's o1-mini, in its words: the same retry.
    ai.respond = (req, index) =>
      (req.body['messages'] as { role: string }[])[0]?.role === 'system'
        ? {
            status: 400,
            body: {
              error: {
                message: "Unsupported value: 'messages[0].role' does not support 'system' with this model.",
                type: 'invalid_request_error',
                param: 'messages[0].role',
                code: 'unsupported_value',
              },
            },
          }
        : answerN(req, index);
    await chat.say('third');
    expect(asked()[5]).toEqual([
      { role: 'user', content: `${SYSTEM_PROMPT}\n\nhello\n\nare you there?` },
      { role: 'assistant', content: 'answer 4' },
      { role: 'user', content: 'third' },
    ]);
    expect(ai.requests).toHaveLength(6);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 4', 'answer 6']);
  });

  it('asks at most twice for one answer: the turns merged, or the message alone, are its one retry', async () => {
    const refusal = (message: string, code: string | null = null) => ({
      status: 400,
      body: { error: { message, type: 'invalid_request_error', code } },
    });
    const roles = refusal('Conversation roles must alternate user/assistant/user/assistant/...');
    const tooLong = refusal("This model's maximum context length is 40 tokens.", 'context_length_exceeded');
    const down = { status: 503, body: { error: { message: 'down' } } };
    ai.respond = () => down;
    const chat = await new Chat('15550000031').init();
    await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    // Two user turns in a row: refused, asked merged (the retry), which fails: the apology.
    ai.respond = (_req, index) => (index === 2 ? roles : down);
    const second = await chat.say('again');
    expect(ai.requests).toHaveLength(4);
    expect(ai.requests[3]?.body['messages']).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'hello\n\nagain' },
    ]);
    expect((await data.messages.getMessage(second))?.error).toMatchObject({ code: 503 });
    // Too long: asked with the message alone (the retry), which fails: the apology.
    ai.respond = (_req, index) => (index === 4 ? tooLong : down);
    await chat.say('third');
    expect(ai.requests).toHaveLength(6);
    expect(ai.requests[5]?.body['messages']).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'third' },
    ]);
    // Refused for its roles, then the merged turns as too long: no third call.
    ai.respond = (_req, index) => (index === 6 ? roles : tooLong);
    await chat.say('fourth');
    expect(ai.requests).toHaveLength(8);
    expect(sentTexts()).toEqual([AI_APOLOGY, AI_APOLOGY, AI_APOLOGY, AI_APOLOGY]);
  });

  it('describes non-text messages in words', async () => {
    const chat = await new Chat('15550000003').init();
    await chat.send({
      type: 'image',
      image: { id: 'media-1', mime_type: 'image/jpeg', sha256: 'x', caption: 'my new bike' },
    });
    await chat.send({
      type: 'location',
      location: { latitude: 38.7, longitude: -9.1, name: 'Fake Cafe', address: '1 Main St' },
    });
    await chat.send({
      type: 'interactive',
      interactive: { type: 'button_reply', button_reply: { id: 'b1', title: 'Yes please' } },
    });
    const messages = lastRequestMessages();
    expect(messages[1]).toEqual({
      role: 'user',
      content: '(The user sent an image with the caption: my new bike)',
    });
    expect(messages[3]).toEqual({
      role: 'user',
      content: '(The user shared a location: Fake Cafe 1 Main St)',
    });
    expect(messages[5]).toEqual({ role: 'user', content: '(The user chose: Yes please)' });
  });

  // An interactive message is stored as its chosen title, or labelled: "[flow] …" for a flow's
  // answers, "[product] …" for a product the user sent from the catalog. A product is no form, and
  // a title that itself begins with a bracketed word ("[A] Monday") is still a choice.
  it('describes a product from the catalog, and a choice whose title begins with brackets, as what they are', async () => {
    const chat = await new Chat('15550000077').init();
    await chat.send({
      type: 'interactive',
      interactive: {
        type: 'product',
        product: { catalog_id: '194836987003835', product_retailer_id: 'sku-blue-shirt' },
      },
    });
    await chat.send({
      type: 'interactive',
      interactive: { type: 'button_reply', button_reply: { id: 'b1', title: '[A] Monday' } },
    });
    await chat.send({
      type: 'interactive',
      interactive: { type: 'list_reply', list_reply: { id: 'r2', title: '[New] Blue shirt' } },
    });
    const messages = lastRequestMessages();
    expect(messages[1]).toEqual({
      role: 'user',
      content: '(The user sent a product from the catalog: sku-blue-shirt)',
    });
    expect(messages[3]).toEqual({ role: 'user', content: '(The user chose: [A] Monday)' });
    expect(messages[5]).toEqual({ role: 'user', content: '(The user chose: [New] Blue shirt)' });
  });

  // A template an operator sent may offer quick-reply buttons ("Stop", "Yes"): a tap arrives as a
  // `button` message carrying the button's text (webhook reference, messages: `button.text`).
  it("takes a template's quick-reply button as the command its text is, and any other as conversation", async () => {
    const chat = await new Chat('15550000078').init();
    await chat.send({ type: 'button', button: { payload: 'opt-out', text: 'Stop' } });
    expect(ai.requests).toHaveLength(0);
    expect(sentTexts()).toEqual([STOP_ANSWER]);
    expect((await data.users.findByIdentity({ waId: chat.waId, bsuid: null }))?.optedOut).toBe(true);
    await chat.send({ type: 'button', button: { payload: 'opt-in', text: 'START' } });
    expect(sentTexts()).toEqual([STOP_ANSWER, START_ANSWER]);
    expect((await data.users.findByIdentity({ waId: chat.waId, bsuid: null }))?.optedOut).toBe(false);
    await chat.send({ type: 'button', button: { payload: 'yes', text: 'Yes, stop by' } });
    expect(ai.requests).toHaveLength(1);
    expect(lastRequestMessages().at(-1)).toEqual({
      role: 'user',
      content: '(The user tapped the button: Yes, stop by)',
    });
  });

  it('retries once after a 500 and answers once', async () => {
    ai.respond = (req, index) =>
      index === 0 ? { status: 500, body: { error: { message: 'busy' } } } : answerN(req, 0);
    const chat = await new Chat('15550000004').init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1']);
    const [out] = await outboundFor(id);
    expect(out?.role).toBe('conversation');
    expect((await data.messages.getMessage(id))?.error).toBeNull();
  });

  // 408 Request Timeout (RFC 9110 §15.5.9: the server did not receive a complete request in time;
  // the client may repeat it) is transient, as a 5xx is.
  it('retries once after a 408 and answers once', async () => {
    ai.respond = (req, index) =>
      index === 0 ? { status: 408, body: { error: { message: 'Request timed out' } } } : answerN(req, 0);
    const chat = await new Chat('15550000019').init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1']);
    expect((await data.messages.getMessage(id))?.error).toBeNull();
  });

  it('retries once after an answer without text (empty choices) and sends the answer, not an apology', async () => {
    ai.respond = (req, index) => (index === 0 ? { status: 200, body: { choices: [] } } : answerN(req, 0));
    const chat = await new Chat('15550000010').init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1']);
    expect((await data.messages.getMessage(id))?.error).toBeNull();
  });

  it('sends one apology and records the failure when the model fails twice, and leaves the apology out of later context', async () => {
    ai.respond = () => ({ status: 503, body: { error: { message: 'down' } } });
    const chat = await new Chat('15550000005').init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    const inbound = await data.messages.getMessage(id);
    expect(inbound?.replyState).toBe('sent');
    expect(inbound?.error).toMatchObject({ code: 503 });
    const outs = await outboundFor(id);
    expect(outs).toHaveLength(1);
    expect(outs[0]).toMatchObject({ role: 'notice', ai: null });

    ai.respond = answerN;
    ai.requests = [];
    await chat.say('again');
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'hello' },
      { role: 'user', content: 'again' },
    ]);
  });

  // The brief: "If the call fails or times out after one retry, a short apology is sent and the
  // failure recorded": every failure, whatever the status, gets its one retry.
  it.each([
    [401, { error: { message: 'Incorrect API key provided', code: 'invalid_api_key' } }],
    [403, { error: { message: 'Forbidden' } }],
    [
      404,
      {
        error: {
          message: 'The API deployment for this resource does not exist.',
          code: 'DeploymentNotFound',
        },
      },
    ],
    [400, { error: { message: 'Invalid request', type: 'invalid_request_error' } }],
    [422, { detail: 'unprocessable' }],
    [302, ''],
  ])('retries a %i once, then sends one apology and records the failure', async (status, body) => {
    ai.respond = () => ({ status, body });
    const chat = await new Chat(`155500001${status}`).init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(ai.requests[1]?.body).toEqual(ai.requests[0]?.body);
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    expect((await data.messages.getMessage(id))?.error).toMatchObject({ code: status });
    expect((await outboundFor(id)).map((m) => [m.text, m.role])).toEqual([[AI_APOLOGY, 'notice']]);
  });

  it.each([400, 401, 404])('sends the answer when a %i is followed by a good answer', async (status) => {
    ai.respond = (req, index) =>
      index === 0 ? { status, body: { error: { message: 'once' } } } : answerN(req, 0);
    const chat = await new Chat(`155500002${status}`).init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1']);
    expect((await data.messages.getMessage(id))?.error).toBeNull();
  });

  it('sends one apology after two answers without choices, or that cannot be read', async () => {
    for (const [n, body] of [
      ['1', { choices: [] }],
      ['2', '{"choices": [{"message": {"content": "cut sh'],
    ] as const) {
      ai.requests = [];
      graph.requests = [];
      ai.respond = () => ({ status: 200, body });
      const chat = await new Chat(`15550000300${n}`).init();
      const id = await chat.say('hello');
      expect(ai.requests).toHaveLength(2);
      expect(sentTexts()).toEqual([AI_APOLOGY]);
      expect((await data.messages.getMessage(id))?.error).toMatchObject({ code: 200 });
    }
  });

  it('says at error level, naming AI_API_KEY but never its value, when the endpoint refuses the key', async () => {
    for (const [n, status] of [
      ['1', 401],
      ['2', 403],
    ] as const) {
      graph.requests = [];
      errorLines.length = 0;
      ai.respond = () => ({
        status,
        body: { error: { code: 'invalid_api_key', message: 'Incorrect API key' } },
      });
      const chat = await new Chat(`15550000310${n}`, { AI_API_KEY: 'sk-secret-key-0123456789' }).init();
      await chat.say('hello');
      expect(sentTexts()).toEqual([AI_APOLOGY]);
      expect(errorLines).toHaveLength(1);
      expect(errorLines[0]).toMatch(/AI_API_KEY.*configuration problem/);
      expect(logs.join('\n')).not.toContain('sk-secret-key');
    }
    // An outage is the message's failure, a warning: nothing for an operator to fix.
    errorLines.length = 0;
    ai.respond = () => ({ status: 503, body: { error: { message: 'down' } } });
    await (await new Chat('155500003103').init()).say('hello');
    expect(errorLines).toEqual([]);
  });

  // A 404 (Azure's DeploymentNotFound, OpenAI's model_not_found: AI_MODEL or AI_ENDPOINT wrong) and
  // OpenAI's 429 insufficient_quota (error-codes guide: no credits or spend limit reached; retrying
  // does not help) fail every answer until an operator acts, as refused credentials do: they used
  // to be warnings like an outage. A 429 that is a rate limit stays a warning.
  it('says at error level when the deployment or model does not exist, or the quota is used up', async () => {
    const cases = [
      [
        '1',
        404,
        {
          error: {
            code: 'DeploymentNotFound',
            message: 'The API deployment for this resource does not exist.',
          },
        },
        /no such deployment or model.*AI_MODEL.*configuration problem/,
      ],
      [
        '2',
        429,
        {
          error: {
            message: 'You exceeded your current quota, please check your plan and billing details.',
            type: 'insufficient_quota',
            param: null,
            code: 'insufficient_quota',
          },
        },
        /quota or spending limit is used up.*billing problem/,
      ],
      [
        '3',
        429,
        {
          error: {
            message: 'You exceeded your current quota, please check your plan and billing details.',
            type: 'insufficient_quota',
            code: 'project_spend_limit_exceeded',
          },
        },
        /quota or spending limit is used up/,
      ],
      // No such model, said with HTTP 400: OpenRouter, LiteLLM's proxy (BerriAI/litellm#9663).
      [
        '6',
        400,
        { error: { message: 'my-gpt-deployment is not a valid model ID', code: 400 } },
        /no such deployment or model.*AI_MODEL.*configuration problem/,
      ],
      [
        '7',
        400,
        {
          error: {
            message:
              "400: {'error': '/chat/completions: Invalid model name passed in model=my-gpt-deployment. Call `/v1/models` to view available models for your key.'}",
            type: 'None',
            param: 'None',
            code: '400',
          },
        },
        /no such deployment or model/,
      ],
      // OpenRouter's "insufficient credits" (openrouter.ai/docs/api-reference/errors): HTTP 402.
      [
        '5',
        402,
        {
          error: { code: 402, message: 'Insufficient credits. Add more using https://openrouter.ai/credits' },
        },
        /quota or spending limit is used up.*billing problem/,
      ],
    ] as const;
    for (const [n, status, body, said] of cases) {
      graph.requests = [];
      errorLines.length = 0;
      ai.respond = () => ({ status, body });
      await (await new Chat(`15550000330${n}`).init()).say('hello');
      expect(sentTexts()).toEqual([AI_APOLOGY]);
      expect(errorLines).toHaveLength(1);
      expect(errorLines[0]).toMatch(said);
    }
    // A rate limit: the message's failure, a warning.
    errorLines.length = 0;
    ai.respond = () => ({
      status: 429,
      body: { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } },
    });
    await (await new Chat('155500003304').init()).say('hello');
    expect(errorLines).toEqual([]);
  });

  // Meta answers an expired or revoked token with HTTP 401 and code 190, the read receipt sent right
  // before the model is asked included: the answer could never go out, so the model is not paid for.
  it('asks no model when Graph refuses the access token for the read receipt: the answer is recorded failed with the code, logged once', async () => {
    const answering = graph.respond;
    graph.respond = tokenExpired;
    try {
      const before = await data.stats.totals();
      const chat = await new Chat('155500003201').init();
      for (const [text, answer] of [
        ['hello', NOT_ASKED],
        ['help', HELP_TEXT],
      ] as const) {
        graph.requests = [];
        errorLines.length = 0;
        const id = await chat.say(text);
        // The read receipt only (one request refused is enough to know): no send, no retry.
        expect(graph.requests.map((r) => r.body['status'])).toEqual(['read']);
        expect(await data.messages.getMessage(id)).toMatchObject({
          replyState: 'failed',
          error: { code: 190 },
        });
        // Stored as a refused send is: one failed answer keeping Graph's code, counted as failed.
        const out = await outboundFor(id);
        expect(out).toHaveLength(1);
        expect(out[0]).toMatchObject({
          text: answer,
          status: 'failed',
          waMessageId: null,
          error: { code: 190 },
          ai: null,
        });
        expect(errorLines).toHaveLength(1);
        expect(errorLines[0]).toMatch(/WHATSAPP_ACCESS_TOKEN.*configuration problem/);
      }
      expect(ai.requests).toHaveLength(0);
      const after = await data.stats.totals();
      expect(after.failed - before.failed).toBe(2);
      expect(after.aiRequests - before.aiRequests).toBe(0);

      // Any other refusal of the read receipt (here an outage) still lets the answer go.
      graph.respond = (req, index) =>
        req.body['status'] === 'read'
          ? { status: 503, body: { error: { code: 1, message: 'An unknown error occurred' } } }
          : answering(req, index);
      const id = await chat.say('again');
      expect(ai.requests).toHaveLength(1);
      expect((await outboundFor(id)).map((m) => m.status)).toEqual(['sent']);
    } finally {
      graph.respond = answering;
    }
  });

  it('reads an answer whose content is a list of parts: the text parts, not the reasoning', async () => {
    ai.respond = () => ({
      status: 200,
      body: {
        model: MODEL,
        choices: [
          {
            index: 0,
            message: {
              role: 'assistant',
              content: [
                { type: 'thinking', thinking: [{ type: 'text', text: 'private reasoning' }] },
                { type: 'text', text: 'the answer, ' },
                { type: 'text', text: 'in two parts' },
              ],
            },
            finish_reason: 'stop',
          },
        ],
        usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
      },
    });
    const chat = await new Chat('155500003104').init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(1);
    expect(sentTexts()).toEqual(['the answer, in two parts']);
    expect((await data.messages.getMessage(id))?.error).toBeNull();
  });

  it('sends one apology when the model times out (after one retry)', async () => {
    ai.respond = (req) => ({ ...answerN(req, 0), delayMs: 1_000 });
    const chat = await new Chat('15550000006', { AI_TIMEOUT_MS: '200' }).init();
    const id = await chat.say('hello');
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    expect((await data.messages.getMessage(id))?.error).toMatchObject({ code: 'timeout' });
  });

  it('answers AI_MAX_PER_MINUTE messages a minute, then one notice, then silence', async () => {
    const chat = await new Chat('15550000007', { AI_MAX_PER_MINUTE: '2' }, 2_000).init();
    const ids = [];
    for (const text of ['a', 'b', 'c', 'd', 'e']) ids.push(await chat.say(text));
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual(['answer 1', 'answer 2', RATE_LIMIT_NOTICE]);
    const last = await data.messages.getMessage(ids[4]!);
    expect(last?.replyState).toBe('none');
    // Each marked read once; "typing…" only before the model is asked, never before the notice
    // or the silence.
    const reads = graph.requests.filter((r) => r.body['status'] === 'read');
    expect(reads.map((r) => r.body['message_id'])).toEqual(ids);
    expect(reads.map((r) => 'typing_indicator' in r.body)).toEqual([true, true, false, false, false]);
  });

  it('counts the answers of the last 60 seconds, the answer exactly a minute old included', async () => {
    // 2 answers a minute; a message every 30 s, each answered 1 s later. c comes exactly a minute
    // after a's answer: still over the limit (notice). d and e each find one answer in their
    // minute: answered.
    const chat = await new Chat('15550000017', { AI_MAX_PER_MINUTE: '2' }, 29_000).init();
    for (const text of ['a', 'b', 'c', 'd', 'e']) await chat.say(text);
    expect(sentTexts()).toEqual(['answer 1', 'answer 2', RATE_LIMIT_NOTICE, 'answer 3', 'answer 4']);
  });

  // A failed call costs as an answered one (and a broken or slow endpoint is asked no more often):
  // its apology counts toward the limit.
  const failing = () => ({
    status: 503,
    body: { error: { message: 'overloaded' } },
    headers: { 'retry-after-ms': '1' },
  });

  it('counts a failed call toward AI_MAX_PER_MINUTE as an answered one', async () => {
    ai.respond = failing;
    const chat = await new Chat('15550000050', { AI_MAX_PER_MINUTE: '2' }, 2_000).init();
    for (const text of ['a', 'b', 'c', 'd', 'e']) await chat.say(text);
    // Two messages asked (a call and its retry each), then the notice, then silence.
    expect(ai.requests).toHaveLength(4);
    expect(sentTexts()).toEqual([AI_APOLOGY, AI_APOLOGY, RATE_LIMIT_NOTICE]);
    // A failure and an answer count alike.
    ai.requests = [];
    graph.requests = [];
    ai.respond = (req, index) => (index < 2 ? failing() : answerN(req, 0));
    const mixed = await new Chat('15550000051', { AI_MAX_PER_MINUTE: '2' }, 2_000).init();
    for (const text of ['a', 'b', 'c']) await mixed.say(text);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 1', RATE_LIMIT_NOTICE]);
  });

  it('counts failed calls toward AI_MAX_PER_MINUTE when the count comes from the database (a burst longer than the worker reads)', async () => {
    ai.respond = failing;
    // AI_HISTORY_LIMIT 1 and 1 a minute: the worker reads the latest 22 messages, all within the
    // minute, so the minute's calls are counted by the database.
    const chat = await new Chat('15550000052', { AI_HISTORY_LIMIT: '1', AI_MAX_PER_MINUTE: '1' }).init();
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat.burst(Array.from({ length: 25 }, (_, i) => text(`b${i + 1}`)));
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual([AI_APOLOGY, RATE_LIMIT_NOTICE]);
  });

  it('records usage on the answer and counts AI requests and tokens in the stats', async () => {
    const before = await data.stats.totals();
    const chat = await new Chat('15550000008').init();
    const id = await chat.say('count me');
    const [out] = await outboundFor(id);
    expect(out?.ai).toMatchObject({
      provider: 'openai-compatible',
      model: MODEL,
      promptTokens: 10,
      completionTokens: 5,
      totalTokens: 15,
    });
    expect(out?.ai?.latencyMs).toBeGreaterThanOrEqual(0);
    const after = await data.stats.totals();
    expect(after.aiRequests - before.aiRequests).toBe(1);
    expect(after.aiTokens - before.aiTokens).toBe(15);
  });

  it('logs no message text, prompt, answer or number', async () => {
    const chat = await new Chat('15550000009').init();
    await chat.say('secret words here');
    const text = logs.join('\n');
    expect(text).toContain('ai answered');
    expect(text).not.toContain('secret words');
    expect(text).not.toContain(SYSTEM_PROMPT);
    expect(text).not.toContain('answer 1');
    expect(text).not.toContain('15550000009');
  });
});

describe('AI answers that misbehave', () => {
  const finished = (content: string | null, finish_reason: string) => ({
    status: 200,
    body: { model: MODEL, choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason }] },
  });

  // Azure OpenAI: a filtered completion has no content "or rarely a partial result"; the part the
  // filter cut must not reach the user.
  it('sends the apology, not the cut text, when the answer was stopped by the content filter', async () => {
    ai.respond = () => finished('Here is how you', 'content_filter');
    const chat = await new Chat('15550000021').init();
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    expect((await data.messages.getMessage(id))?.error).toMatchObject({
      code: 200,
      title: expect.stringMatching(/content filter/),
    });
    // A failure like any other: asked once more (a new answer may pass), then the apology.
    expect(ai.requests).toHaveLength(2);
    expect((await outboundFor(id)).map((m) => m.text)).toEqual([AI_APOLOGY]);
  });

  it('counts the tokens of a call that failed but reported its usage (content filter; no text twice)', async () => {
    const usage = (prompt: number, completion: number) => ({
      prompt_tokens: prompt,
      completion_tokens: completion,
      total_tokens: prompt + completion,
    });
    const chat = await new Chat('15550000023').init();
    let before = await data.stats.totals();
    ai.respond = () => ({
      status: 200,
      body: { ...finished('Here is how you', 'content_filter').body, usage: usage(40, 4) },
    });
    const filtered = await chat.say('hello');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    // Stopped twice (the call and its retry): both attempts' tokens, one request.
    let after = await data.stats.totals();
    expect([after.aiRequests - before.aiRequests, after.aiTokens - before.aiTokens]).toEqual([1, 88]);
    // Kept with the message it answered (the apology is no model answer: no rate-limit slot).
    expect((await data.messages.getMessage(filtered))?.ai).toMatchObject({ model: MODEL, totalTokens: 88 });
    expect((await outboundFor(filtered)).map((m) => m.ai)).toEqual([null]);

    // An answer without text, twice (the retry): both attempts' tokens.
    graph.requests = [];
    before = after;
    ai.respond = () => ({ status: 200, body: { ...finished('  ', 'stop').body, usage: usage(30, 0) } });
    await chat.say('again');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    after = await data.stats.totals();
    expect([after.aiRequests - before.aiRequests, after.aiTokens - before.aiTokens]).toEqual([1, 60]);

    // No choice to read at all (none, or a content that is not text), twice: the usage the
    // endpoint reported next to it counts all the same.
    graph.requests = [];
    before = after;
    let calls = 0;
    ai.respond = () => ({
      status: 200,
      body:
        calls++ === 0
          ? { model: MODEL, choices: [], usage: usage(20, 0) }
          : {
              model: MODEL,
              choices: [
                { message: { role: 'assistant', content: [{ type: 'text' }] }, finish_reason: 'stop' },
              ],
              usage: usage(25, 1),
            },
    });
    const unread = await chat.say('once more');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    after = await data.stats.totals();
    expect([after.aiRequests - before.aiRequests, after.aiTokens - before.aiTokens]).toEqual([1, 46]);
    expect((await data.messages.getMessage(unread))?.ai).toMatchObject({ totalTokens: 46 });

    // The sweep folds them into the running counters, and the health check agrees.
    await data.stats.foldPending();
    expect(await data.stats.runningTotals()).toEqual(after);
    expect(await data.maintenance.checkCounters(await data.maintenance.countStored())).toEqual([]);
  });

  // Azure OpenAI (learn.microsoft.com/azure/ai-services/openai/concepts/content-filter): a prompt
  // the content filter classifies as filtered fails the call with HTTP 400, code content_filter.
  // Kept in the context, the message would fail every call after it too.
  it('leaves a message whose prompt the content filter refused out of later context, so the next ones are answered', async () => {
    ai.respond = (req, index) =>
      (req.body['messages'] as { content: string }[]).some((m) => m.content.includes('BADWORD'))
        ? {
            status: 400,
            body: {
              error: {
                message:
                  "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
                type: null,
                param: 'prompt',
                code: 'content_filter',
                status: 400,
              },
            },
          }
        : answerN(req, index);
    const chat = await new Chat('15550000025').init();
    await chat.say('hello');
    const filtered = await chat.say('some BADWORD here');
    // Refused, asked once more (the one retry), refused again.
    expect(ai.requests).toHaveLength(3);
    await chat.say('what are your opening hours?');
    expect(sentTexts()).toEqual(['answer 1', AI_APOLOGY, 'answer 4']);
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'answer 1' },
      { role: 'user', content: 'what are your opening hours?' },
    ]);
    // Recorded as what it was: the prompt refused by the content filter.
    expect((await data.messages.getMessage(filtered))?.error).toMatchObject({
      code: 'content_filter',
      title: expect.stringMatching(/400 content_filter/),
    });
    // Also within a burst: the next message of the same look is answered.
    graph.requests = [];
    const text = (body: string) => ({ type: 'text', text: { body } });
    await chat.burst([text('BADWORD again'), text('and on Sundays?')]);
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 7']);
  });

  // OpenRouter's moderation refuses a flagged prompt with HTTP 403 and the reasons in
  // `error.metadata` (openrouter.ai/docs/api-reference/errors): it was said at error level as a
  // refused AI_API_KEY, and the message, kept in the context, failed every answer after it.
  it('takes an OpenRouter moderation refusal (403 with reasons) as a filtered prompt, not a refused key', async () => {
    ai.respond = (req, index) =>
      (req.body['messages'] as { content: string }[]).some((m) => m.content.includes('BADWORD'))
        ? {
            status: 403,
            body: {
              error: {
                code: 403,
                message:
                  'meta-llama/llama-3.1-8b-instruct requires moderation on OpenRouter. Your input was flagged',
                metadata: {
                  reasons: ['harassment'],
                  flagged_input: 'some BADWORD here',
                  provider_name: 'OpenAI',
                  model_slug: 'meta-llama/llama-3.1-8b-instruct',
                },
              },
            },
          }
        : answerN(req, index);
    const chat = await new Chat('15550000923').init();
    const filtered = await chat.say('some BADWORD here');
    await chat.say('what are your opening hours?');
    expect(sentTexts()).toEqual([AI_APOLOGY, 'answer 3']);
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'what are your opening hours?' },
    ]);
    expect((await data.messages.getMessage(filtered))?.error).toMatchObject({ code: 'content_filter' });
    expect(errorLines).toEqual([]);
    // A 403 without them is still refused credentials.
    ai.respond = () => ({ status: 403, body: { error: { code: 403, message: 'Forbidden' } } });
    await chat.say('hello');
    expect(errorLines).toHaveLength(1);
    expect(errorLines[0]).toMatch(/AI_API_KEY/);
  });

  // OpenAI and Azure OpenAI refuse a prompt over the model's context window: HTTP 400, code
  // context_length_exceeded ("This model's maximum context length is … tokens"; the body as in
  // Chanzhaoyu/chatgpt-web#372). The history is what grows it: kept, every later message would fail
  // the same way.
  it('asks again with the new message alone when the history makes the prompt too long for the model', async () => {
    const tooLong = {
      status: 400,
      body: {
        error: {
          message:
            "This model's maximum context length is 40 tokens. However, your messages resulted in 52 tokens. Please reduce the length of the messages.",
          type: 'invalid_request_error',
          param: 'messages',
          code: 'context_length_exceeded',
        },
      },
    };
    // The "model" takes at most 60 characters of conversation.
    ai.respond = (req, index) =>
      (req.body['messages'] as { role: string; content: string }[])
        .filter((m) => m.role !== 'system')
        .reduce((n, m) => n + m.content.length, 0) > 60
        ? tooLong
        : answerN(req, index);
    const chat = await new Chat('15550000028').init();
    await chat.say('a first question of some forty characters');
    const second = await chat.say('and a second one, as long as it');
    expect(sentTexts()).toEqual(['answer 1', 'answer 3']);
    expect(ai.requests).toHaveLength(3);
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'user', content: 'and a second one, as long as it' },
    ]);
    expect((await data.messages.getMessage(second))?.error).toBeNull();
    // A message too long by itself: asked twice (never more), then the apology.
    graph.requests = [];
    ai.requests = [];
    const alone = await chat.say('x'.repeat(70));
    expect(ai.requests).toHaveLength(2);
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    expect((await data.messages.getMessage(alone))?.error).toMatchObject({ code: 400 });
  });

  // vLLM (and llama.cpp's server) say the same without OpenAI's code: HTTP 400, `code` the number
  // 400, the reason only in the message (vLLM: "This model's maximum context length is 4096 tokens
  // and your request has 5000 input tokens"; llama.cpp: "the request exceeds the available context
  // size"). Read the same way, or every later message of the user fails as well.
  it('asks again with the new message alone when a vLLM or llama.cpp endpoint says the prompt is too long', async () => {
    const refusals = [
      {
        error: {
          message:
            "This model's maximum context length is 40 tokens and your request has 52 input tokens. None",
          type: 'BadRequestError',
          param: null,
          code: 400,
        },
      },
      {
        object: 'error',
        message:
          "This model's maximum context length is 40 tokens. However, you requested 52 tokens in the messages, Please reduce the length of the messages.",
        type: 'BadRequestError',
        param: null,
        code: 400,
      },
      {
        error: {
          code: 400,
          message: 'the request exceeds the available context size, try increasing it',
          type: 'exceed_context_size_error',
        },
      },
    ];
    for (const [i, refusal] of refusals.entries()) {
      ai.requests = [];
      graph.requests = [];
      ai.respond = (req, index) =>
        (req.body['messages'] as { role: string; content: string }[])
          .filter((m) => m.role !== 'system')
          .reduce((n, m) => n + m.content.length, 0) > 60
          ? { status: 400, body: refusal }
          : answerN(req, index);
      const chat = await new Chat(`1555000004${i}`).init();
      await chat.say('a first question of some forty characters');
      const second = await chat.say('and a second one, as long as it');
      expect(sentTexts()).toEqual(['answer 1', 'answer 3']);
      expect(ai.requests).toHaveLength(3);
      expect(lastRequestMessages()).toEqual([
        { role: 'system', content: SYSTEM_PROMPT },
        { role: 'user', content: 'and a second one, as long as it' },
      ]);
      expect((await data.messages.getMessage(second))?.error).toBeNull();
    }
  });

  it('caps the conversation it sends at AI_CONTEXT_MAX_CHARS: oldest history dropped first, the new message kept', async () => {
    const chat = await new Chat('15550000031', { AI_HISTORY_LIMIT: '100' }).init();
    // Messages nearly as long as WhatsApp lets a user write them (65,536 characters).
    const long = (n: number) => `${n} ${'🙂'.repeat(1_000)} ${'z'.repeat(60_000)}`;
    for (let n = 1; n <= 12; n++) await chat.say(long(n));
    const conversation = (messages: { role: string; content: string }[]) =>
      messages.filter((m) => m.role !== 'system').reduce((n, m) => n + Array.from(m.content).length, 0);
    // Every request within the cap, the newest message always its last turn, whole.
    for (const request of ai.requests) {
      const messages = request.body['messages'] as { role: string; content: string }[];
      expect(conversation(messages)).toBeLessThanOrEqual(AI_CONTEXT_MAX_CHARS);
    }
    expect(lastRequestMessages().at(-1)).toEqual({ role: 'user', content: long(12) });
    // A short message after them: the latest stretch of the conversation that fits, oldest dropped.
    await chat.say('and now?');
    expect(lastRequestMessages()).toEqual([
      { role: 'system', content: SYSTEM_PROMPT },
      { role: 'assistant', content: 'answer 11' },
      { role: 'user', content: long(12) },
      { role: 'assistant', content: 'answer 12' },
      { role: 'user', content: 'and now?' },
    ]);
    expect(sentTexts().at(-1)).toBe('answer 13');
  });

  it('sends an answer whose model name or usage the endpoint gave as null or oddly, and counts only the usage it can read', async () => {
    const chat = await new Chat('15550000026').init();
    const before = await data.stats.totals();
    ai.respond = () => ({
      status: 200,
      body: {
        model: null,
        choices: [
          { index: 0, message: { role: 'assistant', content: 'fine answer' }, finish_reason: 'stop' },
        ],
        usage: { prompt_tokens: 10, completion_tokens: null, total_tokens: null },
      },
    });
    const first = await chat.say('hello');
    ai.respond = () => ({
      status: 200,
      body: {
        model: MODEL,
        choices: [
          { index: 0, message: { role: 'assistant', content: 'second answer' }, finish_reason: 'stop' },
        ],
        usage: { prompt_tokens: '10', completion_tokens: '5', total_tokens: '15' },
      },
    });
    const second = await chat.say('again');
    expect(sentTexts()).toEqual(['fine answer', 'second answer']);
    expect(ai.requests).toHaveLength(2);
    // The model configured stands in for a missing name; usage only as far as it is numbers.
    expect((await outboundFor(first))[0]?.ai).toMatchObject({
      model: MODEL,
      promptTokens: 10,
      totalTokens: 10,
    });
    expect((await outboundFor(second))[0]?.ai).toMatchObject({ model: MODEL, totalTokens: 0 });
    const after = await data.stats.totals();
    expect(after.aiRequests - before.aiRequests).toBe(2);
    expect(after.aiTokens - before.aiTokens).toBe(10);
  });

  // Reasoning models served as chat completions (DeepSeek-R1 on Azure AI Foundry, vLLM or Ollama
  // without a reasoning parser) put their chain of thought first in the content, in <think> tags.
  it('sends the answer without the reasoning a model wrote first in <think> tags, and keeps none of it', async () => {
    ai.respond = () =>
      finished(
        '<think>\nThe user greets me; the system prompt says to be brief.\n</think>\n\nHello! How can I help?',
        'stop',
      );
    const chat = await new Chat('15550000027').init();
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual(['Hello! How can I help?']);
    expect((await outboundFor(id)).map((m) => m.text)).toEqual(['Hello! How can I help?']);
    // Reasoning that never reached its answer (the token limit stopped it) is no answer.
    graph.requests = [];
    ai.respond = () => finished('<think>\nLet me think about the opening hours and', 'length');
    await chat.say('opening hours?');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    // A <think> the answer only mentions stays.
    graph.requests = [];
    ai.respond = () => finished('Use the <think> tag like this: <think>…</think>', 'stop');
    await chat.say('html?');
    expect(sentTexts()).toEqual(['Use the <think> tag like this: <think>…</think>']);
  });

  // DeepSeek-R1's chat template writes the opening <think> into the prompt, so vLLM without a
  // reasoning parser returns the reasoning and only a closing </think> (vllm-project/vllm#13125,
  // deepseek-ai/DeepSeek-R1#506); Qwen and R1 may write more than one block; gpt-oss on a server
  // that leaves its harmony format unparsed returns its channels as they are
  // (johnbean393/Sidekick#75). The user gets the answer alone in each case.
  it('sends no reasoning whose opening tag the template wrote, nor further <think> blocks, nor harmony analysis', async () => {
    const chat = await new Chat('15550000920').init();
    const cases = [
      ['Okay, the user asks about hours; I must be brief.\n</think>\n\nWe open at nine.', 'We open at nine.'],
      ['<think>First.</think>\n<think>Second.</think>\nWe open at ten.', 'We open at ten.'],
      [
        '<|channel|>analysis<|message|>User asks hours. Reply briefly.<|end|><|start|>assistant<|channel|>final<|message|>We open at eleven.<|return|>',
        'We open at eleven.',
      ],
      // An answer that only speaks of the tags keeps them.
      ['Write <think>…</think> around it.', 'Write <think>…</think> around it.'],
    ] as const;
    for (const [content, sent] of cases) {
      graph.requests = [];
      ai.respond = () => finished(content, 'stop');
      const id = await chat.say('hours?');
      expect(sentTexts()).toEqual([sent]);
      expect((await outboundFor(id)).map((m) => m.text)).toEqual([sent]);
    }
    // Harmony with no final channel (the token limit stopped the analysis) is all reasoning.
    graph.requests = [];
    ai.respond = () => finished('<|channel|>analysis<|message|>User asks hours. The hours are', 'length');
    await chat.say('hours?');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
  });

  // Mistral's finish_reason `error` (docs.mistral.ai/api) and OpenRouter's (with the choice's
  // `error`: "any error occurred while the LLM is producing the output will be emitted in the
  // response body", openrouter.ai/docs/api-reference/errors): the text is a part at best. Mistral's
  // `model_length` is a cut answer like `length`.
  it('sends the apology, not the part, when an error stopped the answer; marks one Mistral cut at model_length', async () => {
    const chat = await new Chat('15550000921').init();
    ai.respond = () => finished('The shop opens at', 'error');
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    expect(ai.requests).toHaveLength(2);
    expect((await data.messages.getMessage(id))?.error).toMatchObject({
      code: 200,
      title: expect.stringMatching(/stopped by an error/),
    });
    graph.requests = [];
    ai.respond = () => ({
      status: 200,
      body: {
        model: MODEL,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: 'The shop opens at' },
            finish_reason: 'stop',
            error: { code: 502, message: 'Provider returned error' },
          },
        ],
      },
    });
    await chat.say('hello again');
    expect(sentTexts()).toEqual([AI_APOLOGY]);
    graph.requests = [];
    ai.respond = () => finished('The shop opens at nine. Parking is behind the buil', 'model_length');
    await chat.say('and parking?');
    expect(sentTexts()).toEqual(['The shop opens at nine. Parking is behind the…']);
    // Other names for a normal end (TGI's `eos_token`, Anthropic's `stop_sequence`, none) send the answer whole.
    for (const reason of ['eos_token', 'stop_sequence', null]) {
      graph.requests = [];
      ai.respond = () => ({
        status: 200,
        body: { choices: [{ index: 0, message: { content: 'All done.' }, finish_reason: reason }] },
      });
      await chat.say('thanks');
      expect(sentTexts()).toEqual(['All done.']);
    }
  });

  // Some OpenAI-compatible servers and proxies stream Server-Sent Events when a request leaves
  // `stream` out, though OpenAI's default is false (unslothai/unsloth#5047, decolua/9router#4122),
  // and answer JSON only when it says `stream: false`: the user got the apology from them.
  it('asks with stream: false, so a server that streams by default answers in JSON', async () => {
    ai.respond = (req) =>
      req.body['stream'] === false
        ? finished('We open at nine.', 'stop')
        : {
            status: 200,
            body: null,
            headers: { 'Content-Type': 'text/event-stream' },
            raw:
              'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"We open"}}]}\n\n' +
              'data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":" at nine."},"finish_reason":"stop"}]}\n\n' +
              'data: [DONE]\n\n',
          };
    const chat = await new Chat('15550000922').init();
    await chat.say('hours?');
    expect(sentTexts()).toEqual(['We open at nine.']);
    expect(ai.requests).toHaveLength(1);
  });

  // OpenAI's reference: finish_reason `length` when "the maximum number of tokens specified in the
  // request was reached" (or the deployment's own limit): the text stops mid-sentence.
  it('marks an answer the token limit cut with "…" at its last whole word, as a cut long answer is', async () => {
    ai.respond = () => finished('The shop opens at nine. Parking is behind the buil', 'length');
    const chat = await new Chat('15550000024').init();
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual(['The shop opens at nine. Parking is behind the…']);
    expect(ai.requests).toHaveLength(1);
    expect((await data.messages.getMessage(id))?.error).toBeNull();
    // A whole answer is sent as it is.
    graph.requests = [];
    ai.respond = () => finished('All done.', 'stop');
    await chat.say('thanks');
    expect(sentTexts()).toEqual(['All done.']);
  });

  it('sends and stores an answer with a lone surrogate or a NUL as well-formed text without control characters', async () => {
    // JSON.stringify writes the lone surrogates as \ud800 escapes, as a model's JSON may hold them.
    ai.respond = () => finished('a\ud800b\u0000c\u0007d\udc00\n\ud83d\ude00', 'stop');
    const chat = await new Chat('15550000022').init();
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual(['a\ufffdbcd\ufffd\n\u{1f600}']);
    expect((await outboundFor(id)).map((m) => m.text)).toEqual(['a\ufffdbcd\ufffd\n\u{1f600}']);
    expect((await data.messages.getMessage(id))?.replyState).toBe('sent');
  });

  it('drops the C1 control characters too (U+0080–U+009F), so that the marks around them convert', async () => {
    // A control character is Unicode's Cc: C0, DEL and C1 (NEL and CSI among them). Kept, C1 ones
    // reached the user as boxes, and one next to a mark stood for a letter: `**Hi**` stayed as is.
    ai.respond = () => finished('**Hi**\u0085 there\u009b\u0080!\n\tok', 'stop');
    const chat = await new Chat('15550000091').init();
    const id = await chat.say('hello');
    expect(sentTexts()).toEqual(['*Hi* there!\n\tok']);
    expect((await outboundFor(id)).map((m) => m.text)).toEqual(['*Hi* there!\n\tok']);
  });

  it("sends and stores a Markdown answer in WhatsApp's formatting, split after the conversion", async () => {
    const markdown = [
      '## Opening hours',
      'We are open **Monday to Friday**, see [our page](https://example.com/open_hours).',
      '',
      '---',
      '',
      '```',
      'keep **this** as_is',
      '```',
    ].join('\n');
    ai.respond = () => finished(markdown, 'stop');
    const chat = await new Chat('15550000053').init();
    const id = await chat.say('when are you open?');
    const whatsapp = [
      '*Opening hours*',
      'We are open *Monday to Friday*, see our page (https://example.com/open_hours).',
      '',
      '```',
      'keep **this** as_is',
      '```',
    ].join('\n');
    expect(sentTexts()).toEqual([whatsapp]);
    expect((await outboundFor(id)).map((m) => m.text)).toEqual([whatsapp]);
    // The next call reads the answer as it was sent.
    await chat.say('thanks');
    expect(lastRequestMessages()[2]).toEqual({ role: 'assistant', content: whatsapp });
    // Over WhatsApp's 4,096 characters as Markdown, within them once converted: one message.
    graph.requests = [];
    const long = '**bold** '.repeat(500);
    expect(long.length).toBeGreaterThan(4_096);
    ai.respond = () => finished(long, 'stop');
    await chat.say('more');
    expect(sentTexts()).toEqual(['*bold* '.repeat(500).trim()]);
  });
});
