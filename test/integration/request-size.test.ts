// Cosmos DB refuses a write request over 2 MB (concepts-limits, Per-request limits), however many
// documents it carries; the driver splits a bulk write only at the message size the server announces. The
// data module's bulk writes (restore, migration, counters) are sent in parts under the limit, and
// of at most 1,000 operations (Cosmos DB's write batch, optimize-write-performance): the
// commands the driver really sends are checked against the rule, every document is written, and
// refused writes keep the caller's indexes across parts. Own client and checker, as in
// cosmos-check.test.ts, so the commands are looked at here.
import { randomBytes } from 'node:crypto';
import { MongoClient, type AnyBulkWriteOperation, type CommandStartedEvent, type Db } from 'mongodb';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDataStore } from '../../shared/data';
import { directAdapter } from '../../shared/data/adapter';
import { CLIENT_OPTIONS } from '../../shared/data/client';
import { BulkWriteFailure, Gateway } from '../../shared/data/gateway';
import { CommandChecker, MAX_REQUEST_BYTES, MAX_WRITE_BATCH, type CheckedCommand } from '../cosmos/rules';

interface Doc {
  _id: string;
  text: string;
}

let client: MongoClient;
let db: Db;
const seen: CheckedCommand[] = [];

beforeAll(async () => {
  client = new MongoClient(inject('mongoUri'), { ...CLIENT_OPTIONS, monitorCommands: true });
  client.on('commandStarted', (event: CommandStartedEvent) => seen.push(event));
  await client.connect();
  db = client.db(`t_request_size_${randomBytes(6).toString('hex')}`);
});

afterAll(async () => {
  await db.dropDatabase();
  await client.close();
});

/** `n` documents of 60 KB each: each far under 2 MB, 40 of them over it together. */
const docs = (prefix: string, n: number): Doc[] =>
  Array.from({ length: n }, (_, i) => ({
    _id: `${prefix}-${String(i).padStart(2, '0')}`,
    text: 'x'.repeat(60_000),
  }));

/** What `action` sent: the rules it broke, and the sizes of its write commands. */
async function sent(action: () => Promise<unknown>): Promise<{ broken: string[]; writes: number[] }> {
  seen.length = 0;
  await action().catch((error: unknown) => {
    if (!(error instanceof BulkWriteFailure)) throw error;
  });
  const checker = new CommandChecker();
  for (const command of seen) checker.check(command);
  const writes = seen
    .filter((c) => ['insert', 'update', 'delete'].includes(c.commandName))
    .map((c) => Buffer.byteLength(JSON.stringify(c.command)));
  return { broken: checker.violations.map((v) => `${v.rule} ${v.subject}`), writes };
}

it('a restore of 40 messages of 60 KB goes in requests under 2 MB, and writes them all', async () => {
  const store = createDataStore(db);
  const batch = docs('restored', 40);
  const { broken, writes } = await sent(() => store.maintenance.restoreDocuments('messages', batch));
  expect(broken).toEqual([]);
  expect(writes.length).toBeGreaterThan(1);
  for (const bytes of writes) expect(bytes).toBeLessThan(MAX_REQUEST_BYTES);
  expect(await db.collection<Doc>('messages').countDocuments({ _id: { $in: batch.map((d) => d._id) } })).toBe(
    40,
  );
});

it('a refused write keeps its index across parts: an ordered write stops there, an unordered one goes on', async () => {
  const gateway = new Gateway(db.collection<Doc>('parts'), directAdapter);
  const inserts = (prefix: string): AnyBulkWriteOperation<Doc>[] =>
    docs(prefix, 40).map((document) => ({ insertOne: { document } }));
  for (const ordered of [true, false]) {
    const prefix = ordered ? 'ordered' : 'unordered';
    await db.collection<Doc>('parts').insertOne({ _id: `${prefix}-35`, text: 'already there' });
    let failure: unknown;
    const { broken } = await sent(() =>
      gateway.bulkWrite(inserts(prefix), ordered).catch((error: unknown) => {
        failure = error;
        throw error;
      }),
    );
    expect(broken).toEqual([]);
    expect(failure).toBeInstanceOf(BulkWriteFailure);
    const { writeErrors, result } = failure as BulkWriteFailure;
    expect(writeErrors).toEqual([{ index: 35, code: 11000 }]);
    const stored = await db
      .collection<Doc>('parts')
      .find({ _id: { $regex: `^${prefix}-` } }, { projection: { _id: 1 } })
      .toArray();
    // ordered: 0..34 written, 35 refused, nothing after it; unordered: all but 35
    expect(result.insertedCount).toBe(ordered ? 35 : 39);
    expect(stored.length).toBe(ordered ? 36 : 40);
  }
});

it('a bulk write of 2,500 small documents goes in requests of at most 1,000, and a refused one keeps its index', async () => {
  const gateway = new Gateway(db.collection<Doc>('many'), directAdapter);
  const id = (i: number): string => `many-${String(i).padStart(4, '0')}`;
  await db.collection<Doc>('many').insertOne({ _id: id(1_500), text: 'already there' });
  const inserts: AnyBulkWriteOperation<Doc>[] = Array.from({ length: 2_500 }, (_, i) => ({
    insertOne: { document: { _id: id(i), text: 'x' } },
  }));
  let failure: unknown;
  seen.length = 0;
  await gateway.bulkWrite(inserts, false).catch((error: unknown) => {
    failure = error;
  });
  const checker = new CommandChecker();
  for (const command of seen) checker.check(command);
  expect(checker.violations.map((v) => `${v.rule} ${v.subject}`)).toEqual([]);
  const batches = seen
    .filter((c) => c.commandName === 'insert')
    .map((c) => (c.command['documents'] as unknown[]).length);
  expect(batches).toEqual([MAX_WRITE_BATCH, MAX_WRITE_BATCH, 500]);
  expect(failure).toBeInstanceOf(BulkWriteFailure);
  const { writeErrors, result } = failure as BulkWriteFailure;
  expect(writeErrors).toEqual([{ index: 1_500, code: 11000 }]);
  expect(result.insertedCount).toBe(2_499);
  expect(await db.collection<Doc>('many').countDocuments({})).toBe(2_500);
});
