// Retention (`npm run retention`, the daily timer) against the real test database: what it deletes
// besides messages (the archived items that hold what a person sent or was sent), what it keeps
// (the audit trail, a message whose answer is still on its way), during traffic.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_KIND, retentionCutoff } from '../../shared/data';
import { startTestApp, type TestApp } from '../helpers/app';
import { notification, nowSeconds, textMessage, value, wamid } from '../helpers/meta';

let app: TestApp;
let seq = 0;
const newPhone = () => `4477009672${String(++seq).padStart(2, '0')}`;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

const events = () => app.database.db.collection<{ _id: string; kind: string; createdAt: Date }>('events');
const messages = () => app.database.db.collection<{ _id: string }>('messages');
const repliesTo = (phone: string) => app.graph.sends().filter((s) => s.body['to'] === phone).length;

/** A message the business sent its customer from the WhatsApp Business app: archived, not stored. */
const echoOf = (to: string, body: string) => ({
  object: 'whatsapp_business_account',
  entry: [
    {
      id: '102290129340398',
      changes: [
        {
          field: 'smb_message_echoes',
          value: {
            messaging_product: 'whatsapp',
            metadata: { display_phone_number: '15550783881', phone_number_id: '106540352242922' },
            message_echoes: [
              { from: '15550783881', to, id: wamid(), timestamp: nowSeconds(), type: 'text', text: { body } },
            ],
          },
        },
      ],
    },
  ],
});

describe('retention and archived items', () => {
  const DAY = 86_400_000;
  /** Archived `days` ago: the test dates the items back as the days would. */
  const age = (ids: string[], days: number) =>
    events().updateMany({ _id: { $in: ids } }, { $set: { createdAt: new Date(Date.now() - days * DAY) } });

  it('deletes the archived items older than the cutoff, keeps younger ones and the audit trail', async () => {
    const [old, young] = [newPhone(), newPhone()];
    expect((await app.post(echoOf(old, 'an echo older than the cutoff'))).status).toBe(200);
    const aged = (
      await events()
        .find({ kind: { $ne: AUDIT_KIND } })
        .toArray()
    ).map((e) => e._id);
    expect(aged.length).toBeGreaterThanOrEqual(1);
    await age(aged, 40);
    expect((await app.post(echoOf(young, 'an echo younger than the cutoff'))).status).toBe(200);
    const kept = (
      await events()
        .find({ kind: { $ne: AUDIT_KIND }, _id: { $nin: aged } })
        .toArray()
    ).map((e) => e._id);
    expect(kept.length).toBeGreaterThanOrEqual(1);
    await age(kept, 20);
    const audit = { _id: 'audit:retention-test', kind: AUDIT_KIND, reason: 'export', createdAt: new Date(0) };
    await events().insertOne({ ...audit, userId: 'someone', payload: {} } as never);

    expect(await app.services.data.retention.countArchivedOlderThan(retentionCutoff(30, new Date()))).toBe(
      aged.length,
    );
    const result = await app.services.data.retention.deleteOlderThan(retentionCutoff(30, new Date()));
    expect(result.archived).toBe(aged.length);
    expect(await events().countDocuments({ _id: { $in: aged } })).toBe(0);
    expect(await events().countDocuments({ _id: { $in: kept } })).toBe(kept.length);
    // The audit trail stays, however old.
    expect(await events().countDocuments({ _id: audit._id })).toBe(1);
  });

  it('keeps an item archived within 8 days whatever the setting: Meta delivering it again finds it', async () => {
    const phone = newPhone();
    const echo = echoOf(phone, 'an echo two days old, kept one day');
    expect((await app.post(echo)).status).toBe(200);
    const ids = (
      await events()
        .find({ kind: { $ne: AUDIT_KIND }, createdAt: { $gt: new Date(Date.now() - 60_000) } })
        .toArray()
    ).map((e) => e._id);
    expect(ids.length).toBeGreaterThanOrEqual(1);
    await age(ids, 2);
    await app.services.data.retention.deleteOlderThan(retentionCutoff(1, new Date()));
    expect(await events().countDocuments({ _id: { $in: ids } })).toBe(ids.length);
    await age(ids, 9);
    await app.services.data.retention.deleteOlderThan(retentionCutoff(1, new Date()));
    expect(await events().countDocuments({ _id: { $in: ids } })).toBe(0);
  });
});

describe('retention during traffic', () => {
  it('keeps a message Meta delivered late whose answer is still on its way, and it is answered', async () => {
    const phone = newPhone();
    // Meta's time two days ago (a retry after an outage), kept one day: older than the cutoff.
    const message = textMessage(phone, 'late but still waiting', { timestamp: nowSeconds(-2 * 86_400) });
    const posted = await app.post(
      notification(value({ contacts: [{ waId: phone, name: 'Lee' }], messages: [message] })),
    );
    expect(posted.status).toBe(200);
    expect(posted.jobs.length).toBe(1);
    // The retention timer runs before the reply worker takes the job.
    await app.services.data.retention.deleteOlderThan(retentionCutoff(1, new Date()));
    expect(await messages().countDocuments({ _id: message.id })).toBe(1);
    await app.drain();
    expect(repliesTo(phone)).toBe(1);
    // Answered (settled and counted), it goes at the next run, with its answer.
    await app.services.data.stats.foldPending();
    await app.services.data.retention.deleteOlderThan(retentionCutoff(1, new Date()));
    expect(await messages().countDocuments({ _id: message.id })).toBe(0);
  });

  it('deletes a message left waiting beyond the time any job could answer it (its job lost, the sweep long past)', async () => {
    const phone = newPhone();
    const message = textMessage(phone, 'waiting for ever', { timestamp: nowSeconds(-9 * 86_400) });
    const posted = await app.post(
      notification(value({ contacts: [{ waId: phone, name: 'Kim' }], messages: [message] })),
    );
    expect(posted.status).toBe(200);
    // Its job lost nine days ago (the sweeper looks back 6 hours, a queue item lives 7 days, and
    // WhatsApp's 24-hour window has closed): no one will ever answer it.
    const nineDaysAgo = new Date(Date.now() - 9 * 86_400_000);
    await messages().updateOne(
      { _id: message.id },
      { $set: { receivedAt: nineDaysAgo, seqAt: nineDaysAgo } },
    );
    expect((await app.services.data.messages.getMessage(message.id))?.replyState).toBe('pending');
    await app.services.data.retention.deleteOlderThan(retentionCutoff(1, new Date()));
    expect(await messages().countDocuments({ _id: message.id })).toBe(0);
    await app.drain();
    expect(repliesTo(phone)).toBe(0);
  });
});
