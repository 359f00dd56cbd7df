// A fresh, uniquely named database per test file on the server the global setup provides.
import { randomBytes } from 'node:crypto';
import { MongoClient, type Db } from 'mongodb';
import { inject } from 'vitest';
import { watchClient } from '../../shared/data';
import { CLIENT_OPTIONS } from '../../shared/data/client';

export interface TestDatabase {
  uri: string;
  dbName: string;
  db: Db;
  /** Drops the database and closes this helper's client; call it in afterAll. */
  drop(): Promise<void>;
}

export async function testDatabase(name?: string): Promise<TestDatabase> {
  const uri = inject('mongoUri');
  // Short and plain: FerretDB and Cosmos DB restrict database names (length, characters).
  const label = name
    ? `${name
        .toLowerCase()
        .replace(/[^a-z0-9]+/g, '_')
        .slice(0, 24)}_`
    : '';
  const dbName = `t_${label}${randomBytes(6).toString('hex')}`;
  // The app's options (no retryable writes, …), and monitored: the commands of the stores made on
  // this database, and of the tests' own reads, are checked against Cosmos DB's rules
  // (test/cosmos/setup.ts).
  const client = await watchClient(
    new MongoClient(uri, { ...CLIENT_OPTIONS, serverSelectionTimeoutMS: 10_000, monitorCommands: true }),
  ).connect();
  const db = client.db(dbName);
  let dropped = false;
  return {
    uri,
    dbName,
    db,
    async drop() {
      if (dropped) return;
      dropped = true;
      try {
        await db.dropDatabase();
      } finally {
        await client.close();
      }
    },
  };
}
