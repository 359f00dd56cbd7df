// Meta's `timestamp` 0, or any time before WhatsApp existed (before 2009-01-01), is impossible: a
// message or status so dated is kept at our time of receipt, never in 1970 (listed first, deleted
// by the next retention run, its status placeholder dropped at once). An erase still judges a
// message by Meta's time as given: one it erased, delivered again, stays dropped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manageHandlers } from '../../functions/manage';
import { dropOldPlaceholders } from '../../shared/bot/sweeper';
import { retentionCutoff } from '../../shared/data';
import { runtimeOf } from '../../shared/deps';
import { startTestApp, type TestApp } from '../helpers/app';
import { BOOTSTRAP, call } from '../helpers/manage-fixture';
import { notification, nowSeconds, status, textMessage, value, wamid } from '../helpers/meta';
import { eraseThenRedeliver } from '../helpers/users';

let app: TestApp;
let handlers: ReturnType<typeof manageHandlers>;
let seq = 0;
const newPhone = () => `4477009661${String(++seq).padStart(2, '0')}`;

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: BOOTSTRAP });
  handlers = manageHandlers(runtimeOf(app.services));
});
afterAll(async () => {
  await app.close();
});

const messages = () => app.database.db.collection<{ _id: string; createdAt: Date }>('messages');
const repliesTo = (phone: string) => app.graph.sends().filter((s) => s.body['to'] === phone).length;
const dated = (phone: string, body: string, timestamp: string) => {
  const message = textMessage(phone, body, { timestamp });
  return {
    message,
    payload: notification(value({ contacts: [{ waId: phone, name: 'Eve' }], messages: [message] })),
  };
};
/** The time a document was given is within the test's run, not 1970. */
const withinRun = (at: Date | undefined, started: number) => {
  expect(at?.getTime()).toBeGreaterThanOrEqual(started);
  expect(at?.getTime()).toBeLessThanOrEqual(Date.now());
};

describe('a message Meta dates before WhatsApp existed', () => {
  it.each([
    ['0', '0'],
    ['1 (1970)', '1'],
    ['2008-12-31T23:59:59Z', String(Date.UTC(2008, 11, 31, 23, 59, 59) / 1000)],
  ])(
    'timestamp %s: stored at its receipt, listed after what came before it, answered once, and kept by retention',
    async (_, timestamp) => {
      const phone = newPhone();
      const earlier = dated(phone, 'first, an hour ago', nowSeconds(-3_600));
      expect((await app.post(earlier.payload)).status).toBe(200);
      await app.drain();
      const started = Date.now();
      const odd = dated(phone, 'second, dated impossibly', timestamp);
      expect((await app.post(odd.payload)).status).toBe(200);
      await app.drain();
      expect(repliesTo(phone)).toBe(2);
      withinRun((await messages().findOne({ _id: odd.message.id }))?.createdAt, started);
      // The conversation as the dashboard lists it: in the order written, the odd one last.
      const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
      const listed = await call(handlers.userMessages, { params: { id: user?.id ?? '' } });
      expect(listed.status).toBe(200);
      const items = (listed.body as { items: { id: string; direction: string; createdAt: string }[] }).items;
      const inbound = items.filter((m) => m.direction === 'inbound');
      const order = [...inbound].sort((a, b) => a.createdAt.localeCompare(b.createdAt)).map((m) => m.id);
      expect(order).toEqual([earlier.message.id, odd.message.id]);
      expect(inbound.every((m) => m.createdAt >= '2009-01-01')).toBe(true);
      // `npm run retention` keeping 30 days leaves both (they are minutes old).
      await app.services.data.stats.foldPending();
      await app.services.data.retention.deleteOlderThan(retentionCutoff(30, new Date()));
      expect(await messages().countDocuments({ _id: { $in: [earlier.message.id, odd.message.id] } })).toBe(2);
    },
  );

  it('a timestamp from 2009 on is Meta’s time, as before', async () => {
    const phone = newPhone();
    const at = Date.UTC(2009, 0, 1) / 1000;
    const message = dated(phone, 'dated 2009', String(at));
    expect((await app.post(message.payload)).status).toBe(200);
    await app.drain();
    expect((await messages().findOne({ _id: message.message.id }))?.createdAt.getTime()).toBe(at * 1000);
  });
});

describe('a status Meta dates 0', () => {
  it('is applied at its receipt: an outbound message’s status time, and a placeholder the sweeper keeps a day', async () => {
    const phone = newPhone();
    const first = dated(phone, 'hello', nowSeconds());
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    const answer = app.graph.sends().find((s) => s.body['to'] === phone);
    const answerId = (
      await messages().findOne({ direction: 'outbound', relatedId: first.message.id } as never)
    )?._id;
    expect(answer && answerId).toBeTruthy();
    const started = Date.now();
    const early = wamid();
    expect(
      (
        await app.post(
          notification(
            value({
              statuses: [
                status(answerId ?? '', 'delivered', phone, { timestamp: '0' }),
                // A status that arrives before the message it describes is stored (a placeholder).
                status(early, 'sent', phone, { timestamp: '0' }),
              ],
            }),
          ),
        )
      ).status,
    ).toBe(200);
    const delivered = await app.database.db
      .collection<{ _id: string; statusTimes?: { delivered?: Date } }>('messages')
      .findOne({ _id: answerId ?? '' });
    withinRun(delivered?.statusTimes?.delivered, started);
    withinRun((await messages().findOne({ _id: early }))?.createdAt, started);
    await dropOldPlaceholders(app.services);
    expect(await messages().countDocuments({ _id: early })).toBe(1);
  });
});

describe('an erase judges a message dated 0 by Meta’s time as given', () => {
  it('one it erased, delivered again, is dropped; a new one dated 0 makes a new user, whom the old one does not join', async () => {
    const phone = newPhone();
    const started = Date.now();
    const first = dated(phone, 'please forget me', '0');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    withinRun((await messages().findOne({ _id: first.message.id }))?.createdAt, started);
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    withinRun(user?.createdAt, started);
    // Delivered again after the erase: the erase remembers it; no one comes back, no answer.
    await eraseThenRedeliver(app, handlers, { id: user?.id ?? '', phone }, first.payload);

    // A new message dated 0 (a client that leaves it unset): a new user, answered.
    const again = dated(phone, 'hello again', '0');
    expect((await app.post(again.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    const renewed = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(renewed?.id).toBeTruthy();

    // The erased one once more, now that the person wrote again: it joins no one.
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    expect(await messages().countDocuments({ _id: first.message.id })).toBe(0);
    expect((await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.messageCount).toBe(
      2,
    );
  });
});
