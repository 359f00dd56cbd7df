// Queue trigger on `inbound-poison` (a notification ingest failed on every attempt): keeps it in
// the database, filed per person, for `npm run replay-poison`; Azure Storage would delete it from
// the poison queue after 7 days. When the database is down this fails and the host tries again,
// but a poison queue has none of its own: the host leaves a failed item invisible (its 10-minute
// lease) and never hands over one received more than maxDequeueCount times, which would then sit
// out of reach until Azure Storage deletes it (Microsoft.Azure.WebJobs.Extensions.Storage.Queues,
// QueueProcessor.BeginProcessingMessageAsync / CompleteProcessingMessageAsync). So the last
// attempt puts the item back on `inbound-poison` as a new message (a fresh count and time-to-live)
// instead of failing: it is tried until the database is back.
import type { InvocationContext } from '@azure/functions';
import { INBOUND_POISON_QUEUE } from '../shared/bot/jobs';
import { keepPoisoned } from '../shared/bot/poisoned';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { QueueDefinition } from './definition-types';
import { loggerOf } from './http';
import { inboundPoisonQueueOutput, MAX_DEQUEUE_COUNT } from './queues';

export function keepPoisonedWorker(
  runtime: Runtime = defaultRuntime,
  { maxDequeueCount = MAX_DEQUEUE_COUNT }: { maxDequeueCount?: number } = {},
) {
  return async (item: unknown, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    const attempt = Number(context.triggerMetadata?.['dequeueCount'] ?? 1);
    try {
      await keepPoisoned(await runtime.services(), item, log);
    } catch (error) {
      if (attempt < maxDequeueCount) throw error;
      // Written by the host once this returns, before it deletes this message.
      context.extraOutputs.set(inboundPoisonQueueOutput, item);
      log.error('poisoned notification not kept; put back on inbound-poison to try again', {
        attempt,
        error: error instanceof Error ? error.name : 'unknown',
      });
    }
  };
}

export const keepPoisonedDefinition: QueueDefinition = {
  kind: 'queue',
  name: 'keepPoisoned',
  queueName: INBOUND_POISON_QUEUE,
  handler: keepPoisonedWorker(),
  queueOutputs: [inboundPoisonQueueOutput],
};
