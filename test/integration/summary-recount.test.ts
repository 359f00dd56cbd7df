// Rebuilding a user's summary from the stored messages (retention, the reply worker's recount, the
// health repair): one rule for which message is the latest, and a writer that notes a message
// while a rebuild runs is never set back.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { retentionCutoff } from '../../shared/data';
import { startTestApp, type TestApp } from '../helpers/app';
import { notification, textMessage, value } from '../helpers/meta';
import { storeWithWriterBefore } from '../helpers/interleave';
import { collectionOf } from '../helpers/raw';
import { operatorMessage } from '../helpers/records';
import { userIdOf } from '../helpers/users';

let app: TestApp;
let n = 0;
const newNumber = () => `44207111${String(++n).padStart(4, '0')}`;
const DAY = 86_400_000;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

const summaryOf = async (userId: string) => {
  const u = await app.services.data.users.getUser(userId);
  return { count: u?.messageCount, preview: u?.lastMessagePreview };
};
const storedCount = (userId: string) => collectionOf(app.database.db, 'messages').countDocuments({ userId });
const summaryProblems = async () => {
  const { maintenance } = app.services.data;
  return maintenance.checkSummaries(await maintenance.countStored());
};

describe('summary recount', () => {
  it('retention does not set a summary one short when a message is noted between its reads and its write', async () => {
    const { data } = app.services;
    const waId = newNumber();
    await app.userWrites(waId, 'hello there');
    const userId = await userIdOf(data, waId);
    const old = new Date(Date.now() - 40 * DAY);
    await data.messages.recordOutbound(operatorMessage(userId, 'wamid.retention-old', 'long ago', old));
    await data.stats.foldPending(); // retention deletes only what the counters hold
    expect(await summaryOf(userId)).toMatchObject({ count: 3 });

    // An operator's message is stored and noted (by the app's own store) after retention's recount
    // read the user's messages and before it writes the summary.
    const { store, ran } = storeWithWriterBefore(app.database.db, 'users', async () => {
      expect(
        await data.messages.recordOutbound(
          operatorMessage(userId, 'wamid.during-retention', 'written meanwhile'),
        ),
      ).toBe('inserted');
    });
    const result = await store.retention.deleteOlderThan(retentionCutoff(30, new Date()));
    expect(ran()).toBeGreaterThan(0);
    expect(result.deleted).toBeGreaterThanOrEqual(1);
    expect(await storedCount(userId)).toBe(3);
    expect(await summaryOf(userId)).toEqual({ count: 3, preview: 'written meanwhile' });
    expect(await summaryProblems()).toEqual([]);
  });

  it('the reply worker, retention and the health check take the same latest message when some lack seqAt', async () => {
    const { data } = app.services;
    const messages = collectionOf(app.database.db, 'messages');
    const latestOf = async (userId: string) => (await data.users.getUser(userId))?.lastMessagePreview;
    // Users an earlier version stored (messages without `seqAt`): the newer message has the
    // smaller id, so an order by `seqAt` then id takes the older one.
    const seedOld = async (waId: string) => {
      await app.userWrites(waId, 'today');
      const userId = await userIdOf(data, waId);
      await messages.deleteMany({ userId });
      const base = Date.now() - 5 * DAY;
      for (const [id, text, at] of [
        ['wamid.zz-older', 'older text', base],
        ['wamid.aa-newer', 'newer text', base + 60_000],
      ] as const)
        await messages.insertOne({
          _id: `${id}-${waId}`,
          userId,
          waMessageId: `${id}-${waId}`,
          direction: 'outbound',
          type: 'text',
          text,
          status: 'sent',
          statusRank: 1,
          createdAt: new Date(at),
          role: 'conversation',
          phoneNumberId: null,
          relatedId: null,
        });
      await collectionOf(app.database.db, 'users').updateOne(
        { _id: userId },
        { $set: { messageCount: 7, lastMessagePreview: 'stale', lastMessageId: 'stale' } },
      );
      return userId;
    };

    const byWorker = await seedOld(newNumber());
    await data.users.recountSummary(byWorker);
    expect(await summaryOf(byWorker)).toEqual({ count: 2, preview: 'newer text' });

    const byRepair = await seedOld(newNumber());
    await data.maintenance.repairSummaries([byRepair]);
    expect(await latestOf(byRepair)).toBe('newer text');

    expect(await summaryProblems()).toEqual([]);
  });

  it('an answer placed before a message stored while it was prepared does not become the preview', async () => {
    // The reply worker's clock a little behind ingest's (another instance; here one frozen clock,
    // against which ingest places the messages of one notification a millisecond apart): the
    // answer to the first message is placed before the second, which stays the latest.
    const at = new Date(Date.now() - 60_000);
    const frozen = await startTestApp(
      { MANAGE_API_TOKEN: 'manage-token-for-summary-recount-01' },
      { now: () => at },
    );
    try {
      const { data } = frozen.services;
      const waId = newNumber();
      // Meta's whole-second timestamps, not after our clock.
      const sent = { timestamp: String(Math.floor(at.getTime() / 1000) - 1) };
      await frozen.post(
        notification(value({ contacts: [{ waId }], messages: [textMessage(waId, 'hello', sent)] })),
      );
      await frozen.drain();
      const userId = await userIdOf(data, waId);
      await data.handoff.take(userId, 'Operator', at, 24); // the text below is not answered
      await frozen.post(
        notification(
          value({
            contacts: [{ waId }],
            messages: [textMessage(waId, 'start', sent), textMessage(waId, 'later text', sent)],
          }),
        ),
      );
      await frozen.drain();
      // Latest first, sorted here (Cosmos DB has no index for that sort: test/cosmos/rules.ts).
      const stored = (await collectionOf(frozen.database.db, 'messages').find({ userId }).toArray()).sort(
        (a, b) => Number(b.seqAt) - Number(a.seqAt) || String(b._id).localeCompare(String(a._id)),
      );
      expect(stored[0]).toMatchObject({ direction: 'inbound', text: 'later text' });
      expect(stored.some((m) => m.direction === 'outbound' && m.role === 'command')).toBe(true);
      const user = await data.users.getUser(userId);
      expect(user).toMatchObject({ lastMessageId: stored[0]!._id, lastMessagePreview: 'later text' });
      expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
    } finally {
      await frozen.close();
    }
  });

  it('a new user whose first message Meta dates after our clock still gets it as the latest message', async () => {
    const at = new Date(Date.now() - 60_000);
    const frozen = await startTestApp({}, { now: () => at });
    try {
      const { data } = frozen.services;
      const waId = newNumber();
      const ahead = { timestamp: String(Math.floor(at.getTime() / 1000) + 5) }; // Meta's clock ahead
      await frozen.post(
        notification(value({ contacts: [{ waId }], messages: [textMessage(waId, 'first', ahead)] })),
      );
      const userId = await userIdOf(data, waId);
      expect(await data.users.getUser(userId)).toMatchObject({
        lastMessagePreview: 'first',
        messageCount: 1,
      });
      await frozen.drain();
      expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
    } finally {
      await frozen.close();
    }
  });
});
