// The bench's Meta: sends POSTs at a given concurrency from a worker thread, so that the client's
// own work (building requests, reading answers) does not run on the event loop of the local host it
// measures — Meta's servers are not in our process either.
import { Worker } from 'node:worker_threads';

export interface Post {
  readonly body: string;
  readonly signature: string;
}

export interface Posted {
  readonly status: number;
  /** From the request's start to the end of the answer. */
  readonly ms: number;
  /** When the request started, in epoch milliseconds (comparable across threads). */
  readonly startedAt: number;
}

// Plain JavaScript, run with `eval`: the worker needs no TypeScript loader.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
const { url, posts, concurrency } = workerData;
const target = new URL(url + '/api/webhook');
// Node's own HTTP client with kept-alive connections: lighter than fetch, so that the client's
// share of this machine's cores stays small.
const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
const results = new Array(posts.length);
let next = 0;
function one(i) {
  const startedAt = performance.timeOrigin + performance.now();
  const body = Buffer.from(posts[i].body);
  return new Promise((resolve) => {
    const done = (status) => {
      results[i] = { status, ms: performance.timeOrigin + performance.now() - startedAt, startedAt };
      resolve();
    };
    const req = http.request(
      target,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'content-length': body.length,
          'x-hub-signature-256': posts[i].signature,
        },
      },
      (res) => {
        res.on('data', () => undefined);
        res.on('end', () => done(res.statusCode ?? 0));
        res.on('error', () => done(0));
      },
    );
    req.on('error', () => done(0));
    req.end(body);
  });
}
Promise.all(
  Array.from({ length: Math.min(concurrency, posts.length) }, async () => {
    while (next < posts.length) await one(next++);
  }),
).then(() => {
  agent.destroy();
  parentPort.postMessage(results);
});
`;

/** Sends every POST (webhook signature header included), `concurrency` at a time; results in order. */
export function postAll(url: string, posts: readonly Post[], concurrency: number): Promise<Posted[]> {
  if (posts.length === 0) return Promise.resolve([]);
  return new Promise<Posted[]>((resolve, reject) => {
    const worker = new Worker(WORKER, {
      eval: true,
      workerData: { url, posts: posts.map(({ body, signature }) => ({ body, signature })), concurrency },
    });
    worker.once('message', (results: Posted[]) => {
      resolve(results);
      void worker.terminate();
    });
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`the load worker exited with code ${code}`));
    });
  });
}
