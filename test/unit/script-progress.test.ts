// The operator scripts' progress off a terminal (CI, logs): never silent for long, even when a
// decile is minutes away (a million messages) or one database call takes long.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { PROGRESS_INTERVAL_MS, progress, working } from '../../scripts/lib/cli';
import { captureIo } from '../fixtures/scripts';

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe('progress off a terminal', () => {
  it('prints a line at every 10 %, and at least every interval between them', () => {
    const io = captureIo();
    const bar = progress(io, 'backing up', 1_000_000);
    bar.update(1);
    expect(io.stderr).toEqual(['backing up: 0% (1/1000000)']);
    // Slow going: 1,000 documents a second, a decile every 100 s.
    for (let s = 1; s <= 30; s++) {
      vi.advanceTimersByTime(1_000);
      bar.update(1 + s * 1_000);
    }
    expect(io.stderr.length).toBeGreaterThanOrEqual(1 + Math.floor(30_000 / PROGRESS_INTERVAL_MS) - 1);
    expect(io.stderr.at(-1)).toMatch(/^backing up: [23]% \(\d+\/1000000, \d+ s\)$/);
    bar.done();
  });

  it('prints a line while one call takes long (nothing moves)', () => {
    const io = captureIo();
    const bar = progress(io, 'restoring', 100);
    bar.update(10);
    const before = io.stderr.length;
    vi.advanceTimersByTime(3 * PROGRESS_INTERVAL_MS);
    expect(io.stderr.length).toBe(before + 3);
    bar.done();
    const after = io.stderr.length;
    vi.advanceTimersByTime(3 * PROGRESS_INTERVAL_MS);
    expect(io.stderr.length).toBe(after); // done: silent again
  });

  it('a step without progress of its own says so at the start and every interval until it ends', () => {
    const io = captureIo();
    const stop = working(io, 'counting');
    vi.advanceTimersByTime(2 * PROGRESS_INTERVAL_MS);
    stop();
    vi.advanceTimersByTime(2 * PROGRESS_INTERVAL_MS);
    expect(io.stderr).toEqual(['counting…', 'counting… (5 s)', 'counting… (10 s)']);
  });
});
