// Starts Azurite's queue service (node_modules/azurite) with two local-development settings
// changed, because `npm run dev` acknowledges a webhook once its queue message is written:
// - writes of message bodies run 8 at a time instead of 1 (each ends with an fdatasync, so one at a
//   time makes concurrent acknowledgements wait for each other);
// - the queue metadata (which messages exist) is saved every 100 ms instead of every 5 s, so a
//   crash loses at most 100 ms of queue operations (Azure Storage itself loses none).
'use strict';
const path = require('node:path');
const root = path.dirname(require.resolve('azurite/package.json'));
const constants = require(path.join(root, 'dist/src/queue/utils/constants'));
for (const location of constants.DEFAULT_QUEUE_PERSISTENCE_ARRAY) location.maxConcurrency = 8;
const Loki = require(require.resolve('lokijs', { paths: [root] }));
const configure = Loki.prototype.configureOptions;
Loki.prototype.configureOptions = function (options, initialConfig) {
  const changed = options && options.autosave ? { ...options, autosaveInterval: 100 } : options;
  return configure.call(this, changed, initialConfig);
};
require(path.join(root, 'dist/src/queue/main.js'));
