// The local host of `npm run dev`, the tests and the bench (Azure Functions Core Tools cannot be
// installed everywhere): serves the HTTP definitions on 127.0.0.1 under host.json's route prefix
// (/api) with the real HttpRequest/InvocationContext types, writes their queue outputs to Azure
// Storage queues (Azurite) before answering, and runs queue and timer functions like the host
// (scripts/lib/queue-host.ts). Any list of definitions can be served.
import { HttpResponse } from '@azure/functions';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { FunctionDefinition, HttpDefinition } from '../functions/definition-types';
import { SECURITY_HEADERS } from '../functions/http';
import { scrub } from '../shared/log';
import { startAzurite, type Azurite } from './lib/azurite';
import { hostRequest } from './lib/host-request';
import { startQueueThread, type QueueThread } from './lib/queue-thread';
import {
  invocationContext,
  startQueueHost,
  type HostLog,
  type QueueHost,
  type QueueHostOptions,
} from './lib/queue-host';

export interface DevServerOptions {
  readonly definitions: readonly FunctionDefinition[];
  readonly port: number;
  readonly host?: string;
  /** Where function logs go (default: stderr). */
  readonly log?: HostLog;
  /** Where progress lines go (Azurite's start; default: stderr). */
  readonly say?: (line: string) => void;
  /** A running queue host; else one is started on `storage`. */
  readonly queues?: QueueHost;
  /** The storage account: a connection string, or a folder for an Azurite started (and stopped) here. */
  readonly storage?: { connectionString: string } | { location: string };
  readonly queueOptions?: Partial<Omit<QueueHostOptions, 'definitions' | 'connectionString' | 'log'>>;
  /**
   * Runs the queue and timer functions in a thread of their own at a lower CPU priority, as Azure
   * runs them on instances apart from the HTTP functions (./lib/queue-thread.ts). `module` names
   * where their definitions come from (default: the app's). Without it they share this thread.
   */
  readonly queueThread?: { readonly module?: string; readonly countCommands?: boolean };
  /** Called when the queue functions' thread stops by itself: nothing consumes the queues any more. */
  readonly onQueueFailure?: (error: Error) => void;
  /** Called when the Azurite started here ends by itself (killed, crashed): the queues are gone. */
  readonly onStorageExit?: (reason: string) => void;
  /**
   * What must be ready before any function runs (the database). The port is taken first, so that
   * nothing started meanwhile (Azurite, a database on a free port) can take it; requests that
   * come meanwhile wait. A rejection stops the start with its error.
   */
  readonly gate?: Promise<void>;
  /** Called once the port is taken. */
  readonly onListening?: () => void;
  /** The prefix of every route (default: host.json's `extensions.http.routePrefix`). */
  readonly routePrefix?: string;
  /** How long an HTTP function may take to answer before a 502 (default: Azure's 230 s). */
  readonly responseLimitMs?: number;
}

export interface DevServer {
  readonly url: string;
  readonly port: number;
  readonly queues: QueueHost;
  /** The queue functions' thread (with `queueThread`). */
  readonly queueThread: QueueThread | undefined;
  /** The storage account's connection string (Azurite's when started here). */
  readonly storageConnectionString: string | undefined;
  /** Resolves when every trigger queue is empty and no handler runs. */
  idle(options?: { timeoutMs?: number }): Promise<void>;
  stop(): Promise<void>;
}

const MAX_BODY = 16 * 1024 * 1024;
/** How long Azure's front end waits for an HTTP function's answer (functions-scale, timeout note 1). */
export const HTTP_RESPONSE_LIMIT_MS = 230_000;
const LATE = Symbol('late');
const errorName = (error: unknown) => (error instanceof Error ? error.name : 'error');

/** The headers of the local host's own error answers: the app's, as on the app's own answers. */
const ERROR_HEADERS = { ...SECURITY_HEADERS, 'Content-Type': 'application/json' } as const;

interface CompiledRoute {
  definition: HttpDefinition;
  pattern: RegExp;
  names: string[];
}

/**
 * host.json's `extensions.http.routePrefix` ('api' when unset; '' serves routes at the root), as
 * the host reads it (functions-bindings-http-webhook#hostjson-settings).
 */
