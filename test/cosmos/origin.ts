// Who sent a command: the app (shared/, functions/, scripts/) or the test code itself, told by the
// first frame of the (async) stack outside the driver and the recorder.
import path from 'node:path';
import type { CheckedCommand } from './rules';

const ROOT = path.resolve(__dirname, '..', '..');

/** Who sent a command: the first frame of the (async) stack outside the driver and this folder. */
export function originOf(stack: string | undefined): NonNullable<CheckedCommand['origin']> {
  for (const line of (stack ?? '').split('\n').slice(1)) {
    const file = /\(?((?:file:\/\/)?\/[^():]+):\d+:\d+\)?\s*$/.exec(line)?.[1]?.replace(/^file:\/\//, '');
    if (!file) continue;
    const relative = path.relative(ROOT, file).split(path.sep).join('/');
    if (relative.startsWith('..') || relative.includes('node_modules/')) continue;
    if (relative.startsWith('test/cosmos/') || relative === 'shared/data/client.ts') continue;
    if (relative.startsWith('test/')) return 'test';
    if (/^(shared|functions|scripts)\//.test(relative)) return 'app';
  }
  return 'unknown';
}

/**
 * Wraps a command handler so it receives each command with its sender. The wrapper is defined here,
 * in a folder the stack walk skips, so the frame of whoever registers it does not count as the sender.
 */
export function withOrigin<C extends Omit<CheckedCommand, 'origin'>>(
  handle: (command: C & { origin: NonNullable<CheckedCommand['origin']> }) => void,
): (command: C) => void {
  return (command) => {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 60;
    const stack = new Error().stack;
    Error.stackTraceLimit = limit;
    handle({ ...command, origin: originOf(stack) });
  };
}
