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

it('quotes an unknown id or command it names: a terminal never gets the control characters typed', async () => {
  // Before, `revoke $'a\e[2J'` printed the escape sequence as it was (it cleared the terminal).
  const revoke = await run('revoke', 'a\u001b[2J\u0007');
  expect(revoke.code).toBe(1);
  expect(revoke.err.filter((l) => !l.startsWith('database:'))).toEqual([
    'error: no token with id "a\\u001b[2J\\u0007" (see `list`)',
  ]);
  const unknown = await run('\u001b]0;owned\u0007');
  expect(unknown.code).toBe(2);
  expect(unknown.err).toEqual([
    'error: unknown command: "\\u001b]0;owned\\u0007" (the commands are create, list and revoke) (see --help)',
  ]);
  for (const line of [...revoke.err, ...unknown.err]) expect(line).not.toMatch(/\p{Cc}/u);
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
    // A right-to-left override turns the rest of the line around in `list` and the audit trail.
    ['ops\u202Eevil', /--name: the name must not contain characters that change the writing direction/],
    ['\u2067ops\u2069', /--name: the name must not contain characters that change the writing direction/],
    ['ops\u200F', /--name: the name must not contain characters that change the writing direction/],
    [' ops', /--name: the name must not start or end with whitespace/],
    ['ops ', /--name: the name must not start or end with whitespace/],
    ['user ', /--name: the name must not start or end with whitespace/],
    ['', /--name: the name must not be empty/],
    ['x'.repeat(101), /--name: the name must be at most 100 characters/],
    ['🙂'.repeat(101), /--name: the name must be at most 100 characters/],
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
  for (const name of [
    'users',
    'user bot',
    'x'.repeat(100),
    '🙂'.repeat(100),
    'Café ops',
    'עמית ops',
    '👩\u200D💻 dev',
  ]) {
    expect((await run('create', '--name', name)).code).toBe(0);
  }
});

it('creates several tokens with one name, each with its own id: list shows each, revoke ID revokes only that one', async () => {
  // A setup script run again on a kept database creates its token again under the same name: the
  // brief has no rule against it, and it must get a token (a note on stderr says the name is used).
  const data = createDataStore(db.db);
  const first = await run('create', '--name', 'checker');
  expect(first.code).toBe(0);
  expect(first.err.join('\n')).not.toMatch(/already/);
  const second = await run('create', '--name', 'checker');
  expect(second.code).toBe(0);
  expect(second.out).toHaveLength(1);
  expect(second.out[0]).not.toBe(first.out[0]);
  expect(second.err.join('\n')).toMatch(/note: 1 other valid token already has the name/);
  expect(second.err.join('\n')).not.toContain(first.out[0]);

  const named = (await data.tokens.list()).filter((t) => t.name === 'checker');
  expect(named).toHaveLength(2);
  expect(new Set(named.map((t) => t.id)).size).toBe(2);
  const listed = await run('list');
  for (const t of named) expect(listed.out.some((l) => l.startsWith(`${t.id}\tchecker\t`))).toBe(true);

  // Each authenticates as itself; revoking one by id leaves the other working.
  const auth = (token: string) =>
    authenticate(`Bearer ${token}`, { data, bootstrapToken: undefined, now: new Date() });
  const [a, b] = [await auth(first.out[0] ?? ''), await auth(second.out[0] ?? '')];
  expect(a.name).toBe('checker');
  expect(b.name).toBe('checker');
  expect(a.tokenId).not.toBe(b.tokenId);
  expect((await run('revoke', a.tokenId ?? '')).code).toBe(0);
  await expect(auth(first.out[0] ?? '')).rejects.toMatchObject({ code: 'FORBIDDEN' });
  expect((await auth(second.out[0] ?? '')).tokenId).toBe(b.tokenId);

  // The same through the module; a revoked or expired namesake is not counted in the note.
  const third = await createToken(data, { name: 'checker', expiresDays: null, now: new Date() });
  expect(third.namesakes).toBe(1);
  expect((await createToken(data, { name: 'fresh name', expiresDays: 1, now: new Date() })).namesakes).toBe(
    0,
  );
});
