// What `npm run bench` prints, on a run small enough for the suite: its own forgeries are counted
// in its figures, not reported as trouble.
import { spawn } from 'node:child_process';
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
  it('counts its forgeries as rejected without printing a warning for each', async () => {
    const run = await bench([
      ...['--messages', '2', '--senders', '1', '--concurrency', '2'],
      ...['--redeliveries', '0', '--statuses', '0', '--warmup', '0', '--forgeries', '5'],
    ]);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^forgeries: rejected, replies +5\/5, 0$/m);
    expect(run.stdout).toMatch(/^answered exactly once +2 \/ 2$/m);
    // Before, one "[warning] webhookReceive: webhook rejected code=BAD_SIGNATURE" line per forgery
    // (a hundred in a default run) came between the progress lines and the figures.
    expect(run.stderr).not.toMatch(/BAD_SIGNATURE/);
  }, 120_000);
});
