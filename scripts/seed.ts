// npm run seed -- --users N --messages M: demo data for the dashboard, written through the
// repositories (so summaries and counters stay consistent), spread over the last 30 days.
import { randomBytes, randomInt } from 'node:crypto';
import type { ImportedMessage } from '../shared/data';
import {
  intOption,
  parseCli,
  printSummary,
  progress,
  runMain,
  seconds,
  withDataStore,
  type Env,
  type Io,
  UsageError,
} from './lib/cli';

export const HELP = `
Usage: npm run seed [-- --users N --messages M]

Creates N demo users (fictional +1 555 numbers) and M messages between them and the bot, spread
over the last 30 days, through the same code the bot uses (summaries and counters included).
Running it again reuses the same users and adds M more messages.

  --users N      users, 1 to 100000 (default 20)
  --messages M   messages, 0 to 1000000 (default 200)
  --yes          write into the database MONGODB_URI names (refused without it: that may be a
                 deployment's own, and demo users would show in its dashboard and stats)
  -h, --help     this help

Exit code: 0 on success, 1 on failure, 2 on bad arguments (nothing written).
`;

const NAMES = [
  'Ana Lima',
  'José Álvarez',
  'Zoë Müller',
  'Li Wei',
  'Amara Okafor',
  'Søren Berg',
  "Siobhán O'Neill",
  'Priya Nair',
  null,
];
const QUESTIONS = [
  'Hi! Are you open on Sunday?',
  'How much is delivery to the city centre?',
  'Quiero reservar una mesa para dos',
  'Do you have vegan options?',
  'Où se trouve le magasin le plus proche ?',
  'Can I change my order?',
  'Thanks a lot 🙏',
];
const ANSWERS = [
  'Yes, we are open from 10:00 to 18:00 on Sundays.',
  'Delivery to the centre is free above 20 €.',
  '¡Claro! ¿Para qué día y hora?',
  'Yes: several vegan dishes are marked on the menu.',
  'Le magasin le plus proche est rue de la Paix.',
  'Of course, tell me your order number.',
  'You are welcome! 😊',
];

const DAY_MS = 86_400_000;
/** Demo sizes: the plan is built in memory first (a date per message), so the counts are bounded. */
const MAX_USERS = 100_000;
const MAX_MESSAGES = 1_000_000;
const pick = <T>(items: readonly T[], i: number): T => items[i % items.length] as T;

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, {
    users: { type: 'string' },
    messages: { type: 'string' },
    yes: { type: 'boolean' },
  });
  const userCount = intOption(values['users'], 'users', 20, 1, MAX_USERS);
  const messageCount = intOption(values['messages'], 'messages', 200, 0, MAX_MESSAGES);
  if (env['MONGODB_URI']?.trim() && values['yes'] !== true) {
    throw new UsageError(
      'MONGODB_URI is set: seed would write demo users into that database (a deployment would show them in its dashboard and stats); add --yes if that is what you want',
    );
  }
  const started = Date.now();
  const now = Date.now();
  const randomTime = () => new Date(now - randomInt(0, 30 * DAY_MS));
  // Messages per user, round robin; each user's messages in time order.
  const plan = Array.from({ length: userCount }, (_, i) => ({
    waId: `1555${String(i + 1).padStart(7, '0')}`,
    name: pick(NAMES, i),
    times: [] as Date[],
  }));
  for (let i = 0; i < messageCount; i++) pick(plan, i).times.push(randomTime());
  for (const p of plan) p.times.sort((a, b) => a.getTime() - b.getTime());

  const result = await withDataStore(env, io, async (store) => {
    await store.ensureIndexes('create');
    const bar = progress(io, 'seeding', userCount + messageCount);
    let done = 0;
    let usersCreated = 0;
    let inbound = 0;
    let outbound = 0;
    for (const [u, p] of plan.entries()) {
      const first = p.times[0] ?? randomTime();
      const { user, created } = await store.users.resolve({ waId: p.waId, bsuid: null, name: p.name }, first);
      if (created) usersCreated++;
      bar.update(++done);
      // The same path as the migration: summaries and counters by the data module's rules.
      const history: ImportedMessage[] = [];
      let lastInbound = '';
      for (const [k, at] of p.times.entries()) {
        const id = `seed.${randomBytes(12).toString('hex')}`;
        if (k % 2 === 0) {
          history.push({
            id,
            userId: user.id,
            waMessageId: id,
            direction: 'inbound',
            text: pick(QUESTIONS, u + k),
            createdAt: at,
            phoneNumberId: 'seed',
          });
          lastInbound = id;
          inbound++;
        } else {
          const promptTokens = randomInt(40, 400);
          const completionTokens = randomInt(10, 120);
          history.push({
            id,
            userId: user.id,
            waMessageId: id,
            direction: 'outbound',
            text: pick(ANSWERS, u + k - 1),
            createdAt: at,
            phoneNumberId: 'seed',
            relatedId: lastInbound,
            ai: {
              provider: 'seed',
              model: 'demo',
              promptTokens,
              completionTokens,
              totalTokens: promptTokens + completionTokens,
              latencyMs: randomInt(300, 2500),
            },
          });
          outbound++;
        }
        bar.update(++done);
      }
      await store.maintenance.importMessages(history);
    }
    bar.done();
    // The users it created are marked for the counters (shared/data/pending): counted now, as
    // the app's sweep would.
    await store.stats.foldPending();
    return { usersCreated, inbound, outbound };
  });
  printSummary(io, 'seed done', [
    ['users', userCount],
    ['users created', result.usersCreated],
    ['messages', result.inbound + result.outbound],
    ['inbound', result.inbound],
    ['outbound', result.outbound],
    ['time', seconds(started)],
  ]);
  return 0;
}

if (require.main === module)
  runMain(main, HELP, 'part of the sample data may be written (running it again adds more)');
