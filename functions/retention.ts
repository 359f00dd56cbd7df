// Timer: deletes messages (and poisoned notifications and archived items) older than RETENTION_DAYS
// once a day. Does nothing when it is unset.
import type { InvocationContext, Timer } from '@azure/functions';
import { retentionCutoff } from '../shared/data';
import { defaultRuntime, type Runtime } from '../shared/deps';
import type { TimerDefinition } from './definition-types';
import { loggerOf } from './http';

/** 03:30 UTC every day (NCRONTAB: second minute hour day month weekday). */
export const RETENTION_SCHEDULE = '0 30 3 * * *';
const BATCH_SIZE = 500;

export function retentionTimer(runtime: Runtime = defaultRuntime) {
  return async (_timer: Timer, context: InvocationContext): Promise<void> => {
    const log = loggerOf(context);
    // The setting is read before connecting: without it the job costs nothing.
    const days = runtime.config().retentionDays;
    if (!days) {
      log.info('retention skipped: RETENTION_DAYS is not set');
      return;
    }
    const services = await runtime.services();
    const started = Date.now();
    const cutoff = retentionCutoff(days, services.now());
    const result = await services.data.retention.deleteOlderThan(cutoff, BATCH_SIZE);
    log.info('retention done', {
      days,
      deleted: result.deleted,
      poisoned: result.poisoned,
      archived: result.archived,
      batches: result.batches,
      usersUpdated: result.usersUpdated,
      ms: Date.now() - started,
    });
  };
}

export const retentionDefinition: TimerDefinition = {
  kind: 'timer',
  name: 'retention',
  schedule: RETENTION_SCHEDULE,
  handler: retentionTimer(),
};
