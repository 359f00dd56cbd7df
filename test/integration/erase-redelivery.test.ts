// An erase is for good: a message the person sent before it, delivered again by Meta (at least
// once: duplicates and retries come for days) or late, brings nothing back and is not answered again.
import { createHash } from 'node:crypto';
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

/**
 * The person writes after their erase (a new user, answered: their second reply), then Meta
 * delivers `old`, sent before the erase, once more: it does not join them. Resolves with the new user.
 */
async function writesAgainThenOldRedelivered(phone: string, old: ReturnType<typeof sent>) {
  const again = sent(phone, 1, 'hello again');
  expect((await app.post(again.payload)).status).toBe(200);
  await app.drain();
  expect(repliesTo(phone)).toBe(2);
  expect((await app.post(old.payload)).status).toBe(200);
  await app.drain();
  expect(repliesTo(phone)).toBe(2);
  const renewed = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
  expect(renewed?.messageCount).toBe(2);
  const messages = app.database.db.collection('messages');
  expect(await messages.countDocuments({ _id: old.message.id as never })).toBe(0);
  return renewed;
}

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
    await writesAgainThenOldRedelivered(phone, first);
  });
});

describe('a message from before the erase of a user an earlier version made (an unkeyed id)', () => {
  it('is dropped too: the erased id is not one the deployment key gives, yet no user comes back', async () => {
    const phone = '447700955502';
    // Users created by earlier versions keep their unkeyed ids (./shared/data/subjects.ts).
    const unkeyed = 'u_' + createHash('sha256').update(`wa:${phone}`).digest('hex').slice(0, 24);
    await app.services.data.maintenance.importUsers([
      { id: unkeyed, waId: phone, name: 'Eve', createdAt: new Date(Date.now() - 3_600_000), optedOut: false },
    ]);
    const first = sent(phone, -30, 'please forget me');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    expect((await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.id).toBe(unkeyed);
    expect((await call(handlers.user, { method: 'DELETE', params: { id: unkeyed } })).status).toBe(204);

    // Delivered again after the erase: no new user, no second answer.
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    expect(await app.services.data.users.findByIdentity({ waId: phone, bsuid: null })).toBeNull();

    // The person writes after the erase (a new user, under a keyed id); the old message delivered
    // once more does not join them either.
    const renewed = await writesAgainThenOldRedelivered(phone, first);
    expect(renewed?.id).not.toBe(unkeyed);
  });
});
