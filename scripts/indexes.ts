// npm run indexes [-- --verify]: creates every index of the data module (or only checks them) and
// prints what it did.
import type { IndexReport } from '../shared/data';
import { AppError } from '../shared/errors';
import { parseCli, printSummary, runMain, withDataStore, type Env, type Io } from './lib/cli';

export const HELP = `
Usage: npm run indexes [-- --verify]

Creates the indexes of every collection where they are missing, then lists them. With --verify it
only checks them (Cosmos DB accounts where infra/ owns collections and indexes).

  --verify      check only; create nothing
  -h, --help    this help

Exit code: 0 when every index is present, 1 otherwise, 2 on bad arguments.
`;

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { verify: { type: 'boolean' } });
  const mode = values['verify'] ? 'verify' : 'create';
  return withDataStore(env, io, async (store) => {
    let report: IndexReport;
    try {
      report = await store.ensureIndexes(mode);
    } catch (error) {
      if (error instanceof AppError) {
        io.err(`error: ${error.message}`);
        return 1;
      }
      throw error;
    }
    for (const name of report.created) io.out(`created  ${name}`);
    for (const name of report.present) io.out(`present  ${name}`);
    printSummary(io, mode === 'verify' ? 'indexes verified' : 'indexes ensured', [
      ['created', report.created.length],
      ['present', report.present.length],
      ['missing', report.missing.length],
    ]);
    return 0;
  });
}

if (require.main === module) runMain(main, HELP);
