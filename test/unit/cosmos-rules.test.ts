// The Cosmos DB rule checker (test/cosmos/rules.ts): each rule catches a violating command or index
// and lets a compliant one pass; and the app's own index definitions and client options comply.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { BSON, MongoClient } from 'mongodb';
import { describe as group, expect, it } from 'vitest';
import { CLIENT_OPTIONS } from '../../shared/data/client';
import { APP_ARRAY_FIELDS, APP_CAPABILITIES, APP_INDEXES } from '../cosmos/app-model';
import { KNOWN_VIOLATIONS, isKnown } from '../cosmos/known-violations';
import { originOf } from '../cosmos/origin';
import {
  CommandChecker,
  MAX_IDLE_CONNECTION_MS,
  NESTED_INDEX_CAPABILITY,
  RULES,
  checkIndex,
  describe,
  shorten,
  type CheckedCommand,
  type IndexSpec,
  type RuleId,
} from '../cosmos/rules';

const INDEXES: IndexSpec[] = [
  { collection: 'c', name: 'a_b', keys: { a: 1, b: 1 } },
  { collection: 'c', name: 'a', keys: { a: 1 } },
];

function rulesBrokenBy(...commands: Omit<CheckedCommand, 'databaseName'>[]): RuleId[] {
  const checker = new CommandChecker(INDEXES, ['c.tags']);
  for (const command of commands) checker.check({ databaseName: 'd', ...command });
  checker.checkIndexesAgainstArrays();
  return checker.violations.map((v) => v.rule);
}

const find = (extra: Record<string, unknown>): Omit<CheckedCommand, 'databaseName'> => ({
  commandName: 'find',
  command: { find: 'c', filter: {}, ...extra },
});

