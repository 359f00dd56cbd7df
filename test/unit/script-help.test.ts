// What each operator script's --help promises about exit codes is what a mistyped flag gets: 2,
// one line, before anything is opened or written.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runToExitCode, type Main } from '../../scripts/lib/cli';
import * as backup from '../../scripts/backup';
import * as health from '../../scripts/health';
import * as indexes from '../../scripts/indexes';
import * as migrate from '../../scripts/migrate';
import * as replayPoison from '../../scripts/replay-poison';
import * as restore from '../../scripts/restore';
import * as retention from '../../scripts/retention';
import * as seed from '../../scripts/seed';
import * as token from '../../scripts/token';
import { captureIo } from '../fixtures/scripts';

const SCRIPTS: Record<string, { main: Main; HELP: string }> = {
  backup,
  health,
  indexes,
  migrate,
  'replay-poison': replayPoison,
  restore,
  retention,
  seed,
};

describe('operator scripts: a mistyped flag', () => {
  it.each(Object.entries(SCRIPTS))('%s: exits 2, as its --help says', async (_, script) => {
    expect(script.HELP).toMatch(/Exit code:[^]*\b2 on bad\s+arguments/);
    const io = captureIo();
    // An unreachable database: a usage error must come before any attempt to open it.
    const env = { MONGODB_URI: 'mongodb://127.0.0.1:1/', AzureWebJobsStorage: 'UseDevelopmentStorage=true' };
    expect(await runToExitCode(script.main, ['--dryrun'], env, io)).toBe(2);
    expect(io.stderr).toEqual([expect.stringMatching(/^error: .*--dryrun.* \(see --help\)$/)]);
    expect(io.stdout).toEqual([]);
  });
});

describe('operator scripts: an argument holding control characters', () => {
  // Before, the error quoted it as typed: `npm run seed -- $'--\e[2J'` cleared the terminal.
  it.each(Object.entries(SCRIPTS))('%s: quoted back escaped, never as typed', async (_, script) => {
    const io = captureIo();
    const env = { MONGODB_URI: 'mongodb://127.0.0.1:1/', AzureWebJobsStorage: 'UseDevelopmentStorage=true' };
    expect(await runToExitCode(script.main, ['--x\u001b[2J\u009b1m'], env, io)).toBe(2);
    expect(io.stderr).toEqual([expect.stringContaining('--x\\u001b[2J\\u009b1m')]);
    expect(io.stderr.join('')).not.toMatch(/\p{Cc}/u);
  });
});

describe('operator scripts: an option given twice', () => {
  it('exits 2 naming it, instead of keeping the last one silently', async () => {
    const io = captureIo();
    const env = { MONGODB_URI: 'mongodb://127.0.0.1:1/' };
    expect(await runToExitCode(seed.main, ['--users', '3', '--users', '5'], env, io)).toBe(2);
    expect(io.stderr).toEqual([expect.stringMatching(/^error: option --users given twice/)]);
    expect(io.stdout).toEqual([]);
  });
});

describe('operator scripts: a negative number given to a numeric option', () => {
  it.each([
    [
      'token',
      token.main,
      ['create', '--name', 'ops', '--expires-days', '-1'],
      /^error: --expires-days must be /,
    ],
    ['retention', retention.main, ['--days', '-3'], /^error: --days must be /],
    ['seed', seed.main, ['--users', '-5'], /^error: --users must be /],
  ] as const)(
    '%s: exits 2 with its range in one line, not a question about a missing value',
    async (_, main, argv, message) => {
      const io = captureIo();
      const env = { MONGODB_URI: 'mongodb://127.0.0.1:1/' };
      expect(await runToExitCode(main, argv, env, io)).toBe(2);
      expect(io.stderr).toEqual([expect.stringMatching(message)]);
      expect(io.stderr.join('\n')).not.toContain('\n');
      expect(io.stdout).toEqual([]);
    },
  );

  it('still reads an option name after an option that takes a value as a missing value', async () => {
    const io = captureIo();
    const env = { MONGODB_URI: 'mongodb://127.0.0.1:1/' };
    expect(await runToExitCode(token.main, ['create', '--name', '--expires-days', '3'], env, io)).toBe(2);
    expect(io.stdout).toEqual([]);
  });
});

