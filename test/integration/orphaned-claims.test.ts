// A crash between a claim and the write that records it (found by test/e2e/crash.test.ts) must not
// wedge a user's reply lock or a message's reply forever: once a lease old, the claim is skipped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataStore, ensureIndexes, type DataStore } from '../../shared/data';
import { testDatabase, type TestDatabase } from '../helpers/db';

let database: TestDatabase;
let data: DataStore;
const LEASE = 60_000;

beforeAll(async () => {
  database = await testDatabase('orphans');
  await ensureIndexes(database.db);
  data = createDataStore(database.db);
});
afterAll(async () => {
  await database?.drop();
});

const locks = () => database.db.collection<{ _id: string; createdAt: Date }>('locks');

describe('claims orphaned by a crash', () => {
  it('skips an old unrecorded reply-lock claim, but not a recent one', async () => {
    const { user } = await data.users.upsertFromContact(
      { waId: '447700900001', bsuid: null, name: null },
      new Date(),
    );
    await locks().insertOne({ _id: `reply-lock:${user.id}:1`, createdAt: new Date() });
    expect(await data.users.acquireReplyLock(user.id, 'w1', LEASE)).toBe(false);
    await locks().updateOne(
      { _id: `reply-lock:${user.id}:1` },
      { $set: { createdAt: new Date(Date.now() - 2 * LEASE) } },
    );
    expect(await data.users.acquireReplyLock(user.id, 'w1', LEASE)).toBe(true);
    // The lock is now really held: another worker waits.
    expect(await data.users.acquireReplyLock(user.id, 'w2', LEASE)).toBe(false);
  });

  it('skips an old unrecorded reply claim of a message, but not a recent one', async () => {
    const { user } = await data.users.upsertFromContact(
      { waId: '447700900002', bsuid: null, name: null },
      new Date(),
    );
    const now = new Date();
    await data.messages.recordInbound({
      id: 'wamid.orphan.1',
      userId: user.id,
      type: 'text',
      text: 'hi',
      createdAt: now,
      receivedAt: now,
      phoneNumberId: '1',
      role: 'conversation',
      replyState: 'pending',
      relatedId: null,
      raw: {},
    });
    await locks().insertOne({ _id: 'reply:wamid.orphan.1:1', createdAt: new Date() });
    expect(await data.messages.claimReply('wamid.orphan.1', LEASE)).toBeNull();
    await locks().updateOne(
      { _id: 'reply:wamid.orphan.1:1' },
      { $set: { createdAt: new Date(Date.now() - 2 * LEASE) } },
    );
    const claimed = await data.messages.claimReply('wamid.orphan.1', LEASE);
    expect(claimed?.replyState).toBe('sending');
    expect(await data.messages.claimReply('wamid.orphan.1', LEASE)).toBeNull();
  });
});
