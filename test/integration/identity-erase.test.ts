// Identity across number changes (both orders of arrival, recycled numbers), erase that erases
// everything a person left (messages, archived items found by their number, the reply lock), and
// a burst of messages from many users answered once each, in order, with nothing marked failed.
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import type { ReplyJob } from '../../shared/bot/jobs';
import { processReplyJob } from '../../shared/bot/reply';
import { HELP_TEXT, STOP_ANSWER } from '../../shared/bot/texts';
import type { User } from '../../shared/data';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { notification, nowSeconds, status, textMessage, value, wamid } from '../helpers/meta';

let app: TestApp;
const { log } = capturedLog();
let seq = 0;
const newPhone = () => `4479${String(1_000_000 + ++seq)}`;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

/** Ingests a notification and runs its reply jobs (all at once, as concurrent queue workers would). */
async function deliverTo(target: TestApp, payload: unknown): Promise<ReplyJob[]> {
  const { jobs } = await ingestNotification(target.services, payload, log);
  await Promise.all(jobs.map((job) => processReplyJob(target.services, job, log)));
  return jobs;
}
const deliver = (payload: unknown) => deliverTo(app, payload);

const text = (from: string, body: string, name = 'Ana') =>
  notification(value({ contacts: [{ waId: from, name }], messages: [textMessage(from, body)] }));

function changedNumber(from: string, to: string, timestamp = nowSeconds()) {
  return notification(
    value({
      contacts: [{ waId: from }],
      messages: [
        {
          from,
          id: wamid(),
          timestamp,
          type: 'system',
          system: {
            body: `User ${from} changed from ${from} to ${to}`,
            wa_id: to,
            type: 'user_changed_number',
          },
        },
      ],
    }),
  );
}

/** A new user who wrote `body` (and was answered), on `target`. */
async function userWhoWrote(target: TestApp, phone: string, body: string): Promise<User> {
  await deliverTo(target, text(phone, body));
  const user = await target.services.data.users.findByIdentity({ waId: phone, bsuid: null });
  if (!user) throw new Error('user not stored');
  return user;
}

/** The texts a user sent, as the management API lists them, sorted. */
async function inboundTexts(userId: string): Promise<(string | null)[]> {
  const page = await app.services.data.manage.listMessages({ userId, limit: 50, after: null });
  return page.items
    .filter((m) => m.direction === 'inbound')
    .map((m) => m.text)
    .sort();
}

const repliesTo = (phone: string) => app.graph.sends().filter((s) => s.body['to'] === phone).length;

describe('user ids', () => {
  // Ids appear in management URLs, which request logs keep: a bare hash of the number could be
  // reversed by hashing every number.
  const unkeyed = (waId: string) =>
    'u_' + createHash('sha256').update(`wa:${waId}`).digest('hex').slice(0, 24);

  it('are keyed with the deployment key: not a hash of the number, and another database names the person otherwise', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(app, phone, 'hello');
    expect(user.id).toMatch(/^u_[0-9a-f]{24}$/);
    expect(user.id).not.toBe(unkeyed(phone));
    const other = await startTestApp();
    try {
      expect((await userWhoWrote(other, phone, 'hello')).id).not.toBe(user.id);
    } finally {
      await other.close();
    }
  });

  it('of users an earlier version made (an unkeyed hash) stay: the person writes on as the same user', async () => {
    const phone = newPhone();
    const at = new Date(Date.now() - 60_000);
    const id = unkeyed(phone);
    await app.services.data.maintenance.importUsers([
      { id, waId: phone, name: 'Ana', createdAt: at, optedOut: false },
    ]);
    await deliver(text(phone, 'still me'));
    const users = await app.database.db.collection('users').find({ waId: phone }).toArray();
    expect(users.map((u) => String(u._id))).toEqual([id]);
    expect(repliesTo(phone)).toBe(1);
    expect((await app.services.data.users.getUser(id))?.messageCount).toBe(2);
  });
});

describe('identity across number changes', () => {
  it('moves the user to the new number; the old number writing again is a new user who is answered', async () => {
    const [a, b] = [newPhone(), newPhone()];
    await deliver(text(a, 'hello'));
    const before = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    expect(before).not.toBeNull();
    await deliver(changedNumber(a, b));
    const moved = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(moved?.id).toBe(before?.id);
    expect(moved?.waId).toBe(b);

    // The new number writes: the same user, answered.
    await deliver(text(b, 'it is me, new number'));
    expect((await app.services.data.users.findByIdentity({ waId: b, bsuid: null }))?.id).toBe(before?.id);
    expect(repliesTo(b)).toBe(1);

    // The old number, given to someone else, writes: a new user, answered (never a 500 forever).
    const repliesBefore = repliesTo(a);
    await deliver(text(a, 'hi, new owner of this number', 'Bo'));
    const recycled = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    expect(recycled).not.toBeNull();
    expect(recycled?.id).not.toBe(before?.id);
    expect(repliesTo(a)).toBe(repliesBefore + 1);
  });

  it('merges the two records when the new number wrote before the change arrived', async () => {
    const [a, b] = [newPhone(), newPhone()];
    await deliver(text(a, 'from the old number'));
    await deliver(text(b, 'from the new number, before the system message'));
    const oldUser = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    const newUser = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(oldUser?.id).not.toBe(newUser?.id);
    const usersBefore = (await app.services.data.stats.totals()).newUsers;

    await deliver(changedNumber(a, b));
    const merged = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(merged?.id).toBe(oldUser?.id);
    expect(await app.services.data.users.getUser(newUser?.id ?? '')).toBeNull();
    // Both conversations (two messages and two answers) are now one.
    const page = await app.services.data.manage.listMessages({
      userId: merged?.id ?? '',
      limit: 50,
      after: null,
    });
    expect(page.items).toHaveLength(4);
    expect(merged?.messageCount).toBe(4);
    expect((await app.services.data.stats.totals()).newUsers).toBe(usersBefore - 1);
    expect(await app.services.data.users.findByIdentity({ waId: a, bsuid: null })).toBeNull();
  });
});

// Meta sends the system message and the person's first message from the new number moments
// apart; queue workers ingest them at once. Each attempt fails as the queue would see it
// (an erase-like race is tried again), and is tried again, as the host does.
async function ingestAsTheQueue(payload: unknown): Promise<ReplyJob[]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return (await ingestNotification(app.services, payload, log)).jobs;
    } catch (error) {
      if (attempt >= 5) throw error;
    }
  }
}

