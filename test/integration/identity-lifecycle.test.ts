// One person, one user, through every change of identity Meta reports (a new business-scoped id,
// a new number), through the webhook, the ingest worker and the reply worker as deployed: what
// was archived about the person under an identifier they no longer have is still theirs, exported
// and erased with them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app';
import { notification, nowSeconds, value, wamid } from '../helpers/meta';

let app: TestApp;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

let seq = 0;
const newPhone = () => `4478${String(1_000_000 + ++seq)}`;
const newBsuid = () => `US.${String(8_000_000_000_000 + ++seq)}`;

/** Posts a notification to the webhook as Meta does (200 required), and runs the replies it queued. */
async function post(payload: unknown): Promise<void> {
  const { status } = await app.post(payload);
  expect(status).toBe(200);
  await app.drain();
}

/** A message from a person known by their business-scoped id (and their number when given). */
const from = (who: { waId?: string; bsuid?: string }, body: string) =>
  notification(
    value({
      contacts: [{ ...who, name: 'Uma' }],
      messages: [
        {
          ...(who.waId ? { from: who.waId } : {}),
          ...(who.bsuid ? { from_user_id: who.bsuid } : {}),
          id: wamid(),
          timestamp: nowSeconds(),
          type: 'text',
          text: { body },
        },
      ],
    }),
  );

/** A message without a timestamp: archived (not stored), filed under the id it carries. */
const untimed = (who: { waId?: string; bsuid?: string }, body: string) =>
  notification(
    value({
      messages: [
        {
          ...(who.waId ? { from: who.waId } : {}),
          ...(who.bsuid ? { from_user_id: who.bsuid } : {}),
          id: wamid(),
          type: 'text',
          text: { body },
        },
      ],
    }),
  );

/** Meta's `user_changed_user_id`: the person's business-scoped id changed (no number in it). */
const changedUserId = (old: string, next: string) =>
  notification(
    value({
      messages: [
        {
          from_user_id: old,
          id: wamid(),
          timestamp: nowSeconds(),
          type: 'system',
          system: {
            body: `User Uma changed from ${old} to ${next}`,
            user_id: next,
            type: 'user_changed_user_id',
          },
        },
      ],
    }),
  );

const userOf = async (identity: { waId?: string; bsuid?: string }) => {
  const user = await app.services.data.users.findByIdentity({
    waId: identity.waId ?? null,
    bsuid: identity.bsuid ?? null,
  });
  if (!user) throw new Error('user not stored');
  return user;
};

/** Every archived item (the audit trail aside) as stored, as text. */
const archivedText = async () =>
  JSON.stringify(
    await app.database.db
      .collection('events')
      .find({ kind: { $ne: 'audit' } })
      .toArray(),
  );

describe('archived items filed under a business-scoped id the person no longer has', () => {
  it('user_changed_user_id: exported and erased with the user, who lists the id among their previous ones', async () => {
    const [a, b] = [newBsuid(), newBsuid()];
    await post(from({ bsuid: a }, 'hello'));
    await post(untimed({ bsuid: a }, 'filed under my first id'));
    await post(changedUserId(a, b));
    await post(from({ bsuid: b }, 'it is me, under my new id'));
    const user = await userOf({ bsuid: b });

    const exported = await app.services.data.personal.exportUser(user.id);
    expect(JSON.stringify(exported?.events)).toContain('filed under my first id');
    expect(exported?.previousBsuids).toEqual([a]);

    await app.services.data.personal.eraseUser(user.id);
    expect(await archivedText()).not.toContain('filed under my first id');
    expect(await archivedText()).not.toContain(a);
  });

  it('a new business-scoped id an ordinary message carries (the number is the same): the old one stays the user’s', async () => {
    const phone = newPhone();
    const [x, y] = [newBsuid(), newBsuid()];
    await post(from({ waId: phone, bsuid: x }, 'hello'));
    await post(untimed({ bsuid: x }, 'filed under the id I had'));
    await post(from({ waId: phone, bsuid: y }, 'same number, another id'));
    const user = await userOf({ waId: phone });
    expect(user.bsuid).toBe(y);

    const exported = await app.services.data.personal.exportUser(user.id);
    expect(JSON.stringify(exported?.events)).toContain('filed under the id I had');
    expect(exported?.previousBsuids).toEqual([x]);

    await app.services.data.personal.eraseUser(user.id);
    expect(await archivedText()).not.toContain('filed under the id I had');
  });

  it('user_changed_user_id after the new id wrote: the merged user keeps both records’ previous ids', async () => {
    const [a, b] = [newBsuid(), newBsuid()];
    await post(from({ bsuid: a }, 'hello'));
    await post(untimed({ bsuid: a }, 'under the old id'));
    await post(from({ bsuid: b }, 'hello from the new id'));
    await post(untimed({ bsuid: b }, 'under the new id'));
    await post(changedUserId(a, b));
    const user = await userOf({ bsuid: b });
    const exported = await app.services.data.personal.exportUser(user.id);
    const events = JSON.stringify(exported?.events);
    expect(events).toContain('under the old id');
    expect(events).toContain('under the new id');
    expect(exported?.previousBsuids).toEqual([a]);
    expect(exported?.messages).toHaveLength(4);
  });
});

