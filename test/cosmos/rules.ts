// Cosmos DB for MongoDB (RU, server 4.2–7.0) rules as data, and a checker that applies them to the
// commands the driver sent and to index definitions. The local test server (FerretDB or mongod)
// accepts all of this; Cosmos DB does not, so the suite checks it here (test/cosmos/setup.ts).
import { BSON } from 'mongodb';

export interface Citation {
  readonly title: string;
  readonly url: string;
  /** The section of the page the rule comes from. */
  readonly section: string;
}

const FEATURES: Omit<Citation, 'section'> = {
  title: 'Azure Cosmos DB for MongoDB (4.2/5.0/6.0/7.0 server version): Supported features and syntax',
  url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/feature-support-42 (same tables in feature-support-50, -60, -70)',
};
const INDEXING: Omit<Citation, 'section'> = {
  title: 'Manage indexing in Azure Cosmos DB for MongoDB',
  url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/indexing',
};
const LIMITS: Omit<Citation, 'section'> = {
  title: 'Azure Cosmos DB service quotas',
  url: 'https://learn.microsoft.com/azure/cosmos-db/concepts-limits',
};
const ERRORS: Omit<Citation, 'section'> = {
  title: "Troubleshoot common issues in Azure Cosmos DB's API for MongoDB",
  url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/error-codes-solutions',
};

