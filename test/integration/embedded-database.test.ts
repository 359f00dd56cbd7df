// The embedded database when there is no MONGODB_URI (scripts/lib): one message with the ways out
// when no server can be had, the first build's progress, two servers side by side, and server
// errors kept out of our logs.
import { promises as fs, chmodSync, existsSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NoDatabaseError, resolveDatabase } from '../../scripts/lib/database';
import { startFerretDb } from '../../scripts/lib/ferretdb';
import {
  FERRETDB_GO_VERSION,
  FERRETDB_VERSION,
  ensureFerretDb,
  ferretDbBinaryPath,
} from '../../scripts/lib/ferretdb-build';
import { FERRETDB_EDITS } from '../../scripts/lib/ferretdb-patches';
import { scrubServerLog } from '../../scripts/lib/watchdog';

const ROOT = path.resolve(__dirname, '..', '..');
let tmp: string;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'embedded-db-'));
});

afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A mongod in the repository's mongodb-memory-server cache would be used before FerretDB. */
const cachedMongod = (() => {
  const dir = path.join(ROOT, 'node_modules', '.cache', 'mongodb-memory-server');
  return existsSync(dir) && readdirSync(dir).some((name) => /^mongod/.test(name));
})();

/** An environment with an empty home and cache, no MONGODB_URI, and `PATH` as given. */
async function isolatedEnv(name: string, PATH: string): Promise<NodeJS.ProcessEnv> {
  const home = path.join(tmp, name);
  await fs.mkdir(home, { recursive: true });
  return { PATH, HOME: home, XDG_CACHE_HOME: path.join(home, '.cache') };
}

describe.skipIf(cachedMongod)('no database server to be had', () => {
  it('without Go and without a mongod ends with one message listing every way out', async () => {
    const emptyBin = path.join(tmp, 'empty-bin');
    await fs.mkdir(emptyBin, { recursive: true });
    const env = { ...(await isolatedEnv('no-go', emptyBin)), MONGOMS_RUNTIME_DOWNLOAD: '0' };
    const lines: string[] = [];
    const error = await resolveDatabase({ purpose: 'test', env, log: (l) => lines.push(l) }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NoDatabaseError);
    const message = (error as Error).message;
    expect(message).toContain('MONGOMS_RUNTIME_DOWNLOAD');
    expect(message).toContain(`Go is not installed (Go ≥ ${FERRETDB_GO_VERSION}`);
    for (const wayOut of ['MONGODB_URI', 'MONGOMS_SYSTEM_BINARY', `install Go ≥ ${FERRETDB_GO_VERSION}`])
      expect(message).toContain(wayOut);
    expect(existsSync(ferretDbBinaryPath(env))).toBe(false);
  });

  it('after a failed mongod download, names the failure in the same one message', async () => {
    const emptyBin = path.join(tmp, 'empty-bin');
    const env = {
      ...(await isolatedEnv('failed-download', emptyBin)),
      // Nothing listens on the discard port: the download fails at once.
      MONGOMS_DOWNLOAD_MIRROR: 'http://127.0.0.1:9',
      MONGOMS_DOWNLOAD_DIR: path.join(tmp, 'failed-download', 'mongod'),
    };
    const lines: string[] = [];
    const error = await resolveDatabase({ purpose: 'test', env, log: (l) => lines.push(l) }).catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NoDatabaseError);
    expect((error as Error).message).toMatch(/mongod: the mongod download failed \(.+\)/);
    expect((error as Error).message).toContain('MONGOMS_SYSTEM_BINARY');
    expect(lines.some((l) => l.includes('mongod download failed'))).toBe(true);
  }, 60_000);
});

