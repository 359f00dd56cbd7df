// `npm run setup:whatsapp -- --waba-id <id> --app-url <url>`: subscribes the Meta app that owns
// WHATSAPP_ACCESS_TOKEN to the webhooks of a WhatsApp Business Account
// (POST /{waba-id}/subscribed_apps, through the app's Graph client) and prints the callback URL and
// verify token to enter in Meta's App Dashboard. Never prints the access token.
import { loadGraphSettings } from '../shared/config';
import { AppError, ErrorCode } from '../shared/errors';
import { GraphError, subscribeApp } from '../shared/whatsapp/graph';
import { parseCli, runMain, ScriptError, UsageError, type Main } from './lib/cli';
import { maskUri } from './lib/database';

const HELP = `Usage: npm run setup:whatsapp -- --waba-id <id> (--app-url <url> | --callback-url <url>) [--override-callback]

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

/** An operator waits at the terminal: fewer, shorter retries than the reply worker's. */
const RETRY = { attempts: 3, baseDelayMs: 300, maxDelayMs: 2_000 };

function httpsUrl(value: string, flag: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`${flag} must be an https URL, such as https://func-abc.azurewebsites.net`);
  }
  if (url.protocol !== 'https:')
    throw new UsageError(`${flag} must be an https URL (Meta only calls HTTPS callbacks)`);
  // Meta would send them to whoever reads its logs; the Functions app takes none.
  if (url.username || url.password) throw new UsageError(`${flag} must not carry a user name or password`);
  return url;
}

/** The callback URL Meta calls: --callback-url as given, or <app-url>/api/webhook. */
function callbackUrlOf(appUrl: string | undefined, callback: string | undefined): string {
  if (appUrl && callback) throw new UsageError('give either --app-url or --callback-url, not both');
  if (callback) return httpsUrl(callback, '--callback-url').toString();
  if (!appUrl) throw new UsageError('--app-url (or --callback-url) is required');
  const base = httpsUrl(appUrl, '--app-url');
  // The path is added to the app's base URL: a query or fragment would end up before it
  // (`https://app/?x=1/api/webhook`), and a callback URL given here would get it twice.
  if (base.search || base.hash)
    throw new UsageError(
      '--app-url must be the base URL of the app, without ? or #; use --callback-url for another URL',
    );
  const path = base.pathname.replace(/\/+$/, '');
  if (/\/api\/webhook$/i.test(path))
    throw new UsageError(
      '--app-url is the base URL of the app (without /api/webhook); or give this URL as --callback-url',
    );
  return `${base.origin}${path}/api/webhook`;
}

/** What is safe to print of a Graph failure: status, Meta's codes and message (never the token). */
function describe(error: GraphError): string {
  const codes = [error.graphCode, error.subcode].filter((c) => c !== null).join('/');
  return `Graph API answered HTTP ${error.status ?? '?'}${codes ? ` (code ${codes})` : ''}: ${error.title || 'no message'}`;
}

export const main: Main = async (argv, env, io) => {
  const { values } = parseCli(argv, {
    'waba-id': { type: 'string' },
    'app-url': { type: 'string' },
    'callback-url': { type: 'string' },
    'override-callback': { type: 'boolean' },
  });
  const wabaId = values['waba-id'];
  if (!wabaId) throw new UsageError('--waba-id is required');
  if (!/^\d+$/.test(wabaId))
    throw new UsageError('--waba-id must be the numeric WhatsApp Business Account id');
  const callbackUrl = callbackUrlOf(values['app-url'], values['callback-url']);
  const override = values['override-callback'] === true;
  let graph;
  try {
    graph = loadGraphSettings(env);
  } catch (error) {
    // A missing or bad setting is the operator's to fix, like a bad argument.
    if (error instanceof AppError && error.code === ErrorCode.CONFIG) throw new UsageError(error.message);
    throw error;
  }

  try {
    await subscribeApp(
      { baseUrl: graph.graphUrl, apiVersion: graph.apiVersion, accessToken: graph.accessToken, retry: RETRY },
      wabaId,
      override ? { callbackUrl, verifyToken: graph.verifyToken } : undefined,
    );
  } catch (error) {
    if (!(error instanceof GraphError)) throw error;
    if (error.status === null)
      throw new ScriptError(`cannot reach the Graph API at ${maskUri(graph.graphUrl)}: ${error.title}`);
    throw new ScriptError(
      `subscribing the app failed. ${describe(error)}\n` +
        'Check that the token has whatsapp_business_management and belongs to an app with access to this account.',
    );
  }

  io.out(`Subscribed the app to the webhooks of WhatsApp Business Account ${wabaId}.`);
  if (override) io.out("Meta now sends this account's notifications to the callback URL below.");
  io.out('');
  io.out("In Meta's App Dashboard, WhatsApp > Configuration > Webhook, enter:");
  io.out(`  Callback URL: ${callbackUrl}`);
  io.out(`  Verify token: ${graph.verifyToken}`);
  io.out('then subscribe to the "messages" webhook field.');
  return 0;
};

if (require.main === module) runMain(main, HELP);
