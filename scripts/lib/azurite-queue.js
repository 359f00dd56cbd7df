// Starts Azurite's queue service (node_modules/azurite) with local-development settings changed,
// because `npm run dev` acknowledges a webhook once its queue message is written:
// - writes of message bodies run 8 at a time instead of 1;
// - a new message in one of the queues AZURITE_DURABLE_QUEUES names (comma-separated, `*` for all)
//   is answered only once the queue metadata that holds it is saved (LokiJS saves the whole store,
//   and writes that come meanwhile share the next save), so a message a webhook was acknowledged
//   for survives a killed process, as it survives in Azure Storage; the rest is saved every 100 ms
//   instead of every 5 s;
// - a new extent (a file of message bodies: each start opens up to 8) is saved in the extent store
//   before the message written to it is answered: the store maps the extent to its file, and a
//   message whose extent it does not know cannot be received (its autosave came up to 100 ms late,
//   so messages acknowledged right after a start were counted after a kill, but never delivered);
// - a message body is not flushed to the disk with fdatasync, nor is the metadata: what a killed
//   process wrote is in the page cache, which outlives it (only an OS crash could take back the
//   last writes);
// - the metadata collections keep no sorted indices: Azurite's stores hold a few hundred messages
//   here, which a scan reads faster than LokiJS re-sorts its indices after every delete;
// - with AZURITE_PARENT_PIPE=1 (startAzurite), the end of stdin, which the starting process holds
//   open, stops it as SIGTERM does: that process ended in any way (even SIGKILL), and Azurite
//   must not run on, unowned, on the folder the next start opens with an Azurite of its own.
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
const ExtentStore = require(
  path.join(root, 'dist/src/common/persistence/LokiExtentMetadataStore.js'),
).default;
const updateExtent = ExtentStore.prototype.updateExtent;
ExtentStore.prototype.updateExtent = async function (extent, ...rest) {
  const known = this.db.getCollection(this.EXTENTS_COLLECTION).findOne({ id: extent.id }) !== null;
  await updateExtent.call(this, extent, ...rest);
  if (known) return;
  await new Promise((resolve, reject) =>
    this.db.saveDatabase((error) => (error ? reject(error) : resolve())),
  );
};
const Store = require(path.join(root, 'dist/src/queue/persistence/LokiQueueMetadataStore.js')).default;
const insertMessage = Store.prototype.insertMessage;
const durable = (process.env.AZURITE_DURABLE_QUEUES || '*').split(',');
Store.prototype.insertMessage = async function (...args) {
  await insertMessage.apply(this, args);
  if (!durable.includes('*') && !durable.includes(args[0].queueName)) return;
  await new Promise((resolve, reject) =>
    this.db.saveDatabase((error) => (error ? reject(error) : resolve())),
  );
};
if (process.env.AZURITE_PARENT_PIPE === '1') {
  const orphaned = () => {
    setTimeout(() => process.exit(1), 5_000).unref();
    process.kill(process.pid, 'SIGTERM');
  };
  process.stdin.once('end', orphaned);
  process.stdin.once('error', orphaned);
  process.stdin.resume();
  // Stopping (Azurite's own handlers close its servers): stdin must not keep the process alive.
  for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.stdin.destroy());
}
require(path.join(root, 'dist/src/queue/main.js'));
