// Queue triggers of the reply path: `reply-jobs` answers one user's pending messages in order;
// `reply-jobs-poison` (a job that failed every attempt) marks its message `failed` with the reason
// (`sent` when parts of its answer went out), or keeps a welcome for the sweeper (`handlePoisonJob`).
import type { InvocationContext } from '@azure/functions';
import { parseReplyJob, REPLY_POISON_QUEUE, REPLY_QUEUE } from '../shared/bot/jobs';
import { handlePoisonJob, processReplyJob } from '../shared/bot/reply';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { QueueDefinition } from './definition-types';
import { loggerOf } from './http';
import { MAX_DEQUEUE_COUNT, replyQueueOutput } from './queues';

export function replyWorker(runtime: Runtime = defaultRuntime) {
  return async (item: unknown, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    const job = parseReplyJob(item);
    if (!job) {
      // Retrying cannot make it valid: drop it (it never came from our webhook).
      log.error('invalid reply job dropped');
      return;
    }
    // A user with more waiting than one job's looks answer: the rest goes to a new job.
    const followUp = await processReplyJob(await runtime.services(), job, log);
    if (followUp.length) context.extraOutputs.set(replyQueueOutput, followUp);
  };
}

export function poisonWorker(runtime: Runtime = defaultRuntime) {
  return async (item: unknown, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    const job = parseReplyJob(item);
    if (!job) {
      log.error('invalid poison job dropped');
      return;
    }
    // The host moved the job here after maxDequeueCount failed attempts, as a new message: its own
    // dequeueCount counts deliveries on this queue (1 at first), not those attempts
    // (Microsoft.Azure.WebJobs.Extensions.Storage.Queues, QueueProcessor.CopyMessageToPoisonQueueAsync).
    await handlePoisonJob(
      await runtime.services(),
      job,
      `reply failed after ${MAX_DEQUEUE_COUNT} attempts`,
      log,
    );
  };
}

export const replyDefinition: QueueDefinition = {
  kind: 'queue',
  name: 'reply',
  queueName: REPLY_QUEUE,
  handler: replyWorker(),
  queueOutputs: [replyQueueOutput],
};

export const replyPoisonDefinition: QueueDefinition = {
  kind: 'queue',
  name: 'replyPoison',
  queueName: REPLY_POISON_QUEUE,
  handler: poisonWorker(),
};
