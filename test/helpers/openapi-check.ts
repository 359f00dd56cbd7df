// Checks management API answers against the OpenAPI document the app serves: the status is one the
// operation documents, the headers it documents are there, and the body matches the schema. A small
// validator of the subset of OpenAPI 3.0 schemas the document uses (no dependency); response objects
// are read as closed (a field the document does not list is an error: the answer must be exactly it).

type Schema = Record<string, unknown>;

export interface Exchange {
  readonly method: string;
  /** The route as the document writes it, e.g. `/manage/users/{id}`. */
  readonly path: string;
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
}

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/;
/** The subset this validator understands; a schema with any other keyword fails loudly. */
const KNOWN = new Set([
  '$ref',
  'type',
  'nullable',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'enum',
  'allOf',
  'anyOf',
  'format',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'maxItems',
  'pattern',
  'description',
  'example',
  'default',
]);

function resolve(doc: Schema, schema: Schema): Schema {
  if (typeof schema['$ref'] !== 'string') return schema;
  const name = schema['$ref'].replace('#/components/schemas/', '');
  return (doc['components'] as { schemas: Record<string, Schema> }).schemas[name] ?? schema;
}

export function validate(doc: Schema, schema: Schema, value: unknown, at = '$'): string[] {
  for (const key of Object.keys(schema)) {
    if (!KNOWN.has(key)) return [`${at}: the checker does not know the keyword "${key}"`];
  }
  if (typeof schema['$ref'] === 'string') {
    const name = schema['$ref'].replace('#/components/schemas/', '');
    const target = (doc['components'] as { schemas: Record<string, Schema> }).schemas[name];
    if (!target) return [`${at}: unknown $ref ${schema['$ref']}`];
    return validate(doc, target, value, at);
  }
  if (Array.isArray(schema['allOf'])) {
    // zod-to-openapi writes a nullable $ref as allOf [$ref, {nullable: true}], and an extended
    // object as allOf [$ref, {properties}]: the parts are merged into one (closed) object.
    const parts = (schema['allOf'] as Schema[]).map((p) => resolve(doc, p));
    if (value === null && parts.some((p) => p['nullable'] === true)) return [];
    const objects = parts.filter((p) => !(Object.keys(p).length === 1 && 'nullable' in p));
    if (objects.length === 1) return validate(doc, objects[0] as Schema, value, at);
    if (!objects.every((p) => p['type'] === 'object' || p['properties'] !== undefined))
      return [`${at}: the checker merges only objects in allOf`];
    const merged: Schema = {
      type: 'object',
      properties: Object.assign({}, ...objects.map((p) => p['properties'] ?? {})) as Schema,
      required: objects.flatMap((p) => (p['required'] ?? []) as string[]),
    };
    return validate(doc, merged, value, at);
  }
  if (Array.isArray(schema['anyOf'])) {
    // A union (a Graph error code: a number, a string, or null, a branch `{nullable: true}` that
    // takes null alone): valid when one branch takes the value.
    const nullOnly = (branch: Schema) => Object.keys(branch).length === 1 && branch['nullable'] === true;
    const branches = (schema['anyOf'] as Schema[]).map((branch) =>
      nullOnly(branch) ? (value === null ? [] : [`${at}: not null`]) : validate(doc, branch, value, at),
    );
    if (branches.some((errors) => errors.length === 0)) return [];
    return [`${at}: matches none of anyOf (${branches.map((errors) => errors.join('; ')).join(' | ')})`];
  }
  if (value === null) return schema['nullable'] === true ? [] : [`${at}: null, not allowed`];
  if (value === undefined) return [`${at}: missing`];
  const errors: string[] = [];
  const type = schema['type'];
  if (Array.isArray(schema['enum']) && !schema['enum'].includes(value)) {
    errors.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema['enum'])}`);
  }
  switch (type) {
    case undefined:
      break; // any value (z.unknown())
    case 'string': {
      if (typeof value !== 'string') return [`${at}: expected a string, got ${JSON.stringify(value)}`];
      if (schema['format'] === 'date-time' && (!ISO_DATE_TIME.test(value) || Number.isNaN(Date.parse(value))))
        errors.push(`${at}: ${JSON.stringify(value)} is not an ISO 8601 date-time`);
      const length = [...value].length;
      if (typeof schema['minLength'] === 'number' && length < schema['minLength'])
        errors.push(`${at}: shorter than ${schema['minLength']}`);
      if (typeof schema['maxLength'] === 'number' && length > schema['maxLength'])
        errors.push(`${at}: longer than ${schema['maxLength']}`);
      if (typeof schema['pattern'] === 'string' && !new RegExp(schema['pattern'], 'u').test(value))
        errors.push(`${at}: does not match ${schema['pattern']}`);
      break;
    }
    case 'integer':
    case 'number': {
      if (typeof value !== 'number' || (type === 'integer' && !Number.isInteger(value)))
        return [`${at}: expected ${type}, got ${JSON.stringify(value)}`];
      if (typeof schema['minimum'] === 'number' && value < schema['minimum'])
        errors.push(`${at}: below ${schema['minimum']}`);
      if (typeof schema['maximum'] === 'number' && value > schema['maximum'])
        errors.push(`${at}: above ${schema['maximum']}`);
      break;
    }
    case 'boolean':
      if (typeof value !== 'boolean') return [`${at}: expected a boolean, got ${JSON.stringify(value)}`];
      break;
    case 'array': {
      if (!Array.isArray(value)) return [`${at}: expected an array`];
      if (typeof schema['maxItems'] === 'number' && value.length > schema['maxItems'])
        errors.push(`${at}: more than ${schema['maxItems']} items`);
      const items = (schema['items'] ?? {}) as Schema;
      value.forEach((item, i) => errors.push(...validate(doc, items, item, `${at}[${i}]`)));
      break;
    }
    case 'object': {
      if (typeof value !== 'object' || Array.isArray(value)) return [`${at}: expected an object`];
      const record = value as Record<string, unknown>;
      const properties = (schema['properties'] ?? {}) as Record<string, Schema>;
      const required = (schema['required'] ?? []) as string[];
      for (const name of required) if (!(name in record)) errors.push(`${at}.${name}: required, missing`);
      for (const [name, v] of Object.entries(record)) {
        const property = properties[name];
        if (!property) {
          errors.push(`${at}.${name}: not in the document`);
          continue;
        }
        errors.push(...validate(doc, property, v, `${at}.${name}`));
      }
      break;
    }
    default:
      errors.push(`${at}: the checker does not know the type ${String(type)}`);
  }
  return errors;
}

/** What is wrong with one answer, by the document (empty when it matches). */
export function checkExchange(doc: Schema, exchange: Exchange): string[] {
  const where = `${exchange.method} ${exchange.path} → ${exchange.status}`;
  const paths = doc['paths'] as Record<string, Record<string, Schema>>;
  const operation = paths[exchange.path]?.[exchange.method.toLowerCase()];
  if (!operation) return [`${where}: no such operation in the document`];
  const responses = operation['responses'] as Record<string, Schema>;
  const response = responses[String(exchange.status)];
  if (!response) return [`${where}: status not documented (${Object.keys(responses).join(', ')})`];
  const errors: string[] = [];
  const headers = new Map(Object.entries(exchange.headers).map(([k, v]) => [k.toLowerCase(), v]));
  for (const [name, header] of Object.entries((response['headers'] ?? {}) as Record<string, Schema>)) {
    const value = headers.get(name.toLowerCase());
    if (value === undefined) errors.push(`${where}: header ${name} missing`);
    else if ((header['schema'] as Schema | undefined)?.['type'] === 'integer' && !/^\d+$/.test(value))
      errors.push(`${where}: header ${name} is not an integer`);
  }
  const content = response['content'] as Record<string, { schema: Schema }> | undefined;
  if (!content) {
    if (exchange.body !== null && exchange.body !== undefined && exchange.body !== '')
      errors.push(`${where}: a body where the document has none`);
    return errors;
  }
  const json = content['application/json'];
  if (!json) return [...errors, `${where}: the document has no application/json content`];
  // The host sets application/json for a jsonBody; a handler setting another type would be wrong.
  const type = headers.get('content-type');
  if (type !== undefined && !type.startsWith('application/json'))
    errors.push(`${where}: content type ${type}`);
  errors.push(...validate(doc, json.schema, exchange.body).map((e) => `${where}: ${e}`));
  return errors;
}
