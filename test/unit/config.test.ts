// loadConfig: defaults from docs/contract.md "Settings"; bad or missing settings fail with one message
// naming each variable and what is wrong, never its value.
import { describe, expect, it } from 'vitest';
import { databaseName, DEFAULT_SYSTEM_PROMPT, loadConfig, type Env } from '../../shared/config';
import { AppError, ErrorCode } from '../../shared/errors';

const REQUIRED = { WHATSAPP_VERIFY_TOKEN: 'verify-token-4b1c9e', WHATSAPP_APP_SECRET: 'app-secret-8f2d71aa' };

/** The error loadConfig throws for `env` (fails the test when it does not throw). */
function configError(env: Env): AppError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(AppError);
    const appError = error as AppError;
    expect(appError.code).toBe(ErrorCode.CONFIG);
    return appError;
  }
  throw new Error('loadConfig did not throw');
}

function expectNoValues(message: string, env: Env): void {
  for (const value of Object.values(env)) {
    if (value && value.length >= 3) expect(message).not.toContain(value);
  }
}

describe('loadConfig', () => {
  it('applies the documented defaults', () => {
    const config = loadConfig(REQUIRED);
    expect(config.mongodb).toEqual({ uri: undefined, database: 'whatsapp_chatbot' });
    expect(config.whatsapp).toEqual({
      verifyToken: REQUIRED.WHATSAPP_VERIFY_TOKEN,
      appSecret: REQUIRED.WHATSAPP_APP_SECRET,
      accessToken: undefined,
      graphUrl: 'https://graph.facebook.com',
      apiVersion: 'v25.0',
    });
    expect(config.ai).toBeUndefined();
    expect(config.manageApiToken).toBeUndefined();
    expect(config.retentionDays).toBeUndefined();
    expect(config.port).toBe(7071);
  });

  it('applies the AI defaults when AI_ENDPOINT and AI_MODEL are set', () => {
    const config = loadConfig({
      ...REQUIRED,
      AI_ENDPOINT: 'https://api.example.com/v1',
      AI_MODEL: 'gpt-4o-mini',
    });
    expect(config.ai).toEqual({
      endpoint: 'https://api.example.com/v1',
      apiKey: undefined,
      model: 'gpt-4o-mini',
      systemPrompt: DEFAULT_SYSTEM_PROMPT,
      historyLimit: 10,
      timeoutMs: 20_000,
      maxPerMinute: 10,
    });
  });

  it('reads explicit values and numbers', () => {
    const config = loadConfig({
      ...REQUIRED,
      MONGODB_URI: 'mongodb://127.0.0.1:27017',
      MONGODB_DATABASE: 'bot_test',
      WHATSAPP_ACCESS_TOKEN: 'EAAGm0PX4ZCpsBAtoken',
      WHATSAPP_GRAPH_URL: 'http://127.0.0.1:9999/',
      WHATSAPP_API_VERSION: 'v23.0',
      AI_ENDPOINT: 'https://res.openai.azure.com/openai/v1',
      AI_MODEL: 'gpt-4o',
      AI_HISTORY_LIMIT: '0',
      AI_TIMEOUT_MS: '5000',
      AI_MAX_PER_MINUTE: '3',
      RETENTION_DAYS: '30',
      PORT: '8080',
    });
    expect(config.mongodb).toEqual({ uri: 'mongodb://127.0.0.1:27017', database: 'bot_test' });
    expect(config.whatsapp.graphUrl).toBe('http://127.0.0.1:9999');
    expect(config.whatsapp.apiVersion).toBe('v23.0');
    expect(config.ai?.historyLimit).toBe(0);
    expect(config.ai?.timeoutMs).toBe(5000);
    expect(config.ai?.maxPerMinute).toBe(3);
    expect(config.retentionDays).toBe(30);
    expect(config.port).toBe(8080);
  });

  it('trims the trailing slash of AI_ENDPOINT', () => {
    const config = loadConfig({
      ...REQUIRED,
      AI_ENDPOINT: 'https://res.openai.azure.com/openai/v1/',
      AI_MODEL: 'm',
    });
    expect(config.ai?.endpoint).toBe('https://res.openai.azure.com/openai/v1');
    const many = loadConfig({ ...REQUIRED, AI_ENDPOINT: 'https://api.example.com/v1///', AI_MODEL: 'm' });
    expect(many.ai?.endpoint).toBe('https://api.example.com/v1');
  });

  it('returns a frozen config', () => {
    const config = loadConfig(REQUIRED);
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.whatsapp)).toBe(true);
  });

  it('names every missing required variable in one message', () => {
    const error = configError({});
    expect(error.message).toContain('WHATSAPP_VERIFY_TOKEN is missing');
    expect(error.message).toContain('WHATSAPP_APP_SECRET is missing');
  });

  it('does not echo any provided secret value', () => {
    const env = {
      WHATSAPP_ACCESS_TOKEN: 'EAAGsecretAccessToken123',
      AI_API_KEY: 'sk-secret-ai-key-987',
      MANAGE_API_TOKEN: 'tooShortTok',
      MONGODB_URI: 'mongodb://admin:hunter2pass@db.example.com',
      WHATSAPP_VERIFY_TOKEN: '   ',
      WEBSITE_INSTANCE_ID: 'abc123',
      WEBSITE_SITE_NAME: 'func-bot',
    };
    const error = configError(env);
    expect(error.message).toContain('WHATSAPP_VERIFY_TOKEN is missing');
    expect(error.message).toContain('WHATSAPP_APP_SECRET is missing');
    expect(error.message).toContain('MANAGE_API_TOKEN');
    expectNoValues(error.message, env);
    expect(JSON.stringify({ message: error.message })).not.toMatch(
      /hunter2|sk-secret|EAAGsecret|tooShortTok/,
    );
  });

  // The brief gives MANAGE_API_TOKEN no length: `npm run dev` takes any token a client sets.
  // In Azure a bootstrap token under 16 characters is refused (fail fast), never echoed.
  it('takes a short MANAGE_API_TOKEN locally and refuses it in Azure, naming it without its value', () => {
    expect(loadConfig({ ...REQUIRED, MANAGE_API_TOKEN: 'test-token' }).manageApiToken).toBe('test-token');
    const azure = { WEBSITE_INSTANCE_ID: 'abc123', WEBSITE_SITE_NAME: 'func-bot' };
    const error = configError({ ...REQUIRED, ...azure, MANAGE_API_TOKEN: 'test-token' });
    expect(error.message).toContain('MANAGE_API_TOKEN must be at least 16 characters');
    expect(error.message).not.toContain('test-token');
    const long = 'a-long-enough-bootstrap-token';
    expect(loadConfig({ ...REQUIRED, ...azure, MANAGE_API_TOKEN: long }).manageApiToken).toBe(long);
  });

  // The brief's default is a supported version; a client's Graph stand-in may be set up with an
  // older one (Meta's examples use v17.0 and the like). Only Azure, which calls the real Graph API,
  // refuses an expired one.
  it('takes an expired WHATSAPP_API_VERSION locally and refuses it in Azure', () => {
    expect(loadConfig({ ...REQUIRED, WHATSAPP_API_VERSION: 'v17.0' }).whatsapp.apiVersion).toBe('v17.0');
    const azure = { WEBSITE_INSTANCE_ID: 'abc123', WEBSITE_SITE_NAME: 'func-bot' };
    const error = configError({ ...REQUIRED, ...azure, WHATSAPP_API_VERSION: 'v20.0' });
    expect(error.message).toContain('WHATSAPP_API_VERSION names an expired Graph API version');
    expect(loadConfig({ ...REQUIRED, ...azure, WHATSAPP_API_VERSION: 'v21.0' }).whatsapp.apiVersion).toBe(
      'v21.0',
    );
  });

  it('treats an unresolved Key Vault reference as missing, without echoing it', () => {
    const reference = '@Microsoft.KeyVault(SecretUri=https://kv-bot.vault.azure.net/secrets/app-secret/)';
    const env = { WHATSAPP_VERIFY_TOKEN: 'verify', WHATSAPP_APP_SECRET: reference };
    const error = configError(env);
    expect(error.message).toContain('WHATSAPP_APP_SECRET is missing');
    expect(error.message).not.toContain('vault.azure.net');
    expect(error.message).not.toContain('WHATSAPP_VERIFY_TOKEN');

    const lower = configError({
      ...env,
      WHATSAPP_APP_SECRET: ' @microsoft.keyvault(VaultName=kv;SecretName=s) ',
    });
    expect(lower.message).toContain('WHATSAPP_APP_SECRET is missing');
  });

  it('treats an unresolved Key Vault reference in an optional setting as unset', () => {
    const config = loadConfig({
      ...REQUIRED,
      WHATSAPP_ACCESS_TOKEN: '@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/token/)',
    });
    expect(config.whatsapp.accessToken).toBeUndefined();
  });

  it('requires AI_MODEL with AI_ENDPOINT', () => {
    const error = configError({ ...REQUIRED, AI_ENDPOINT: 'https://api.example.com/v1' });
    expect(error.message).toContain('AI_MODEL');
    expect(error.message).toContain('AI_ENDPOINT');
    expect(error.message).not.toContain('api.example.com');
  });

  it.each([
    ['AI_TIMEOUT_MS', '12abc34'],
    ['AI_HISTORY_LIMIT', '4321'],
    ['AI_MAX_PER_MINUTE', '-7777'],
    ['PORT', '987654'],
    ['RETENTION_DAYS', '2.5e9'],
  ])('names %s for a bad number without echoing %s', (name, value) => {
    const error = configError({
      ...REQUIRED,
      AI_ENDPOINT: 'https://api.example.com/v1',
      AI_MODEL: 'm',
      [name]: value,
    });
    expect(error.message).toContain(name);
    expect(error.message).not.toContain(value);
    expect(error.message).not.toContain(`${name} is missing`);
  });

  it('names a bad URL or version without echoing it', () => {
    const env = {
      ...REQUIRED,
      WHATSAPP_GRAPH_URL: 'ftp://graph.internal.example',
      WHATSAPP_API_VERSION: 'latest25',
    };
    const error = configError(env);
    expect(error.message).toContain('WHATSAPP_GRAPH_URL');
    expect(error.message).toContain('WHATSAPP_API_VERSION');
    expectNoValues(error.message, env);
  });
});

