// `npm run setup:whatsapp -- --waba-id <id> --app-url <url>`: subscribes the Meta app that owns
// WHATSAPP_ACCESS_TOKEN to the webhooks of a WhatsApp Business Account
// (POST /{waba-id}/subscribed_apps) and prints the callback URL and verify token to enter in Meta's
// App Dashboard. Never prints the access token.

const USAGE = `Usage: npm run setup:whatsapp -- --waba-id <id> (--app-url <url> | --callback-url <url>) [--override-callback]

Subscribes your Meta app to the WhatsApp Business Account's webhooks and prints the values to
enter in the App Dashboard (WhatsApp > Configuration > Webhook).

Options:
  --waba-id <id>         WhatsApp Business Account id (digits)
  --app-url <url>        base URL of the Function App, e.g. https://func-abc.azurewebsites.net
                         (the callback URL is <app-url>/api/webhook)
  --callback-url <url>   the full callback URL instead of --app-url
  --override-callback    also send the callback URL and verify token to Meta for this account
                         (override_callback_uri); Meta verifies the webhook at once
  -h, --help             show this help

Environment:
  WHATSAPP_ACCESS_TOKEN  Graph API token with whatsapp_business_management (required, never printed)
  WHATSAPP_VERIFY_TOKEN  the verify token the app was deployed with (required)
  WHATSAPP_GRAPH_URL     Graph API base URL (default https://graph.facebook.com)
  WHATSAPP_API_VERSION   Graph API version (default v25.0)
`;

const DEFAULT_GRAPH_URL = 'https://graph.facebook.com';
const DEFAULT_API_VERSION = 'v25.0';
const TIMEOUT_MS = 15_000;

export type Env = Readonly<Record<string, string | undefined>>;

interface Io {
  out(line: string): void;
  err(line: string): void;
}

interface Options {
  wabaId: string;
  callbackUrl: string;
  overrideCallback: boolean;
}

class UsageError extends Error {}

