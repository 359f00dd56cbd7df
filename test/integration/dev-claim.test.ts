// One `npm run dev` per data folder (scripts/lib/dev-record.ts, claimDataDir), also when several
// start at once on a folder whose run has just ended: exactly one takes it over.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { claimDataDir } from '../../scripts/lib/dev-record';

const ROOT = path.resolve(__dirname, '..', '..');
const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

// Claims the folder at the time given, says how it went, and holds it (alive, so that the others
// see a live owner) until its stdin ends. The last argument names dev.ts: a dev.pid is taken for a
// live owner only when its process's command line does (a pid reused after a reboot is not).
const CLAIMER = `
const { claimDataDir } = require(${JSON.stringify(path.join(ROOT, 'scripts/lib/dev-record.ts'))});
const at = Number(process.env.CLAIM_AT);
while (Date.now() < at) {}
claimDataDir(process.env.CLAIM_DIR).then((owner) => {
  process.stdout.write(owner === undefined ? 'owner\\n' : 'refused ' + owner + '\\n');
  process.stdin.on('end', () => process.exit(0)).resume();
});
`;

async function claimAll(dir: string, count: number, at: number): Promise<string[]> {
  const children = Array.from({ length: count }, () =>
    spawn(process.execPath, ['--import', 'tsx', '-e', CLAIMER, 'dev.ts'], {
      cwd: ROOT,
      env: { ...process.env, CLAIM_DIR: dir, CLAIM_AT: String(at) },
      stdio: ['pipe', 'pipe', 'inherit'],
    }),
  );
  try {
    return await Promise.all(
      children.map(
        (child) =>
          new Promise<string>((resolve) => {
            let out = '';
            child.stdout.on('data', (chunk: Buffer) => {
              out += chunk.toString();
              if (out.endsWith('\n')) resolve(out.trim());
            });
            child.once('exit', () => resolve(out.trim()));
          }),
      ),
    );
  } finally {
    for (const child of children) child.stdin.end();
  }
}

describe('claiming the data folder', () => {
  it('several runs at once, as the run that held the folder ends: exactly one takes it over', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-claim-'));
    dirs.push(dir);
    const at = Date.now() + 3_000;
    // The run that holds the folder, ending (as when killed) 0.3 s after the others start
    // claiming: each waits for it, and they find it gone at about the same moment.
    const holder = spawn(process.execPath, [
      '-e',
      `setTimeout(() => {}, ${at + 300} - Date.now())`,
      'dev.ts',
    ]);
    writeFileSync(path.join(dir, 'dev.pid'), `${holder.pid}\n`);
    const results = await claimAll(dir, 4, at);
    const owner = readFileSync(path.join(dir, 'dev.pid'), 'utf8').trim();
    expect(results.sort()).toEqual(['owner', ...Array<string>(3).fill(`refused ${owner}`)]);
  }, 30_000);

  // A run killed as it took the claim lock (between making the folder and writing its owner, as a
  // version before did) left the lock without an owner: the next start waited 15 minutes, silent.
  for (const [name, owner] of [
    ['an empty owner file', ''],
    ['no owner file', undefined],
  ] as const) {
    it(`a claim lock with ${name}, left by a run killed as it took it, does not hold the next start`, async () => {
      const dir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-claim-'));
      dirs.push(dir);
      writeFileSync(path.join(dir, 'dev.pid'), '999999999\n');
      mkdirSync(path.join(dir, 'dev.pid.lock'));
      if (owner !== undefined) writeFileSync(path.join(dir, 'dev.pid.lock', 'owner'), owner);
      const started = Date.now();
      const claimed = await Promise.race([
        claimDataDir(dir),
        new Promise<string>((resolve) => setTimeout(() => resolve('still waiting'), 8_000)),
      ]);
      expect(claimed).toBeUndefined();
      expect(Date.now() - started).toBeLessThan(5_000);
      expect(readFileSync(path.join(dir, 'dev.pid'), 'utf8').trim()).toBe(String(process.pid));
      // The lock is given up, and nothing of taking it is left beside it.
      expect(readdirSync(dir).sort()).toEqual(['dev.pid']);
    }, 20_000);
  }
});
