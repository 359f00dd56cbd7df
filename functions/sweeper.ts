// Timer (every minute): re-queues the reply of any message left `pending` with no live job or
// `sending` past its lease, so no user waits for Meta to deliver again; folds what writers marked
// for the counters into the running counters; and deletes status placeholders no message joined
// within a day.
import type { InvocationContext, Timer } from '@azure/functions';
import { dropOldPlaceholders, foldCounts, sweepStaleReplies } from '../shared/bot/sweeper';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { TimerDefinition } from './definition-types';
import { loggerOf } from './http';
import { replyQueueOutput } from './queues';

export const SWEEPER_SCHEDULE = '0 * * * * *';

export function sweeperTimer(runtime: Runtime = defaultRuntime) {
  return async (_timer: Timer, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    const services = await runtime.services();
    const jobs = await sweepStaleReplies(services, log);
    if (jobs.length) context.extraOutputs.set(replyQueueOutput, jobs);
    const counted = await foldCounts(services);
    // After the fold: a failure a placeholder reported is counted before the placeholder goes.
    const placeholders = await dropOldPlaceholders(services);
    if (jobs.length || counted.messages || counted.users || counted.failures || placeholders)
      log.info('sweep done', { requeued: jobs.length, ...counted, placeholders });
  };
}

export const sweeperDefinition: TimerDefinition = {
  kind: 'timer',
  name: 'sweeper',
  schedule: SWEEPER_SCHEDULE,
  handler: sweeperTimer(),
  queueOutputs: [replyQueueOutput],
};
