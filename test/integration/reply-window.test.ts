// WhatsApp's 24-hour customer service window on the real reply path: a message answered when the
// user's latest inbound message (Meta's time) is 24 hours old or more (a poisoned notification
// replayed after a long outage, a reply the sweeper re-queued) is not sent to the AI nor to the
// Graph API: it is settled `failed` with the error OUTSIDE_WINDOW. One inside the window, or an
// old one the user has written after since, is answered as always.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { processReplyJob } from '../../shared/bot/reply';
import { sweepStaleReplies } from '../../shared/bot/sweeper';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { startHttpStub, type HttpStub, type StubRequest } from '../helpers/http-stub';
import { notification, textMessage, value } from '../helpers/meta';
import { userIdOf } from '../helpers/users';

const HOUR_S = 3_600;

let app: TestApp;
let ai: HttpStub;
const { log, lines: logs } = capturedLog();
let n = 0;
const newNumber = () => `4480${Date.now().toString().slice(-6)}${++n}`;

function respond(request: StubRequest) {
  const messages = request.body['messages'] as { role: string; content: string }[];
  return {
    status: 200,
    body: {
      model: 'window-model',
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: `answer to ${messages.at(-1)?.content ?? ''}` },
          finish_reason: 'stop',
        },
      ],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    },
  };
}

beforeAll(async () => {
  ai = await startHttpStub(respond);
  app = await startTestApp({ AI_ENDPOINT: `${ai.url}/v1`, AI_MODEL: 'window-model', AI_TIMEOUT_MS: '5000' });
});

afterAll(async () => {
  await app?.close();
  await ai?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
  ai.requests = [];
  logs.length = 0;
});

/** The user's texts, each sent `agoSeconds` before now (Meta's time), ingested and answered. */
async function answered(waId: string, texts: [text: string, agoSeconds: number][]): Promise<string[]> {
  const now = Math.floor(Date.now() / 1000);
  const messages = texts.map(([text, ago]) => textMessage(waId, text, { timestamp: String(now - ago) }));
  const { jobs } = await ingestNotification(
    app.services,
    notification(value({ contacts: [{ waId }], messages })),
    log,
  );
  for (const job of jobs) await processReplyJob(app.services, job, log);
  return messages.map((m) => m.id);
}

const toUser = (waId: string) => app.graph.requests.filter((r) => r.body['to'] === waId || r.body['status']);

async function outbound(waId: string) {
  const userId = await userIdOf(app.services.data, waId);
  return (await app.services.data.messages.recent(userId, 50)).filter((m) => m.direction === 'outbound');
}

/** Graph's answer to a send outside the window, as Meta words it (code 131047). */
const reengagement = () => ({
  status: 400,
  body: {
    error: {
      message:
        '(#131047) Re-engagement message: More than 24 hours have passed since the recipient last replied to the sender number.',
      type: 'OAuthException',
      code: 131047,
      error_data: {
        messaging_product: 'whatsapp',
        details:
          'Message failed to send because more than 24 hours have passed since the customer last replied to this number.',
      },
      fbtrace_id: 'AbCdEf131047',
    },
  },
});

