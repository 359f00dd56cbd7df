// Vitest setup file: records every command the clients send while a test file runs (the app's
// through the data module, the tests' own through test/helpers/db.ts) and fails the file when one
// breaks a Cosmos DB rule (test/cosmos/rules.ts). Commands of the tests' own assertions are listed
// apart from the app's.
import { appendFileSync } from 'node:fs';
import { afterAll } from 'vitest';
import { observeCommands } from '../../shared/data';
import { APP_ARRAY_FIELDS, APP_CAPABILITIES, APP_INDEXES } from './app-model';
import { isKnown } from './known-violations';
import { withOrigin } from './origin';
import { CommandChecker, describe, shorten, type Violation } from './rules';

const checker = new CommandChecker(APP_INDEXES, APP_ARRAY_FIELDS, new Set(APP_CAPABILITIES));
const LOG = process.env['COSMOS_COMMAND_LOG'];

const stop = observeCommands(
  withOrigin((observed) => {
    // COSMOS_COMMAND_LOG=<file> appends every command with its sender (to see what a path sends).
    if (LOG) appendFileSync(LOG, `${observed.origin} ${shorten(observed.command, 2_000)}\n`);
    checker.check(observed);
  }),
);

afterAll(() => {
  stop();
  checker.checkIndexesAgainstArrays();
  const open = checker.violations.filter((v) => !isKnown(v));
  if (open.length === 0) return;
  // One line per distinct violation (a query in a loop would repeat it).
  const distinct = new Map<string, Violation>();
  for (const v of open) distinct.set(`${v.origin ?? ''} ${v.rule} ${v.collection} ${v.subject}`, v);
  const byApp = [...distinct.values()].filter((v) => v.origin !== 'test');
  const byTests = [...distinct.values()].filter((v) => v.origin === 'test');
  const sections = [
    byApp.length ? `sent by the app:\n${byApp.map(describe).join('\n')}` : '',
    byTests.length ? `sent by the test code itself:\n${byTests.map(describe).join('\n')}` : '',
  ].filter(Boolean);
  throw new Error(
    `${distinct.size} Cosmos DB rule violation(s) in this test file (see test/cosmos/rules.ts; ` +
      `temporary exceptions in test/cosmos/known-violations.ts):\n${sections.join('\n')}`,
  );
});
