// npm run health [-- --repair]: checks the database (reachable, indexes, erases left half done,
// user summaries against the stored messages, search terms an earlier version cut, counters not
// below what is stored, poisoned notifications kept for replay, welcomes whose job failed every
// attempt) and the configuration; --repair
// finishes the erases, rebuilds summaries, search terms, and counters where no retention has run,
// and prints what changed.
import { describeCount, ERASE_STALE_MS, type DataStore } from '../shared/data';
import { loadConfig, SETTING_NAMES } from '../shared/config';
import { AppError } from '../shared/errors';
import { MAX_WELCOME_POISONINGS } from '../shared/bot/reply';
import { setPseudonymKey } from '../shared/log';
import {
  parseCli,
  printSummary,
  progress,
  runMain,
  withDataStore,
  working,
  type Env,
  type Io,
} from './lib/cli';

export const HELP = `
Usage: npm run health [-- --repair]

Checks that the database is reachable, every index is present, no erase was left half done, every
user's summary (messageCount, lastMessageAt, last message) agrees with the stored messages, no
message keeps the search terms an earlier version cut at 400 a message, the counters are not below
what is stored, no notification ingest failed on every attempt waits in the database (kept from
inbound-poison: \`npm run replay-poison\` puts them back), no welcome whose job failed every attempt
waits for the sweeper to queue it again or was given up (after 3 such failures) in the last 7 days,
and the configuration (environment) is valid: when the environment holds none of the app settings
(only MONGODB_URI / MONGODB_DATABASE), the configuration is not checked.

  --repair      finish erases left half done (begun over 10 minutes ago; needs the app settings,
                whose WHATSAPP_APP_SECRET finds the archived items by number); rebuild wrong summaries;
                recompute cut search terms; rebuild the counters from the documents when no
                retention has run (after one, counters below what is stored, or not a count, are
                raised to it)
  -h, --help    this help

Exit code: 0 when healthy (after repair), 1 when problems remain, 2 on bad arguments.
`;

/** How long a welcome given up counts as a problem (then it is only in the user's conversation). */
const WELCOME_GIVEN_UP_SHOWN_MS = 7 * 86_400_000;

/** Settings that only say where the data is: the scripts read them too. */
const DATABASE_SETTINGS = new Set<string>(['MONGODB_URI', 'MONGODB_DATABASE', 'PORT']);

/** Examples of a problem list: the first few, then how many more. */
function sample(io: Io, lines: readonly string[], max = 10): void {
  for (const line of lines.slice(0, max)) io.out(`  - ${line}`);
  if (lines.length > max) io.out(`  … and ${lines.length - max} more`);
}

/** How each problem found without --repair is repaired (said on its line). */
const REPAIR = '`npm run health -- --repair`';

/**
 * Erases that began and never finished (the host stopped mid-way): found, and with --repair
 * finished, first, since an erase changes the summaries and counters checked next. Returns how
 * many are left.
 */
async function finishErases(
  store: DataStore,
  repair: boolean,
  appSecret: string | undefined,
  io: Io,
): Promise<number> {
  const stuck = await store.personal.unfinishedErases(new Date(Date.now() - ERASE_STALE_MS));
  if (!stuck.length) return 0;
  io.out(
    `users whose erase did not finish: ${stuck.length} (ingest keeps their new notifications waiting, then in inbound-poison)${repair ? '' : `; ${REPAIR} finishes them (with the app settings)`}`,
  );
  if (!repair) return stuck.length;
  // Archived items are found by the subject of the number they carry: keyed with the deployment's
  // key in the database, or, for items earlier versions archived, with the app secret. Without it,
  // an erase could leave those behind, its user gone.
  if (!appSecret) {
    io.out(
      'not repaired: finishing an erase needs the app configuration (WHATSAPP_APP_SECRET keys the subjects earlier versions filed archived items under)',
    );
    return stuck.length;
  }
  setPseudonymKey(appSecret);
  for (const id of stuck) await store.personal.eraseUser(id);
  io.out(
    `repaired: ${stuck.length} erases finished; run \`npm run replay-poison\` for any notification of theirs in inbound-poison`,
  );
  return 0;
}

