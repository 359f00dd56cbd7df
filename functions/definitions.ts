// The one list of the app's functions: registered with the Functions host by ./index.ts and
// served by the local dev server (scripts/dev-server.ts).
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
];
