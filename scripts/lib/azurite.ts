// Azurite's queue service as a child process of `npm run dev`, the tests and the bench: data in a
// folder of our choice, a free port, no telemetry. It stands in for the Azure Storage account
// (AzureWebJobsStorage) that the Functions host uses for queues.
import { spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { displayPath, privateDir } from './paths';

/** Azurite's well-known development account (public, documented by Microsoft; not a secret). */
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
const READY_TIMEOUT_MS = 30_000;
/** How long `stop()` lets Azurite save its state and exit after SIGTERM before it kills it. */
export const STOP_GRACE_MS = 5_000;

export interface Azurite {
  /** A connection string for AzureWebJobsStorage. */
  readonly connectionString: string;
  readonly port: number;
  readonly pid: number;
  /** Resolves, saying how, if the process ends without `stop()` (killed, crashed); never otherwise. */
  readonly exited: Promise<string>;
  stop(): Promise<void>;
}

export const azuriteConnectionString = (port: number): string =>
  `DefaultEndpointsProtocol=http;AccountName=${ACCOUNT};AccountKey=${ACCOUNT_KEY};` +
  `QueueEndpoint=http://127.0.0.1:${port}/${ACCOUNT};`;

export async function startAzurite(options: {
  /** Folder for Azurite's files (created if missing). */
  location: string;
  log?: (line: string) => void;
  /**
   * Queues whose new messages are saved before Azurite answers (default: all). The local host names
   * the queues its HTTP functions write before they answer: the acknowledgement depends on them.
   */
  durableQueues?: readonly string[];
}): Promise<Azurite> {
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  await privateDir(options.location);
  // Azurite's queue service with faster persistence for local use (see azurite-queue.js).
  // From scripts/lib (tsx) or dist/scripts/lib (built, where tsc does not copy .js files).
  const main = [
    path.join(__dirname, 'azurite-queue.js'),
    path.resolve(__dirname, '../../../scripts/lib/azurite-queue.js'),
  ].find((file) => existsSync(file));
  if (!main) throw new Error('scripts/lib/azurite-queue.js is missing');
  // Port 0: the system picks a free one, so parallel runs never collide; Azurite prints it.
  const child = spawn(
    process.execPath,
    [
      main,
      '--location',
      options.location,
      '--queueHost',
      '127.0.0.1',
      '--queuePort',
      '0',
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--silent',
    ],
    {
      // stdin stays open while this process lives: its end stops Azurite (see azurite-queue.js).
      stdio: ['pipe', 'pipe', 'pipe'],
      // A process group of its own (POSIX): a terminal's Ctrl-C reaches only us, and we stop
      // Azurite once the queue functions have ended (./watchdog.ts does the same for databases).
      detached: process.platform !== 'win32',
      env: {
        ...process.env,
        AZURITE_DURABLE_QUEUES: options.durableQueues?.join(',') ?? '*',
        AZURITE_PARENT_PIPE: '1',
      },
    },
  );
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`Azurite did not start within ${READY_TIMEOUT_MS / 1000} s:\n${output.trim()}`));
    }, READY_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const found = /listens on http:\/\/[^:\s]+:(\d+)/.exec(output);
      if (found) {
        clearTimeout(timer);
        resolve(Number(found[1]));
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`Azurite exited with code ${code}:\n${output.trim()}`));
    });
    child.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
  // Keep draining its output (a full pipe would stall it) and report real failures.
  child.stdout.removeAllListeners('data');
  child.stderr.removeAllListeners('data');
  child.stdout.resume();
  child.stderr.on('data', (chunk: Buffer) => log(`azurite: ${chunk.toString().trim()}`));
  let exited = false;
  let stopping = false;
  child.once('exit', () => {
    exited = true;
    child.stdin.destroy();
  });
  // Its end without stop(): `npm run dev` must not run on with queues that are gone.
  const died = new Promise<string>((resolve) =>
    child.once('exit', (code, signal) => {
      if (!stopping) resolve(signal ? `was killed by ${signal}` : `exited with code ${code}`);
    }),
  );
  log(`queues: Azurite on 127.0.0.1:${port} (data in ${options.location})`);
  return {
    connectionString: azuriteConnectionString(port),
    port,
    pid: child.pid ?? 0,
    exited: died,
    async stop() {
      stopping = true;
      if (exited) return;
      // SIGTERM lets Azurite save its state; it is killed if it takes too long.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        child.once('exit', () => {
          clearTimeout(force);
          resolve();
        });
        child.kill('SIGTERM');
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The Azurite of a running `npm run dev`, published so operator scripts use its queues.

const RECORD_FILE = 'azurite.json';

export async function publishAzurite(dataDir: string, azurite: { connectionString: string }): Promise<void> {
  const file = path.join(dataDir, RECORD_FILE);
  const temp = `${file}.${process.pid}.tmp`;
  await fs.mkdir(dataDir, { recursive: true });
  await fs.writeFile(
    temp,
    `${JSON.stringify({ connectionString: azurite.connectionString, pid: process.pid })}\n`,
    {
      mode: 0o600,
    },
  );
  await fs.rename(temp, file);
}

export async function unpublishAzurite(dataDir: string): Promise<void> {
  const file = path.join(dataDir, RECORD_FILE);
  try {
    const record = JSON.parse(await fs.readFile(file, 'utf8')) as { pid?: number };
    if (record.pid === process.pid) await fs.rm(file, { force: true });
  } catch {
    // nothing published
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * The storage account a script should use: AzureWebJobsStorage, else the Azurite of the running
 * `npm run dev` on this data folder, else an Azurite started on its files (stopped by `stop`).
 */
export async function resolveStorage(options: {
  env: NodeJS.ProcessEnv;
  dataDir: string;
  log: (line: string) => void;
}): Promise<{ connectionString: string; description: string; stop(): Promise<void> }> {
  const configured = options.env['AzureWebJobsStorage']?.trim();
  if (configured)
    return { connectionString: configured, description: 'AzureWebJobsStorage', stop: async () => {} };
  try {
    const record = JSON.parse(await fs.readFile(path.join(options.dataDir, RECORD_FILE), 'utf8')) as {
      connectionString?: string;
      pid?: number;
    };
    if (record.connectionString && record.pid && alive(record.pid)) {
      return {
        connectionString: record.connectionString,
        description: `the Azurite of the running \`npm run dev\` (pid ${record.pid})`,
        stop: async () => {},
      };
    }
  } catch {
    // no running dev server
  }
  const location = path.join(options.dataDir, 'azurite');
  const azurite = await startAzurite({ location, log: options.log });
  return {
    connectionString: azurite.connectionString,
    // Where its files are (DEV_DATA_DIR moves them), relative to here when they are below it.
    description: `Azurite on ${displayPath(location)}`,
    stop: () => azurite.stop(),
  };
}
