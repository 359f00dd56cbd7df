// `npm run setup:whatsapp` against a loopback Graph API stub: the request it makes, what it prints,
// and its exit codes. The script runs as a child process, as an operator would run it.
import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const SCRIPT = path.join(ROOT, 'scripts', 'setup-whatsapp.ts');
const TSX = path.join(ROOT, 'node_modules', '.bin', process.platform === 'win32' ? 'tsx.cmd' : 'tsx');

const ACCESS_TOKEN = 'EAAG-test-access-token-0123456789';
const VERIFY_TOKEN = 'verify-token-for-tests-0123456789';

interface Recorded {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

let server: Server;
let graphUrl: string;
let requests: Recorded[] = [];
let reply: { status: number; body: unknown } = { status: 200, body: { success: true } };

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      requests.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      res.writeHead(reply.status, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(reply.body));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  graphUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
});

beforeEach(() => {
  requests = [];
  reply = { status: 200, body: { success: true } };
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the script with only the given settings (nothing inherited from this process's WHATSAPP_*). */
function runScript(args: readonly string[], settings: Record<string, string>): Promise<Run> {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'], HOME: process.env['HOME'], ...settings };
  return new Promise((resolve, reject) => {
    const child = spawn(TSX, [SCRIPT, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

const settings = (extra: Record<string, string> = {}): Record<string, string> => ({
  WHATSAPP_ACCESS_TOKEN: ACCESS_TOKEN,
  WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
  WHATSAPP_GRAPH_URL: graphUrl,
  ...extra,
});

describe('setup:whatsapp', () => {
  it('subscribes the app to the account and prints what to enter in the dashboard', async () => {
    const run = await runScript(
      ['--waba-id', '102290129340398', '--app-url', 'https://func-abc.azurewebsites.net/'],
      settings(),
    );
    expect(run.code).toBe(0);
    expect(requests).toHaveLength(1);
    const [request] = requests;
    expect(request?.method).toBe('POST');
    expect(request?.url).toBe('/v25.0/102290129340398/subscribed_apps');
    expect(request?.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(request?.body).toBe('');
    expect(run.stdout).toContain('Callback URL: https://func-abc.azurewebsites.net/api/webhook');
    expect(run.stdout).toContain(`Verify token: ${VERIFY_TOKEN}`);
    expect(run.stdout + run.stderr).not.toContain(ACCESS_TOKEN);
  });

  it('uses the configured API version and an explicit callback URL', async () => {
    const run = await runScript(
      ['--waba-id=42', '--callback-url=https://bot.example.com/custom/hook'],
      settings({ WHATSAPP_API_VERSION: 'v24.0' }),
    );
    expect(run.code).toBe(0);
    expect(requests.map((r) => r.url)).toEqual(['/v24.0/42/subscribed_apps']);
    expect(run.stdout).toContain('Callback URL: https://bot.example.com/custom/hook');
  });

  it('sends the callback override when asked', async () => {
    const run = await runScript(
      ['--waba-id', '42', '--app-url', 'https://func-abc.azurewebsites.net', '--override-callback'],
      settings(),
    );
    expect(run.code).toBe(0);
    expect(requests[0]?.headers['content-type']).toBe('application/json');
    expect(JSON.parse(requests[0]?.body ?? '')).toEqual({
      override_callback_uri: 'https://func-abc.azurewebsites.net/api/webhook',
      verify_token: VERIFY_TOKEN,
    });
  });

  it('exits 1 with the Graph error, without the token, when Meta refuses', async () => {
    reply = {
      status: 400,
      body: {
        error: { message: 'Invalid OAuth access token.', type: 'OAuthException', code: 190, fbtrace_id: 'x' },
      },
    };
    const run = await runScript(
      ['--waba-id', '42', '--app-url', 'https://func-abc.azurewebsites.net'],
      settings(),
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('HTTP 400 (code 190): Invalid OAuth access token.');
    expect(run.stdout).not.toContain('Verify token');
    expect(run.stdout + run.stderr).not.toContain(ACCESS_TOKEN);
  });

  it('exits 1 with a clear message when the Graph API cannot be reached', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const run = await runScript(
      ['--waba-id', '42', '--app-url', 'https://func-abc.azurewebsites.net'],
      settings({ WHATSAPP_GRAPH_URL: `http://127.0.0.1:${port}` }),
    );
    expect(run.code).toBe(1);
    expect(run.stderr).toContain('cannot reach the Graph API');
  });

  it('exits 2 without calling Meta when arguments or settings are missing', async () => {
    const noWaba = await runScript(['--app-url', 'https://func-abc.azurewebsites.net'], settings());
    expect(noWaba.code).toBe(2);
    expect(noWaba.stderr).toContain('--waba-id is required');

    const noUrl = await runScript(['--waba-id', '42'], settings());
    expect(noUrl.code).toBe(2);
    expect(noUrl.stderr).toContain('--app-url (or --callback-url) is required');

    const plainHttp = await runScript(
      ['--waba-id', '42', '--app-url', 'http://func-abc.azurewebsites.net'],
      settings(),
    );
    expect(plainHttp.code).toBe(2);
    expect(plainHttp.stderr).toContain('https');

    const noToken = await runScript(['--waba-id', '42', '--app-url', 'https://func-abc.azurewebsites.net'], {
      WHATSAPP_VERIFY_TOKEN: VERIFY_TOKEN,
      WHATSAPP_GRAPH_URL: graphUrl,
    });
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toContain('WHATSAPP_ACCESS_TOKEN');

    expect(requests).toEqual([]);
  });

  it.each([
    [
      'https://func-abc.azurewebsites.net/?code=1',
      /--app-url must be the base URL of the app, without \? or #/,
    ],
    ['https://func-abc.azurewebsites.net/#top', /--app-url must be the base URL of the app, without \? or #/],
    [
      'https://func-abc.azurewebsites.net/api/webhook/',
      /--app-url is the base URL of the app \(without \/api\/webhook\)/,
    ],
    ['https://admin:hunter2@func-abc.azurewebsites.net', /--app-url must not carry a user name or password/],
    ['func-abc.azurewebsites.net', /--app-url must be an https URL, such as https:\/\//],
  ])('refuses --app-url %s (exit 2) without calling Meta', async (appUrl, says) => {
    // Before, the first three printed (and with --override-callback sent Meta) a callback URL that
    // is not the app's: https://…/?code=1/api/webhook, https://…/#top/api/webhook and
    // https://…/api/webhook/api/webhook; the fourth printed the password.
    const run = await runScript(['--waba-id', '42', '--app-url', appUrl, '--override-callback'], settings());
    expect(run.stderr).toMatch(says);
    expect(run.stderr.trim().split('\n')).toHaveLength(1);
    expect(run.code).toBe(2);
    expect(run.stdout + run.stderr).not.toContain('hunter2');
    expect(requests).toEqual([]);
  });

  it('keeps the path of --app-url and drops its trailing slashes', async () => {
    const run = await runScript(
      ['--waba-id', '42', '--app-url', 'https://proxy.example.com:8443/bot//', '--override-callback'],
      settings(),
    );
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('Callback URL: https://proxy.example.com:8443/bot/api/webhook\n');
    expect(JSON.parse(requests[0]?.body ?? '')).toMatchObject({
      override_callback_uri: 'https://proxy.example.com:8443/bot/api/webhook',
    });
  });

  it('prints usage with --help', async () => {
    const run = await runScript(['--help'], {});
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: npm run setup:whatsapp');
    expect(requests).toEqual([]);
  });
});
