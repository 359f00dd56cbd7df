// The queue and timer functions of the local host in a thread of their own, at a lower CPU priority
// than the HTTP functions (`npm run dev`, the bench). In Azure, Flex Consumption scales functions in
// groups: the HTTP functions share instances, and every other function gets instances of its own
// (learn.microsoft.com/azure/azure-functions/flex-consumption-plan, "Per-function scaling"), so the
// webhook's acknowledgement never waits behind ingest or a reply. One process on a laptop is the
// other way round: every handler shares one event loop and the same cores. Here the HTTP functions
// keep the process's main thread, and the queue host (./queue-host) runs in a worker thread with its
// own event loop, asking the scheduler for less CPU (a higher nice value, Linux only) so that an
// acknowledgement is served first when both want a core. What the functions do is unchanged: the
// same definitions, queues, settings and database, the same environment (shared with the thread).
//
// This file is both sides: `startQueueThread` for the host's process, and the thread's own code,
// which runs when it is loaded as a worker.
import { readlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isMainThread, parentPort, SHARE_ENV, Worker, workerData } from 'node:worker_threads';
import type { FunctionDefinition } from '../../functions/definition-types';
import { scrub } from '../../shared/log';
import { startQueueHost, type HostLog, type QueueHost, type QueueHostOptions } from './queue-host';

/** What the thread is given: where its definitions come from, and the queue host's options. */
interface ThreadData {
  /** Module whose `definitions` export holds the functions (the app's by default). */
  readonly module: string;
  /** The names of the queue and timer functions the thread runs. */
  readonly names: readonly string[];
  readonly options: Omit<QueueHostOptions, 'definitions' | 'log'>;
  /** The nice value the thread asks for (0: the process's own). */
  readonly nice: number;
  /** Counts the database commands the thread's functions send (the bench's round trips). */
  readonly countCommands: boolean;
}

type ToThread = { id: number; type: 'idle'; timeoutMs?: number } | { id: number; type: 'stop' | 'commands' };
type FromThread =
  | { type: 'ready' }
  | { type: 'failed'; message: string }
  | { type: 'logs'; lines: [level: string, name: string, message: string][] }
  | { type: 'done'; id: number; error?: string; commands?: Record<string, number> };

/** The app's function definitions (functions/definitions.ts), as a module path. */
export const APP_DEFINITIONS = path.resolve(__dirname, '../../functions/definitions');

/** The niceness the queue thread asks for: below the HTTP functions, not starved. */
export const QUEUE_THREAD_NICE = 10;

export interface QueueThread extends QueueHost {
  /** Database commands sent by the thread's functions so far, by command name (when counted). */
  commands(): Promise<Record<string, number>>;
  /** Rejects when the thread stops by itself (an error nothing caught): its functions no longer run. */
  readonly failed: Promise<never>;
}

export interface QueueThreadOptions extends Omit<QueueHostOptions, 'log'> {
  /** Module whose `definitions` export holds `definitions`' queue and timer functions. */
  readonly module?: string;
  readonly log: HostLog;
  readonly nice?: number;
  readonly countCommands?: boolean;
}

/**
 * Runs the queue and timer functions among `options.definitions` in a worker thread (the HTTP
 * functions are left to the caller), and writes queue outputs from this thread as `send` does.
 */