export const RULES = {
  'sort-compound-index': {
    rule: 'a sort on several fields needs a compound index with exactly those paths in that order (or all reversed), else error 2 BadValue',
    cite: {
      ...INDEXING,
      section:
        'Compound indexes (MongoDB server version 3.6+); error-codes-solutions: 2 BadValue ("the order by query doesn\'t have a corresponding composite index")',
    },
  },
  'sort-single-index': {
    rule: 'a sort on one field needs an index on that field (_id is always indexed), else error 2 BadValue',
    cite: {
      ...INDEXING,
      section:
        'Indexing for MongoDB server version 3.6 and higher; Single field; error-codes-solutions: 2 BadValue ("The query requests a sort on a field that isn\'t indexed")',
    },
  },
  'find-and-modify-sort': {
    rule: 'findAndModify (findOneAndUpdate …) sorts on a single field only',
    cite: { ...FEATURES, section: 'Sort operations' },
  },
  'compound-index-array': {
    rule: 'no compound index may include a field that holds an array (anywhere on its path)',
    cite: { ...INDEXING, section: 'Compound indexes: "You can\'t create compound indexes on arrays"' },
  },
  'nested-compound-index': {
    rule: 'a compound or unique index over a nested path (a.b) needs the account capability EnableUniqueCompoundNestedDocs (refused with error 115 "Unique and compound indexes do not support nested paths" without it)',
    cite: {
      ...INDEXING,
      section:
        'Compound indexes: "Compound indexes on nested fields aren\'t supported by default"; Unique indexes: Limitations (same for unique); capabilities: https://learn.microsoft.com/azure/cosmos-db/mongodb/how-to-configure-capabilities',
    },
  },
  'unsupported-command': {
    rule: 'only the database commands Cosmos DB lists as supported',
    cite: { ...FEATURES, section: 'Database commands' },
  },
  'unsupported-operator': {
    rule: 'only the query, update and expression operators Cosmos DB lists as supported',
    cite: { ...FEATURES, section: 'Operators; Aggregation pipeline (expressions)' },
  },
  'unsupported-stage': {
    rule: 'only the aggregation stages supported on every server version 4.2–7.0 ($lookup without let/pipeline; $graphLookup is in 4.2 only), else error 40324 Unrecognized pipeline stage name',
    cite: { ...FEATURES, section: 'Aggregation stages; error-codes-solutions: 40324' },
  },
  'change-stream': {
    rule: "a change stream (the driver's watch()) asks for fullDocument 'updateLookup' and has a $match and a $project stage; it delivers inserts, updates and replacements only, never deletes",
    cite: {
      title: "Change streams in Azure Cosmos DB's API for MongoDB",
      url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/change-streams',
      section:
        'Current limitations: "the $match stage, $project stage, and fullDocument options are required"; "the delete operation or other events are not yet supported"',
    },
  },
  'unique-index-empty-collection': {
    rule: 'a unique index can only be created while the collection is empty; on an account with continuous backup (infra/ default) only together with the collection (ARM, or the CreateCollection custom command), which infra/ does and this checker does not model',
    cite: { ...INDEXING, section: 'Unique indexes: Limitations' },
  },
  'index-kind': {
    rule: 'no sparse, text, 2d, hashed or case-insensitive indexes; partial only for unique indexes',
    cite: { ...FEATURES, section: 'Indexes and index properties' },
  },
  'ttl-on-ts': {
    rule: 'a TTL index is an index on _ts (custom TTL paths need the EnableTtlOnCustomPath capability)',
    cite: { ...INDEXING, section: 'TTL indexes' },
  },
  'document-size': {
    rule: "a document (and so an insert, a replacement or an update) is under 2 MB; the capability that raises it to 16 MB isn't compatible with continuous backup (infra/'s default) and is not set",
    cite: {
      ...FEATURES,
      section:
        'Data types ("raises the size limit for your documents from 2 MB"; feature-support-42: "This feature isn\'t compatible with … continuous backup")',
    },
  },
  'retryable-writes': {
    rule: 'no retryable writes (they need the EnableMongoRetryableWrites capability)',
    cite: { ...FEATURES, section: 'Retryable writes' },
  },
  transactions: {
    rule: 'a multi-document transaction stays within one unsharded collection',
    cite: { ...FEATURES, section: 'Transactions' },
  },
  'request-size': {
    rule: 'a request is under 2 MB in all: a write with all the documents or statements it carries (insert, update, delete, findAndModify), a query with its filter; Cosmos DB refuses a larger one ("Request size is too large", 413), and the driver splits a bulk write only at the far larger message size the server announces',
    cite: {
      ...LIMITS,
      section:
        'Per-request limits: "Maximum request size … 2 MB"; API for MongoDB-specific limits: "Other service limits mentioned for the API for NoSQL also apply to the API for MongoDB"; in practice: Chronasorg/chronas#28 (mongorestore batches refused with "Request size is too large")',
    },
  },
  'write-batch-size': {
    rule: 'a write request (insert, update, delete) carries at most 1,000 documents or statements; the driver splits a bulk write only at the far larger batch size the server announces (100,000 from MongoDB)',
    cite: {
      title: 'Optimize write performance in Azure Cosmos DB for MongoDB',
      url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/optimize-write-performance',
      section:
        'Tune for the optimal batch size and thread count: "The API for MongoDB accepts writes in batches of up to 1,000 documents for each process/thread"; "client functions such as `insertMany()` should be limited to roughly 1,000 documents"',
    },
  },
  'compound-index-fields': {
    rule: 'a compound index has at most 8 fields (else error 67 CannotCreateIndex)',
    cite: {
      ...ERRORS,
      section: '67 CannotCreateIndex: "Up to eight fields can be included in a compound index"',
    },
  },
  'single-field-index-count': {
    rule: 'a collection has at most 500 single-field indexes (else error 67 CannotCreateIndex)',
    cite: {
      ...INDEXING,
      section: 'Single field: "You can create up to 500 single field indexes per collection"',
    },
  },
  'index-path-depth': {
    rule: 'an index path nests at most 6 levels (a.b.c.d.e.f)',
    cite: {
      ...LIMITS,
      section:
        'API for MongoDB-specific limits: "Maximum level of nesting for embedded objects / arrays on index definitions: 6"',
    },
  },
  'wildcard-index': {
    rule: 'a wildcard index ($**) is a single-field (or geospatial) index: not compound, unique or TTL, and without wildcardProjection',
    cite: { ...INDEXING, section: 'Wildcard indexes: Limitations' },
  },
  'document-depth': {
    rule: 'a document nests embedded objects and arrays at most 128 levels deep',
    cite: {
      ...LIMITS,
      section: 'Per-item limits: "Maximum level of nesting for embedded objects / arrays: 128"',
    },
  },
  'expression-array-literal': {
    rule: 'no comparison expression ($eq, $in, $cmp … inside $expr, an aggregation stage or an update pipeline) with an array literal operand; the query operators ({a: {$in: [..]}}) are not concerned',
    cite: {
      ...FEATURES,
      section:
        'Comparison expressions: "doesn\'t support comparison expressions that have an array literal in the query"',
    },
  },
  collation: {
    rule: 'no collation on a command or an index: Cosmos DB compares strings binary only (case-insensitive collations of indexes are reported as index-kind)',
    cite: {
      ...FEATURES,
      section:
        'Index properties: "Case Insensitive: No"; in practice: e2nIEE/pandahub#25 and DFEAGILEDEVOPS/MTC#348 (collation removed to run on Cosmos DB)',
    },
  },
  'regex-index': {
    rule: 'a left-anchored $regex (^prefix) is served by the index only without the i and m options and without `$` or `|`; a pattern that needs them goes with the plain left-anchored prefix on the same field (two $regex conditions), else Cosmos DB scans the whole collection. An unanchored $regex scans by nature and is not concerned',
    cite: {
      ...FEATURES,
      section:
        'Evaluation query operators: "left-anchored expressions allow index search. However, using the `i` modifier (case-insensitivity) and the `m` modifier (multiline) causes the collection to scan in all expressions"; "When there\'s a need to include `$` or `|`, it\'s best to create two (or more) `$regex` queries" (find({x: {$regex: /^abc/}, x: {$regex: /^abc$/}}))',
    },
  },
  // Documented behaviour that no single command shows: each says where it is covered instead.
  'idle-connections': {
    rule: "the client closes a pooled connection idle for more than 3 minutes: Azure's load balancer drops idle TCP connections after 4 (Cosmos DB itself after 30), and a request sent on a dropped one fails with a socket error",
    cite: {
      ...LIMITS,
      section:
        'API for MongoDB-specific limits: "Idle connection timeout for server side connection closure: 30 minutes", footnote 1 ("set the idle connection timeout in the driver settings to 2-3 minutes"); error-codes-solutions: MongoDB client networking issues ("configure maxIdleTimeMS=120000")',
    },
    checked:
      'not from a command: test/unit/cosmos-rules.test.ts checks CLIENT_OPTIONS.maxIdleTimeMS of shared/data/client.ts',
  },
  'app-name': {
    rule: "the client keeps the connection string's appName (Cosmos DB's is @<account>@) and sets none of its own: a driver that sends an appName must send it as the portal's connection string has it",
    cite: {
      title: 'Connect a MongoDB application to Azure Cosmos DB',
      url: 'https://learn.microsoft.com/azure/cosmos-db/mongodb/connect-account',
      section:
        'Driver Requirements: "client drivers must support the Service Name Identification (SNI) TLS extension and/or the appName connection string option. If the `appName` parameter is provided, it must be included as found in the connection string value in the Azure portal"; error-codes-solutions: MongoDB wire version issues ("Append `appName=@accountName@`")',
    },
    checked:
      "not from a command (the handshake is not monitored): test/unit/cosmos-rules.test.ts checks that CLIENT_OPTIONS of shared/data/client.ts leave the connection string's appName as it is",
  },
  throttling: {
    rule: 'a request over the provisioned (or serverless) RU/s is refused with 16500 TooManyRequests, in a bulk write per write while the others are applied; the app waits the advised RetryAfterMs and sends only the throttled writes again',
    cite: {
      ...ERRORS,
      section:
        '16500 TooManyRequests; and https://learn.microsoft.com/azure/cosmos-db/mongodb/prevent-rate-limiting-errors (Server Side Retry)',
    },
    checked:
      "not from a command: test/integration/cosmos-throttling.test.ts drives shared/data/gateway.ts (execute, runBulk) with Cosmos DB's answers",
  },
  'time-limit': {
    rule: 'a request runs at most 60 s, else 50 ExceededTimeLimit (also what Server Side Retry answers when it gives up); a write that got it may have been applied, so it is never sent again',
    cite: {
      ...ERRORS,
      section:
        '50 ExceededTimeLimit ("Retrying a write operation that has received this error may result in a duplicate write"); concepts-limits: "Maximum execution time for MongoDB operations … 60 seconds"',
    },
    checked:
      'not from a command (a matter of time): test/integration/cosmos-throttling.test.ts checks shared/data/client.ts (isTimeLimit, translateError)',
  },
  'transaction-time': {
    rule: 'a multi-document transaction completes within a fixed 5 s ("Transaction isn\'t active" otherwise)',
    cite: { ...FEATURES, section: 'Transactions: "The timeout for transactions is a fixed 5 seconds"' },
    checked:
      'not from a command (a matter of time); the app runs no transactions, and the suite-wide check (test/cosmos/setup.ts) reports one that spans collections (the transactions rule)',
  },
  'index-build': {
    rule: 'a new index serves queries only once its background build ends, and queries that filter on a just-dropped index may miss documents until the change is done',
    cite: { ...INDEXING, section: 'Background index updates' },
    checked:
      'not from a command (a matter of time): infra/modules/cosmos.bicep creates every index with its collection, before any document (test/unit/infra-drift.test.ts), and the app drops none',
  },
} as const satisfies Record<string, { rule: string; cite: Citation; checked?: string }>;