describe('numeric settings', () => {
  it('take whole numbers in plain digits only, and say the range', () => {
    expect(loadConfig({ ...REQUIRED, HANDOFF_HOURS: ' 12 ', PORT: '8080' })).toMatchObject({
      handoffHours: 12,
      port: 8080,
    });
    // Number() would read these as 10, 16, 5 and 12: a typo must not become a setting.
    for (const value of ['1e1', '0x10', '+5', '12.0', '-1', 'twelve', '1_0']) {
      expect(configError({ ...REQUIRED, HANDOFF_HOURS: value }).message, value).toBe(
        'Invalid configuration: HANDOFF_HOURS must be a whole number from 1 to 720, in plain digits',
      );
    }
    expect(configError({ ...REQUIRED, AI_HISTORY_LIMIT: '101' }).message).toBe(
      'Invalid configuration: AI_HISTORY_LIMIT must be a whole number from 0 to 100',
    );
  });
});

describe('databaseName (the one rule for MONGODB_DATABASE, used by loadConfig and the scripts)', () => {
  it('defaults to whatsapp_chatbot when unset, empty or an unresolved Key Vault reference', () => {
    expect(databaseName({})).toBe('whatsapp_chatbot');
    expect(databaseName({ MONGODB_DATABASE: '  ' })).toBe('whatsapp_chatbot');
    expect(databaseName({ MONGODB_DATABASE: '@Microsoft.KeyVault(SecretUri=https://v/secrets/db)' })).toBe(
      'whatsapp_chatbot',
    );
    expect(databaseName({ MONGODB_DATABASE: 'bot_test-2' })).toBe('bot_test-2');
  });

  it('refuses what loadConfig refuses, with a CONFIG error naming the variable', () => {
    for (const bad of ['has space', 'dot.name', 'x'.repeat(64)]) {
      expect(() => databaseName({ MONGODB_DATABASE: bad })).toThrow(/MONGODB_DATABASE must be 1-63/);
      expect(configError({ ...REQUIRED, MONGODB_DATABASE: bad }).message).toContain('MONGODB_DATABASE');
    }
  });
});