describe('a number change ingested at the same time as the first message from the new number', () => {
  it('leaves one user on the new number, holding both conversations, the new message answered once', async () => {
    const users = app.database.db.collection('users');
    for (let round = 0; round < 12; round++) {
      const [a, b] = [newPhone(), newPhone()];
      await deliver(text(a, 'from the old number'));
      const before = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
      const usersBefore = (await app.services.data.stats.totals()).newUsers;
      const first = text(b, 'first words from the new number');
      const jobs = (
        await Promise.all([ingestAsTheQueue(changedNumber(a, b)), ingestAsTheQueue(first)])
      ).flat();
      await Promise.all(jobs.map((job) => processReplyJob(app.services, job, log)));

      const holders = await users.find({ waId: b }).toArray();
      expect(holders.map((h) => h._id)).toEqual([before?.id]);
      expect(await inboundTexts(before?.id ?? '')).toEqual([
        'first words from the new number',
        'from the old number',
      ]);
      expect(repliesTo(b)).toBe(1);
      // The summary counts what the user holds: the two messages and their two answers.
      expect((await app.services.data.users.getUser(before?.id ?? ''))?.messageCount).toBe(4);
      expect((await app.services.data.stats.totals()).newUsers).toBe(usersBefore);
    }
  });
});

describe('the first messages of a new person, one with their number and one without, ingested at once', () => {
  it('make one user, holding both messages, each answered once', async () => {
    const users = app.database.db.collection('users');
    for (let round = 0; round < 12; round++) {
      const phone = newPhone();
      const bsuid = `GB.${phone}ID`;
      const withNumber = notification(
        value({
          contacts: [{ waId: phone, bsuid, name: 'Ana' }],
          messages: [textMessage(phone, 'with my number', { from_user_id: bsuid })],
        }),
      );
      const withoutNumber = notification(
        value({
          contacts: [{ bsuid, name: 'Ana' }],
          messages: [{ ...textMessage(phone, 'without it', { from_user_id: bsuid }), from: undefined }],
        }),
      );
      const jobs = (
        await Promise.all([ingestAsTheQueue(withNumber), ingestAsTheQueue(withoutNumber)])
      ).flat();
      await Promise.all(jobs.map((job) => processReplyJob(app.services, job, log)));

      const holders = await users.find({ $or: [{ waId: phone }, { bsuid }] }).toArray();
      expect(holders).toHaveLength(1);
      expect(await inboundTexts(String(holders[0]?._id))).toEqual(['with my number', 'without it']);
      const answers = app.graph
        .sends()
        .filter((r) => r.body['to'] === phone || r.body['recipient'] === bsuid);
      expect(answers).toHaveLength(2);
      // The summary counts the two messages and their two answers.
      expect(holders[0]?.['messageCount']).toBe(4);
    }
  });
});

describe('two number changes delivered the other way round (A→B, then B→C; B→C arrives first)', () => {
  it('leaves the person on C with their conversation; the next owner of B is a new user without it', async () => {
    const [a, b, c] = [newPhone(), newPhone(), newPhone()];
    const person = await userWhoWrote(app, a, 'my conversation');
    await deliver(changedNumber(b, c, nowSeconds(1)));
    await deliver(changedNumber(a, b, nowSeconds()));

    const onC = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    expect(onC?.id).toBe(person.id);
    expect(await app.services.data.users.findByIdentity({ waId: b, bsuid: null })).toBeNull();
    const users = app.database.db.collection('users');
    expect(await users.countDocuments({ waId: c })).toBe(1);

    // The person writes from C: the same user, answered with their history.
    await deliver(text(c, 'it is me, on C'));
    expect((await app.services.data.users.findByIdentity({ waId: c, bsuid: null }))?.id).toBe(person.id);
    // Someone given B later writes: a new user, who holds nothing of the person's.
    await deliver(text(b, 'hello, B is my number now', 'Bo'));
    const stranger = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(stranger?.id).not.toBe(person.id);
    const theirs = await app.services.data.manage.listMessages({
      userId: stranger?.id ?? '',
      limit: 50,
      after: null,
    });
    expect(theirs.items.map((m) => m.text)).not.toContain('my conversation');
  });

  it('a change away from B made before A→B (B was someone else’s then) is not followed', async () => {
    const [a, b, c] = [newPhone(), newPhone(), newPhone()];
    const person = await userWhoWrote(app, a, 'hello');
    await deliver(changedNumber(b, c, nowSeconds(-3600)));
    await deliver(changedNumber(a, b, nowSeconds()));
    expect((await app.services.data.users.findByIdentity({ waId: b, bsuid: null }))?.id).toBe(person.id);
    expect((await app.services.data.users.findByIdentity({ waId: c, bsuid: null }))?.id).not.toBe(person.id);
  });
});