export type RuleId = keyof typeof RULES;

export const MAX_DOCUMENT_BYTES = 2 * 1024 * 1024;
/** Cosmos DB's per-request limit (concepts-limits, Per-request limits). */
export const MAX_REQUEST_BYTES = 2 * 1024 * 1024;
/** The most documents or statements Cosmos DB takes in one write (optimize-write-performance). */
export const MAX_WRITE_BATCH = 1_000;
export const MAX_COMPOUND_INDEX_FIELDS = 8;
export const MAX_SINGLE_FIELD_INDEXES = 500;
export const MAX_INDEX_PATH_DEPTH = 6;
export const MAX_DOCUMENT_DEPTH = 128;
/** The longest a pooled connection may sit idle (concepts-limits: 2-3 minutes; the load balancer cuts at 4). */
export const MAX_IDLE_CONNECTION_MS = 3 * 60_000;
/** The account capability that allows compound and unique indexes over nested (non-array) paths. */
export const NESTED_INDEX_CAPABILITY = 'EnableUniqueCompoundNestedDocs';

// Commands listed as supported on every version 4.2–7.0, plus what the driver itself sends around
// them (ping, sessions housekeeping); administrative commands the app never needs are left out.
const SUPPORTED_COMMANDS = new Set([
  'delete',
  'find',
  'findAndModify',
  'getMore',
  'insert',
  'update',
  'abortTransaction',
  'commitTransaction',
  'create',
  'createIndexes',
  'currentOp',
  'drop',
  'dropDatabase',
  'dropIndexes',
  'killCursors',
  'listCollections',
  'listDatabases',
  'listIndexes',
  'reIndex',
  'buildInfo',
  'collStats',
  'dbStats',
  'explain',
  'hostInfo',
  'whatsmyuri',
  'aggregate',
  'count',
  'distinct',
  // sent by the driver: health ping, handshake, and endSessions on close. Cosmos DB does not
  // support the server-side session commands (feature-support-42: "Sessions"); endSessions is
  // allowed here only because the driver sends it as the client closes and nothing waits on its
  // answer: a refusal changes nothing.
  'ping',
  'hello',
  'isMaster',
  'ismaster',
  'endSessions',
]);

const SUPPORTED_STAGES = new Set([
  '$addFields',
  '$changeStream',
  '$count',
  '$facet',
  '$geoNear',
  '$group',
  '$limit',
  '$lookup',
  '$match',
  '$merge',
  '$out',
  '$project',
  '$redact',
  '$replaceRoot',
  '$replaceWith',
  '$sample',
  '$set',
  '$skip',
  '$sort',
  '$sortByCount',
  '$unset',
  '$unwind',
]);

