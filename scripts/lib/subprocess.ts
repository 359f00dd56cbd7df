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

/**
 * Whether the process that started this one had gone before this one could watch it: a run by npm
 * whose shell died of a signal while node was loading has init (pid 1) or a subreaper as its parent,
 * which never goes. Linux tells by the parent's command line: npm's shell (it names `marker`) or
 * npm itself (a shell that `exec`s, or npm as a container's pid 1); elsewhere only pid 1 counts.
 */
export function orphanedAtStart(marker: string): boolean {
  if (process.platform === 'win32') return false;
  let command: string;
  try {
    command = readFileSync(`/proc/${process.ppid}/cmdline`, 'utf8');
  } catch {
    return process.ppid === 1; // no /proc: the pid is all there is
  }
  // npm itself may be pid 1 (a container's command): its child is not an orphan.
  return !command.includes(marker) && !/npm/.test(command);
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