describe('a number change to a number whose stored user wrote before the change (a recycled number)', () => {
  it('keeps the two people apart: the person takes the number, the previous owner keeps their conversation without it', async () => {
    const [a, c] = [newPhone(), newPhone()];
    const earlier = notification(
      value({
        contacts: [{ waId: c, name: 'Previous Owner' }],
        messages: [textMessage(c, 'the previous owner wrote this', { timestamp: nowSeconds(-3 * 86_400) })],
      }),
    );
    await deliver(earlier);
    const owner = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    const person = await userWhoWrote(app, a, 'the person who now has the number');
    // The person writes from the new number before the change arrives: that message is theirs.
    await deliver(text(c, 'my first words from c'));
    await deliver(changedNumber(a, c, nowSeconds(-60)));

    const onC = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    expect(onC?.id).toBe(person.id);
    const previous = await app.services.data.users.getUser(owner?.id ?? '');
    expect(previous).not.toBeNull();
    expect(previous?.waId).toBeNull();
    expect(await inboundTexts(owner?.id ?? '')).toEqual(['the previous owner wrote this']);
    expect(await inboundTexts(person.id)).toEqual([
      'my first words from c',
      'the person who now has the number',
    ]);
    expect(previous?.messageCount).toBe(2);
    expect((await app.services.data.users.getUser(person.id))?.messageCount).toBe(4);

    await deliver(text(c, 'still me'));
    expect(await inboundTexts(owner?.id ?? '')).toEqual(['the previous owner wrote this']);
  });

  it('a stop the person sent from the number before the change came is theirs: they stay opted out, the previous owner does not', async () => {
    const [a, d] = [newPhone(), newPhone()];
    // Dated three days ago: the number's record is the previous owner's, who once opted out and back in.
    await deliver(
      notification(
        value({
          contacts: [{ waId: d, name: 'Owner D' }],
          messages: [textMessage(d, 'stop', { timestamp: nowSeconds(-3 * 86_400) })],
        }),
      ),
    );
    await deliver(
      notification(
        value({
          contacts: [{ waId: d, name: 'Owner D' }],
          messages: [textMessage(d, 'start', { timestamp: nowSeconds(-3 * 86_400 + 60) })],
        }),
      ),
    );
    const owner = await app.services.data.users.findByIdentity({ waId: d, bsuid: null });
    const person = await userWhoWrote(app, a, 'the person who now has the number');
    await deliver(
      notification(
        value({
          contacts: [{ waId: d }],
          messages: [textMessage(d, 'stop', { timestamp: nowSeconds(-120) })],
        }),
      ),
    );
    await deliver(changedNumber(a, d, nowSeconds(-60)));

    expect((await app.services.data.users.getUser(owner?.id ?? ''))?.optedOut).toBe(false);
    expect((await app.services.data.users.getUser(person.id))?.optedOut).toBe(true);
    const sent = repliesTo(d);
    await deliver(text(d, 'are you still there?'));
    expect(repliesTo(d)).toBe(sent);
  });

  it('a handoff the person asked for from the number before the change came is theirs: the previous owner is answered by the bot again', async () => {
    const [a, e] = [newPhone(), newPhone()];
    await deliver(
      notification(
        value({
          contacts: [{ waId: e, name: 'Owner E' }],
          messages: [textMessage(e, 'hello from long ago', { timestamp: nowSeconds(-3 * 86_400) })],
        }),
      ),
    );
    const owner = await app.services.data.users.findByIdentity({ waId: e, bsuid: null });
    const person = await userWhoWrote(app, a, 'the person who now has the number');
    await deliver(
      notification(
        value({
          contacts: [{ waId: e }],
          messages: [textMessage(e, 'human', { timestamp: nowSeconds(-120) })],
        }),
      ),
    );
    expect((await app.services.data.users.getUser(owner?.id ?? ''))?.handoff?.by).toBe('user');
    await deliver(changedNumber(a, e, nowSeconds(-60)));

    expect((await app.services.data.users.getUser(owner?.id ?? ''))?.handoff).toBeNull();
    const handoff = (await app.services.data.users.getUser(person.id))?.handoff;
    expect(handoff?.by).toBe('user');
    // The person waits for an operator: the bot does not answer them.
    const sent = repliesTo(e);
    await deliver(text(e, 'is anyone there?'));
    expect(repliesTo(e)).toBe(sent);
  });

  // Meta gives a new number a new business-scoped id, so the new owner of a recycled number writes
  // with their own id and profile name; the record of the number takes both until the change
  // comes. They are the new owner's, never the previous owner's to keep.
  it.each([
    ['the change carries the new business-scoped id', true],
    ['the change carries no business-scoped id', false],
  ])('the previous owner keeps their own name and business-scoped id (%s)', async (_label, changeGivesId) => {
    const [a, c] = [newPhone(), newPhone()];
    const [ownerId, personId] = [`US.owner${a}`, `US.person${c}`];
    const from = (phone: string, body: string, name: string, bsuid: string, timestamp = nowSeconds()) =>
      notification(
        value({
          contacts: [{ waId: phone, name, bsuid }],
          messages: [textMessage(phone, body, { timestamp, from_user_id: bsuid })],
        }),
      );
    await deliver(
      from(c, 'the previous owner wrote this', 'Previous Owner', ownerId, nowSeconds(-3 * 86_400)),
    );
    const owner = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    await deliver(from(a, 'the person who now has the number', 'Ana', `US.old${a}`));
    const person = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    await deliver(from(c, 'my first words from c', 'Ana Maria', personId, nowSeconds(-120)));
    await deliver(from(c, 'and a new profile name', 'Ana M.', personId, nowSeconds(-100)));
    const change = changedNumber(a, c, nowSeconds(-60));
    const system = (
      (change.entry[0]?.changes[0]?.value as { messages: { system: object }[] }).messages[0] as {
        system: object;
      }
    ).system;
    if (changeGivesId) Object.assign(system, { user_id: personId });
    await deliver(change);

    const previous = await app.services.data.users.getUser(owner?.id ?? '');
    expect(previous).toMatchObject({ waId: null, bsuid: ownerId, name: 'Previous Owner' });
    expect(previous?.messageCount).toBe(2);
    const onC = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    expect(onC?.id).toBe(person?.id);
    // The person writing under their id alone, as a user with a username may, is the person.
    const alone = notification(
      value({
        contacts: [{ bsuid: personId, name: 'Ana M.' }],
        messages: [
          {
            from_user_id: personId,
            id: wamid(),
            timestamp: nowSeconds(),
            type: 'text',
            text: { body: 'id only' },
          },
        ],
      }),
    );
    await deliver(alone);
    expect((await app.services.data.users.findByIdentity({ waId: null, bsuid: personId }))?.id).toBe(
      person?.id,
    );
    expect((await app.services.data.users.getUser(owner?.id ?? ''))?.messageCount).toBe(2);
    // Searched by name, the previous owner is found by their own, not by the new owner's.
    const found = await app.services.data.manage.listUsers({ q: 'previous', limit: 50, after: null });
    expect(found.items.map((u) => u.id)).toContain(owner?.id);
    const byNewName = await app.services.data.manage.listUsers({ q: 'maria', limit: 50, after: null });
    expect(byNewName.items.map((u) => u.id)).not.toContain(owner?.id);
  });
});

describe('a number change whose system message is dated after the first message from the new number', () => {
  it('merges that record: it is the same person', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const person = await userWhoWrote(app, a, 'from the old number');
    await deliver(text(b, 'first words from the new number'));
    await deliver(changedNumber(a, b, nowSeconds(30)));
    const users = app.database.db.collection('users');
    expect(
      (await users.find({ $or: [{ waId: b }, { previousWaIds: b }] }).toArray()).map((u) => u._id),
    ).toEqual([person.id]);
  });
});

describe('a number change after the new number wrote', () => {
  it('keeps what the person asked from the new number (stop, human), and a change from a number never seen leaves that user as is', async () => {
    const [a, b, c, d] = [newPhone(), newPhone(), newPhone(), newPhone()];
    await deliver(text(a, 'hello'));
    await deliver(text(b, 'stop'));
    await deliver(changedNumber(a, b));
    const merged = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(merged?.optedOut).toBe(true);
    const sent = repliesTo(b);
    await deliver(text(b, 'still there?'));
    expect(repliesTo(b)).toBe(sent);

    await deliver(text(c, 'hello'));
    await deliver(text(d, 'human'));
    await deliver(changedNumber(c, d));
    expect((await app.services.data.users.findByIdentity({ waId: d, bsuid: null }))?.handoff?.by).toBe(
      'user',
    );

    // Only the new number ever wrote: no record is made for the old one, the user keeps their id.
    const [e, f] = [newPhone(), newPhone()];
    await deliver(text(f, 'stop'));
    const before = await app.services.data.users.findByIdentity({ waId: f, bsuid: null });
    const totals = await app.services.data.stats.totals();
    await deliver(changedNumber(e, f));
    const after = await app.services.data.users.findByIdentity({ waId: f, bsuid: null });
    expect(after?.id).toBe(before?.id);
    expect(after?.optedOut).toBe(true);
    expect(await app.services.data.stats.totals()).toEqual(totals);
    const exported = await app.services.data.personal.exportUser(after?.id ?? '');
    expect(exported?.events.map((ev) => ev.kind)).toEqual(['system']);
  });
});