describe('the first build of FerretDB', () => {
  it('shows each step with the elapsed time', async () => {
    // A stand-in `go` that does each step at once, so the flow runs without a network.
    const bin = path.join(tmp, 'fake-go-bin');
    const source = path.join(tmp, 'fake-src');
    await fs.mkdir(bin, { recursive: true });
    await fs.mkdir(path.join(source, 'build', 'version'), { recursive: true });
    // The text the build's fixes replace (ferretdb-patches.ts), so that they apply.
    const files = new Map<string, string>();
    for (const edit of FERRETDB_EDITS) files.set(edit.file, `${files.get(edit.file) ?? ''}${edit.find}\n`);
    for (const [file, text] of files) {
      await fs.mkdir(path.dirname(path.join(source, file)), { recursive: true });
      await fs.writeFile(path.join(source, file), text);
    }
    await fs.writeFile(
      path.join(bin, 'go'),
      [
        '#!/bin/sh',
        'case "$1" in',
        '  version) echo "go version go1.24.3 stand-in" ;;',
        `  list) echo "${source}" ;;`,
        `  install) mkdir -p "$GOBIN" && printf '#!/bin/sh\\necho "ferretdb version ${FERRETDB_VERSION}"\\n' > "$GOBIN/ferretdb" && chmod +x "$GOBIN/ferretdb" ;;`,
        '  mod|get|env) ;;',
        '  *) exit 1 ;;',
        'esac',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const env = await isolatedEnv('build', `${bin}:/usr/bin:/bin`);
    const lines: string[] = [];
    const binary = await ensureFerretDb({ env, log: (l) => lines.push(l) });
    expect(binary).toBe(ferretDbBinaryPath(env));
    expect(existsSync(binary)).toBe(true);
    const steps = lines.filter((l) => /^database: {3}\[\d+ s\] /.test(l));
    expect(steps.map((l) => /\] (\S+)/.exec(l)?.[1])).toEqual(['checking', '1/4', '2/4', '3/4', '4/4']);
    expect(lines[0]).toContain('first run only');
    expect(lines.at(-1)).toMatch(/installed FerretDB .* in \d+ s$/);
  });
});

describe('two embedded databases', () => {
  it('run side by side, each with its own data', async () => {
    const binary = ferretDbBinaryPath();
    if (!existsSync(binary)) await ensureFerretDb();
    const log = (): void => undefined;
    const [a, b] = await Promise.all([startFerretDb(binary, log), startFerretDb(binary, log)]);
    const clients: MongoClient[] = [];
    try {
      expect(a.uri).not.toBe(b.uri);
      const [ca, cb] = await Promise.all(
        [a, b].map(async (db) => {
          const client = await new MongoClient(db.uri, { serverSelectionTimeoutMS: 5_000 }).connect();
          clients.push(client);
          return client.db('side_by_side').collection<{ _id: string }>('c');
        }),
      );
      await ca!.insertOne({ _id: 'only-in-a' });
      expect(await cb!.countDocuments()).toBe(0);
      expect(await ca!.countDocuments()).toBe(1);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

describe('the embedded database on disk', () => {
  it('keeps every acknowledged write when the server is killed with SIGKILL', async () => {
    const binary = ferretDbBinaryPath();
    if (!existsSync(binary)) await ensureFerretDb();
    const dir = path.join(tmp, 'durable');
    const log = (): void => undefined;
    const first = await startFerretDb(binary, log, { persistentDir: dir });
    const writes = 200;
    const client = await new MongoClient(first.uri, { serverSelectionTimeoutMS: 5_000 }).connect();
    try {
      const c = client.db('durable').collection<{ _id: string; n?: number }>('c');
      for (let i = 0; i < writes; i++) await c.insertOne({ _id: `d${i}` });
      await c.insertOne({ _id: 'counter', n: 0 });
      for (let i = 0; i < writes; i++) await c.updateOne({ _id: 'counter' }, { $inc: { n: 1 } });
    } finally {
      await client.close();
    }
    expect(first.pid).toBeGreaterThan(0);
    process.kill(first.pid!, 'SIGKILL');
    await first.stop(); // waits for the exit

    // The files hold every user's number, name and messages: the folder is the owner's alone.
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    chmodSync(dir, 0o755); // made by an earlier version
    const second = await startFerretDb(binary, log, { persistentDir: dir });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const reader = await new MongoClient(second.uri, { serverSelectionTimeoutMS: 5_000 }).connect();
    try {
      const c = reader.db('durable').collection<{ _id: string; n?: number }>('c');
      expect(await c.countDocuments({ _id: { $regex: '^d' } })).toBe(writes);
      expect((await c.findOne({ _id: 'counter' }))?.n).toBe(writes);
    } finally {
      await reader.close();
      await second.stop();
    }
  });
});

describe('server errors forwarded to our messages', () => {
  it('lose the quoted document fragments, values and numbers FerretDB puts in them', () => {
    const json =
      '{"level":"error","msg":"Response error","error":"E11000 duplicate key error collection: t.users index: _id_ dup key: { _id: \\"u_15551234567\\", text: \\"my secret\\" }","conn":"127.0.0.1:5555"}';
    const scrubbed = scrubServerLog(json);
    expect(scrubbed).toContain('level=error');
    expect(scrubbed).toContain('E11000 duplicate key error');
    expect(scrubbed).not.toMatch(/15551234567|secret|u_/);
    const plain = 'ERROR handler: bad value "hello 15551234567" in {text: "hi", n: 1}';
    expect(scrubServerLog(plain)).toBe('ERROR handler: bad value "…" in {…}');
    expect(scrubServerLog('listen tcp 127.0.0.1:41234: bind: address already in use')).toContain(
      'address already in use',
    );
  });
});
