// Finds the database server for the tests, `npm run dev` and the operator scripts (docs/contract.md,
// "Database resolution"): MONGODB_URI, else the running dev server (scripts), else a mongod through
// mongodb-memory-server (./mongod), else FerretDB v1 on SQLite built once with Go (./ferretdb-build,
// ./ferretdb). When none can be had, one message lists the ways out.
import path from 'node:path';
import { defaultLog, type ResolvedDatabase } from './database-types';
import { findDevServer } from './dev-record';
import { startFerretDb } from './ferretdb';
import { FERRETDB_GO_VERSION, FerretDbBuildError, ensureFerretDb } from './ferretdb-build';
import { startMongod } from './mongod';
import { defaultDataDir } from './paths';

export type { DatabaseKind, Log, ResolvedDatabase } from './database-types';

export interface ResolveOptions {
  purpose: 'test' | 'dev' | 'script';
  log?: (line: string) => void;
  /** Where dev/script servers keep their files; default `<repo>/.data`. */
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
}

/** No server could be had: the message says why and lists every way out. */
export class NoDatabaseError extends Error {
  override readonly name = 'NoDatabaseError';
}

const noop = async (): Promise<void> => undefined;

export async function resolveDatabase(options: ResolveOptions): Promise<ResolvedDatabase> {
  const env = options.env ?? process.env;
  const log = options.log ?? defaultLog;
  const dataDir = options.dataDir ?? defaultDataDir();
  const persistent = options.purpose !== 'test';

  const configured = env['MONGODB_URI']?.trim();
  if (configured) {
    const description = `MONGODB_URI (${maskUri(configured)})`;
    log(`database: ${description}`);
    return { uri: configured, kind: 'uri', description, stop: noop };
  }

  if (options.purpose === 'script') {
    const record = await findDevServer(dataDir);
    if (record) {
      const description = `the server of the running \`npm run dev\` (pid ${record.pid}, ${record.kind}) at ${maskUri(record.uri)}`;
      log(`database: ${description}`);
      return { uri: record.uri, kind: 'dev-server', description, stop: noop };
    }
  }

  const mongod = await startMongod(env, log, persistent ? path.join(dataDir, 'mongod') : undefined);
  if ('database' in mongod) return mongod.database;

  let binary: string;
  try {
    binary = await ensureFerretDb({ env, log });
  } catch (error) {
    if (!(error instanceof FerretDbBuildError)) throw error;
    throw new NoDatabaseError(noDatabaseMessage(mongod.unavailable, error.message));
  }
  return startFerretDb(binary, log, {
    persistentDir: persistent ? path.join(dataDir, 'ferretdb') : undefined,
  });
}

/** Why there is no database, and every way to get one. */
export function noDatabaseMessage(mongodReason: string, ferretDbReason: string): string {
  return [
    'no database server: MONGODB_URI is unset, and',
    `  - mongod: ${mongodReason}`,
    `  - FerretDB: ${ferretDbReason}`,
    'Any one of these fixes it:',
    '  - set MONGODB_URI to a MongoDB-compatible server (MongoDB ≥ 4.2, or Cosmos DB for MongoDB)',
    '  - set MONGOMS_SYSTEM_BINARY to a mongod binary on this machine (MongoDB ≥ 4.2)',
    `  - install Go ≥ ${FERRETDB_GO_VERSION} (https://go.dev/dl/) so FerretDB can be built once (about a minute)`,
  ].join('\n');
}

/** Hides credentials: user:password and secret-looking query parameters. */
export function maskUri(uri: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(uri)?.[0] ?? '';
  let masked = uri;
  // The host follows the last '@' before the query (Cosmos puts `appName=@account@` in the query;
  // its keys may contain '/', '+' and '=').
  const at = uri.split('?')[0]?.lastIndexOf('@') ?? -1;
  if (scheme && at >= scheme.length) masked = `${scheme}***:***${uri.slice(at)}`;
  return masked.replace(
    /([?&](?:[^=&]*(?:password|secret|token|key|sig)[^=&]*|authMechanismProperties)=)[^&#]*/gi,
    '$1***',
  );
}