describe('a change of number or id for a person never seen (erased, or before the data was kept)', () => {
  it('makes no user: nothing counted or listed; the item is filed under the number or id left behind', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const users = app.database.db.collection('users');
    const totals = await app.services.data.stats.totals();
    const count = await users.countDocuments();
    const change = changedNumber(a, b);
    await deliver(change);
    await deliver(change);
    const [oldId, newId] = [`US.gone${a}`, `US.new${a}`];
    await deliver(
      notification(
        value({
          messages: [
            {
              from_user_id: oldId,
              id: wamid(),
              timestamp: nowSeconds(),
              type: 'system',
              system: { body: 'User changed their id', type: 'user_changed_user_id', user_id: newId },
            },
          ],
        }),
      ),
    );
    expect(await users.countDocuments()).toBe(count);
    expect(await app.services.data.stats.totals()).toEqual(totals);
    const subjects = app.services.data.events;
    expect(await subjects.archivedUnder('system', a, 5)).toHaveLength(1);
    expect(await subjects.archivedUnder('system', oldId, 5)).toHaveLength(1);

    // The person writes from the new number: a new user, answered as any.
    const onB = await userWhoWrote(app, b, 'hello from b');
    expect(onB).toMatchObject({ waId: b, messageCount: 2 });
    expect((await app.services.data.personal.exportUser(onB.id))?.previousWaIds).toEqual([]);
  });

  it('followed when the change to the number it leaves arrives after it (A→B, then B→C, B→C first): the person ends on C, holding B', async () => {
    const [a, b, c] = [newPhone(), newPhone(), newPhone()];
    const person = await userWhoWrote(app, a, 'my conversation');
    await deliver(changedNumber(b, c, nowSeconds(1)));
    await deliver(changedNumber(a, b, nowSeconds()));
    const moved = await app.services.data.users.getUser(person.id);
    expect(moved?.waId).toBe(c);
    const exported = await app.services.data.personal.exportUser(person.id);
    expect(exported?.previousWaIds).toEqual(expect.arrayContaining([a, b]));
    expect(exported?.events.filter((e) => e.kind === 'system')).toHaveLength(2);
  });
});

describe('a number change delivered again', () => {
  it('changes nothing: the user keeps their id and state, the old number stays free or its new owner', async () => {
    const [a, b, c, d] = [newPhone(), newPhone(), newPhone(), newPhone()];
    await deliver(text(a, 'stop'));
    const before = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    const change = changedNumber(a, b);
    await deliver(change);
    const totals = await app.services.data.stats.totals();
    await deliver(change);
    const after = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    expect(after?.id).toBe(before?.id);
    expect(after?.optedOut).toBe(true);
    expect(after?.createdAt).toEqual(before?.createdAt);
    expect(await app.services.data.users.findByIdentity({ waId: a, bsuid: null })).toBeNull();
    expect(await app.services.data.stats.totals()).toEqual(totals);

    // The new number wrote first (the records were merged), then the old number got a new owner:
    // the change delivered again neither moves nor merges anyone.
    await deliver(text(c, 'from the old number'));
    await deliver(text(d, 'from the new number'));
    const kept = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    const mergeChange = changedNumber(c, d);
    await deliver(mergeChange);
    await deliver(text(c, 'hi, new owner of this number', 'Bo'));
    const owner = await app.services.data.users.findByIdentity({ waId: c, bsuid: null });
    await deliver(mergeChange);
    expect((await app.services.data.users.findByIdentity({ waId: d, bsuid: null }))?.id).toBe(kept?.id);
    expect((await app.services.data.users.findByIdentity({ waId: c, bsuid: null }))?.id).toBe(owner?.id);
    expect(owner?.id).not.toBe(kept?.id);
  });
});

/** A message from a person known to this business only by their business-scoped id (a username). */
const fromBsuid = (bsuid: string, body: string) =>
  notification(
    value({
      contacts: [{ bsuid, name: 'Uma' }],
      messages: [{ from_user_id: bsuid, id: wamid(), timestamp: nowSeconds(), type: 'text', text: { body } }],
    }),
  );
let bsuidSeq = 0;
const newBsuid = () => `US.${String(7_000_000_000_000 + ++bsuidSeq)}`;
const repliesToBsuid = (bsuid: string) =>
  app.graph.sends().filter((s) => s.body['recipient'] === bsuid).length;

/** Meta's `user_changed_user_id` system message: the user's business-scoped id changed (no number in it). */
function changedUserId(from: string, to: string) {
  return notification(
    value({
      messages: [
        {
          from_user_id: from,
          id: wamid(),
          timestamp: nowSeconds(),
          type: 'system',
          system: {
            body: `User Uma changed from ${from} to ${to}`,
            user_id: to,
            type: 'user_changed_user_id',
          },
        },
      ],
    }),
  );
}

