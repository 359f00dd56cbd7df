// The management API against a real database: auth rules, pagination, search, export, erase, errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_FAILURES_PER_MINUTE, hashToken } from '../../shared/manage/auth';
import { createToken } from '../../shared/manage/tokens';
import { foldCounts } from '../../shared/bot/sweeper';
import { openApiHandler } from '../../functions/openapi';
import { MAX_BODY_BYTES } from '../../shared/manage/routes';
import { cpuClock } from '../helpers/cpu';
import {
  ChatsSchema,
  ErrorSchema,
  ExportSchema,
  MessagesPageSchema,
  StatsSchema,
  UserSchema,
  UsersPageSchema,
  type UserJson,
} from '../../shared/manage/schemas';
import {
  MAX_EXPORT_BYTES,
  MAX_EXPORT_EVENTS,
  MAX_EXPORT_MESSAGES,
  type ImportedMessage,
} from '../../shared/data';
import {
  BOOTSTRAP,
  answersOf,
  call,
  manageFixture,
  seedUser,
  type ManageFixture,
} from '../helpers/manage-fixture';
import { checkExchange } from '../helpers/openapi-check';
import { collectionOf } from '../helpers/raw';
import { parseBody } from '../helpers/shapes';
import { operatorMessage } from '../helpers/records';
import { storeWithWriterBefore } from '../helpers/interleave';

let f: ManageFixture;
const now = Date.now();
const hoursAgo = (h: number) => new Date(now - h * 3_600_000);
let ana: { userId: string; messageIds: string[] };
let bob: { userId: string; messageIds: string[] };

beforeAll(async () => {
  f = await manageFixture('manage_api');
  ana = await seedUser(f.data, {
    waId: '34600111222',
    name: 'Ana Café',
    start: hoursAgo(2),
    texts: ['Hola, un café por favor', 'Claro', 'Gracias <script>alert(1)</script>', 'De nada'],
    ai: true,
  });
  bob = await seedUser(f.data, {
    waId: '4915100000',
    name: 'Bob Builder',
    start: hoursAgo(50),
    texts: ['Can we fix it?', 'Yes we can', 'Great'],
    failedLast: false,
  });
  // Users whose last activity ties, to check the id tie-break.
  const tie = hoursAgo(100);
  for (let i = 0; i < 5; i++)
    await seedUser(f.data, { waId: `1555000000${i}`, name: `Tie ${i}`, start: tie, texts: ['same time'] });
  // A status for a message never stored leaves a placeholder that must not appear anywhere.
  await f.data.messages.applyStatus({
    waMessageId: 'wamid.orphan',
    status: 'delivered',
    at: new Date(),
    recipient: null,
    error: null,
  });
});

afterAll(async () => {
  await f?.close();
});

describe('authentication', () => {
  it('answers 401 without a token or with an unknown one', async () => {
    const missing = await call(f.handlers.stats, { token: null });
    expect(missing.status).toBe(401);
    expect(parseBody(ErrorSchema, missing.body).error.code).toBe('UNAUTHORIZED');
    expect((await call(f.handlers.stats, { token: 'nope-nope-nope' })).status).toBe(401);
  });

  // The contract's figure, written out: the test must fail if the constant drifts from it.
  const LIMIT = 10;

  it('answers 429 with Retry-After to a client after 10 failed authentications in a minute, and only to it', async () => {
    expect(MAX_FAILURES_PER_MINUTE).toBe(LIMIT);
    const guesser = { 'x-forwarded-for': '203.0.113.7:50123' };
    for (let i = 0; i < LIMIT; i++) {
      expect((await call(f.handlers.stats, { token: `guess-${i}`, headers: guesser })).status).toBe(401);
    }
    // Even a good token: the client is over the limit for this minute.
    const blocked = await call(f.handlers.stats, { token: BOOTSTRAP, headers: guesser });
    expect(blocked.status).toBe(429);
    expect(blocked.body).toMatchObject({ error: { code: 'TOO_MANY_REQUESTS' } });
    // Seconds until the minute that began with the first failure ends.
    const retryAfter = Number(blocked.headers['retry-after']);
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    // Another port of the same address is the same client.
    const samePlace = { 'x-forwarded-for': '203.0.113.7:50999' };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers: samePlace })).status).toBe(429);
    const other = { 'x-forwarded-for': '198.51.100.1' };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers: other })).status).toBe(200);
  });

  it('counts the address the front end appended: a caller can neither dodge the limit nor lock out another', async () => {
    // The caller writes what it likes before the entry Azure's front end appends (the last one).
    const victim = '192.0.2.44';
    for (let i = 0; i < LIMIT; i++) {
      const headers = { 'x-forwarded-for': `${victim}, 10.0.${i}.1, 198.51.100.200:${40_000 + i}` };
      expect((await call(f.handlers.stats, { token: `spoof-${i}`, headers })).status).toBe(401);
    }
    const fresh = { 'x-forwarded-for': `203.0.113.250, 198.51.100.200:41000` };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers: fresh })).status).toBe(429);
    // The address named first by the guesser is not blocked when it calls for itself.
    const own = { 'x-forwarded-for': `${victim}:51234` };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers: own })).status).toBe(200);
  });

  it('counts an IPv6 client by its /64 network: rotating addresses within it does not dodge the limit', async () => {
    // One subscriber is given at least a /64 (2^64 addresses): counted per address, every guess
    // could come from a fresh one, and 10,000 of them fill the limiter, which then counts no one.
    for (let i = 0; i < LIMIT; i++) {
      const headers = { 'x-forwarded-for': `[2001:db8:7:1::${(i + 1).toString(16)}]:${50_000 + i}` };
      expect((await call(f.handlers.stats, { token: `v6-guess-${i}`, headers })).status).toBe(401);
    }
    for (const address of [
      '[2001:db8:7:1:ffff:0:0:9]:443',
      '2001:0db8:0007:0001::abcd',
      '[2001:DB8:7:1::1%eth0]',
    ]) {
      const headers = { 'x-forwarded-for': address };
      expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers })).status).toBe(429);
    }
    // Another /64, even next door, is another client.
    const neighbour = { 'x-forwarded-for': '[2001:db8:7:2::1]:443' };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers: neighbour })).status).toBe(200);
  });

  it('counts an IPv4-mapped IPv6 address as the IPv4 address it is', async () => {
    for (let i = 0; i < LIMIT; i++) {
      const headers = { 'x-forwarded-for': i % 2 ? '[::ffff:203.0.113.99]:1234' : '203.0.113.99:4321' };
      expect((await call(f.handlers.stats, { token: `mapped-${i}`, headers })).status).toBe(401);
    }
    const headers = { 'x-forwarded-for': '[::ffff:203.0.113.99]:80' };
    expect((await call(f.handlers.stats, { token: BOOTSTRAP, headers })).status).toBe(429);
    // Other IPv4 addresses are other clients, mapped or not.
    for (const address of ['203.0.113.98', '[::ffff:203.0.113.100]:80']) {
      expect(
        (await call(f.handlers.stats, { token: BOOTSTRAP, headers: { 'x-forwarded-for': address } })).status,
      ).toBe(200);
    }
  });

  it('accepts MANAGE_API_TOKEN and created tokens, recording their last use', async () => {
    expect((await call(f.handlers.stats, { token: BOOTSTRAP })).status).toBe(200);
    const { token, record } = await createToken(f.data, { name: 'ops', expiresDays: 30, now: new Date() });
    expect((await f.data.tokens.findByHash(hashToken(token)))?.id).toBe(record.id);
    expect((await call(f.handlers.stats, { token })).status).toBe(200);
    const [stored] = (await f.data.tokens.list()).filter((t) => t.id === record.id);
    expect(stored?.lastUsedAt).toBeInstanceOf(Date);
    // Only the hash is stored: the document as written, never the token itself.
    const raw = await collectionOf(f.db.db, 'tokens').findOne({ _id: record.id });
    expect(raw).toMatchObject({ name: 'ops', hash: hashToken(token) });
    expect(JSON.stringify(raw)).not.toContain(token);
  });

  it('answers 403 for revoked and expired tokens', async () => {
    const revoked = await createToken(f.data, { name: 'old', expiresDays: null, now: new Date() });
    expect(await f.data.tokens.revoke(revoked.record.id, new Date())).toBe(true);
    const r = await call(f.handlers.stats, { token: revoked.token });
    expect(r.status).toBe(403);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('FORBIDDEN');
    const expired = await createToken(f.data, {
      name: 'short',
      expiresDays: 1,
      now: new Date(now - 2 * 86_400_000),
    });
    expect((await call(f.handlers.stats, { token: expired.token })).status).toBe(403);
    expect(await f.data.tokens.revoke('no-such-id', new Date())).toBe(false);
  });
});