async function checkData(
  store: DataStore,
  repair: boolean,
  appSecret: string | undefined,
  io: Io,
): Promise<{ problems: number; rows: [string, string | number][] }> {
  let problems = await finishErases(store, repair, appSecret, io);
  const rows: [string, string | number][] = [['unfinished erases', problems]];
  const sized = working(io, 'health: sizing the collections');
  const total = await store.maintenance.estimatedSize().finally(sized);
  const bar = progress(io, 'reading', total);
  let counts = await store.maintenance.countStored((done) => bar.update(done));
  bar.done();
  rows.push(
    ['users', counts.users],
    // Every message stored for a user (the counters may not hold the newest yet: the sweeper
    // folds them in within a minute, and a restore's after the next sweep).
    ['messages', [...counts.perUser.values()].reduce((n, t) => n + t.count, 0)],
  );

  let summaries = await store.maintenance.checkSummaries(counts);
  if (summaries.length) {
    io.out(
      `users whose summary disagrees with the stored messages: ${new Set(summaries.map((p) => p.userId)).size}${repair ? '' : `; ${REPAIR} rebuilds them from the messages`}`,
    );
    sample(
      io,
      summaries.map((p) => `${p.userId}: ${p.problem}`),
    );
    if (repair) {
      const changed = await store.maintenance.repairSummaries(summaries.map((p) => p.userId));
      io.out(`repaired: ${changed} user summaries rebuilt`);
      rows.push(['summaries repaired', changed]);
      summaries = await store.maintenance.checkSummaries(counts);
    }
  }
  rows.push(['summary problems', summaries.length]);
  problems += summaries.length;

  let staleTerms = await store.maintenance.countStaleTerms();
  if (staleTerms) {
    io.out(
      `messages and names whose search terms an earlier version stored otherwise (cut at 400, without the words inside Chinese, Japanese or Thai text, or with ß, ς, ł, ø or another letter only lower-cased): ${staleTerms} (search misses some of their words)${repair ? '' : `; ${REPAIR} recomputes them`}`,
    );
    if (repair) {
      const bar = progress(io, 'recomputing search terms', staleTerms);
      const changed = await store.maintenance.recomputeStaleTerms((done) => bar.update(done));
      bar.done();
      io.out(`repaired: search terms of ${changed} messages or names recomputed`);
      rows.push(['search terms recomputed', changed]);
      staleTerms = await store.maintenance.countStaleTerms();
    }
  }
  rows.push(['messages and names with out-of-date search terms', staleTerms]);
  problems += staleTerms;

  let counters = await store.maintenance.checkCounters(counts);
  const totals = await store.maintenance.readTotals();
  const retentionRuns = totals?.retentionRuns ?? 0;
  rows.push(['retention runs', retentionRuns]);
  if (counters.length) {
    io.out(
      `counters below what is stored, or not a count: ${counters.length}${repair ? '' : `; ${REPAIR} sets them from the stored documents`}`,
    );
    sample(
      io,
      counters.map((c) =>
        typeof c.value === 'number'
          ? `${c.counter}: ${c.value} < ${c.stored} stored`
          : `${c.counter}: ${describeCount(c.value)}, ${c.stored} stored`,
      ),
    );
  }
  if (repair && (counters.length || retentionRuns === 0)) {
    // Without retention the counters are exactly the stored documents: rebuild them all.
    const changes = await store.maintenance.repairCounters(counts);
    if (changes.length) {
      io.out(
        `repaired counters (${retentionRuns === 0 ? 'rebuilt from the documents' : 'raised to what is stored'}):`,
      );
      sample(io, changes, 50);
    }
    rows.push(['counters repaired', changes.length]);
    const again = progress(io, 'reading again', total);
    counts = await store.maintenance.countStored((done) => again.update(done));
    again.done();
    counters = await store.maintenance.checkCounters(counts);
  }
  rows.push(['counter problems', counters.length]);
  problems += counters.length;

  // Notifications ingest failed on every attempt, kept by inbound-poison's function: their
  // messages are neither stored nor answered until they are replayed (no repair can do it).
  const poisoned = await store.poisoned.count();
  if (poisoned) {
    io.out(
      `notifications ingest failed on every attempt, kept in the database: ${poisoned} (their messages are not stored or answered yet); once the cause is fixed, \`npm run replay-poison\` puts them back on inbound`,
    );
  }
  rows.push(['poisoned notifications kept', poisoned]);
  problems += poisoned;

  // Welcomes whose job failed every attempt: the sweeper queues each again a while later, and
  // after MAX_WELCOME_POISONINGS such failures it is recorded failed and given up. Either means
  // users who opened the chat did not get the welcome (a Graph outage, a bug, a setting).
  const welcomes = await store.users.poisonedWelcomes(new Date(Date.now() - WELCOME_GIVEN_UP_SHOWN_MS));
  if (welcomes.waiting)
    io.out(
      `welcomes whose job failed every attempt, waiting for the sweeper to queue them again: ${welcomes.waiting} (see the reply-jobs-poison errors in the logs)`,
    );
  if (welcomes.givenUp)
    io.out(
      `welcomes given up in the last 7 days after their job failed every attempt ${MAX_WELCOME_POISONINGS} times: ${welcomes.givenUp} (recorded failed in the users' conversations; not sent again)`,
    );
  rows.push(['welcomes waiting for a re-queue', welcomes.waiting], ['welcomes given up', welcomes.givenUp]);
  problems += welcomes.waiting + welcomes.givenUp;
  return { problems, rows };
}

