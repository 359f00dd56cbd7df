// The queue and timer half of the local host (`npm run dev`, tests, bench): consumes Azure Storage
// queues (Azurite) with @azure/storage-queue the way the Functions host does with host.json's
// `extensions.queues` settings: message encoding, batch size and new-batch threshold, polling with
// backoff, a visibility timeout between attempts, `dequeueCount` in the trigger metadata, and after
// `maxDequeueCount` failed attempts the message moved to `<queue>-poison`. Output bindings are
// written before the message is deleted; an invocation that outlasts host.json's `functionTimeout`
// has failed (its outputs are dropped). As the host's queue extension does
// (Microsoft.Azure.WebJobs.Extensions.Storage.Queues: QueueProcessor, QueueListenerFactory,
// QueueServiceClientProvider): a message that is not base64 (under that encoding) goes to the poison
// queue at once, unchanged and unseen by the function; one received more than `maxDequeueCount`
// times (its earlier attempts died with their process) goes there without a call; and a queue whose
// name ends in `-poison` has no poison queue: an item that fails there is left invisible, and one
// past `maxDequeueCount` is never handed over again, so it stays where it is.
import { InvocationContext, type StorageQueueOutput } from '@azure/functions';
import { QueueServiceClient, type QueueClient, type DequeuedMessageItem } from '@azure/storage-queue';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { FunctionDefinition, QueueDefinition, TimerDefinition } from '../../functions/definition-types';
import { scrub } from '../../shared/log';
import { nextOccurrence, parseSchedule, resolveSchedule } from './ncrontab';

export type HostLog = (level: string, functionName: string, message: string) => void;

export interface QueueSettings {
  readonly batchSize: number;
  readonly newBatchThreshold: number;
  readonly maxDequeueCount: number;
  /** Delay before a failed message is visible again (host.json `visibilityTimeout`). */
  readonly visibilityTimeoutMs: number;
  readonly maxPollingIntervalMs: number;
  readonly messageEncoding: 'base64' | 'none';
  /** host.json `functionTimeout` (Flex Consumption's default: 30 minutes). */
  readonly functionTimeoutMs: number;
}

export interface QueueHostOptions {
  readonly definitions: readonly FunctionDefinition[];
  readonly connectionString: string;
  /** Default: host.json's extensions.queues. */
  readonly settings?: Partial<QueueSettings>;
  readonly log?: HostLog;
  /** Invisibility of a message while its handler runs, renewed at a third of it (default 30 s). */
  readonly leaseSeconds?: number;
  /** Timers also run once when the host starts (by function name). */
  readonly runOnStart?: readonly string[];
  /** How long a stop waits for the running handlers (default 5 s); the rest is left to their leases. */
  readonly stopGraceMs?: number;
}

