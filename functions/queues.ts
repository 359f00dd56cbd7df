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
