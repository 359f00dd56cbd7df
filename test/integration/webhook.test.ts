// The webhook and reply path end to end through the real handlers, a real database and a
// loopback Graph stub: exactly-once storage and replies, statuses, opt-out, rejections, healing.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { collectionOf } from '../helpers/raw';
import { cpuClock } from '../helpers/cpu';
import { HttpRequest, type Timer } from '@azure/functions';
import { ACCESS_TOKEN, startTestApp, VERIFY_TOKEN, type TestApp } from '../helpers/app';
import {
  notification,
  PHONE_NUMBER_ID,
  status,
  textMessage,
  textNotification,
  value,
  wamid,
  nowSeconds,
} from '../helpers/meta';
import { loadConfig } from '../../shared/config';
import { buildServices, runtimeOf } from '../../shared/deps';
import { createDataStore, CounterDelta } from '../../shared/data';
import { Gateway } from '../../shared/data/gateway';
import { adapterFor } from '../../shared/data/adapter';
import { StatsRepository, type StatsDoc } from '../../shared/data/stats';
import { inboundQueueOutput, receiveWebhook, replyQueueOutput, verifyWebhook } from '../../functions/webhook';
import { ingestWorker } from '../../functions/ingest';
import { sweeperTimer } from '../../functions/sweeper';
import { MAX_INLINE_BYTES, type ReplyJob } from '../../shared/bot/jobs';
import { createHash } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { InvocationContext } from '@azure/functions';
import { signBody } from '../../shared/whatsapp/signature';
import { accepted, tokenExpired } from '../helpers/graph-stub';
import { userIdOf } from '../helpers/users';
import { sendMessage } from '../../shared/manage/service';
import { cursorCodec } from '../../shared/manage/cursor';
import {
  DEFAULT_ANSWER,
  HELP_TEXT,
  START_ANSWER,
  STOP_ANSWER,
  UNREADABLE_ANSWER,
} from '../../shared/bot/texts';

let app: TestApp;
const TIMER: Timer = {
  isPastDue: false,
  schedule: { adjustForDST: false },
  scheduleStatus: { last: '', next: '', lastUpdated: '' },
};
let phoneSeq = 0;
const newPhone = () => `1650555${String(1000 + ++phoneSeq).padStart(4, '0')}`;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});
afterEach(() => {
  // Logs never carry a phone number (nor a message id, which holds one), a token or a message text.
  const all = app.logs.join('\n');
  expect(all).not.toMatch(/1650555\d{4}/);
  expect(all).not.toMatch(/wamid\./i);
  expect(all).not.toContain(ACCESS_TOKEN);
  expect(all).not.toContain('secret words');
});

const messages = () => collectionOf(app.database.db, 'messages');
const users = () => collectionOf(app.database.db, 'users');
/** The totals as operators see them: the running counters and what the sweep has not folded in yet. */
const totals = async (): Promise<Record<string, number>> => app.services.data.stats.totals();
/** The running totals document alone. */
const runningTotals = async () =>
  ((await collectionOf(app.database.db, 'stats').findOne({ _id: 'totals' })) ?? {}) as Record<string, number>;

describe('GET /api/webhook (verification)', () => {
  it('echoes the challenge when mode and token match', async () => {
    const res = await app.verify({
      'hub.mode': 'subscribe',
      'hub.verify_token': VERIFY_TOKEN,
      'hub.challenge': '1158201444',
    });
    expect(res).toEqual({ status: 200, body: '1158201444' });
  });
  it('refuses a wrong token or mode', async () => {
    expect(
      (await app.verify({ 'hub.mode': 'subscribe', 'hub.verify_token': 'nope', 'hub.challenge': 'x' }))
        .status,
    ).toBe(403);
    expect(
      (
        await app.verify({
          'hub.mode': 'unsubscribe',
          'hub.verify_token': VERIFY_TOKEN,
          'hub.challenge': 'x',
        })
      ).status,
    ).toBe(403);
    expect((await app.verify({})).status).toBe(403);
  });
  it('refuses a parameter given twice instead of echoing the values the host joined', async () => {
    // The Functions host joins repeated values with ',' (hub.challenge=1&hub.challenge=2 arrives as
    // "1,2"): echoing that is not the challenge Meta sent, and a token given twice is not the token.
    const token = encodeURIComponent(VERIFY_TOKEN);
    for (const query of [
      `hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=1&hub.challenge=2`,
      `hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=7&HUB.CHALLENGE=8`,
      `hub.mode=subscribe&hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=3`,
      `hub.mode=subscribe&hub.verify_token=${token}&hub.verify_token=${token}&hub.challenge=4`,
    ])
      expect(await app.verify(query)).toEqual({ status: 403, body: 'Forbidden' });
    expect(await app.verify(`hub.mode=subscribe&hub.verify_token=${token}&hub.challenge=a%2Cb`)).toEqual({
      status: 200,
      body: 'a,b',
    });
  });
});

