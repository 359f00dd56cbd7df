// Starts Azurite's queue service (node_modules/azurite) with local-development settings changed,
// because `npm run dev` acknowledges a webhook once its queue message is written:
// - writes of message bodies run 8 at a time instead of 1;
// - the queue metadata (which messages exist) is saved every 100 ms instead of every 5 s, so a
//   crash loses at most 100 ms of queue operations (Azure Storage itself loses none);
// - a message body is not flushed to the disk with fdatasync: the metadata that makes it a message
//   is saved without one, so the flush protected nothing a killed process could lose (the page
//   cache outlives the process; only an OS crash could take back the last writes, as before);
// - the metadata collections keep no sorted indices: Azurite's stores hold a few hundred messages
//   here, which a scan reads faster than LokiJS re-sorts its indices after every delete.
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
const fs = require('node:fs');
fs.fdatasync = (fd, callback) => process.nextTick(callback, null);
const addCollection = Loki.prototype.addCollection;
Loki.prototype.addCollection = function (name, options) {
  return addCollection.call(this, name, options ? { ...options, indices: [] } : options);
};
const loadJSONObject = Loki.prototype.loadJSONObject;
Loki.prototype.loadJSONObject = function (dbObject, options) {
  const result = loadJSONObject.call(this, dbObject, options);
  for (const collection of this.collections) collection.binaryIndices = {};
  return result;
};
require(path.join(root, 'dist/src/queue/main.js'));
