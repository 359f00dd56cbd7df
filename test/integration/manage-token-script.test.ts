// `npm run token` (scripts/token.ts main) against the test server: create, list, revoke.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { main } from '../../scripts/token';
import { runToExitCode, type Io } from '../../scripts/lib/cli';
import { createDataStore } from '../../shared/data';
import { authenticate } from '../../shared/manage/auth';
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