describe('queries', () => {
  it('lists users newest activity first with ties broken by id, through cursors', async () => {
    const seen: UserJson[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await call(f.handlers.users, { query: { limit: '2', ...(cursor ? { cursor } : {}) } });
      expect(r.status).toBe(200);
      const page = parseBody(UsersPageSchema, r.body);
      expect(page.items.length).toBeLessThanOrEqual(2);
      seen.push(...page.items);
      cursor = page.nextCursor;
      pages++;
    } while (cursor && pages < 10);
    expect(seen).toHaveLength(7);
    expect(new Set(seen.map((u) => u.id)).size).toBe(7);
    // Newest activity first, then the higher id: ISO times of one length compare as text.
    const keys = seen.map((u) => `${u.lastMessageAt ?? 'none'} ${u.id}`);
    expect(keys.every((k) => !k.startsWith('none'))).toBe(true);
    expect(keys).toEqual([...keys].sort().reverse());
    expect(seen[0]).toMatchObject({ id: ana.userId, waId: '34600111222', name: 'Ana Café', messageCount: 4 });
  });

  it('finds users by the start of a number or of a name word', async () => {
    const q = async (value: string) =>
      parseBody(UsersPageSchema, (await call(f.handlers.users, { query: { q: value } })).body).items.map(
        (u) => u.id,
      );
    expect(await q('cafe')).toEqual([ana.userId]);
    expect(await q('BUI')).toEqual([bob.userId]);
    expect(await q('49151')).toEqual([bob.userId]);
    expect(await q('+3460')).toEqual([ana.userId]);
    expect(await q('tie')).toHaveLength(5);
    expect(await q('zzz')).toEqual([]);
    const first = parseBody(
      UsersPageSchema,
      (await call(f.handlers.users, { query: { q: 'tie', limit: '3' } })).body,
    );
    expect(first.items).toHaveLength(3);
    const rest = parseBody(
      UsersPageSchema,
      (await call(f.handlers.users, { query: { q: 'tie', limit: '3', cursor: first.nextCursor ?? '' } }))
        .body,
    );
    expect(rest.items).toHaveLength(2);
    expect(rest.nextCursor).toBeNull();
  });

  it('returns one user, or 404', async () => {
    expect(
      parseBody(UserSchema, (await call(f.handlers.user, { params: { id: bob.userId } })).body),
    ).toMatchObject({
      id: bob.userId,
      name: 'Bob Builder',
    });
    const missing = await call(f.handlers.user, { params: { id: 'nobody' } });
    expect(missing.status).toBe(404);
    expect(parseBody(ErrorSchema, missing.body).error.code).toBe('NOT_FOUND');
  });

  it("pages a user's messages newest first", async () => {
    const first = parseBody(
      MessagesPageSchema,
      (await call(f.handlers.userMessages, { params: { id: ana.userId }, query: { limit: '3' } })).body,
    );
    expect(first.items.map((m) => m.id)).toEqual([...ana.messageIds].reverse().slice(0, 3));
    expect(first.items[0]).toMatchObject({ direction: 'outbound', status: 'sent', text: 'De nada' });
    // The cursor goes in a URL (request logs keep it): the wamid it points at, which holds the
    // sender's number, is not readable in it.
    const lastOfPage = first.items.at(-1)?.id ?? '';
    expect(Buffer.from(first.nextCursor ?? '', 'base64url').toString('latin1')).not.toContain(lastOfPage);
    const second = parseBody(
      MessagesPageSchema,
      (
        await call(f.handlers.userMessages, {
          params: { id: ana.userId },
          query: { limit: '3', cursor: first.nextCursor ?? '' },
        })
      ).body,
    );
    expect(second.items.map((m) => m.id)).toEqual([ana.messageIds[0]]);
    expect(second.nextCursor).toBeNull();
    expect((await call(f.handlers.userMessages, { params: { id: 'nobody' } })).status).toBe(404);
  });

  it('lists the latest chats with their last message', async () => {
    const r = parseBody(ChatsSchema, (await call(f.handlers.chats, { query: { limit: '2' } })).body);
    expect(r.items.map((c) => c.user.id)).toEqual([ana.userId, bob.userId]);
    expect(r.items.map((c) => c.lastMessage?.text)).toEqual(['De nada', 'Great']);
  });

  it('searches word prefixes ignoring case and accents, newest first, never placeholders', async () => {
    const s = async (q: string, limit = '50') =>
      parseBody(MessagesPageSchema, (await call(f.handlers.messages, { query: { q, limit } })).body);
    expect((await s('cafe')).items.map((m) => m.text)).toEqual(['Hola, un café por favor']);
    expect((await s('CAF hol')).items).toHaveLength(1);
    expect((await s('script')).items.map((m) => m.text)).toEqual(['Gracias <script>alert(1)</script>']);
    expect((await s('fix can')).items.map((m) => m.text)).toEqual(['Can we fix it?']);
    const same = await s('same', '2');
    expect(same.items).toHaveLength(2);
    const more = parseBody(
      MessagesPageSchema,
      (await call(f.handlers.messages, { query: { q: 'same', limit: '2', cursor: same.nextCursor ?? '' } }))
        .body,
    );
    expect(more.items).toHaveLength(2);
    const ids = [...same.items, ...more.items].map((m) => m.id);
    expect(new Set(ids).size).toBe(4);
    expect(ids).not.toContain('wamid.orphan');
  });

  it('searches users and messages with the words in a POST body, so that no URL holds them', async () => {
    const users = async (body: unknown) => call(f.handlers.users, { method: 'POST', body });
    const ids = async (body: unknown) =>
      parseBody(UsersPageSchema, (await users(body)).body).items.map((u) => u.id);
    expect(await ids({ q: '+49 151' })).toEqual([bob.userId]);
    expect(await ids({ q: 'CAFE' })).toEqual([ana.userId]);
    const first = parseBody(UsersPageSchema, (await users({ q: 'tie', limit: 3 })).body);
    expect(first.items).toHaveLength(3);
    const rest = parseBody(
      UsersPageSchema,
      (await users({ q: 'tie', limit: 3, cursor: first.nextCursor ?? '' })).body,
    );
    expect(rest.items).toHaveLength(2);
    expect(new Set([...first.items, ...rest.items].map((u) => u.id)).size).toBe(5);

    const messages = async (body: unknown) => call(f.handlers.messages, { method: 'POST', body });
    const found = parseBody(MessagesPageSchema, (await messages({ q: 'cafe' })).body);
    expect(found.items.map((m) => m.text)).toEqual(['Hola, un café por favor']);
    const same = parseBody(MessagesPageSchema, (await messages({ q: 'same', limit: 2 })).body);
    const more = parseBody(
      MessagesPageSchema,
      (await messages({ q: 'same', limit: 2, cursor: same.nextCursor ?? '' })).body,
    );
    expect(new Set([...same.items, ...more.items].map((m) => m.id)).size).toBe(4);

    // Bad bodies are a 400 naming the field, as the query parameters are.
    const bad: [typeof users, unknown, string][] = [
      [users, {}, '"q"'],
      [users, { q: 'ana', limit: '5' }, '"limit"'],
      [users, { q: 'ana', limit: 201 }, '"limit"'],
      [users, { q: 'ana', cursor: 'garbage' }, 'body field "cursor"'],
      [users, { q: 'ana', extra: 1 }, '"extra"'],
      [messages, { q: '!!' }, '"q"'],
      [messages, { q: 'cafe', limit: 1.5 }, '"limit"'],
    ];
    for (const [send, body, name] of bad) {
      const r = await send(body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining(name),
      });
    }
  });

  it('takes an empty value as an absent one, as a client of `?limit=&cursor=&q=` may send it', async () => {
    const ok = async (
      handler: typeof f.handlers.users,
      query: Record<string, string | readonly string[]>,
      body?: unknown,
    ) => {
      const r = await call(handler, {
        query,
        params: { id: ana.userId },
        ...(body === undefined ? {} : { method: 'POST', body }),
      });
      expect(r.status, JSON.stringify({ query, body, answer: r.body })).toBe(200);
      return r.body;
    };
    // Empty limit: the default 50; empty cursor: the first page; empty q: no filter.
    expect(await ok(f.handlers.users, { limit: '', cursor: '', q: '' })).toEqual(
      await ok(f.handlers.users, {}),
    );
    expect(await ok(f.handlers.userMessages, { limit: '', cursor: '' })).toEqual(
      await ok(f.handlers.userMessages, {}),
    );
    expect(await ok(f.handlers.chats, { limit: '', cursor: '', state: '' })).toEqual(
      await ok(f.handlers.chats, {}),
    );
    expect(await ok(f.handlers.chats, { state: 'waiting', limit: '', cursor: '' })).toEqual(
      await ok(f.handlers.chats, { state: 'waiting' }),
    );
    expect(await ok(f.handlers.messages, { q: 'same', limit: '', cursor: '' })).toEqual(
      await ok(f.handlers.messages, { q: 'same' }),
    );
    expect(await ok(f.handlers.users, {}, { q: 'tie', limit: '', cursor: '' })).toEqual(
      await ok(f.handlers.users, {}, { q: 'tie' }),
    );
    expect(await ok(f.handlers.messages, {}, { q: 'same', limit: '', cursor: '' })).toEqual(
      await ok(f.handlers.messages, {}, { q: 'same' }),
    );
    // The first page with an empty cursor leads on to the second as any first page does.
    const first = (await ok(f.handlers.users, { limit: '3', cursor: '' })) as { nextCursor: string };
    const second = (await ok(f.handlers.users, { limit: '3', cursor: first.nextCursor })) as {
      items: unknown[];
    };
    expect(second.items).toHaveLength(3);

    // A search needs its words: an empty q is a missing one. Given twice is still refused.
    const refused: [typeof f.handlers.users, Record<string, string | string[]>, unknown, string][] = [
      [f.handlers.messages, { q: '' }, undefined, '"q"'],
      [f.handlers.messages, {}, { q: '' }, '"q"'],
      [f.handlers.users, {}, { q: '' }, '"q"'],
      [f.handlers.users, { limit: ['', '5'] }, undefined, '"limit"'],
      [f.handlers.users, { cursor: ['', ''] }, undefined, '"cursor"'],
      [f.handlers.messages, { q: ['', 'same'] }, undefined, '"q"'],
    ];
    for (const [handler, query, body, name] of refused) {
      const r = await call(handler, { query, ...(body === undefined ? {} : { method: 'POST', body }) });
      expect(r.status, JSON.stringify({ query, body })).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining(name),
      });
    }
  });

  it('takes "cursor": null in a search body as the first page, as the API writes the nextCursor of a last page', async () => {
    const post = async (handler: typeof f.handlers.users, body: Record<string, unknown>) => {
      const r = await call(handler, { method: 'POST', body });
      expect(r.status, JSON.stringify({ body, answer: r.body })).toBe(200);
      return r.body as { items: { id: string }[]; nextCursor: string | null };
    };
    expect(await post(f.handlers.users, { q: 'tie', cursor: null })).toEqual(
      await post(f.handlers.users, { q: 'tie' }),
    );
    expect(await post(f.handlers.messages, { q: 'same', cursor: null })).toEqual(
      await post(f.handlers.messages, { q: 'same' }),
    );
    // A client's loop that starts from null and stops at the null the API answers reads every page.
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page = await post(f.handlers.users, { q: 'tie', limit: 2, cursor });
      seen.push(...page.items.map((u) => u.id));
      cursor = page.nextCursor;
    } while (cursor !== null);
    expect(seen).toEqual((await post(f.handlers.users, { q: 'tie', limit: 200 })).items.map((u) => u.id));
    // null is no cursor only: a null q or limit is still refused, naming the field.
    for (const [body, name] of [
      [{ q: null }, '"q"'],
      [{ q: 'tie', limit: null }, '"limit"'],
    ] as const) {
      const r = await call(f.handlers.users, { method: 'POST', body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error.message).toContain(name);
    }
  });

  it('answers 400 naming the bad parameter', async () => {
    for (const limit of ['0', '201', 'abc', '1.5', '1e2', '0x10', '+5', ' 5', '5 ']) {
      const r = await call(f.handlers.users, { query: { limit } });
      expect(r.status).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining('limit'),
      });
    }
    const cursor = await call(f.handlers.users, { query: { cursor: 'garbage' } });
    expect(cursor.status).toBe(400);
    expect(parseBody(ErrorSchema, cursor.body).error.message).toContain('cursor');
    const q = await call(f.handlers.messages, {});
    expect(q.status).toBe(400);
    expect(parseBody(ErrorSchema, q.body).error.message).toContain('"q"');
    expect((await call(f.handlers.messages, { query: { q: '!!' } })).status).toBe(400);
  });

  it('answers 400 naming a parameter given twice, and takes plain digits', async () => {
    const cases: [typeof f.handlers.users, Record<string, string[]>, string][] = [
      [f.handlers.users, { limit: ['5', '7'] }, 'limit'],
      [f.handlers.users, { q: ['ana', 'bob'] }, 'q'],
      [f.handlers.messages, { q: ['cafe', 'tie'] }, 'q'],
      [f.handlers.userMessages, { limit: ['1', '1'] }, 'limit'],
      [f.handlers.chats, { state: ['waiting', 'waiting'] }, 'state'],
    ];
    for (const [handler, query, name] of cases) {
      const r = await call(handler, { query, params: { id: bob.userId } });
      expect(r.status, JSON.stringify(query)).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining(`"${name}"`),
      });
    }
    const digits = await call(f.handlers.users, { query: { limit: '002' } });
    expect(parseBody(UsersPageSchema, digits.body).items).toHaveLength(2);
  });

  it('answers 400 to a cursor of another list or another search, which would skip or repeat items', async () => {
    const nextOf = async (
      handler: typeof f.handlers.users,
      query: Record<string, string>,
      body?: unknown,
    ) => {
      const r = await call(handler, {
        query,
        params: { id: ana.userId },
        ...(body === undefined ? {} : { method: 'POST', body }),
      });
      expect(r.status).toBe(200);
      const next = (r.body as { nextCursor: string | null }).nextCursor;
      if (!next) throw new Error('expected another page');
      return next;
    };
    const users = await nextOf(f.handlers.users, { limit: '1' });
    const anaMessages = await nextOf(f.handlers.userMessages, { limit: '1' });
    const same = await nextOf(f.handlers.messages, { q: 'same', limit: '1' });
    const refused: [typeof f.handlers.users, Record<string, string>, string][] = [
      [f.handlers.userMessages, { cursor: users }, ana.userId],
      [f.handlers.userMessages, { cursor: anaMessages }, bob.userId],
      [f.handlers.users, { cursor: anaMessages }, ana.userId],
      [f.handlers.users, { cursor: users, q: 'tie' }, ana.userId],
      [f.handlers.messages, { cursor: users, q: 'same' }, ana.userId],
      [f.handlers.messages, { cursor: same, q: 'time' }, ana.userId],
      [f.handlers.chats, { cursor: users, state: 'waiting' }, ana.userId],
    ];
    for (const [handler, query, id] of refused) {
      const r = await call(handler, { query, params: { id } });
      expect(r.status, JSON.stringify(query)).toBe(400);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'INVALID_INPUT',
        message: expect.stringContaining('"cursor"'),
      });
    }
    // The same search by GET and by POST is one list: its cursors serve both.
    const posted = await call(f.handlers.messages, {
      method: 'POST',
      body: { q: 'same', limit: 1, cursor: same },
    });
    expect(posted.status).toBe(200);
    const byPost = await nextOf(f.handlers.users, {}, { q: 'tie', limit: 1 });
    expect((await call(f.handlers.users, { query: { q: 'tie', cursor: byPost } })).status).toBe(200);
  });

  it('answers 400 naming cursor on the latest chats, which have no pages', async () => {
    const r = await call(f.handlers.chats, { query: { cursor: 'abc' } });
    expect(r.status).toBe(400);
    expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
      code: 'INVALID_INPUT',
      message: expect.stringContaining('"cursor"'),
    });
    // With state=waiting the cursor is the page's: a bad one is still named.
    const waiting = await call(f.handlers.chats, { query: { state: 'waiting', cursor: 'abc' } });
    expect(parseBody(ErrorSchema, waiting.body).error.message).toContain('"cursor"');
    expect((await call(f.handlers.chats, { query: { state: 'waiting' } })).status).toBe(200);
  });
});

