// The queue output bindings of the app (the Functions host writes them after a handler returns).
import { output } from '@azure/functions';
import { INBOUND_POISON_QUEUE, INBOUND_QUEUE, REPLY_QUEUE } from '../shared/bot/jobs';

export const inboundQueueOutput = output.storageQueue({
  queueName: INBOUND_QUEUE,
  connection: 'AzureWebJobsStorage',
});

export const replyQueueOutput = output.storageQueue({
  queueName: REPLY_QUEUE,
  connection: 'AzureWebJobsStorage',
});

export const inboundPoisonQueueOutput = output.storageQueue({
  queueName: INBOUND_POISON_QUEUE,
  connection: 'AzureWebJobsStorage',
});

/**
 * host.json `extensions.queues.maxDequeueCount`: the attempts after which the host moves an item to
 * `<queue>-poison` (test/integration/poisoned-outage.test.ts checks they agree).
 */
export const MAX_DEQUEUE_COUNT = 5;
