// npm run replay-poison [-- --queue inbound] [--dry-run]: moves the items the host set aside in
// `<queue>-poison` (after maxDequeueCount failed attempts) back onto `<queue>`, unchanged, and for
// `inbound` the notifications kept in the database (shared/bot/poisoned), so they are processed
// again once the cause is fixed. Ingest is idempotent: nothing is stored twice.
import path from 'node:path';
import { QueueServiceClient } from '@azure/storage-queue';
import { INBOUND_QUEUE, MAX_INLINE_BYTES, REPLY_QUEUE, spillBody } from '../shared/bot/jobs';
import type { DataStore } from '../shared/data';
import { sleep } from '../shared/time';
import { resolveStorage } from './lib/azurite';
import { hostQueueSettings } from './lib/queue-host';
import {
  parseCli,
  printSummary,
  progress,
  runMain,
  ScriptError,
  seconds,
  UsageError,
  withDataStore,
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run replay-poison [-- --queue NAME] [--dry-run]

Moves every item of <NAME>-poison back onto <NAME> (default NAME: inbound; also: reply-jobs),
unchanged, and prints how many it moved. Only the items waiting when it starts are moved: one
that fails again meanwhile (its cause is not fixed) stays in <NAME>-poison, counted as back in
the poison queue, for a later run; so does one another reader holds invisible (counted as held). For inbound it also puts back every notification kept in the
database (the function of inbound-poison keeps each one there, per person, since Azure Storage
deletes a poison item after 7 days), one per piece, and deletes each from the database once it is
on the queue. Uses MONGODB_URI, else the database of the running \`npm run dev\`, as the other
scripts do; and AzureWebJobsStorage (a connection string), else a deployment's identity-based
setting (infra/ turns shared keys off): AzureWebJobsStorage__queueServiceUri, or
AzureWebJobsStorage__accountName, signed in with Microsoft Entra ID (\`az login\`, or a managed
identity; it needs the Storage Queue Data Contributor role on the account and a network path to
it), else the Azurite of the running \`npm run dev\`, else Azurite on .data/azurite (DEV_DATA_DIR/azurite when set).

  --queue NAME   the queue to replay into (inbound or reply-jobs; default inbound)
  --dry-run      count the items (queue and database); move nothing
  -h, --help     this help

Exit code: 0 on success, 1 on failure, 2 on bad arguments.
`;

const QUEUES = [INBOUND_QUEUE, REPLY_QUEUE];
const BATCH = 32;
/** Long enough to copy a batch; an item not deleted in time simply stays in the poison queue. */
const VISIBILITY_SECONDS = 60;

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { queue: { type: 'string' }, 'dry-run': { type: 'boolean' } });
  const queue = values['queue'] ?? INBOUND_QUEUE;
  if (!QUEUES.includes(queue)) throw new UsageError(`--queue must be one of ${QUEUES.join(', ')}`);
  const dryRun = Boolean(values['dry-run']);
  const started = Date.now();
  const dataDir = env['DEV_DATA_DIR']?.trim() || path.resolve(__dirname, '../.data');
  const storage =
    (env['AzureWebJobsStorage']?.trim() ? null : await identityService(env)) ??
    (await connectionStringService(env, dataDir, io));
  try {
    io.err(`queues: ${storage.description}`);
    const run = (store: DataStore | null) => replay(queue, dryRun, storage.service, io, store, started);
    // Notifications kept in the database (`inbound-poison`'s function) go back onto `inbound` too.
    return queue === INBOUND_QUEUE ? await withDataStore(env, io, run) : await run(null);
  } finally {
    await storage.stop();
  }
}