describe('stats, export and erase', () => {
  it('reports counters, users and a 30-day series', async () => {
    // The series ends on the server's day: the one before the call or, across midnight UTC, after.
    const today = () => new Date().toISOString().slice(0, 10);
    const dayBefore = today();
    const s = parseBody(StatsSchema, (await call(f.handlers.stats)).body);
    const days = [dayBefore, today()];
    expect(s.users).toEqual({ total: 7, optedOut: 0, active24h: 1 });
    expect(s.messages).toEqual({ total: 12, inbound: 9, outbound: 3, failed: 0 });
    expect(s.messages.inbound + s.messages.outbound).toBe(s.messages.total);
    expect(s.ai).toEqual({ requests: 2, tokens: 20, models: [{ model: 'm', requests: 2, tokens: 20 }] });
    expect(s.daily).toHaveLength(30);
    expect(days).toContain(s.daily[29]?.date);
    const sum = s.daily.reduce((n, d) => n + d.inbound + d.outbound, 0);
    expect(sum).toBe(12);
  });

  it('exports a user with messages oldest first and records the audit entry', async () => {
    const r = await call(f.handlers.userExport, { params: { id: ana.userId } });
    expect(r.status).toBe(200);
    const body = parseBody(ExportSchema, r.body);
    expect(body.user.id).toBe(ana.userId);
    expect(body.messages.map((m) => m.id)).toEqual(ana.messageIds);
    expect(body.events).toEqual([]);
    expect(body.truncated).toBe(false);
    const trail = await f.data.personal.auditTrail();
    expect(trail.some((e) => e.reason === 'export' && e.userId === ana.userId)).toBe(true);
    expect(trail.find((e) => e.reason === 'export')?.payload).toMatchObject({
      tokenName: 'MANAGE_API_TOKEN',
      action: 'export',
    });
    expect((await call(f.handlers.userExport, { params: { id: 'nobody' } })).status).toBe(404);
  });

  it('erases a user, their messages and events, and lowers the counters', async () => {
    await f.data.events.archive({
      kind: 'dead-letter',
      reason: 'test',
      payload: {},
      userId: ana.userId,
      at: new Date(),
    });
    const { token } = await createToken(f.data, { name: 'eraser', expiresDays: null, now: new Date() });
    const before = parseBody(StatsSchema, (await call(f.handlers.stats)).body);
    const r = await call(f.handlers.user, { method: 'DELETE', params: { id: ana.userId }, token });
    expect(r.status).toBe(204);
    expect((await call(f.handlers.user, { params: { id: ana.userId } })).status).toBe(404);
    expect((await call(f.handlers.user, { method: 'DELETE', params: { id: ana.userId } })).status).toBe(404);
    expect(await f.db.db.collection('messages').countDocuments({ userId: ana.userId })).toBe(0);
    expect(
      await f.db.db.collection('events').countDocuments({ userId: ana.userId, kind: { $ne: 'audit' } }),
    ).toBe(0);
    const after = parseBody(StatsSchema, (await call(f.handlers.stats)).body);
    expect(after.users.total).toBe(before.users.total - 1);
    expect(after.messages).toEqual({ total: 8, inbound: 7, outbound: 1, failed: 0 });
    expect(after.ai).toEqual({ requests: 0, tokens: 0, models: [] });
    const today = after.daily.reduce((n, d) => n + d.inbound + d.outbound, 0);
    expect(today).toBe(8);
    expect((await call(f.handlers.messages, { query: { q: 'cafe' } })).body).toEqual({
      items: [],
      nextCursor: null,
    });
    const trail = await f.data.personal.auditTrail();
    expect(trail.find((e) => e.reason === 'erase')?.payload).toMatchObject({
      tokenName: 'eraser',
      userId: ana.userId,
    });
  });

  it('counts a failure a status reported at once and once, and erasing its user takes it back', async () => {
    const failed = async () => parseBody(StatsSchema, (await call(f.handlers.stats)).body).messages.failed;
    const before = await failed();
    const carol = await seedUser(f.data, {
      waId: '4915100077',
      name: 'Carol',
      start: hoursAgo(3),
      texts: ['one', 'answer one', 'two', 'answer two'],
    });
    const [, first, , second] = carol.messageIds;
    const report = (id: string | undefined) =>
      f.data.messages.applyStatus({
        waMessageId: id ?? '',
        status: 'failed',
        at: new Date(),
        recipient: '4915100077',
        error: { code: 131026, title: 'Message undeliverable' },
      });
    await report(first);
    expect(await failed()).toBe(before + 1);
    // The sweep folds it into the running counter: the figure does not move; a redelivery adds nothing.
    expect((await foldCounts({ data: f.data, now: () => new Date() })).failures).toBe(1);
    expect(await failed()).toBe(before + 1);
    expect(await report(first)).toBe('stale');
    expect(await failed()).toBe(before + 1);
    await report(second);
    expect(await failed()).toBe(before + 2);
    // Erase lowers the counter by the folded failure; the other was never in it.
    expect((await call(f.handlers.user, { method: 'DELETE', params: { id: carol.userId } })).status).toBe(
      204,
    );
    expect(await failed()).toBe(before);
    expect((await foldCounts({ data: f.data, now: () => new Date() })).failures).toBe(0);
    expect(await failed()).toBe(before);
  });

  it('two sweeps at once (two hosts on one database, a seed while the app runs) count each marked document once', async () => {
    const stats = async () => parseBody(StatsSchema, (await call(f.handlers.stats)).body);
    const sweep = () => foldCounts({ data: f.data, now: () => new Date() });
    await sweep();
    const erin = await seedUser(f.data, { waId: '4915100055', name: 'Erin', start: hoursAgo(2), texts: [] });
    for (let i = 0; i < 30; i++)
      await f.data.messages.recordOutbound(operatorMessage(erin.userId, `wamid.erin.${i}`, `note ${i}`));
    const before = await stats();
    const [a, b] = await Promise.all([sweep(), sweep()]);
    expect(a.messages + b.messages).toBe(30);
    expect(a.users + b.users).toBe(1);
    expect(await stats()).toEqual(before);
    // The fold is free again once a sweep is done.
    await f.data.users.resolve({ waId: '4915100044', bsuid: null, name: null }, new Date());
    expect((await sweep()).users).toBe(1);
  });

  it('counts once a failure reported on a message the sweep has not folded in yet (a busy minute)', async () => {
    const stats = async () => parseBody(StatsSchema, (await call(f.handlers.stats)).body).messages;
    const dave = await seedUser(f.data, {
      waId: '4915100066',
      name: 'Dave',
      start: hoursAgo(2),
      texts: ['hi'],
    });
    // A busy minute: more marked messages than one batch of the sweep takes, stored before ours.
    const at = new Date();
    await collectionOf(f.db.db, 'messages').insertMany(
      Array.from({ length: 600 }, (_, i) => ({
        _id: `busy.${String(i).padStart(4, '0')}`,
        userId: dave.userId,
        waMessageId: null,
        direction: 'outbound' as const,
        type: 'text',
        text: 'busy',
        status: 'sent' as const,
        statusRank: 1,
        createdAt: at,
        seqAt: at,
        role: 'conversation' as const,
        phoneNumberId: null,
        terms: [],
        relatedId: null,
        replyState: null,
        uncounted: true as const,
      })),
    );
    // An operator's message, marked for the counters; Meta then reports it failed.
    expect(
      await f.data.messages.recordOutbound(
        operatorMessage(dave.userId, 'wamid.zz-operator-failed', 'are you there?', at),
      ),
    ).toBe('inserted');
    await f.data.messages.applyStatus({
      waMessageId: 'wamid.zz-operator-failed',
      status: 'failed',
      at: new Date(),
      recipient: '4915100066',
      error: { code: 131026, title: 'Message undeliverable' },
    });
    const before = await stats();
    await foldCounts({ data: f.data, now: () => new Date() });
    await foldCounts({ data: f.data, now: () => new Date() });
    expect(await stats()).toEqual(before);
    expect(await f.data.maintenance.checkCounters(await f.data.maintenance.countStored())).toEqual([]);
    await collectionOf(f.db.db, 'messages').deleteMany({ _id: { $regex: /^busy\./ } });
    await f.data.maintenance.repairCounters(await f.data.maintenance.countStored());
  });

  it('never logs tokens, numbers or message text', () => {
    const all = f.logs.join('\n');
    expect(all).not.toContain(BOOTSTRAP);
    expect(all).not.toContain('34600111222');
    expect(all).not.toContain('café');
  });
});

