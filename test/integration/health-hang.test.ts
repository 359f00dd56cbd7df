// GET /api/health against a database that accepts connections and never answers: the health check
// must answer 503 quickly (a monitor or a load balancer probing it gives up after a few seconds),
// not after the client's server selection or the host's function timeout.
import { InvocationContext } from '@azure/functions';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { healthCheck } from '../../functions/health';
import { hostRequest } from '../../scripts/lib/host-request';
import { loadConfig } from '../../shared/config';
import { closeAllClients } from '../../shared/data';
import { buildServices, type Runtime } from '../../shared/deps';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { hangingProxy, type HangingProxy } from '../helpers/hanging-proxy';

let db: TestDatabase;
const proxies: HangingProxy[] = [];

beforeAll(async () => {
  db = await testDatabase('health_hang');
});

afterAll(async () => {
  await closeAllClients();
  for (const p of proxies) await p.close();
  await db?.drop();
});

/** The app's runtime on `uri`, its services built on first use as in production (getServices). */
function runtimeOn(uri: string): Runtime {
  const config = loadConfig({
    WHATSAPP_VERIFY_TOKEN: 'verify-token',
    WHATSAPP_APP_SECRET: 'app-secret',
    MONGODB_URI: uri,
    MONGODB_DATABASE: db.dbName,
  });
  let services: ReturnType<typeof buildServices> | undefined;
  return {
    config: () => config,
    services: () =>
      (services ??= buildServices(config).catch((error: unknown) => {
        services = undefined;
        throw error;
      })),
  };
}

async function health(runtime: Runtime): Promise<{ status: number; body: unknown; ms: number }> {
  const started = performance.now();
  const r = await healthCheck(runtime)(
    hostRequest({ method: 'GET', url: 'http://localhost/api/health', headers: {}, params: {} }),
    new InvocationContext({ functionName: 'health', logHandler: () => undefined }),
  );
  return { status: r.status ?? 200, body: r.jsonBody, ms: performance.now() - started };
}

const UNREACHABLE = { status: 'error', database: 'unreachable' };
/** Within the health check's own limit (2.5 s), with some slack for a busy machine. */
const QUICK_MS = 4_000;

it('answers 503 quickly when the database accepts connections and never answers', async () => {
  const proxy = await hangingProxy(db.uri, { hanging: true });
  proxies.push(proxy);
  const answer = await health(runtimeOn(proxy.uri));
  expect(proxy.accepted).toBeGreaterThan(0);
  expect(answer.status).toBe(503);
  expect(answer.body).toEqual(UNREACHABLE);
  expect(answer.ms).toBeLessThan(QUICK_MS);
}, 30_000);

it('answers 503 quickly when a database it is connected to stops answering', async () => {
  const proxy = await hangingProxy(db.uri);
  proxies.push(proxy);
  const runtime = runtimeOn(proxy.uri);
  const healthy = await health(runtime);
  expect(healthy.status).toBe(200);
  expect(healthy.body).toMatchObject({ status: 'ok', database: 'ok' });
  proxy.hang();
  const answer = await health(runtime);
  expect(answer.status).toBe(503);
  expect(answer.body).toEqual(UNREACHABLE);
  expect(answer.ms).toBeLessThan(QUICK_MS);
}, 60_000);
