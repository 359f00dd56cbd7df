// An erase is for good: a message the person sent before it, delivered again by Meta (at least
// once: duplicates and retries come for days) or late, brings nothing back and is not answered again.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { startTestApp, type TestApp } from '../helpers/app';
import { BOOTSTRAP, call } from '../helpers/manage-fixture';
import { eraseThenRedeliver } from '../helpers/users';
import {
  notification,
  nowSeconds,
  PHONE_NUMBER_ID,
  status,
  textMessage,
  value,
  wamid,
  WABA_ID,
} from '../helpers/meta';

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

describe('the same person writing after their erase', () => {
  it('is a new user with a new id: a late retry of the DELETE of the old id answers 404 and erases nothing', async () => {
    const phone = '447700955507';
    const first = sent(phone, -30, 'please forget me');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    const erased = (await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.id ?? '';
    expect((await call(handlers.user, { method: 'DELETE', params: { id: erased } })).status).toBe(204);

    const renewed = await writesAgainThenOldRedelivered(phone, first);
    expect(renewed?.id).toBeTruthy();
    expect(renewed?.id).not.toBe(erased);
    // An operator client's DELETE that timed out, retried from its queue: DELETE is idempotent.
    expect((await call(handlers.user, { method: 'DELETE', params: { id: erased } })).status).toBe(404);
    const kept = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(kept?.id).toBe(renewed?.id);
    expect(kept?.messageCount).toBe(2);
    const messages = app.database.db.collection('messages');
    expect(await messages.countDocuments({ userId: renewed?.id })).toBe(2);
    expect(await messages.countDocuments({ userId: erased })).toBe(0);
    // No audit entry of an erase that did not happen.
    expect(await app.database.db.collection('events').countDocuments({ kind: 'audit', userId: erased })).toBe(
      1,
    );

    // Erased again, and the person writes once more: a third id, neither of the two erased ones.
    expect((await call(handlers.user, { method: 'DELETE', params: { id: renewed?.id ?? '' } })).status).toBe(
      204,
    );
    expect((await app.post(sent(phone, 2, 'and again').payload)).status).toBe(200);
    await app.drain();
    const third = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(third?.messageCount).toBe(2);
    expect([erased, renewed?.id]).not.toContain(third?.id);
  });

  it('with several first messages at once makes one user, under a new id, each message answered once', async () => {
    const phone = '447700955508';
    const first = sent(phone, -30, 'please forget me');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    const erased = (await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.id ?? '';
    expect((await call(handlers.user, { method: 'DELETE', params: { id: erased } })).status).toBe(204);

    const again = [1, 2, 3, 4].map((n) => sent(phone, n, `written again ${n}`));
    const answered = await Promise.all(again.map((m) => app.post(m.payload)));
    for (const r of answered) expect(r.status).toBe(200);
    await app.drain();
    const users = await app.database.db
      .collection('users')
      .find({ waId: phone })
      .project({ _id: 1, messageCount: 1 })
      .toArray();
    expect(users).toHaveLength(1);
    expect(users[0]?._id).not.toBe(erased);
    expect(users[0]?.['messageCount']).toBe(8);
    expect(repliesTo(phone)).toBe(5);
  });
});

describe('archivable items of a notification from before an erase', () => {
  it('are not filed again when Meta delivers it after the erase, nor when one from before arrives late; those from after it are', async () => {
    const phone = '447700955509';
    const first = sent(phone, -60, 'hello');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    // A message in a group, a status the app does not use and webhook errors (no time in them),
    // and an echo of a message the business sent from the WhatsApp Business app.
    const before = notification(
      value({
        contacts: [{ waId: phone }],
        messages: [textMessage(phone, 'in a group', { timestamp: nowSeconds(-50), group_id: 'g-1' })],
        statuses: [status(wamid(), 'deleted', phone, { timestamp: nowSeconds(-50) })],
        errors: [{ code: 131051, title: 'Unsupported message type' }],
      }),
    );
    const echo = (offsetSeconds: number) => ({
      object: 'whatsapp_business_account',
      entry: [
        {
          id: WABA_ID,
          changes: [
            {
              field: 'smb_message_echoes',
              value: {
                messaging_product: 'whatsapp',
                metadata: { display_phone_number: '15550783881', phone_number_id: PHONE_NUMBER_ID },
                message_echoes: [
                  {
                    from: '15550783881',
                    to: phone,
                    id: wamid(),
                    timestamp: nowSeconds(offsetSeconds),
                    type: 'text',
                    text: { body: 'sent from the app' },
                  },
                ],
              },
            },
          ],
        },
      ],
    });
    const echoBefore = echo(-40);
    for (const payload of [before, echoBefore]) expect((await app.post(payload)).status).toBe(200);
    const subject = await app.services.data.events.subjectOf(phone);
    const events = app.database.db.collection('events');
    const filed = () => events.countDocuments({ subject });
    expect(await filed()).toBe(4);
    const id = (await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.id ?? '';
    expect((await call(handlers.user, { method: 'DELETE', params: { id } })).status).toBe(204);
    expect(await filed()).toBe(0);

    // Meta delivers both again, and another echo from before the erase arrives late: acknowledged,
    // nothing filed.
    for (const payload of [before, echoBefore, echo(-30)]) expect((await app.post(payload)).status).toBe(200);
    await app.drain();
    expect(await filed()).toBe(0);
    // Nothing the erase removed is back, in the clear either.
    const all = JSON.stringify(await events.find({ kind: { $ne: 'audit' } }).toArray());
    expect(all).not.toContain(phone);

    // What comes after the erase is filed as usual.
    expect((await app.post(echo(1))).status).toBe(200);
    expect(await filed()).toBe(1);
    expect(repliesTo(phone)).toBe(1);
  });
});

const DAY = 86_400;
/** What an erase remembers of a message id: 64 bits of a keyed hash, in hex. */
const HASH = /^[0-9a-f]{16}$/;
/** An inbound message of `userId` as ingest stores it (not yet in the counters), received at `receivedAt`. */
const seeded = (userId: string, id: string, receivedAt: Date) => ({
  _id: id,
  userId,
  waMessageId: id,
  direction: 'inbound',
  type: 'text',
  text: 'x',
  status: 'received',
  statusRank: 0,
  createdAt: receivedAt,
  receivedAt,
  seqAt: receivedAt,
  role: 'conversation',
  replyState: 'none',
  uncounted: true,
});
const eraseEntryOf = async (userId: string) =>
  app.database.db
    .collection<{ _id: string; erasedMessages?: string[] }>('events')
    .findOne({ kind: 'audit', reason: 'erase', userId });

describe('a message dated long before an erase (an old timestamp: a wrong clock, a copied example)', () => {
  it('is new when the erase does not remember its id: stored and answered; one it erased, delivered again, is still dropped', async () => {
    const phone = '447700955503';
    // Sent from a phone whose clock is a month behind.
    const first = sent(phone, -30 * DAY, 'please forget me');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    // Delivered again, its timestamp a month old: the erase remembers it, so it makes no one.
    await eraseThenRedeliver(app, handlers, { id: user?.id ?? '', phone }, first.payload);

    // A new message whose timestamp is years old (a client copying a documented example).
    const message = textMessage(phone, 'hello, a new message', { timestamp: '1600000000' });
    const payload = notification(value({ contacts: [{ waId: phone, name: 'Eve' }], messages: [message] }));
    expect((await app.post(payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    const renewed = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(renewed?.id).toBeTruthy();
    const messages = app.database.db.collection('messages');
    expect(await messages.countDocuments({ _id: message.id as never, userId: renewed?.id })).toBe(1);

    // Delivered once more, now that the person wrote again (its timestamp is after that of the new
    // user's record): still dropped, it joins no one.
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    expect(repliesTo(phone)).toBe(2);
    expect(await messages.countDocuments({ _id: first.message.id as never })).toBe(0);
    expect((await app.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.messageCount).toBe(
      2,
    );
  });
});

describe("the erase's audit entry", () => {
  it('remembers the inbound messages it erased by keyed hash, never a message id in clear', async () => {
    const phone = '447700955505';
    const a = sent(phone, -30, 'one');
    const b = sent(phone, -20, 'two');
    for (const m of [a, b]) expect((await app.post(m.payload)).status).toBe(200);
    await app.drain();
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    const id = user?.id ?? '';
    // One that reached us 8 days ago: Meta retries for 7 days at most, so it is not remembered.
    const messages = app.database.db.collection('messages');
    await messages.insertOne(
      seeded(id, 'wamid.eightdaysago', new Date(Date.now() - 8 * DAY * 1000)) as never,
    );
    expect((await call(handlers.user, { method: 'DELETE', params: { id } })).status).toBe(204);
    expect(await messages.countDocuments({ userId: id })).toBe(0);
    const entry = await eraseEntryOf(id);
    // The two inbound messages of the last 7 days, and the two answers WhatsApp took (their
    // statuses may come after the erase).
    expect(entry?.erasedMessages).toHaveLength(4);
    for (const hash of entry?.erasedMessages ?? []) expect(hash).toMatch(HASH);
    const text = JSON.stringify(entry);
    for (const m of [a, b]) expect(text).not.toContain(m.message.id);
    expect(text).not.toContain('wamid');
    expect(text).not.toContain(phone);
    // The audit trail's readers do not carry them.
    const trail = await app.services.data.personal.auditTrail(1000);
    expect(JSON.stringify(trail.filter((e) => e.userId === id))).not.toContain('erasedMessages');
  });

  it('remembers at most 20,000, those of an interrupted run of the same erase included', async () => {
    const phone = '447700955506';
    const first = sent(phone, -30, 'hello');
    expect((await app.post(first.payload)).status).toBe(200);
    await app.drain();
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    const id = user?.id ?? '';
    const messages = app.database.db.collection('messages');
    await messages.insertMany(
      Array.from({ length: 10 }, (_, n) =>
        seeded(id, `wamid.seeded${n}`, new Date(Date.now() - 60_000)),
      ) as never[],
    );
    // An erase the request audited, interrupted after it had remembered (and deleted) 19,995 of
    // the person's messages; `npm run health -- --repair` finishes it.
    const { personal } = app.services.data;
    const at = new Date(Date.now() - 20 * 60_000);
    const entryId = await personal.audit({ tokenName: 'ops', action: 'erase', userId: id, at });
    const earlier = Array.from({ length: 19_995 }, (_, n) => n.toString(16).padStart(16, '0'));
    await app.database.db
      .collection<{ _id: string; erasedMessages?: string[] }>('events')
      .updateOne({ _id: entryId }, { $set: { erasedMessages: earlier } });
    await app.database.db
      .collection<{ _id: string }>('users')
      .updateOne({ _id: id }, { $set: { erasing: true, erasingSince: at } });
    expect(await personal.eraseUser(id)).toEqual({ messages: 12, events: 0 });
    expect(await messages.countDocuments({ userId: id })).toBe(0);
    const remembered = (await eraseEntryOf(id))?.erasedMessages ?? [];
    // 11 inbound messages were left, and room for 5 of them.
    expect(remembered).toHaveLength(20_000);
    expect(remembered.slice(0, 19_995)).toEqual(earlier);
    expect(new Set(remembered).size).toBe(20_000);
    for (const hash of remembered) expect(hash).toMatch(HASH);
  });
});