describe('a user whose erase is under way', () => {
  it('is in no list or search of the management API while the erase runs, nor after it', async () => {
    const hal = await seedUser(f.data, {
      waId: '4917700003',
      name: 'Halvard Quist',
      start: new Date(Date.now() - 60_000),
      texts: ['zanzibarquux please', 'ok'],
    });
    expect((await call(f.handlers.userHandoff, { method: 'POST', params: { id: hal.userId } })).status).toBe(
      200,
    );
    /** Where Hal shows: the user lists and searches, the chats, the waiting list, message search. */
    const shown = async (): Promise<string[]> => {
      const where: string[] = [];
      const users = (r: { body: unknown }) => parseBody(UsersPageSchema, r.body).items.map((u) => u.id);
      const chats = (r: { body: unknown }) => parseBody(ChatsSchema, r.body).items.map((c) => c.user.id);
      const messages = (r: { body: unknown }) =>
        parseBody(MessagesPageSchema, r.body).items.map((m) => m.userId);
      const lists: [string, string[]][] = [
        ['users', users(await call(f.handlers.users, { query: { limit: '200' } }))],
        ['users?q', users(await call(f.handlers.users, { query: { q: 'Halvard' } }))],
        ['users?q number', users(await call(f.handlers.users, { query: { q: '+49 177 0000 3' } }))],
        ['POST users', users(await call(f.handlers.users, { method: 'POST', body: { q: 'quist' } }))],
        ['chats', chats(await call(f.handlers.chats, { query: { limit: '200' } }))],
        ['waiting', chats(await call(f.handlers.chats, { query: { state: 'waiting', limit: '200' } }))],
        ['messages?q', messages(await call(f.handlers.messages, { query: { q: 'zanzibarquux' } }))],
        [
          'POST messages',
          messages(await call(f.handlers.messages, { method: 'POST', body: { q: 'zanzibarquux' } })),
        ],
      ];
      for (const [name, ids] of lists) if (ids.includes(hal.userId)) where.push(name);
      return where;
    };
    const everywhere = [
      'users',
      'users?q',
      'users?q number',
      'POST users',
      'chats',
      'waiting',
      'messages?q',
      'POST messages',
    ];
    expect(await shown()).toEqual(everywhere);

    // The erase is held after it marked the user, before it deletes their messages.
    let during: string[] = [];
    const { store, ran } = storeWithWriterBefore(
      f.db.db,
      'messages',
      async () => {
        during = await shown();
      },
      'deleteMany',
    );
    expect(await store.personal.eraseUser(hal.userId)).not.toBeNull();
    expect(ran()).toBeGreaterThan(0);
    expect(during).toEqual([]);
    expect(await shown()).toEqual([]);
  }, 60_000);
});