group('Cosmos DB rules, one by one', () => {
  it('sort on several fields: exactly the paths of a compound index, same or all reversed', () => {
    expect(
      rulesBrokenBy(
        find({
          sort: new Map([
            ['a', -1],
            ['b', -1],
          ]),
        }),
      ),
    ).toEqual([]);
    expect(rulesBrokenBy(find({ sort: { a: 1, b: 1 } }))).toEqual([]);
    expect(rulesBrokenBy(find({ sort: { b: 1, a: 1 } }))).toEqual(['sort-compound-index']);
    expect(rulesBrokenBy(find({ sort: { a: 1, b: -1 } }))).toEqual(['sort-compound-index']);
    // an equality filter on a leading field does not make a longer index match
    expect(rulesBrokenBy(find({ filter: { a: 1 }, sort: { b: 1 } }))).toEqual(['sort-single-index']);
  });

  it('sort on one field: an index on it, or _id', () => {
    expect(rulesBrokenBy(find({ sort: { a: -1 } }), find({ sort: { _id: 1 } }))).toEqual([]);
    expect(rulesBrokenBy(find({ sort: { b: 1 } }))).toEqual(['sort-single-index']);
  });

  it('a $sort at the start of a pipeline is held to the same rules; after $group it is not', () => {
    const aggregate = (pipeline: unknown[]) => ({
      commandName: 'aggregate',
      command: { aggregate: 'c', pipeline },
    });
    expect(rulesBrokenBy(aggregate([{ $match: { a: 1 } }, { $sort: { b: 1 } }]))).toEqual([
      'sort-single-index',
    ]);
    expect(
      rulesBrokenBy(aggregate([{ $group: { _id: '$b', n: { $sum: 1 } } }, { $sort: { n: -1 } }])),
    ).toEqual([]);
  });

  it('findAndModify sorts on one field at most', () => {
    const fam = (sort: unknown) => ({
      commandName: 'findAndModify',
      command: { findAndModify: 'c', query: {}, sort, update: { $set: { x: 1 } } },
    });
    expect(rulesBrokenBy(fam({ a: 1 }))).toEqual([]);
    expect(rulesBrokenBy(fam({ a: 1, b: 1 }))).toEqual(['find-and-modify-sort']);
  });

  it('no compound index over an array, known or seen in a written document', () => {
    expect(
      checkIndex({ collection: 'c', name: 'x', keys: { tags: 1, a: 1 } }, new Set(['tags'])).map(
        (v) => v.rule,
      ),
    ).toEqual(['compound-index-array']);
    expect(
      // the capability allows nested paths only where no array is on the path
      checkIndex(
        { collection: 'c', name: 'x', keys: { 'p.q': 1, a: 1 } },
        new Set(['p']),
        new Set([NESTED_INDEX_CAPABILITY]),
      ).map((v) => v.rule),
    ).toEqual(['compound-index-array']);
    // a single-field (multikey) index on an array is fine
    expect(checkIndex({ collection: 'c', name: 'x', keys: { tags: 1 } }, new Set(['tags']))).toEqual([]);
    const createXY = {
      commandName: 'createIndexes',
      command: {
        createIndexes: 'c',
        indexes: [
          {
            key: new Map([
              ['x', 1],
              ['y', 1],
            ]),
            name: 'x_y',
          },
        ],
      },
    };
    expect(rulesBrokenBy(createXY)).toEqual([]);
    const insertArrayY = {
      commandName: 'insert',
      command: { insert: 'c', documents: [{ _id: 1, y: [1, 2] }] },
    };
    expect(rulesBrokenBy(createXY, insertArrayY)).toEqual(['compound-index-array']);
    const pushY = {
      commandName: 'update',
      command: { update: 'c', updates: [{ q: { _id: 1 }, u: { $push: { y: 3 } } }] },
    };
    expect(rulesBrokenBy(createXY, pushY)).toEqual(['compound-index-array']);
  });

  it('a compound or unique index over a nested path only with EnableUniqueCompoundNestedDocs', () => {
    const rules = (keys: Record<string, unknown>, options: Record<string, unknown>, caps: string[] = []) =>
      checkIndex({ collection: 'c', name: 'x', keys, options }, new Set(), new Set(caps)).map((v) => v.rule);
    expect(rules({ 'p.q': 1, _id: 1 }, {})).toEqual(['nested-compound-index']);
    expect(rules({ 'p.q': 1 }, { unique: true })).toEqual(['nested-compound-index']);
    expect(rules({ 'p.q': 1, _id: 1 }, {}, [NESTED_INDEX_CAPABILITY])).toEqual([]);
    // a single-field index on a nested path needs nothing
    expect(rules({ 'p.q': 1 }, {})).toEqual([]);
    const created = {
      commandName: 'createIndexes',
      command: { createIndexes: 'c', indexes: [{ key: { 'p.q': 1, a: 1 }, name: 'pq_a' }] },
    };
    expect(rulesBrokenBy(created)).toEqual(['nested-compound-index']);
    const checker = new CommandChecker([], [], new Set([NESTED_INDEX_CAPABILITY]));
    checker.check({ databaseName: 'd', ...created });
    expect(checker.violations).toEqual([]);
  });

  it('only supported commands, operators and stages', () => {
    expect(
      rulesBrokenBy({ commandName: 'renameCollection', command: { renameCollection: 'd.c', to: 'd.e' } }),
    ).toEqual(['unsupported-command']);
    expect(rulesBrokenBy(find({ filter: { $where: 'this.a > 1' } }))).toEqual(['unsupported-operator']);
    expect(rulesBrokenBy(find({ filter: { $text: { $search: 'x' } } }))).toEqual(['unsupported-operator']);
    expect(
      rulesBrokenBy(find({ filter: { a: { $in: [1, 2] }, $or: [{ b: { $regex: 'x', $options: 'i' } }] } })),
    ).toEqual([]);
    const aggregate = (pipeline: unknown[]) => ({
      commandName: 'aggregate',
      command: { aggregate: 'c', pipeline },
    });
    expect(rulesBrokenBy(aggregate([{ $bucket: { groupBy: '$a', boundaries: [0, 1] } }]))).toEqual([
      'unsupported-stage',
    ]);
    expect(
      rulesBrokenBy(aggregate([{ $lookup: { from: 'e', let: { x: '$a' }, pipeline: [], as: 'y' } }])),
    ).toEqual(['unsupported-stage']);
    expect(
      rulesBrokenBy(
        aggregate([{ $match: { a: 1 } }, { $group: { _id: null, n: { $sum: 1 }, m: { $max: '$b' } } }]),
      ),
    ).toEqual([]);
    const update = (u: unknown) => ({
      commandName: 'update',
      command: { update: 'c', updates: [{ q: {}, u }] },
    });
    expect(rulesBrokenBy(update({ $inc: { n: 1 }, $setOnInsert: { a: 1 } }))).toEqual([]);
    expect(rulesBrokenBy(update({ $bitsAllSet: { n: 1 } }))).toEqual(['unsupported-operator']);
  });

  it('a unique index only on an empty collection', () => {
    const unique = {
      commandName: 'createIndexes',
      command: { createIndexes: 'c', indexes: [{ key: { h: 1 }, name: 'h', unique: true }] },
    };
    const insert = { commandName: 'insert', command: { insert: 'c', documents: [{ _id: 1 }] } };
    expect(rulesBrokenBy(unique, insert)).toEqual([]);
    expect(rulesBrokenBy(insert, unique)).toEqual(['unique-index-empty-collection']);
    expect(rulesBrokenBy(insert, { commandName: 'drop', command: { drop: 'c' } }, unique)).toEqual([]);
  });

  it('no sparse, partial (unless unique), text, hashed or case-insensitive indexes', () => {
    const kinds = (keys: Record<string, unknown>, options: Record<string, unknown> = {}) =>
      checkIndex({ collection: 'c', name: 'x', keys, options }, new Set()).map((v) => v.rule);
    expect(kinds({ a: 1 }, { sparse: true })).toEqual(['index-kind']);
    expect(kinds({ a: 1 }, { partialFilterExpression: { a: { $exists: true } } })).toEqual(['index-kind']);
    expect(kinds({ a: 1 }, { partialFilterExpression: { a: { $exists: true } }, unique: true })).toEqual([]);
    expect(kinds({ a: 'text' })).toEqual(['index-kind']);
    expect(kinds({ a: 'hashed' })).toEqual(['index-kind']);
    expect(kinds({ a: 1 }, { collation: { locale: 'en', strength: 2 } })).toEqual(['index-kind']);
    expect(kinds({ location: '2dsphere' })).toEqual([]);
  });

  it('TTL only on _ts', () => {
    const ttl = (keys: Record<string, unknown>) =>
      checkIndex({ collection: 'c', name: 'x', keys, options: { expireAfterSeconds: 60 } }, new Set()).map(
        (v) => v.rule,
      );
    expect(ttl({ createdAt: 1 })).toEqual(['ttl-on-ts']);
    expect(ttl({ _ts: 1 })).toEqual([]);
  });

  it('documents under 2 MB, inserted, replaced or updated', () => {
    const big = 'x'.repeat(2 * 1024 * 1024);
    const insert = (text: string) => ({
      commandName: 'insert',
      command: { insert: 'c', documents: [{ _id: 1, text }] },
    });
    expect(rulesBrokenBy(insert('small'))).toEqual([]);
    expect(rulesBrokenBy(insert(big))).toEqual(['document-size']);
    const update = (u: unknown) => ({
      commandName: 'update',
      command: { update: 'c', updates: [{ q: { _id: 1 }, u }] },
    });
    expect(rulesBrokenBy(update({ _id: 1, text: big }))).toEqual(['document-size']);
    expect(rulesBrokenBy(update({ $set: { text: big } }))).toEqual(['document-size']);
  });

  it('no retryable writes', () => {
    const lsid = { id: 'session' };
    expect(
      rulesBrokenBy({
        commandName: 'insert',
        command: { insert: 'c', documents: [{ _id: 1 }], lsid, txnNumber: 1 },
      }),
    ).toEqual(['retryable-writes']);
    expect(
      rulesBrokenBy({ commandName: 'insert', command: { insert: 'c', documents: [{ _id: 1 }], lsid } }),
    ).toEqual([]);
  });

  it('a transaction stays in one collection', () => {
    const inTxn = (name: string, coll: string) => ({
      commandName: name,
      command: {
        [name]: coll,
        lsid: { id: 's' },
        txnNumber: 7,
        autocommit: false,
        ...(name === 'insert' ? { documents: [{}] } : { filter: {} }),
      },
    });
    expect(rulesBrokenBy(inTxn('insert', 'c'), inTxn('find', 'c'))).toEqual([]);
    expect(rulesBrokenBy(inTxn('insert', 'c'), inTxn('insert', 'e'))).toEqual(['transactions']);
  });
});

