// A fresh, uniquely named database per test file on the server the global setup provides.
import { randomBytes } from 'node:crypto';
import { MongoClient, type Db } from 'mongodb';
import { inject } from 'vitest';

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
  const client = await new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 }).connect();
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
