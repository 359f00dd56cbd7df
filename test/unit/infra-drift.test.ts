// infra/ and the code must agree: the Bicep creates exactly the collections and indexes of
// shared/data/indexes.ts, and its app settings are exactly the settings shared/config.ts reads
// (plus the Functions platform's own). The Bicep is read with tree-sitter-bicep.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Language, Parser, type Node } from 'web-tree-sitter';
import { SETTING_NAMES } from '../../shared/config';
import { COLLECTIONS, INDEXES, type CollectionName } from '../../shared/data/indexes';

const ROOT = path.resolve(__dirname, '..', '..');
const MAIN_BICEP = 'infra/main.bicep';
const COSMOS_BICEP = 'infra/modules/cosmos.bicep';
const FUNCTION_APP_BICEP = 'infra/modules/function-app.bicep';

/** Settings only `npm run dev` reads (the local server's port); never app settings in Azure. */
const LOCAL_ONLY_SETTINGS: readonly string[] = ['PORT'];
/** Settings of the Functions host and Azure SDKs, not read by shared/config.ts. */
const PLATFORM_SETTING =
  /^(AzureWebJobs\w*|AzureFunctionsJobHost__\w+|FUNCTIONS_\w+|APPLICATIONINSIGHTS_\w+|WEBSITE_\w+|AZURE_CLIENT_ID)$/;
/** Settings holding secrets: their values must be Key Vault references. */
const SECRET_SETTINGS: readonly string[] = [
  'MONGODB_URI',
  'WHATSAPP_VERIFY_TOKEN',
  'WHATSAPP_APP_SECRET',
  'WHATSAPP_ACCESS_TOKEN',
  'AI_API_KEY',
  'MANAGE_API_TOKEN',
];

type BicepValue = string | number | boolean | null | { expression: string } | BicepValue[] | BicepObject;
interface BicepObject {
  [key: string]: BicepValue;
}

const trees = new Map<string, Node>();

beforeAll(async () => {
  await Parser.init();
  const wasm = path.join(ROOT, 'node_modules', 'tree-sitter-bicep', 'tree-sitter-bicep.wasm');
  const parser = new Parser();
  parser.setLanguage(await Language.load(wasm));
  for (const file of [MAIN_BICEP, COSMOS_BICEP, FUNCTION_APP_BICEP]) {
    const tree = parser.parse(readFileSync(path.join(ROOT, file), 'utf8'));
    if (!tree || tree.rootNode.hasError) throw new Error(`${file} does not parse`);
    trees.set(file, tree.rootNode);
  }
});

const significant = (node: Node): boolean => node.type !== 'comment';

/** A literal Bicep value as JSON; anything computed becomes `{ expression }` with its source text. */
function toValue(node: Node): BicepValue {
  switch (node.type) {
    case 'object': {
      const result: BicepObject = {};
      for (const property of node.namedChildren.filter(significant)) {
        const [key, value] = property.namedChildren.filter(significant);
        if (property.type !== 'object_property' || !key || !value)
          throw new Error(`unexpected ${property.text}`);
        result[key.type === 'string' ? String(toValue(key)) : key.text] = toValue(value);
      }
      return result;
    }
    case 'array':
      return node.namedChildren.filter(significant).map(toValue);
    case 'string':
      return node.namedChildren.some((child) => child.type === 'interpolation')
        ? { expression: node.text }
        : node.namedChildren.map((child) => child.text).join('');
    case 'number':
      return Number(node.text);
    case 'boolean':
      return node.text === 'true';
    case 'null':
      return null;
    default:
      return { expression: node.text };
  }
}

/** The value of `var <name> = ...` in a file. */
function variable(file: string, name: string): BicepValue {
  const root = trees.get(file);
  const declaration = root?.namedChildren.find(
    (node) => node.type === 'variable_declaration' && node.namedChildren[0]?.text === name,
  );
  const value = declaration?.namedChildren.filter(significant).at(-1);
  if (!value) throw new Error(`var ${name} not found in ${file}`);
  return toValue(value);
}

function asObject(value: BicepValue | undefined, what: string): BicepObject {
  if (value === null || typeof value !== 'object' || Array.isArray(value) || 'expression' in value) {
    throw new Error(`${what} is not an object literal`);
  }
  return value;
}

