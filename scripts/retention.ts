// npm run retention [-- --days N] [--dry-run]: deletes messages older than RETENTION_DAYS (or
// --days) in batches, oldest first, keeping the users' summaries right. Running totals stay.
import { retentionDays } from '../shared/config';
import { retentionCutoff } from '../shared/data';
import {
  intOption,
  parseCli,
  printSummary,
  progress,
  runMain,
  seconds,
  withDataStore,
  type Progress,
  working,
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run retention [-- --days N] [--dry-run] [--batch-size N]

Deletes messages older than N days (default: the RETENTION_DAYS setting), in batches, oldest
first, and updates each user's message count and last message. Running totals (stats) stay.
Poisoned notifications kept for replay (never stored) go too when Meta's times in them are older,
and so do the other items the bot archived (a group message, an echo, a history thread, ...) then,
once 8 days old. A message still waiting for its answer goes at a later run (once answered, or
7 days after it came: no reply job answers it then). The audit trail stays.
Without --days and without RETENTION_DAYS it does nothing.

  --days N          keep the last N days, 1 to 36500 (overrides RETENTION_DAYS, which the same
                    rule as the app's applies to: a value it refuses exits 1)
  --dry-run         count what would be deleted; delete nothing
  --batch-size N    messages per batch (default 500)
  -h, --help        this help

Exit code: 0 on success, 1 on failure, 2 on bad arguments.
`;

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, {
    days: { type: 'string' },
    'dry-run': { type: 'boolean' },
    'batch-size': { type: 'string' },
  });
  const batchSize = intOption(values['batch-size'], 'batch-size', 500);
  let days: number | undefined;
  if (values['days'] !== undefined) days = intOption(values['days'], 'days', 0, 1, 36_500);
  // The app's own rule (1 to 36,500 days): a value the app refuses is not used here either.
  else days = retentionDays(env);
  if (days === undefined) {
    io.out('retention: RETENTION_DAYS is not set and no --days given; nothing deleted');
    return 0;
  }
  const keepDays = days;
  const started = Date.now();
  const cutoff = retentionCutoff(keepDays, new Date());
  return withDataStore(env, io, async (store) => {
    const counted = working(io, 'retention: counting the messages to delete');
    const candidates = await store.retention.countOlderThan(cutoff).finally(counted);
    if (values['dry-run']) {
      printSummary(io, 'retention (dry run: nothing deleted)', [
        ['keep days', keepDays],
        ['cutoff', cutoff.toISOString()],
        ['messages to delete', candidates],
        ['poisoned notifications to delete', await store.retention.countPoisonedOlderThan(cutoff)],
        ['archived items to delete', await store.retention.countArchivedOlderThan(cutoff)],
        ['time', seconds(started)],
      ]);
      return 0;
    }
    const bar = progress(io, 'deleting', candidates);
    let summaries: Progress | null = null;
    const result = await store.retention.deleteOlderThan(
      cutoff,
      batchSize,
      (deleted) => bar.update(deleted),
      (done, of) => {
        bar.done();
        summaries ??= progress(io, 'rebuilding summaries', of);
        summaries.update(done);
      },
    );
    bar.done();
    (summaries as Progress | null)?.done();
    printSummary(io, 'retention done', [
      ['keep days', keepDays],
      ['cutoff', cutoff.toISOString()],
      ['messages deleted', result.deleted],
      ['poisoned notifications deleted', result.poisoned],
      ['archived items deleted', result.archived],
      ['batches', result.batches],
      ['users whose last message changed', result.usersUpdated],
      ['time', seconds(started)],
    ]);
    return 0;
  });
}

if (require.main === module)
  runMain(
    main,
    HELP,
    'the messages deleted so far stay deleted; run it again to finish, then `npm run health` to check the summaries',
  );
