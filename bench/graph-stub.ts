// The bench's Graph API: a loopback server that accepts every send with a fresh wamid and
// records when it came, to whom, and the wamid it returned (read receipts are answered, not kept).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Send {
  /** Epoch milliseconds (comparable across threads). */
  readonly at: number;
  readonly to: string;
  readonly wamid: string;
}

export interface BenchGraph {
  readonly url: string;
  readonly sends: Send[];
  close(): Promise<void>;
}

export async function startBenchGraph(port = 0): Promise<BenchGraph> {
  const sends: Send[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch {
        // answered below like any request
      }
      res.writeHead(200, { 'Content-Type': 'application/json' });
      if (body['status'] !== undefined) {
        res.end('{"success":true}');
        return;
      }
      const to = String(body['to'] ?? body['recipient'] ?? '');
      const wamid = `wamid.bench.${++n}.${Date.now()}`;
      sends.push({ at: performance.timeOrigin + performance.now(), to, wamid });
      res.end(
        JSON.stringify({
          messaging_product: 'whatsapp',
          contacts: [{ input: to, wa_id: to }],
          messages: [{ id: wamid }],
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', () => resolve()));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    sends,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