export function hostRoutePrefix(file = path.resolve(__dirname, '../host.json')): string {
  try {
    const host = JSON.parse(readFileSync(file, 'utf8')) as {
      extensions?: { http?: { routePrefix?: unknown } };
    };
    const prefix = host.extensions?.http?.routePrefix;
    if (typeof prefix === 'string') return prefix.replace(/^\/+|\/+$/g, '');
  } catch {
    // no host.json: the host's default
  }
  return 'api';
}

/**
 * The path as Kestrel hands it to the Functions host's router: every valid percent-encoded
 * sequence decoded except `%2F`, which stays as it is (so it never splits a segment and reaches a
 * route parameter still encoded), and one that is not UTF-8 left as sent instead of refused
 * (dotnet/aspnetcore#30655, #2655). Routes then match and take their parameters on this path.
 */
export function kestrelPath(pathname: string): string {
  return pathname
    .split(/(%2F)/i)
    .map((piece, i) =>
      i % 2 === 1
        ? piece
        : piece.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
            try {
              return decodeURIComponent(run);
            } catch {
              return run;
            }
          }),
    )
    .join('');
}

/**
 * The URL of a request as Kestrel takes it: the Host header's host, and the request line's path.
 * A path is never resolved as a reference: `//other.example/api/...` is a path that no route has,
 * not a request to another host (resolved against the Host, it was the route `/api/...` with a URL
 * naming `other.example`, where the simulator then sent what it signed). A request line naming a
 * host (`POST http://other.example/...`) must name the Host header's, as Kestrel requires
 * (KestrelServerOptions.AllowHostHeaderOverride, off by default); null when it does not, or when
 * the Host header is not a host and port.
 */
export function requestUrl(target: string, host: string): URL | null {
  try {
    const named = new URL(`http://${host}`);
    // A host and port only: `a@b`, `a/b`, `a?b` are no Host header.
    if (named.username || named.password || named.pathname !== '/' || named.search || named.hash) return null;
    const { origin } = named;
    if (target.startsWith('/')) return new URL(`${origin}${target}`);
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) return new URL(target, origin);
    const absolute = new URL(target);
    return absolute.origin === origin ? absolute : null;
  } catch {
    return null;
  }
}

function compileRoute(definition: HttpDefinition, prefix: string): CompiledRoute {
  const names: string[] = [];
  const source = definition.route
    .replace(/^\/+|\/+$/g, '')
    .split('/')
    .map((segment) => {
      const param = /^\{(\*?)([A-Za-z0-9_]+)(\?)?(:[^}]*)?\}$/.exec(segment);
      if (!param) return segment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      names.push(param[2] as string);
      return param[1] ? '(.*)' : '([^/]+)';
    })
    .join('/');
  const base = prefix ? `/${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}` : '';
  return { definition, pattern: new RegExp(`^${base}/${source}/?$`, 'i'), names };
}

/** The socket's address and port as Azure writes them in X-Forwarded-For (`ip:port`, `[ipv6]:port`). */
function peerAddress(req: http.IncomingMessage): string | null {
  const { remoteAddress, remotePort } = req.socket;
  if (!remoteAddress) return null;
  const port = remotePort === undefined ? '' : `:${remotePort}`;
  return remoteAddress.includes(':') ? `[${remoteAddress}]${port}` : `${remoteAddress}${port}`;
}