describe('POST /api/webhook', () => {
  it('stores a text message once, answers it once, marks it read', async () => {
    const phone = newPhone();
    const { message, payload } = textNotification(phone, 'secret words about Café', 'Zoë Ångström');
    const before = app.graph.sends().length;
    const res = await app.post(payload);
    expect(res.status).toBe(200);
    expect(res.jobs).toHaveLength(1);
    await app.drain();

    const stored = await messages().findOne({ _id: message.id });
    expect(stored).toMatchObject({
      direction: 'inbound',
      type: 'text',
      text: 'secret words about Café',
      replyState: 'sent',
      status: 'read',
    });
    const user = await users().findOne({ waId: phone });
    expect(user).toMatchObject({ name: 'Zoë Ångström', messageCount: 2, optedOut: false });
    expect(user?._id).not.toContain(phone);

    const sends = app.graph.sends().slice(before);
    expect(sends).toHaveLength(1);
    expect(sends[0]?.path).toBe(`/v25.0/${PHONE_NUMBER_ID}/messages`);
    expect(sends[0]?.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(sends[0]?.body).toMatchObject({
      messaging_product: 'whatsapp',
      to: phone,
      type: 'text',
      text: { body: DEFAULT_ANSWER },
    });
    expect(app.graph.receipts().some((r) => r.body['message_id'] === message.id)).toBe(true);

    const outbound = await messages().find({ relatedId: message.id, direction: 'outbound' }).toArray();
    expect(outbound).toHaveLength(1);
    expect(outbound[0]?._id).toMatch(/^wamid\.out\./);
    expect(outbound[0]?.status).toBe('sent');

    // A redelivery changes nothing and answers nothing.
    const countersBefore = await totals();
    const again = await app.post(payload);
    expect(again.status).toBe(200);
    // Only a job that recounts the user's summary (its first writer might have died before it).
    expect(again.jobs).toEqual([
      { kind: 'message', userId: outbound[0]?.userId, messageId: message.id, recount: true },
    ]);
    await app.drain();
    expect(app.graph.sends().length).toBe(before + 1);
    expect(await totals()).toEqual(countersBefore);
    expect((await users().findOne({ waId: phone }))?.messageCount).toBe(2);
  });

  it('stores the same id twice in one POST once and answers once', async () => {
    const phone = newPhone();
    const message = textMessage(phone, 'twice');
    const payload = notification(value({ contacts: [{ waId: phone }], messages: [message, message] }));
    const before = app.graph.sends().length;
    const res = await app.post(payload);
    expect(res.status).toBe(200);
    await app.drain();
    expect(await messages().countDocuments({ _id: message.id })).toBe(1);
    expect(app.graph.sends().length - before).toBe(1);
  });

  it('twenty concurrent deliveries store one message and produce one reply', async () => {
    const phone = newPhone();
    const { message, payload } = textNotification(phone, 'concurrent');
    const before = app.graph.sends().length;
    const inbound = (await totals())['inbound'] ?? 0;
    const results = await Promise.all(Array.from({ length: 20 }, () => app.post(payload)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const jobs = results.flatMap((r) => r.jobs);
    await Promise.all(jobs.map((job) => app.runJob(job)));
    expect(await messages().countDocuments({ _id: message.id })).toBe(1);
    expect(await users().countDocuments({ waId: phone })).toBe(1);
    expect(app.graph.sends().length - before).toBe(1);
    expect((await totals())['inbound']).toBe(inbound + 1);
    app.queued.length = 0;
  });

  it('counts concurrent messages of many users exactly', async () => {
    const before = await totals();
    const phone = newPhone();
    const others = Array.from({ length: 12 }, () => newPhone());
    const payloads = [
      ...others.map((p) => textNotification(p, 'many users').payload),
      ...Array.from({ length: 8 }, () => textNotification(phone, 'one user, many messages').payload),
    ];
    const results = await Promise.all(payloads.map((p) => app.post(p)));
    expect(results.map((r) => r.status)).toEqual(payloads.map(() => 200));
    const after = await totals();
    expect(after['newUsers']).toBe((before['newUsers'] ?? 0) + 13);
    // An inbound message that waits for its answer is counted when the answer is settled.
    expect(after['inbound'] ?? 0).toBe(before['inbound'] ?? 0);
    await app.drain();
    const drained = await totals();
    expect(drained['inbound']).toBe((before['inbound'] ?? 0) + 20);
    expect(drained['outbound']).toBe((before['outbound'] ?? 0) + 20);
    // Eight messages and their eight answers.
    expect((await users().findOne({ waId: phone }))?.['messageCount']).toBe(16);
    // The writers marked what they stored; the sweep folds it into the running counters.
    await sweeperTimer(runtimeOf(app.services))(TIMER, app.context('sweeper'));
    expect(await app.services.data.stats.runningTotals()).toEqual(drained);
    expect(await totals()).toEqual(drained);
  });

  it('handles every entry, change, message and status of a batch', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const m1 = textMessage(a, 'first');
    const m2 = textMessage(a, 'second');
    const m3 = textMessage(b, 'third');
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: '1',
          changes: [{ field: 'messages', value: value({ contacts: [{ waId: a }], messages: [m1, m2] }) }],
        },
        {
          id: '2',
          changes: [
            { field: 'messages', value: value({ contacts: [{ waId: b }], messages: [m3] }) },
            {
              field: 'messages',
              value: value({ statuses: [status('wamid.unknown-batch', 'delivered', b)] }),
            },
          ],
        },
      ],
    };
    const res = await app.post(payload);
    expect(res.status).toBe(200);
    expect(res.jobs).toHaveLength(3);
    await app.drain();
    expect(await messages().countDocuments({ _id: { $in: [m1.id, m2.id, m3.id] }, replyState: 'sent' })).toBe(
      3,
    );
    expect(await messages().findOne({ _id: 'wamid.unknown-batch' })).toMatchObject({
      status: 'delivered',
    });
  });

  it('answers one user in the order the messages were sent', async () => {
    const phone = newPhone();
    const t = Number(nowSeconds());
    const first = { ...textMessage(phone, 'help'), timestamp: String(t) };
    const second = { ...textMessage(phone, 'hello'), timestamp: String(t + 1) };
    // Delivered out of order, jobs run in reverse.
    await app.post(notification(value({ contacts: [{ waId: phone }], messages: [second] })));
    await app.post(notification(value({ contacts: [{ waId: phone }], messages: [first] })));
    const before = app.graph.sends().length;
    const jobs = app.queued.splice(0);
    for (const job of jobs.reverse()) await app.runJob(job);
    const texts = app.graph
      .sends()
      .slice(before)
      .map((s) => (s.body['text'] as { body: string }).body);
    expect(texts).toEqual([HELP_TEXT, DEFAULT_ANSWER]);
  });

  it('applies statuses forward only, before or after their message is stored', async () => {
    const phone = newPhone();
    const { payload } = textNotification(phone, 'status please');
    await app.post(payload);
    await app.drain();
    const out = await messages().findOne({
      direction: 'outbound',
      userId: (await users().findOne({ waId: phone }))?._id ?? 'missing',
    });
    const id = String(out?._id);
    await app.post(notification(value({ statuses: [status(id, 'read', phone)] })));
    await app.post(notification(value({ statuses: [status(id, 'delivered', phone)] })));
    await app.post(notification(value({ statuses: [status(id, 'sent', phone)] })));
    expect((await messages().findOne({ _id: id }))?.status).toBe('read');

    // A status for a message not stored yet waits for it, and the message keeps the further status.
    const early = 'wamid.early-status';
    await app.post(notification(value({ statuses: [status(early, 'delivered', phone)] })));
    const placeholder = await messages().findOne({ _id: early });
    expect(placeholder?.status).toBe('delivered');
    expect(placeholder?.userId).toBeUndefined();
    await app.services.data.messages.recordOutbound({
      id: early,
      waMessageId: early,
      userId: String(out?.userId),
      type: 'text',
      text: 'late',
      status: 'sent',
      createdAt: new Date(),
      role: 'conversation',
      phoneNumberId: PHONE_NUMBER_ID,
      relatedId: 'x',
      error: null,
      ai: null,
    });
    expect(await messages().findOne({ _id: early })).toMatchObject({
      status: 'delivered',
      text: 'late',
    });

    // failed is terminal, and counted once: marked in the status's own write (the stats add the
    // marked ones), then folded into the running counter by the sweeper.
    const failedBefore = (await totals())['failed'] ?? 0;
    const failedStatus = notification(
      value({
        statuses: [
          status(id, 'failed', phone, { errors: [{ code: 131047, title: 'Re-engagement message' }] }),
        ],
      }),
    );
    await app.post(failedStatus);
    await app.post(notification(value({ statuses: [status(id, 'read', phone)] })));
    expect(await messages().findOne({ _id: id })).toMatchObject({
      status: 'failed',
      error: { code: 131047 },
      failedUncounted: true,
    });
    const stats = app.services.data.stats;
    const failedShown = async () => (await stats.totals()).failed;
    expect(await failedShown()).toBe(failedBefore + 1);
    await sweeperTimer(runtimeOf(app.services))(TIMER, app.context('sweeper'));
    expect((await runningTotals())['failed']).toBe(failedBefore + 1);
    expect(await messages().findOne({ _id: id })).not.toHaveProperty('failedUncounted');
    expect(await failedShown()).toBe(failedBefore + 1);
    // Meta delivers the failure again: nothing more is counted, before or after a sweep.
    await app.post(failedStatus);
    await sweeperTimer(runtimeOf(app.services))(TIMER, app.context('sweeper'));
    expect(await failedShown()).toBe(failedBefore + 1);
  });

  it('honours stop and start', async () => {
    const phone = newPhone();
    const before = app.graph.sends().length;
    for (const text of ['STOP!', 'hello there', 'Start']) {
      await app.post(textNotification(phone, text).payload);
      await app.drain();
    }
    const texts = app.graph
      .sends()
      .slice(before)
      .map((s) => (s.body['text'] as { body: string }).body);
    expect(texts).toEqual([STOP_ANSWER, START_ANSWER]);
    expect(
      await messages().countDocuments({
        userId: (await users().findOne({ waId: phone }))?._id ?? 'missing',
        direction: 'inbound',
      }),
    ).toBe(3);
    expect((await users().findOne({ waId: phone }))?.optedOut).toBe(false);
  });

  it('heals a job lost between store and queue on redelivery', async () => {
    const phone = newPhone();
    const { message, payload } = textNotification(phone, 'lost job');
    await app.post(payload);
    app.queued.length = 0; // the queue write was lost
    expect((await messages().findOne({ _id: message.id }))?.replyState).toBe('pending');
    const again = await app.post(payload);
    expect(again.jobs).toEqual([expect.objectContaining({ messageId: message.id })]);
    const before = app.graph.sends().length;
    await app.drain();
    expect(app.graph.sends().length - before).toBe(1);
  });

  it('reclaims a message whose lease expired', async () => {
    const phone = newPhone();
    const { message, payload } = textNotification(phone, 'expired lease');
    const res = await app.post(payload);
    app.queued.length = 0;
    await messages().updateOne(
      { _id: message.id },
      { $set: { replyState: 'sending', leaseUntil: new Date(Date.now() - 1000) } },
    );
    const before = app.graph.sends().length;
    await app.runJob(res.jobs[0]!);
    expect(app.graph.sends().length - before).toBe(1);
    expect((await messages().findOne({ _id: message.id }))?.replyState).toBe('sent');
  });

  it('rejects oversize, unsigned, badly signed and non-JSON bodies and stores nothing', async () => {
    const countBefore = await messages().countDocuments();
    const eventsBefore = await app.database.db.collection('events').countDocuments();
    const { payload } = textNotification(newPhone(), 'rejected');
    expect((await app.post(payload, { signature: null })).status).toBe(401);
    expect((await app.post(payload, { signature: 'sha256=' + '0'.repeat(64) })).status).toBe(401);
    expect((await app.post(payload, { signature: 'garbage' })).status).toBe(401);
    expect((await app.post(null, { raw: '{not json' })).status).toBe(400);
    const big = JSON.stringify({
      object: 'whatsapp_business_account',
      entry: [],
      pad: 'x'.repeat(3 * 1024 * 1024),
    });
    // Sent chunked, the body never reaches the function (the Functions host passes none): 411.
    const chunked = await app.post(payload, { chunked: true });
    expect(chunked).toMatchObject({ status: 411, inbound: undefined });
    expect(chunked.body).toContain('Content-Length');
    expect((await app.post(null, { raw: big })).status).toBe(413);
    expect((await app.post(null, { raw: big, signature: null })).status).toBe(413);
    expect(await messages().countDocuments()).toBe(countBefore);
    expect(await app.database.db.collection('events').countDocuments()).toBe(eventsBefore);
  });

  it('refuses an unsigned body of 3 MiB of non-ASCII text as quickly as an ASCII one', async () => {
    // Anyone can send these: the escaped forms the signature is also checked against were built
    // with a regex callback per character, about half a second of the instance's event loop for
    // each such request (25 times an ASCII body's cost).
    const bodyOf = (char: string) => {
      const shell = '{"object":"whatsapp_business_account","entry":[],"pad":""}';
      const room = 3 * 1024 * 1024 - Buffer.byteLength(shell);
      return shell.replace('""', `"${char.repeat(Math.floor(room / Buffer.byteLength(char)))}"`);
    };
    const bad = 'sha256=' + '0'.repeat(64);
    const slowest = async (raw: string) => {
      expect(Buffer.byteLength(raw)).toBeLessThanOrEqual(3 * 1024 * 1024);
      const times: number[] = [];
      for (let i = 0; i < 3; i++) {
        const spent = cpuClock();
        expect((await app.post(null, { raw, signature: bad })).status).toBe(401);
        times.push(spent());
      }
      return Math.min(...times);
    };
    // In this process's CPU time (the request runs in it), against an ASCII body of the same size on
    // the same machine, not a fixed time (the old code took 25 to 31 times an ASCII body's time).
    const ascii = await slowest(bodyOf('a'));
    for (const char of ['é', '中', '😀'])
      expect(await slowest(bodyOf(char)), char).toBeLessThan(Math.max(10 * ascii, 200));
    // And such a body, signed, still verifies.
    expect((await app.post(null, { raw: bodyOf('é') })).status).toBe(200);
    await app.drain();
  });

  it('verifies bodies with non-ASCII text escaped or raw', async () => {
    const a = textNotification(newPhone(), 'naïve café 😀');
    expect((await app.post(a.payload, { escapeUnicode: true })).status).toBe(200);
    const b = textNotification(newPhone(), 'naïve café 😀');
    expect((await app.post(b.payload, { escapeUnicode: false })).status).toBe(200);
    expect(await messages().countDocuments({ _id: { $in: [a.message.id, b.message.id] } })).toBe(2);
    await app.drain();
  });

  it('retries Graph 503 and sends exactly one reply', async () => {
    const { message, payload } = textNotification(newPhone(), 'flaky graph');
    app.graph.sendResponses.push({
      status: 503,
      body: { error: { code: 2, message: 'Service temporarily unavailable' } },
    });
    const before = app.graph.sends().length;
    await app.post(payload);
    await app.drain();
    expect(app.graph.sends().length - before).toBe(2);
    expect(
      await messages().countDocuments({ relatedId: message.id, direction: 'outbound', status: 'sent' }),
    ).toBe(1);
  });

  // The Graph API has no idempotency key: a send whose connection broke after Graph read it may
  // have reached the user, and a second one would answer twice.
  it('never sends a reply again when the connection breaks after Graph read it; records it failed and answers the next message', async () => {
    const phone = newPhone();
    const first = textNotification(phone, 'broken line');
    app.graph.sendResponses.push({ status: 0, body: null, reset: true });
    const before = app.graph.sends().length;
    const stats = () => app.services.data.stats.totals();
    const failedBefore = (await stats()).failed;
    await app.post(first.payload);
    await app.drain();
    expect(app.graph.sends().length - before).toBe(1);
    expect(await messages().findOne({ _id: first.message.id })).toMatchObject({ replyState: 'failed' });
    expect(await messages().findOne({ relatedId: first.message.id, direction: 'outbound' })).toMatchObject({
      status: 'failed',
      error: { title: expect.stringMatching(/may have been sent/) },
    });
    expect((await stats()).failed).toBe(failedBefore + 1);

    const second = textNotification(phone, 'line fixed');
    await app.post(second.payload);
    await app.drain();
    expect(app.graph.sends().length - before).toBe(2);
    expect(await messages().findOne({ _id: second.message.id })).toMatchObject({ replyState: 'sent' });
  });

  it('never retries a permanent Graph error and records it', async () => {
    const { message, payload } = textNotification(newPhone(), 'permanent');
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Message undeliverable' } },
    });
    const before = app.graph.sends().length;
    await app.post(payload);
    await app.drain();
    expect(app.graph.sends().length - before).toBe(1);
    expect(await messages().findOne({ _id: message.id })).toMatchObject({
      replyState: 'failed',
      error: { code: 131026 },
    });
    expect(await messages().findOne({ relatedId: message.id, direction: 'outbound' })).toMatchObject({
      status: 'failed',
    });
  });

  // A Graph stand-in may answer every send with one wamid (Meta's examples show one): each message
  // the bot or an operator sent is still stored, under an id of its own when the wamid is taken.
  it('stores every message sent when Graph gives the same wamid to each', async () => {
    const same = wamid();
    const [ann, ben] = [newPhone(), newPhone()];
    const first = textNotification(ann, 'first question');
    const second = textNotification(ann, 'second question');
    const third = textNotification(ben, 'third question');
    app.graph.sendResponses.push(accepted(same), accepted(same), accepted(same), accepted(same));
    const before = await totals();
    for (const { payload } of [first, second, third]) await app.post(payload);
    await app.drain();
    const answers = await messages()
      .find({ relatedId: { $in: [first.message.id, second.message.id, third.message.id] } })
      .toArray();
    expect(answers.map((m) => [m['relatedId'], m['waMessageId'], m['status']]).sort()).toEqual(
      [
        [first.message.id, same, 'sent'],
        [second.message.id, same, 'sent'],
        [third.message.id, same, 'sent'],
      ].sort(),
    );
    expect(new Set(answers.map((m) => m._id)).size).toBe(3);
    expect((await users().findOne({ waId: ann }))?.['messageCount']).toBe(4);
    expect((await users().findOne({ waId: ben }))?.['messageCount']).toBe(2);

    // An operator's message too: the 201 shows that message, not the one stored under the wamid.
    const user = await app.services.data.users.getUser(await userIdOf(app.services.data, ben));
    const ctx = {
      data: app.services.data,
      graph: app.services.graph,
      now: new Date(),
      handoffHours: 24,
      cursors: cursorCodec(app.services.config.whatsapp.appSecret),
    };
    const sent = await sendMessage(ctx, { name: 'ops', tokenId: null }, user?.id ?? '', {
      text: 'from a person',
    });
    expect(sent).toMatchObject({ text: 'from a person', role: 'operator', waMessageId: same });
    expect(sent.id).not.toBe(same);
    expect(await messages().countDocuments({ waMessageId: same })).toBe(4);
    expect((await users().findOne({ waId: ben }))?.['messageCount']).toBe(3);
    const after = await totals();
    expect((after['outbound'] ?? 0) - (before['outbound'] ?? 0)).toBe(4);
  });

  // Meta answers an expired or revoked token with HTTP 401 and code 190 (WhatsApp error codes,
  // developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes): every
  // send fails so until the setting is replaced, which only an operator can do.
  it('records a send refused for the access token (401, code 190) once, logged as a configuration problem', async () => {
    const { message, payload } = textNotification(newPhone(), 'token');
    app.graph.sendResponses.push(tokenExpired());
    const before = app.graph.sends().length;
    app.logs.length = 0;
    await app.post(payload);
    await app.drain();
    expect(app.graph.sends().length - before).toBe(1);
    expect(await messages().findOne({ _id: message.id })).toMatchObject({
      replyState: 'failed',
      error: { code: 190 },
    });
    // At error level, naming the setting to replace (never its value), with the code.
    const config = app.logs.filter((l) => l.includes('WHATSAPP_ACCESS_TOKEN'));
    expect(config).toHaveLength(1);
    expect(config[0]).toMatch(/^error .*configuration problem.*code=190/);
  });

  it('archives shapes it cannot understand and answers 200', async () => {
    const eventsBefore = await app.database.db.collection('events').countDocuments();
    const shapes = [
      { object: 'page', entry: [{ id: '1', changes: [] }] },
      {
        object: 'whatsapp_business_account',
        entry: [{ id: '1', changes: [{ field: 'account_update', value: { event: 'VERIFIED_ACCOUNT' } }] }],
      },
      notification(value({ errors: [{ code: 131051, title: 'Unsupported message type' }] })),
      { object: 'whatsapp_business_account', entry: 'nope' },
      [1, 2, 3],
    ];
    for (const shape of shapes) expect((await app.post(shape)).status).toBe(200);
    expect(await app.database.db.collection('events').countDocuments()).toBe(eventsBefore + shapes.length);
    // Redelivered: archived once.
    await app.post(shapes[0]);
    expect(await app.database.db.collection('events').countDocuments()).toBe(eventsBefore + shapes.length);
  });

  it('answers unreadable kinds politely, ignores reactions, welcomes once, works with a BSUID only', async () => {
    const phone = newPhone();
    const before = app.graph.sends().length;
    const odd = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'unsupported',
      errors: [{ code: 131051, title: 'Message type unknown' }],
    };
    const broken = { from: phone, id: wamid(), timestamp: nowSeconds(), type: 'image' }; // body missing
    const reaction = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'reaction',
      reaction: { message_id: odd.id, emoji: '👍' },
    };
    await app.post(notification(value({ contacts: [{ waId: phone }], messages: [odd, broken, reaction] })));
    await app.drain();
    const texts = app.graph
      .sends()
      .slice(before)
      .map((s) => (s.body['text'] as { body: string }).body);
    expect(texts).toEqual([UNREADABLE_ANSWER, UNREADABLE_ANSWER]);
    expect(await messages().findOne({ _id: broken.id })).toMatchObject({ type: 'image' });
    expect(await messages().findOne({ _id: reaction.id })).toMatchObject({
      type: 'reaction',
      relatedId: odd.id,
      status: 'received',
    });
    expect(app.graph.receipts().some((r) => r.body['message_id'] === reaction.id)).toBe(false);

    const welcome = { from: phone, id: wamid(), timestamp: nowSeconds(), type: 'request_welcome' };
    const w1 = await app.post(notification(value({ contacts: [{ waId: phone }], messages: [welcome] })));
    await app.drain();
    await app.runJob(w1.jobs[0]!);
    expect(
      app.graph
        .sends()
        .filter((s) => s.body['to'] === phone && (s.body['text'] as { body: string }).body === HELP_TEXT),
    ).toHaveLength(1);

    const bsuid = 'US.13491208655302741918';
    const bsuidMessage = {
      from_user_id: bsuid,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'text',
      text: { body: 'hi from a username' },
    };
    await app.post(
      notification(value({ contacts: [{ bsuid, name: 'Username User' }], messages: [bsuidMessage] })),
    );
    await app.drain();
    const last = app.graph.sends().at(-1);
    expect(last?.body).toMatchObject({ recipient: bsuid });
    expect(last?.body['to']).toBeUndefined();
    expect(await users().findOne({ bsuid })).toMatchObject({ waId: null, name: 'Username User' });
  });

  it('marks a poisoned job failed with the reason', async () => {
    const { message, payload } = textNotification(newPhone(), 'poison');
    const res = await app.post(payload);
    app.queued.length = 0;
    await app.runPoison(res.jobs[0]!);
    const stored = await messages().findOne({ _id: message.id });
    expect(stored?.replyState).toBe('failed');
    expect(String(stored?.error?.title)).toMatch(/reply failed/);
  });

  it("leaves a poisoned job's message to the worker answering its owner, whichever user the job names", async () => {
    // A job on reply-jobs-poison may name a user who does not own the message (written there by
    // anyone holding the storage key, or the message since moved to another user by a number
    // change): the lock that counts is its owner's.
    const ann = await app.post(textNotification(newPhone(), 'from ann').payload);
    const bob = textNotification(newPhone(), 'from bob');
    const res = await app.post(bob.payload);
    app.queued.length = 0;
    const [annJob, bobJob] = [ann.jobs[0], res.jobs[0]];
    if (annJob?.kind !== 'message' || bobJob?.kind !== 'message') throw new Error('expected message jobs');
    // Bob's own worker is answering him right now.
    expect(
      await app.services.data.users.lockForReply(bobJob.userId, 'bob-worker', 90_000, new Date()),
    ).not.toBeNull();
    await app.runPoison({ kind: 'message', userId: annJob.userId, messageId: bob.message.id });
    expect(await messages().findOne({ _id: bob.message.id })).toMatchObject({ replyState: 'pending' });
    // Ann's lock was not the one to take: free for her own worker.
    expect(
      await app.services.data.users.lockForReply(annJob.userId, 'ann-worker', 90_000, new Date()),
    ).not.toBeNull();
  });

  it('acknowledges without the database, but answers 5xx when a spill cannot be written', async () => {
    const client = new MongoClient('mongodb://127.0.0.1:9/', { serverSelectionTimeoutMS: 300 });
    const config = loadConfig({
      WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
      WHATSAPP_APP_SECRET: 'down-secret',
      MONGODB_URI: 'mongodb://127.0.0.1:9/',
    });
    const services = await buildServices(config, { data: createDataStore(client.db('x')) });
    const post = async (payload: unknown) => {
      const body = JSON.stringify(payload);
      const request = new HttpRequest({
        method: 'POST',
        url: 'http://localhost/api/webhook',
        headers: { 'x-hub-signature-256': signBody(body, 'down-secret') },
        body: { string: body },
      });
      const ctx = new InvocationContext({ logHandler: () => {} });
      const response = await receiveWebhook(runtimeOf(services))(request, ctx);
      return { status: response.status ?? 200, queued: ctx.extraOutputs.get(inboundQueueOutput) };
    };
    const small = textNotification(newPhone(), 'db down').payload;
    const ok = await post(small);
    expect(ok.status).toBe(200);
    expect(ok.queued).toBe(JSON.stringify(small));

    const big = await post(largeNotification(newPhone(), 60 * 1024).payload);
    expect(big.status).toBeGreaterThanOrEqual(500);
    expect(big.queued).toBeUndefined();

    // The ingest function fails (the host retries it, then keeps it in inbound-poison).
    await expect(
      ingestWorker(runtimeOf(services))(small, new InvocationContext({ logHandler: () => {} })),
    ).rejects.toThrow();
    await client.close();
  });

  it('queues the raw body as it came, and a body too large for a queue message by reference', async () => {
    const small = textNotification(newPhone(), 'inline');
    const raw = JSON.stringify(small.payload).replace('"inline"', '"inl\\u0069ne"');
    const inline = await app.post(null, { raw });
    expect(inline.inbound).toBe(raw);
    await app.drain();

    const phone = newPhone();
    const { message, payload } = largeNotification(phone, 2.5 * 1024 * 1024);
    const body = JSON.stringify(payload);
    expect(Buffer.byteLength(body)).toBeGreaterThan(MAX_INLINE_BYTES);
    const res = await app.post(payload, { escapeUnicode: false });
    expect(res.status).toBe(200);
    const reference = res.inbound as { spill: string; bytes: number };
    expect(reference).toEqual({ spill: createHash('sha256').update(body).digest('hex'), bytes: body.length });
    expect(res.jobs).toEqual([expect.objectContaining({ messageId: message.id })]);
    expect((await messages().findOne({ _id: message.id }))?.['text']).toBe('long one');
    // The spill is removed once stored; the same reference again stores nothing and queues nothing.
    expect(await app.database.db.collection('events').countDocuments({ kind: 'inbound_spill' })).toBe(0);
    expect(await app.ingest(reference)).toEqual([]);
    await app.drain();
    expect(app.graph.sends().filter((s) => s.body['to'] === phone)).toHaveLength(1);
  });

  it('says nosniff on the verification answer', async () => {
    const request = new HttpRequest({
      method: 'GET',
      url: 'http://localhost/api/webhook',
      query: { 'hub.mode': 'subscribe', 'hub.verify_token': VERIFY_TOKEN, 'hub.challenge': '<b>x</b>' },
    });
    const response = await verifyWebhook(runtimeOf(app.services))(request, app.context());
    expect(new Headers(response.headers as Record<string, string>).get('x-content-type-options')).toBe(
      'nosniff',
    );
  });

  it('echoes a challenge as inert text: no page of it can load, run or be framed, nor be kept', async () => {
    // The challenge is whatever the caller writes: HTML opened from a link must stay text.
    for (const token of [VERIFY_TOKEN, 'wrong']) {
      const query = new URLSearchParams({
        'hub.mode': 'subscribe',
        'hub.verify_token': token,
        'hub.challenge': '<script>x()</script>',
      });
      const request = new HttpRequest({ method: 'GET', url: `http://localhost/api/webhook?${query}` });
      const response = await verifyWebhook(runtimeOf(app.services))(request, app.context());
      const headers = new Headers(response.headers);
      expect(response.status).toBe(token === VERIFY_TOKEN ? 200 : 403);
      expect(headers.get('content-type')).toBe('text/plain; charset=utf-8');
      expect(headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(headers.get('x-frame-options')).toBe('DENY');
      expect(headers.get('cache-control')).toBe('no-store');
    }
  });
});