group('Cosmos DB limits and restrictions beyond the feature tables', () => {
  const aggregate = (pipeline: unknown[]) => ({
    commandName: 'aggregate',
    command: { aggregate: 'c', pipeline, cursor: {} },
  });
  const update = (u: unknown, extra: Record<string, unknown> = {}) => ({
    commandName: 'update',
    command: { update: 'c', updates: [{ q: { _id: 1 }, u, ...extra }] },
  });

  it('a request under 2 MB in all, however many documents it carries', () => {
    const docs = (n: number, bytes: number) =>
      Array.from({ length: n }, (_, i) => ({ _id: i, text: 'x'.repeat(bytes) }));
    const insert = (documents: unknown[]) => ({ commandName: 'insert', command: { insert: 'c', documents } });
    // 40 documents of 60 KB: each far under 2 MB, the request over it
    expect(rulesBrokenBy(insert(docs(40, 60_000)))).toEqual(['request-size']);
    expect(rulesBrokenBy(insert(docs(30, 60_000)))).toEqual([]);
    const replaces = (n: number) => ({
      commandName: 'update',
      command: {
        update: 'c',
        updates: docs(n, 60_000).map((d) => ({ q: { _id: d._id }, u: d, upsert: true })),
      },
    });
    expect(rulesBrokenBy(replaces(40))).toEqual(['request-size']);
    expect(rulesBrokenBy(replaces(30))).toEqual([]);
    // one document over 2 MB is reported once, as the document it is
    expect(rulesBrokenBy(insert(docs(1, 2 * 1024 * 1024)))).toEqual(['document-size']);
    // a query is a request too
    const texts = (n: number) => docs(n, 60_000).map((d) => d.text);
    expect(rulesBrokenBy(find({ filter: { _id: { $in: texts(40) } } }))).toEqual(['request-size']);
    expect(rulesBrokenBy(find({ filter: { _id: { $in: texts(30) } } }))).toEqual([]);
  });

  it('a write of at most 1,000 documents or statements, however small', () => {
    const ids = (n: number) => Array.from({ length: n }, (_, i) => i);
    const insert = (n: number) => ({
      commandName: 'insert',
      command: { insert: 'c', documents: ids(n).map((i) => ({ _id: i })) },
    });
    const updates = (n: number) => ({
      commandName: 'update',
      command: { update: 'c', updates: ids(n).map((i) => ({ q: { _id: i }, u: { $inc: { n: 1 } } })) },
    });
    const deletes = (n: number) => ({
      commandName: 'delete',
      command: { delete: 'c', deletes: ids(n).map((i) => ({ q: { _id: i }, limit: 1 })) },
    });
    expect(rulesBrokenBy(insert(1_000), updates(1_000), deletes(1_000))).toEqual([]);
    expect(rulesBrokenBy(insert(1_001))).toEqual(['write-batch-size']);
    expect(rulesBrokenBy(updates(1_001))).toEqual(['write-batch-size']);
    expect(rulesBrokenBy(deletes(1_001))).toEqual(['write-batch-size']);
    // one statement over many documents is one statement
    expect(rulesBrokenBy(update({ $set: { a: 1 } }, { multi: true }))).toEqual([]);
  });

  it('a compound index of at most 8 fields, an index path of at most 6 levels', () => {
    const rules = (keys: Record<string, unknown>) =>
      checkIndex({ collection: 'c', name: 'x', keys }, new Set(), new Set([NESTED_INDEX_CAPABILITY])).map(
        (v) => v.rule,
      );
    const fields = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`f${i}`, 1]));
    expect(rules(fields(8))).toEqual([]);
    expect(rules(fields(9))).toEqual(['compound-index-fields']);
    expect(rules({ 'a.b.c.d.e.f': 1 })).toEqual([]);
    expect(rules({ 'a.b.c.d.e.f.g': 1 })).toEqual(['index-path-depth']);
  });

  it('at most 500 single-field indexes in a collection', () => {
    const create = (i: number, keys: Record<string, unknown>) => ({
      commandName: 'createIndexes',
      command: { createIndexes: 'many', indexes: [{ key: keys, name: `i${i}` }] },
    });
    const singles = Array.from({ length: 500 }, (_, i) => create(i, { [`f${i}`]: 1 }));
    // compound ones do not count
    expect(rulesBrokenBy(...singles, create(501, { a: 1, b: 1 }))).toEqual([]);
    expect(rulesBrokenBy(...singles, create(502, { g: 1 }))).toEqual(['single-field-index-count']);
    // creating an index that exists (ensureIndexes run again) adds none
    expect(rulesBrokenBy(...singles, create(0, { f0: 1 }))).toEqual([]);
  });

  it('a wildcard index is single-field, not unique or TTL, without wildcardProjection', () => {
    const rules = (keys: Record<string, unknown>, options: Record<string, unknown> = {}) =>
      checkIndex({ collection: 'c', name: 'x', keys, options }, new Set()).map((v) => v.rule);
    expect(rules({ '$**': 1 })).toEqual([]);
    expect(rules({ 'children.$**': 1 })).toEqual([]);
    expect(rules({ '$**': 1 }, { unique: true })).toEqual(['wildcard-index']);
    expect(rules({ '$**': 1 }, { expireAfterSeconds: 60 })).toEqual(['wildcard-index']);
    expect(rules({ '$**': 1 }, { wildcardProjection: { a: 1, b: 1 } })).toEqual(['wildcard-index']);
    expect(rules({ '$**': 1, a: 1 })).toEqual(['wildcard-index']);
  });

  it('documents nest at most 128 levels, inserted, replaced or set at a path', () => {
    const nested = (levels: number): Record<string, unknown> => {
      let doc: Record<string, unknown> = { leaf: 1 };
      for (let i = 1; i < levels; i++) doc = { n: doc };
      return doc;
    };
    const insert = (doc: unknown) => ({ commandName: 'insert', command: { insert: 'c', documents: [doc] } });
    expect(rulesBrokenBy(insert(nested(128)))).toEqual([]);
    expect(rulesBrokenBy(insert(nested(129)))).toEqual(['document-depth']);
    expect(rulesBrokenBy(update(nested(129)))).toEqual(['document-depth']);
    // {a: {b: <127 levels>}}: 129 in the document
    expect(rulesBrokenBy(update({ $set: { 'a.b': nested(127) } }))).toEqual(['document-depth']);
    expect(rulesBrokenBy(update({ $set: { 'a.b': nested(126) } }))).toEqual([]);
  });

  it('no comparison expression with an array literal; query operators may take arrays', () => {
    expect(rulesBrokenBy(aggregate([{ $project: { ok: { $in: ['$a', ['x', 'y']] } } }]))).toEqual([
      'expression-array-literal',
    ]);
    expect(rulesBrokenBy(find({ filter: { $expr: { $eq: ['$tags', ['p', 'q']] } } }))).toEqual([
      'expression-array-literal',
    ]);
    expect(rulesBrokenBy(update([{ $set: { hit: { $in: ['$a', [1, 2]] } } }]))).toEqual([
      'expression-array-literal',
    ]);
    // a field path or variable is fine, and so is the query operator $in
    expect(rulesBrokenBy(aggregate([{ $project: { ok: { $in: ['$a', '$list'] } } }]))).toEqual([]);
    expect(rulesBrokenBy(find({ filter: { a: { $in: ['x', 'y'] }, $expr: { $gt: ['$a', '$b'] } } }))).toEqual(
      [],
    );
    expect(rulesBrokenBy(aggregate([{ $match: { a: { $in: [[1], [2]] } } }]))).toEqual([]);
  });

  it('no collation, on a command, a statement or an index', () => {
    expect(rulesBrokenBy(find({ filter: { a: 'x' }, collation: { locale: 'en', strength: 3 } }))).toEqual([
      'collation',
    ]);
    expect(rulesBrokenBy(update({ $set: { a: 1 } }, { collation: { locale: 'fr' } }))).toEqual(['collation']);
    expect(
      checkIndex(
        { collection: 'c', name: 'x', keys: { a: 1 }, options: { collation: { locale: 'en' } } },
        new Set(),
      ).map((v) => v.rule),
    ).toEqual(['collation']);
    expect(rulesBrokenBy(find({ filter: { a: 'x' } }))).toEqual([]);
  });

  it('projections use supported operators only ($elemMatch, $slice; not $meta)', () => {
    expect(rulesBrokenBy(find({ projection: { a: 1, items: { $slice: 5 } } }))).toEqual([]);
    expect(rulesBrokenBy(find({ projection: { score: { $meta: 'textScore' } } }))).toEqual([
      'unsupported-operator',
    ]);
    expect(
      rulesBrokenBy({
        commandName: 'findAndModify',
        command: { findAndModify: 'c', query: { _id: 1 }, fields: { s: { $meta: 'x' } }, remove: true },
      }),
    ).toEqual(['unsupported-operator']);
  });

  it('a left-anchored $regex keeps its index: no i or m, no `$` or `|` without the plain prefix', () => {
    expect(rulesBrokenBy(find({ filter: { _id: { $regex: '^day:' } } }))).toEqual([]);
    expect(rulesBrokenBy(find({ filter: { _id: /^day:\d+/ } }))).toEqual([]);
    // `$` and `|` inside a class or escaped are literal characters
    expect(rulesBrokenBy(find({ filter: { a: { $regex: '^x[$|]\\$' } } }))).toEqual([]);
    // unanchored: a scan whatever its options (health scans read every document by design)
    expect(rulesBrokenBy(find({ filter: { a: { $regex: 'x$', $options: 'i' } } }))).toEqual([]);
    expect(rulesBrokenBy(find({ filter: { a: /^x/i } }))).toEqual(['regex-index']);
    expect(rulesBrokenBy(find({ filter: { a: { $regex: '^x', $options: 'm' } } }))).toEqual(['regex-index']);
    expect(rulesBrokenBy(find({ filter: { a: { $regex: new BSON.BSONRegExp('^x', 'i') } } }))).toEqual([
      'regex-index',
    ]);
    expect(rulesBrokenBy(find({ filter: { _id: { $regex: /^legacy:\d+$/ } } }))).toEqual(['regex-index']);
    expect(rulesBrokenBy(find({ filter: { a: /^abc|^def/ } }))).toEqual(['regex-index']);
    // the documented split: the plain prefix serves the index, the full pattern matches exactly
    expect(
      rulesBrokenBy(find({ filter: { $and: [{ _id: { $regex: '^legacy:' } }, { _id: /^legacy:\d+$/ }] } })),
    ).toEqual([]);
    expect(rulesBrokenBy(find({ filter: { $or: [{ a: /^abc/ }, { a: /^def/ }] } }))).toEqual([]);
    // every filter is held to it: count, delete, update, findAndModify, $match
    const delete_ = {
      commandName: 'delete',
      command: { delete: 'c', deletes: [{ q: { a: /^x$/ }, limit: 0 }] },
    };
    expect(rulesBrokenBy(delete_)).toEqual(['regex-index']);
    expect(rulesBrokenBy(aggregate([{ $match: { a: /^x/m } }]))).toEqual(['regex-index']);
    expect(rulesBrokenBy({ commandName: 'count', command: { count: 'c', query: { a: /^x$/ } } })).toEqual([
      'regex-index',
    ]);
  });

  it('a change stream asks for fullDocument updateLookup and has a $match and a $project', () => {
    // what collection.watch(pipeline, options) sends
    const watch = (options: Record<string, unknown>, stages: unknown[]) => ({
      commandName: 'aggregate',
      command: { aggregate: 'c', pipeline: [{ $changeStream: options }, ...stages], cursor: {} },
    });
    const match = { $match: { operationType: { $in: ['insert', 'update', 'replace'] } } };
    const project = { $project: { _id: 1, fullDocument: 1, ns: 1, documentKey: 1 } };
    expect(rulesBrokenBy(watch({ fullDocument: 'updateLookup' }, [match, project]))).toEqual([]);
    expect(rulesBrokenBy(watch({}, [match, project]))).toEqual(['change-stream']);
    expect(rulesBrokenBy(watch({ fullDocument: 'updateLookup' }, []))).toEqual(['change-stream']);
    expect(rulesBrokenBy(watch({ fullDocument: 'updateLookup' }, [match]))).toEqual(['change-stream']);
    const checker = new CommandChecker();
    checker.check({ databaseName: 'd', ...watch({}, [match]) });
    expect(checker.violations.map((v) => v.subject)).toEqual([
      "change stream without fullDocument 'updateLookup', a $project stage",
    ]);
  });

  it('the operators of arrayFilters are checked like a filter’s', () => {
    const filtered = (arrayFilters: unknown[]) =>
      update({ $set: { 'items.$[i].done': true } }, { arrayFilters });
    expect(rulesBrokenBy(filtered([{ 'i.n': { $gt: 1 } }]))).toEqual([]);
    expect(rulesBrokenBy(filtered([{ 'i.n': { $bitsAllSet: 1 } }]))).toEqual(['unsupported-operator']);
    expect(
      rulesBrokenBy({
        commandName: 'findAndModify',
        command: {
          findAndModify: 'c',
          query: { _id: 1 },
          update: { $set: { 'items.$[i].done': true } },
          arrayFilters: [{ 'i.tags': { $jsonSchema: {} } }],
        },
      }),
    ).toEqual(['unsupported-operator']);
  });

  it('arrayFilters, $push modifiers and $setOnInsert are supported', () => {
    expect(
      rulesBrokenBy(
        update(
          { $set: { 'items.$[i].done': true }, $push: { log: { $each: [1], $slice: -5, $sort: 1 } } },
          { arrayFilters: [{ 'i.id': 3 }] },
        ),
      ),
    ).toEqual([]);
  });

  it('every rule that no command shows says where it is covered, and that file exists', () => {
    const root = path.resolve(__dirname, '..', '..');
    for (const [id, entry] of Object.entries(RULES)) {
      if (!('checked' in entry)) continue;
      const files = entry.checked.match(/(?:test|shared|infra)\/[\w./-]+\.(?:ts|bicep)/g) ?? [];
      expect(files.length, id).toBeGreaterThan(0);
      for (const file of files) expect(existsSync(path.join(root, file)), `${id}: ${file}`).toBe(true);
    }
  });
});

