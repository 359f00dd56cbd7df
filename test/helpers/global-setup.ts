// Vitest global setup, once per run: builds the browser scripts (web/ → dist/web/), looks for a
// Chromium for the browser tests (test/helpers/browser.ts), and starts one database server (see
// scripts/lib/database.ts); each test file then works in its own database on it (test/helpers/db.ts).
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { resolveDatabase } from '../../scripts/lib/database';
import { chromiumForRun } from './browser';

declare module 'vitest' {
  export interface ProvidedContext {
    mongoUri: string;
    /** The Chromium the browser tests use; '' when there is none (they are skipped). */
    chromiumPath: string;
  }
}

const ROOT = path.resolve(__dirname, '../..');

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.web.json'], {
    cwd: ROOT,
    stdio: 'inherit',
  });
  project.provide('chromiumPath', chromiumForRun());
  const database = await resolveDatabase({ purpose: 'test' });
  project.provide('mongoUri', database.uri);
  return async () => {
    await database.stop();
  };
}
