// `npm run dev`: the app on http://127.0.0.1:$PORT/api/... without Azure Functions Core Tools.
// Builds the browser scripts, then uses MONGODB_URI, else the embedded database kept under .data/;
// AzureWebJobsStorage, else an Azurite kept under .data/azurite/ for the queues. With no settings at
// all it generates development secrets and records replies as `not_sent` (dry run).
//
// It runs as `exec node --import tsx scripts/dev.ts`: the shell npm runs scripts in becomes this
// process, so the SIGTERM or SIGINT npm forwards to its child reaches the app (dash does not `exec`
// a lone command of itself, and on SIGINT it would wait for the app without passing it on). It
// also stops when its parent has gone, and when npm has (see `npmRunner`).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { definitions } from '../functions/definitions';
import { loadConfig } from '../shared/config';
import { closeAllClients } from '../shared/data';
import { defaultRuntime, getServices } from '../shared/deps';
import { AppError, ErrorCode } from '../shared/errors';
import { badConnectionString, hostNotFound, noArguments } from './lib/cli';
import { resolveDatabase } from './lib/database';
import { claimDataDir, publishDevServer, releaseDataDir, unpublishDevServer } from './lib/dev-record';
import { startDevServer, type DevServer } from './dev-server';
import { publishAzurite, unpublishAzurite } from './lib/azurite';
import { npmRunner, watchParent, watchProcess } from './lib/subprocess';
import { SIMULATOR_ROUTE, simulatorDefinitions } from './dev/simulator';

const ROOT = path.resolve(__dirname, '..');
const DEFAULT_DATA_DIR = path.join(ROOT, '.data');

const say = (line: string) => process.stdout.write(`${line}\n`);

/** What to do when a child server has gone by itself: webhooks it acknowledged are in the queues. */
const RUN_AGAIN = 'acknowledged webhooks wait in the queues; start `npm run dev` again';

/** The data folder this process holds (given up when it stops, also on a failed start). */
let heldDataDir: string | undefined;

/**
 * Builds the browser scripts (web/ → dist/web/) as `npm run build:web` does, with the project's own
 * TypeScript on this Node; tsc prints its errors, and `built` rejects when it fails.
 */
function buildWeb(): { child: ChildProcess; built: Promise<void> } {
  const args = [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.web.json'];
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'inherit', windowsHide: true });
  const built = new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      if (code === 0) return resolve();
      const how = signal ? `was stopped by ${signal}` : `exited with ${code}; its errors are above`;
      reject(new Error(`the browser scripts did not build (tsc -p tsconfig.web.json ${how})`));
    });
  });
  return { child, built };
}

