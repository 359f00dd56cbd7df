// Vitest global setup: one database server for the whole run (see scripts/lib/database.ts); each
// test file then works in its own database on it (test/helpers/db.ts).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { resolveDatabase } from '../../scripts/lib/database';

declare module 'vitest' {
  export interface ProvidedContext {
    mongoUri: string;
  }
}

const ROOT = path.resolve(__dirname, '..', '..');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  // The dashboard's browser modules (web/) are served from dist/web: build them once per run.
  execFileSync(path.join(ROOT, 'node_modules', '.bin', 'tsc'), ['-p', 'tsconfig.web.json'], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  const database = await resolveDatabase({ purpose: 'test' });
  project.provide('mongoUri', database.uri);
  return async () => {
    await database.stop();
  };
}
