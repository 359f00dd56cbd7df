// A file named on an operator script's command line is found where the person typed `npm run`:
// npm runs every script in the project's folder and passes the folder it was typed in as INIT_CWD.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as backup } from '../../scripts/backup';
import { main as migrate } from '../../scripts/migrate';
import { main as restore } from '../../scripts/restore';
import { captureIo } from '../fixtures/scripts';

let where: string;
// No database is reached in these cases: each fails on the file before opening one.
const env = () => ({ MONGODB_URI: 'mongodb://127.0.0.1:1/', INIT_CWD: where });

beforeEach(() => {
  where = mkdtempSync(path.join(os.tmpdir(), 'typed-here-'));
});
afterEach(() => rmSync(where, { recursive: true, force: true }));

describe('a relative path given to a script', () => {
  it('migrate reads the file in the folder npm was run from', async () => {
    writeFileSync(path.join(where, 'old.db'), 'not a database');
    const io = captureIo();
    expect(await runToExitCode(migrate, ['old.db', '--dry-run'], env(), io)).toBe(1);
    // Before, it looked in the project's folder: "cannot read the legacy database old.db: no such file".
    expect(io.stderr.at(-1)).toBe('error: old.db is not a SQLite database');
  });

  it('restore reads the file in the folder npm was run from', async () => {
    writeFileSync(path.join(where, 'backup.jsonl.gz'), 'not gzip');
    const io = captureIo();
    expect(await runToExitCode(restore, ['backup.jsonl.gz'], env(), io)).toBe(1);
    expect(io.stderr.at(-1)).toMatch(/^error: backup\.jsonl\.gz is not a gzip backup file/);
  });

  it('a file that is not there is named with the folder it was looked for in', async () => {
    // Before, only its name: "cannot read old.db: no such file" left the newcomer who typed
    // `npm run migrate -- data/old.db` in another folder to guess where the script had looked.
    const io = captureIo();
    expect(await runToExitCode(migrate, [path.join('data', 'old.db')], env(), io)).toBe(1);
    expect(io.stderr.at(-1)).toBe(
      `error: cannot read the legacy database ${path.join(where, 'data', 'old.db')}: no such file`,
    );
    const io2 = captureIo();
    expect(await runToExitCode(restore, [path.join('data', 'backup.jsonl.gz')], env(), io2)).toBe(1);
    expect(io2.stderr.at(-1)).toBe(
      `error: cannot read ${path.join(where, 'data', 'backup.jsonl.gz')}: no such file`,
    );
  });

  it('backup --out names a file in the folder npm was run from', async () => {
    mkdirSync(path.join(where, 'taken'));
    const io = captureIo();
    expect(await runToExitCode(backup, ['--out', 'taken'], env(), io)).toBe(2);
    expect(io.stderr).toEqual([
      `error: --out ${path.join(where, 'taken')} is a folder; give a file name (see --help)`,
    ]);
  });

  it('`npm run migrate -- ../old.db` typed in a subfolder finds ../old.db from there', () => {
    const sub = path.join(where, 'sub');
    mkdirSync(sub);
    writeFileSync(path.join(where, 'old.db'), 'not a database');
    const result = spawnSync(
      'npm',
      ['run', '-s', '--prefix', process.cwd(), 'migrate', '--', path.join('..', 'old.db'), '--dry-run'],
      {
        cwd: sub,
        encoding: 'utf8',
        env: { ...process.env, INIT_CWD: undefined, MONGODB_URI: 'mongodb://127.0.0.1:1/' },
        timeout: 60_000,
      },
    );
    expect(result.stderr).toContain('error: old.db is not a SQLite database');
    expect(result.status).toBe(1);
  });
});