describe('logs', () => {
  it('never print a message id in clear (a wamid holds the sender number), yet its lines correlate', async () => {
    // A wamid as Meta sends it: base64 after `wamid.` that decodes to bytes holding 16503879439.
    const id = 'wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=';
    expect(Buffer.from(id.slice('wamid.'.length), 'base64').toString('latin1')).toContain('16503879439');
    const phone = newPhone();
    const start = app.logs.length;
    const res = await app.post(
      notification(value({ contacts: [{ waId: phone }], messages: [textMessage(phone, 'hi', { id })] })),
    );
    expect(res.jobs).toHaveLength(1);
    await app.drain();
    const lines = app.logs.slice(start);
    const all = lines.join('\n');
    expect(all).not.toContain(id.slice('wamid.'.length, 30));
    expect(all).not.toContain('MTY1MDM4Nzk0Mzk'); // the number as it sits, base64-encoded, in the id
    expect(all).not.toContain('16503879439');
    const idIn = (text: string) => lines.find((l) => l.includes(text))?.match(/ id=(\S+)/)?.[1];
    expect(idIn('inbound message')).toMatch(/^p_[0-9a-f]{12}$/);
    expect(idIn('reply sent')).toBe(idIn('inbound message'));
  });
});

describe('sweeper', () => {
  it('re-queues pending replies with no live job and sending ones past their lease, once per user', async () => {
    const phone = newPhone();
    const first = textMessage(phone, 'one');
    const second = textMessage(phone, 'two');
    await app.post(notification(value({ contacts: [{ waId: phone }], messages: [first, second] })));
    const other = textNotification(newPhone(), 'leased');
    await app.post(other.payload);
    const fresh = textNotification(newPhone(), 'fresh');
    await app.post(fresh.payload);
    app.queued.length = 0; // every job lost with a crashed host
    const old = new Date(Date.now() - 5 * 60_000);
    await messages().updateMany({ _id: { $in: [first.id, second.id] } }, { $set: { receivedAt: old } });
    await messages().updateOne(
      { _id: other.message.id },
      { $set: { replyState: 'sending', leaseUntil: new Date(Date.now() - 1000), receivedAt: old } },
    );
    const ctx = app.context('sweeper');
    await sweeperTimer(runtimeOf(app.services))(TIMER, ctx);
    const jobs = (ctx.extraOutputs.get(replyQueueOutput) as ReplyJob[] | undefined) ?? [];
    expect(jobs.map((j) => (j.kind === 'message' ? j.messageId : '')).sort()).toEqual(
      [first.id, other.message.id].sort(),
    );
    for (const job of jobs) await app.runJob(job);
    for (const id of [first.id, second.id, other.message.id])
      expect((await messages().findOne({ _id: id }))?.['replyState']).toBe('sent');
    expect((await messages().findOne({ _id: fresh.message.id }))?.['replyState']).toBe('pending');
  });

  it('re-queues a pending reply whose message Meta delivered late (its timestamp hours or years old)', async () => {
    const late = newPhone();
    const ancient = newPhone();
    // Meta retries a notification for up to 7 days; a wrong clock on a phone can be further off.
    const lateMessage = textMessage(late, 'sent this morning', { timestamp: nowSeconds(-8 * 3600) });
    const ancientMessage = textMessage(ancient, 'from long ago', { timestamp: '1' });
    await app.post(notification(value({ contacts: [{ waId: late }], messages: [lateMessage] })));
    await app.post(notification(value({ contacts: [{ waId: ancient }], messages: [ancientMessage] })));
    app.queued.length = 0; // the jobs were lost with a crashed host
    const old = new Date(Date.now() - 5 * 60_000);
    await messages().updateMany(
      { _id: { $in: [lateMessage.id, ancientMessage.id] } },
      { $set: { receivedAt: old } },
    );
    const ctx = app.context('sweeper');
    await sweeperTimer(runtimeOf(app.services))(TIMER, ctx);
    const jobs = (ctx.extraOutputs.get(replyQueueOutput) as ReplyJob[] | undefined) ?? [];
    const requeued = jobs.map((j) => (j.kind === 'message' ? j.messageId : ''));
    expect(requeued).toEqual(expect.arrayContaining([lateMessage.id, ancientMessage.id]));
    for (const job of jobs) await app.runJob(job);
    expect((await messages().findOne({ _id: lateMessage.id }))?.['replyState']).toBe('sent');
    // Answered too: it reached us minutes ago, so WhatsApp's 24-hour window is the Graph API's to
    // judge, whatever Meta's time says (a refusal, code 131047, would settle it OUTSIDE_WINDOW).
    const ancientSettled = await messages().findOne({ _id: ancientMessage.id });
    expect(ancientSettled?.['replyState']).toBe('sent');
    expect(app.graph.sends().filter((r) => r.body['to'] === ancient)).toHaveLength(1);
  });
  it('a sweep paused past its fold lease folds no further batch once another sweep holds the fold', async () => {
    const db = app.database.db;
    let batches = 0;
    // The first batch is full (more may be marked); during it the process stops past the fold's
    // lease, and another sweep takes the fold, whose marks the two would otherwise both count.
    const pending = {
      delta: async () => new CounterDelta(),
      take: async (limit: number) => {
        batches++;
        if (batches === 1)
          await db
            .collection<StatsDoc>('stats')
            .updateOne(
              { _id: 'totals' },
              { $set: { foldOwner: 'another-sweep', foldUntil: new Date(Date.now() + 5 * 60_000) } },
            );
        return { delta: new CounterDelta(), messages: limit, users: 0, failures: 0 };
      },
    };
    const stats = new StatsRepository(
      new Gateway<StatsDoc>(db.collection<StatsDoc>('stats'), adapterFor(db)),
      pending,
    );
    try {
      await stats.foldPending();
      expect(batches).toBe(1);
      // The other sweep's lease stays its own.
      expect((await db.collection<StatsDoc>('stats').findOne({ _id: 'totals' }))?.['foldOwner']).toBe(
        'another-sweep',
      );
    } finally {
      await db
        .collection<StatsDoc>('stats')
        .updateOne({ _id: 'totals' }, { $unset: { foldOwner: '', foldUntil: '' } });
    }
  });
});

