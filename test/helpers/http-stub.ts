// A loopback HTTP stub (node:http on 127.0.0.1:0) standing in for an upstream API: it records every
// request and answers with what the test's responder returns, optionally after a delay.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StubRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The raw body. */
  text: string;
  /** The body parsed as a JSON object ({} when empty or not JSON). */
  body: Record<string, unknown>;
}

export interface StubReply {
  status: number;
  body: unknown;
  delayMs?: number;
  /** Answered once this settles (then after `delayMs`): a test holds the answer until an event. */
  until?: Promise<unknown>;
  headers?: Record<string, string>;
  /** Sent as it is instead of `body` as JSON (a body that is not JSON, such as Server-Sent Events). */
  raw?: string;
}

/** Answers the request; `index` counts the requests this stub received, from 0. */
export type StubResponder = (request: StubRequest, index: number) => StubReply;

export interface HttpStub {
  url: string;
  requests: StubRequest[];
  /** Replaceable between tests. */
  respond: StubResponder;
  close(): Promise<void>;
}

function parseObject(text: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(text);
    return value && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : {};
  } catch {
    return {};
  }
}

export async function startHttpStub(respond: StubResponder): Promise<HttpStub> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const recorded: StubRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        text,
        body: parseObject(text),
      };
      stub.requests.push(recorded);
      const reply = stub.respond(recorded, stub.requests.length - 1);
      const send = () => {
        if (res.destroyed) return;
        res.writeHead(reply.status, { 'Content-Type': 'application/json', ...reply.headers });
        res.end(reply.raw ?? JSON.stringify(reply.body));
      };
      const answer = () => (reply.delayMs ? void setTimeout(send, reply.delayMs) : send());
      if (reply.until) void reply.until.then(answer, answer);
      else answer();
    });
  });
  const stub: HttpStub = {
    url: '',
    requests: [],
    respond,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  stub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return stub;
}