group('failure messages', () => {
  it('name the rule, its documentation page and the shortened command', () => {
    const checker = new CommandChecker(INDEXES);
    checker.check({
      databaseName: 'd',
      commandName: 'find',
      command: { find: 'c', filter: { text: 'y'.repeat(500) }, sort: { b: 1 } },
      origin: 'app',
    });
    const [violation] = checker.violations;
    expect(violation).toBeDefined();
    const text = describe(violation!);
    expect(text).toContain(RULES['sort-single-index'].rule);
    expect(text).toContain('https://learn.microsoft.com/azure/cosmos-db/mongodb/indexing');
    expect(text).toContain('command (app): {"find":"c"');
    expect(text.length).toBeLessThan(1_000);
    expect(shorten({ a: 'z'.repeat(1000) })).toHaveLength(`{"a":""}`.length + 38);
  });

  it('tell the app’s commands from the tests’ own by the stack', () => {
    const frame = (file: string) =>
      `Error\n    at f (/x/node_modules/mongodb/lib/a.js:1:1)\n    at async g (${file}:10:5)`;
    const root = path.resolve(__dirname, '..', '..');
    expect(originOf(frame(`${root}/shared/data/users.ts`))).toBe('app');
    expect(originOf(frame(`${root}/test/integration/x.test.ts`))).toBe('test');
    expect(originOf('Error\n    at process (node:internal/x:1:1)')).toBe('unknown');
  });
});