function asArray(value: BicepValue | undefined, what: string): BicepValue[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not an array literal`);
  return value;
}

interface IndexShape {
  keys: string[];
  options: Record<string, unknown>;
}

const byKeys = (a: IndexShape, b: IndexShape): number => a.keys.join(',').localeCompare(b.keys.join(','));

/** Collections of the Bicep: name -> indexes (keys in order, options). */
function bicepCollections(): Map<string, IndexShape[]> {
  const result = new Map<string, IndexShape[]>();
  for (const entry of asArray(variable(COSMOS_BICEP, 'mongoCollections'), 'mongoCollections')) {
    const collection = asObject(entry, 'a collection');
    const name = collection['name'];
    if (typeof name !== 'string') throw new Error('collection without a literal name');
    const indexes = asArray(collection['indexes'], `${name}.indexes`).map((raw) => {
      const index = asObject(raw, `an index of ${name}`);
      const keys = asArray(asObject(index['key'], 'index.key')['keys'], 'index.key.keys');
      if (!keys.every((key): key is string => typeof key === 'string'))
        throw new Error(`computed key in ${name}`);
      return {
        keys,
        options: index['options'] === undefined ? {} : asObject(index['options'], 'index.options'),
      };
    });
    result.set(name, indexes);
  }
  return result;
}

/** The data module's indexes in the same shape (Cosmos keys are always ascending). */
function codeIndexes(collection: CollectionName): IndexShape[] {
  return INDEXES[collection].map((index) => ({
    keys: Object.keys(index.keys),
    options: index.unique ? { unique: true } : {},
  }));
}

const isIdIndex = (index: IndexShape): boolean => index.keys.length === 1 && index.keys[0] === '_id';

describe('infra/ collections and indexes match shared/data/indexes.ts', () => {
  it('creates exactly the collections of the data module', () => {
    expect([...bicepCollections().keys()].sort()).toEqual(Object.values(COLLECTIONS).sort());
  });

  it('declares the mandatory _id index on every collection, and only as a plain index', () => {
    for (const [name, indexes] of bicepCollections()) {
      const idIndexes = indexes.filter(isIdIndex);
      expect(idIndexes, name).toEqual([{ keys: ['_id'], options: {} }]);
    }
  });

  it('creates exactly the indexes of the data module, keys in order, with the unique flags', () => {
    const bicep = bicepCollections();
    for (const collection of Object.values(COLLECTIONS)) {
      const declared = (bicep.get(collection) ?? []).filter((index) => !isIdIndex(index));
      expect([...declared].sort(byKeys), collection).toEqual(codeIndexes(collection).sort(byKeys));
    }
  });
});

interface AppSetting {
  name: string;
  value: BicepValue;
}

function bicepAppSettings(): AppSetting[] {
  return asArray(variable(MAIN_BICEP, 'appSettings'), 'appSettings').map((raw) => {
    const setting = asObject(raw, 'an app setting');
    const name = setting['name'];
    if (typeof name !== 'string') throw new Error('app setting without a literal name');
    return { name, value: setting['value'] ?? null };
  });
}

describe('infra/ app settings match shared/config.ts', () => {
  const settingNames: readonly string[] = SETTING_NAMES;

  it('provisions every setting the configuration reads, except local-only ones', () => {
    const provisioned = new Set(bicepAppSettings().map((setting) => setting.name));
    const missing = settingNames.filter(
      (name) => !LOCAL_ONLY_SETTINGS.includes(name) && !provisioned.has(name),
    );
    expect(missing).toEqual([]);
  });

  it('defines no setting the configuration does not read, besides platform settings', () => {
    const unknown = bicepAppSettings()
      .map((setting) => setting.name)
      .filter((name) => !settingNames.includes(name) && !PLATFORM_SETTING.test(name));
    expect(unknown).toEqual([]);
  });

  it('keeps local-only settings out of Azure and defines each setting once', () => {
    const names = bicepAppSettings().map((setting) => setting.name);
    expect(names.filter((name) => LOCAL_ONLY_SETTINGS.includes(name))).toEqual([]);
    expect(names.filter((name, i) => names.indexOf(name) !== i)).toEqual([]);
  });

  it('reads every secret through a Key Vault reference', () => {
    for (const setting of bicepAppSettings().filter((s) => SECRET_SETTINGS.includes(s.name))) {
      expect(JSON.stringify(setting.value), setting.name).toContain('@Microsoft.KeyVault(SecretUri=');
    }
  });

  it('hands the whole list to the Function App', () => {
    const main = readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8');
    const functionApp = readFileSync(path.join(ROOT, FUNCTION_APP_BICEP), 'utf8');
    expect(main).toMatch(/^\s*appSettings: appSettings$/m);
    expect(functionApp).toMatch(/^\s*appSettings: appSettings$/m);
    expect(functionApp.match(/appSettings:/g)).toHaveLength(1);
  });
});
