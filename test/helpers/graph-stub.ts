// A loopback HTTP server standing in for the Graph API: records every request and answers from a
// script of responses (default: success with a fresh wamid).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
}

export interface StubResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
  /** Break the connection instead of answering (the request was read: Graph may have acted on it). */
  reset?: boolean;
}

/** Graph's answer to a send refused for WhatsApp's pair rate limit (131056), as Meta words it. */
export const pairLimited = (): StubResponse => ({
  status: 400,
  body: {
    error: {
      message: '(#131056) (Business Account, Consumer Account) pair rate limit hit',
      type: 'OAuthException',
      code: 131056,
      error_data: {
        messaging_product: 'whatsapp',
        details:
          'Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.',
      },
      fbtrace_id: 'AbCdEf123',
    },
  },
});

/** Graph's answer to an expired or revoked access token (HTTP 401, code 190), as Meta words it. */
export const tokenExpired = (): StubResponse => ({
  status: 401,
  body: {
    error: {
      code: 190,
      error_subcode: 463,
      type: 'OAuthException',
      message: 'Error validating access token: Session has expired on Friday, 27-Nov-26.',
    },
  },
});

/** Graph's answer to an accepted send, with the message id given. */
export const accepted = (id: string): StubResponse => ({
  status: 200,
  body: { messaging_product: 'whatsapp', contacts: [], messages: [{ id }] },
});

export interface GraphStub {
  url: string;
  requests: RecordedRequest[];
  /** Responses used in order for POST .../messages sends (not read receipts); then success. */
  sendResponses: StubResponse[];
  sends(): RecordedRequest[];
  receipts(): RecordedRequest[];
  /** Milliseconds to wait before answering a send. */
  delayMs: number;
  /** Run once, before the next read receipt is answered (something that happens while it is sent). */
  beforeReceipt: (() => Promise<void>) | null;
  close(): Promise<void>;
}

export async function startGraphStub(): Promise<GraphStub> {
  let n = 0;
  const stub: GraphStub = {
    url: '',
    requests: [],
    sendResponses: [],
    delayMs: 0,
    beforeReceipt: null,
    sends: () => stub.requests.filter((r) => r.body['type'] !== undefined && r.body['status'] === undefined),
    receipts: () => stub.requests.filter((r) => r.body['status'] === 'read'),
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const body = (text ? JSON.parse(text) : {}) as Record<string, unknown>;
      stub.requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      const isSend = body['status'] === undefined;
      const before = isSend ? null : stub.beforeReceipt;
      if (before) stub.beforeReceipt = null;
      const scripted = isSend ? stub.sendResponses.shift() : undefined;
      const response: StubResponse = scripted ?? {
        status: 200,
        body: isSend
          ? {
              messaging_product: 'whatsapp',
              contacts: [{ input: body['to'], wa_id: body['to'] }],
              messages: [{ id: `wamid.out.${++n}.${Date.now()}` }],
            }
          : { success: true },
      };
      const answer = () => {
        if (response.reset) return void req.socket.destroy();
        res.writeHead(response.status, { 'Content-Type': 'application/json', ...(response.headers ?? {}) });
        res.end(JSON.stringify(response.body));
      };
      if (before) void before().then(answer, () => void req.socket.destroy());
      else setTimeout(answer, isSend ? stub.delayMs : 0);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  stub.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return stub;
}

/** The texts of the sends a Graph stub received, in order (a send that is no text: its type). */
export const sentTextsOf = (graph: GraphStub): unknown[] =>
  graph.sends().map((r) => (r.body['text'] as { body?: string } | undefined)?.body ?? r.body['type']);
