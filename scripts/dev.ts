// `npm run dev`: the app on http://127.0.0.1:$PORT/api/... without Azure Functions Core Tools.
// Uses MONGODB_URI, else the embedded database kept under .data/; AzureWebJobsStorage, else an
// Azurite kept under .data/azurite/ for the queues. With no settings at all it generates
// development secrets and records replies as `not_sent` (dry run).
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { definitions } from '../functions/definitions';
import { loadConfig } from '../shared/config';
import { closeAllClients } from '../shared/data';
import { defaultRuntime, getServices } from '../shared/deps';
import { resolveDatabase } from './lib/database';
import { publishDevServer, unpublishDevServer } from './lib/dev-record';
import { startDevServer } from './dev-server';
import { publishAzurite, unpublishAzurite } from './lib/azurite';
import { SIMULATOR_ROUTE, simulatorDefinitions } from './dev/simulator';

const DEFAULT_DATA_DIR = path.resolve(__dirname, '../.data');

const say = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<void> {
  const generated: string[] = [];
  for (const name of ['WHATSAPP_VERIFY_TOKEN', 'WHATSAPP_APP_SECRET'] as const) {
    if (!process.env[name]?.trim()) {
      process.env[name] = randomBytes(18).toString('base64url');
      generated.push(name);
    }
  }
  // DEV_DATA_DIR: another folder than .data/ (the crash test runs on a temporary one).
  const dataDir = process.env['DEV_DATA_DIR']?.trim() || undefined;
  const database = await resolveDatabase({ purpose: 'dev', log: say, ...(dataDir ? { dataDir } : {}) });
  process.env['MONGODB_URI'] = database.uri;
  const config = loadConfig(process.env);

  let server: Awaited<ReturnType<typeof startDevServer>> | undefined = undefined;
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    say(`${signal} received, stopping`);
    const force = setTimeout(() => process.exit(1), 9_000);
    force.unref();
    await server?.stop().catch(() => undefined);
    await closeAllClients();
    await unpublishDevServer(...(dataDir ? [dataDir] : [])).catch(() => undefined);
    await unpublishAzurite(dataDir ?? DEFAULT_DATA_DIR);
    await database.stop().catch(() => undefined);
    say('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));

  // The local host is its own deployment: it creates the indexes (in Azure, infra/ does).
  await (await getServices()).data.ensureIndexes('create');
  const storage = process.env['AzureWebJobsStorage']?.trim();
  server = await startDevServer({
    definitions: [...definitions, ...simulatorDefinitions(defaultRuntime)],
    port: config.port,
    say,
    storage: storage
      ? { connectionString: storage }
      : { location: path.join(dataDir ?? DEFAULT_DATA_DIR, 'azurite') },
    // After a crash the sweeper finishes abandoned replies at once instead of within a minute.
    queueOptions: { runOnStart: ['sweeper'] },
  });
  await publishDevServer(database, ...(dataDir ? [dataDir] : []));
  if (!storage && server.storageConnectionString)
    await publishAzurite(dataDir ?? DEFAULT_DATA_DIR, { connectionString: server.storageConnectionString });

  if (generated.length) {
    say('development secrets generated for this run (development only):');
    for (const name of generated) say(`  ${name}=${process.env[name] ?? ''}`);
  }
  if (!config.whatsapp.accessToken)
    say('WHATSAPP_ACCESS_TOKEN is not set: replies are recorded as not_sent (dry run)');
  say(
    `AI: ${config.ai ? `${config.ai.model} at ${new URL(config.ai.endpoint).host}` : 'not configured (built-in answers)'}`,
  );
  for (const definition of definitions) {
    if (definition.kind === 'http')
      say(`  ${definition.methods.join(',').padEnd(12)} ${server.url}/api/${definition.route}`);
  }
  say(`chat simulator (development only): ${server.url}/api/${SIMULATOR_ROUTE}`);
  say(`ready on ${server.url}`);
}

main().catch((error: unknown) => {
  process.stderr.write(`npm run dev failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
