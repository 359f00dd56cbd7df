// The shape of a function definition: one list of these is registered with the Functions host
// (functions/index.ts) and served by the local dev server (scripts/dev.ts).
import type { HttpHandler, HttpMethod, InvocationContext, StorageQueueOutput, Timer } from '@azure/functions';

export interface HttpDefinition {
  kind: 'http';
  name: string;
  /** Azure route template under /api, e.g. 'manage/users/{id}'. */
  route: string;
  methods: HttpMethod[];
  authLevel: 'anonymous' | 'function';
  handler: HttpHandler;
  /** Queue outputs the handler may set through context.extraOutputs. */
  queueOutputs?: StorageQueueOutput[];
}

export interface QueueDefinition {
  kind: 'queue';
  name: string;
  queueName: string;
  handler: (item: unknown, context: InvocationContext) => Promise<void>;
  /** Queue outputs the handler may set through context.extraOutputs. */
  queueOutputs?: StorageQueueOutput[];
}

export interface TimerDefinition {
  kind: 'timer';
  name: string;
  schedule: string;
  handler: (timer: Timer, context: InvocationContext) => Promise<void>;
  /** Queue outputs the handler may set through context.extraOutputs. */
  queueOutputs?: StorageQueueOutput[];
}

export type FunctionDefinition = HttpDefinition | QueueDefinition | TimerDefinition;
