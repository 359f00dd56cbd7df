// Unordered bulk writes as MongoDB and Cosmos DB run them: a write error (a duplicate key, which
// the data module reads as "already there" or "stale") stops nothing, every error is reported with
// its operation's index, and the counts cover the operations that ran. Checked on the suite's own
// server (the embedded FerretDB has a fix for this in its build: scripts/lib/ferretdb-patches.ts),
// then through the repositories that rely on it. Also: statuses leave inbound messages alone.
import { MongoBulkWriteError, type AnyBulkWriteOperation, type Collection } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDataStore, type DataStore, type OutboundRecord, type StatusUpdate } from '../../shared/data';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { importIdOf } from '../helpers/users';

interface Doc {
  _id: string;
  rank: number;
}

const WA_ID = '4915100000001';
let t: TestDatabase;
let store: DataStore;
/** The user the tests write for (imported first). */
let userId = '';
let seq = 0;
const key = (label: string) => `${label}-${++seq}`;

beforeAll(async () => {
  t = await testDatabase('unordered-bulk');
  store = createDataStore(t.db);
  await store.ensureIndexes();
  userId = await importIdOf(store, WA_ID);
  await store.maintenance.importUsers([
    { id: userId, waId: WA_ID, name: null, createdAt: new Date(), optedOut: false },
  ]);
});

afterAll(async () => {
  await t?.drop();
});

/** Runs an unordered bulk write and returns its result and write errors, thrown or not. */
async function unordered(collection: Collection<Doc>, ops: AnyBulkWriteOperation<Doc>[]) {
  try {
    return { result: await collection.bulkWrite(ops, { ordered: false }), errors: [] as number[] };
  } catch (error) {
    if (!(error instanceof MongoBulkWriteError)) throw error;
    const errors = [error.writeErrors].flat().map((e) => {
      expect(e.code).toBe(11000);
      return e.index;
    });
    return { result: error.result, errors };
  }
}

/** An upsert that only raises the rank: on a document already at or above it, a duplicate key. */
const raise = (_id: string, rank: number): AnyBulkWriteOperation<Doc> => ({
  updateOne: { filter: { _id, rank: { $lt: rank } }, update: { $set: { rank } }, upsert: true },
});

describe('the server', () => {
  it('runs every operation of an unordered bulk past duplicate keys and reports each one', async () => {
    const c = t.db.collection<Doc>(key('bulk'));
    await c.insertMany([
      { _id: 'high', rank: 5 },
      { _id: 'low', rank: 0 },
    ]);
    const { result, errors } = await unordered(c, [
      raise('high', 1), // 0: duplicate key
      raise('low', 2), // 1: modifies
      raise('new1', 1), // 2: upserts
      raise('high', 3), // 3: duplicate key
      raise('new2', 1), // 4: upserts
    ]);
    expect(errors).toEqual([0, 3]);
    expect(result.modifiedCount).toBe(1);
    expect(result.matchedCount).toBe(1);
    expect(result.upsertedCount).toBe(2);
    expect(result.upsertedIds).toEqual({ 2: 'new1', 4: 'new2' });
    const docs = await c.find({}).sort({ _id: 1 }).toArray();
    expect(docs).toEqual([
      { _id: 'high', rank: 5 },
      { _id: 'low', rank: 2 },
      { _id: 'new1', rank: 1 },
      { _id: 'new2', rank: 1 },
    ]);
  });

  it('still stops an ordered bulk at its first error', async () => {
    const c = t.db.collection<Doc>(key('ordered'));
    await c.insertOne({ _id: 'high', rank: 5 });
    const error = await c
      .bulkWrite([raise('a', 1), raise('high', 1), raise('b', 1)], { ordered: true })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(MongoBulkWriteError);
    expect([(error as MongoBulkWriteError).writeErrors].flat().map((e) => e.index)).toEqual([1]);
    expect((error as MongoBulkWriteError).result.upsertedIds).toEqual({ 0: 'a' });
    expect(await c.countDocuments({})).toBe(2);
  });
});