const QUERY_OPERATORS = [
  '$eq',
  '$gt',
  '$gte',
  '$lt',
  '$lte',
  '$ne',
  '$in',
  '$nin',
  '$or',
  '$and',
  '$not',
  '$nor',
  '$exists',
  '$type',
  '$expr',
  '$mod',
  '$regex',
  '$options',
  '$all',
  '$elemMatch',
  '$size',
  '$comment',
  '$geoWithin',
  '$geoIntersects',
  '$near',
  '$nearSphere',
  '$geometry',
  '$minDistance',
  '$maxDistance',
];
const UPDATE_OPERATORS = [
  '$inc',
  '$mul',
  '$rename',
  '$setOnInsert',
  '$set',
  '$unset',
  '$min',
  '$max',
  '$currentDate',
  '$addToSet',
  '$pop',
  '$pullAll',
  '$pull',
  '$push',
  '$pushAll',
  '$each',
  '$slice',
  '$sort',
  '$position',
  '$bit',
];
const EXPRESSION_OPERATORS = [
  '$and', '$not', '$or',
  '$convert', '$toBool', '$toDate', '$toDecimal', '$toDouble', '$toInt', '$toLong', '$toObjectId', '$toString',
  '$setEquals', '$setIntersection', '$setUnion', '$setDifference', '$setIsSubset', '$anyElementTrue', '$allElementsTrue',
  '$cmp', '$eq', '$gt', '$gte', '$lt', '$lte', '$ne', '$in', '$nin',
  '$abs', '$add', '$ceil', '$divide', '$exp', '$floor', '$ln', '$log', '$log10', '$mod', '$multiply', '$pow', '$round', '$sqrt', '$subtract', '$trunc',
  '$concat', '$indexOfBytes', '$indexOfCP', '$ltrim', '$rtrim', '$trim', '$split', '$strLenBytes', '$strLenCP', '$strcasecmp', '$substr', '$substrBytes', '$substrCP', '$toLower', '$toUpper',
  '$regexFind', '$regexFindAll', '$regexMatch',
  '$arrayElemAt', '$arrayToObject', '$concatArrays', '$filter', '$indexOfArray', '$isArray', '$objectToArray', '$range', '$reverseArray', '$reduce', '$size', '$slice', '$zip',
  '$map', '$let', '$literal',
  '$dayOfYear', '$dayOfMonth', '$dayOfWeek', '$year', '$month', '$week', '$hour', '$minute', '$second', '$millisecond', '$dateToString', '$isoDayOfWeek', '$isoWeek', '$dateFromParts', '$dateToParts', '$dateFromString', '$isoWeekYear',
  '$cond', '$ifNull', '$switch', '$type',
  '$sum', '$avg', '$first', '$last', '$max', '$min', '$push', '$addToSet', '$stdDevPop', '$stdDevSamp',
  '$mergeObjects',
  '$acos', '$acosh', '$asin', '$asinh', '$atan', '$atan2', '$atanh', '$cos', '$cosh', '$degreesToRadians', '$radiansToDegrees', '$sin', '$sinh', '$tan', '$tanh',
]; // prettier-ignore
/** Comparison expressions: none may take an array literal (feature support, Comparison expressions). */
const COMPARISON_EXPRESSIONS = new Set(['$cmp', '$eq', '$gt', '$gte', '$lt', '$lte', '$ne', '$in', '$nin']);
const SUPPORTED_OPERATORS = new Set([...QUERY_OPERATORS, ...UPDATE_OPERATORS, ...EXPRESSION_OPERATORS]);

/** One command as the checker sees it (what command monitoring reports), with who sent it. */
export interface CheckedCommand {
  readonly commandName: string;
  readonly databaseName: string;
  readonly command: Readonly<Record<string, unknown>>;
  /** `app` (shared/, functions/, scripts/) or `test` (assertions and fixtures of the tests). */
  readonly origin?: 'app' | 'test' | 'unknown';
}

export interface IndexSpec {
  readonly collection: string;
  readonly name: string;
  readonly keys: Readonly<Record<string, unknown>>;
  readonly options?: Readonly<Record<string, unknown>>;
}

export interface Violation {
  readonly rule: RuleId;
  readonly collection: string;
  /** What broke the rule, stable across runs (the allow-list matches on rule, collection, subject). */
  readonly subject: string;
  /** The offending command, shortened (absent for statically checked definitions). */
  readonly command?: string;
  readonly origin?: CheckedCommand['origin'];
}

/** The rule and its citation, for a failure message. */
export function describe(violation: Violation): string {
  const { rule, cite } = RULES[violation.rule];
  return [
    `[${violation.rule}] ${violation.collection}: ${violation.subject}`,
    `  rule: ${rule}`,
    `  source: ${cite.title}, ${cite.url} — ${cite.section}`,
    ...(violation.command ? [`  command (${violation.origin ?? 'unknown'}): ${violation.command}`] : []),
  ].join('\n');
}

