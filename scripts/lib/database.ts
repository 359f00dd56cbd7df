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
  /** Where dev/script servers keep their files; default DEV_DATA_DIR, else `<repo>/.data`. */
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
  // DEV_DATA_DIR: the folder `npm run dev` was told to use, so that scripts find its server.
  const dataDir = options.dataDir ?? (env['DEV_DATA_DIR']?.trim() || defaultDataDir());
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

/** Query options shown as they are; every other option's value is hidden. */
const PLAIN_OPTIONS = new Set(
  [
    'authSource',
    'authMechanism',
    'ssl',
    'tls',
    'replicaSet',
    'retryWrites',
    'retryReads',
    'maxIdleTimeMS',
    'directConnection',
    'readPreference',
    'w',
    'serverSelectionTimeoutMS',
    'connectTimeoutMS',
  ].map((o) => o.toLowerCase()),
);

/**
 * Hides credentials in a URL to be printed: the user and password (which may hold unescaped
 * reserved characters such as `?`, `/` or `@`), and the value of every query option but a few
 * harmless ones.
 */
export function maskUri(uri: string): string {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(uri)?.[0] ?? '';
  // The host (or hosts) follow the last '@' that is followed by a host and then '/', '?', '#' or
  // the end (Cosmos puts `appName=@account@` in the query; its keys may contain '/', '+', '=').
  let at = -1;
  for (let i = uri.lastIndexOf('@'); i >= scheme.length && i > 0; i = uri.lastIndexOf('@', i - 1)) {
    if (/^[A-Za-z0-9.\-_~%[\]:,]+(?:[/?#]|$)/.test(uri.slice(i + 1))) {
      at = i;
      break;
    }
  }
  // Also without a scheme: a mistyped one (`mongodb//user:pass@host`) must not print the password.
  const authority = at > 0 ? `${scheme}***:***@` : scheme;
  const rest = uri.slice(at > 0 ? at + 1 : scheme.length);
  const q = rest.indexOf('?');
  if (q < 0) return authority + rest;
  const query = rest
    .slice(q + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      if (eq < 0) return pair;
      const name = pair.slice(0, eq);
      return PLAIN_OPTIONS.has(name.toLowerCase()) ? pair : `${name}=***`;
    })
    .join('&');
  return `${authority}${rest.slice(0, q)}?${query}`;
}
