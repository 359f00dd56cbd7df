// The sweeper: finds inbound messages whose answer was abandoned (a reply job lost with a crashed
// host, a worker stopped past its lease) and returns the reply jobs that finish them. A job for a
// message still being answered costs one claim attempt that fails; nothing is answered twice. One
// job per user is enough: a reply job answers all of its user's pending messages, in order.
import { pseudonym, type Logger } from '../log';
import type { ReplyJob } from './jobs';
import type { SweeperPorts } from './ports';

/** A pending message younger than this is left to its own job. */
export const SWEEP_GRACE_MS = 60_000;
const SWEEP_LIMIT = 500;

export async function sweepStaleReplies(services: SweeperPorts, log: Logger): Promise<ReplyJob[]> {
  const stale = await services.data.messages.staleReplies(services.now(), SWEEP_LIMIT, {
    graceMs: SWEEP_GRACE_MS,
  });
  const jobs = new Map<string, ReplyJob>();
  for (const message of stale) {
    if (!jobs.has(message.userId))
      jobs.set(message.userId, { kind: 'message', userId: message.userId, messageId: message.id });
    log.info('stale reply re-queued', {
      id: message.id,
      user: pseudonym(message.userId),
      state: message.replyState,
    });
  }
  return [...jobs.values()];
}
