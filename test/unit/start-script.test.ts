// `npm start` (README) runs the Functions host of Azure Functions Core Tools v4. Without it, a
// newcomer got a build of a minute or more, then the shell's bare `sh: 1: func: not found`: the
// script now says what is missing and what to do before it builds anything.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const dirs: string[] = [];
afterAll(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));

/** Runs `npm start`'s first step with a PATH of node and, when given, a `func` that prints `version`. */
function check(version: string | null): { status: number | null; stderr: string } {
  const bin = mkdtempSync(path.join(os.tmpdir(), 'start-script-'));
  dirs.push(bin);
  if (version !== null) {
    writeFileSync(path.join(bin, 'func'), `#!/bin/sh\necho '${version}'\n`);
    chmodSync(path.join(bin, 'func'), 0o755);
  }
  const run = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/check-func.ts'], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, PATH: `${bin}${path.delimiter}${path.dirname(process.execPath)}` },
  });
  return { status: run.status, stderr: run.stderr };
}

describe.skipIf(process.platform === 'win32')('npm start', () => {
  it('checks for Core Tools before it builds', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    expect(pkg.scripts['start']).toMatch(
      /^node --import tsx scripts\/check-func\.ts && npm run build && func start$/,
    );
  });

  it('without func on the PATH, says in one line to install Core Tools v4 or use npm run dev (exit 1)', () => {
    const { status, stderr } = check(null);
    expect(status).toBe(1);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/Azure Functions Core Tools v4 \(`func`\) is not on the PATH/);
    expect(stderr).toContain('https://learn.microsoft.com/azure/azure-functions/functions-run-local');
    expect(stderr).toContain('`npm run dev`');
  });

  it('refuses another major version, naming it, and accepts v4', () => {
    const old = check('3.0.3904');
    expect(old.status).toBe(1);
    expect(old.stderr).toMatch(/says "3\.0\.3904": Azure Functions Core Tools v4 is needed/);
    expect(check('4.0.7030')).toEqual({ status: 0, stderr: '' });
  });
});
