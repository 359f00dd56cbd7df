// The local host of `npm run dev` (Azure Functions Core Tools cannot be installed everywhere):
// serves the HTTP definitions on 127.0.0.1 under /api with the real HttpRequest/InvocationContext
// types, and runs queued jobs in-process with the host's retry and poison-queue behaviour.
import { HttpRequest, HttpResponse, InvocationContext } from '@azure/functions';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FunctionDefinition, HttpDefinition, QueueDefinition } from '../functions/definition-types';

export interface DevServerOptions {
  readonly definitions: readonly FunctionDefinition[];
  readonly port: number;
  readonly host?: string;
  /** Where function logs go (default: stderr). */
  readonly log?: (level: string, functionName: string, message: string) => void;
  /** Delays between attempts of a failing queue job (the host's visibility timeout). */
  readonly retryDelaysMs?: readonly number[];
}

export interface DevServer {
  readonly url: string;
  readonly port: number;
  /** Resolves when no queued job is waiting or running. */
  idle(): Promise<void>;
  stop(): Promise<void>;
}

const MAX_DEQUEUE_COUNT = 5;
const MAX_BODY = 16 * 1024 * 1024;

interface CompiledRoute {
  definition: HttpDefinition;
  pattern: RegExp;
  names: string[];
}

function compileRoute(definition: HttpDefinition): CompiledRoute {
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
  return { definition, pattern: new RegExp(`^/api/${source}/?$`, 'i'), names };
}

export async function startDevServer(options: DevServerOptions): Promise<DevServer> {
  const log =
    options.log ?? ((level, name, message) => process.stderr.write(`[${level}] ${name}: ${message}\n`));
  const routes = options.definitions.filter((d): d is HttpDefinition => d.kind === 'http').map(compileRoute);
  const queues = new Map(
    options.definitions.filter((d): d is QueueDefinition => d.kind === 'queue').map((d) => [d.queueName, d]),
  );
  const retryDelays = options.retryDelaysMs ?? [1_000, 2_000, 4_000, 8_000];
  let running = 0;
  let waiters: (() => void)[] = [];
  let stopping = false;
  const timers = new Set<NodeJS.Timeout>();

  const context = (
    functionName: string,
    extra: Partial<ConstructorParameters<typeof InvocationContext>[0]> = {},
  ) =>
    new InvocationContext({
      invocationId: randomUUID(),
      functionName,
      logHandler: (level, ...args) => log(level, functionName, args.map(String).join(' ')),
      ...extra,
    });

  const settle = () => {
    if (running === 0 && timers.size === 0) {
      const done = waiters;
      waiters = [];
      for (const resolve of done) resolve();
    }
  };

  function enqueue(queueName: string, item: unknown, dequeueCount = 1): void {
    const queue = queues.get(queueName);
    if (!queue) {
      log('warning', 'host', `no function listens on queue ${queueName}; item dropped`);
      return;
    }
    // The host hands queue items over as JSON, like Azure Storage queues do.
    const payload: unknown = JSON.parse(JSON.stringify(item));
    running++;
    setImmediate(() => {
      const ctx = context(queue.name, { triggerMetadata: { dequeueCount, id: randomUUID() } });
      queue
        .handler(payload, ctx)
        .catch((error: unknown) => {
          const name = error instanceof Error ? error.name : 'error';
          if (dequeueCount >= MAX_DEQUEUE_COUNT) {
            log(
              'warning',
              queue.name,
              `attempt ${dequeueCount} failed (${name}); moved to ${queueName}-poison`,
            );
            enqueue(`${queueName}-poison`, payload, 1);
          } else if (!stopping) {
            log('warning', queue.name, `attempt ${dequeueCount} failed (${name}); will retry`);
            const delay = retryDelays[Math.min(dequeueCount - 1, retryDelays.length - 1)] ?? 1_000;
            const timer = setTimeout(() => {
              timers.delete(timer);
              enqueue(queueName, payload, dequeueCount + 1);
              settle();
            }, delay);
            timers.add(timer);
          }
        })
        .finally(() => {
          running--;
          settle();
        });
    });
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', `http://${req.headers.host ?? '127.0.0.1'}`);
    const method = (req.method ?? 'GET').toUpperCase();
    const matches = routes
      .map((route) => ({ route, match: route.pattern.exec(url.pathname) }))
      .filter((m) => m.match);
    const found = matches.find((m) => m.route.definition.methods.includes(method as never));
    if (!found || !found.match) {
      res.writeHead(matches.length ? 405 : 404, { 'Content-Type': 'application/json' });
      res.end(
        JSON.stringify({
          error: { code: matches.length ? 'METHOD_NOT_ALLOWED' : 'NOT_FOUND', message: 'no such route' },
        }),
      );
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      // Keep reading past the app's own limit so it can answer 413 itself; stop only at a hard cap.
      if (size > MAX_BODY) {
        res.writeHead(413).end();
        req.destroy();
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const body = Buffer.concat(chunks);
    const { definition } = found.route;
    const params = Object.fromEntries(
      found.route.names.map((name, i) => [name, decodeURIComponent(found.match?.[i + 1] ?? '')]),
    );
    const headers: Record<string, string> = {};
    for (const [key, value] of Object.entries(req.headers)) {
      if (value !== undefined) headers[key] = Array.isArray(value) ? value.join(', ') : value;
    }
    const request = new HttpRequest({
      method,
      url: url.toString(),
      headers,
      params,
      ...(body.length ? { body: { bytes: body } } : {}),
    });
    const ctx = context(definition.name, {
      options: {
        trigger: { type: 'httpTrigger', name: 'request' },
        extraOutputs: definition.queueOutputs ?? [],
      },
    });
    const result = await definition.handler(request, ctx);
    for (const queueOutput of definition.queueOutputs ?? []) {
      const items = ctx.extraOutputs.get(queueOutput);
      if (items === undefined) continue;
      const queueName = String(queueOutput['queueName']);
      for (const item of Array.isArray(items) ? items : [items]) enqueue(queueName, item);
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

  const server = http.createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      log('error', 'host', `request failed: ${error instanceof Error ? error.name : 'error'}`);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'INTERNAL', message: 'internal error' } }));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host ?? '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;

  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    port,
    idle: () =>
      new Promise<void>((resolve) => {
        waiters.push(resolve);
        settle();
      }),
    async stop() {
      stopping = true;
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Let running jobs finish, for a bounded time.
      await Promise.race([
        new Promise<void>((resolve) => {
          waiters.push(resolve);
          settle();
        }),
        new Promise((resolve) => setTimeout(resolve, 5_000)),
      ]);
    },
  };
}
