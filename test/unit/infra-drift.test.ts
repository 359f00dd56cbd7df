// infra/ and the code must agree: the Bicep creates exactly the collections and indexes of
// shared/data/indexes.ts, the queues of shared/bot/jobs.ts, and its app settings are exactly the
// settings shared/config.ts reads (plus the Functions platform's own). And every option of
// infra/main.bicep must be deployable: no site property Flex Consumption rejects, no shared
// database throughput over unsharded collections, no secret that expires under a running app.
// The Bicep is read with tree-sitter-bicep.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Language, Parser, type Node } from 'web-tree-sitter';
import { definitions } from '../../functions/definitions';
import { APP_CAPABILITIES } from '../cosmos/app-model';
import { INBOUND_POISON_QUEUE, INBOUND_QUEUE, REPLY_POISON_QUEUE, REPLY_QUEUE } from '../../shared/bot/jobs';
import { DatabaseNameSchema, EnvSchema, SETTING_NAMES } from '../../shared/config';
import { hostQueueSettings } from '../../scripts/lib/queue-host';
import { COLLECTIONS, INDEXES, type CollectionName } from '../../shared/data/indexes';

const ROOT = path.resolve(__dirname, '..', '..');
const MAIN_BICEP = 'infra/main.bicep';
const COSMOS_BICEP = 'infra/modules/cosmos.bicep';
const FUNCTION_APP_BICEP = 'infra/modules/function-app.bicep';
const KEYVAULT_BICEP = 'infra/modules/keyvault.bicep';
const NETWORK_BICEP = 'infra/modules/network.bicep';

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
  for (const file of [MAIN_BICEP, COSMOS_BICEP, FUNCTION_APP_BICEP, KEYVAULT_BICEP, NETWORK_BICEP]) {
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

describe('infra/ queues match shared/bot/jobs.ts and the function definitions', () => {
  const queues = (): string[] =>
    asArray(variable(MAIN_BICEP, 'queueNames'), 'queueNames').map((name) => {
      if (typeof name !== 'string') throw new Error('queue name is not a literal');
      return name;
    });

  it('creates the inbound and reply queues with their poison queues, and no other', () => {
    expect([...queues()].sort()).toEqual(
      [INBOUND_QUEUE, INBOUND_POISON_QUEUE, REPLY_QUEUE, REPLY_POISON_QUEUE].sort(),
    );
    expect(readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8')).toMatch(/^\s*queueNames: queueNames$/m);
  });

  it('provisions every queue a function reads or writes', () => {
    const used = definitions.flatMap((definition) => [
      ...(definition.kind === 'queue' ? [definition.queueName] : []),
      ...(definition.queueOutputs ?? []).map((output) => output.queueName),
    ]);
    expect(used.filter((name) => !queues().includes(name))).toEqual([]);
  });
});

// --- Deployable options -------------------------------------------------------------------------

/** `resource <name> ... = ...`: its type and its body (inside any `for` / `if`). */
function resource(file: string, name: string): { type: string; body: BicepObject } {
  const declaration = trees
    .get(file)
    ?.namedChildren.find(
      (node) => node.type === 'resource_declaration' && node.namedChildren[0]?.text === name,
    );
  if (!declaration) throw new Error(`resource ${name} not found in ${file}`);
  return resourceShape(declaration);
}

function resourceShape(declaration: Node): { type: string; body: BicepObject } {
  let body: Node | undefined = declaration.namedChildren.filter(significant).at(-1);
  while (body && body.type !== 'object') body = body.namedChildren.filter(significant).at(-1);
  if (!body) throw new Error(`resource without a body: ${declaration.text.slice(0, 60)}`);
  return {
    type: String(toValue(declaration.namedChildren[1] as Node)),
    body: asObject(toValue(body), 'body'),
  };
}

/** Every resource of a file. */
function resources(file: string): { type: string; body: BicepObject }[] {
  return (trees.get(file)?.namedChildren ?? [])
    .filter((node) => node.type === 'resource_declaration')
    .map(resourceShape);
}

/** The decorators of `param <name>`: decorator name -> its (first) argument. */
function decorators(file: string, name: string): Record<string, BicepValue> {
  const nodes = trees.get(file)?.namedChildren ?? [];
  const index = nodes.findIndex(
    (node) => node.type === 'parameter_declaration' && node.namedChildren[0]?.text === name,
  );
  if (index < 0) throw new Error(`param ${name} not found in ${file}`);
  const previous = nodes[index - 1];
  const result: Record<string, BicepValue> = {};
  if (previous?.type !== 'decorators') return result;
  for (const decorator of previous.namedChildren.filter(significant)) {
    const call = decorator.namedChildren[0];
    const argument = call?.namedChildren[1]?.namedChildren.filter(significant)[0];
    if (call?.namedChildren[0]) result[call.namedChildren[0].text] = argument ? toValue(argument) : null;
  }
  return result;
}

/**
 * Site properties and app settings Flex Consumption rejects or ignores, from Azure's "Flex
 * Consumption plan deprecations" (learn.microsoft.com/azure/azure-functions/functions-app-settings
 * #flex-consumption-plan-deprecations). ARM rejects the siteConfig ones: error 51021 names
 * `Site.SiteConfig.FtpsState` as invalid for a Flex Consumption site.
 */
const FLEX_REJECTED_SITE_PROPERTIES: readonly string[] = [
  'alwaysOn',
  'containerSize',
  'ftpsState',
  'isReserved',
  'IsXenon',
  'javaVersion',
  'linuxFxVersion',
  'netFrameworkVersion',
  'powerShellVersion',
  'functionAppScaleLimit',
  'preWarmedInstanceCount',
  'use32BitWorkerProcess',
  'vnetBackupRestoreEnabled',
  'vnetContentShareEnabled',
  'vnetImagePullEnabled',
  'vnetRouteAllEnabled',
  'windowsFxVersion',
];
const FLEX_DEPRECATED_SETTINGS: readonly string[] = [
  'ENABLE_ORYX_BUILD',
  'FUNCTIONS_EXTENSION_VERSION',
  'FUNCTIONS_WORKER_RUNTIME',
  'FUNCTIONS_WORKER_RUNTIME_VERSION',
  'FUNCTIONS_MAX_HTTP_CONCURRENCY',
  'FUNCTIONS_WORKER_PROCESS_COUNT',
  'FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED',
  'SCM_DO_BUILD_DURING_DEPLOYMENT',
  'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING',
  'WEBSITE_CONTENTOVERVNET',
  'WEBSITE_CONTENTSHARE',
  'WEBSITE_DNS_SERVER',
  'WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT',
  'WEBSITE_NODE_DEFAULT_VERSION',
  'WEBSITE_RUN_FROM_PACKAGE',
  'WEBSITE_SKIP_CONTENTSHARE_VALIDATION',
  'WEBSITE_VNET_ROUTE_ALL',
  // "WEBSITE_TIME_ZONE and TZ app settings aren't currently supported when running on Flex
  // Consumption plan" (flex-consumption-plan#considerations): the timers' NCRONTAB schedules
  // (functions/sweeper.ts, functions/retention.ts) are in UTC.
  'WEBSITE_TIME_ZONE',
  'TZ',
];

/** The properties of a Flex site (its `properties` and their `siteConfig`) that Flex rejects. */
function flexViolations(site: BicepObject): string[] {
  const lower = FLEX_REJECTED_SITE_PROPERTIES.map((name) => name.toLowerCase());
  const properties = asObject(site['properties'], 'site.properties');
  const siteConfig =
    properties['siteConfig'] === undefined ? {} : asObject(properties['siteConfig'], 'siteConfig');
  return [
    ...Object.keys(properties).map((key) => `properties.${key}`),
    ...Object.keys(siteConfig).map((key) => `properties.siteConfig.${key}`),
  ].filter((key) => lower.includes(key.split('.').at(-1)?.toLowerCase() ?? ''));
}

describe('infra/ deploys on Flex Consumption', () => {
  it('sets no site property or siteConfig property that Flex Consumption rejects', () => {
    const site = resource(FUNCTION_APP_BICEP, 'site');
    expect(site.type).toMatch(/^Microsoft\.Web\/sites@/);
    expect(flexViolations(site.body)).toEqual([]);
  });

  it('would catch ftpsState or vnetRouteAllEnabled coming back', () => {
    const site = resource(FUNCTION_APP_BICEP, 'site').body;
    const properties = asObject(site['properties'], 'properties');
    const siteConfig = asObject(properties['siteConfig'], 'siteConfig');
    const broken = {
      ...site,
      properties: {
        ...properties,
        siteConfig: { ...siteConfig, ftpsState: 'Disabled', vnetRouteAllEnabled: true },
      },
    };
    expect(flexViolations(broken)).toEqual([
      'properties.siteConfig.ftpsState',
      'properties.siteConfig.vnetRouteAllEnabled',
    ]);
  });

  it('sets no app setting that Flex Consumption replaced (runtime, scale, content share)', () => {
    const names = bicepAppSettings().map((setting) => setting.name.toUpperCase());
    expect(names.filter((name) => FLEX_DEPRECATED_SETTINGS.includes(name))).toEqual([]);
  });

  it('gives the host identity-based storage for every service it uses: blob, queue and table', () => {
    // The host keeps leases and keys in blobs, the queue trigger and outputs use queues, and it
    // writes its diagnostic events to tables (learn.microsoft.com/azure/azure-functions/
    // errors-diagnostics/diagnostic-events/azfd0003). With an identity, each service needs its
    // `AzureWebJobsStorage__<service>ServiceUri`, a data role, and here a private endpoint.
    const names = bicepAppSettings().map((setting) => setting.name);
    const storage = readFileSync(path.join(ROOT, 'infra/modules/storage.bicep'), 'utf8');
    const main = readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8');
    const roles = {
      blob: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b',
      queue: '974c5e8b-45b9-4653-ba55-5f855dd0fb88',
      table: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3',
    };
    for (const [service, roleId] of Object.entries(roles)) {
      expect(names, service).toContain(`AzureWebJobsStorage__${service}ServiceUri`);
      const roleVar = new RegExp(`var (\\w+) = '${roleId}'`).exec(storage)?.[1];
      expect(roleVar, `${service} data role`).toBeDefined();
      expect(storage.slice(storage.indexOf('resource roleAssignments'))).toContain(`    ${roleVar}\n`);
      expect(main, `${service} private endpoint`).toContain(`groupId: '${service}'`);
    }
  });

  it('names the host storage account besides its service URIs, so the host finds its blobs at startup', () => {
    // Azure/azure-functions-host#11787 ("Intermittent BlobServiceClient creation issue", closed by
    // the Functions team): "When `AzureWebJobsStorage` is configured for identity-based access
    // using `AzureWebJobsStorage__blobServiceUri`, the host can fail to create the
    // `BlobServiceClient` during early startup ... Setting `AzureWebJobsStorage__accountName`
    // (instead of, or in addition to, `__blobServiceUri`) avoids the failure and is a known
    // workaround" (#11782: Flex Consumption apps left unhealthy). The host's
    // StorageServiceUriOptions honours an explicit service URI over the account name, so the
    // URIs still decide where it connects.
    const settings = bicepAppSettings();
    const accountName = settings.find((setting) => setting.name === 'AzureWebJobsStorage__accountName');
    expect(accountName?.value).toEqual({ expression: 'storage.outputs.name' });
    const storage = readFileSync(path.join(ROOT, 'infra/modules/storage.bicep'), 'utf8');
    expect(storage).toMatch(/^output name string = storage\.name$/m);
    expect(settings.map((setting) => setting.name)).toContain('AzureWebJobsStorage__blobServiceUri');
  });

  it('gives a zone-redundant plan a zone-redundant storage account, whatever storageSku says', () => {
    // "When you create your function app on a plan with availability zone support enabled, only
    // zone-redundant storage accounts are supported" (learn.microsoft.com/azure/azure-functions/
    // storage-considerations#storage-account-requirements). The account holds the host's state, the
    // queues and the deployment package: zoneRedundant with Standard_GRS (the default) or LRS/RAGRS
    // is a combination Azure does not support.
    const allowed = asArray(decorators(MAIN_BICEP, 'storageSku')['allowed'], 'storageSku @allowed');
    const zoneRedundantSku = asObject(
      variable(MAIN_BICEP, 'zoneRedundantStorageSkus'),
      'zoneRedundantStorageSkus',
    );
    expect(Object.keys(zoneRedundantSku).sort()).toEqual([...allowed].map(String).sort());
    for (const sku of allowed.map(String)) {
      const replacement = String(zoneRedundantSku[sku]);
      expect(replacement, sku).toMatch(/^Standard_(ZRS|GZRS|RAGZRS)$/);
      // The same geo-replication and read access as asked for, only zone-redundant.
      const kind = (name: string): { geo: boolean; readAccess: boolean } => ({
        geo: name.includes('GRS') || name.includes('GZRS'),
        readAccess: name.includes('RAG'),
      });
      expect(kind(replacement), sku).toEqual(kind(sku));
    }
    expect(variable(MAIN_BICEP, 'storageSkuName')).toEqual({
      expression: 'zoneRedundant ? zoneRedundantStorageSkus[storageSku] : storageSku',
    });
    const main = readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8');
    expect(main).toMatch(/^\s*skuName: storageSkuName$/m);
    expect(main).not.toMatch(/^\s*skuName: storageSku$/m);
  });

  it('states what zone redundancy bills: two always-ready instances per function group of this app', () => {
    // "the platform automatically maintains at least two always-ready instances per per-function
    // scaling function or group" (learn.microsoft.com/azure/reliability/reliability-functions,
    // Flex Consumption); HTTP functions form one group, every queue and timer function its own.
    const own = definitions.filter((definition) => definition.kind !== 'http').map((d) => d.name);
    const groups = own.length + (definitions.some((definition) => definition.kind === 'http') ? 1 : 0);
    const doc = readFileSync(path.join(ROOT, 'docs', 'deployment.md'), 'utf8');
    const from = doc.indexOf('## Zone redundancy');
    expect(from).toBeGreaterThanOrEqual(0);
    const text = doc.slice(from, doc.indexOf('\n## ', from + 3)).replace(/\s+/g, ' ');
    for (const name of own) expect(text, name).toContain(`\`${name}\``);
    const words = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'];
    expect(text).toContain(`This app has ${words[groups] ?? String(groups)} groups`);
    expect(text).toContain(`at least ${2 * groups} instances`);
  });

  it('keeps the scale and memory options within what Flex Consumption accepts', () => {
    for (const file of [MAIN_BICEP, FUNCTION_APP_BICEP]) {
      const name = file === MAIN_BICEP ? 'functionMaximumInstanceCount' : 'maximumInstanceCount';
      const limits = decorators(file, name);
      // "the lowest maximum instance count value is 1, and the highest ... is 1000" (event-driven scaling, Limit scale-out)
      expect(limits['minValue'], `${file} ${name}`).toBe(1);
      expect(limits['maxValue'], `${file} ${name}`).toBe(1000);
      const memory = decorators(file, file === MAIN_BICEP ? 'functionInstanceMemoryMB' : 'instanceMemoryMB');
      expect(memory['allowed'], file).toEqual([512, 2048, 4096]);
    }
  });
});

describe('host.json gives an invocation the time the settings allow it', () => {
  // An invocation that outlasts functionTimeout fails, and the Functions host restarts the worker
  // (learn.microsoft.com/azure/azure-functions/functions-host-json#functiontimeout; Flex
  // Consumption: default 30 minutes, no maximum, functions-scale#timeout). One answer may take an AI
  // call and its one retry (shared/ai/client.ts), each up to AI_TIMEOUT_MS, then Graph's retries.
  it('lets the reply function finish one answer under the longest AI_TIMEOUT_MS infra/ accepts', () => {
    const longestAiMs = decorators(MAIN_BICEP, 'aiTimeoutMs')['maxValue'];
    expect(typeof longestAiMs).toBe('number');
    const aiTimeout = EnvSchema.shape.AI_TIMEOUT_MS;
    expect(aiTimeout.safeParse(String(longestAiMs)).success).toBe(true);
    expect(aiTimeout.safeParse(String(Number(longestAiMs) + 1)).success).toBe(false);
    const { functionTimeoutMs } = hostQueueSettings(path.join(ROOT, 'host.json'));
    expect(functionTimeoutMs).toBeGreaterThanOrEqual(2 * Number(longestAiMs) + 2 * 60_000);
  });
});

/**
 * What the queue extension refuses or the docs bound in host.json `extensions.queues`
 * (learn.microsoft.com/azure/azure-functions/functions-bindings-storage-queue#hostjson-settings):
 * "The maximum `batchSize` is 32" (the extension's QueuesOptions: "Must be in range within 1 and
 * 32"), `maxPollingInterval` "must not be less than 00:00:00.100", `messageEncoding` "Valid values
 * are `base64` and `none`"; counts are whole numbers, time spans `hh:mm:ss[.fff]`. The local queue
 * host (scripts/lib/queue-host.ts) reads past such values with its defaults; the Functions host does not.
 */
function queueSettingProblems(queues: Readonly<Record<string, unknown>>): string[] {
  const problems: string[] = [];
  const whole = (name: string, min: number, max = Infinity): void => {
    const value = queues[name];
    if (value === undefined) return;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
      problems.push(`${name} ${JSON.stringify(value)} (${min} to ${max})`);
  };
  const span = (name: string, minMs: number): void => {
    const value = queues[name];
    if (value === undefined) return;
    const m = typeof value === 'string' ? /^(\d+):([0-5]\d):([0-5]\d)(?:\.(\d{1,7}))?$/.exec(value) : null;
    const ms = m
      ? ((Number(m[1]) * 60 + Number(m[2])) * 60 + Number(m[3])) * 1000 + Number(`0.${m[4] ?? '0'}`) * 1000
      : NaN;
    if (!(ms >= minMs))
      problems.push(`${name} ${JSON.stringify(value)} (a time span of ${minMs} ms or more)`);
  };
  whole('batchSize', 1, 32);
  whole('newBatchThreshold', 0);
  whole('maxDequeueCount', 1);
  span('maxPollingInterval', 100);
  span('visibilityTimeout', 0);
  const encoding = queues['messageEncoding'];
  if (encoding !== undefined && encoding !== 'base64' && encoding !== 'none')
    problems.push(`messageEncoding ${JSON.stringify(encoding)} (base64 or none)`);
  return problems;
}

describe('host.json queue settings are ones the Functions host accepts', () => {
  const hostQueues = (): Record<string, unknown> => {
    const host = JSON.parse(readFileSync(path.join(ROOT, 'host.json'), 'utf8')) as {
      extensions?: { queues?: Record<string, unknown> };
    };
    return host.extensions?.queues ?? {};
  };

  it('keeps batchSize, polling, dequeue count, visibility timeout and encoding within the documented bounds', () => {
    expect(queueSettingProblems(hostQueues())).toEqual([]);
  });

  it('would catch a batch over 32, polling under 100 ms or an unknown encoding', () => {
    const queues = hostQueues();
    expect(
      queueSettingProblems({
        ...queues,
        batchSize: 33,
        maxPollingInterval: '00:00:00.050',
        messageEncoding: 'utf8',
        maxDequeueCount: 0,
        visibilityTimeout: '15s',
      }),
    ).toEqual([
      'batchSize 33 (1 to 32)',
      'maxDequeueCount 0 (1 to Infinity)',
      'maxPollingInterval "00:00:00.050" (a time span of 100 ms or more)',
      'visibilityTimeout "15s" (a time span of 0 ms or more)',
      'messageEncoding "utf8" (base64 or none)',
    ]);
    expect(queueSettingProblems({ ...queues, batchSize: 32, maxPollingInterval: '00:00:00.100' })).toEqual(
      [],
    );
  });
});

describe('infra/ Cosmos DB options deploy', () => {
  it('accepts only database names as long as MONGODB_DATABASE allows, so a deployment never names one the app refuses', () => {
    // The app refuses a name outside 1-63 characters at start (shared/config.ts); Cosmos DB would
    // create it (up to 255, concepts-limits, Per-container limits), and the app would not start.
    for (const file of [MAIN_BICEP, COSMOS_BICEP]) {
      const bounds = decorators(file, 'databaseName');
      const shortest = Number(bounds['minLength']);
      const longest = Number(bounds['maxLength']);
      expect(DatabaseNameSchema.safeParse('a'.repeat(shortest)).success, file).toBe(true);
      expect(DatabaseNameSchema.safeParse('a'.repeat(longest)).success, file).toBe(true);
      expect(DatabaseNameSchema.safeParse('a'.repeat(longest + 1)).success, file).toBe(false);
      expect(shortest, file).toBe(1);
    }
  });

  it('creates the account with the capabilities the indexes need, in both capacity modes', () => {
    // {handoff.since, _id} is a compound index over a nested path: "Compound indexes on nested
    // fields aren't supported by default" without EnableUniqueCompoundNestedDocs
    // (learn.microsoft.com/azure/cosmos-db/mongodb/indexing#compound-indexes-mongodb-server-version-36).
    // Capabilities cannot be changed through ARM afterwards (…/mongodb/how-to-configure-capabilities).
    const names = (name: string): string[] =>
      asArray(variable(COSMOS_BICEP, name), name).map((entry) => String(asObject(entry, name)['name']));
    expect(names('provisionedCapabilities').sort()).toEqual(['EnableMongo', ...APP_CAPABILITIES].sort());
    expect(names('serverlessCapabilities').sort()).toEqual(
      ['EnableMongo', 'EnableServerless', ...APP_CAPABILITIES].sort(),
    );
  });

  const shardKeyed = (): boolean =>
    asArray(variable(COSMOS_BICEP, 'mongoCollections'), 'mongoCollections').every(
      (entry) => asObject(entry, 'collection')['shardKey'] !== undefined,
    );

  it('never puts throughput on the database unless every collection has a shard key', () => {
    // A database with shared throughput requires a shard key on every collection.
    const options = asObject(resource(COSMOS_BICEP, 'database').body['properties'], 'properties')['options'];
    if (!shardKeyed()) expect(options).toEqual({});
  });

  it('provisions Autoscale throughput on each collection instead', () => {
    const collections = asObject(resource(COSMOS_BICEP, 'collections').body['properties'], 'properties');
    expect(collections['options']).toEqual({ expression: 'serverless ? {} : autoscaleOptions' });
    const autoscale = asObject(variable(COSMOS_BICEP, 'autoscaleOptions'), 'autoscaleOptions');
    expect(autoscale).toEqual({
      autoscaleSettings: { maxThroughput: { expression: 'autoscaleMaxThroughput' } },
    });
    // Unsharded collections: at most 10,000 RU/s; autoscale starts at 1,000.
    for (const [file, name] of [
      [MAIN_BICEP, 'cosmosAutoscaleMaxThroughput'],
      [COSMOS_BICEP, 'autoscaleMaxThroughput'],
    ] as const) {
      expect(decorators(file, name), name).toMatchObject({ minValue: 1000, maxValue: 10000 });
    }
  });
});

describe('infra/ secrets', () => {
  it('stores every Key Vault secret without an expiry (rotation is a redeployment)', () => {
    const secrets = [KEYVAULT_BICEP, COSMOS_BICEP].flatMap((file) =>
      resources(file).filter((r) => r.type.startsWith('Microsoft.KeyVault/vaults/secrets@')),
    );
    expect(secrets.length).toBe(5);
    for (const secret of secrets) {
      const attributes = asObject(
        asObject(secret.body['properties'], 'properties')['attributes'],
        'attributes',
      );
      expect(attributes, String(secret.body['name'])).toEqual({ enabled: true });
    }
    expect(readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8')).not.toMatch(/secretExpiry|utcNow\(/);
  });
});

describe('infra/ outbound path', () => {
  it('offers a NAT gateway on the app subnet, off by default', () => {
    const main = readFileSync(path.join(ROOT, MAIN_BICEP), 'utf8');
    expect(main).toMatch(/^param natGateway bool = false$/m);
    expect(main).toMatch(/^\s*natGateway: natGateway$/m);
    const subnet = asArray(
      asObject(resource(NETWORK_BICEP, 'vnet').body['properties'], 'properties')['subnets'],
      'subnets',
    ).map((entry) => asObject(entry, 'subnet'))[0];
    const properties = asObject(subnet?.['properties'], 'subnet.properties');
    expect(properties['natGateway']).toEqual({ expression: 'natGateway ? { id: nat.id } : null' });
    expect(properties['defaultOutboundAccess']).toEqual({ expression: '!natGateway' });
  });
});
