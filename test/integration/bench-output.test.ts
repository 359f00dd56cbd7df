// What `npm run bench` prints, on a run small enough for the suite: its own forgeries are counted
// in its figures, not reported as trouble.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, inject, it } from 'vitest';

function bench(args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/run.ts', ...args], {
      // The suite's database server: the bench works in a database of its own there and drops it.
      env: { ...process.env, MONGODB_URI: inject('mongoUri') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

describe('npm run bench', () => {
  it('counts its forgeries as rejected without printing a warning for each, and writes --json', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-json-'));
    const json = path.join(dir, 'figures.json');
    const run = await bench([
      ...['--messages', '2', '--senders', '1', '--concurrency', '2'],
      ...['--redeliveries', '0', '--statuses', '0', '--warmup', '0', '--forgeries', '5', '--json', json],
    ]);
    const figures = JSON.parse(readFileSync(json, 'utf8')) as { forgeries: unknown };
    rmSync(dir, { recursive: true, force: true });
    expect(figures.forgeries).toEqual({ sent: 5, rejected: 5, replies: 0 });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^forgeries: rejected, replies +5\/5, 0$/m);
    expect(run.stdout).toMatch(/^answered exactly once +2 \/ 2$/m);
    // Before, one "[warning] webhookReceive: webhook rejected code=BAD_SIGNATURE" line per forgery
    // (a hundred in a default run) came between the progress lines and the figures.
    expect(run.stderr).not.toMatch(/BAD_SIGNATURE/);
  }, 120_000);
});
