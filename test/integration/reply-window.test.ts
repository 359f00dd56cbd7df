// WhatsApp's 24-hour customer service window on the real reply path. The window is Meta's to judge:
// a notification received now is answered whatever its timestamp (Meta's examples are dated 2020),
// and a Graph refusal (131047) settles it `failed` with OUTSIDE_WINDOW, never sent again. The
// worker skips the AI and Graph on its own only when the user's latest inbound message reached us
// 24 hours ago or more (a reply job handed over a day late): settled `failed` with OUTSIDE_WINDOW.
// An old message the user has written after since is answered as always.
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

/**
 * The user's texts, each sent `agoSeconds` before now (Meta's time), ingested `receivedAgoSeconds`
 * ago (the time the notification reached us: ingest's clock) and answered now.
 */
async function answered(
  waId: string,
  texts: [text: string, agoSeconds: number][],
  { receivedAgoSeconds = 0 }: { receivedAgoSeconds?: number } = {},
): Promise<string[]> {
  const now = Math.floor(Date.now() / 1000);
  const messages = texts.map(([text, ago]) => textMessage(waId, text, { timestamp: String(now - ago) }));
  await deliver(waId, messages, receivedAgoSeconds);
  return messages.map((m) => m.id);
}

/** Ingests `messages` as received `receivedAgoSeconds` ago and runs their reply jobs now. */
async function deliver(
  waId: string,
  messages: ReturnType<typeof textMessage>[],
  receivedAgoSeconds: number,
  metadata?: Record<string, string>,
): Promise<void> {
  const at = receivedAgoSeconds ? () => new Date(Date.now() - receivedAgoSeconds * 1000) : app.services.now;
  const { jobs } = await ingestNotification(
    { ...app.services, now: at },
    notification({ ...value({ contacts: [{ waId }], messages }), ...(metadata ? { metadata } : {}) }),
    log,
  );
  for (const job of jobs) await processReplyJob(app.services, job, log);
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

const sentTo = (waId: string) =>
  app.graph
    .sends()
    .filter((r) => r.body['to'] === waId)
    .map((r) => (r.body['text'] as { body: string }).body);

describe('a notification received now, whatever its timestamp', () => {
  // Meta's own examples carry timestamps from 2020: the window is the Graph API's to judge then.
  const META_EXAMPLE_TIMESTAMP = '1603059201';

  it('is answered exactly once through the Graph API', async () => {
    const waId = newNumber();
    const message = textMessage(waId, 'hello from an old clock', { timestamp: META_EXAMPLE_TIMESTAMP });
    await deliver(waId, [message], 0);
    expect(ai.requests).toHaveLength(1);
    expect(sentTo(waId)).toEqual(['answer to hello from an old clock']);
    const inbound = await app.services.data.messages.getMessage(message.id);
    expect([inbound?.replyState, inbound?.error]).toEqual(['sent', null]);
    // The job handed over again (and the notification delivered again) sends nothing more.
    const userId = await userIdOf(app.services.data, waId);
    await processReplyJob(app.services, { kind: 'message', userId, messageId: message.id }, log);
    await deliver(waId, [message], 0);
    expect(sentTo(waId)).toHaveLength(1);
    expect(ai.requests).toHaveLength(1);
    expect((await outbound(waId)).map((m) => [m.text, m.status])).toEqual([
      ['answer to hello from an old clock', 'sent'],
    ]);
  });

  it('refused by Graph for the window (131047): recorded failed with OUTSIDE_WINDOW, never sent again', async () => {
    const waId = newNumber();
    const message = textMessage(waId, 'are you there?', { timestamp: META_EXAMPLE_TIMESTAMP });
    app.graph.sendResponses.push(reengagement());
    await deliver(waId, [message], 0);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    const inbound = await app.services.data.messages.getMessage(message.id);
    expect(inbound?.replyState).toBe('failed');
    expect(inbound?.error).toMatchObject({ code: 'OUTSIDE_WINDOW', title: expect.stringMatching(/24-hour/) });
    expect(inbound?.error?.title).toMatch(/131047/);
    // The answer that did not go out keeps Graph's own code.
    expect((await outbound(waId)).map((m) => [m.status, m.error?.code])).toEqual([['failed', 131047]]);
    // Neither the job handed over again nor a sweep sends it again.
    const userId = await userIdOf(app.services.data, waId);
    await processReplyJob(app.services, { kind: 'message', userId, messageId: message.id }, log);
    const later = () => new Date(Date.now() + 5 * 60_000);
    const swept = await sweepStaleReplies({ ...app.services, now: later }, log);
    expect(swept.filter((j) => j.userId === userId)).toEqual([]);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    expect(ai.requests).toHaveLength(1);
    expect(logs.join('\n')).not.toContain(waId);
  });
});

describe('a 131047 refusal within one look (a burst, a replay after an outage)', () => {
  it('closes the window for the rest of the look: the further messages to that number get no read receipt, AI call or send', async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    const burst = ['one', 'two', 'three'].map((text) => textMessage(waId, text, { timestamp: String(now) }));
    // Graph would refuse every send to this user through that number.
    app.graph.sendResponses.push(reengagement(), reengagement(), reengagement());
    await deliver(waId, burst, 0);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    expect(ai.requests).toHaveLength(1);
    const ids = burst.map((m) => m.id);
    expect(
      app.graph
        .receipts()
        .map((r) => r.body['message_id'])
        .filter((id) => ids.includes(id as string)),
    ).toEqual([burst[0]!.id]);
    for (const id of ids) {
      const inbound = await app.services.data.messages.getMessage(id);
      expect([inbound?.replyState, inbound?.error?.code]).toEqual(['failed', 'OUTSIDE_WINDOW']);
      expect(inbound?.error?.title).toMatch(/131047/);
    }
    // Only the answer Graph refused is stored (with Graph's code).
    expect((await outbound(waId)).map((m) => [m.status, m.error?.code])).toEqual([['failed', 131047]]);
    expect(logs.join('\n')).not.toContain(waId);

    // The user writes again: the window is open, the new message is answered as usual.
    app.graph.sendResponses.length = 0;
    const again = textMessage(waId, 'hello again', { timestamp: String(now + 1) });
    await deliver(waId, [again], 0);
    // The refused attempt, then the new answer.
    expect(sentTo(waId)).toEqual(['answer to one', 'answer to hello again']);
    expect(ai.requests).toHaveLength(2);
    expect((await app.services.data.messages.getMessage(again.id))?.replyState).toBe('sent');
  });

  it('a command after the refusal still takes effect, without a confirmation', async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    const burst = [
      textMessage(waId, 'hello?', { timestamp: String(now) }),
      textMessage(waId, 'stop', { timestamp: String(now) }),
    ];
    app.graph.sendResponses.push(reengagement(), reengagement());
    await deliver(waId, burst, 0);
    expect(app.graph.sends().filter((r) => r.body['to'] === waId)).toHaveLength(1);
    const user = await app.services.data.users.findByIdentity({ waId, bsuid: null });
    expect(user?.optedOut).toBe(true);
    const stop = await app.services.data.messages.getMessage(burst[1]!.id);
    expect([stop?.replyState, stop?.error?.code]).toEqual(['failed', 'OUTSIDE_WINDOW']);
  });

  it('leaves the window of another business number open', async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    const otherNumber = '106540352242999';
    const first = textMessage(waId, 'to the first number', { timestamp: String(now) });
    const second = textMessage(waId, 'to the second number', { timestamp: String(now) });
    const userJobs = [
      ...(
        await ingestNotification(
          app.services,
          notification(value({ contacts: [{ waId }], messages: [first] })),
          log,
        )
      ).jobs,
      ...(
        await ingestNotification(
          app.services,
          notification({
            ...value({ contacts: [{ waId }], messages: [second] }),
            metadata: { display_phone_number: '15550783999', phone_number_id: otherNumber },
          }),
          log,
        )
      ).jobs,
    ];
    app.graph.sendResponses.push(reengagement());
    for (const job of userJobs) await processReplyJob(app.services, job, log);
    expect(ai.requests).toHaveLength(2);
    expect((await app.services.data.messages.getMessage(first.id))?.error?.code).toBe('OUTSIDE_WINDOW');
    expect((await app.services.data.messages.getMessage(second.id))?.replyState).toBe('sent');
  });
});