/** A command as one short line: long strings and arrays cut, session fields left out. */
export function shorten(command: Readonly<Record<string, unknown>>, max = 400): string {
  const omitted = new Set(['lsid', '$clusterTime', '$db', 'txnNumber', 'autocommit', '$readPreference']);
  const text = JSON.stringify(command, (key, value: unknown) => {
    if (omitted.has(key)) return undefined;
    if (value instanceof Map) return Object.fromEntries(value);
    if (value instanceof RegExp) return String(value);
    if (typeof value === 'string' && value.length > 40) return `${value.slice(0, 37)}…`;
    if (Array.isArray(value) && value.length > 3) return [...value.slice(0, 3), `…${value.length - 3} more`];
    return value;
  });
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

const keysText = (keys: Readonly<Record<string, unknown>>): string =>
  `{${Object.entries(keys)
    .map(([k, v]) => `${k}:${String(v)}`)
    .join(',')}}`;

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' &&
  value !== null &&
  !Array.isArray(value) &&
  !(value instanceof Date) &&
  Object.getPrototypeOf(value) === Object.prototype;

// ---------------------------------------------------------------------------------------------
// Index definitions

/**
 * Violations of the index rules by one definition; `arrays` are the paths known to hold arrays,
 * `capabilities` those of the account (infra/modules/cosmos.bicep).
 */
export function checkIndex(
  index: IndexSpec,
  arrays: ReadonlySet<string>,
  capabilities: ReadonlySet<string> = new Set(),
): Violation[] {
  const out: Violation[] = [];
  const subject = `index ${index.name} ${keysText(index.keys)}`;
  const add = (rule: RuleId, detail = ''): void => {
    out.push({ rule, collection: index.collection, subject: `${subject}${detail}` });
  };
  const paths = Object.keys(index.keys);
  const options = index.options ?? {};
  if (paths.length > 1) {
    const arrayPaths = paths.filter((p) => holdsArray(p, arrays));
    if (arrayPaths.length) add('compound-index-array', ` (array: ${arrayPaths.join(', ')})`);
  }
  if (
    (paths.length > 1 || options['unique']) &&
    paths.some((p) => p.includes('.')) &&
    !capabilities.has(NESTED_INDEX_CAPABILITY)
  )
    add('nested-compound-index', ` (nested: ${paths.filter((p) => p.includes('.')).join(', ')})`);
  const kinds = Object.values(index.keys).filter((v) => v !== 1 && v !== -1);
  if (kinds.some((k) => k !== '2dsphere')) add('index-kind', ` (kind ${kinds.map(String).join(', ')})`);
  if (options['sparse']) add('index-kind', ' (sparse)');
  if (options['partialFilterExpression'] && !options['unique']) add('index-kind', ' (partial, not unique)');
  const collation = options['collation'];
  if (isRecord(collation) && typeof collation['strength'] === 'number' && collation['strength'] < 3)
    add('index-kind', ' (case-insensitive collation)');
  else if (collation !== undefined) add('collation', ' (collation)');
  const wildcard = paths.some((p) => p === '$**' || p.endsWith('.$**'));
  if (options['expireAfterSeconds'] !== undefined && !wildcard && !(paths.length === 1 && paths[0] === '_ts'))
    add('ttl-on-ts');
  if (paths.length > MAX_COMPOUND_INDEX_FIELDS) add('compound-index-fields', ` (${paths.length} fields)`);
  const deep = paths.filter(
    (p) => p.split('.').filter((part) => part !== '$**').length > MAX_INDEX_PATH_DEPTH,
  );
  if (deep.length) add('index-path-depth', ` (${deep.join(', ')})`);
  if (wildcard) {
    const why = [
      paths.length > 1 ? 'compound' : '',
      options['unique'] ? 'unique' : '',
      options['expireAfterSeconds'] !== undefined ? 'TTL' : '',
      options['wildcardProjection'] !== undefined ? 'wildcardProjection' : '',
    ].filter(Boolean);
    if (why.length) add('wildcard-index', ` (${why.join(', ')})`);
  }
  return out;
}

/** Whether a dotted path, or any prefix of it, is a known array path. */
function holdsArray(path: string, arrays: ReadonlySet<string>): boolean {
  const parts = path.split('.');
  for (let i = 1; i <= parts.length; i++) if (arrays.has(parts.slice(0, i).join('.'))) return true;
  return false;
}

/** Adds to `into` every path of a document (or update) whose value is an array. */
export function collectArrayPaths(doc: unknown, into: Set<string>, prefix = ''): void {
  if (!isRecord(doc)) return;
  for (const [key, value] of Object.entries(doc)) {
    if (key.startsWith('$')) {
      // $set: {a: [..]}, $push/$addToSet: {a: ..} (the target is an array), $setOnInsert …
      if (key === '$push' || key === '$addToSet' || key === '$pushAll') {
        if (isRecord(value)) for (const field of Object.keys(value)) into.add(stripPositional(field));
      } else if (key === '$set' || key === '$setOnInsert') {
        collectArrayPaths(value, into, prefix);
      }
      continue;
    }
    const path = stripPositional(prefix ? `${prefix}.${key}` : key);
    if (Array.isArray(value)) {
      into.add(path);
      for (const item of value) collectArrayPaths(item, into, path);
    } else if (isRecord(value)) {
      collectArrayPaths(value, into, path);
    }
  }
}

const stripPositional = (path: string): string =>
  path
    .split('.')
    .filter((p) => !/^(\d+|\$|\$\[.*\])$/.test(p))
    .join('.');

// ---------------------------------------------------------------------------------------------
// Commands

/**
 * The running state of a checked command stream: indexes per collection, collections with
 * documents, paths seen holding arrays, open transactions.
 */
export class CommandChecker {
  /** Array paths by collection, from the known list and from every written document. */
  private readonly arrays = new Map<string, Set<string>>();
  private readonly indexes = new Map<string, IndexSpec[]>();
  private readonly staticIndexes = new Map<string, IndexSpec[]>();
  private readonly populated = new Set<string>();
  private readonly transactions = new Map<string, Set<string>>();
  private readonly found: Violation[] = [];

  /**
   * `knownIndexes`: the app's index definitions, valid in every database; `knownArrays`: paths
   * as `collection.path` (`users.searchKeys`) that hold arrays even before a write shows it;
   * `capabilities`: the account's capabilities (infra/modules/cosmos.bicep).
   */
  constructor(
    knownIndexes: readonly IndexSpec[] = [],
    knownArrays: Iterable<string> = [],
    private readonly capabilities: ReadonlySet<string> = new Set(),
  ) {
    for (const index of knownIndexes) {
      const list = this.staticIndexes.get(index.collection) ?? [];
      list.push(index);
      this.staticIndexes.set(index.collection, list);
    }
    for (const known of knownArrays) {
      const dot = known.indexOf('.');
      this.arraysOf(known.slice(0, dot)).add(known.slice(dot + 1));
    }
  }

  get violations(): readonly Violation[] {
    return this.found;
  }

  check(cmd: CheckedCommand): void {
    const name = cmd.commandName;
    const body = cmd.command;
    const collection = typeof body[name] === 'string' ? body[name] : '';
    const key = `${cmd.databaseName}.${collection}`;
    const report = (rule: RuleId, subject: string): void => {
      this.found.push({
        rule,
        collection: collection || cmd.databaseName,
        subject,
        command: shorten(body),
        origin: cmd.origin,
      });
    };

    if (!SUPPORTED_COMMANDS.has(name)) report('unsupported-command', `command ${name}`);
    this.checkSession(cmd, collection, report);
    const before = this.found.length;
    // A collation on the command, or on one of its statements (update, delete).
    const statements = [...asArray(body['updates']), ...asArray(body['deletes'])].filter(isRecord);
    if (name !== 'createIndexes' && [body, ...statements].some((b) => b['collation'] !== undefined))
      report('collation', `${name} with a collation`);

    switch (name) {
      case 'find':
        this.checkOperators(body['filter'], report);
        checkRegexes(body['filter'], report);
        this.checkOperators(body['projection'], report);
        this.checkSort(cmd.databaseName, collection, body['sort'], report);
        break;
      case 'count':
      case 'distinct':
        this.checkOperators(body['query'], report);
        checkRegexes(body['query'], report);
        break;
      case 'delete':
        for (const d of asArray(body['deletes'])) {
          if (!isRecord(d)) continue;
          this.checkOperators(d['q'], report);
          checkRegexes(d['q'], report);
        }
        break;
      case 'insert':
        for (const doc of asArray(body['documents'])) {
          this.checkSize(doc, 'inserted document', report);
          this.checkDepth(doc, 'inserted document', report);
          collectArrayPaths(doc, this.arraysOf(collection));
        }
        if (asArray(body['documents']).length) this.populated.add(key);
        break;
      case 'update':
        for (const u of asArray(body['updates'])) {
          if (!isRecord(u)) continue;
          this.checkOperators(u['q'], report);
          checkRegexes(u['q'], report);
          this.checkOperators(u['arrayFilters'], report);
          this.checkUpdate(u['u'], collection, report);
          if (u['upsert']) this.populated.add(key);
        }
        break;
      case 'findAndModify': {
        this.checkOperators(body['query'], report);
        checkRegexes(body['query'], report);
        this.checkOperators(body['fields'], report);
        this.checkOperators(body['arrayFilters'], report);
        const sort = body['sort'] instanceof Map ? Object.fromEntries(body['sort']) : body['sort'];
        if (isRecord(sort) && Object.keys(sort).length > 1)
          report('find-and-modify-sort', `findAndModify sort ${keysText(sort)}`);
        this.checkSort(cmd.databaseName, collection, sort, report);
        if (body['update'] !== undefined) this.checkUpdate(body['update'], collection, report);
        if (body['upsert']) this.populated.add(key);
        break;
      }
      case 'aggregate':
        this.checkPipeline(cmd.databaseName, collection, body['pipeline'], report);
        this.checkChangeStream(body['pipeline'], report);
        break;
      case 'createIndexes':
        for (const spec of asArray(body['indexes'])) {
          if (!isRecord(spec)) continue;
          const { key: keySpec, name: indexName, ...options } = spec;
          const keys =
            keySpec instanceof Map ? (Object.fromEntries(keySpec) as Record<string, unknown>) : keySpec;
          if (!isRecord(keys)) continue;
          const index: IndexSpec = { collection, name: String(indexName), keys, options };
          for (const v of checkIndex(index, this.arraysOf(collection), this.capabilities))
            report(v.rule, v.subject);
          if (options['unique'] && this.populated.has(key))
            report(
              'unique-index-empty-collection',
              `unique index ${index.name} ${keysText(keys)} on a collection with documents`,
            );
          const list = this.indexes.get(key) ?? [];
          if (!list.some((i) => i.name === index.name)) list.push(index);
          this.indexes.set(key, list);
          const single = list.filter((i) => Object.keys(i.keys).length === 1).length;
          if (Object.keys(keys).length === 1 && single > MAX_SINGLE_FIELD_INDEXES)
            report('single-field-index-count', `single-field index number ${single} (${index.name})`);
        }
        break;
      case 'drop':
        this.indexes.delete(key);
        this.populated.delete(key);
        break;
      case 'dropDatabase':
        for (const k of [...this.indexes.keys()])
          if (k.startsWith(`${cmd.databaseName}.`)) this.indexes.delete(k);
        for (const k of [...this.populated])
          if (k.startsWith(`${cmd.databaseName}.`)) this.populated.delete(k);
        break;
    }

    if (name === 'insert' || name === 'update' || name === 'delete') {
      const statements = asArray(body['documents'] ?? body['updates'] ?? body['deletes']).length;
      if (statements > MAX_WRITE_BATCH)
        report('write-batch-size', `${name} of more than ${MAX_WRITE_BATCH} statements`);
    }

    // The whole request, when no document of it was over the limit already.
    if (!this.found.slice(before).some((v) => v.rule === 'document-size')) {
      const bytes = requestBytes(body);
      if (bytes >= MAX_REQUEST_BYTES) {
        const statements = asArray(body['documents'] ?? body['updates'] ?? body['deletes']);
        report(
          'request-size',
          `${name} request${statements.length ? ` of ${statements.length} statement(s)` : ''}`,
        );
      }
    }
  }

  /** Compound indexes (static or created) over paths that turned out to hold arrays. */
  checkIndexesAgainstArrays(): void {
    // The app's definitions count for the collections this run wrote to (test/unit/cosmos-rules.test.ts
    // checks them all against the known array fields).
    const written = new Set([...this.populated].map((k) => k.slice(k.indexOf('.') + 1)));
    const all = [
      ...[...this.staticIndexes.values()].flat().filter((i) => written.has(i.collection)),
      ...[...this.indexes.values()].flat(),
    ];
    const seen = new Set<string>();
    for (const index of all) {
      for (const v of checkIndex(index, this.arraysOf(index.collection))) {
        if (v.rule !== 'compound-index-array') continue;
        const id = `${v.collection} ${v.subject}`;
        if (
          seen.has(id) ||
          this.found.some((f) => f.rule === v.rule && `${f.collection} ${f.subject}` === id)
        )
          continue;
        seen.add(id);
        this.found.push(v);
      }
    }
  }

  /** The paths of a collection's documents seen holding arrays (or known to). */
  arraysOf(collection: string): Set<string> {
    let paths = this.arrays.get(collection);
    if (!paths) {
      paths = new Set();
      this.arrays.set(collection, paths);
    }
    return paths;
  }

  private checkSession(
    cmd: CheckedCommand,
    collection: string,
    report: (rule: RuleId, subject: string) => void,
  ): void {
    const body = cmd.command;
    if (body['retryWrites'] === true) report('retryable-writes', `${cmd.commandName} with retryWrites`);
    if (body['txnNumber'] === undefined) return;
    const session = JSON.stringify(body['lsid'] ?? null);
    if (body['autocommit'] === undefined) {
      // A txnNumber outside a transaction is what the driver adds to retryable writes.
      report('retryable-writes', `${cmd.commandName} retryable (txnNumber without a transaction)`);
      return;
    }
    const txn = `${session}#${String(body['txnNumber'])}`;
    if (cmd.commandName === 'commitTransaction' || cmd.commandName === 'abortTransaction') {
      this.transactions.delete(txn);
      return;
    }
    const touched = this.transactions.get(txn) ?? new Set<string>();
    touched.add(`${cmd.databaseName}.${collection}`);
    this.transactions.set(txn, touched);
    if (touched.size > 1) report('transactions', `transaction over ${[...touched].sort().join(', ')}`);
  }

  private checkSort(
    db: string,
    collection: string,
    sortSpec: unknown,
    report: (rule: RuleId, subject: string) => void,
  ): void {
    // The driver sends a sort as a Map (key order is the point).
    const sort =
      sortSpec instanceof Map ? (Object.fromEntries(sortSpec) as Record<string, unknown>) : sortSpec;
    if (!isRecord(sort)) return;
    const paths = Object.keys(sort);
    if (paths.length === 0) return;
    const indexes = [
      ...(this.staticIndexes.get(collection) ?? []),
      ...(this.indexes.get(`${db}.${collection}`) ?? []),
    ];
    if (paths.length === 1) {
      const path = paths[0] as string;
      if (path === '_id' || path === '_ts') return;
      if (indexes.some((i) => Object.keys(i.keys).length === 1 && Object.keys(i.keys)[0] === path)) return;
      report('sort-single-index', `sort ${keysText(sort)} without an index on ${path}`);
      return;
    }
    const directions = paths.map((p) => Number(sort[p]));
    const matches = indexes.some((index) => {
      const keys = Object.entries(index.keys);
      if (keys.length !== paths.length) return false;
      if (!keys.every(([k], i) => k === paths[i])) return false;
      const same = keys.every(([, v], i) => Number(v) === directions[i]);
      const reversed = keys.every(([, v], i) => Number(v) === -(directions[i] as number));
      return same || reversed;
    });
    if (!matches)
      report('sort-compound-index', `sort ${keysText(sort)} without a compound index of exactly these paths`);
  }

  private checkPipeline(
    db: string,
    collection: string,
    pipeline: unknown,
    report: (rule: RuleId, subject: string) => void,
  ): void {
    // A $sort served by an index is one that sees the collection's documents: only $match before it.
    let fromCollection = true;
    for (const stage of asArray(pipeline)) {
      if (!isRecord(stage)) continue;
      const [name] = Object.keys(stage);
      if (!name) continue;
      const value = stage[name];
      if (!SUPPORTED_STAGES.has(name)) report('unsupported-stage', `stage ${name}`);
      if (name === '$lookup' && isRecord(value) && ('pipeline' in value || 'let' in value))
        report('unsupported-stage', '$lookup with let/pipeline');
      if (name === '$match') {
        this.checkOperators(value, report);
        checkRegexes(value, report);
      } else if (name === '$sort' && fromCollection) this.checkSort(db, collection, value, report);
      else this.checkOperators(value, report, true);
      if (name !== '$match' && name !== '$facet') this.checkExpressions(value, report);
      if (name === '$facet' && isRecord(value))
        for (const sub of Object.values(value)) this.checkPipeline(db, collection, sub, report);
      if (name !== '$match' && name !== '$sort') fromCollection = false;
    }
  }

  /** A pipeline opening with $changeStream: what Cosmos DB requires of it. */
  private checkChangeStream(pipeline: unknown, report: (rule: RuleId, subject: string) => void): void {
    const stages = asArray(pipeline).filter(isRecord);
    const options = stages[0]?.['$changeStream'];
    if (options === undefined) return;
    const names = stages.slice(1).flatMap((stage) => Object.keys(stage).slice(0, 1));
    const missing = [
      isRecord(options) && options['fullDocument'] === 'updateLookup' ? '' : "fullDocument 'updateLookup'",
      names.includes('$match') ? '' : 'a $match stage',
      names.includes('$project') ? '' : 'a $project stage',
    ].filter(Boolean);
    if (missing.length) report('change-stream', `change stream without ${missing.join(', ')}`);
  }

  private checkUpdate(
    update: unknown,
    collection: string,
    report: (rule: RuleId, subject: string) => void,
  ): void {
    if (Array.isArray(update)) {
      // An update pipeline: its stages are aggregation stages.
      for (const stage of update) this.checkOperators(stage, report, true);
      this.checkExpressions(update, report);
      this.checkSize(update, 'update pipeline', report);
      return;
    }
    if (!isRecord(update)) return;
    const isReplacement = !Object.keys(update).some((k) => k.startsWith('$'));
    this.checkSize(update, isReplacement ? 'replacement document' : 'update', report);
    if (isReplacement) this.checkDepth(update, 'replacement document', report);
    else {
      this.checkOperators(update, report);
      // $set: {'a.b': {...}} nests its value as deep as its path.
      for (const op of ['$set', '$setOnInsert', '$push', '$addToSet']) {
        const fields = update[op];
        if (!isRecord(fields)) continue;
        for (const [path, value] of Object.entries(fields))
          this.checkDepth(value, `${op} ${path}`, report, path.split('.').length);
      }
    }
    collectArrayPaths(update, this.arraysOf(collection));
  }

  /** Embedded objects and arrays nest at most MAX_DOCUMENT_DEPTH levels. */
  private checkDepth(
    doc: unknown,
    what: string,
    report: (rule: RuleId, subject: string) => void,
    outer = 0,
  ): void {
    // A value set at a.b (outer 2) sits two levels down: {a: {b: value}}.
    const depth = outer + depthOf(doc);
    if (depth > MAX_DOCUMENT_DEPTH) report('document-depth', `${what} nested ${depth} levels deep`);
  }

  /**
   * Comparison expressions with an array literal operand, in an expression context (a stage other
   * than $match, an update pipeline) or under $expr in a filter.
   */
  private checkExpressions(value: unknown, report: (rule: RuleId, subject: string) => void): void {
    const found = new Set<string>();
    eachKey(value, (key, child) => {
      if (key === '$literal') return false;
      if (COMPARISON_EXPRESSIONS.has(key) && Array.isArray(child) && child.some((a) => Array.isArray(a)))
        found.add(key);
      return true;
    });
    if (found.size)
      report('expression-array-literal', `expression ${[...found].join(', ')} with an array literal`);
  }

  private checkSize(doc: unknown, what: string, report: (rule: RuleId, subject: string) => void): void {
    if (!isRecord(doc) && !Array.isArray(doc)) return;
    const bytes = BSON.calculateObjectSize(Array.isArray(doc) ? { pipeline: doc } : doc);
    if (bytes >= MAX_DOCUMENT_BYTES) report('document-size', `${what} of ${bytes} bytes`);
  }

  /** Every `$name` key in a filter, update or expression must be a supported operator. */
  private checkOperators(
    value: unknown,
    report: (rule: RuleId, subject: string) => void,
    stages = false,
  ): void {
    const unsupported = new Set<string>();
    eachKey(value, (key) => {
      if (key.startsWith('$') && !SUPPORTED_OPERATORS.has(key) && !(stages && SUPPORTED_STAGES.has(key)))
        unsupported.add(key);
      return true;
    });
    if (unsupported.size) report('unsupported-operator', `operator ${[...unsupported].join(', ')}`);
    if (!stages) for (const expr of exprsIn(value)) this.checkExpressions(expr, report);
  }
}

/** One regular-expression condition of a filter: the field, the pattern and its options. */
interface RegexCondition {
  readonly path: string;
  readonly pattern: string;
  readonly options: string;
}

/** A regular expression as the driver sends it: a RegExp, a BSONRegExp, or a string. */
function regexParts(value: unknown): { pattern: string; options: string } | null {
  if (value instanceof RegExp) return { pattern: value.source, options: value.flags };
  if (typeof value === 'string') return { pattern: value, options: '' };
  if (isBsonRegExp(value)) return { pattern: value.pattern, options: value.options };
  return null;
}

/** The regex conditions of a filter: `{f: /x/}` and `{f: {$regex, $options}}`, through $and/$or/$nor. */
function regexConditions(filter: unknown, into: RegexCondition[] = []): RegexCondition[] {
  if (!isRecord(filter)) return into;
  for (const [key, value] of Object.entries(filter)) {
    if (key === '$and' || key === '$or' || key === '$nor') {
      for (const clause of asArray(value)) regexConditions(clause, into);
      continue;
    }
    if (key.startsWith('$')) continue;
    if (value instanceof RegExp || isBsonRegExp(value)) {
      const parts = regexParts(value);
      if (parts) into.push({ path: key, ...parts });
    } else if (isRecord(value) && value['$regex'] !== undefined) {
      const parts = regexParts(value['$regex']);
      if (!parts) continue;
      const extra = typeof value['$options'] === 'string' ? value['$options'] : '';
      into.push({ path: key, pattern: parts.pattern, options: parts.options + extra });
    }
  }
  return into;
}

const isBsonRegExp = (value: unknown): value is BSON.BSONRegExp =>
  typeof value === 'object' &&
  value !== null &&
  (value as { _bsontype?: unknown })._bsontype === 'BSONRegExp';

/** Whether a pattern holds `$` or `|` as syntax (not escaped, not inside a character class). */
function hasAlternationOrEnd(pattern: string): boolean {
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '\\') {
      i++;
      continue;
    }
    if (inClass) {
      if (c === ']') inClass = false;
    } else if (c === '[') inClass = true;
    else if (c === '$' || c === '|') return true;
  }
  return false;
}

