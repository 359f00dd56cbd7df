// Vitest global setup: one database server for the whole run (see scripts/lib/database.ts); each
// test file then works in its own database on it (test/helpers/db.ts).
import type { TestProject } from 'vitest/node';
import { resolveDatabase } from '../../scripts/lib/database';

declare module 'vitest' {
  export interface ProvidedContext {
    mongoUri: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const database = await resolveDatabase({ purpose: 'test' });
  project.provide('mongoUri', database.uri);
  return async () => {
    await database.stop();
  };
}
