// A database that hangs: a TCP server on 127.0.0.1 that relays to the test database until `hang()`,
// then accepts connections and never answers (and stops relaying the open ones), as a database
// host whose process is stuck, or a network path that drops packets, does.
import { connect, createServer, type Socket } from 'node:net';

export interface HangingProxy {
  /** A connection string for the proxy, with the test database URI's options. */
  readonly uri: string;
  /** From now on nothing answers: new connections are accepted and left silent. */
  hang(): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function hangingProxy(
  target: string,
  options: { hanging?: boolean } = {},
): Promise<HangingProxy> {
  const to = new URL(target);
  let hanging = options.hanging ?? false;
  let accepted = 0;
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  };
  const server = createServer((client) => {
    accepted++;
    track(client);
    if (hanging) return;
    const upstream = connect(Number(to.port || 27017), to.hostname);
    track(upstream);
    client.on('data', (chunk) => {
      if (!hanging) upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (!hanging) client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => {
      // A hanging host closes nothing: the client's side stays open and silent.
      if (!hanging) client.destroy();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const uri = new URL(target);
  uri.host = `127.0.0.1:${port}`;
  return {
    uri: uri.toString(),
    hang: () => {
      hanging = true;
    },
    get accepted() {
      return accepted;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