export interface QueueHost {
  /** Writes items to a queue as an output binding does (JSON unless a string; then encoded). */
  send(queueName: string, items: readonly unknown[]): Promise<void>;
  /** Resolves when every trigger queue is empty and no handler runs. */
  idle(options?: { timeoutMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

/** The queue host as started here: it can also be told that a queue was written from elsewhere. */
export interface LocalQueueHost extends QueueHost {
  /** Polls `queueName` at once (written by another thread), as after a write of its own. */
  wake(queueName: string): void;
}

const timespanMs = (value: unknown, fallback: number): number => {
  const m = typeof value === 'string' ? /^(\d+):(\d{2}):(\d{2})(?:\.(\d+))?$/.exec(value) : null;
  if (!m) return fallback;
  return ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(`0.${m[4] ?? '0'}`) * 1000;
};

/** host.json's queue settings and function timeout, with the Functions host's defaults. */
export function hostQueueSettings(file = path.resolve(__dirname, '../../host.json')): QueueSettings {
  let queues: Record<string, unknown> = {};
  let functionTimeout: unknown;
  try {
    const host = JSON.parse(readFileSync(file, 'utf8')) as {
      extensions?: { queues?: Record<string, unknown> };
      functionTimeout?: unknown;
    };
    queues = host.extensions?.queues ?? {};
    functionTimeout = host.functionTimeout;
  } catch {
    // no host.json: the defaults below
  }
  const batchSize = typeof queues['batchSize'] === 'number' ? queues['batchSize'] : 16;
  return {
    batchSize,
    newBatchThreshold:
      typeof queues['newBatchThreshold'] === 'number'
        ? queues['newBatchThreshold']
        : Math.floor(batchSize / 2),
    maxDequeueCount: typeof queues['maxDequeueCount'] === 'number' ? queues['maxDequeueCount'] : 5,
    visibilityTimeoutMs: timespanMs(queues['visibilityTimeout'], 0),
    maxPollingIntervalMs: timespanMs(queues['maxPollingInterval'], 60_000),
    messageEncoding: queues['messageEncoding'] === 'none' ? 'none' : 'base64',
    functionTimeoutMs: timespanMs(functionTimeout, 30 * 60_000),
  };
}

/**
 * The text of a base64 message as .NET's Convert.FromBase64String reads it (the host's decoder),
 * or null where it refuses it; Node's own decoder skips what it cannot read instead.
 */
export function decodeBase64Strict(text: string): string | null {
  const compact = text.replace(/[ \t\r\n]/g, '');
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) return null;
  return Buffer.from(compact, 'base64').toString('utf8');
}

/** The queue the host moves a queue's failed items to: none for a poison queue itself. */
export function poisonQueueOf(queueName: string): string | null {
  const poison = `${queueName}-poison`;
  return queueName.endsWith('-poison') || poison.length > 63 ? null : poison;
}

/** A time as the host hands it to a Node function: Json.NET's DateTimeOffset, `…+00:00`. */
const hostTime = (date: Date) => date.toISOString().replace(/(\.000)?Z$/, '+00:00');

/** What Node's library does to the host's keys and nested values (toCamelCase.ts): first letter lowered. */
const camelKey = (key: string) => key.charAt(0).toLowerCase() + key.slice(1);
function camelValue(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) return value.map(camelValue);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [camelKey(k), camelValue(v)]));
}

/**
 * `context.triggerMetadata` of a queue function as the Functions host builds it
 * (Microsoft.Azure.WebJobs.Extensions.Storage.Queues, QueueTriggerBinding.CreateBindingData): the
 * message's text (`queueTrigger`), id, dequeueCount, times and pop receipt, then, for a JSON object,
 * its top-level properties, which win over those of the same name in any case ("In case of
 * conflict, binding data from the value type overrides the built-in binding data";
 * Azure/azure-functions-nodejs-library#459, Azure/azure-webjobs-sdk-extensions#882). The Node
 * library lowers each key's first letter, nested keys included (src/converters/toCamelCase.ts).
 */
export function queueTriggerMetadata(
  message: Pick<
    DequeuedMessageItem,
    'messageId' | 'dequeueCount' | 'insertedOn' | 'expiresOn' | 'nextVisibleOn' | 'popReceipt'
  >,
  text: string,
  item: unknown,
): Record<string, unknown> {
  // A case-insensitive dictionary: a key keeps the spelling it was first added with.
  const data = new Map<string, [key: string, value: unknown]>();
  const set = (key: string, value: unknown) =>
    data.set(key.toLowerCase(), [data.get(key.toLowerCase())?.[0] ?? key, value]);
  set('QueueTrigger', text);
  set('DequeueCount', message.dequeueCount);
  set('ExpirationTime', hostTime(message.expiresOn));
  set('Id', message.messageId);
  set('InsertionTime', hostTime(message.insertedOn));
  set('NextVisibleTime', hostTime(message.nextVisibleOn));
  set('PopReceipt', message.popReceipt);
  if (typeof item === 'object' && item !== null && !Array.isArray(item))
    for (const [key, value] of Object.entries(item)) set(key, value);
  return Object.fromEntries([...data.values()].map(([key, value]) => [camelKey(key), camelValue(value)]));
}

