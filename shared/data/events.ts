// Archived payloads that could not be processed (dead letters) and the audit trail.
import { randomUUID } from 'node:crypto';
import type { Collection } from 'mongodb';
import type { ArchivedEvent } from './types';
import { withRetry } from './client';

export interface EventDoc {
  _id: string;
  kind: string;
  reason: string;
  createdAt: Date;
  userId: string | null;
  payload: unknown;
}

export const toEvent = (d: EventDoc): ArchivedEvent => ({
  id: d._id,
  kind: d.kind,
  reason: d.reason,
  createdAt: d.createdAt,
  userId: d.userId,
  payload: d.payload,
});

export class EventsRepository {
  constructor(private readonly events: Collection<EventDoc>) {}

  /**
   * Archives a payload. `key` makes it idempotent (a redelivered notification is archived once);
   * without one a random id is used.
   */
  async archive(input: {
    kind: string;
    reason: string;
    payload: unknown;
    userId?: string | null;
    key?: string;
  }): Promise<string> {
    const id = input.key ?? randomUUID();
    await withRetry(() =>
      this.events.updateOne(
        { _id: id },
        {
          $setOnInsert: {
            kind: input.kind,
            reason: input.reason,
            createdAt: new Date(),
            userId: input.userId ?? null,
            payload: input.payload,
          },
        },
        { upsert: true },
      ),
    );
    return id;
  }
}