async function main(): Promise<void> {
  let stopping = false;
  let building: ChildProcess | undefined;
  let database: Awaited<ReturnType<typeof resolveDatabase>> | undefined = undefined;
  let server: Promise<DevServer> | undefined = undefined;
  // The server takes its port first and waits on this for the database (see startDevServer).
  let openGate: () => void = () => undefined;
  let closeGate: (error: unknown) => void = () => undefined;
  const gate = new Promise<void>((resolve, reject) => {
    openGate = resolve;
    closeGate = reject;
  });
  gate.catch(() => undefined);
  // DEV_DATA_DIR: another folder than .data/ (the crash test runs on a temporary one).
  const dataDir = process.env['DEV_DATA_DIR']?.trim() || undefined;
  const shutdown = async (reason: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    // A failure goes to stderr, where `npm run dev failed` goes too.
    if (exitCode === 0) say(`${reason}, stopping`);
    else process.stderr.write(`${reason}, stopping\n`);
    const force = setTimeout(() => process.exit(1), 9_000);
    force.unref();
    building?.kill();
    // A server waiting for the database gives its port back; one still starting (Azurite with
    // it) is stopped once up, within the 9 s above.
    closeGate(new Error(reason));
    await (await server?.catch(() => undefined))?.stop().catch(() => undefined);
    await closeAllClients();
    await unpublishDevServer(...(dataDir ? [dataDir] : [])).catch(() => undefined);
    await unpublishAzurite(dataDir ?? DEFAULT_DATA_DIR);
    await database?.stop().catch(() => undefined);
    if (heldDataDir) await releaseDataDir(heldDataDir).catch(() => undefined);
    say('stopped');
    process.exit(exitCode);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM received'));
  process.on('SIGINT', () => void shutdown('SIGINT received'));
  watchParent(() => void shutdown('its parent process has gone'));
  // Run by npm: npm itself is watched too (under a shell that did not `exec`, an npm killed without
  // passing the signal on leaves that shell running), and may have gone before this process could
  // watch.
  if (process.env['npm_lifecycle_event'] === 'dev') {
    const runner = npmRunner('scripts/dev.ts');
    if (runner === 'gone') void shutdown('its parent process has gone');
    else if (runner !== null && runner !== process.ppid)
      watchProcess(runner, () => void shutdown('npm has gone'));
  }

  // The embedded database and Azurite keep their files in the data folder: one run per folder.
  if (!process.env['MONGODB_URI']?.trim() || !process.env['AzureWebJobsStorage']?.trim()) {
    const folder = dataDir ?? DEFAULT_DATA_DIR;
    const owner = await claimDataDir(folder);
    if (owner !== undefined)
      throw new Error(
        `another \`npm run dev\` (pid ${owner}) uses ${folder}: ` +
          'stop it first, or start this one with DEV_DATA_DIR set to another folder',
      );
    heldDataDir = folder;
  }

  // The test helpers set DEV_SKIP_WEB_BUILD: their global setup has built the scripts already.
  if (process.env['DEV_SKIP_WEB_BUILD'] !== '1') {
    const build = buildWeb();
    building = build.child;
    // Stopped by a signal meanwhile: shutdown has killed tsc and ends the process.
    await build.built.catch((error: unknown) => {
      if (!stopping) throw error;
    });
    building = undefined;
  }
  if (stopping) return;
  const generated: string[] = [];
  for (const name of ['WHATSAPP_VERIFY_TOKEN', 'WHATSAPP_APP_SECRET'] as const) {
    if (!process.env[name]?.trim()) {
      process.env[name] = randomBytes(18).toString('base64url');
      generated.push(name);
    }
  }
  const config = loadConfig(process.env);
  const storage = process.env['AzureWebJobsStorage']?.trim();
  // The port first: the database and Azurite take free ports, and one could be this one.
  let listening: () => void = () => undefined;
  const portTaken = new Promise<void>((resolve) => (listening = resolve));
  server = startDevServer({
    definitions: [...definitions, ...simulatorDefinitions(defaultRuntime)],
    port: config.port,
    say,
    storage: storage
      ? { connectionString: storage }
      : { location: path.join(dataDir ?? DEFAULT_DATA_DIR, 'azurite') },
    // After a crash the sweeper finishes abandoned replies at once instead of within a minute.
    queueOptions: { runOnStart: ['sweeper'] },
    // Queue and timer functions apart from the HTTP ones, as in Azure: the acknowledgement first.
    queueThread: {},
    onQueueFailure: (error) => void shutdown(`${error.message}`, 1),
    onStorageExit: (how) => void shutdown(`${how}: ${RUN_AGAIN}`, 1),
    gate,
    onListening: listening,
  });
  const portInUse = (error: unknown): never => {
    if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw error;
    throw new Error(
      `port ${config.port} on 127.0.0.1 is in use (another \`npm run dev\`?): ` +
        'stop what uses it, or set PORT to another port',
    );
  };
  await Promise.race([portTaken, server.then(() => undefined)]).catch(portInUse);

  let db: Awaited<ReturnType<typeof resolveDatabase>>;
  try {
    db = await resolveDatabase({ purpose: 'dev', log: say, ...(dataDir ? { dataDir } : {}) });
    database = db;
    // Gone while the app runs: every webhook would wait on it, or fail, until stopped by hand.
    const name = db.kind === 'ferretdb' ? 'FerretDB' : db.kind;
    void db.exited?.then((how) => void shutdown(`the embedded database (${name}) ${how}: ${RUN_AGAIN}`, 1));
    process.env['MONGODB_URI'] = db.uri;
    // The local host is its own deployment: it creates the indexes (in Azure, infra/ does).
    // MONGODB_URI's server not answering, a host name not found (an SRV name, say), or a string
    // the driver cannot read: one line naming the setting, as the scripts say it (./lib/cli).
    const unreachable = (error: unknown): never => {
      if (db.kind !== 'uri') throw error;
      const fix = 'correct MONGODB_URI (unset, the embedded database is used)';
      const dns = hostNotFound(error);
      if (dns)
        throw new Error(
          `the host name of ${db.description} was not found (${dns}): ${fix}, or check this machine's network and DNS`,
        );
      if (error instanceof AppError && error.code === ErrorCode.UNAVAILABLE)
        throw new Error(`the database at ${db.description} does not answer: start it, or ${fix}`);
      if (badConnectionString(error))
        throw new Error(`MONGODB_URI is not a valid connection string (${error.message}): ${fix}`);
      throw error;
    };
    const services = await getServices().catch(unreachable);
    await services.data.ensureIndexes('create').catch(unreachable);
  } catch (error) {
    closeGate(error);
    throw error;
  }
  // A signal during the start: shutdown is under way and stops what is up.
  if (stopping) return;
  openGate();
  const running = await server.catch(portInUse);
  // A signal while the queue functions' thread started: shutdown is stopping this server, so
  // nothing is published for the scripts and no `ready` is said (a client would take it at its word).
  if (stopping) return;
  await publishDevServer(db, ...(dataDir ? [dataDir] : []));
  if (!storage && running.storageConnectionString)
    await publishAzurite(dataDir ?? DEFAULT_DATA_DIR, { connectionString: running.storageConnectionString });
  // Or during those writes: shutdown may have removed the records before they were written.
  if (stopping) {
    await unpublishDevServer(...(dataDir ? [dataDir] : [])).catch(() => undefined);
    await unpublishAzurite(dataDir ?? DEFAULT_DATA_DIR);
    return;
  }

  if (generated.length) {
    say('development secrets generated for this run (development only):');
    for (const name of generated) say(`  ${name}=${process.env[name] ?? ''}`);
  }
  if (!config.whatsapp.accessToken)
    say('WHATSAPP_ACCESS_TOKEN is not set: replies are recorded as not_sent (dry run)');
  // With a token, the simulator's replies go out for real unless the Graph URL is a stand-in.
  else say(`replies are sent through the Graph API at ${new URL(config.whatsapp.graphUrl).host}`);
  say(
    `AI: ${config.ai ? `${config.ai.model} at ${new URL(config.ai.endpoint).host}` : 'not configured (built-in answers)'}`,
  );
  for (const definition of definitions) {
    if (definition.kind === 'http')
      say(`  ${definition.methods.join(',').padEnd(12)} ${running.url}/api/${definition.route}`);
  }
  say(`chat simulator (development only): ${running.url}/api/${SIMULATOR_ROUTE}`);
  // The dashboard asks for a token: say where one comes from (a newcomer has none yet).
  say(
    `dashboard: ${running.url}/api/manage/ (sign in with ${config.manageApiToken ? 'MANAGE_API_TOKEN or ' : ''}a token from \`npm run token -- create --name NAME\`)`,
  );
  say(`ready on ${running.url}`);
}

const HELP = `
Usage: npm run dev

Serves the app on http://127.0.0.1:$PORT/api/... (PORT default 7071) with the queue work on a local
Azurite, and the chat simulator at /api/dev/chat. MONGODB_URI unset: the embedded database, its
files kept in .data/ (or DEV_DATA_DIR); AzureWebJobsStorage unset: Azurite, its files there too.
Without WHATSAPP_VERIFY_TOKEN and WHATSAPP_APP_SECRET it generates them for the run; without
WHATSAPP_ACCESS_TOKEN replies are recorded as not_sent (dry run). It prints a line with \`ready\`
when it accepts requests, and stops with everything it started on Ctrl-C or SIGTERM.

Exit code: 0 when stopped, 1 when it cannot start or what it started ended under it, 2 on bad
arguments (it takes none: settings are environment variables, see docs/contract.md).
`;

// Help, or an argument it does not take (`npm run dev -- --port 8080`): before anything starts.
if (noArguments(process.argv.slice(2), HELP)) {
  main().catch(async (error: unknown) => {
    process.stderr.write(`npm run dev failed: ${error instanceof Error ? error.message : String(error)}\n`);
    if (heldDataDir) await releaseDataDir(heldDataDir).catch(() => undefined);
    process.exit(1);
  });
}