/** Empty values and unresolved Key Vault references count as missing (as in shared/config.ts). */
function setting(env: Env, name: string): string | undefined {
  const value = env[name]?.trim();
  return value && !/^@Microsoft\.KeyVault\(/i.test(value) ? value : undefined;
}

function httpsUrl(value: string, flag: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${flag} must be a URL`);
  }
  if (url.protocol !== 'https:')
    throw new UsageError(`${flag} must be an https URL (Meta only calls HTTPS callbacks)`);
  return url;
}

/** Parses the command line; null when help was asked for. */
function parseArgs(args: readonly string[]): Options | null {
  const values = new Map<string, string>();
  let overrideCallback = false;
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] ?? '';
    if (arg === '-h' || arg === '--help') return null;
    if (arg === '--override-callback') {
      overrideCallback = true;
      continue;
    }
    const match = /^--(waba-id|app-url|callback-url)(?:=(.*))?$/.exec(arg);
    if (!match?.[1]) throw new UsageError(`unknown argument: ${arg}`);
    const value = match[2] ?? args[(i += 1)];
    if (value === undefined || value === '') throw new UsageError(`--${match[1]} needs a value`);
    values.set(match[1], value);
  }
  const wabaId = values.get('waba-id');
  if (!wabaId) throw new UsageError('--waba-id is required');
  if (!/^\d+$/.test(wabaId))
    throw new UsageError('--waba-id must be the numeric WhatsApp Business Account id');
  const appUrl = values.get('app-url');
  const callback = values.get('callback-url');
  if (appUrl && callback) throw new UsageError('give either --app-url or --callback-url, not both');
  let callbackUrl: string;
  if (callback) {
    callbackUrl = httpsUrl(callback, '--callback-url').toString();
  } else if (appUrl) {
    callbackUrl = `${httpsUrl(appUrl, '--app-url').toString().replace(/\/+$/, '')}/api/webhook`;
  } else {
    throw new UsageError('--app-url (or --callback-url) is required');
  }
  return { wabaId, callbackUrl, overrideCallback };
}

interface GraphSettings {
  accessToken: string;
  verifyToken: string;
  graphUrl: string;
  apiVersion: string;
}

function graphSettings(env: Env): GraphSettings {
  const missing = ['WHATSAPP_ACCESS_TOKEN', 'WHATSAPP_VERIFY_TOKEN'].filter((name) => !setting(env, name));
  if (missing.length) throw new UsageError(`${missing.join(' and ')} must be set in the environment`);
  const graphUrl = (setting(env, 'WHATSAPP_GRAPH_URL') ?? DEFAULT_GRAPH_URL).replace(/\/+$/, '');
  if (!/^https?:\/\/[^/\s]+/i.test(graphUrl))
    throw new UsageError('WHATSAPP_GRAPH_URL must be an http(s) URL');
  const apiVersion = setting(env, 'WHATSAPP_API_VERSION') ?? DEFAULT_API_VERSION;
  if (!/^v\d+\.\d+$/.test(apiVersion)) throw new UsageError('WHATSAPP_API_VERSION must look like v25.0');
  return {
    accessToken: setting(env, 'WHATSAPP_ACCESS_TOKEN') ?? '',
    verifyToken: setting(env, 'WHATSAPP_VERIFY_TOKEN') ?? '',
    graphUrl,
    apiVersion,
  };
}

/** Meta's error envelope, reduced to what is safe to print. */
function describeGraphError(status: number, body: string, accessToken: string): string {
  let detail = '';
  try {
    const error = (
      JSON.parse(body) as { error?: { message?: unknown; code?: unknown; error_subcode?: unknown } }
    ).error;
    if (error) {
      const codes = [error.code, error.error_subcode].filter((c) => c !== undefined).join('/');
      detail = `${codes ? ` (code ${codes})` : ''}: ${String(error.message ?? 'no message')}`;
    }
  } catch {
    detail = body ? `: ${body.slice(0, 200)}` : '';
  }
  return `Graph API answered HTTP ${status}${detail}`.split(accessToken).join('[redacted]');
}

/** Runs the command; returns the exit code (0 ok, 1 Graph API failure, 2 usage). */
export async function setupWhatsapp(args: readonly string[], env: Env, io: Io): Promise<number> {
  let options: Options | null;
  let graph: GraphSettings;
  try {
    options = parseArgs(args);
    if (!options) {
      io.out(USAGE);
      return 0;
    }
    graph = graphSettings(env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    io.err(`setup:whatsapp: ${error.message}`);
    io.err('Run with --help for usage.');
    return 2;
  }

  const endpoint = `${graph.graphUrl}/${graph.apiVersion}/${options.wabaId}/subscribed_apps`;
  const body = options.overrideCallback
    ? JSON.stringify({ override_callback_uri: options.callbackUrl, verify_token: graph.verifyToken })
    : undefined;
  let response: Response;
  let text: string;
  try {
    response = await fetch(endpoint, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${graph.accessToken}`,
        Accept: 'application/json',
        ...(body ? { 'Content-Type': 'application/json' } : {}),
      },
      ...(body ? { body } : {}),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    text = await response.text();
  } catch (error) {
    const reason =
      error instanceof Error ? (error.cause instanceof Error ? error.cause.message : error.message) : '';
    io.err(
      `setup:whatsapp: cannot reach the Graph API at ${graph.graphUrl}: ${reason}`
        .split(graph.accessToken)
        .join('[redacted]'),
    );
    return 1;
  }
  if (!response.ok) {
    io.err(
      `setup:whatsapp: subscribing the app failed. ${describeGraphError(response.status, text, graph.accessToken)}`,
    );
    io.err(
      'Check that the token has whatsapp_business_management and belongs to an app with access to this account.',
    );
    return 1;
  }

  io.out(`Subscribed the app to the webhooks of WhatsApp Business Account ${options.wabaId}.`);
  if (options.overrideCallback)
    io.out("Meta now sends this account's notifications to the callback URL below.");
  io.out('');
  io.out("In Meta's App Dashboard, WhatsApp > Configuration > Webhook, enter:");
  io.out(`  Callback URL: ${options.callbackUrl}`);
  io.out(`  Verify token: ${graph.verifyToken}`);
  io.out('then subscribe to the "messages" webhook field.');
  return 0;
}

if (typeof require !== 'undefined' && require.main === module) {
  setupWhatsapp(process.argv.slice(2), process.env, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  })
    .then((code) => {
      process.exitCode = code;
    })
    .catch((error: unknown) => {
      process.stderr.write(`setup:whatsapp: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
}
