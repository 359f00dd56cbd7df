// The one list of the app's functions: registered with the Functions host by ./index.ts and
// served by the local dev server (scripts/dev-server.ts).
import { safeError } from '../shared/log';
import type { FunctionDefinition } from './definition-types';
import { healthDefinition } from './health';
import { ingestDefinition } from './ingest';
import { keepPoisonedDefinition } from './keep-poisoned';
import { manageDefinitions } from './manage';
import { openApiDefinition } from './openapi';
import { replyDefinition, replyPoisonDefinition } from './reply';
import { retentionDefinition } from './retention';
import { sweeperDefinition } from './sweeper';
import { webhookReceiveDefinition, webhookVerifyDefinition } from './webhook';

/**
 * A handler whose errors reach the host scrubbed (`safeError`): the Functions host logs what a queue
 * or timer function throws, message and stack as they are, and retries it. HTTP handlers answer
 * every error themselves (./http.ts).
 */
export const scrubbedErrors =
  <A extends unknown[]>(handler: (...args: A) => Promise<void>) =>
  async (...args: A): Promise<void> => {
    try {
      await handler(...args);
    } catch (error) {
      throw safeError(error);
    }
  };

function guarded(definition: FunctionDefinition): FunctionDefinition {
  switch (definition.kind) {
    case 'http':
      return definition;
    case 'queue':
      return { ...definition, handler: scrubbedErrors(definition.handler) };
    case 'timer':
      return { ...definition, handler: scrubbedErrors(definition.handler) };
  }
}

export const definitions: readonly FunctionDefinition[] = [
  webhookVerifyDefinition,
  webhookReceiveDefinition,
  healthDefinition,
  ...manageDefinitions,
  openApiDefinition,
  ingestDefinition,
  keepPoisonedDefinition,
  replyDefinition,
  replyPoisonDefinition,
  retentionDefinition,
  sweeperDefinition,
].map(guarded);
