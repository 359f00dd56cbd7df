// The composition root: builds {config, data, graph, ai} once per process, lazily, and hands them
// down. Tests build the same graph against a test database and loopback stubs.
import { getConfig, type Config } from './config';
import { openDataStore, type DataStore } from './data';
import { AppError, ErrorCode } from './errors';
import { setPseudonymKey } from './log';
import type { AiResponderDeps } from './bot/ai-responder';
import { aiWindow, type AiResponder } from './bot/ports';
import type { GraphClient, GraphOptions, RetryPolicy } from './whatsapp/graph';

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
  if (!options.data && !uri)
    throw new AppError(ErrorCode.CONFIG, 'Invalid configuration: MONGODB_URI is missing');
  const data = options.data ?? (await openDataStore(uri as string, config.mongodb.database));
  const graph = config.whatsapp.accessToken
    ? lazyGraphClient({
        baseUrl: config.whatsapp.graphUrl,
        apiVersion: config.whatsapp.apiVersion,
        accessToken: config.whatsapp.accessToken,
        ...(options.graphRetry ? { retry: options.graphRetry } : {}),
      })
    : (await import('./whatsapp/graph')).dryRunGraphClient;
  const now = options.now ?? (() => new Date());
  const ai =
    options.ai !== undefined
      ? options.ai
      : config.ai
        ? lazyAiResponder({ config: config.ai, data, now })
        : null;
  return { config, data, graph, ai, now };
}

// Cold start: the Graph client (axios) and the AI client (and @azure/identity behind it) are
// loaded on their first call, not when the host loads the entry; most invocations need neither.

/** Runs `load` once; a failed load is retried on the next call. */
function once<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () =>
    (loaded ??= load().catch((error: unknown) => {
      loaded = undefined;
      throw error;
    }));
}

function lazyGraphClient(options: GraphOptions): GraphClient {
  const client = once(async () => (await import('./whatsapp/graph')).createGraphClient(options));
  return {
    dryRun: false,
    sendText: async (phoneNumberId, to, body) => (await client()).sendText(phoneNumberId, to, body),
    markRead: async (phoneNumberId, messageId, typing) =>
      (await client()).markRead(phoneNumberId, messageId, typing),
    sendTemplate: async (phoneNumberId, to, template) =>
      (await client()).sendTemplate(phoneNumberId, to, template),
  };
}

function lazyAiResponder(deps: AiResponderDeps): AiResponder {
  const responder = once(async () => (await import('./bot/ai-responder')).createAiResponder(deps));
  return {
    window: aiWindow(deps.config),
    respond: async (input) => (await responder()).respond(input),
  };
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