export async function startDevServer(options: DevServerOptions): Promise<DevServer> {
  const log: HostLog =
    options.log ?? ((level, name, message) => process.stderr.write(`[${level}] ${name}: ${message}\n`));
  const prefix = options.routePrefix ?? hostRoutePrefix();
  const responseLimitMs = options.responseLimitMs ?? HTTP_RESPONSE_LIMIT_MS;
  const routes = options.definitions
    .filter((d): d is HttpDefinition => d.kind === 'http')
    .map((d) => compileRoute(d, prefix));
  const ownsQueues = !options.queues;
  let azurite: Azurite | undefined;
  let queues = options.queues;
  let queueThread: QueueThread | undefined;
  // The port first: Azurite and the database take free ports, which could be this one.
  let ready: (host: QueueHost) => void = () => undefined;
  let failed: (error: unknown) => void = () => undefined;
  const hostReady = new Promise<QueueHost>((resolve, reject) => {
    ready = resolve;
    failed = reject;
  });
  hostReady.catch(() => undefined);
  const server = http.createServer((req, res) => {
    hostReady
      .then((host) => handle(host, req, res))
      .catch((error: unknown) => {
        log('error', 'host', `request failed: ${error instanceof Error ? error.name : 'error'}`);
        if (!res.headersSent) res.writeHead(500, ERROR_HEADERS);
        res.end(JSON.stringify({ error: { code: 'INTERNAL', message: 'internal error' } }));
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  options.onListening?.();
  const closeServer = async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  try {
    queues = await startHost();
  } catch (error) {
    failed(error);
    await closeServer();
    await azurite?.stop();
    throw error;
  }
  const host = queues;
  ready(host);

  /** After the gate: the queue host given, or one on the storage account (an Azurite started here). */
  async function startHost(): Promise<QueueHost> {
    await options.gate;
    if (queues) return queues;
    if (!options.storage) {
      // HTTP functions only (the dashboard test): no storage account is needed.
      const needsQueues = options.definitions.some(
        (d) => d.kind !== 'http' || (d.queueOutputs?.length ?? 0) > 0,
      );
      if (needsQueues) throw new Error('startDevServer needs queues or storage for these definitions');
      return {
        send: async (queueName) => {
          throw new Error(`no storage account: cannot write to ${queueName}`);
        },
        idle: async () => undefined,
        stop: async () => undefined,
      };
    }
    if ('connectionString' in options.storage) return queueHost(options.storage.connectionString);
    azurite = await startAzurite({
      location: options.storage.location,
      log: (line) => (options.say ?? ((l: string) => process.stderr.write(`${l}\n`)))(line),
      // An HTTP function's answer depends on its queue writes (the webhook's acknowledgement).
      // What a queue function writes is safe without: its own message is deleted after, and
      // Azurite saves its whole state at once, so a saved delete comes with the write before it.
      durableQueues: options.definitions
        .filter((d): d is HttpDefinition => d.kind === 'http')
        .flatMap((d) => (d.queueOutputs ?? []).map((o) => String(o['queueName']))),
    });
    const { pid } = azurite;
    void azurite.exited.then((how) => options.onStorageExit?.(`Azurite (pid ${pid}) ${how}`));
    return queueHost(azurite.connectionString);
  }

  /** The queue and timer functions on the storage account: in this thread, or in their own. */
  async function queueHost(connectionString: string): Promise<QueueHost> {
    const hostOptions = { ...options.queueOptions, definitions: options.definitions, connectionString, log };
    if (!options.queueThread) return startQueueHost(hostOptions);
    const thread = await startQueueThread({ ...hostOptions, ...options.queueThread });
    queueThread = thread;
    thread.failed.catch((error: Error) => {
      // Where it was thrown, as one process dying of it would have printed (numbers, tokens removed).
      const frames =
        error.cause instanceof Error
          ? (error.cause.stack ?? '').split('\n').filter((line) => /^\s+at /.test(line))
          : [];
      log('error', 'host', [error.message, ...frames.map((line) => scrub(line))].join('\n'));
      options.onQueueFailure?.(error);
    });
    return thread;
  }

  async function handle(host: QueueHost, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = requestUrl(req.url ?? '/', req.headers.host ?? '127.0.0.1');
    if (!url) {
      // A Host header that is no host name (`a b`), or that another host in the request line
      // contradicts, is the client's mistake, as Azure's front end answers it: 400, never a 500.
      res
        .writeHead(400, ERROR_HEADERS)
        .end(JSON.stringify({ error: { code: 'INVALID_INPUT', message: 'invalid Host header' } }));
      return;
    }
    const method = (req.method ?? 'GET').toUpperCase();
    const routePath = kestrelPath(url.pathname);
    const matches = routes
      .map((route) => ({ route, match: route.pattern.exec(routePath) }))
      .filter((m) => m.match);
    const found = matches.find((m) => m.route.definition.methods.includes(method as never));
    if (!found || !found.match) {
      // A method the route does not have is no route to the Functions host: 404, not 405
      // (Azure/azure-functions-host#10098, #11625). The message says which methods the path has.
      const allowed = [...new Set(matches.flatMap((m) => m.route.definition.methods))];
      res.writeHead(404, ERROR_HEADERS);
      const message = matches.length
        ? `no route takes ${method} here (the path takes ${allowed.join(', ')})`
        : 'no such route';
      res.end(JSON.stringify({ error: { code: 'NOT_FOUND', message } }));
      return;
    }
    // Past the hard cap (Azure takes up to 100 MB; every route that reads a body refuses far less)
    // the answer is an error body like the app's own 413, and the rest is not read.
    const tooLarge = () => {
      res.once('finish', () => req.destroy());
      res.writeHead(413, {
        ...ERROR_HEADERS,
        Connection: 'close',
      });
      res.end(JSON.stringify({ error: { code: 'PAYLOAD_TOO_LARGE', message: 'body too large' } }));
    };
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY) return tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      // Keep reading past the app's own limit so it can answer 413 itself; stop only at a hard cap.
      if (size > MAX_BODY) return tooLarge();
      chunks.push(chunk as Buffer);
    }
    const body = Buffer.concat(chunks);
    const { definition } = found.route;
    // Already decoded as Kestrel decodes a path (kestrelPath): `%2F` and a sequence that is not
    // UTF-8 reach the function as sent.
    const params = Object.fromEntries(found.route.names.map((name, i) => [name, found.match?.[i + 1] ?? '']));
    const headers: Record<string, string | string[]> = {};
    for (const [key, values] of Object.entries(req.headersDistinct)) if (values) headers[key] = values;
    // As Azure's front end does: the address it saw goes after whatever X-Forwarded-For the caller sent.
    const peer = peerAddress(req);
    if (peer) {
      const sent = req.headersDistinct['x-forwarded-for']?.join(', ').trim();
      headers['x-forwarded-for'] = sent ? `${sent}, ${peer}` : peer;
    }
    // Built as the Functions host builds it (query, repeated headers, a chunked body: host-request.ts).
    const request = hostRequest({ method, url: url.toString(), headers, params, body });
    const ctx = invocationContext(definition.name, log, {
      options: {
        trigger: { type: 'httpTrigger', name: 'request' },
        extraOutputs: definition.queueOutputs ?? [],
      },
    });
    const invocation = (async () => {
      const answer = await definition.handler(request, ctx);
      // Output bindings are written before the response, as the host does; a failure answers 500.
      for (const queueOutput of definition.queueOutputs ?? []) {
        const items = ctx.extraOutputs.get(queueOutput);
        if (items === undefined) continue;
        await host.send(String(queueOutput['queueName']), Array.isArray(items) ? items : [items]);
      }
      return answer;
    })();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<typeof LATE>((resolve) => {
      timer = setTimeout(() => resolve(LATE), responseLimitMs);
    });
    const result = await Promise.race([invocation, late]).finally(() => clearTimeout(timer));
    if (result === LATE) {
      // Azure's front end stops waiting for an HTTP function after 230 s, whatever functionTimeout
      // says; the function runs on and its outputs are still written (functions-scale, "Function
      // app timeout duration": "230 seconds is the maximum amount of time that an HTTP triggered
      // function can take to respond to a request", the Azure Load Balancer's idle timeout).
      invocation.catch((error: unknown) =>
        log('error', definition.name, `failed after its answer timed out: ${errorName(error)}`),
      );
      res.writeHead(502, ERROR_HEADERS).end(
        JSON.stringify({
          error: {
            code: 'UPSTREAM_FAILED',
            message: `no answer within ${Math.round(responseLimitMs / 1000)} s (Azure's front end gives up)`,
          },
        }),
      );
      return;
    }
    const response = result instanceof HttpResponse ? result : new HttpResponse(result ?? {});
    const out = Buffer.from(await response.arrayBuffer());
    const outHeaders: Record<string, string> = {};
    response.headers.forEach((value, key) => {
      outHeaders[key] = value;
    });
    res.writeHead(response.status, outHeaders);
    res.end(method === 'HEAD' ? undefined : out);
  }

  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    port,
    queues: host,
    queueThread,
    storageConnectionString:
      azurite?.connectionString ??
      (options.storage && 'connectionString' in options.storage
        ? options.storage.connectionString
        : undefined),
    idle: (idleOptions) => host.idle(idleOptions),
    async stop() {
      await closeServer();
      if (ownsQueues) await host.stop();
      await azurite?.stop();
    },
  };
}
