// Queue trigger on `inbound`: stores what a verified notification holds (users, messages,
// statuses; anything not understood archived) exactly once, then queues the reply jobs. A failure
// throws: the host retries, then moves the item to `inbound-poison`, whose function (./keep-poisoned)
// keeps it in the database for `npm run replay-poison`. A redelivered item stores nothing twice.
import type { InvocationContext } from '@azure/functions';
import { ingestNotification } from '../shared/bot/ingest';
import { INBOUND_QUEUE, inboundBody } from '../shared/bot/jobs';
import { defaultRuntime, type Runtime, type Services } from '../shared/deps';
import type { Logger } from '../shared/log';
import type { QueueDefinition } from './definition-types';
import { loggerOf } from './http';
import { replyQueueOutput } from './queues';

type Body = { payload: unknown; spill: string | null } | null;

/** The notification an item stands for: the item itself, or the body it refers to. */
async function resolve(services: Services, item: unknown, log: Logger): Promise<Body> {
  const body = await inboundBody(services.data.spills, item);
  if (body.kind === 'gone') {
    log.warn('spilled notification already ingested', { bytes: body.bytes });
    return null;
  }
  if (body.kind === 'item') return { payload: body.value, spill: null };
  // Not JSON (a kept piece that was not, spilled by replay-poison): archived like such an item,
  // never a failure of every attempt.
  let payload: unknown = body.text;
  try {
    payload = JSON.parse(body.text);
  } catch {
    // kept as text
  }
  return { payload, spill: body.spill };
}

export function ingestWorker(runtime: Runtime = defaultRuntime) {
  return async (item: unknown, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    const services = await runtime.services();
    const body = await resolve(services, item, log);
    if (!body) return;
    const { jobs, summary } = await ingestNotification(services, body.payload, log);
    if (jobs.length) context.extraOutputs.set(replyQueueOutput, jobs);
    if (body.spill) await services.data.spills.remove(body.spill);
    log.info('notification ingested', {
      jobs: jobs.length,
      attempt: Number(context.triggerMetadata?.['dequeueCount'] ?? 1),
      ...summary,
    });
  };
}

export const ingestDefinition: QueueDefinition = {
  kind: 'queue',
  name: 'ingest',
  queueName: INBOUND_QUEUE,
  handler: ingestWorker(),
  queueOutputs: [replyQueueOutput],
};