describe('identity across business-scoped id changes', () => {
  it('user_changed_user_id: the user takes the new id, and the person writing under it is the same user', async () => {
    const [a, b] = [newBsuid(), newBsuid()];
    await deliver(fromBsuid(a, 'hello'));
    const before = await app.services.data.users.findByIdentity({ waId: null, bsuid: a });
    expect(before).not.toBeNull();
    const change = changedUserId(a, b);
    await deliver(change);
    await deliver(fromBsuid(b, 'it is me, under my new id'));
    const after = await app.services.data.users.findByIdentity({ waId: null, bsuid: b });
    expect(after?.id).toBe(before?.id);
    expect(after?.messageCount).toBe(4);
    expect(await app.services.data.users.findByIdentity({ waId: null, bsuid: a })).toBeNull();
    expect(repliesToBsuid(b)).toBe(1);
    // Delivered again, it changes nothing.
    const totals = await app.services.data.stats.totals();
    await deliver(change);
    expect((await app.services.data.users.findByIdentity({ waId: null, bsuid: b }))?.id).toBe(before?.id);
    expect(await app.services.data.users.findByIdentity({ waId: null, bsuid: a })).toBeNull();
    expect(await app.services.data.stats.totals()).toEqual(totals);
  });

  it('user_changed_number with the new business-scoped id: the person writing under that id alone is the same user', async () => {
    const [a, b] = [newPhone(), newPhone()];
    const [oldId, newId] = [newBsuid(), newBsuid()];
    await deliver(
      notification(
        value({
          contacts: [{ waId: a, bsuid: oldId, name: 'Uma' }],
          messages: [{ ...textMessage(a, 'hello'), from_user_id: oldId }],
        }),
      ),
    );
    const before = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    await deliver(
      notification(
        value({
          messages: [
            {
              from: a,
              from_user_id: oldId,
              id: wamid(),
              timestamp: nowSeconds(),
              type: 'system',
              system: {
                body: `User Uma changed from ${a} to ${b}`,
                wa_id: b,
                user_id: newId,
                type: 'user_changed_number',
              },
            },
          ],
        }),
      ),
    );
    // The new number is not shared with the business in this message (a username): only the new id.
    await deliver(fromBsuid(newId, 'my new number, under my username'));
    const after = await app.services.data.users.findByIdentity({ waId: null, bsuid: newId });
    expect(after?.id).toBe(before?.id);
    expect(after?.waId).toBe(b);
    expect(after?.messageCount).toBe(4);
  });

  it('user_changed_user_id after the new id wrote: the two records are merged, what was asked under either holds', async () => {
    const [a, b] = [newBsuid(), newBsuid()];
    await deliver(fromBsuid(a, 'hello'));
    await deliver(fromBsuid(b, 'stop'));
    const oldUser = await app.services.data.users.findByIdentity({ waId: null, bsuid: a });
    const newUser = await app.services.data.users.findByIdentity({ waId: null, bsuid: b });
    expect(oldUser?.id).not.toBe(newUser?.id);
    await deliver(changedUserId(a, b));
    const merged = await app.services.data.users.findByIdentity({ waId: null, bsuid: b });
    expect(merged?.id).toBe(oldUser?.id);
    expect(merged?.messageCount).toBe(4);
    expect(merged?.optedOut).toBe(true);
    expect(await app.services.data.users.getUser(newUser?.id ?? '')).toBeNull();
  });
});

describe('erase means erased', () => {
  it('removes messages, archived items that carry the number, and the lock; the person writing later is a new user who is answered', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(app, phone, 'secret words about me');
    // Archived items without a user: a status of an unknown kind for the number, a message
    // without a timestamp (its full text), and a webhook `errors` item with the contact.
    await deliver(notification(value({ statuses: [status(wamid(), 'deleted', phone)] })));
    await deliver(
      notification(
        value({
          contacts: [{ waId: phone }],
          messages: [{ from: phone, id: wamid(), type: 'text', text: { body: 'no time' } }],
        }),
      ),
    );
    await deliver(
      notification(
        value({ contacts: [{ waId: phone }], errors: [{ code: 131051, title: 'Unsupported message type' }] }),
      ),
    );
    const exported = await app.services.data.personal.exportUser(user.id);
    expect(exported?.events.map((e) => e.kind).sort()).toEqual(['errors', 'status', 'unhandled_message']);
    expect(JSON.stringify(exported?.events)).toContain('no time');

    // A reply lock left by a worker that died must not outlive the erase.
    await app.services.data.users.lockForReply(user.id, 'dead-worker', 60_000, new Date());
    const totalsBefore = await app.services.data.stats.totals();
    expect(await app.services.data.personal.eraseUser(user.id)).toMatchObject({ messages: 2, events: 3 });
    const raw = app.database.db;
    expect(await raw.collection('messages').countDocuments({ userId: user.id })).toBe(0);
    const leftovers = await raw
      .collection('events')
      .find({ kind: { $ne: 'audit' } })
      .toArray();
    expect(JSON.stringify(leftovers)).not.toContain(phone);
    expect(JSON.stringify(leftovers)).not.toContain('no time');
    const totalsAfter = await app.services.data.stats.totals();
    expect(totalsAfter.inbound).toBe(totalsBefore.inbound - 1);
    expect(totalsAfter.outbound).toBe(totalsBefore.outbound - 1);
    expect(totalsAfter.newUsers).toBe(totalsBefore.newUsers - 1);

    const before = repliesTo(phone);
    await deliver(text(phone, 'hello again'));
    expect(repliesTo(phone)).toBe(before + 1);
    const again = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect(again?.messageCount).toBe(2);
  });
});

describe('export holds everything erase removes', () => {
  it('the message as WhatsApp delivered it (a location, a shared contact) and the numbers used before', async () => {
    const [old, phone] = [newPhone(), newPhone()];
    await deliver(text(old, 'hello from my old number'));
    await deliver(changedNumber(old, phone));
    const location = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'location',
      location: { latitude: 38.7223342, longitude: -9.1393366, name: 'Fake Cafe', address: 'Rua Falsa 1' },
    };
    const shared = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'contacts',
      contacts: [{ name: { formatted_name: 'Friend Person' }, phones: [{ phone: '+1 555 0100 222' }] }],
    };
    await deliver(notification(value({ contacts: [{ waId: phone }], messages: [location] })));
    await deliver(notification(value({ contacts: [{ waId: phone }], messages: [shared] })));
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    if (!user) throw new Error('user not stored');

    const exported = await app.services.data.personal.exportUser(user.id);
    expect(exported?.previousWaIds).toEqual([old]);
    const raws = JSON.stringify(exported?.messages.map((m) => m.raw));
    for (const held of ['38.7223342', 'Rua Falsa 1', 'Friend Person', '+1 555 0100 222', 'hello from my old'])
      expect(raws).toContain(held);
    // The bot's own messages have no such form.
    expect(exported?.messages.filter((m) => m.direction === 'outbound').every((m) => m.raw === null)).toBe(
      true,
    );
    // What the export shows is exactly what held it: after the erase, none of it is anywhere.
    await app.services.data.personal.eraseUser(user.id);
    const messages = JSON.stringify(await app.database.db.collection('messages').find({}).toArray());
    for (const held of ['38.7223342', 'Rua Falsa 1', 'Friend Person', '0100 222'])
      expect(messages).not.toContain(held);
  });
});

