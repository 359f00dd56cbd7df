// The database resolver (docs/contract.md, "Database resolution"): MONGODB_URI first, the running dev
// server for scripts, and the server the global setup provides for the tests.
import { spawnSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { maskUri, resolveDatabase, type ResolvedDatabase } from '../../scripts/lib/database';
import { publishDevServer, unpublishDevServer } from '../../scripts/lib/dev-record';
import { testDatabase, type TestDatabase } from '../helpers/db';

let dataDir: string;

beforeAll(async () => {
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'db-resolution-'));
});

afterAll(async () => {
  await fs.rm(dataDir, { recursive: true, force: true });
});

/** The environment without MONGODB_URI, so these tests behave the same when CI sets it. */
function envWithout(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env['MONGODB_URI'];
  return env;
}

describe('MONGODB_URI', () => {
  it('is used unchanged and logged without credentials', async () => {
    const uri =
      'mongodb://alice:s3cr3t-p4ss@db.example.com:10255/?ssl=true&replicaSet=globaldb&appName=@alice@';
    const lines: string[] = [];
    const db = await resolveDatabase({
      purpose: 'dev',
      env: { MONGODB_URI: uri },
      log: (line) => lines.push(line),
      dataDir,
    });
    expect(db.kind).toBe('uri');
    expect(db.uri).toBe(uri);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain('db.example.com:10255');
    expect(lines[0]).not.toContain('s3cr3t-p4ss');
    expect(lines[0]).not.toContain('alice:');
    expect(db.description).not.toContain('s3cr3t-p4ss');
    await db.stop();
  });

  it('masks passwords with reserved characters and secret query parameters', () => {
    expect(maskUri('mongodb://u:a/b+c==@h.example:1/db?authSource=admin')).toBe(
      'mongodb://***:***@h.example:1/db?authSource=admin',
    );
    expect(maskUri('mongodb+srv://h.example/?authMechanismProperties=AWS_SESSION_TOKEN:xyz')).toBe(
      'mongodb+srv://h.example/?authMechanismProperties=***',
    );
    expect(maskUri('mongodb://127.0.0.1:27017/')).toBe('mongodb://127.0.0.1:27017/');
    // A password with an unescaped '?', options the list does not know, and Cosmos' appName.
    expect(maskUri('mongodb://admin:S3cr?tPW@127.0.0.1:1/')).toBe('mongodb://***:***@127.0.0.1:1/');
    expect(maskUri('mongodb://h.example/?bogusOption=S3cretPW&tls=true')).toBe(
      'mongodb://h.example/?bogusOption=***&tls=true',
    );
    expect(maskUri('mongodb://acct:k/e+y==@acct.mongo.cosmos.azure.com:10255/?ssl=true&appName=@acct@')).toBe(
      'mongodb://***:***@acct.mongo.cosmos.azure.com:10255/?ssl=true&appName=***',
    );
    expect(maskUri('http://proxyuser:proxyPASS@127.0.0.1:1/?access_token=EAAx')).toBe(
      'http://***:***@127.0.0.1:1/?access_token=***',
    );
    // A mistyped scheme: the driver refuses it, and the message that names it keeps no password.
    expect(maskUri('mongodb//admin:S3cretPW@db.example.com:27017')).toBe('***:***@db.example.com:27017');
    expect(maskUri('mongodb:/admin:S3cretPW@db.example.com/?tls=true')).toBe(
      '***:***@db.example.com/?tls=true',
    );
    expect(maskUri('garbage')).toBe('garbage');
  });
});

describe('the dev server record (scripts)', () => {
  const uri = (): string => inject('mongoUri');
  const published = (): ResolvedDatabase => ({
    uri: uri(),
    kind: 'ferretdb',
    description: 'test',
    stop: async () => undefined,
  });

  it('is reused while its process is alive and the server answers', async () => {
    await publishDevServer(published(), dataDir);
    const lines: string[] = [];
    const db = await resolveDatabase({
      purpose: 'script',
      env: envWithout(),
      log: (line) => lines.push(line),
      dataDir,
    });
    expect(db.kind).toBe('dev-server');
    expect(db.uri).toBe(uri());
    expect(lines.join('\n')).toContain(`pid ${process.pid}`);
    await db.stop();
    await unpublishDevServer(dataDir);
    await expect(fs.stat(path.join(dataDir, 'dev-server.json'))).rejects.toThrow();
  });

  it('is found under DEV_DATA_DIR, as npm run dev was told', async () => {
    await publishDevServer(published(), dataDir);
    const db = await resolveDatabase({
      purpose: 'script',
      env: { ...envWithout(), DEV_DATA_DIR: dataDir },
      log: () => undefined,
    });
    expect(db.kind).toBe('dev-server');
    await db.stop();
    await unpublishDevServer(dataDir);
  });

  it('is ignored when its process is gone', async () => {
    const gone = spawnSync(process.execPath, ['-e', '']).pid;
    expect(gone).toBeGreaterThan(0);
    await fs.writeFile(
      path.join(dataDir, 'dev-server.json'),
      JSON.stringify({ uri: uri(), pid: gone, kind: 'ferretdb' }),
    );
    // Falls through to a server of its own, with its files under dataDir.
    const db = await resolveDatabase({ purpose: 'script', env: envWithout(), log: () => undefined, dataDir });
    try {
      expect(db.kind).not.toBe('dev-server');
      expect(db.kind).not.toBe('uri');
      expect(db.uri).not.toBe(uri());
    } finally {
      await db.stop();
    }
  });
});

describe('the provided test server', () => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await testDatabase('resolution');
  });

  afterAll(async () => {
    await database.drop();
  });

  it('answers ping and stores documents in a per-file database', async () => {
    expect((await database.db.command({ ping: 1 }))['ok']).toBe(1);
    expect(database.dbName).toMatch(/^t_resolution_[0-9a-f]{12}$/);
    await database.db.collection<{ _id: string; at: Date }>('probe').insertOne({ _id: 'x', at: new Date() });
    expect(await database.db.collection('probe').countDocuments()).toBe(1);
  });
});