describe('export bounds', () => {
  const exported = async (id: string) => {
    const r = await call(f.handlers.userExport, { params: { id } });
    expect(r.status).toBe(200);
    return parseBody(ExportSchema, r.body);
  };

  it(`says truncated exactly when a user has more than ${MAX_EXPORT_MESSAGES} messages, keeping the oldest`, async () => {
    const start = hoursAgo(24 * 30);
    const { user } = await f.data.users.resolve({ waId: '4915100088', bsuid: null, name: 'Dora' }, start);
    const message = (i: number): ImportedMessage => {
      const id = `wamid.dora.${String(i).padStart(6, '0')}`;
      const createdAt = new Date(start.getTime() + i * 1000);
      return { id, userId: user.id, waMessageId: id, direction: 'inbound', text: `m${i}`, createdAt };
    };
    await f.data.maintenance.importMessages(
      Array.from({ length: MAX_EXPORT_MESSAGES }, (_, i) => message(i)),
    );
    const full = await exported(user.id);
    expect(full.messages).toHaveLength(MAX_EXPORT_MESSAGES);
    expect(full.truncated).toBe(false);

    await f.data.maintenance.importMessages([message(MAX_EXPORT_MESSAGES)]);
    const cut = await exported(user.id);
    expect(cut.truncated).toBe(true);
    expect(cut.messages).toHaveLength(MAX_EXPORT_MESSAGES);
    expect(cut.messages[0]?.id).toBe(message(0).id);
    expect(cut.messages.at(-1)?.id).toBe(message(MAX_EXPORT_MESSAGES - 1).id);
    // An export reads 200 messages a page (by {userId, createdAt, _id}); MongoDB and Cosmos DB walk
    // the index from the last one, FerretDB decodes and sorts all of the user's 10,001 at every page
    // (about 2 minutes for both exports on a 2-core machine): a stand-in's cost, not the product's.
  }, 600_000);

  it(`says truncated exactly when more than ${MAX_EXPORT_EVENTS} archived items concern a user`, async () => {
    const eve = await seedUser(f.data, {
      waId: '4915100099',
      name: 'Eve',
      start: hoursAgo(5),
      texts: ['hi'],
    });
    const archive = (i: number, by: 'user' | 'number') =>
      f.data.events.archive({
        kind: 'dead-letter',
        reason: 'test',
        payload: { i },
        at: new Date(now - 3_600_000 + i),
        ...(by === 'user' ? { userId: eve.userId } : { identifier: '4915100099' }),
      });
    // Half found by the user, half by the pseudonym of the number the items carry.
    for (let i = 0; i < MAX_EXPORT_EVENTS; i++) await archive(i, i % 2 ? 'user' : 'number');
    const full = await exported(eve.userId);
    expect(full.events).toHaveLength(MAX_EXPORT_EVENTS);
    expect(full.truncated).toBe(false);

    await archive(MAX_EXPORT_EVENTS, 'number');
    const cut = await exported(eve.userId);
    expect(cut.events).toHaveLength(MAX_EXPORT_EVENTS);
    expect(cut.truncated).toBe(true);
    expect(cut.messages).toHaveLength(1);
  }, 60_000);
});

