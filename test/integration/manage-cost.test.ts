// Cost of the management pages on 100,000+ messages: one bounded, index-backed query per page,
// whatever the size of the collections (command monitoring on any server; explain on a real mongod).
import { MongoClient, type CommandStartedEvent, type Db, type Document } from 'mongodb';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDataStore } from '../../shared/data';
import { MessagesPageSchema, UsersPageSchema } from '../../shared/manage/schemas';
import { call, manageFixture, type ManageFixture } from '../helpers/manage-fixture';
import { collectionOf } from '../helpers/raw';
import { parseBody } from '../helpers/shapes';

const MESSAGES = 100_000;
const USERS = 2_000;
const HEAVY = 'u-heavy';
const PAGE = 50;

let f: ManageFixture;
let client: MongoClient;
/** The test's own handle on the database: seeding and explain (the app goes through its data module). */
let raw: Db;
const commands: CommandStartedEvent[] = [];

beforeAll(async () => {
  f = await manageFixture('manage_cost', (db) => {
    client = new MongoClient(db.uri, { monitorCommands: true });
    client.on('commandStarted', (event) => commands.push(event));
    raw = client.db(db.dbName);
    return createDataStore(raw);
  });
  const base = Date.UTC(2026, 0, 1);
  // Seeded in bulk, typed as the data module's documents (a drift of those fails to compile).
  const users = collectionOf(raw, 'users');
  const messages = collectionOf(raw, 'messages');
  const userDocs = Array.from({ length: USERS }, (_, i) => {
    const id = i === 0 ? HEAVY : `u-${String(i).padStart(5, '0')}`;
    return {
      _id: id,
      waId: `1555${String(i).padStart(7, '0')}`,
      bsuid: null,
      name: `User ${i}`,
      createdAt: new Date(base),
      lastMessageAt: new Date(base + (i % 500) * 60_000),
      lastMessagePreview: 'hi',
      lastMessageId: null,
      messageCount: 0,
      optedOut: false,
      welcomeSentAt: null,
      contextResetAt: null,
      searchKeys: ['user'],
    };
  });
  await users.insertMany(userDocs, { ordered: false });
  const batch = 10_000;
  for (let start = 0; start < MESSAGES; start += batch) {
    const docs = Array.from({ length: batch }, (_, j) => {
      const n = start + j;
      // Half the messages belong to one heavy user, the rest are spread over everyone.
      const userId = n % 2 === 0 ? HEAVY : (userDocs[n % USERS]?._id ?? HEAVY);
      return {
        _id: `wamid.cost.${n}`,
        userId,
        waMessageId: `wamid.cost.${n}`,
        direction: 'inbound' as const,
        type: 'text',
        text: `message ${n}`,
        status: 'received' as const,
        statusRank: 0,
        createdAt: new Date(base + Math.floor(n / 3) * 1_000),
        role: 'conversation' as const,
        terms: ['m', 'me', 'mes', 'message'],
      };
    });
    await messages.insertMany(docs, { ordered: false });
  }
}, 600_000);

afterAll(async () => {
  await client?.close();
  await f?.close();
}, 120_000);

const finds = (collection: string) =>
  commands.filter((c) => c.commandName === 'find' && c.command['find'] === collection);

async function isFerret(): Promise<boolean> {
  const info = await raw.admin().command({ buildInfo: 1 });
  return 'ferretdbVersion' in info;
}

/** Explains the very find command the app sent (a real mongod only: FerretDB's explain differs). */
async function examined(find: CommandStartedEvent | undefined): Promise<number> {
  const c = find?.command ?? {};
  const plan = await raw.command({
    explain: { find: c['find'], filter: c['filter'], sort: c['sort'], limit: c['limit'] },
    verbosity: 'executionStats',
  });
  return (plan['executionStats'] as { totalDocsExamined: number }).totalDocsExamined;
}

const indexesOf = (name: string) => raw.collection(name).listIndexes().toArray();

function hasIndex(indexes: Document[], keys: Record<string, 1>): boolean {
  return indexes.some((i) => JSON.stringify(i['key']) === JSON.stringify(keys));
}

it('seeds at least 100,000 messages', async () => {
  expect(await raw.collection('messages').estimatedDocumentCount()).toBeGreaterThanOrEqual(MESSAGES);
}, 120_000);

