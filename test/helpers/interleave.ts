// A data store on the test database whose next bulk write (or deleteMany, or a chosen findOne) to
// one collection first lets another writer finish: a write that lands between an operation's reads
// and its write, every time, on the real server (the writer goes through its own store: the
// embedded database's adapter serialises the writes of one store to one document, and the write
// held here would wait for it forever).
import type { Collection, Db, Document } from 'mongodb';
import { createDataStore, type DataStore } from '../../shared/data';

export function storeWithWriterBefore(
  db: Db,
  collection: string,
  writer: () => Promise<void>,
  /** The operation held (an erase deletes a user's messages with `deleteMany`). */
  method: 'bulkWrite' | 'deleteMany' | 'findOne' = 'bulkWrite',
  /** Which call of it lets the writer in (default: the first). */
  when: (...args: unknown[]) => boolean = () => true,
): { store: DataStore; ran: () => number } {
  let runs = 0;
  const wrapped = Object.create(db, {
    collection: {
      value: (name: string) => {
        const real: Collection<Document> = db.collection(name);
        if (name !== collection) return real;
        return Object.create(real, {
          [method]: {
            value: async (...args: unknown[]) => {
              if (runs === 0 && when(...args)) {
                runs++;
                await writer();
              } else if (runs > 0) runs++;
              return (real[method] as (...a: unknown[]) => Promise<unknown>).apply(real, args);
            },
          },
        }) as Collection<Document>;
      },
    },
  }) as Db;
  return { store: createDataStore(wrapped), ran: () => runs };
}