group('the app, checked statically', () => {
  it('every index definition follows the index rules (but for the temporary allow-list)', () => {
    const arrays = new Map<string, Set<string>>();
    for (const known of APP_ARRAY_FIELDS) {
      const [collection, ...path] = known.split('.');
      const set = arrays.get(collection!) ?? new Set<string>();
      set.add(path.join('.'));
      arrays.set(collection!, set);
    }
    const violations = APP_INDEXES.flatMap((index) =>
      checkIndex(index, arrays.get(index.collection) ?? new Set(), new Set(APP_CAPABILITIES)),
    );
    expect(violations.filter((v) => !isKnown(v)).map(describe)).toEqual([]);
    // An allow-listed index violation that no longer occurs must leave the list with its fix.
    const indexRules: RuleId[] = ['compound-index-array', 'nested-compound-index', 'index-kind', 'ttl-on-ts'];
    const stale = KNOWN_VIOLATIONS.filter(
      (k) =>
        indexRules.includes(k.rule) &&
        !violations.some(
          (v) => v.rule === k.rule && v.collection === k.collection && v.subject === k.subject,
        ),
    );
    expect(stale).toEqual([]);
  });

  it('{handoff.since, _id} is why the account needs EnableUniqueCompoundNestedDocs', () => {
    // Without the capability the handoff list's index breaks the rule (Cosmos DB refuses it).
    const nested = APP_INDEXES.flatMap((index) => checkIndex(index, new Set())).filter(
      (v) => v.rule === 'nested-compound-index',
    );
    expect(nested.map((v) => `${v.collection} ${v.subject}`)).toEqual([
      'users index handoff.since_id {handoff.since:1,_id:1} (nested: handoff.since)',
    ]);
    expect(APP_CAPABILITIES).toContain(NESTED_INDEX_CAPABILITY);
  });

  it('the app’s client turns retryable writes off', () => {
    expect(CLIENT_OPTIONS.retryWrites).toBe(false);
  });

  it('the app’s client keeps the connection string’s appName (Cosmos DB’s @account@)', () => {
    // No connection is made: the options are what the handshake would send.
    const cosmos = new MongoClient(
      'mongodb://acct:key@acct.mongo.cosmos.azure.com:10255/?ssl=true&replicaSet=globaldb&appName=@acct@',
      CLIENT_OPTIONS,
    );
    expect(cosmos.options.appName).toBe('@acct@');
    expect(CLIENT_OPTIONS).not.toHaveProperty('appName');
  });

  it('the app’s client closes a connection idle for longer than Azure’s load balancer keeps it', () => {
    expect(CLIENT_OPTIONS.maxIdleTimeMS).toBeGreaterThan(0);
    expect(CLIENT_OPTIONS.maxIdleTimeMS).toBeLessThanOrEqual(MAX_IDLE_CONNECTION_MS);
  });
});
