// npm run seed against the real test database: out-of-range counts are a usage error that writes
// nothing; counts within the bounds seed what they say.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as seed } from '../../scripts/seed';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { captureIo } from '../fixtures/scripts';

let t: TestDatabase;
const env = () => ({ MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName });

beforeAll(async () => {
  t = await testDatabase('scripts-seed');
});
afterAll(async () => {
  await t?.drop();
});

describe('npm run seed', () => {
  it.each([
    [['--users', '99999999999'], /--users must be an integer of at least 1 and at most 100000/],
    [['--users', '100001'], /--users .* at most 100000/],
    [['--messages', '1000001'], /--messages must be an integer of at least 0 and at most 1000000/],
  ])('%j exits 2 with the bound and writes nothing', async (argv, message) => {
    const io = captureIo();
    expect(await runToExitCode(seed, argv, env(), io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(message);
    expect(io.text()).not.toMatch(/\n\s+at /);
    expect(await t.db.listCollections().toArray()).toEqual([]);
  });

  it("writes into the database MONGODB_URI names only with --yes (it may be a deployment's own)", async () => {
    const io = captureIo();
    expect(await runToExitCode(seed, ['--users', '3'], env(), io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(
      /MONGODB_URI is set: seed would write demo users into that database.*add --yes/,
    );
    expect(await t.db.listCollections().toArray()).toEqual([]);
  });

  it('seeds the users and messages it is asked for', async () => {
    const io = captureIo();
    expect(await runToExitCode(seed, ['--users', '3', '--messages', '7', '--yes'], env(), io)).toBe(0);
    expect(await t.db.collection('users').countDocuments()).toBe(3);
    expect(await t.db.collection('messages').countDocuments()).toBe(7);
    expect(io.stdout.join('\n')).toMatch(/messages:\s+7/);
  });
});