describe('archived items that write the number oddly', () => {
  it('are exported and erased with the user: a "+" sender, a numeric recipient, a sender only its contact names', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(app, phone, 'hello');
    // A sender written with a plus sign and spaces (out of bounds, so archived), its contact valid.
    await deliver(
      notification(
        value({
          contacts: [{ waId: phone }],
          messages: [textMessage(`+${phone.slice(0, 2)} ${phone.slice(2)}`, 'plus sign words')],
        }),
      ),
    );
    // A status whose recipient is a JSON number (malformed, so archived).
    await deliver(
      notification(
        value({
          statuses: [
            { id: wamid(), status: 'delivered', timestamp: nowSeconds(), recipient_id: Number(phone) },
          ],
        }),
      ),
    );
    // A sender that is no number at all: the one contact of the notification names the person.
    await deliver(
      notification(
        value({ contacts: [{ waId: phone }], messages: [textMessage('tel:unknown', 'odd sender words')] }),
      ),
    );
    const exported = await app.services.data.personal.exportUser(user.id);
    expect(exported?.events.map((e) => `${e.kind}/${e.reason}`).sort()).toEqual([
      'unhandled_message/sender out of bounds',
      'unhandled_message/sender out of bounds',
      'unhandled_status/malformed status',
    ]);
    expect(JSON.stringify(exported?.events)).toContain('plus sign words');
    expect(JSON.stringify(exported?.events)).toContain('odd sender words');

    expect(await app.services.data.personal.eraseUser(user.id)).toMatchObject({ events: 3 });
    const leftovers = await app.database.db
      .collection('events')
      .find({ kind: { $ne: 'audit' } })
      .toArray();
    const left = JSON.stringify(leftovers);
    expect(left).not.toContain(phone.slice(2));
    expect(left).not.toContain('plus sign words');
    expect(left).not.toContain('odd sender words');
  });
});

describe('notifications of other fields the app subscribes to', () => {
  it('are archived one item per person they name, exported and erased with that person only', async () => {
    const [phone, other] = [newPhone(), newPhone()];
    const user = await userWhoWrote(app, phone, 'hello');
    const business = { display_phone_number: '15550783881', phone_number_id: '106540352242922' };
    const change = (field: string, v: Record<string, unknown>) => ({
      object: 'whatsapp_business_account',
      entry: [{ id: '102290129340398', changes: [{ field, value: v }] }],
    });
    const at = nowSeconds();
    const echo = (to: string, body: string) => ({
      from: business.display_phone_number,
      to,
      id: wamid(),
      timestamp: at,
      type: 'text',
      text: { body },
    });
    // Messages the business sent from the WhatsApp Business app (the first is from the business's number).
    await deliver(
      change('smb_message_echoes', {
        messaging_product: 'whatsapp',
        metadata: business,
        message_echoes: [echo(phone, 'echo words for one'), echo(other, 'echo words for another')],
      }),
    );
    // Two threads of the chat history: the person's and someone else's.
    const thread = (id: string, body: string) => ({
      id,
      messages: [{ from: id, id: wamid(), timestamp: at, type: 'text', text: { body } }],
    });
    await deliver(
      change('history', {
        messaging_product: 'whatsapp',
        metadata: business,
        history: [
          {
            metadata: { phase: 0, chunk_order: 1, progress: 100 },
            threads: [thread(phone, 'history words for one'), thread(other, 'history words for another')],
          },
        ],
      }),
    );
    // A contact of the business app's address book, and a marketing opt-out.
    await deliver(
      change('smb_app_state_sync', {
        messaging_product: 'whatsapp',
        metadata: business,
        state_sync: [
          { type: 'contact', contact: { full_name: 'Ana Book', phone_number: phone }, action: 'add' },
        ],
      }),
    );
    await deliver(
      change('user_preferences', {
        messaging_product: 'whatsapp',
        metadata: business,
        user_preferences: [{ wa_id: phone, category: 'marketing_messages', value: 'stop', timestamp: at }],
      }),
    );
    // Naming no one: a template's status, the business number's own update.
    await deliver(
      change('message_template_status_update', {
        event: 'APPROVED',
        message_template_id: 1234567890,
        message_template_name: 'welcome',
        message_template_language: 'en_US',
        reason: 'NONE',
      }),
    );
    await deliver(
      change('account_update', { phone_number: business.display_phone_number, event: 'VERIFIED_ACCOUNT' }),
    );

    const exported = await app.services.data.personal.exportUser(user.id);
    const mine = JSON.stringify(exported?.events);
    for (const words of ['echo words for one', 'history words for one', 'Ana Book', 'marketing_messages'])
      expect(mine).toContain(words);
    expect(mine).not.toContain('words for another');

    expect(await app.services.data.personal.eraseUser(user.id)).toMatchObject({ events: 4 });
    const left = JSON.stringify(
      await app.database.db
        .collection('events')
        .find({ kind: { $ne: 'audit' } })
        .toArray(),
    );
    expect(left).not.toContain(phone);
    expect(left).toContain('echo words for another');
    expect(left).toContain('history words for another');
    expect(left).toContain('VERIFIED_ACCOUNT');
    expect(left).toContain('1234567890');
  });
});

describe('a history thread longer than an archived item', () => {
  it('is archived in parts under its person: none of its messages is cut off', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(app, phone, 'hello');
    const business = { display_phone_number: '15550783881', phone_number_id: '106540352242922' };
    const at = Math.floor(Date.now() / 1000) - 90 * 86_400;
    // 180 days with a busy customer: 3,000 messages (about 900 KB), in one thread of one chunk.
    const messages = Array.from({ length: 3_000 }, (_, i) => ({
      from: i % 2 ? business.display_phone_number : phone,
      ...(i % 2 ? { to: phone } : {}),
      id: `wamid.history.${String(i).padStart(5, '0')}`,
      timestamp: String(at + i * 60),
      type: 'text',
      text: { body: `history message number ${i}, with the words people write every day` },
      history_context: { status: 'READ' },
    }));
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: '102290129340398',
          changes: [
            {
              field: 'history',
              value: {
                messaging_product: 'whatsapp',
                metadata: business,
                history: [
                  {
                    metadata: { phase: 2, chunk_order: 3, progress: 90 },
                    threads: [{ id: phone, messages }],
                  },
                ],
              },
            },
          ],
        },
      ],
    };
    expect(JSON.stringify(payload).length).toBeGreaterThan(600_000);
    await deliver(payload);
    const exported = await app.services.data.personal.exportUser(user.id);
    const parts = (exported?.events ?? []).filter((e) => e.reason === 'field history');
    expect(parts.length).toBeGreaterThan(1);
    // Each part is whole JSON, shaped like Meta's change, with the thread's metadata.
    const kept = parts.flatMap((e) => {
      const p = e.payload as {
        field: string;
        value: { history: { metadata: unknown; threads: { id: string; messages: { id: string }[] }[] }[] };
      };
      expect(p.field).toBe('history');
      expect(p.value.history[0]?.metadata).toEqual({ phase: 2, chunk_order: 3, progress: 90 });
      expect(p.value.history[0]?.threads[0]?.id).toBe(phone);
      return p.value.history[0]?.threads[0]?.messages.map((m) => m.id) ?? [];
    });
    expect(kept.sort()).toEqual(messages.map((m) => m.id));
  });
});

