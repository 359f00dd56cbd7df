// README, "Operator scripts": Ctrl-C or SIGTERM stops a script with one line on stderr. A
// supervisor, a CI step's timeout or `kill <pid of npm>` sends SIGTERM to npm alone, which passes it
// to its child only: the shell running `tsx scripts/…`, which dies of it (dash) without passing it
// on. The script must not run on unseen, writing into the database with nobody to see its end.
import { spawn, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep } from '../../shared/time';
import { testDatabase, type TestDatabase } from '../helpers/db';

let t: TestDatabase;

beforeAll(async () => {
  t = await testDatabase('scripts-npm-signal');
});
afterAll(async () => {
  await t?.drop();
});

describe('an operator script run by npm', () => {
  it('stops, saying so, when npm alone is sent SIGTERM', async () => {
    const child = spawn('npm', ['run', 'seed', '--', '--users', '1000', '--messages', '1000000', '--yes'], {
      env: { ...process.env, MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName },
      stdio: ['ignore', 'ignore', 'pipe'],
      // A process group of its own: npm, its shell, tsx and the script, so that none outlives the test.
      detached: true,
    });
    let stderr = '';
    let sent = false;
    // The pipe closes when every process holding it (the script too) has ended.
    const closed = new Promise<boolean>((resolve) => child.stderr.on('close', () => resolve(true)));
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      if (!sent && /seeding: \d+%/.test(stderr)) {
        sent = true;
        child.kill('SIGTERM'); // npm alone
      }
    });
    try {
      const ended = await Promise.race([closed, sleep(50_000).then(() => false)]);
      expect(sent, stderr).toBe(true);
      expect(ended, `the script ran on after npm stopped:\n${stderr}`).toBe(true);
      expect(stderr).toMatch(
        /interrupted: npm, which ran it, has stopped: part of the sample data may be written \(running it again adds more\)/,
      );
    } finally {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }, 90_000);

  // A container's `npm run …` makes npm pid 1; a shell that `exec`s a single command (bash as
  // npm's script shell, as on RHEL-based images) leaves npm as tsx's parent, so the
  // script's grandparent is pid 1: npm, alive, not init after the shell died. Reproduced in a
  // pid namespace of its own (where unshare may make one).
  const namespaces =
    process.platform === 'linux' &&
    spawnSync('unshare', ['--user', '--map-root-user', '--pid', '--fork', '--mount-proc', 'true']).status ===
      0;
  it.skipIf(!namespaces)(
    'runs when npm is pid 1 and its shell exec’d the script',
    async () => {
      const run = spawnSync(
        'unshare',
        [
          ...['--user', '--map-root-user', '--pid', '--fork', '--mount-proc'],
          ...['npm', 'run', '--silent', '--script-shell=bash', 'token', '--', 'list'],
        ],
        {
          env: { ...process.env, MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName },
          encoding: 'utf8',
          timeout: 60_000,
        },
      );
      expect(run.stderr).not.toMatch(/interrupted/);
      expect(run.status, run.stderr).toBe(0);
      expect(run.stdout).toBe('');
    },
    90_000,
  );
});