export async function startQueueThread(options: QueueThreadOptions): Promise<QueueThread> {
  const names = options.definitions.filter((d) => d.kind !== 'http').map((d) => d.name);
  const data: ThreadData = {
    module: options.module ?? APP_DEFINITIONS,
    names,
    options: {
      connectionString: options.connectionString,
      ...(options.settings ? { settings: options.settings } : {}),
      ...(options.leaseSeconds !== undefined ? { leaseSeconds: options.leaseSeconds } : {}),
      ...(options.runOnStart ? { runOnStart: options.runOnStart } : {}),
    },
    nice: options.nice ?? QUEUE_THREAD_NICE,
    countCommands: options.countCommands ?? false,
  };
  // This process writes the HTTP functions' queue outputs itself: a host with no queue functions.
  const sender = await startQueueHost({
    definitions: options.definitions.filter((d) => d.kind === 'http'),
    connectionString: options.connectionString,
    log: options.log,
  });
  // Run from source (tsx), the thread registers the same loader before it loads this file.
  const worker = __filename.endsWith('.ts')
    ? new Worker(
        `require('tsx/cjs/api').register();
         import('tsx/esm/api').then(({ register }) => { register(); require(${JSON.stringify(__filename)}); });`,
        { eval: true, workerData: data, env: SHARE_ENV },
      )
    : new Worker(__filename, { workerData: data, env: SHARE_ENV });
  let nextId = 0;
  const waiting = new Map<
    number,
    { resolve: (m: FromThread & { type: 'done' }) => void; reject: (e: Error) => void }
  >();
  let stopped = false;
  let exited = false;
  let onFailure: (error: Error) => void = () => undefined;
  const failed = new Promise<never>((_, reject) => (onFailure = reject));
  failed.catch(() => undefined);
  /** Ends every call waiting for the thread's answer: a thread that has ended answers none. */
  const endCalls = (error: Error) => {
    for (const { reject } of waiting.values()) reject(error);
    waiting.clear();
  };
  const fail = (error: Error) => {
    endCalls(error);
    onFailure(error);
  };
  const started = new Promise<void>((resolve, reject) => {
    worker.on('message', (message: FromThread) => {
      if (message.type === 'ready') resolve();
      else if (message.type === 'failed') reject(new Error(message.message));
      else if (message.type === 'logs') for (const line of message.lines) options.log(...line);
      else {
        const call = waiting.get(message.id);
        waiting.delete(message.id);
        if (message.error) call?.reject(new Error(message.error));
        else call?.resolve(message);
      }
    });
    worker.on('error', (error) => {
      reject(error);
      // The error as it was thrown (its stack says where) is the cause; numbers and tokens removed.
      fail(
        new Error(`the queue functions' thread failed: ${error.name}: ${scrub(error.message)}`, {
          cause: error,
        }),
      );
    });
    worker.on('exit', (code) => {
      exited = true;
      const error = new Error(`the queue functions' thread stopped (exit code ${code})`);
      reject(error);
      // Stopped meanwhile (a stop right after its error, before it exited): `stop`'s own call
      // still waits on an answer, and ends here.
      if (!stopped) fail(error);
      else endCalls(error);
    });
  });
  try {
    await started;
  } catch (error) {
    stopped = true;
    await worker.terminate();
    await sender.stop();
    throw error;
  }
  const call = (message: Omit<ToThread, 'id'>) =>
    new Promise<FromThread & { type: 'done' }>((resolve, reject) => {
      if (exited) return reject(new Error("the queue functions' thread has stopped"));
      const id = ++nextId;
      waiting.set(id, { resolve, reject });
      worker.postMessage({ ...message, id });
    });

  return {
    failed,
    async send(queueName, items) {
      await sender.send(queueName, items);
      // As in one process: a queue written here is polled at once, not after the backoff.
      worker.postMessage({ type: 'wake', queueName });
    },
    async idle(idleOptions) {
      await call({ type: 'idle', ...(idleOptions?.timeoutMs ? { timeoutMs: idleOptions.timeoutMs } : {}) });
    },
    async commands() {
      return (await call({ type: 'commands' })).commands ?? {};
    },
    async stop() {
      if (!stopped) {
        stopped = true;
        await call({ type: 'stop' }).catch(() => undefined);
        await worker.terminate();
      }
      await sender.stop();
    },
  };
}

/** Lowers this thread's priority (Linux: a thread has its own nice value, set through its id). */
function lowerPriority(nice: number): void {
  if (nice <= 0 || process.platform !== 'linux') return;
  try {
    const tid = Number(path.basename(readlinkSync('/proc/thread-self')));
    os.setPriority(tid, Math.max(os.getPriority(tid), nice));
  } catch {
    // Not allowed or not known here: the thread runs at the process's priority.
  }
}

async function runThread(data: ThreadData): Promise<void> {
  const port = parentPort;
  if (!port) return;
  const post = (message: FromThread) => port.postMessage(message);
  try {
    lowerPriority(data.nice);
    const commands: Record<string, number> = {};
    if (data.countCommands) {
      const { observeCommands } = await import('../../shared/data');
      observeCommands((command) => {
        commands[command.commandName] = (commands[command.commandName] ?? 0) + 1;
      });
    }
    const loaded = (await import(data.module)) as { definitions?: readonly FunctionDefinition[] };
    const definitions = (loaded.definitions ?? []).filter((d) => data.names.includes(d.name));
    const missing = data.names.filter((name) => !definitions.some((d) => d.name === name));
    if (missing.length)
      throw new Error(
        `${data.module} does not define ${missing.join(', ')} (the queue thread runs only its own)`,
      );
    // Log lines go over in batches: a message between threads costs more than a line. Messages
    // arrive in order, so the lines waiting go before any answer (`stop`'s last lines included).
    let lines: [string, string, string][] = [];
    const flush = () => {
      if (!lines.length) return;
      post({ type: 'logs', lines });
      lines = [];
    };
    const host = await startQueueHost({
      ...data.options,
      definitions,
      log: (level, name, message) => {
        if (lines.push([level, name, message]) === 1) setImmediate(flush);
      },
    });
    port.on('message', (message: ToThread | { type: 'wake'; queueName: string }) => {
      if (message.type === 'wake') return host.wake(message.queueName);
      const work =
        message.type === 'idle'
          ? host.idle(message.timeoutMs ? { timeoutMs: message.timeoutMs } : {})
          : message.type === 'stop'
            ? host.stop()
            : Promise.resolve();
      work.then(
        () => {
          flush();
          post({ type: 'done', id: message.id, ...(message.type === 'commands' ? { commands } : {}) });
        },
        (error: unknown) => {
          flush();
          post({
            type: 'done',
            id: message.id,
            error: error instanceof Error ? error.message : String(error),
          });
        },
      );
    });
    post({ type: 'ready' });
  } catch (error) {
    // Said by `npm run dev` as it stops: scrubbed like the log (numbers, bearer tokens).
    post({ type: 'failed', message: scrub(error instanceof Error ? error.message : String(error)) });
  }
}

if (!isMainThread && (workerData as Partial<ThreadData> | null)?.module)
  void runThread(workerData as ThreadData);