async function replay(
  queue: string,
  dryRun: boolean,
  service: QueueServiceClient,
  io: Io,
  store: DataStore | null,
  started: number,
): Promise<number> {
  const poison = service.getQueueClient(`${queue}-poison`);
  const target = service.getQueueClient(queue);
  const poisonExists = await poison.exists();
  const kept = store ? await store.poisoned.ids() : [];
  // The summary counts both sources.
  const from = (fromQueue: number, fromDatabase: number): [string, string | number][] => [
    [`from ${queue}-poison`, poisonExists ? fromQueue : 'does not exist'],
    ...(store ? [['from the database (kept poisoned notifications)', fromDatabase] as [string, number]] : []),
  ];
  if (dryRun) {
    const waiting = poisonExists ? ((await poison.getProperties()).approximateMessagesCount ?? 0) : 0;
    printSummary(io, 'replay-poison (dry run: nothing moved)', [
      ['items', waiting + kept.length],
      ...from(waiting, kept.length),
    ]);
    return 0;
  }
  await target.createIfNotExists();
  let moved = 0;
  let failedAgain = 0;
  let waiting = 0;
  let began = new Date();
  if (poisonExists) {
    // Only what was waiting when the run began is moved. An item that fails again while the run
    // goes on (the cause is not fixed) comes back as a new message, inserted later: it is left in
    // the poison queue, or the run would move it round and round for ever. The storage's own
    // clock (to the second) decides; moving starts only once that second is over, so an item
    // inserted in the run's first second was there before it.
    const properties = await poison.getProperties();
    waiting = properties.approximateMessagesCount ?? 0;
    began = properties.date ?? new Date();
    await sleep(1_000);
  }
  const bar = progress(io, 'moving', waiting + kept.length);
  while (poisonExists) {
    const { receivedMessageItems } = await poison.receiveMessages({
      numberOfMessages: BATCH,
      visibilityTimeout: VISIBILITY_SECONDS,
    });
    if (receivedMessageItems.length === 0) break;
    for (const item of receivedMessageItems) {
      if (item.insertedOn.getTime() > began.getTime()) {
        // Invisible for VISIBILITY_SECONDS, then waiting for the next replay.
        failedAgain++;
        continue;
      }
      // Copied first, deleted after: a failure in between leaves a copy in both, never none.
      await target.sendMessage(item.messageText);
      await poison.deleteMessage(item.messageId, item.popReceipt);
      bar.update(++moved);
    }
  }
  // The pieces kept when the run began (one that fails again is kept anew, under another id).
  let putBack = 0;
  if (store) {
    const base64 = hostQueueSettings().messageEncoding === 'base64';
    for (const id of kept) {
      const piece = await store.poisoned.read(id);
      if (piece) {
        const message = await queueItemOf(store, piece.json);
        // Copied first, deleted after: a failure in between leaves a copy in both, never none.
        await target.sendMessage(base64 ? Buffer.from(message, 'utf8').toString('base64') : message);
        putBack++;
      }
      // Gone, or part of it only (a removal was interrupted after it was put back): removed.
      await store.poisoned.remove(id);
      bar.update(moved + putBack);
    }
  }
  bar.done();
  printSummary(io, 'replay-poison done', [
    ['to', queue],
    ['items moved', moved + putBack],
    ...from(moved, putBack),
    ['back in the poison queue during the run', failedAgain],
    // Counted when the run began, invisible to it since: another reader (a second run, a person
    // with Storage Explorer) had received them. They wait there once that reader's time is up.
    ['held by another reader (invisible), left for a later run', Math.max(0, waiting - moved)],
    ['time', seconds(started)],
  ]);
  return 0;
}

/**
 * The `inbound` item of a kept notification: its JSON, or, when too large for a queue message, a
 * reference to it spilled to the database, as the webhook queues it.
 */
async function queueItemOf(store: DataStore, json: string): Promise<string> {
  const body = Buffer.from(json, 'utf8');
  return body.length <= MAX_INLINE_BYTES ? json : JSON.stringify(await spillBody(store.spills, body));
}

/** A queue service and what to call it, and how to let go of it (an Azurite started for the run). */
interface QueueStorage {
  readonly service: QueueServiceClient;
  readonly description: string;
  stop(): Promise<void>;
}

/** AzureWebJobsStorage, else the Azurite of the running `npm run dev`, else one on its files. */
async function connectionStringService(env: Env, dataDir: string, io: Io): Promise<QueueStorage> {
  const storage = await resolveStorage({ env, dataDir, log: (line) => io.err(line) });
  try {
    return { ...storage, service: QueueServiceClient.fromConnectionString(storage.connectionString) };
  } catch {
    await storage.stop();
    // The SDK's message may quote the connection string, key included: never printed.
    throw new ScriptError('AzureWebJobsStorage is not a valid storage connection string');
  }
}

/**
 * The queue service of a deployment whose storage takes Microsoft Entra ID only (the app settings
 * infra/ writes: AzureWebJobsStorage__queueServiceUri, or __accountName), signed in with
 * DefaultAzureCredential; null when neither is set. A sign-in that fails says so before any
 * request.
 */
async function identityService(env: Env): Promise<QueueStorage | null> {
  const account = env['AzureWebJobsStorage__accountName']?.trim();
  const setting = env['AzureWebJobsStorage__queueServiceUri']?.trim()
    ? 'AzureWebJobsStorage__queueServiceUri'
    : account
      ? 'AzureWebJobsStorage__accountName'
      : null;
  if (!setting) return null;
  const uri =
    env['AzureWebJobsStorage__queueServiceUri']?.trim() || `https://${account ?? ''}.queue.core.windows.net`;
  if (!/^https:\/\/[^/\s]+\/?$/i.test(uri)) {
    throw new UsageError(`${setting} must name a storage account (https://<account>.queue.core.windows.net)`);
  }
  const { DefaultAzureCredential } = await import('@azure/identity');
  const credential = new DefaultAzureCredential();
  try {
    await credential.getToken('https://storage.azure.com/.default');
  } catch {
    throw new ScriptError(
      `could not sign in to the storage account of ${setting} with Microsoft Entra ID: sign in with \`az login\` (or run where a managed identity is), as someone with the Storage Queue Data Contributor role on it`,
    );
  }
  return {
    service: new QueueServiceClient(uri, credential),
    description: `${setting}, signed in with Microsoft Entra ID`,
    stop: async () => {},
  };
}

if (require.main === module)
  runMain(
    main,
    HELP,
    'the items moved so far are on the queue (one may be on both, which ingest takes once); run it again to move the rest',
  );
