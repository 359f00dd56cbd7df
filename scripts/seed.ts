// npm run seed -- --users N --messages M: demo data for the dashboard, written through the
// repositories (so summaries and counters stay consistent), spread over the last 30 days.
import { randomBytes, randomInt } from 'node:crypto';
import { ensureIndexes } from '../shared/data';
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
} from './lib/cli';

export const HELP = `
Usage: npm run seed [-- --users N --messages M]

Creates N demo users (fictional +1 555 numbers) and M messages between them and the bot, spread
over the last 30 days, through the same code the bot uses (summaries and counters included).
Running it again reuses the same users and adds M more messages.

  --users N      users (default 20)
  --messages M   messages (default 200)
  -h, --help     this help
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
const pick = <T>(items: readonly T[], i: number): T => items[i % items.length] as T;

export async function main(argv: readonly string[], env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { users: { type: 'string' }, messages: { type: 'string' } });
  const userCount = intOption(values['users'], 'users', 20);
  const messageCount = intOption(values['messages'], 'messages', 200, 0);
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
    await ensureIndexes(store.db, 'create');
    const bar = progress(io, 'seeding', userCount + messageCount);
    let done = 0;
    let usersCreated = 0;
    let inbound = 0;
    let outbound = 0;
    for (const [u, p] of plan.entries()) {
      const first = p.times[0] ?? randomTime();
      const { user, created } = await store.users.upsertFromContact(
        { waId: p.waId, bsuid: null, name: p.name },
        first,
      );
      if (created) usersCreated++;
      bar.update(++done);
      let lastInbound = '';
      for (const [k, at] of p.times.entries()) {
        const id = `seed.${randomBytes(12).toString('hex')}`;
        if (k % 2 === 0) {
          await store.messages.recordInbound({
            id,
            userId: user.id,
            type: 'text',
            text: pick(QUESTIONS, u + k),
            createdAt: at,
            receivedAt: at,
            phoneNumberId: 'seed',
            role: 'conversation',
            replyState: 'none',
            relatedId: null,
            raw: { seed: true },
          });
          lastInbound = id;
          inbound++;
        } else {
          const promptTokens = randomInt(40, 400);
          const completionTokens = randomInt(10, 120);
          await store.messages.recordOutbound({
            id,
            waMessageId: id,
            userId: user.id,
            type: 'text',
            text: pick(ANSWERS, u + k - 1),
            status: 'sent',
            createdAt: new Date(at.getTime()),
            role: 'conversation',
            phoneNumberId: 'seed',
            relatedId: lastInbound,
            error: null,
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
    }
    bar.done();
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

if (require.main === module) runMain(main, HELP);