describe('export size bound', () => {
  // The contract's figure, written out: the test must fail if the constant drifts from it.
  it('holds at most 32 MiB of JSON of messages and archived items by default', () => {
    expect(MAX_EXPORT_BYTES).toBe(32 * 1024 * 1024);
  });

  it('cuts a user whose messages weigh more than the budget: the oldest whole messages, in order, and truncated', async () => {
    const start = hoursAgo(24 * 20);
    const { user } = await f.data.users.resolve({ waId: '4917700001', bsuid: null, name: 'Fay' }, start);
    // 450 messages of ~2 KB (more than two pages of the reader), pairs sharing a time (ties by id).
    const message = (i: number): ImportedMessage => {
      const id = `wamid.fay.${String(i).padStart(4, '0')}`;
      const createdAt = new Date(start.getTime() + Math.floor(i / 2) * 1000);
      const text = `m${i} ${'ü'.repeat(1_000)}`;
      return { id, userId: user.id, waMessageId: id, direction: 'inbound', text, createdAt };
    };
    const all = Array.from({ length: 450 }, (_, i) => message(i));
    await f.data.maintenance.importMessages(all);
    // Archived items too: what is left of the budget after the messages is theirs.
    await f.data.events.archive({
      kind: 'dead-letter',
      reason: 'test',
      payload: { small: true },
      at: hoursAgo(1),
      userId: user.id,
    });

    const whole = await f.data.personal.exportUser(user.id);
    expect(whole?.truncated).toBe(false);
    expect(whole?.messages.map((m) => m.id)).toEqual(all.map((m) => m.id));
    expect(whole?.events).toHaveLength(1);

    // A budget for about 300 of them: more than a page of the reader, less than all.
    const budget = 300 * Buffer.byteLength(JSON.stringify(whole?.messages[0])) + 100;
    const cut = await f.data.personal.exportUser(user.id, budget);
    expect(cut?.truncated).toBe(true);
    const n = cut?.messages.length ?? 0;
    expect(n).toBeGreaterThan(250);
    expect(n).toBeLessThan(450);
    // The oldest, in order, each whole (as in the uncut export).
    expect(cut?.messages).toEqual(whole?.messages.slice(0, n));
    expect(
      Buffer.byteLength(JSON.stringify([...(cut?.messages ?? []), ...(cut?.events ?? [])])),
    ).toBeLessThanOrEqual(budget);
    // Over HTTP (the default budget) the export is whole and well-formed.
    const r = await call(f.handlers.userExport, { params: { id: user.id } });
    expect(r.status).toBe(200);
    const body = parseBody(ExportSchema, r.body);
    expect(body.truncated).toBe(false);
    expect(body.messages).toHaveLength(450);
  }, 60_000);

  it('cuts archived items by the budget too: a piece kept in parts is whole or left out, never half', async () => {
    const gus = await seedUser(f.data, {
      waId: '4917700002',
      name: 'Gus',
      start: hoursAgo(4),
      texts: ['hi'],
    });
    // Three pieces of ~600 KB, each kept in 3 parts, the oldest first.
    const pieces = [0, 1, 2].map((i) => ({ from: '4917700002', i, odd: String(i).repeat(600_000) }));
    for (const [i, piece] of pieces.entries()) {
      const at = new Date(now - 3_600_000 + i * 1000);
      await f.data.poisoned.keep(
        String(i).repeat(64),
        [{ json: JSON.stringify(piece), identifier: '4917700002', at }],
        at,
      );
    }
    const whole = await f.data.personal.exportUser(gus.userId);
    expect(whole?.truncated).toBe(false);
    expect(whole?.events.map((e) => JSON.stringify(e.payload))).toEqual(pieces.map((p) => JSON.stringify(p)));

    // Room for the message and two pieces, not three.
    const cut = await f.data.personal.exportUser(gus.userId, 1_300_000);
    expect(cut?.truncated).toBe(true);
    expect(cut?.messages).toEqual(whole?.messages);
    expect(cut?.events.map((e) => JSON.stringify(e.payload))).toEqual(
      pieces.slice(0, 2).map((p) => JSON.stringify(p)),
    );
    expect(cut?.events.map((e) => e.reason)).toEqual([
      'notification ingest failed on every attempt',
      'notification ingest failed on every attempt',
    ]);
    expect((await call(f.handlers.user, { method: 'DELETE', params: { id: gus.userId } })).status).toBe(204);
  }, 60_000);
});

