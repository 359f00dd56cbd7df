// The sweeper: finds inbound messages whose answer was abandoned (a reply job lost with a crashed
// host, a worker stopped past its lease) and returns the reply jobs that finish them. A job for a
// message still being answered costs one claim attempt that fails; nothing is answered twice. One
// job per user is enough: a reply job answers all of its user's pending messages, in order. It
// re-queues the welcome of a user whose welcome claim ended unsent (its worker died, or its job
// failed every attempt: ./reply `handlePoisonJob`, which gives it up after a few times) the same way.
// It also folds what writers marked for the counters into the running counters (a message, a
// user or a status costs no counter write; the stats add what is not folded yet).
import { pseudonym, type Logger } from '../log';
import type { Message } from '../data';
import type { ReplyJob } from './jobs';
import type { SweeperPorts } from './ports';

/** A pending message younger than this is left to its own job. */
export const SWEEP_GRACE_MS = 60_000;
const SWEEP_LIMIT = 500;
/**
 * Longest wait before a user re-queued once is queued again (as long as their oldest waiting
 * message had waited, at least SWEEP_GRACE_MS): a job lost with a crash is replaced within
 * minutes, and a user waiting behind a backlog costs at most one more job per 10 minutes, not one
 * per sweep.
 */
export const REQUEUE_MAX_WAIT_MS = 10 * 60_000;

/** Welcomes re-queued per sweep (a claim left by a killed worker is rare). */
const WELCOME_SWEEP_LIMIT = 100;

export async function sweepStaleReplies(services: SweeperPorts, log: Logger): Promise<ReplyJob[]> {
  const now = services.now();
  const stale = await services.data.messages.staleReplies(now, SWEEP_LIMIT, {
    graceMs: SWEEP_GRACE_MS,
  });
  // A welcome claimed by a worker that died before sending it, whose job came back while the claim
  // held (and ended) or never came back: its claim ended over SWEEP_GRACE_MS ago, unsent.
  const welcomes = await services.data.users.staleWelcomes(
    new Date(now.getTime() - SWEEP_GRACE_MS),
    WELCOME_SWEEP_LIMIT,
  );
  const welcomeJobs = welcomes.map(({ userId, phoneNumberId, requestId }): ReplyJob => ({
    kind: 'welcome',
    userId,
    phoneNumberId,
    requestId,
  }));
  for (const job of welcomeJobs) log.info('stale welcome re-queued', { user: pseudonym(job.userId) });
  // One job per user: `staleReplies` sorts by receivedAt, so the first found is the user's oldest.
  const users = new Map<string, { oldest: Message; waiting: number }>();
  for (const message of stale) {
    const user = users.get(message.userId);
    if (user) user.waiting += 1;
    else users.set(message.userId, { oldest: message, waiting: 1 });
  }
  const oldest = [...users.values()].map((user) => user.oldest);
  for (const { oldest: message, waiting } of users.values())
    log.info('stale reply re-queued', {
      id: message.id,
      user: pseudonym(message.userId),
      state: message.replyState,
      waiting,
    });
  await services.data.messages.deferRequeue(oldest, now, {
    minMs: SWEEP_GRACE_MS,
    maxMs: REQUEUE_MAX_WAIT_MS,
  });
  const jobs = oldest.map((message): ReplyJob => ({
    kind: 'message',
    userId: message.userId,
    messageId: message.id,
  }));
  return [...jobs, ...welcomeJobs];
}

/** A status placeholder no message joined within this long never will be (./data/messages). */
export const PLACEHOLDER_TTL_MS = 24 * 60 * 60_000;

/** Deletes the status placeholders older than PLACEHOLDER_TTL_MS (a batch a sweep); returns how many. */
export function dropOldPlaceholders(services: SweeperPorts): Promise<number> {
  return services.data.messages.dropPlaceholders(new Date(services.now().getTime() - PLACEHOLDER_TTL_MS));
}

/**
 * Folds what writers marked for the counters (messages stored, users created, failures statuses
 * reported) into the running counters (../data/pending); returns how many of each.
 */
export function foldCounts(
  services: SweeperPorts,
): Promise<{ messages: number; users: number; failures: number }> {
  return services.data.stats.foldPending();
}
