// Cosmos DB's throttling as its documentation and issue tracker describe it, on the suite's real
// server: a bulk write whose operations Cosmos DB throttled in part (write errors 16500, the other
// operations applied; MicrosoftDocs/azure-docs#69351), and the request time limit (error 50, also
// what Server Side Retry answers once it gives up). What Cosmos DB answers is built with the
// driver's own error classes; the writes that it applied are applied for real.
import {
  MongoBulkWriteError,
  MongoServerError,
  type AnyBulkWriteOperation,
  type BulkWriteResult,
  type Collection,
  type WriteError,
} from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runBulk, type BulkSender } from '../../shared/data/gateway';
import { translateError } from '../../shared/data/client';
import { AppError, ErrorCode } from '../../shared/errors';
import { testDatabase, type TestDatabase } from '../helpers/db';

interface Counter {
  _id: string;
  n?: number;
}

/** One write's error as the driver reports it (its class is exported as a type only). */
const writeError = (index: number, code: number, errmsg: string) => ({ index, code, errmsg }) as WriteError;

const THROTTLED_MESSAGE =
  "Error=16500, RetryAfterMs=1, Details='Response status code does not indicate success: TooManyRequests (429); Substatus: 3200; Reason: (Request rate is large. More Request Units may be needed, so no changes were made.)'";

let t: TestDatabase;
let counters: Collection<Counter>;

beforeAll(async () => {
  t = await testDatabase('cosmos-throttling');
  counters = t.db.collection<Counter>('stats');
});

afterAll(async () => {
  await t?.drop();
});

/**
 * A sender that answers its first call as Cosmos DB does when it throttles the operations at
 * `throttled` (indexes of that call): the others run for real (an ordered write stops at the
 * first throttled one), the throttled ones come back as write errors 16500. Later calls run as sent.
 */
function cosmosLike(throttled: readonly number[]): { send: BulkSender<Counter>; calls: number[] } {
  const calls: number[] = [];
  const send: BulkSender<Counter> = async (ops, ordered) => {
    calls.push(ops.length);
    if (calls.length > 1) return counters.bulkWrite(ops, { ordered });
    const stop = ordered ? Math.min(...throttled) : ops.length;
    const run = ops
      .map((op, index) => ({ op, index }))
      .filter((o) => o.index < stop && !throttled.includes(o.index));
    const done = run.length
      ? await counters.bulkWrite(
          run.map((o) => o.op),
          { ordered },
        )
      : null;
    const upsertedIds: Record<number, unknown> = {};
    for (const [at, id] of Object.entries(done?.upsertedIds ?? {}))
      upsertedIds[run[Number(at)]?.index ?? -1] = id;
    const result = {
      insertedCount: done?.insertedCount ?? 0,
      matchedCount: done?.matchedCount ?? 0,
      modifiedCount: done?.modifiedCount ?? 0,
      deletedCount: done?.deletedCount ?? 0,
      upsertedCount: done?.upsertedCount ?? 0,
      upsertedIds,
      insertedIds: {},
    } as unknown as BulkWriteResult;
    const writeErrors = (ordered ? [Math.min(...throttled)] : throttled).map((index) =>
      writeError(index, 16500, THROTTLED_MESSAGE),
    );
    throw new MongoBulkWriteError({ message: THROTTLED_MESSAGE, code: 16500, writeErrors }, result);
  };
  return { send, calls };
}

const inc = (id: string): AnyBulkWriteOperation<Counter> => ({
  updateOne: { filter: { _id: id }, update: { $inc: { n: 1 } }, upsert: true },
});

const stored = async (ids: string[]) =>
  Object.fromEntries((await counters.find({ _id: { $in: ids } }).toArray()).map((d) => [d._id, d.n]));

describe('a bulk write Cosmos DB throttled in part', () => {
  it('sends again only what an ordered write did not apply: every $inc counts once', async () => {
    const { send, calls } = cosmosLike([1]);
    const result = await runBulk([inc('o-a'), inc('o-b'), inc('o-c')], true, send);
    expect(await stored(['o-a', 'o-b', 'o-c'])).toEqual({ 'o-a': 1, 'o-b': 1, 'o-c': 1 });
    expect(calls).toEqual([3, 2]);
    expect(result.upsertedCount).toBe(3);
    expect(result.upsertedIds).toEqual({ 0: 'o-a', 1: 'o-b', 2: 'o-c' });
  });

  it('sends again only the throttled operations of an unordered write', async () => {
    const { send, calls } = cosmosLike([0, 2]);
    const result = await runBulk([inc('u-a'), inc('u-b'), inc('u-c'), inc('u-d')], false, send);
    expect(await stored(['u-a', 'u-b', 'u-c', 'u-d'])).toEqual({ 'u-a': 1, 'u-b': 1, 'u-c': 1, 'u-d': 1 });
    expect(calls).toEqual([4, 2]);
    expect(result.upsertedIds).toEqual({ 0: 'u-a', 1: 'u-b', 2: 'u-c', 3: 'u-d' });
  });

  it('reports a duplicate key beside throttled writes by its own index, once the rest is written', async () => {
    await counters.insertOne({ _id: 'd-b', n: 5 });
    const insert = (id: string): AnyBulkWriteOperation<Counter> => ({
      insertOne: { document: { _id: id, n: 1 } },
    });
    const { send } = cosmosLike([2]);
    const error = await runBulk(
      [insert('d-a'), insert('d-b'), insert('d-c')],
      false,
      async (ops, ordered) => {
        try {
          return await send(ops, ordered);
        } catch (e) {
          // The first answer also carries the duplicate key of d-b (the real insert of d-b failed
          // inside `send`, so the error is rebuilt with both, as Cosmos DB answers them together).
          if (!(e instanceof MongoBulkWriteError) || ops.length !== 3) throw e;
          const writeErrors = [
            writeError(1, 11000, 'E11000 duplicate key'),
            writeError(2, 16500, THROTTLED_MESSAGE),
          ];
          throw new MongoBulkWriteError({ message: 'E11000', code: 11000, writeErrors }, e.result);
        }
      },
    ).catch((e: unknown) => e);
    expect(error).toMatchObject({ name: 'BulkWriteFailure', writeErrors: [{ index: 1, code: 11000 }] });
    expect(await stored(['d-a', 'd-b', 'd-c'])).toEqual({ 'd-a': 1, 'd-b': 5, 'd-c': 1 });
  });
});

describe("Cosmos DB's request time limit", () => {
  it('is a transient THROTTLED error, not an odd item (Server Side Retry gave up, or 60 s ran out)', () => {
    const error = new MongoServerError({
      code: 50,
      codeName: 'ExceededTimeLimit',
      errmsg: 'Request timed out. Retries due to rate limiting: True.',
    });
    const translated = translateError(error);
    expect(translated).toBeInstanceOf(AppError);
    expect((translated as AppError).code).toBe(ErrorCode.THROTTLED);
  });
});