it('a users page is one bounded find backed by {lastMessageAt, _id}', async () => {
  commands.length = 0;
  const r = await call(f.handlers.users, { query: { limit: String(PAGE) } });
  expect(r.status).toBe(200);
  const page = parseBody(UsersPageSchema, r.body);
  expect(page.items).toHaveLength(PAGE);
  const userFinds = finds('users');
  expect(userFinds).toHaveLength(1);
  expect(userFinds[0]?.command['limit']).toBe(PAGE + 1);
  const sort = userFinds[0]?.command['sort'] as Map<string, number> | Record<string, number>;
  expect(sort instanceof Map ? [...sort] : Object.entries(sort)).toEqual([
    ['lastMessageAt', -1],
    ['_id', -1],
  ]);
  expect(finds('messages')).toHaveLength(0);
  expect(hasIndex(await indexesOf('users'), { lastMessageAt: 1, _id: 1 })).toBe(true);
  const firstPage = userFinds[0];
  // The next page is one bounded find too.
  commands.length = 0;
  const next = page.nextCursor ?? '';
  const second = await call(f.handlers.users, { query: { limit: String(PAGE), cursor: next } });
  expect(second.status).toBe(200);
  // The next page really moved on: no user of the first page again.
  const firstIds = new Set(page.items.map((u) => u.id));
  expect(parseBody(UsersPageSchema, second.body).items.filter((u) => firstIds.has(u.id))).toEqual([]);
  expect(finds('users')).toHaveLength(1);
  if (!(await isFerret())) expect(await examined(firstPage)).toBeLessThanOrEqual(PAGE + 1);
}, 120_000);

it('a conversation page is one bounded find backed by {userId, createdAt, _id}', async () => {
  commands.length = 0;
  const r = await call(f.handlers.userMessages, { params: { id: HEAVY }, query: { limit: String(PAGE) } });
  expect(r.status).toBe(200);
  const page = parseBody(MessagesPageSchema, r.body);
  expect(page.items).toHaveLength(PAGE);
  expect(page.items.every((m) => m.userId === HEAVY)).toBe(true);
  const messageFinds = finds('messages');
  expect(messageFinds).toHaveLength(1);
  expect(messageFinds[0]?.command['limit']).toBe(PAGE + 1);
  expect(messageFinds[0]?.command['filter']).toEqual({ userId: HEAVY });
  // The existence check of the user is a lookup by _id.
  expect(finds('users').map((c) => c.command['limit'])).toEqual([1]);
  expect(hasIndex(await indexesOf('messages'), { userId: 1, createdAt: 1, _id: 1 })).toBe(true);
  if (!(await isFerret())) {
    expect(await examined(messageFinds[0])).toBeLessThanOrEqual(PAGE + 1);
    // With a cursor (ties on createdAt) still bounded by the page size.
    commands.length = 0;
    await call(f.handlers.userMessages, {
      params: { id: HEAVY },
      query: { limit: String(PAGE), cursor: page.nextCursor ?? '' },
    });
    expect(await examined(finds('messages')[0])).toBeLessThanOrEqual(PAGE + 2);
  }
}, 120_000);

it('a search page is one bounded find: terms filtered by {terms}, sorted by {createdAt, _id}', async () => {
  commands.length = 0;
  const r = await call(f.handlers.messages, { query: { q: 'message', limit: String(PAGE) } });
  expect(r.status).toBe(200);
  expect(parseBody(MessagesPageSchema, r.body).items).toHaveLength(PAGE);
  const messageFinds = finds('messages');
  expect(messageFinds).toHaveLength(1);
  expect(messageFinds[0]?.command['limit']).toBe(PAGE + 1);
  const sort = messageFinds[0]?.command['sort'] as Map<string, number> | Record<string, number>;
  expect(sort instanceof Map ? [...sort] : Object.entries(sort)).toEqual([
    ['createdAt', -1],
    ['_id', -1],
  ]);
  const indexes = await indexesOf('messages');
  expect(hasIndex(indexes, { terms: 1 })).toBe(true);
  expect(hasIndex(indexes, { createdAt: 1, _id: 1 })).toBe(true);
  if (!(await isFerret())) expect(await examined(messageFinds[0])).toBeLessThanOrEqual(PAGE + 1);
}, 120_000);