/**
 * Left-anchored regex conditions that lose Cosmos DB's index search (i or m, `$` or `|`), unless
 * the same filter also narrows that field with a plain left-anchored regex (the documented split;
 * anywhere in the filter, so a plain prefix in another `$or` branch is taken as serving it too).
 */
function checkRegexes(filter: unknown, report: (rule: RuleId, subject: string) => void): void {
  const anchored = regexConditions(filter).filter((c) => c.pattern.startsWith('^'));
  const plain = (c: RegexCondition): boolean => !/[im]/.test(c.options) && !hasAlternationOrEnd(c.pattern);
  const served = new Set(anchored.filter(plain).map((c) => c.path));
  for (const c of anchored) {
    if (plain(c) || served.has(c.path)) continue;
    const why = /[im]/.test(c.options) ? `options ${c.options}` : '`$` or `|`';
    report('regex-index', `$regex on ${c.path} with ${why} and no plain left-anchored prefix`);
  }
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** A command's size in BSON, as sent (its session fields are part of the request too). */
function requestBytes(body: Readonly<Record<string, unknown>>): number {
  try {
    return BSON.calculateObjectSize(body);
  } catch {
    return 0;
  }
}

/** How deep embedded objects and arrays nest: a flat document is 1, a scalar 0. */
export function depthOf(value: unknown): number {
  const children = Array.isArray(value) ? value : isRecord(value) ? Object.values(value) : null;
  if (!children) return 0;
  let deepest = 0;
  for (const child of children) deepest = Math.max(deepest, depthOf(child));
  return 1 + deepest;
}

/** The values of every $expr in a filter. */
function exprsIn(filter: unknown): unknown[] {
  const out: unknown[] = [];
  eachKey(filter, (key, child) => {
    if (key !== '$expr') return true;
    out.push(child);
    return false;
  });
  return out;
}

/**
 * Calls `visit` with every key and value of the objects in `value`, through arrays and nested
 * objects, top down; a value whose visit returns false is not gone into.
 */
function eachKey(value: unknown, visit: (key: string, child: unknown) => boolean): void {
  if (Array.isArray(value)) for (const item of value) eachKey(item, visit);
  else if (isRecord(value))
    for (const [key, child] of Object.entries(value)) if (visit(key, child)) eachKey(child, visit);
}
