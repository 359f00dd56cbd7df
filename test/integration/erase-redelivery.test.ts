// An erase is for good: a message the person sent before it, delivered again by Meta (at least
// once: duplicates and retries come for days) or late, brings nothing back and is not answered again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { startTestApp, type TestApp } from '../helpers/app';
import { BOOTSTRAP, call } from '../helpers/manage-fixture';
import { notification, nowSeconds, textMessage, value } from '../helpers/meta';

let app: TestApp;
let handlers: ReturnType<typeof manageHandlers>;

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: BOOTSTRAP });
  handlers = manageHandlers(runtimeOf(app.services));
});
afterAll(async () => {
  await app.close();
});

const sent = (phone: string, offsetSeconds: number, body: string) => {
  const message = textMessage(phone, body, { timestamp: nowSeconds(offsetSeconds) });
  return {
    message,
    payload: notification(value({ contacts: [{ waId: phone, name: 'Eve' }], messages: [message] })),
  };
};
const repliesTo = (phone: string) => app.graph.sends().filter((s) => s.body['to'] === phone).length;
const stats = async () =>
  (await call(handlers.stats)).body as { users: { total: number }; messages: { total: number } };

describe('a message from before an erase, delivered after it', () => {
  it('is acknowledged and dropped: no user comes back, no second answer, the counters stay lowered', async () => {
    const phone = '447700955501';
    const first = sent(phone, -30, 'please forget me');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    const before = await stats();
    expect((await call(handlers.user, { method: 'DELETE', params: { id: user?.id ?? '' } })).status).toBe(
      204,
    );
    const erased = await stats();
    expect(erased.users.total).toBe(before.users.total - 1);
    expect(erased.messages.total).toBe(before.messages.total - 2);

    // Meta delivers the same notification again, and one the person sent before the erase arrives late.
    const late = sent(phone, -10, 'sent before the erase, delivered after');
    expect((await app.post(first.payload)).status).toBe(200);
    expect((await app.post(late.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    expect(await app.services.data.users.findByIdentity({ waId: phone, bsuid: null })).toBeNull();
    expect((await call(handlers.user, { params: { id: user?.id ?? '' } })).status).toBe(404);
    const messages = app.database.db.collection('messages');
    expect(
      await messages.countDocuments({ _id: { $in: [first.message.id, late.message.id] } as never }),
    ).toBe(0);
    await app.services.data.stats.foldPending();
    expect(await stats()).toEqual(erased);

    // The person writing after the erase is a new user, answered; the old message delivered once
    // more still does not join them.
    const again = sent(phone, 1, 'hello again');
    expect((await app.post(again.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    const renewed = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(renewed?.messageCount).toBe(2);
    expect(await messages.countDocuments({ _id: first.message.id as never })).toBe(0);
  });
});