describe('npm run db:install-ferretdb', () => {
  // Before, it took --help (or any argument) as a go-ahead: a build of a minute, or Go's absence.
  const run = (args: string[]) => {
    const cache = mkdtempSync(path.join(os.tmpdir(), 'install-ferretdb-'));
    try {
      const result = spawnSync(
        process.execPath,
        ['--import', 'tsx', 'scripts/install-ferretdb.ts', ...args],
        {
          encoding: 'utf8',
          // No Go on this PATH: a build, were one started, would fail at once.
          env: { ...process.env, XDG_CACHE_HOME: cache, PATH: path.dirname(process.execPath) },
        },
      );
      return { ...result, cached: readdirSync(cache) };
    } finally {
      rmSync(cache, { recursive: true, force: true });
    }
  };

  it('--help prints its usage and builds nothing', () => {
    const help = run(['--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/^Usage: npm run db:install-ferretdb\n/);
    expect(help.stderr).toBe('');
    expect(help.cached).toEqual([]);
  });

  it('an unexpected argument exits 2 in one line and builds nothing', () => {
    const bad = run(['--force']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toBe('error: unexpected argument "--force" (see --help)\n');
    expect(bad.cached).toEqual([]);
  });
});

describe('npm run bench: bad arguments', () => {
  // Before, a mistyped flag exited 1 ("bench failed: …"), and `--messages 0` ran the whole bench
  // and printed NaN and -Infinity as its figures, exit 0.
  it.each([
    [['--messages', '0'], /^error: --messages must be an integer of at least 1 \(see --help\)\n$/],
    [['--senders', 'five'], /^error: --senders must be an integer of at least 1 \(see --help\)\n$/],
    [['--forgeries', '-1'], /^error: --forgeries must be an integer of at least 0 \(see --help\)\n$/],
    [['--graph-port', '70000'], /^error: --graph-port must be an integer of at least 1 and at most 65535 /],
    [['--mesages', '30'], /^error: .*--mesages.* \(see --help\)\n$/],
    // Before, these ran the whole bench and failed only when writing the figures (exit 1).
    [['--json', os.tmpdir()], /^error: --json .* is a folder; give a file name \(see --help\)\n$/],
    [
      ['--json', path.join(os.tmpdir(), 'no-such-folder-7f3a', 'bench.json')],
      /^error: --json .*bench\.json: its folder does not exist \(see --help\)\n$/,
    ],
  ])('%j exits 2 in one line and starts nothing', (args, message) => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], {
      encoding: 'utf8',
      // Were a run started, it would fail on this database instead of measuring anything.
      env: { ...process.env, MONGODB_URI: 'mongodb://127.0.0.1:1/' },
      timeout: 60_000,
    });
    expect(result.stderr).toMatch(message);
    expect(result.status).toBe(2);
    expect(result.stdout).toBe('');
  });

  it('--help names the exit codes', () => {
    const result = spawnSync(process.execPath, ['--import', 'tsx', 'bench/run.ts', '--help'], {
      encoding: 'utf8',
    });
    expect(result.status).toBe(0);
    expect(result.stdout).toMatch(/Exit code: 0 when done, 1 on failure, 2 on bad arguments/);
  });
});

describe('npm run bench:cold: bad arguments', () => {
  // Exit 1 is its verdict (the ratio above --max-ratio). Before, a mistyped flag exited 1 too, and
  // a --max-ratio that is not a number made every run pass (no ratio is above NaN).
  it.each([
    [['--max-ratio', 'abc'], /^error: --max-ratio must be a number above 0, such as 1\.3 \(see --help\)\n$/],
    [['--max-ratio', '0'], /^error: --max-ratio must be a number above 0/],
    [['--runs', '2'], /^error: --runs must be an integer of at least 3 \(see --help\)\n$/],
    [['--max-ration', '1.3'], /^error: .*--max-ration.* \(see --help\)\n$/],
  ])('%j exits 2 in one line and runs nothing', (args, message) => {
    // An entry that does not exist: a run, were one started, would fail on it at once.
    const result = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'bench/cold-start.ts', '--entry', 'no-such-entry.js', ...args],
      { encoding: 'utf8', timeout: 60_000 },
    );
    expect(result.stderr).toMatch(message);
    expect(result.status).toBe(2);
    expect(result.stdout).toBe('');
  });
});

describe('npm run dev: --help and arguments', () => {
  // Before, it read no arguments at all: `npm run dev -- --help` (or `-- --port 8080`) started the
  // app, its database and Azurite, and ran until stopped.
  const run = (args: string[]) => {
    const dataDir = path.join(mkdtempSync(path.join(os.tmpdir(), 'dev-help-')), 'data');
    try {
      const result = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/dev.ts', ...args], {
        encoding: 'utf8',
        // Were it to start, it would fail on this connection string at once (exit 1), not hang.
        env: {
          ...process.env,
          DEV_DATA_DIR: dataDir,
          DEV_SKIP_WEB_BUILD: '1',
          MONGODB_URI: 'not-a-connection-string',
          PORT: '1',
        },
        timeout: 60_000,
      });
      return { ...result, created: existsSync(dataDir) };
    } finally {
      rmSync(path.dirname(dataDir), { recursive: true, force: true });
    }
  };

  it.each([['--help'], ['-h']])('%s prints its usage, exits 0 and starts nothing', (flag) => {
    const help = run([flag]);
    expect(help.stdout).toMatch(/^Usage: npm run dev\n/);
    expect(help.stdout).toMatch(/Exit code: 0 when stopped, 1 [^]*2 on bad\s+arguments/);
    expect(help.stderr).toBe('');
    expect(help.status).toBe(0);
    expect(help.created).toBe(false);
  });

  it('an argument exits 2 in one line and starts nothing', () => {
    const bad = run(['--port', '8080']);
    expect(bad.stderr).toBe('error: unexpected argument "--port" (see --help)\n');
    expect(bad.stdout).toBe('');
    expect(bad.status).toBe(2);
    expect(bad.created).toBe(false);
  });
});
