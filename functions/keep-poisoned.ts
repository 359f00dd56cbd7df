// Queue trigger on `inbound-poison` (a notification ingest failed on every attempt): keeps it in
// the database, filed per person, for `npm run replay-poison`; Azure Storage would delete it from
// the poison queue after 7 days. When the database is down this fails: the host tries again, then
// leaves the item in `inbound-poison` (a poison queue has none of its own), where replay-poison
// still finds it within those 7 days.
import type { InvocationContext } from '@azure/functions';
import { INBOUND_POISON_QUEUE } from '../shared/bot/jobs';
import { keepPoisoned } from '../shared/bot/poisoned';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { QueueDefinition } from './definition-types';
import { loggerOf } from './http';

export function keepPoisonedWorker(runtime: Runtime = defaultRuntime) {
  return async (item: unknown, context: InvocationContext): Promise<void> => {
    await keepPoisoned(await runtime.services(), item, loggerOf(context));
  };
}

export const keepPoisonedDefinition: QueueDefinition = {
  kind: 'queue',
  name: 'keepPoisoned',
  queueName: INBOUND_POISON_QUEUE,
  handler: keepPoisonedWorker(),
};