export function invocationContext(
  functionName: string,
  log: HostLog,
  extra: Partial<ConstructorParameters<typeof InvocationContext>[0]> = {},
): InvocationContext {
  return new InvocationContext({
    invocationId: randomUUID(),
    functionName,
    logHandler: (level, ...args) => log(level, functionName, args.map(String).join(' ')),
    ...extra,
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The longest delay setTimeout honours. */
const MAX_TIMEOUT_MS = 2_147_483_647;
const errorName = (error: unknown) =>
  error instanceof Error ? `${error.name}: ${scrub(error.message).slice(0, 160)}` : 'error';

export async function startQueueHost(options: QueueHostOptions): Promise<LocalQueueHost> {
  const settings: QueueSettings = { ...hostQueueSettings(), ...options.settings };
  const log: HostLog =
    options.log ?? ((level, name, message) => process.stderr.write(`[${level}] ${name}: ${message}\n`));
  const leaseSeconds = options.leaseSeconds ?? 30;
  const service = QueueServiceClient.fromConnectionString(options.connectionString);
  const clients = new Map<string, QueueClient>();
  const client = async (name: string): Promise<QueueClient> => {
    let queue = clients.get(name);
    if (!queue) {
      queue = service.getQueueClient(name);
      await queue.createIfNotExists();
      clients.set(name, queue);
    }
    return queue;
  };
  const encode = (text: string) =>
    settings.messageEncoding === 'base64' ? Buffer.from(text, 'utf8').toString('base64') : text;
  const decode = (text: string): string | null =>
    settings.messageEncoding === 'base64' ? decodeBase64Strict(text) : text;

  const queueDefs = options.definitions.filter((d): d is QueueDefinition => d.kind === 'queue');
  const timerDefs = options.definitions.filter((d): d is TimerDefinition => d.kind === 'timer');
  let stopping = false;
  let running = 0;
  const wakers = new Map<string, () => void>();
  const loops: Promise<void>[] = [];
  const timers = new Set<NodeJS.Timeout>();
  /** The lease renewals of the messages being handled (a stop ends those left running). */
  const renewals = new Set<NodeJS.Timeout>();
  /** The handlers running now, by the function's name. */
  const inFlight = new Map<Promise<void>, string>();

  async function send(queueName: string, items: readonly unknown[]): Promise<void> {
    const queue = await client(queueName);
    for (const item of items) {
      await queue.sendMessage(encode(typeof item === 'string' ? item : JSON.stringify(item)));
    }
    // Like the Functions host, a queue written here is polled at once, not after the backoff.
    wakers.get(queueName)?.();
  }

  /** Copies the message, as it is on the wire, to the poison queue, then deletes it. */
  async function moveToPoison(
    queue: QueueClient,
    message: DequeuedMessageItem,
    popReceipt: string,
    poison: string,
  ) {
    await (await client(poison)).sendMessage(message.messageText);
    wakers.get(poison)?.();
    await queue.deleteMessage(message.messageId, popReceipt).catch(() => undefined);
  }

  /** Fails after the function timeout, as the host does; the handler itself cannot be stopped. */
  function withinTimeout(work: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Timeout value of ${settings.functionTimeoutMs} ms was exceeded`)),
        Math.min(settings.functionTimeoutMs, MAX_TIMEOUT_MS),
      );
    });
    return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
  }

  async function handle(definition: QueueDefinition, queue: QueueClient, message: DequeuedMessageItem) {
    const poison = poisonQueueOf(definition.queueName);
    const text = decode(message.messageText);
    if (text === null || message.dequeueCount > settings.maxDequeueCount) {
      // Never handed to the function. Without a poison queue it stays invisible until its lease
      // ends, and comes back only to be set aside again.
      const why = text === null ? 'is not base64' : `was received ${message.dequeueCount} times`;
      const where = poison ? `moved to ${poison}` : 'left where it is (a poison queue has none)';
      log('warning', definition.name, `message ${why}; ${where}`);
      if (poison) await moveToPoison(queue, message, message.popReceipt, poison);
      return;
    }
    let popReceipt = message.popReceipt;
    // Keeps the message invisible while the handler runs, as the host's renewal does. A renewal
    // gives the message a new pop receipt: the delete or release after the handler waits for the
    // one under way, or it would use the old receipt, which the queue refuses (400
    // PopReceiptMismatch), and a handler that succeeded would count as failed and run again.
    let renewing: Promise<void> = Promise.resolve();
    const renew = setInterval(
      () => {
        renewing = queue
          .updateMessage(message.messageId, popReceipt, undefined, leaseSeconds)
          .then((r) => {
            if (r.popReceipt) popReceipt = r.popReceipt;
          })
          .catch(() => undefined);
      },
      (leaseSeconds * 1000) / 3,
    );
    renewals.add(renew);
    const stopRenewing = async () => {
      clearInterval(renew);
      renewals.delete(renew);
      await renewing;
    };
    let item: unknown = text;
    try {
      item = JSON.parse(text);
    } catch {
      // not JSON: handed over as a string, like the host does
    }
    const outputs: StorageQueueOutput[] = definition.queueOutputs ?? [];
    const ctx = invocationContext(definition.name, log, {
      triggerMetadata: queueTriggerMetadata({ ...message, popReceipt }, text, item),
      options: { trigger: { type: 'queueTrigger', name: 'queueItem' }, extraOutputs: outputs },
    });
    try {
      await withinTimeout(definition.handler(item, ctx));
      for (const output of outputs) {
        const value = ctx.extraOutputs.get(output);
        if (value === undefined) continue;
        await send(String(output['queueName']), Array.isArray(value) ? value : [value]);
      }
      await stopRenewing();
      await queue.deleteMessage(message.messageId, popReceipt);
    } catch (error) {
      await stopRenewing();
      const name = errorName(error);
      if (!poison) {
        // No poison queue: left invisible until its lease ends, not released (no fast loop).
        log('warning', definition.name, `attempt ${message.dequeueCount} failed (${name}); will retry`);
      } else if (message.dequeueCount >= settings.maxDequeueCount) {
        log(
          'warning',
          definition.name,
          `attempt ${message.dequeueCount} failed (${name}); moved to ${poison}`,
        );
        await moveToPoison(queue, message, popReceipt, poison);
      } else {
        log('warning', definition.name, `attempt ${message.dequeueCount} failed (${name}); will retry`);
        await queue
          .updateMessage(
            message.messageId,
            popReceipt,
            undefined,
            Math.round(settings.visibilityTimeoutMs / 1000),
          )
          .catch(() => undefined);
      }
    }
  }

  async function consume(definition: QueueDefinition): Promise<void> {
    const queue = await client(definition.queueName);
    const minPoll = 50;
    let poll = minPoll;
    let wake: (() => void) | undefined;
    wakers.set(definition.queueName, () => wake?.());
    let finished: (() => void) | undefined;
    while (!stopping) {
      if (countOf(definition) > settings.newBatchThreshold) {
        await new Promise<void>((resolve) => (finished = resolve));
        continue;
      }
      let messages: DequeuedMessageItem[] = [];
      try {
        messages = (
          await queue.receiveMessages({
            numberOfMessages: settings.batchSize,
            visibilityTimeout: leaseSeconds,
          })
        ).receivedMessageItems;
      } catch (error) {
        if (stopping) break;
        log('warning', definition.name, `receive failed (${errorName(error)}); retrying`);
      }
      if (messages.length === 0) {
        // Stopped while receiving: the wake came before this sleep could hear it.
        if (stopping) break;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, poll);
          wake = () => {
            clearTimeout(timer);
            poll = minPoll;
            resolve();
          };
        });
        wake = undefined;
        poll = Math.min(poll * 2, settings.maxPollingIntervalMs);
        continue;
      }
      poll = minPoll;
      for (const message of messages) {
        running++;
        counts.set(definition.queueName, countOf(definition) + 1);
        const task = handle(definition, queue, message)
          .catch((error: unknown) => log('error', definition.name, `host error: ${errorName(error)}`))
          .finally(() => {
            running--;
            counts.set(definition.queueName, countOf(definition) - 1);
            inFlight.delete(task);
            finished?.();
            finished = undefined;
          });
        inFlight.set(task, definition.name);
      }
    }
    finished?.();
  }
  const counts = new Map<string, number>();
  const countOf = (definition: QueueDefinition) => counts.get(definition.queueName) ?? 0;

  function schedule(definition: TimerDefinition, runNow: boolean): void {
    const fields = parseSchedule(resolveSchedule(definition.schedule));
    let last = new Date();
    /** An invocation still runs: like the host, a timer does not fire again until it has ended. */
    let busy = false;
    const fire = (pastDue: boolean) => {
      busy = true;
      const next = nextOccurrence(fields, new Date());
      const timer: Parameters<TimerDefinition['handler']>[0] = {
        isPastDue: pastDue,
        schedule: { adjustForDST: false },
        scheduleStatus: {
          last: last.toISOString(),
          next: next.toISOString(),
          lastUpdated: new Date().toISOString(),
        },
      };
      last = new Date();
      running++;
      // A timer's queue outputs are written after it returns, as the host does (the sweeper's jobs).
      const outputs: StorageQueueOutput[] = definition.queueOutputs ?? [];
      const ctx = invocationContext(definition.name, log, {
        options: { trigger: { type: 'timerTrigger', name: 'timer' }, extraOutputs: outputs },
      });
      const task = withinTimeout(definition.handler(timer, ctx))
        .then(async () => {
          for (const output of outputs) {
            const value = ctx.extraOutputs.get(output);
            if (value === undefined) continue;
            await send(String(output['queueName']), Array.isArray(value) ? value : [value]);
          }
        })
        .catch((error: unknown) =>
          // Stopping: what it used (the database client) may close before it ends, as in Azure.
          stopping
            ? log('warning', definition.name, `stopped before it finished (${errorName(error)})`)
            : log('error', definition.name, `timer failed (${errorName(error)})`),
        )
        .finally(() => {
          busy = false;
          running--;
          inFlight.delete(task);
        });
      inFlight.set(task, definition.name);
    };
    const arm = () => {
      if (stopping) return;
      const next = nextOccurrence(fields, new Date());
      const wait = Math.max(0, next.getTime() - Date.now());
      // setTimeout fires at once past 2^31-1 ms (24.8 days): wait in steps for a far occurrence.
      const handle = setTimeout(
        () => {
          timers.delete(handle);
          // An occurrence while the last invocation runs is skipped (a sweep longer than a minute
          // under load is not joined by a second one), as Azure's timer trigger does.
          if (wait <= MAX_TIMEOUT_MS && !busy) fire(false);
          arm();
        },
        Math.min(wait, MAX_TIMEOUT_MS),
      );
      timers.add(handle);
    };
    if (runNow) fire(false);
    arm();
  }

  for (const definition of queueDefs) {
    await client(definition.queueName);
    loops.push(consume(definition));
  }
  for (const definition of timerDefs)
    schedule(definition, options.runOnStart?.includes(definition.name) ?? false);

  return {
    send,
    wake: (queueName) => wakers.get(queueName)?.(),
    async idle({ timeoutMs = 60_000 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (running === 0) {
          let waiting = 0;
          for (const definition of queueDefs) {
            waiting +=
              (await (await client(definition.queueName)).getProperties()).approximateMessagesCount ?? 0;
          }
          if (waiting === 0 && running === 0) return;
        }
        if (Date.now() > deadline) throw new Error('queues did not become idle in time');
        await sleep(50);
      }
    },
    async stop() {
      stopping = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const wake of wakers.values()) wake();
      // Running handlers finish (bounded); an unfinished message becomes visible again later.
      await Promise.race([Promise.all([...inFlight.keys(), ...loops]), sleep(options.stopGraceMs ?? 5_000)]);
      // No longer held by this host: their messages come back when the last lease given ends.
      for (const renew of renewals) clearInterval(renew);
      renewals.clear();
      if (inFlight.size) {
        const names = [...inFlight.values()];
        const counted = [...new Set(names)].map(
          (name) => `${name} ×${names.filter((n) => n === name).length}`,
        );
        log(
          'warning',
          'host',
          `stopped with ${inFlight.size} function(s) still running (${counted.join(', ')}): ` +
            'what they held comes back when its lease ends (a message in a queue, a reply lock)',
        );
      }
    },
  };
}
