// The Cosmos DB rule check on real driver traffic: commands as the driver really sends them (sorts
// and index keys as Maps, createIndexes after inserts) are caught, compliant ones pass, and the
// sender is told apart by the stack. Uses its own client and checker so the violations it provokes
// stay out of this file's suite-wide check (test/cosmos/setup.ts).
import { randomBytes } from 'node:crypto';
import { MongoClient, type CommandStartedEvent, type Db } from 'mongodb';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { createDataStore } from '../../shared/data';
import { CLIENT_OPTIONS } from '../../shared/data/client';
import { withOrigin } from '../cosmos/origin';
import { CommandChecker, type CheckedCommand } from '../cosmos/rules';
import { collectionOf } from '../helpers/raw';

let client: MongoClient;
let db: Db;
const seen: CheckedCommand[] = [];

beforeAll(async () => {
  client = new MongoClient(inject('mongoUri'), { ...CLIENT_OPTIONS, monitorCommands: true });
  client.on(
    'commandStarted',
    withOrigin((event: CommandStartedEvent) => seen.push(event)),
  );
  await client.connect();
  db = client.db(`t_cosmos_check_${randomBytes(6).toString('hex')}`);
});

afterAll(async () => {
  await db.dropDatabase();
  await client.close();
});

/** The rules broken by the commands `action` sends. */
async function rulesBrokenBy(action: () => Promise<unknown>): Promise<string[]> {
  seen.length = 0;
  await action();
  const checker = new CommandChecker();
  for (const command of seen) checker.check(command);
  checker.checkIndexesAgainstArrays();
  return checker.violations.map((v) => `${v.rule} ${v.subject}`);
}

it('catches a sort without an index of exactly its paths, and passes one with it', async () => {
  const c = db.collection('sorted');
  expect(
    await rulesBrokenBy(async () => {
      await c.createIndex({ a: 1, b: 1 }, { name: 'a_b' });
      await c.find({}).sort({ a: -1, b: -1 }).toArray();
    }),
  ).toEqual([]);
  expect(
    await rulesBrokenBy(async () => {
      await c.createIndex({ a: 1, b: 1 }, { name: 'a_b' });
      await c.find({}).sort({ b: 1, a: 1 }).toArray();
    }),
  ).toEqual(['sort-compound-index sort {b:1,a:1} without a compound index of exactly these paths']);
});

it('catches a unique index created after documents, and a compound index over an array', async () => {
  const c = db.collection('filled');
  expect(
    await rulesBrokenBy(async () => {
      await c.insertOne({ h: 'x', tags: ['p', 'q'], at: new Date() });
      await c.createIndex({ h: 1 }, { name: 'h', unique: true });
      await c.createIndex({ tags: 1, at: 1 }, { name: 'tags_at' });
    }),
  ).toEqual([
    'unique-index-empty-collection unique index h {h:1} on a collection with documents',
    'compound-index-array index tags_at {tags:1,at:1} (array: tags)',
  ]);
});

it('tells the app’s commands from the test’s own', async () => {
  const store = createDataStore(db);
  seen.length = 0;
  await store.users.getUser('u_nobody');
  await collectionOf(db, 'users').findOne({ _id: 'u_nobody' });
  expect(seen.filter((c) => c.commandName === 'find').map((c) => c.origin)).toEqual(['app', 'test']);
});