/**
 * The configuration: the names of bad settings only, never their values. A shell that holds none
 * of the app's own settings (only where the data is) is checking the data, not the app.
 */
function checkConfiguration(env: Env, io: Io): 'ok' | 'invalid' | 'not checked' {
  if (!SETTING_NAMES.some((name) => !DATABASE_SETTINGS.has(name) && env[name] !== undefined)) {
    io.out('configuration: not checked (none of the app settings is set in this environment)');
    return 'not checked';
  }
  try {
    loadConfig(env);
    return 'ok';
  } catch (error) {
    if (!(error instanceof AppError)) throw error;
    io.out(`configuration: ${error.message}`);
    return 'invalid';
  }
}

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { repair: { type: 'boolean' } });
  const repair = Boolean(values['repair']);
  let problems = 0;
  const rows: [string, string | number][] = [];

  const configuration = checkConfiguration(env, io);
  rows.push(['configuration', configuration]);
  if (configuration === 'invalid') problems++;

  problems += await withDataStore(env, io, async (store) => {
    let found = 0;
    try {
      await store.ping();
      rows.push(['database', 'reachable']);
    } catch (error) {
      io.out(`database: unreachable (${error instanceof Error ? error.message : String(error)})`);
      rows.push(['database', 'unreachable']);
      return 1;
    }
    try {
      const report = await store.ensureIndexes(repair ? 'create' : 'verify');
      rows.push(['indexes', report.created.length ? `ok (${report.created.length} created)` : 'ok']);
      for (const name of report.created) io.out(`created index ${name}`);
    } catch (error) {
      if (!(error instanceof AppError)) throw error;
      io.out(`indexes: ${error.message}`);
      rows.push(['indexes', 'missing']);
      found++;
    }
    const appSecret = configuration === 'ok' ? loadConfig(env).whatsapp.appSecret : undefined;
    // A repair counts what is stored and sets the counters from it: no sweep may fold in between.
    const data = repair
      ? await store.stats.holdingFold(() => checkData(store, repair, appSecret, io))
      : await checkData(store, repair, appSecret, io);
    rows.push(...data.rows);
    return found + data.problems;
  });

  rows.push(['problems', problems]);
  printSummary(io, problems ? 'health: problems found' : 'health: ok', rows);
  return problems ? 1 : 0;
}

if (require.main === module)
  runMain(main, HELP, 'a repair may be partly done; run it again to check and finish');
