// Starts Azurite's queue service (node_modules/azurite) with local-development settings changed,
// because `npm run dev` acknowledges a webhook once its queue message is written:
// - writes of message bodies run 8 at a time instead of 1;
// - a new message in one of the queues AZURITE_DURABLE_QUEUES names (comma-separated, `*` for all)
//   is answered only once it is written to a journal beside the store (one appended line; writes
//   that come meanwhile share the next append), so a message a webhook was acknowledged for
//   survives a killed process, as it survives in Azure Storage. Each save of the store (every
//   100 ms instead of every 5 s while something changed) starts a new journal file and removes the
//   older ones once it is written; at start, the messages of the journals left are put back. Saving
//   the whole store for each message instead (LokiJS serialises all of it) cost a save per
//   acknowledgement: 615 saves of ~46 KB in one `npm run bench`;
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
// Message bodies written since the start are read from memory (up to 16 MB, the oldest dropped):
// a receive then opens, reads and closes no file per message, which cost ~10 % of Azurite's CPU.
// The file is written all the same; what is read is the same bytes.
const { Readable } = require('node:stream');
const Extents = require(path.join(root, 'dist/src/common/persistence/FSExtentStore.js')).default;
const RECENT_BYTES = 16 * 1024 * 1024;
const recent = new Map();
let recentBytes = 0;
const chunkKey = (chunk) => `${chunk.id}:${chunk.offset}:${chunk.count}`;
const appendExtent = Extents.prototype.appendExtent;
Extents.prototype.appendExtent = async function (data, ...rest) {
  const chunk = await appendExtent.call(this, data, ...rest);
  if (Buffer.isBuffer(data) && chunk.count === data.length && data.length <= RECENT_BYTES) {
    recent.set(chunkKey(chunk), data);
    recentBytes += data.length;
    for (const [key, body] of recent) {
      if (recentBytes <= RECENT_BYTES) break;
      recent.delete(key);
      recentBytes -= body.length;
    }
  }
  return chunk;
};
const readExtent = Extents.prototype.readExtent;
Extents.prototype.readExtent = async function (chunk, ...rest) {
  const body = chunk && chunk.count > 0 ? recent.get(chunkKey(chunk)) : undefined;
  return body ? Readable.from([body]) : readExtent.call(this, chunk, ...rest);
};
const Store = require(path.join(root, 'dist/src/queue/persistence/LokiQueueMetadataStore.js')).default;
const durable = (process.env.AZURITE_DURABLE_QUEUES || '*').split(',');
const isDurable = (queueName) => durable.includes('*') || durable.includes(queueName);
const saveStore = (db) =>
  new Promise((resolve, reject) => db.saveDatabase((error) => (error ? reject(error) : resolve())));

// The journal of durable messages: `__azurite_queue_journal__.<generation>` files beside the store.
const JOURNAL = '__azurite_queue_journal__.';
const journalFiles = (dir) =>
  fs
    .readdirSync(dir)
    .filter((name) => name.startsWith(JOURNAL) && /^\d+$/.test(name.slice(JOURNAL.length)))
    .map((name) => ({ file: path.join(dir, name), generation: Number(name.slice(JOURNAL.length)) }))
    .sort((a, b) => a.generation - b.generation);

class Journal {
  constructor(dir, generation) {
    this.dir = dir;
    this.generation = generation;
    this.fd = undefined;
    this.pending = [];
    this.writing = false;
  }
  /** Resolves once the line is written (in the page cache: it outlives a killed process). */
  append(line) {
    return new Promise((resolve, reject) => {
      this.pending.push({ line, resolve, reject });
      if (!this.writing) this.flush();
    });
  }
  flush() {
    const batch = this.pending.splice(0);
    if (batch.length === 0) return;
    this.writing = true;
    let fd;
    try {
      fd = this.fd ??= fs.openSync(path.join(this.dir, `${JOURNAL}${this.generation}`), 'a', 0o600);
    } catch (error) {
      this.writing = false;
      for (const item of batch) item.reject(error);
      return;
    }
    const buffer = Buffer.from(batch.map((item) => item.line).join(''));
    const done = (error) => {
      // A new generation began meanwhile: this file is no longer written.
      if (fd !== this.fd) fs.close(fd, () => undefined);
      this.writing = false;
      for (const item of batch) error ? item.reject(error) : item.resolve();
      this.flush();
    };
    const write = (offset) =>
      fs.write(fd, buffer, offset, buffer.length - offset, null, (error, written) => {
        if (error) return done(error);
        if (offset + written < buffer.length) return write(offset + written);
        done(null);
      });
    write(0);
  }
  /** A save of the store begins (after its snapshot was taken): later messages go to a new file. */
  rotate() {
    const covered = this.generation;
    if (this.fd !== undefined && !this.writing) fs.close(this.fd, () => undefined);
    this.fd = undefined;
    this.generation++;
    return covered;
  }
  /** The save that began at `rotate()` is written: the files up to `covered` are in it. */
  release(covered) {
    for (const { file, generation } of journalFiles(this.dir)) {
      if (generation <= covered) fs.rmSync(file, { force: true });
    }
  }
}

const saveDatabaseInternal = Loki.prototype.saveDatabaseInternal;
Loki.prototype.saveDatabaseInternal = function (callback) {
  const journal = this.queueJournal;
  if (!journal) return saveDatabaseInternal.call(this, callback);
  // LokiJS takes the snapshot synchronously in this call: what was inserted before is in it.
  let covered;
  const serialize = this.serialize;
  this.serialize = function (...args) {
    this.serialize = serialize;
    const snapshot = serialize.apply(this, args);
    covered = journal.rotate();
    return snapshot;
  };
  return saveDatabaseInternal.call(this, (error) => {
    this.serialize = serialize;
    if (!error && covered !== undefined) journal.release(covered);
    if (callback) callback(error);
  });
};

const init = Store.prototype.init;
Store.prototype.init = async function (...args) {
  await init.apply(this, args);
  const dir = path.dirname(this.lokiDBPath);
  const files = journalFiles(dir);
  // Messages the last save missed come back; a half-written last line was never answered for.
  const messages = this.db.getCollection(this.MESSAGES_COLLECTION);
  const queues = this.db.getCollection(this.QUEUES_COLLECTION);
  for (const { file } of files) {
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      const { accountName, queueName, messageId } = message;
      if (!queues.findOne({ accountName, name: queueName })) continue;
      if (messages.findOne({ accountName, queueName, messageId })) continue;
      messages.insert(message);
    }
  }
  this.db.queueJournal = new Journal(dir, files.length ? files[files.length - 1].generation + 1 : 0);
  if (files.length) await saveStore(this.db);
};

const insertMessage = Store.prototype.insertMessage;
Store.prototype.insertMessage = async function (message, ...rest) {
  await insertMessage.call(this, message, ...rest);
  if (!isDurable(message.queueName) || !this.db.queueJournal) return;
  const copy = this.messageCopy(message);
  copy.timeNextVisible = copy.timeNextVisible.getTime();
  await this.db.queueJournal.append(`${JSON.stringify(copy)}\n`);
};

// A new queue is saved before it is answered: the journal's messages need their queue.
const createQueue = Store.prototype.createQueue;
Store.prototype.createQueue = async function (...args) {
  const result = await createQueue.apply(this, args);
  await saveStore(this.db);
  return result;
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