describe("the id left behind, as Meta's system messages name it (system.previous_user_id)", () => {
  const changed = (sender: Record<string, string>, system: Record<string, string>) =>
    notification(
      value({ messages: [{ ...sender, id: wamid(), timestamp: nowSeconds(), type: 'system', system }] }),
    );

  for (const [label, sender] of [
    ['sent under the new id', (_a: string, b: string) => ({ from_user_id: b })],
    ['naming no sender', () => ({})],
  ] as const) {
    it(`user_changed_user_id ${label}: the person stays one user, under the new id`, async () => {
      const [a, b] = [newBsuid(), newBsuid()];
      await post(from({ bsuid: a }, 'hello'));
      const before = await userOf({ bsuid: a });
      await post(
        changed(sender(a, b), {
          body: 'User Uma changed their id',
          type: 'user_changed_user_id',
          user_id: b,
          previous_user_id: a,
        }),
      );
      await post(from({ bsuid: b }, 'it is me'));
      const user = await userOf({ bsuid: b });
      expect(user.id).toBe(before.id);
      expect(user.messageCount).toBe(4);
      const exported = await app.services.data.personal.exportUser(user.id);
      expect(exported?.previousBsuids).toEqual([a]);
      expect(await app.services.data.users.findByIdentity({ waId: null, bsuid: a })).toBeNull();
    });
  }
});

describe('a system message that names no sender', () => {
  // Meta's system messages carry no contacts; one that lacks `from` and `from_user_id` still
  // carries the new id (`system.user_id`) or number (`system.wa_id`) it gives the person.
  const senderless = (system: Record<string, string>) =>
    notification(value({ messages: [{ id: wamid(), timestamp: nowSeconds(), type: 'system', system }] }));

  it('user_changed_user_id: filed under the new id, exported and erased with the person writing under it', async () => {
    const [a, b] = [newBsuid(), newBsuid()];
    await post(from({ bsuid: a }, 'hello'));
    await post(
      senderless({
        body: 'User Uma changed from secret-old-id to secret-new-id',
        user_id: b,
        type: 'user_changed_user_id',
      }),
    );
    await post(from({ bsuid: b }, 'writing under my new id'));
    const user = await userOf({ bsuid: b });
    const exported = await app.services.data.personal.exportUser(user.id);
    expect(JSON.stringify(exported?.events)).toContain('secret-new-id');
    await app.services.data.personal.eraseUser(user.id);
    expect(await archivedText()).not.toContain('secret-new-id');
  });

  it('user_changed_number: filed under the new id it carries, else the new number', async () => {
    const [phone, id] = [newPhone(), newBsuid()];
    await post(
      senderless({
        body: 'User Uma changed to secret-number-one',
        wa_id: phone,
        type: 'user_changed_number',
      }),
    );
    await post(
      senderless({
        body: 'User Uma changed to secret-number-two',
        wa_id: phone,
        user_id: id,
        type: 'user_changed_number',
      }),
    );
    await post(from({ waId: phone, bsuid: id }, 'writing from my new number'));
    const user = await userOf({ waId: phone });
    const events = JSON.stringify((await app.services.data.personal.exportUser(user.id))?.events);
    expect(events).toContain('secret-number-one');
    expect(events).toContain('secret-number-two');
    await app.services.data.personal.eraseUser(user.id);
    expect(await archivedText()).not.toContain('secret-number');
  });
});

describe('a number change, then a message from before it delivered again', () => {
  it('is the moved user’s message: no new user for the old number, the counters unchanged', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const first = from({ waId: a }, 'hello from my old number');
    await post(first);
    await post(
      notification(
        value({
          messages: [
            {
              from: a,
              id: wamid(),
              timestamp: nowSeconds(),
              type: 'system',
              system: { body: `User Uma changed from ${a} to ${b}`, wa_id: b, type: 'user_changed_number' },
            },
          ],
        }),
      ),
    );
    const users = await app.database.db.collection('users').countDocuments({});
    const totals = await app.services.data.stats.totals();
    const sends = app.graph.sends().length;
    // Meta delivers a notification again until it is acknowledged; the queue retries one.
    await post(first);
    expect(await app.database.db.collection('users').countDocuments({})).toBe(users);
    expect(await app.services.data.users.findByIdentity({ waId: a, bsuid: null })).toBeNull();
    expect(await app.services.data.stats.totals()).toEqual(totals);
    expect(app.graph.sends()).toHaveLength(sends);
    expect((await userOf({ waId: b })).messageCount).toBe(2);
  });
});

