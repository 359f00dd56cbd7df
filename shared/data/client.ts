// The MongoDB client lifecycle and the error boundary of the data module: one client per process,
// created lazily and reused across invocations, with the options Cosmos DB for MongoDB (RU) needs.
import { MongoClient, MongoServerError, type CommandStartedEvent, type Db, type WriteError } from 'mongodb';
import { AppError, ErrorCode } from '../errors';

export const CLIENT_OPTIONS = {
  // Fail fast when the database is unreachable: the webhook answers 5xx and Meta delivers again.
  serverSelectionTimeoutMS: 5_000,
  connectTimeoutMS: 5_000,
  // Cosmos DB closes idle connections after a while; recycle ours first.
  maxIdleTimeMS: 120_000,
  // Cosmos DB for MongoDB (RU) does not support retryable writes.
  retryWrites: false,
  maxPoolSize: 20,
  // No appName of our own: an option here overrides the connection string's, and Cosmos DB wants
  // the one its connection string has (appName=@<account>@; connect-account, Driver Requirements).
} as const;

const clients = new Map<string, Promise<MongoClient>>();

/** What a command observer sees: one command the driver sent (round trips are counted with it). */
export interface ObservedCommand {
  readonly commandName: string;
  readonly databaseName: string;
  readonly command: Readonly<Record<string, unknown>>;
}
export type CommandObserver = (command: ObservedCommand) => void;

const observers = new Set<CommandObserver>();

/**
 * Registers an observer of every command sent by clients created from now on (the bench counts
 * round trips, the test suite checks Cosmos DB's rules). Returns the function that removes it.
 */
export function observeCommands(observer: CommandObserver): () => void {
  observers.add(observer);
  return () => observers.delete(observer);
}

/** Sends a client's commands to the observers; for clients made outside this module (tests). */
export function watchClient(client: MongoClient): MongoClient {
  client.on('commandStarted', (event: CommandStartedEvent) => {
    const observed: ObservedCommand = {
      commandName: event.commandName,
      databaseName: event.databaseName,
      command: event.command,
    };
    for (const observer of observers) observer(observed);
  });
  return client;
}

/** The process-wide client for a connection string, connected on first use. */
export function sharedClient(uri: string): Promise<MongoClient> {
  let client = clients.get(uri);
  if (!client) {
    const monitored = observers.size > 0;
    const created = new MongoClient(uri, { ...CLIENT_OPTIONS, monitorCommands: monitored });
    if (monitored) watchClient(created);
    client = created.connect().catch((error: unknown) => {
      clients.delete(uri);
      throw translateError(error);
    });
    clients.set(uri, client);
  }
  return client;
}

export async function sharedDb(uri: string, database: string): Promise<Db> {
  return (await sharedClient(uri)).db(database);
}

/** Closes every client this process opened (tests, scripts, the dev server on shutdown). */
export async function closeAllClients(): Promise<void> {
  const all = [...clients.values()];
  clients.clear();
  await Promise.allSettled(all.map(async (c) => (await c).close()));
}

const THROTTLED = 16500;
const DUPLICATE_KEY = 11000;
const EXCEEDED_TIME_LIMIT = 50;
const MAX_RETRY_AFTER_MS = 5_000;

export function isDuplicateKey(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === DUPLICATE_KEY;
}

/** One write's error in a bulk write's answer (the driver exports its class as a type only). */
const isWriteError = (error: unknown): error is Pick<WriteError, 'code' | 'errmsg' | 'index'> =>
  typeof error === 'object' &&
  error !== null &&
  !(error instanceof Error) &&
  typeof (error as { index?: unknown }).index === 'number' &&
  typeof (error as { code?: unknown }).code === 'number';

/**
 * Cosmos DB's throttling (16500), of a whole command or of one write of a bulk write (a
 * `WriteError` with its own code: the other writes of the batch were applied).
 */
export function isThrottled(error: unknown): boolean {
  const coded =
    error instanceof MongoServerError
      ? { code: error.code, text: error.message }
      : isWriteError(error)
        ? { code: error.code, text: error.errmsg ?? '' }
        : null;
  return (
    coded !== null && (coded.code === THROTTLED || /TooManyRequests|Request rate is large/i.test(coded.text))
  );
}

/**
 * Cosmos DB's request time limit (error 50, ExceededTimeLimit): a request that ran past 60 s, or
 * throttling retried on the server (Server Side Retry) until then. Transient, but never sent
 * again here: a write that got it may have been applied ("may result in duplicate writes").
 */
export function isTimeLimit(error: unknown): boolean {
  return error instanceof MongoServerError && error.code === EXCEEDED_TIME_LIMIT;
}

/** Cosmos DB says how long to wait: "RetryAfterMs=123" in the message (or errorLabels/ details). */
export function retryAfterMs(error: unknown, attempt: number): number {
  const text = error instanceof Error ? error.message : isWriteError(error) ? (error.errmsg ?? '') : '';
  const match = /RetryAfterMs=(\d+)/i.exec(text);
  const advised = match ? Number(match[1]) : 100 * 2 ** attempt;
  return Math.min(MAX_RETRY_AFTER_MS, advised) + Math.floor(Math.random() * 20);
}

function isUnavailable(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  return /MongoServerSelectionError|MongoNetworkError|MongoNetworkTimeoutError|MongoTopologyClosedError|MongoNotConnectedError|PoolClearedError/.test(
    error.name,
  );
}

/** Maps driver errors to application errors; duplicate keys stay as they are for callers to handle. */
export function translateError(error: unknown): unknown {
  if (error instanceof AppError) return error;
  if (isThrottled(error) || isTimeLimit(error))
    return new AppError(ErrorCode.THROTTLED, 'database throttled the request', { cause: error });
  if (isUnavailable(error))
    return new AppError(ErrorCode.UNAVAILABLE, 'database unreachable', { cause: error });
  return error;
}