describe('status placeholders', () => {
  it('a placeholder no message joined within a day is deleted by the sweep; a younger one and a joined one stay', async () => {
    const phone = newPhone();
    const old = `wamid.placeholder-old-${phone}`;
    const young = `wamid.placeholder-young-${phone}`;
    await app.post(
      notification(
        value({
          statuses: [
            status(old, 'failed', phone, { errors: [{ code: 131026, title: 'Undeliverable' }] }),
            status(young, 'delivered', phone),
          ],
        }),
      ),
    );
    const reply = textNotification(phone, 'hello');
    for (const job of (await app.post(reply.payload)).jobs) await app.runJob(job);
    const answered = await messages().findOne({ direction: 'outbound', relatedId: reply.message.id });
    const answeredId = String(answered?._id);
    expect(answered).not.toBeNull();
    const dayAgo = new Date(Date.now() - 24 * 60 * 60_000 - 60_000);
    await messages().updateMany({ _id: { $in: [old, answeredId] } }, { $set: { createdAt: dayAgo } });
    const totalsBefore = await app.services.data.stats.totals();

    await sweeperTimer(runtimeOf(app.services))(TIMER, app.context('sweeper'));
    expect(await messages().findOne({ _id: old })).toBeNull();
    expect(await messages().findOne({ _id: young })).not.toBeNull();
    // A stored message of the same age is not a placeholder.
    expect(await messages().findOne({ _id: answeredId })).not.toBeNull();
    // The failure it reported was folded into the counter first: the figure does not move.
    expect((await app.services.data.stats.totals()).failed).toBe(totalsBefore.failed);
  });
});

/** A text notification padded (in an archived `errors` list) to about `bytes`. */
function largeNotification(phone: string, bytes: number) {
  const message = textMessage(phone, 'long one');
  const padding = 'x'.repeat(bytes);
  return {
    message,
    payload: notification(
      value({
        contacts: [{ waId: phone }],
        messages: [message],
        errors: [{ code: 131000, title: 'padding', message: padding }],
      }),
    ),
  };
}