describe('back to an old number (A→B→A), then the first change delivered again', () => {
  it('changes nothing: the user stays on the number they came back to', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const change = (old: string, next: string) =>
      notification(
        value({
          messages: [
            {
              from: old,
              id: wamid(),
              timestamp: nowSeconds(),
              type: 'system',
              system: {
                body: `User Uma changed from ${old} to ${next}`,
                wa_id: next,
                type: 'user_changed_number',
              },
            },
          ],
        }),
      );
    await post(from({ waId: a }, 'hello'));
    const aToB = change(a, b);
    await post(aToB);
    await post(change(b, a));
    const user = await userOf({ waId: a });
    await post(aToB);
    expect((await app.services.data.users.getUser(user.id))?.waId).toBe(a);
    expect(await app.services.data.users.findByIdentity({ waId: b, bsuid: null })).toBeNull();
    const exported = await app.services.data.personal.exportUser(user.id);
    expect([...(exported?.previousWaIds ?? [])].sort()).toEqual([a, b].sort());
  });
});

describe('a number change as Meta’s earlier webhook reference names it', () => {
  const system = (a: string, fields: Record<string, string>) =>
    notification(
      value({
        messages: [{ from: a, id: wamid(), timestamp: nowSeconds(), type: 'system', system: fields }],
      }),
    );

  it('customer_changed_number with new_wa_id moves the user, as user_changed_number does', async () => {
    const [a, b] = [newPhone(), newPhone()];
    await post(from({ waId: a }, 'hello from my old number'));
    const before = await userOf({ waId: a });
    await post(
      system(a, { body: `Uma changed from ${a} to ${b}`, new_wa_id: b, type: 'customer_changed_number' }),
    );
    expect((await userOf({ waId: b })).id).toBe(before.id);
    expect(await app.services.data.users.findByIdentity({ waId: a, bsuid: null })).toBeNull();
    const exported = await app.services.data.personal.exportUser(before.id);
    expect(exported?.previousWaIds).toContain(a);
  });

  it('customer_changed_number whose new_wa_id is a JSON number moves the user, and is never answered', async () => {
    // Meta's earlier reference writes `"new_wa_id": NEW_WA_ID` unquoted, and whatsapp-api-js types
    // it `number | string` (https://whatsappapijs.web.app/types/types.ServerSystemMessage.html).
    const [a, b] = [newPhone(), newPhone()];
    await post(from({ waId: a }, 'hello from my old number'));
    const before = await userOf({ waId: a });
    const sends = app.graph.requests.length;
    const change = system(a, { body: `Uma changed from ${a} to ${b}`, type: 'customer_changed_number' });
    const message = (change.entry[0]?.changes[0]?.value as { messages: Record<string, unknown>[] })
      .messages[0];
    (message?.['system'] as Record<string, unknown>)['new_wa_id'] = Number(b);
    await post(change);
    expect((await userOf({ waId: b })).id).toBe(before.id);
    expect(await app.services.data.users.findByIdentity({ waId: a, bsuid: null })).toBeNull();
    // Neither a read receipt nor a "cannot read that" answer for a change the user never wrote.
    expect(app.graph.requests.slice(sends)).toEqual([]);
  });

  it('a system message whose body does not match its type is kept under the user, never read or answered', async () => {
    // System messages (https://developers.facebook.com/documentation/business-messaging/whatsapp/webhooks/reference/messages/system/)
    // are WhatsApp's notes about the person, not something they wrote: one whose `system` object
    // is odd is no message to answer "cannot read that" to.
    const a = newPhone();
    await post(from({ waId: a }, 'hello'));
    const user = await userOf({ waId: a });
    const sends = app.graph.requests.length;
    const odd = notification(
      value({
        messages: [
          {
            from: a,
            id: wamid(),
            timestamp: nowSeconds(),
            type: 'system',
            system: { body: 7, type: 'user_identity_changed' },
          },
        ],
      }),
    );
    await post(odd);
    expect(app.graph.requests.slice(sends)).toEqual([]);
    expect(
      await app.database.db.collection('messages').countDocuments({ userId: user.id, type: 'system' }),
    ).toBe(0);
    const events = (await app.services.data.personal.exportUser(user.id))?.events ?? [];
    expect(events.filter((e) => JSON.stringify(e).includes('user_identity_changed'))).toHaveLength(1);
  });

  it('a system message that changes nothing is kept under the user, not called applied', async () => {
    const a = newPhone();
    await post(from({ waId: a }, 'hello'));
    const user = await userOf({ waId: a });
    await post(system(a, { body: 'Uma stopped marketing messages', type: 'user_preference_changed' }));
    expect((await userOf({ waId: a })).id).toBe(user.id);
    const events = (await app.services.data.personal.exportUser(user.id))?.events ?? [];
    const kept = events.filter((e) => JSON.stringify(e).includes('stopped marketing messages'));
    expect(kept.map((e) => (e as { reason?: string }).reason)).toEqual(['system message of the user']);
  });
});
