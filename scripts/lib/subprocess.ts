// Runs a program to completion with a time limit and keeps its output; small helpers for processes
// and for quoting their output in messages.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

export function run(
  command: string,
  args: string[],
  options: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number },
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr
      ?.setEncoding('utf8')
      .on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-20_000)));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (error) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: `${stderr}${error.message}`, timedOut });
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, timedOut });
    });
  });
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Calls `onExit` once when the process that started this one has gone: its parent changed (POSIX
 * hands an orphan to init or a subreaper) or no longer exists (Windows keeps the old pid).
 */
export function watchParent(onExit: () => void, intervalMs = 250): void {
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid === parent && isAlive(parent)) return;
    clearInterval(timer);
    onExit();
  }, intervalMs);
  timer.unref();
}

/** A package manager's command line (npm, yarn, pnpm, bun). */
const RUNNER = /npm|yarn|bun/;

/**
 * The npm process that runs this script, for a script run by npm under `sh -c` (whose command
 * line names `marker`): its pid, to watch (npm killed without passing the signal on leaves its
 * shell, and this process under it, running); `gone` when it had gone before this process could
 * watch it (a shell that died of the signal while node was loading leaves init or a subreaper as
 * the parent; an npm that died leaves init as the shell's parent); null when that cannot be told
 * (no /proc) and the parent is not init. A parent that is npm itself (`npm run dev` `exec`s, and
 * npm may be a container's pid 1; yarn, pnpm and bun alike) is the runner.
 */
export function npmRunner(marker: string): number | 'gone' | null {
  const parent = process.ppid;
  let command: string;
  try {
    command = readFileSync(`/proc/${parent}/cmdline`, 'utf8');
  } catch {
    return parent === 1 ? 'gone' : null; // no /proc: the pid is all there is
  }
  if (!command.includes(marker)) return RUNNER.test(command) ? parent : 'gone';
  try {
    const stat = readFileSync(`/proc/${parent}/stat`, 'utf8');
    const grandparent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (grandparent > 1) return grandparent;
    // Init, unless npm is pid 1 (a container's `npm run …`) and its shell `exec`ed the command
    // (bash does: a single command is not forked), so that npm is the grandparent.
    return grandparent === 1 && RUNNER.test(readFileSync('/proc/1/cmdline', 'utf8')) ? 1 : 'gone';
  } catch {
    return null;
  }
}

/** Calls `onExit` once when the process `pid` no longer exists. */
export function watchProcess(pid: number, onExit: () => void, intervalMs = 250): void {
  const timer = setInterval(() => {
    if (isAlive(pid)) return;
    clearInterval(timer);
    onExit();
  }, intervalMs);
  timer.unref();
}

/** Whether `promise` settles within `ms`. */
export async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const errorMessage = (error: unknown): string =>
  error instanceof Error ? error.message : String(error);
export const tail = (text: string, max: number): string => text.trim().slice(-max);
export const firstLine = (text: string): string => text.split('\n')[0] ?? '';
export const lastLine = (text: string): string => text.trim().split('\n').pop() ?? '';
