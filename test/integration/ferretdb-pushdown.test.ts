// The embedded database's two fixes to how it finds rows (scripts/lib/ferretdb-patches.ts): lookups
// by `_id` use the `_id` index, and `_id` and plain string equalities reach SQL whatever else the
// filter holds.
// They may change how rows are found, never which documents match: the results here are MongoDB's.
import { existsSync } from 'node:fs';
import { MongoClient, type Collection, type Document } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFerretDb, type FerretDbServer } from '../../scripts/lib/ferretdb';
import { ensureFerretDb, ferretDbBinaryPath } from '../../scripts/lib/ferretdb-build';

interface Row {
  _id: string;
  userId?: unknown;
  state?: string;
  n?: number;
}

let server: FerretDbServer;
let client: MongoClient;
let rows: Collection<Row>;

const ROWS: Row[] = [
  { _id: 'a', userId: 'u1', state: 'pending', n: 1 },
  { _id: 'b', userId: ['u0', 'u1'], state: 'sent', n: 2 },
  { _id: 'c', userId: 'u2', state: 'pending', n: 3 },
  { _id: 'd', userId: 'ü1', state: 'pending', n: 4 },
  { _id: 'e', userId: { u1: true }, n: 5 },
  { _id: 'f', userId: 'say "u1" & <b>', n: 6 },
  { _id: 'g', n: 7 },
  { _id: 'h', userId: ['u3'], n: 8 },
];

const ids = async (filter: Document) => (await rows.find(filter).toArray()).map((row) => row._id).sort();

/** FerretDB's explain: whether SQL got a WHERE clause, and SQLite's plan. */
async function explain(filter: Document): Promise<{ filterPushdown: boolean; plan: string }> {
  const out = await client
    .db('pushdown')
    .command({ explain: { find: 'rows', filter }, verbosity: 'queryPlanner' });
  return {
    filterPushdown: out['filterPushdown'] === true,
    plan: JSON.stringify(out['queryPlanner']),
  };
}

beforeAll(async () => {
  const binary = ferretDbBinaryPath();
  if (!existsSync(binary)) await ensureFerretDb();
  server = await startFerretDb(binary, () => undefined);
  client = await new MongoClient(server.uri, { serverSelectionTimeoutMS: 5_000 }).connect();
  rows = client.db('pushdown').collection<Row>('rows');
  await rows.insertMany(ROWS);
  await rows.createIndex({ userId: 1, n: -1 });
}, 120_000);

afterAll(async () => {
  await client?.close();
  await server?.stop();
});

describe('the embedded database finds rows by key', () => {
  it('matches a plain string equality as MongoDB does, arrays that hold the value included', async () => {
    expect(await ids({ userId: 'u1' })).toEqual(['a', 'b']);
    expect(await ids({ userId: 'u2' })).toEqual(['c']);
    expect(await ids({ userId: 'nobody' })).toEqual([]);
    // Values the pre-filter leaves to FerretDB: non-ASCII, quotes, HTML characters.
    expect(await ids({ userId: 'ü1' })).toEqual(['d']);
    expect(await ids({ userId: 'say "u1" & <b>' })).toEqual(['f']);
    expect(await ids({ userId: ['u0', 'u1'] })).toEqual(['b']);
    expect(await ids({ userId: 'u3' })).toEqual(['h']);
    expect(await ids({ userId: 'u1', state: 'pending' })).toEqual(['a']);
  });

  it('keeps every condition next to an _id equality', async () => {
    expect(await ids({ _id: 'a', state: { $in: ['pending', 'sending'] } })).toEqual(['a']);
    expect(await ids({ _id: 'b', state: { $in: ['pending', 'sending'] } })).toEqual([]);
    expect(await ids({ _id: 'c', $or: [{ n: { $lt: 2 } }, { state: 'pending' }] })).toEqual(['c']);
    expect(await ids({ _id: 'g', userId: { $exists: false } })).toEqual(['g']);
    expect(await ids({ _id: 'a', userId: 'u2' })).toEqual([]);
  });

  it('updates, replaces and deletes only what the whole filter matches', async () => {
    const scratch = client.db('pushdown').collection<Row>('scratch');
    await scratch.insertMany(ROWS);
    expect((await scratch.updateOne({ _id: 'b', state: 'pending' }, { $set: { n: 0 } })).matchedCount).toBe(
      0,
    );
    expect((await scratch.updateOne({ _id: 'a', state: 'pending' }, { $set: { n: 0 } })).matchedCount).toBe(
      1,
    );
    expect((await scratch.updateMany({ userId: 'u1' }, { $inc: { n: 10 } })).modifiedCount).toBe(2);
    const locked = await scratch.findOneAndUpdate(
      { _id: 'c', $or: [{ state: { $exists: false } }, { state: 'pending' }] },
      { $set: { state: 'locked' } },
      { returnDocument: 'after' },
    );
    expect(locked?.state).toBe('locked');
    expect((await scratch.deleteOne({ _id: 'd', userId: 'u1' })).deletedCount).toBe(0);
    expect((await scratch.deleteMany({ userId: 'ü1' })).deletedCount).toBe(1);
    expect(
      (await scratch.find({}, { sort: { _id: 1 } }).toArray()).map((r) => [r._id, r.n, r.state ?? null]),
    ).toEqual([
      ['a', 10, 'pending'],
      ['b', 12, 'sent'],
      ['c', 3, 'locked'],
      ['e', 5, null],
      ['f', 6, null],
      ['g', 7, null],
      ['h', 8, null],
    ]);
  });

  it('looks an _id up in its index, with or without other conditions', async () => {
    for (const filter of [{ _id: 'a' }, { _id: 'a', state: { $in: ['pending'] } }]) {
      const { filterPushdown, plan } = await explain(filter);
      expect(filterPushdown).toBe(true);
      expect(plan).toMatch(/SEARCH .* USING INDEX/);
      expect(plan).not.toMatch(/SCAN/);
    }
  });

  it('hands a plain string equality to SQL, on the field’s index when there is one', async () => {
    const { filterPushdown, plan } = await explain({ userId: 'u1' });
    expect(filterPushdown).toBe(true);
    expect(plan).toMatch(/USING INDEX/);
    // Nothing to hand over: FerretDB reads the rows and filters them itself, as upstream does.
    expect((await explain({ n: { $gt: 2 } })).filterPushdown).toBe(false);
    expect((await explain({ userId: 'ü1' })).filterPushdown).toBe(false);
  });
});