describe('poisoned notifications in export and erase', () => {
  it('exports a piece kept in parts as one item, whole, found under a previous number and a previous business-scoped id; erase removes every part', async () => {
    // Not Carol's number (erased above): a message from before her erase would be dropped.
    const dan = await seedUser(f.data, {
      waId: '4915100087',
      name: 'Dan',
      start: hoursAgo(3),
      texts: ['hi'],
    });
    // Dan wrote before from another number and under another business-scoped id.
    await f.data.users.changeIdentity(dan.userId, { waId: '4915100078', bsuid: 'DE.4915100079' });
    await f.data.users.changeIdentity(dan.userId, { waId: '4915100078', bsuid: 'DE.4915100080' });
    // Pieces too long for one document (not a notification's shape: kept whole, in parts), filed
    // under the number and the id Dan had before.
    const long = { from: '4915100087', odd: 'é😀'.repeat(300_000) };
    const other = { user_id: 'DE.4915100079', odd: 'ü'.repeat(400_000) };
    const at = hoursAgo(1);
    await f.data.poisoned.keep(
      'a'.repeat(64),
      [{ json: JSON.stringify(long), identifier: '4915100087', at }],
      at,
    );
    await f.data.poisoned.keep(
      'b'.repeat(64),
      [{ json: JSON.stringify(other), identifier: 'DE.4915100079', at }],
      at,
    );
    const events = collectionOf(f.db.db, 'events');
    expect(await events.countDocuments({ kind: 'poisoned' })).toBeGreaterThan(4);

    const r = await call(f.handlers.userExport, { params: { id: dan.userId } });
    expect(r.status).toBe(200);
    const exported = parseBody(ExportSchema, r.body);
    const kept = exported.events.filter((e) => e.kind === 'poisoned');
    // One item per piece, its payload the piece as it was kept (not its parts, in whatever order).
    // (Compared as text: a failure would print megabytes.)
    const texts = kept.map((e) => JSON.stringify(e.payload));
    expect(kept).toHaveLength(2);
    expect(texts.includes(JSON.stringify(long))).toBe(true);
    expect(texts.includes(JSON.stringify(other))).toBe(true);
    expect(kept.map((e) => e.reason)).toEqual([
      'notification ingest failed on every attempt',
      'notification ingest failed on every attempt',
    ]);

    expect((await call(f.handlers.user, { method: 'DELETE', params: { id: dan.userId } })).status).toBe(204);
    expect(await events.countDocuments({ kind: 'poisoned' })).toBe(0);
  }, 60_000);
});