describe("replies outside WhatsApp's 24-hour customer service window", () => {
  it('an old message replayed is neither sent to the AI nor to Graph, and is settled failed with OUTSIDE_WINDOW', async () => {
    const waId = newNumber();
    const [id] = await answered(waId, [['are you open on sunday?', 25 * HOUR_S]]);
    expect(ai.requests).toHaveLength(0);
    // No answer and no read receipt either.
    expect(toUser(waId)).toEqual([]);
    const inbound = await app.services.data.messages.getMessage(id!);
    expect(inbound?.replyState).toBe('failed');
    expect(inbound?.error).toMatchObject({ code: 'OUTSIDE_WINDOW' });
    expect(inbound?.error?.title).toMatch(/24-hour/);
    expect(await outbound(waId)).toEqual([]);
    expect(logs.some((l) => l.includes('outside the 24-hour window'))).toBe(true);
    expect(logs.join('\n')).not.toContain(waId);
    expect(logs.join('\n')).not.toContain('sunday');
  });

  it('an answer Graph refuses for the window (131047) is recorded failed with OUTSIDE_WINDOW, never sent again', async () => {
    const waId = newNumber();
    // Within the window on Meta's clock, which Meta still judges closed (the window is Meta's).
    app.graph.sendResponses.push(reengagement());
    const [id] = await answered(waId, [['are you there?', 60]]);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    const inbound = await app.services.data.messages.getMessage(id!);
    expect(inbound?.replyState).toBe('failed');
    expect(inbound?.error).toMatchObject({ code: 'OUTSIDE_WINDOW', title: expect.stringMatching(/24-hour/) });
    expect(inbound?.error?.title).toMatch(/131047/);
    // The answer that did not go out keeps Graph's own code.
    expect((await outbound(waId)).map((m) => [m.status, m.error?.code])).toEqual([['failed', 131047]]);
    // Neither the job handed over again nor a sweep sends it again.
    const userId = await userIdOf(app.services.data, waId);
    await processReplyJob(app.services, { kind: 'message', userId, messageId: id! }, log);
    const later = () => new Date(Date.now() + 5 * 60_000);
    const swept = await sweepStaleReplies({ ...app.services, now: later }, log);
    expect(swept.filter((j) => j.userId === userId)).toEqual([]);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    expect(ai.requests).toHaveLength(1);
    expect(logs.join('\n')).not.toContain(waId);
  });

  it('exactly 24 hours is closed; a message inside the window is answered as always', async () => {
    const closed = newNumber();
    const [late] = await answered(closed, [['exactly a day ago', 24 * HOUR_S]]);
    expect((await app.services.data.messages.getMessage(late!))?.replyState).toBe('failed');
    expect(ai.requests).toHaveLength(0);

    const open = newNumber();
    const [recent] = await answered(open, [['still in time', 23 * HOUR_S]]);
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(recent!))?.replyState).toBe('sent');
    expect((await outbound(open)).map((m) => [m.text, m.status])).toEqual([
      ['answer to still in time', 'sent'],
    ]);
  });

  it('an old message the user has written after since (the window is open again) is answered, in order', async () => {
    const waId = newNumber();
    const ids = await answered(waId, [
      ['from yesterday', 30 * HOUR_S],
      ['and today', 60],
    ]);
    expect(ai.requests).toHaveLength(2);
    for (const id of ids) expect((await app.services.data.messages.getMessage(id))?.replyState).toBe('sent');
    expect(
      app.graph
        .sends()
        .filter((r) => r.body['to'] === waId)
        .map((r) => (r.body['text'] as { body: string }).body),
    ).toEqual(['answer to from yesterday', 'answer to and today']);
  });

  it('an old `stop` still opts the user out, without a confirmation Meta would refuse', async () => {
    const waId = newNumber();
    const [id] = await answered(waId, [['stop', 26 * HOUR_S]]);
    expect(toUser(waId)).toEqual([]);
    const user = await app.services.data.users.findByIdentity({ waId, bsuid: null });
    expect(user?.optedOut).toBe(true);
    expect((await app.services.data.messages.getMessage(id!))?.replyState).toBe('failed');
  });

  it("is the window of the business number the message was sent to: a recent message to another of the business's numbers does not open it", async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    const otherNumber = '106540352242999';
    const old = textMessage(waId, 'sent to the second number', { timestamp: String(now - 30 * HOUR_S) });
    const recent = textMessage(waId, 'sent to the first number', { timestamp: String(now - 60) });
    const jobs = [
      ...(
        await ingestNotification(
          app.services,
          notification(value({ contacts: [{ waId }], messages: [recent] })),
          log,
        )
      ).jobs,
      ...(
        await ingestNotification(
          app.services,
          notification({
            ...value({ contacts: [{ waId }], messages: [old] }),
            metadata: { display_phone_number: '15550783999', phone_number_id: otherNumber },
          }),
          log,
        )
      ).jobs,
    ];
    for (const job of jobs) await processReplyJob(app.services, job, log);
    // Meta would refuse an answer through the second number (131047): none is tried.
    expect((await app.services.data.messages.getMessage(old.id))?.error).toMatchObject({
      code: 'OUTSIDE_WINDOW',
    });
    expect(app.graph.requests.filter((r) => r.path.includes(otherNumber))).toEqual([]);
    expect((await app.services.data.messages.getMessage(recent.id))?.replyState).toBe('sent');
  });
});