describe('bursts', () => {
  it('one notification with 25 messages from one user (an album): every one answered once, in the order listed', async () => {
    const phone = newPhone();
    const at = nowSeconds();
    // Ids in the reverse order of sending, all in one second: neither sorts like the list.
    const messages = Array.from({ length: 25 }, (_, i) => ({
      ...textMessage(phone, `photo ${i}`),
      id: `wamid.album.${String(99 - i)}.${phone}`,
      timestamp: at,
    }));
    const { jobs } = await ingestNotification(
      app.services,
      notification(value({ contacts: [{ waId: phone }], messages })),
      log,
    );
    expect(jobs).toHaveLength(25);
    // All jobs at once, as queue workers would: one takes the user's lock, the others end at once.
    await Promise.all(jobs.map((job) => processReplyJob(app.services, job, log)));
    const raw = app.database.db.collection('messages');
    const ids = messages.map((m) => m.id);
    const stored = await raw.find({ _id: { $in: ids } } as Record<string, unknown>).toArray();
    expect(stored.map((m) => m['replyState'])).toEqual(ids.map(() => 'sent'));
    const answers = (
      await raw.find({ relatedId: { $in: ids }, direction: 'outbound' } as Record<string, unknown>).toArray()
    ).sort((x, y) => (x['seqAt'] as Date).getTime() - (y['seqAt'] as Date).getTime());
    expect(answers.map((a) => a['relatedId'])).toEqual(ids);
    expect(repliesTo(phone)).toBe(25);
  });

  it('"help" then "stop" in the same second: help is answered before the user opts out', async () => {
    const phone = newPhone();
    const at = nowSeconds();
    const help = { ...textMessage(phone, 'help'), id: `wamid.zzz.${phone}`, timestamp: at };
    const stop = { ...textMessage(phone, 'stop'), id: `wamid.aaa.${phone}`, timestamp: at };
    await deliver(notification(value({ contacts: [{ waId: phone }], messages: [help, stop] })));
    const sends = app.graph.sends().filter((s) => s.body['to'] === phone);
    expect(sends).toHaveLength(2);
    const texts = sends.map((s) => (s.body['text'] as { body: string }).body);
    expect(texts).toEqual([HELP_TEXT, STOP_ANSWER]);
  });

  it('20 users × 15 quick messages: 300 replies, none failed, each user answered in order', async () => {
    const phones = Array.from({ length: 20 }, () => newPhone());
    const sent = new Map<string, string[]>();
    const base = Math.floor(Date.now() / 1000) - 100;
    const jobs: ReplyJob[] = [];
    // Every message is its own notification, ingested concurrently; every job runs concurrently.
    await Promise.all(
      phones.flatMap((phone) =>
        Array.from({ length: 15 }, async (_, i) => {
          const body = `message ${i}`;
          const message = { ...textMessage(phone, body), timestamp: String(base + i) };
          sent.set(phone, [...(sent.get(phone) ?? []), message.id]);
          const result = await ingestNotification(
            app.services,
            notification(value({ contacts: [{ waId: phone }], messages: [message] })),
            log,
          );
          jobs.push(...result.jobs);
        }),
      ),
    );
    expect(jobs).toHaveLength(300);
    await Promise.all(jobs.map((job) => processReplyJob(app.services, job, log)));
    const raw = app.database.db.collection('messages');
    for (const phone of phones) {
      const ids = sent.get(phone) ?? [];
      const stored = await raw.find({ _id: { $in: ids } } as Record<string, unknown>).toArray();
      expect(stored.map((m) => m['replyState'])).toEqual(ids.map(() => 'sent'));
      // The answers go out in the order the messages were sent.
      const answers = (
        await raw
          .find({ relatedId: { $in: ids }, direction: 'outbound' } as Record<string, unknown>)
          .toArray()
      ).sort((x, y) => (x['seqAt'] as Date).getTime() - (y['seqAt'] as Date).getTime());
      expect(answers.map((a) => a['relatedId'])).toEqual(
        [...ids].sort((x, y) => ids.indexOf(x) - ids.indexOf(y)),
      );
      expect(repliesTo(phone)).toBe(15);
    }
  }, 120_000);
});