describe('response headers', () => {
  it('tells browsers to come back only over HTTPS, on the dashboard and on every API answer', async () => {
    // Without it, the first http:// visit to the dashboard (answered by App Service's redirect) can
    // be taken over on the way, and the page served instead asks for the token.
    const answers = [
      await call(f.handlers.dashboard, { token: null, path: 'manage' }),
      await call(f.handlers.script, { token: null, path: 'manage/js/app.js', params: { name: 'app.js' } }),
      await call(f.handlers.appCss, { token: null, path: 'manage/app.css' }),
      await call(f.handlers.stats, { path: 'manage/stats' }),
      await call(f.handlers.stats, { token: null, path: 'manage/stats' }),
      await call(f.handlers.user, { path: 'manage/users/x', params: { id: 'nobody' } }),
    ];
    for (const answer of answers) {
      const hsts = /^max-age=(\d+)$/.exec(answer.headers['strict-transport-security'] ?? '');
      expect(Number(hsts?.[1])).toBeGreaterThanOrEqual(31_536_000);
      expect(answer.headers['x-content-type-options']).toBe('nosniff');
      expect(answer.headers['cache-control']).toBe('no-store');
    }
  });

  it('lets no other site frame any answer, and lets an API answer opened as a page load nothing', async () => {
    // An answer of the API opened in a tab or a frame (a user's name, a message) must neither be
    // framed by another site (clickjacking) nor load or run anything, whatever text it holds.
    const api = [
      await call(f.handlers.stats, { path: 'manage/stats' }),
      await call(f.handlers.stats, { token: null, path: 'manage/stats' }),
      await call(f.handlers.user, { path: 'manage/users/x', params: { id: bob.userId } }),
      await call(f.handlers.user, { path: 'manage/users/x', params: { id: 'nobody' } }),
      await call(f.handlers.userExport, { params: { id: bob.userId } }),
      await call(f.handlers.script, { token: null, path: 'manage/js/none.js', params: { name: 'none.js' } }),
    ];
    for (const answer of api) {
      expect(answer.headers['content-security-policy']).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(answer.headers['x-frame-options']).toBe('DENY');
      expect(answer.headers['referrer-policy']).toBe('no-referrer');
    }
    // The dashboard's own files keep the page's policy (its modules and style from 'self').
    const page = await call(f.handlers.dashboard, { token: null, path: 'manage' });
    expect(page.headers['content-security-policy']).toContain("script-src 'self'");
    expect(page.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(page.headers['x-frame-options']).toBe('DENY');
  });
});

describe('openapi', () => {
  it('answers the documented 413 to a body over the bound, with the error shape', async () => {
    const r = await call(f.handlers.userMessages, {
      method: 'POST',
      params: { id: bob.userId },
      body: { text: 'x'.repeat(MAX_BODY_BYTES) },
    });
    expect(r.status).toBe(413);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('reads a deeply nested body of the largest size in linear time (a 400, not seconds of CPU)', async () => {
    // About 10,900 nested objects within the 64 KiB bound: each key's dotted path used to be
    // built on every key, quadratic in the depth, blocking the instance for over a second.
    const depth = Math.floor((MAX_BODY_BYTES - 100) / 6);
    const body = `{"q":"ana","x":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}`;
    expect(Buffer.byteLength(body)).toBeLessThanOrEqual(MAX_BODY_BYTES);
    // CPU time, not the wall clock, which a loaded machine stretches whatever the work.
    const spent = cpuClock();
    const r = await call(f.handlers.users, { method: 'POST', body });
    const ms = spent();
    expect(r.status).toBe(400);
    expect(parseBody(ErrorSchema, r.body).error.message).toBe('invalid body field "x": unknown field');
    expect(ms).toBeLessThan(200);
    // A key given twice deep down is still named by its path.
    const twice = `{"q":"ana","x":${'{"a":'.repeat(50)}{"b":1,"b":2}${'}'.repeat(50)}}`;
    const repeated = await call(f.handlers.users, { method: 'POST', body: twice });
    expect(repeated.status).toBe(400);
    expect(parseBody(ErrorSchema, repeated.body).error.message).toBe(
      `invalid body field "x.${'a.'.repeat(50)}b": must be given once`,
    );
  });

  it('answers the documented 411 to a body sent chunked, which the Functions host never passes on', async () => {
    const stored = () => f.db.db.collection('messages').countDocuments();
    const before = await stored();
    for (const [handler, body] of [
      [f.handlers.users, { q: 'ana' }],
      [f.handlers.userMessages, { text: 'hello' }],
    ] as const) {
      const r = await call(handler, {
        method: 'POST',
        params: { id: bob.userId },
        headers: { 'transfer-encoding': 'chunked' },
        body,
      });
      expect(r.status).toBe(411);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({
        code: 'LENGTH_REQUIRED',
        message: expect.stringContaining('Content-Length'),
      });
    }
    expect(await stored()).toBe(before);
  });

  it('describes every management route from the zod schemas', async () => {
    const r = await openApiHandler();
    const doc = r.jsonBody as {
      openapi: string;
      paths: Record<string, Record<string, unknown>>;
      components: { schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toMatch(/^3\./);
    // Public like the page, revalidated, and never sniffed as something else.
    expect(r.headers).toMatchObject({ 'Cache-Control': 'no-cache', 'X-Content-Type-Options': 'nosniff' });
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/manage/chats',
        '/manage/messages',
        '/manage/stats',
        '/manage/users',
        '/manage/users/{id}',
        '/manage/users/{id}/export',
        '/manage/users/{id}/handoff',
        '/manage/users/{id}/messages',
      ].sort(),
    );
    expect(Object.keys(doc.paths['/manage/users/{id}'] ?? {}).sort()).toEqual(['delete', 'get']);
    expect(doc.components.schemas).toHaveProperty('User');
    expect(doc.components.schemas).toHaveProperty('Message');
    expect(doc.components.schemas).toHaveProperty('Stats');
    expect(doc.components.schemas['UserExport']).toMatchObject({
      required: expect.arrayContaining(['user', 'messages', 'events', 'truncated']),
    });
    const users = doc.paths['/manage/users']?.['get'] as { parameters: { name: string; in: string }[] };
    expect(
      Object.keys((doc.paths['/manage/users/{id}/messages']?.['post'] as { responses: object }).responses),
    ).toEqual(expect.arrayContaining(['413', '429']));
    expect(users.parameters.map((p) => p.name).sort()).toEqual(['cursor', 'limit', 'q']);
  });
});

// Last in the file: every answer the tests above received, held against the served document.
describe('every answer of these tests', () => {
  it('matches the OpenAPI document the app serves: a documented status, its headers, exactly its schema', async () => {
    // The handoff routes are tested in handoff.test.ts (which checks its answers too); once here.
    for (const method of ['POST', 'DELETE']) {
      expect((await call(f.handlers.userHandoff, { method, params: { id: bob.userId } })).status).toBe(200);
      expect((await call(f.handlers.userHandoff, { method, params: { id: 'u_nobody' } })).status).toBe(404);
    }
    const doc = (await openApiHandler()).jsonBody as Record<string, unknown>;
    const answers = answersOf(f.handlers);
    expect(answers.length).toBeGreaterThan(100);
    expect(answers.flatMap((a) => checkExchange(doc, a))).toEqual([]);
    // Every operation of the table was seen answering, so none goes unchecked.
    const seen = new Set(answers.map((a) => `${a.method} ${a.path}`));
    const operations = Object.entries(doc['paths'] as Record<string, object>).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`),
    );
    expect(operations.filter((o) => !seen.has(o))).toEqual([]);
  });
});
