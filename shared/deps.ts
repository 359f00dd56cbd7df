// The composition root: builds {config, data, graph, ai} once per process, lazily, and hands them
// down. Tests build the same graph against a test database and loopback stubs.
import { getConfig, type Config } from './config';
import { openDataStore, type DataStore } from './data';
import { setPseudonymKey } from './log';
import { createAiResponder } from './bot/ai-answer';
import type { AiResponder } from './bot/ports';
import { createGraphClient, dryRunGraphClient, type GraphClient, type RetryPolicy } from './whatsapp/graph';

export interface Services {
  readonly config: Config;
  readonly data: DataStore;
  readonly graph: GraphClient;
  /** Set when AI_ENDPOINT is configured; otherwise the built-in answers are used. */
  readonly ai: AiResponder | null;
  readonly now: () => Date;
}

export interface BuildOptions {
  /** An already opened data store (tests). */
  readonly data?: DataStore;
  readonly graphRetry?: RetryPolicy;
  readonly now?: () => Date;
  readonly ai?: AiResponder | null;
}

export async function buildServices(config: Config, options: BuildOptions = {}): Promise<Services> {
  setPseudonymKey(config.whatsapp.appSecret);
  const uri = config.mongodb.uri;
  if (!options.data && !uri) throw new Error('MONGODB_URI is not set');
  const data = options.data ?? (await openDataStore(uri as string, config.mongodb.database));
  const graph = config.whatsapp.accessToken
    ? createGraphClient({
        baseUrl: config.whatsapp.graphUrl,
        apiVersion: config.whatsapp.apiVersion,
        accessToken: config.whatsapp.accessToken,
        ...(options.graphRetry ? { retry: options.graphRetry } : {}),
      })
    : dryRunGraphClient;
  const now = options.now ?? (() => new Date());
  const ai =
    options.ai !== undefined
      ? options.ai
      : config.ai
        ? createAiResponder({ config: config.ai, data, now })
        : null;
  return { config, data, graph, ai, now };
}

let services: Promise<Services> | undefined;

/** The services of this process, built on first use; a failed build is retried on the next call. */
export function getServices(): Promise<Services> {
  if (!services) {
    services = Promise.resolve()
      .then(() => buildServices(getConfig()))
      .catch((error: unknown) => {
        services = undefined;
        throw error;
      });
  }
  return services;
}

/** What a function needs: the configuration (cheap, synchronous) and the services (may connect). */
export interface Runtime {
  config(): Config;
  services(): Promise<Services>;
}

export const defaultRuntime: Runtime = { config: getConfig, services: getServices };

/** A runtime around already built services (tests, the dev server). */
export const runtimeOf = (services: Services): Runtime => ({
  config: () => services.config,
  services: () => Promise.resolve(services),
});
