// `npm run token` (scripts/token.ts main) against the test server: create, list, revoke.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { main } from '../../scripts/token';
import { runToExitCode, type Io } from '../../scripts/lib/cli';
import { createDataStore } from '../../shared/data';
import { authenticate } from '../../shared/manage/auth';
import { createToken } from '../../shared/manage/tokens';
import { testDatabase, type TestDatabase } from '../helpers/db';

let db: TestDatabase;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  db = await testDatabase('token_script');
  env = { MONGODB_URI: db.uri, MONGODB_DATABASE: db.dbName };
});

afterAll(async () => {
  await db?.drop();
});

async function run(...argv: string[]): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = { out: (l) => out.push(l), err: (l) => err.push(l), tty: false };
  const code = await runToExitCode(main, argv, env, io);
  return { code, out, err };
}

it('creates a token shown once, lists it without the token, revokes it', async () => {
  const created = await run('create', '--name', 'ci bot', '--expires-days', '7');
  expect(created.code).toBe(0);
  expect(created.out).toHaveLength(1);
  const token = created.out[0] ?? '';
  expect(token).toMatch(/^wam_[A-Za-z0-9_-]{40,}$/);

  const data = createDataStore(db.db);
  expect(
    (await authenticate(`Bearer ${token}`, { data, bootstrapToken: undefined, now: new Date() })).name,
  ).toBe('ci bot');

  const listed = await run('list');
  expect(listed.code).toBe(0);
  expect(listed.out).toHaveLength(1);
  const [id, name] = (listed.out[0] ?? '').split('\t');
  expect(name).toBe('ci bot');
  expect(listed.out[0]).toMatch(/\tactive$/);
  expect(listed.out.join('\n')).not.toContain(token);

  const revoked = await run('revoke', id ?? '');
  expect(revoked.code).toBe(0);
  expect((await run('list')).out[0]).toMatch(/\trevoked$/);
  await expect(
    authenticate(`Bearer ${token}`, { data, bootstrapToken: undefined, now: new Date() }),
  ).rejects.toMatchObject({
    code: 'FORBIDDEN',
  });
});

it('rejects bad arguments and unknown ids', async () => {
  expect((await run('create')).code).toBe(2);
  expect((await run('create', '--name', 'x', '--expires-days', 'soon')).code).toBe(2);
  expect((await run('frobnicate')).code).toBe(2);
  expect((await run('revoke', 'nope')).code).toBe(1);
});

it('refuses an expiry outside 1..3650 days (exit 2, nothing stored) and stores the right one', async () => {
  const data = createDataStore(db.db);
  const before = (await data.tokens.list()).length;
  for (const days of ['999999999', '0', '3651', '1.5', '-1', '99999999999999999999']) {
    const refused = await run('create', '--name', `bad ${days}`, `--expires-days=${days}`);
    expect(refused.code).toBe(2);
    expect(refused.err.join('\n')).toMatch(/--expires-days must be a whole number of days from 1 to 3650/);
    expect(refused.out).toEqual([]);
  }
  expect(await data.tokens.list()).toHaveLength(before);

  const startedAt = Date.now();
  const created = await run('create', '--name', 'ten years', '--expires-days', '3650');
  expect(created.code).toBe(0);
  const record = (await data.tokens.list()).find((t) => t.name === 'ten years');
  expect(record?.expiresAt?.getTime()).toBe((record?.createdAt.getTime() ?? 0) + 3650 * 86_400_000);
  expect(record?.createdAt.getTime()).toBeGreaterThanOrEqual(startedAt - 1000);
});

it('createToken guards the same bound', async () => {
  const data = createDataStore(db.db);
  const before = (await data.tokens.list()).length;
  for (const expiresDays of [0, 3651, 999_999_999, 1.5, Number.NaN]) {
    await expect(createToken(data, { name: 'x', expiresDays, now: new Date() })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  }
  expect(await data.tokens.list()).toHaveLength(before);
  const now = new Date('2030-01-01T00:00:00Z');
  const { record } = await createToken(data, { name: 'one day', expiresDays: 1, now });
  expect(record.expiresAt?.toISOString()).toBe('2030-01-02T00:00:00.000Z');
});

it('refuses reserved names, control characters, outer whitespace and empty names (exit 2, nothing stored)', async () => {
  const data = createDataStore(db.db);
  const before = await data.tokens.list();
  const refused: [string, RegExp][] = [
    // `by: "user"` is a handoff the user asked for; MANAGE_API_TOKEN is the bootstrap token's name.
    ['user', /--name: the name "user" is reserved/],
    ['User', /--name: the name "user" is reserved/],
    ['MANAGE_API_TOKEN', /--name: the name "MANAGE_API_TOKEN" is reserved/],
    ['manage_api_token', /--name: the name "MANAGE_API_TOKEN" is reserved/],
    ['ops\nabc123\tforged\tactive', /--name: the name must not contain control characters/],
    ['tab\there', /--name: the name must not contain control characters/],
    ['bell\u0007', /--name: the name must not contain control characters/],
    ['line\u2028separator', /--name: the name must not contain control characters or line breaks/],
    [' ops', /--name: the name must not start or end with whitespace/],
    ['ops ', /--name: the name must not start or end with whitespace/],
    ['user ', /--name: the name must not start or end with whitespace/],
    ['', /--name: the name must not be empty/],
    ['x'.repeat(101), /--name: the name must be at most 100 characters/],
  ];
  for (const [name, message] of refused) {
    const result = await run('create', `--name=${name}`);
    expect(result.code, JSON.stringify(name)).toBe(2);
    expect(result.err.join('\n')).toMatch(message);
    expect(result.out).toEqual([]);
    await expect(createToken(data, { name, expiresDays: null, now: new Date() })).rejects.toMatchObject({
      code: 'INVALID_INPUT',
    });
  }
  expect(await data.tokens.list()).toEqual(before);
  // Near misses are ordinary names.
  for (const name of ['users', 'user bot', 'x'.repeat(100), 'Café ops']) {
    expect((await run('create', '--name', name)).code).toBe(0);
  }
});

it('refuses the name of a token still valid (exit 2, nothing stored); a revoked or expired one frees its name', async () => {
  // The audit trail and a handoff's `by` name the token, and an Idempotency-Key used by one token
  // is refused to another by its name: two valid tokens named alike could not be told apart.
  const data = createDataStore(db.db);
  expect((await run('create', '--name', 'night shift')).code).toBe(0);
  const before = await data.tokens.list();
  const again = await run('create', '--name', 'night shift');
  expect(again.code).toBe(2);
  expect(again.err.join('\n')).toMatch(/--name: a token still valid has this name/);
  expect(again.out).toEqual([]);
  await expect(
    createToken(data, { name: 'night shift', expiresDays: null, now: new Date() }),
  ).rejects.toMatchObject({ code: 'INVALID_INPUT' });
  expect(await data.tokens.list()).toEqual(before);
  // Another case is another name, as the audit trail shows it.
  expect((await run('create', '--name', 'Night Shift')).code).toBe(0);

  // Revoked: the name is free for its successor.
  const first = before.find((t) => t.name === 'night shift');
  expect((await run('revoke', first?.id ?? '')).code).toBe(0);
  expect((await run('create', '--name', 'night shift')).code).toBe(0);
  // Expired: free too.
  const now = Date.now();
  await createToken(data, { name: 'weekend', expiresDays: 1, now: new Date(now - 2 * 86_400_000) });
  expect((await createToken(data, { name: 'weekend', expiresDays: 1, now: new Date(now) })).record.name).toBe(
    'weekend',
  );
});