describe("replies the worker knows to be outside WhatsApp's 24-hour customer service window", () => {
  it('a message answered 24 h after it reached us (the user silent since) is neither sent to the AI nor to Graph, and is settled failed with OUTSIDE_WINDOW', async () => {
    const waId = newNumber();
    const [id] = await answered(waId, [['are you open on sunday?', 25 * HOUR_S]], {
      receivedAgoSeconds: 25 * HOUR_S,
    });
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

  it('a reply the sweeper re-queued, run once the window anchored at its arrival has closed, is settled without AI or Graph', async () => {
    const waId = newNumber();
    const received = Date.now() - 25 * HOUR_S * 1000;
    const message = textMessage(waId, 'anyone?', { timestamp: String(Math.floor(received / 1000)) });
    // Stored, its job lost with a crashed host.
    await ingestNotification(
      { ...app.services, now: () => new Date(received) },
      notification(value({ contacts: [{ waId }], messages: [message] })),
      log,
    );
    const userId = await userIdOf(app.services.data, waId);
    const jobs = await sweepStaleReplies(
      { ...app.services, now: () => new Date(received + 2 * 60_000) },
      log,
    );
    const requeued = jobs.filter((j) => j.userId === userId);
    expect(requeued).toHaveLength(1);
    // The queue hands the job over only now (a host down for a day).
    for (const job of requeued) await processReplyJob(app.services, job, log);
    expect(ai.requests).toHaveLength(0);
    expect(toUser(waId)).toEqual([]);
    const inbound = await app.services.data.messages.getMessage(message.id);
    expect([inbound?.replyState, inbound?.error?.code]).toEqual(['failed', 'OUTSIDE_WINDOW']);
  });

  it("the window runs from when the message reached us: 24 h after it is closed, 23 h is open whatever Meta's time", async () => {
    const closed = newNumber();
    const [late] = await answered(closed, [['exactly a day ago', 24 * HOUR_S]], {
      receivedAgoSeconds: 24 * HOUR_S,
    });
    expect((await app.services.data.messages.getMessage(late!))?.replyState).toBe('failed');
    expect(ai.requests).toHaveLength(0);

    // Meta's time a day ago, received 23 h ago: open.
    const open = newNumber();
    const [recent] = await answered(open, [['still in time', 24 * HOUR_S]], {
      receivedAgoSeconds: 23 * HOUR_S,
    });
    expect(ai.requests).toHaveLength(1);
    expect((await app.services.data.messages.getMessage(recent!))?.replyState).toBe('sent');
    expect((await outbound(open)).map((m) => [m.text, m.status])).toEqual([
      ['answer to still in time', 'sent'],
    ]);
  });

  it('an old message the user has written after since (the window is open again) is answered, in order', async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    const old = textMessage(waId, 'from yesterday', { timestamp: String(now - 30 * HOUR_S) });
    const fresh = textMessage(waId, 'and today', { timestamp: String(now - 60) });
    const userJobs = [
      ...(
        await ingestNotification(
          { ...app.services, now: () => new Date(Date.now() - 30 * HOUR_S * 1000) },
          notification(value({ contacts: [{ waId }], messages: [old] })),
          log,
        )
      ).jobs,
      ...(
        await ingestNotification(
          app.services,
          notification(value({ contacts: [{ waId }], messages: [fresh] })),
          log,
        )
      ).jobs,
    ];
    for (const job of userJobs) await processReplyJob(app.services, job, log);
    expect(ai.requests).toHaveLength(2);
    for (const id of [old.id, fresh.id])
      expect((await app.services.data.messages.getMessage(id))?.replyState).toBe('sent');
    expect(sentTo(waId)).toEqual(['answer to from yesterday', 'answer to and today']);
  });

  it('an old `stop` still opts the user out, without a confirmation Meta would refuse', async () => {
    const waId = newNumber();
    const [id] = await answered(waId, [['stop', 26 * HOUR_S]], { receivedAgoSeconds: 26 * HOUR_S });
    expect(toUser(waId)).toEqual([]);
    const user = await app.services.data.users.findByIdentity({ waId, bsuid: null });
    expect(user?.optedOut).toBe(true);
    expect((await app.services.data.messages.getMessage(id!))?.replyState).toBe('failed');
  });

  it('the latest message to that number that reached us is read beyond the look when the look holds none (not the one with the latest Meta time)', async () => {
    const waId = newNumber();
    const now = Math.floor(Date.now() / 1000);
    // A day and more ago: pending, its job handed over only now.
    const old = textMessage(waId, 'from yesterday', { timestamp: String(now - 30 * HOUR_S) });
    // Just received, dated 2020 by the sender's clock: the window is open again.
    const fresh = textMessage(waId, 'hello again', { timestamp: '1603059201' });
    // Then more reactions through another business number than the worker's read holds.
    const reactions = Array.from({ length: 45 }, () => ({
      from: waId,
      id: `wamid.reaction.${Math.random().toString(36).slice(2)}`,
      timestamp: String(now),
      type: 'reaction',
      reaction: { message_id: 'wamid.elsewhere', emoji: '👍' },
    }));
    const { jobs } = await ingestNotification(
      { ...app.services, now: () => new Date(Date.now() - 30 * HOUR_S * 1000) },
      notification(value({ contacts: [{ waId }], messages: [old] })),
      log,
    );
    await ingestNotification(
      app.services,
      notification(value({ contacts: [{ waId }], messages: [fresh] })),
      log,
    );
    await ingestNotification(
      app.services,
      notification({
        ...value({ contacts: [{ waId }], messages: reactions }),
        metadata: { display_phone_number: '15550783999', phone_number_id: '106540352242999' },
      }),
      log,
    );
    for (const job of jobs) await processReplyJob(app.services, job, log);
    for (const id of [old.id, fresh.id])
      expect(await app.services.data.messages.getMessage(id)).toMatchObject({
        replyState: 'sent',
        error: null,
      });
    expect(sentTo(waId)).toEqual(['answer to hello again', 'answer to from yesterday']);
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
          { ...app.services, now: () => new Date(Date.now() - 30 * HOUR_S * 1000) },
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
