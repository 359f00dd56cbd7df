// Every setting of the app (docs/contract.md, "Settings"), parsed once from the environment with zod.
// Bad or missing values fail early with one message naming each variable, never its value.
import { z } from 'zod';
import { AppError, ErrorCode } from './errors';

export const DEFAULT_SYSTEM_PROMPT =
  'You are a helpful assistant answering people on WhatsApp on behalf of a business. ' +
  'Answer briefly and clearly in the language of the user, in plain text suitable for a chat ' +
  '(no tables, little formatting). If you do not know something, say so.';

/** An environment: process.env, or a plain object in tests and scripts. */
export type Env = Readonly<Record<string, string | undefined>>;

const keyVaultReference = /^@Microsoft\.KeyVault\(/i;

/** Empty strings and unresolved Key Vault references count as missing. */
const present = (value: unknown): unknown =>
  typeof value === 'string' && (value.trim() === '' || keyVaultReference.test(value.trim()))
    ? undefined
    : value;

// Outer whitespace is dropped (a pasted value, a Key Vault secret set from a file, keeps its line
// break): no header, signature or connection string can use it.
const optStr = () => z.preprocess(present, z.string().trim().min(1).optional());
/** A value pasted with its quotes (`"EAAG…"`): the quotes would be sent as part of it. */
const unquoted = (v: string) => !/^(["'`]).*\1$/s.test(v);
const QUOTED = 'is wrapped in quotes: set the value without them';
/** A secret, key or connection string: trimmed, and refused when still in its quotes. */
const secret = () => z.preprocess(present, z.string().trim().min(1).refine(unquoted, QUOTED));
const optSecret = () => z.preprocess(present, z.string().trim().min(1).refine(unquoted, QUOTED).optional());
/**
 * A setting read through `present`. Defaults and optionality belong to `schema` (inside the
 * preprocess): outside it, an empty value would not count as missing.
 */
const setting = <T extends z.ZodType>(schema: T) => z.preprocess(present, schema);
/** Whether `v` is an absolute http(s) URL (`graph.facebook.com`, without its scheme, is not). */
const isHttpUrl = (v: string): boolean => {
  try {
    return /^https?:\/\//i.test(v) && ['http:', 'https:'].includes(new URL(v).protocol);
  } catch {
    return false;
  }
};
const httpUrl = () =>
  z
    .string()
    .trim()
    .refine(isHttpUrl, 'must be an http(s) URL with its scheme, such as https://example.com')
    .transform((v) => v.replace(/\/+$/, ''));

/** The rule for MONGODB_DATABASE, shared with the operator scripts (scripts/lib/cli.ts). */
export const DEFAULT_DATABASE = 'whatsapp_chatbot';
export const DatabaseNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,63}$/, 'must be 1-63 letters, digits, _ or -');

const databaseField = () => z.preprocess(present, DatabaseNameSchema.default(DEFAULT_DATABASE));

/** The database named by MONGODB_DATABASE (default whatsapp_chatbot); throws AppError(CONFIG) if invalid. */
export function databaseName(env: Env): string {
  return parseEnv(z.object({ MONGODB_DATABASE: databaseField() }), env).MONGODB_DATABASE;
}

/** A whole number in plain decimal digits (`1e1`, `0x10`, `+5`, `12.0` are refused, not read as numbers). */
const int = (min: number, max: number) => {
  const message = `must be a whole number from ${min} to ${max}`;
  return z
    .string()
    .trim()
    .regex(/^\d{1,15}$/, `${message}, in plain digits`)
    .transform(Number)
    .pipe(z.number().min(min, message).max(max, message));
};

/** The rule for RETENTION_DAYS, shared with `npm run retention` (scripts/retention.ts). */
const retentionField = () => setting(int(1, 36_500).optional());

/** RETENTION_DAYS (undefined when unset); throws AppError(CONFIG) naming it, as loadConfig does. */
export function retentionDays(env: Env): number | undefined {
  return parseEnv(z.object({ RETENTION_DAYS: retentionField() }), env).RETENTION_DAYS;
}

const graphUrl = () => setting(httpUrl().default('https://graph.facebook.com'));
/**
 * The Graph API version. Where the real Graph API is called (in Azure, and by the setup script) an
 * expired one (v20 and older) is refused: every send would fail. `npm run dev` takes any version of
 * the right form: a client's Graph stand-in may answer one its examples use.
 */
const apiVersion = (refuseExpired: boolean) =>
  z.preprocess(
    present,
    z
      .string()
      .trim()
      .regex(/^v\d+\.\d+$/, 'must look like v25.0')
      .refine(
        (v) => !refuseExpired || Number(v.slice(1).split('.')[0]) > 20,
        'names an expired Graph API version (v20 and older)',
      )
      .default('v25.0'),
  );

/**
 * The bootstrap token of the management API. The brief gives it no length, so `npm run dev` takes
 * any (a client may set a short test token); in Azure one under 16 characters is refused.
 */
const bootstrapToken = (azure: boolean) =>
  z.preprocess(
    present,
    z
      .string()
      .trim()
      .min(azure ? 16 : 1, 'must be at least 16 characters')
      .refine(unquoted, QUOTED)
      // A bearer token is one word (auth.ts): one with a space inside could never sign in.
      .refine((v) => !/\s/.test(v), 'must not contain whitespace (a bearer token is one word)')
      .optional(),
  );

/** The schema of the environment (in Azure, or elsewhere). */
const envSchema = (azure: boolean) =>
  z
    .object({
      MONGODB_URI: optSecret(),
      MONGODB_DATABASE: databaseField(),
      WHATSAPP_VERIFY_TOKEN: secret(),
      WHATSAPP_APP_SECRET: secret(),
      WHATSAPP_ACCESS_TOKEN: optSecret(),
      WHATSAPP_GRAPH_URL: graphUrl(),
      WHATSAPP_API_VERSION: apiVersion(azure),
      AI_ENDPOINT: setting(httpUrl().optional()),
      AI_API_KEY: optSecret(),
      AI_MODEL: optSecret(),
      AI_SYSTEM_PROMPT: optStr(),
      AI_HISTORY_LIMIT: setting(int(0, 100).default(10)),
      AI_TIMEOUT_MS: setting(int(100, 600_000).default(20_000)),
      AI_MAX_PER_MINUTE: setting(int(1, 1000).default(10)),
      MANAGE_API_TOKEN: bootstrapToken(azure),
      RETENTION_DAYS: retentionField(),
      HANDOFF_HOURS: setting(int(1, 720).default(24)),
      PORT: setting(int(1, 65_535).default(7071)),
    })
    .superRefine((env, ctx) => {
      if (env.AI_ENDPOINT && !env.AI_MODEL) {
        ctx.addIssue({ code: 'custom', path: ['AI_MODEL'], message: 'is required when AI_ENDPOINT is set' });
      }
    });

/** The schema of the environment. Its keys are the app settings that infra/ provisions. */
export const EnvSchema = envSchema(false);
const AzureEnvSchema = envSchema(true);

/** Names of every setting the schema reads (used by the infra drift test and the docs). */
export const SETTING_NAMES = Object.keys(EnvSchema.shape) as (keyof z.input<typeof EnvSchema>)[];

export interface AiConfig {
  readonly endpoint: string;
  readonly apiKey: string | undefined;
  readonly model: string;
  readonly systemPrompt: string;
  readonly historyLimit: number;
  readonly timeoutMs: number;
  readonly maxPerMinute: number;
}

export interface Config {
  readonly mongodb: { readonly uri: string | undefined; readonly database: string };
  readonly whatsapp: {
    readonly verifyToken: string;
    readonly appSecret: string;
    /** Unset: replies are recorded as `not_sent` (dry run) instead of being sent. */
    readonly accessToken: string | undefined;
    readonly graphUrl: string;
    readonly apiVersion: string;
  };
  readonly ai: AiConfig | undefined;
  readonly manageApiToken: string | undefined;
  readonly retentionDays: number | undefined;
  /** A handed-over conversation returns to the bot after this many hours without an operator reply. */
  readonly handoffHours: number;
  readonly port: number;
}

/** Parses `env` with `schema`; throws AppError(CONFIG) naming every bad variable, never its value. */
function parseEnv<T>(schema: z.ZodType<T>, env: Env): T {
  const parsed = schema.safeParse(env);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map((issue) => {
    const name = String(issue.path[0] ?? 'environment');
    const missing = env[name] === undefined || present(env[name]) === undefined;
    return `${name} ${missing && issue.code !== 'custom' ? 'is missing' : issue.message}`;
  });
  throw new AppError(ErrorCode.CONFIG, `Invalid configuration: ${[...new Set(problems)].join('; ')}`);
}

/** Parses an environment; throws AppError(CONFIG) naming every bad variable. Pure: no process.env. */
export function loadConfig(env: Env): Config {
  const e = parseEnv(runningInAzure(env) ? AzureEnvSchema : EnvSchema, env);
  const config: Config = {
    mongodb: { uri: e.MONGODB_URI, database: e.MONGODB_DATABASE },
    whatsapp: {
      verifyToken: e.WHATSAPP_VERIFY_TOKEN,
      appSecret: e.WHATSAPP_APP_SECRET,
      accessToken: e.WHATSAPP_ACCESS_TOKEN,
      graphUrl: e.WHATSAPP_GRAPH_URL,
      apiVersion: e.WHATSAPP_API_VERSION,
    },
    ai:
      e.AI_ENDPOINT && e.AI_MODEL
        ? {
            endpoint: e.AI_ENDPOINT,
            apiKey: e.AI_API_KEY,
            model: e.AI_MODEL,
            systemPrompt: e.AI_SYSTEM_PROMPT ?? DEFAULT_SYSTEM_PROMPT,
            historyLimit: e.AI_HISTORY_LIMIT,
            timeoutMs: e.AI_TIMEOUT_MS,
            maxPerMinute: e.AI_MAX_PER_MINUTE,
          }
        : undefined,
    manageApiToken: e.MANAGE_API_TOKEN,
    retentionDays: e.RETENTION_DAYS,
    handoffHours: e.HANDOFF_HOURS,
    port: e.PORT,
  };
  return deepFreeze(config);
}

const GraphSettingsSchema = z.object({
  WHATSAPP_ACCESS_TOKEN: secret(),
  WHATSAPP_VERIFY_TOKEN: secret(),
  WHATSAPP_GRAPH_URL: graphUrl(),
  WHATSAPP_API_VERSION: apiVersion(true),
});

/**
 * The Graph API settings alone, with the access token required (scripts/setup-whatsapp.ts): the same
 * rules as loadConfig, without the settings such a script does not need.
 */
export function loadGraphSettings(
  env: Env,
): Readonly<Omit<Config['whatsapp'], 'appSecret' | 'accessToken'> & { accessToken: string }> {
  const e = parseEnv(GraphSettingsSchema, env);
  return Object.freeze({
    accessToken: e.WHATSAPP_ACCESS_TOKEN,
    verifyToken: e.WHATSAPP_VERIFY_TOKEN,
    graphUrl: e.WHATSAPP_GRAPH_URL,
    apiVersion: e.WHATSAPP_API_VERSION,
  });
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** True inside an Azure Functions host in Azure (not a local `func start`). */
export function runningInAzure(env: Env = process.env): boolean {
  return Boolean(env['WEBSITE_INSTANCE_ID'] && env['WEBSITE_SITE_NAME']);
}

let cached: Config | undefined;
/** The process configuration, parsed once from process.env. In Azure a Graph token is required. */
export function getConfig(): Config {
  if (!cached) {
    const config = loadConfig(process.env);
    if (runningInAzure() && !config.whatsapp.accessToken) {
      throw new AppError(ErrorCode.CONFIG, 'Invalid configuration: WHATSAPP_ACCESS_TOKEN is missing');
    }
    if (runningInAzure() && !config.mongodb.uri) {
      throw new AppError(ErrorCode.CONFIG, 'Invalid configuration: MONGODB_URI is missing');
    }
    cached = config;
  }
  return cached;
}

/** The package version, reported by /api/health. */
export function appVersion(): string {
  return process.env['npm_package_version'] ?? readPackageVersion();
}

function readPackageVersion(): string {
  // From shared/ when run with tsx, from dist/shared/ when compiled.
  for (const candidate of ['../package.json', '../../package.json']) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const pkg = require(candidate) as { name?: string; version?: string };
      if (pkg.name === 'whatsapp-cosmos-bot' && pkg.version) return pkg.version;
    } catch {
      // try the next location
    }
  }
  return '0.0.0';
}