describe('erase while writers are at work', () => {
  let own: TestApp;
  beforeAll(async () => {
    own = await startTestApp();
  });
  afterAll(async () => {
    await own.close();
  });

  /** Counters equal what is stored, every summary matches, and no message outlives its user. */
  async function expectConsistent(target: TestApp) {
    const { maintenance, stats } = target.services.data;
    // What operators see now is what the running counters hold once the sweep has folded in what
    // writers marked, and that is what is stored.
    const shown = await stats.totals();
    await stats.foldPending();
    const counts = await maintenance.countStored();
    const totals: Record<string, number> = await stats.runningTotals();
    expect(totals).toEqual(shown);
    for (const [key, stored] of Object.entries(counts.counters.totals))
      expect([key, totals[key]]).toEqual([key, stored]);
    expect(await maintenance.checkSummaries(counts)).toEqual([]);
    const raw = target.database.db;
    const users = new Set(
      (
        await raw
          .collection('users')
          .find({}, { projection: { _id: 1 } })
          .toArray()
      ).map((u) => String(u._id)),
    );
    const owners = await raw.collection('messages').distinct('userId');
    expect(owners.filter((id) => !users.has(String(id)))).toEqual([]);
  }

  it('an answer Graph accepts after the erase began is taken back and not counted', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(own, phone, 'first');
    const { jobs } = await ingestNotification(own.services, text(phone, 'second'), log);
    const sendsBefore = own.graph.sends().length;
    own.graph.delayMs = 400;
    const answering = processReplyJob(own.services, jobs[0] as ReplyJob, log);
    while (own.graph.sends().length === sendsBefore) await new Promise((r) => setTimeout(r, 5));
    // Graph has the send and has not answered yet: the erase runs to its end meanwhile.
    expect(await own.services.data.personal.eraseUser(user.id)).toMatchObject({ messages: 3 });
    await answering;
    own.graph.delayMs = 0;
    expect(await own.database.db.collection('messages').countDocuments({ userId: user.id })).toBe(0);
    expect(await own.services.data.users.getUser(user.id)).toBeNull();
    await expectConsistent(own);
  });

  it('a notification from a person whose erase is under way is tried again, and stored for the new user once the erase is over', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(own, phone, 'hello');
    // An erase that stopped half-way (its process died): the user is marked, nothing else.
    await own.database.db
      .collection('users')
      .updateOne({ _id: user.id as never }, { $set: { erasing: true } });
    const later = text(phone, 'written during the erase');
    await expect(ingestNotification(own.services, later, log)).rejects.toMatchObject({
      name: 'ErasureInProgress',
    });
    // Nothing stored from it: the user still has their first message and its answer only.
    expect(await own.database.db.collection('messages').countDocuments({ userId: user.id })).toBe(2);
    // Run again, the erase finishes; the notification's retry then makes a new user, answered.
    expect(await own.services.data.personal.eraseUser(user.id)).toMatchObject({ messages: 2 });
    const before = own.graph.sends().filter((s) => s.body['to'] === phone).length;
    await deliverTo(own, later);
    expect(own.graph.sends().filter((s) => s.body['to'] === phone).length).toBe(before + 1);
    expect((await own.services.data.users.findByIdentity({ waId: phone, bsuid: null }))?.messageCount).toBe(
      2,
    );
    await expectConsistent(own);
  });

  it('two erases of one user at once (a double click): the second waits for the first, the counters drop once', async () => {
    for (let round = 0; round < 3; round++) {
      const phone = newPhone();
      const user = await userWhoWrote(own, phone, 'first');
      for (let i = 0; i < 12; i++) await deliverTo(own, text(phone, `more ${i}`));
      const { personal } = own.services.data;
      const [a, b] = await Promise.all([personal.eraseUser(user.id), personal.eraseUser(user.id)]);
      expect([a?.messages, b?.messages].sort((x, y) => (x ?? 0) - (y ?? 0))).toEqual([0, 26]);
      expect(await own.services.data.users.getUser(user.id)).toBeNull();
      await expectConsistent(own);
    }
  });

  it('a message stored as its sender is erased is answered once when the person writes again before its writer sees the erase over', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(own, phone, 'first');
    const users = own.services.data.users;
    const during = text(phone, 'written during the erase');
    const again = text(phone, 'written after the erase');
    // The ingest of `during` read its user, then the whole erase ran before it stored the
    // message (the erase's reads had passed: the message outlives it).
    const resolve = users.resolve.bind(users);
    let erased = false;
    users.resolve = async (...args: Parameters<typeof users.resolve>) => {
      const resolved = await resolve(...args);
      if (!erased && resolved.user.id === user.id) {
        erased = true;
        await own.services.data.personal.eraseUser(user.id);
      }
      return resolved;
    };
    // While that writer waits to see the erase over (it polls), the person writes again: a new
    // user under the same id, whose reply worker answers what waits for that id, and the
    // conversation goes on (the queue tries the failed notification again only minutes later).
    const goneAfterErase = users.goneAfterErase.bind(users);
    let wroteAgain = false;
    users.goneAfterErase = async (...args: Parameters<typeof users.goneAfterErase>) => {
      if (!wroteAgain && args[0] === user.id && args[1] === undefined) {
        wroteAgain = true;
        await deliverTo(own, again);
        for (let i = 0; i < 11; i++) await deliverTo(own, text(phone, `more ${i}`));
      }
      return goneAfterErase(...args);
    };
    const sendsBefore = own.graph.sends().filter((s) => s.body['to'] === phone).length;
    try {
      // The queue tries a notification that failed again.
      for (let attempt = 0; attempt < 3; attempt++) {
        try {
          await deliverTo(own, during);
          break;
        } catch (error) {
          if ((error as Error).name !== 'ErasureInProgress') throw error;
        }
      }
    } finally {
      Reflect.deleteProperty(users, 'resolve');
      Reflect.deleteProperty(users, 'goneAfterErase');
    }
    expect([erased, wroteAgain]).toEqual([true, true]);
    // Thirteen messages written since the erase began: thirteen answers, none of them twice.
    expect(own.graph.sends().filter((s) => s.body['to'] === phone).length - sendsBefore).toBe(13);
    const stored = await own.database.db
      .collection('messages')
      .find({ userId: user.id })
      .project({ direction: 1, text: 1, replyState: 1, relatedId: 1 })
      .toArray();
    const inbound = stored.filter((m) => m['direction'] === 'inbound');
    expect(inbound.map((m) => m['text'])).toHaveLength(13);
    expect(inbound.map((m) => m['text'])).toContain('written during the erase');
    for (const m of inbound) expect(m['replyState']).toBe('sent');
    const ids = new Set(inbound.map((m) => String(m._id)));
    expect(stored.filter((m) => m['direction'] === 'outbound' && !ids.has(String(m['relatedId'])))).toEqual(
      [],
    );
    expect((await users.findByIdentity({ waId: phone, bsuid: null }))?.messageCount).toBe(26);
    await expectConsistent(own);
  });

  it('an erase that finds another one under way past its wait answers 503 with Retry-After, erasing nothing', async () => {
    const phone = newPhone();
    const user = await userWhoWrote(own, phone, 'hello');
    // Another erase began a moment ago and is still at work (its marks only).
    await own.database.db
      .collection('users')
      .updateOne({ _id: user.id as never }, { $set: { erasing: true, erasingSince: new Date() } });
    const error = await own.services.data.personal.eraseUser(user.id).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'UNAVAILABLE', retryAfterSeconds: 30 });
    expect(await own.database.db.collection('messages').countDocuments({ userId: user.id })).toBe(2);
    // Ten minutes on, it counts as interrupted and the next erase takes it over.
    const later = new Date(Date.now() + 11 * 60_000);
    expect(await own.services.data.personal.eraseUser(user.id, later)).toMatchObject({ messages: 2 });
    await expectConsistent(own);
  }, 60_000);

  it('erases in the middle of a burst (messages arriving, answers in flight) leave nothing behind and the counters exact', async () => {
    for (const delayMs of [0, 30, 90, 200]) {
      const phone = newPhone();
      const user = await userWhoWrote(own, phone, 'start');
      own.graph.delayMs = 15;
      const retries: unknown[] = [];
      const burst = Array.from({ length: 8 }, async (_, i) => {
        await new Promise((r) => setTimeout(r, i * 15));
        const payload = text(phone, `burst ${i}`);
        try {
          await deliverTo(own, payload);
        } catch (error) {
          if ((error as Error).name !== 'ErasureInProgress') throw error;
          retries.push(payload); // the queue tries it again later
        }
      });
      await new Promise((r) => setTimeout(r, delayMs));
      await own.services.data.personal.eraseUser(user.id);
      await Promise.all(burst);
      own.graph.delayMs = 0;
      for (const payload of retries) await deliverTo(own, payload);
      // What was written after the erase belongs to a new user (under the same id): nothing of
      // the erased one is left, and no answer is left without the message it answers.
      const left = await own.database.db
        .collection('messages')
        .find({ userId: user.id })
        .project({ direction: 1, text: 1, relatedId: 1, replyState: 1 })
        .toArray();
      expect(left.map((m) => m['text'])).not.toContain('start');
      const inbound = new Set(left.filter((m) => m['direction'] === 'inbound').map((m) => String(m._id)));
      const orphans = left.filter(
        (m) => m['direction'] === 'outbound' && !inbound.has(String(m['relatedId'])),
      );
      expect(orphans).toEqual([]);
      for (const m of left.filter((x) => x['direction'] === 'inbound')) expect(m['replyState']).toBe('sent');
      await expectConsistent(own);
    }
  });
});