describe('empty settings', () => {
  it('count as missing for defaulted and optional settings (an App Setting left blank)', () => {
    const config = loadConfig({
      ...REQUIRED,
      WHATSAPP_GRAPH_URL: '',
      AI_ENDPOINT: ' ',
      AI_TIMEOUT_MS: '',
      RETENTION_DAYS: '',
      HANDOFF_HOURS: '',
      PORT: '',
    });
    expect(config.whatsapp.graphUrl).toBe('https://graph.facebook.com');
    expect(config.ai).toBeUndefined();
    expect(config.retentionDays).toBeUndefined();
    expect(config.handoffHours).toBe(24);
    expect(config.port).toBe(7071);
    expect(
      loadConfig({ ...REQUIRED, AI_ENDPOINT: 'https://ai.example.com', AI_MODEL: 'm', AI_TIMEOUT_MS: '' }).ai,
    ).toMatchObject({ timeoutMs: 20_000, historyLimit: 10, maxPerMinute: 10 });
  });
});

describe('secrets, keys and connection strings as people paste them', () => {
  // Before, they were used as given: an app secret with a line break (a Key Vault secret set from a
  // file) failed every signature (401 for every POST), and a MANAGE_API_TOKEN with outer spaces or a
  // space inside could never sign in (a bearer token is one word), all without a word at start.
  it('drops outer whitespace and line breaks', () => {
    const config = loadConfig({
      WHATSAPP_VERIFY_TOKEN: ' verify-token-4b1c9e ',
      WHATSAPP_APP_SECRET: 'app-secret-8f2d71aa\n',
      WHATSAPP_ACCESS_TOKEN: '\tEAAGtoken123\r\n',
      WHATSAPP_API_VERSION: ' v25.0 ',
      AI_ENDPOINT: ' https://ai.example.com/v1/ ',
      AI_API_KEY: ' sk-key-1 ',
      AI_MODEL: 'gpt-4o-mini ',
      MANAGE_API_TOKEN: ' manage-token-0123456789 ',
      MONGODB_URI: ' mongodb://127.0.0.1:27017/ ',
    });
    expect(config.whatsapp).toMatchObject({
      verifyToken: 'verify-token-4b1c9e',
      appSecret: 'app-secret-8f2d71aa',
      accessToken: 'EAAGtoken123',
      apiVersion: 'v25.0',
    });
    expect(config.ai).toMatchObject({
      endpoint: 'https://ai.example.com/v1',
      apiKey: 'sk-key-1',
      model: 'gpt-4o-mini',
    });
    expect(config.manageApiToken).toBe('manage-token-0123456789');
    expect(config.mongodb.uri).toBe('mongodb://127.0.0.1:27017/');
  });

  it.each([
    ['WHATSAPP_APP_SECRET', '"app-secret-8f2d71aa"'],
    ['WHATSAPP_VERIFY_TOKEN', "'verify-token-4b1c9e'"],
    ['WHATSAPP_ACCESS_TOKEN', ' "EAAGtoken123" '],
    ['AI_API_KEY', '`sk-key-1`'],
    ['MANAGE_API_TOKEN', '"manage-token-0123456789"'],
    ['MONGODB_URI', '"mongodb://admin:hunter2pass@db.example.com"'],
  ])('refuses %s still in its quotes, naming it without its value', (name, value) => {
    const env = { ...REQUIRED, AI_ENDPOINT: 'https://ai.example.com/v1', AI_MODEL: 'm', [name]: value };
    const error = configError(env);
    expect(error.message).toBe(
      `Invalid configuration: ${name} is wrapped in quotes: set the value without them`,
    );
    expect(error.message).not.toContain(value.trim().slice(1, -1));
  });

  it('takes a quote inside a value', () => {
    expect(loadConfig({ ...REQUIRED, WHATSAPP_VERIFY_TOKEN: 'it"s-mine' }).whatsapp.verifyToken).toBe(
      'it"s-mine',
    );
  });

  it('refuses a MANAGE_API_TOKEN with a space inside, without its value', () => {
    const error = configError({ ...REQUIRED, MANAGE_API_TOKEN: 'my manage token' });
    expect(error.message).toBe(
      'Invalid configuration: MANAGE_API_TOKEN must not contain whitespace (a bearer token is one word)',
    );
  });
});

describe('URL settings without their scheme', () => {
  // Before, one mistake read as two: `AI_ENDPOINT Invalid URL; AI_ENDPOINT must be an http(s) URL`.
  it.each(['WHATSAPP_GRAPH_URL', 'AI_ENDPOINT'])('%s: one problem, saying what a URL looks like', (name) => {
    const env = { ...REQUIRED, AI_MODEL: 'm', [name]: 'api.example.com/v1' };
    expect(configError(env).message).toBe(
      `Invalid configuration: ${name} must be an http(s) URL with its scheme, such as https://example.com`,
    );
  });
});
