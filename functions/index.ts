// Entry point of the Functions host (package.json "main"): registers every definition.
import { app } from '@azure/functions';
import { definitions } from './definitions';

app.setup({ enableHttpStream: false });

for (const definition of definitions) {
  switch (definition.kind) {
    case 'http':
      app.http(definition.name, {
        route: definition.route,
        methods: definition.methods,
        authLevel: definition.authLevel,
        handler: definition.handler,
        ...(definition.queueOutputs ? { extraOutputs: definition.queueOutputs } : {}),
      });
      break;
    case 'queue':
      app.storageQueue(definition.name, {
        queueName: definition.queueName,
        connection: 'AzureWebJobsStorage',
        handler: definition.handler,
        ...(definition.queueOutputs ? { extraOutputs: definition.queueOutputs } : {}),
      });
      break;
    case 'timer':
      app.timer(definition.name, {
        schedule: definition.schedule,
        handler: definition.handler,
        ...(definition.queueOutputs ? { extraOutputs: definition.queueOutputs } : {}),
      });
      break;
  }
}
