// The server adapter: the one place where the data module accommodates a server's flaw.
//
// FerretDB v1 (the embedded database of development and tests) applies an update as a read, a
// change and a write without isolation: concurrent `$inc`s of one document were seen to add 3
// out of 40, concurrent conditional updates to all "win", and concurrent upserts to fail with
// duplicate keys; a delete checks its filter, then deletes by `_id`, so a document whose state
// changed in between goes too. On FerretDB the adapter therefore runs the writes that target one
// document (`_id`, or each of an `_id: {$in}` list) one after another in this process; writes to
// different documents still run at once.
// MongoDB and Cosmos DB apply each single-document write atomically, so there it does nothing.
// Several processes sharing one FerretDB (two app hosts, the two threads of `npm run dev`, a script
// beside it) are serialised by the project's FerretDB build (scripts/lib/ferretdb-patches.ts, fix
// 4), which runs the commands that change documents one at a time; another FerretDB v1 (through
// MONGODB_URI) leaves them apart: `npm run health -- --repair` rebuilds what could drift.
//
// FerretDB v1 also refuses a projection (`fields`) on findAndModify: there the whole document is
// returned instead, which changes nothing for the caller but the bytes on the wire.
//
// FerretDB v1's `update` command stops at its first write error even when unordered, and reports
// neither which update failed nor what the others did, so no adapter can make up for it: the
// project's FerretDB build fixes that instead (scripts/lib/ferretdb-patches.ts, fix 3).
import type { Db } from 'mongodb';

/** What a write may use on this server. */
export interface ServerFeatures {
  readonly findAndModifyProjection: boolean;
}

export interface ServerAdapter {
  /** Runs a write that targets the given documents (`null`: no single document). */
  write<R>(
    collection: string,
    ids: readonly (string | null)[],
    operation: (features: ServerFeatures) => Promise<R>,
  ): Promise<R>;
}

const FULL: ServerFeatures = { findAndModifyProjection: true };
const FERRETDB: ServerFeatures = { findAndModifyProjection: false };

export const directAdapter: ServerAdapter = { write: (_c, _ids, operation) => operation(FULL) };

/** One queue per document key: a write starts when the previous writes of its documents ended. */
export function serialisingAdapter(): ServerAdapter {
  const tails = new Map<string, Promise<unknown>>();
  return {
    async write(collection, ids, operation) {
      const keys = [...new Set(ids.filter((id): id is string => id !== null))].map(
        (id) => `${collection}\0${id}`,
      );
      if (keys.length === 0) return operation(FERRETDB);
      const before = keys.map((k) => tails.get(k) ?? Promise.resolve());
      const run = Promise.allSettled(before).then(() => operation(FERRETDB));
      const settled = run.then(
        () => undefined,
        () => undefined,
      );
      for (const key of keys) tails.set(key, settled);
      void settled.then(() => {
        for (const key of keys) if (tails.get(key) === settled) tails.delete(key);
      });
      return run;
    },
  };
}

/** Picks the adapter for a server: FerretDB answers `buildInfo` with `ferretdbVersion`. */
export function adapterFor(db: Db): ServerAdapter {
  let chosen: Promise<ServerAdapter> | undefined;
  return {
    async write(collection, ids, operation) {
      chosen ??= db
        .admin()
        .command({ buildInfo: 1 })
        .then((info) => ('ferretdbVersion' in info ? serialisingAdapter() : directAdapter))
        .catch(() => {
          chosen = undefined;
          return directAdapter;
        });
      return (await chosen).write(collection, ids, operation);
    },
  };
}
