// What the database holds of a person after their erase, once WhatsApp's late notifications about
// them arrive (delivery statuses of the answers the bot sent them before it), and what export and
// erase take of the archived items of a number two people held in turn.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manageHandlers } from '../../functions/manage';
import { runtimeOf } from '../../shared/deps';
import { startTestApp, type TestApp } from '../helpers/app';
import { BOOTSTRAP, call } from '../helpers/manage-fixture';
import { notification, nowSeconds, status, textNotification, value, wamid } from '../helpers/meta';

let app: TestApp;
let handlers: ReturnType<typeof manageHandlers>;
let seq = 0;
const newPhone = () => `4477009683${String(++seq).padStart(2, '0')}`;

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: BOOTSTRAP });
  handlers = manageHandlers(runtimeOf(app.services));
});
afterAll(async () => {
  await app.close();
});

/** Every document of every collection that holds `needle` (a number, a wamid). */
async function holding(needle: string): Promise<string[]> {
  const found: string[] = [];
  for (const { name } of await app.database.db.listCollections().toArray()) {
    for (const doc of await app.database.db.collection(name).find({}).toArray())
      if (JSON.stringify(doc).includes(needle)) found.push(`${name}:${String(doc['_id'])}`);
  }
  return found;
}

describe('after an erase', () => {
  it('a delivery status of an answer sent before it stores nothing about the person', async () => {
    const phone = newPhone();
    expect((await app.post(textNotification(phone, 'hello').payload)).status).toBe(200);
    await app.drain();
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    const answer = await app.database.db
      .collection<{ waMessageId: string }>('messages')
      .findOne({ userId: user?.id, direction: 'outbound' });
    const sent = answer?.waMessageId ?? '';
    expect(sent).not.toBe('');
    const id = user?.id ?? '';
    expect((await call(handlers.user, { method: 'DELETE', params: { id } })).status).toBe(204);
    expect(await holding(phone)).toEqual([]);
    expect(await holding(sent)).toEqual([]);
    // WhatsApp reports the answer delivered and read after the erase (minutes later, as it does).
    for (const s of ['delivered', 'read'])
      expect((await app.post(notification(value({ statuses: [status(sent, s, phone)] })))).status).toBe(200);
    await app.drain();
    expect(await holding(phone)).toEqual([]);
    expect(await holding(sent)).toEqual([]);
    expect(app.logs.join('\n')).not.toContain(phone);
    // A status of a message no erase removed still leaves its placeholder (the message may follow).
    const unknown = wamid();
    expect(
      (await app.post(notification(value({ statuses: [status(unknown, 'delivered', phone)] })))).status,
    ).toBe(200);
    expect(await holding(unknown)).toEqual([`messages:${unknown}`]);
  });
});

describe('reply jobs of a person erased before they ran', () => {
  it('send nothing and store nothing, whether the job runs or lands in the poison queue', async () => {
    const phone = newPhone();
    const posted = await app.post(textNotification(phone, 'answer me later').payload);
    expect(posted.jobs.length).toBe(1);
    app.queued.length = 0;
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    expect((await call(handlers.user, { method: 'DELETE', params: { id: user?.id ?? '' } })).status).toBe(
      204,
    );
    const sends = app.graph.sends().length;
    for (const job of posted.jobs) {
      await app.runJob(job);
      await app.runPoison(job);
    }
    expect(app.graph.sends().length).toBe(sends);
    expect(await holding(phone)).toEqual([]);
    // Only the audit trail names the erased id.
    const left = (await holding(user?.id ?? '')).filter((d) => !d.startsWith('events:audit:'));
    expect(left).toEqual([]);
    expect(app.logs.join('\n')).not.toContain(phone);
  });
});

describe('a number two people held in turn (a number change, then its next owner writing)', () => {
  const errorsOf = (from: string, title: string) =>
    notification(value({ contacts: [{ waId: from }], errors: [{ code: 131051, title }] }));
  const changed = (from: string, to: string) =>
    notification(
      value({
        contacts: [{ waId: from }],
        messages: [
          {
            from,
            id: wamid(),
            timestamp: nowSeconds(),
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
  const deliver = async (payload: unknown) => {
    expect((await app.post(payload)).status).toBe(200);
    await app.drain();
  };

  it('each one exports and erases only the items archived while it was theirs', async () => {
    const [a, b] = [newPhone(), newPhone()];
    await deliver(textNotification(a, 'first person, from a').payload);
    await deliver(errorsOf(a, 'archived for the first person'));
    await deliver(changed(a, b));
    await deliver(textNotification(a, 'next owner of a').payload);
    await deliver(errorsOf(a, 'archived for the next owner'));
    const first = await app.services.data.users.findByIdentity({ waId: b, bsuid: null });
    const next = await app.services.data.users.findByIdentity({ waId: a, bsuid: null });
    expect(first && next && first.id !== next.id).toBe(true);
    const exportOf = async (id: string) => JSON.stringify(await app.services.data.personal.exportUser(id));
    const [ofFirst, ofNext] = [await exportOf(first?.id ?? ''), await exportOf(next?.id ?? '')];
    expect(ofFirst).toContain('archived for the first person');
    expect(ofFirst).not.toContain('archived for the next owner');
    expect(ofNext).toContain('archived for the next owner');
    expect(ofNext).not.toContain('archived for the first person');
    // Erasing the next owner leaves the first person's item, and takes theirs.
    expect((await call(handlers.user, { method: 'DELETE', params: { id: next?.id ?? '' } })).status).toBe(
      204,
    );
    expect(await exportOf(first?.id ?? '')).toContain('archived for the first person');
    expect(
      JSON.stringify(await app.database.db.collection('events').find({ kind: 'errors' }).toArray()),
    ).not.toContain('archived for the next owner');
  });
});