describe('the repositories', () => {
  const messages = () => t.db.collection<{ _id: string; status?: string }>('messages');
  const status = (waMessageId: string, s: StatusUpdate['status']): StatusUpdate => ({
    waMessageId,
    status: s,
    at: new Date(),
    recipient: WA_ID,
    error: s === 'failed' ? { code: 131026, title: 'Message undeliverable' } : null,
  });
  const outbound = (id: string, relatedId: string | null = null): OutboundRecord => ({
    id,
    waMessageId: id,
    userId,
    type: 'text',
    text: `answer ${id}`,
    status: 'sent',
    createdAt: new Date(),
    role: 'conversation',
    phoneNumberId: 'pn',
    relatedId,
    error: null,
    ai: null,
  });
  async function inbound(id: string, replyState: 'pending' | 'none' = 'pending') {
    const now = new Date();
    await store.messages.recordInbound({
      id,
      userId,
      type: 'text',
      text: 'hello',
      createdAt: now,
      receivedAt: now,
      phoneNumberId: 'pn',
      role: 'conversation',
      replyState,
      relatedId: null,
      rawJson: '{}',
    });
    const message = await store.messages.getMessage(id);
    if (!message) throw new Error('inbound message not stored');
    return message;
  }

  it('applies the statuses after a stale one, of this message and of others', async () => {
    const x = key('wamid.X');
    const y = key('wamid.Y');
    await store.messages.recordOutbound(outbound(x));
    await store.messages.recordOutbound(outbound(y));
    await store.messages.applyStatus(status(x, 'delivered'));
    const result = await store.messages.applyStatuses([
      status(x, 'sent'), // stale
      status(y, 'delivered'),
      status(y, 'read'),
    ]);
    expect(result).toEqual({ applied: 2, stale: 1, placeholders: [] });
    expect((await messages().findOne({ _id: x }))?.status).toBe('delivered');
    expect((await messages().findOne({ _id: y }))?.status).toBe('read');
  });

  it('settles the inbound message when one of its parts was already stored', async () => {
    const message = await inbound(key('wamid.in'));
    const parts = [0, 1, 2].map((i) => outbound(key(`wamid.part${i}`), message.id));
    await store.messages.recordOutbound(parts[1] as OutboundRecord);
    const settled = await store.messages.settleReply({
      inbound: message,
      parts,
      state: 'sent',
      error: null,
      read: true,
    });
    expect(settled.stored.map((p) => p.id)).toEqual([parts[0]?.id, parts[2]?.id]);
    expect(settled.settled).toBe(true);
    expect(await store.messages.getMessage(message.id)).toMatchObject({ replyState: 'sent', status: 'read' });
    for (const part of parts) expect(await store.messages.getMessage(part.id)).not.toBeNull();
  });

  it('leaves inbound messages alone: a status describes an outbound message', async () => {
    const message = await inbound(key('wamid.in'), 'none');
    for (const s of ['sent', 'delivered', 'read', 'failed'] as const)
      expect(await store.messages.applyStatus(status(message.id, s))).toBe('stale');
    const after = await messages().findOne({ _id: message.id });
    expect(after).toMatchObject({ status: 'received', statusRank: 0 });
    expect(after).not.toHaveProperty('failedUncounted');
    expect(after).not.toHaveProperty('statusTimes');

    // Among other statuses, in one write: the others still apply.
    const y = key('wamid.Y');
    await store.messages.recordOutbound(outbound(y));
    expect(await store.messages.applyStatuses([status(message.id, 'failed'), status(y, 'read')])).toEqual({
      applied: 1,
      stale: 1,
      placeholders: [],
    });
    expect((await messages().findOne({ _id: message.id }))?.status).toBe('received');
    expect((await messages().findOne({ _id: y }))?.status).toBe('read');

    // A status for a message not stored yet still leaves a placeholder (that the message joins:
    // webhook.test.ts), with nothing of the filter in it.
    const early = key('wamid.early');
    expect(await store.messages.applyStatus(status(early, 'delivered'))).toBe('applied');
    const placeholder = await messages().findOne({ _id: early });
    expect(placeholder).toMatchObject({ status: 'delivered', waMessageId: early });
    expect(placeholder).not.toHaveProperty('direction');
  });
});
