// The chat simulator of `npm run dev` in headless Chromium: what a developer types reaches the
// webhook signed as Meta sends it, and the bot's replies come back with their delivery status.
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { definitions } from '../../functions/definitions';
import { SIMULATOR_CSP } from '../../scripts/dev/simulator-page';
import { SIMULATED_BUSINESS } from '../../scripts/dev/simulator';
import { createDataStore, type DataStore, type Message } from '../../shared/data';
import { userIdOf } from '../helpers/users';
import { launchChromium } from '../helpers/browser';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { freePort, startDev, waitFor, type DevProcess } from '../helpers/dev-process';

// Browser globals as the page functions below see them (the project's tsconfig has no DOM lib).
declare const document: {
  querySelectorAll(selector: string): { length: number };
  querySelector(selector: string): { textContent: string | null } | null;
};

const CHROMIUM = inject('chromiumPath');
const OUTPUT = path.resolve(__dirname, '../../test-output');

interface Chat {
  database: TestDatabase;
  data: DataStore;
  dev: DevProcess;
  browser: Browser;
  page: Page;
  errors: string[];
}

async function openChat(label: string, env: Record<string, string> = {}): Promise<Chat> {
  mkdirSync(OUTPUT, { recursive: true });
  const database = await testDatabase(label);
  const dev = await startDev({ MONGODB_URI: database.uri, MONGODB_DATABASE: database.dbName, ...env });
  const browser = await launchChromium(CHROMIUM);
  const page = await browser.newPage({ viewport: { width: 900, height: 900 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return { database, data: createDataStore(database.db), dev, browser, page, errors };
}

async function closeChat(chat: Chat | undefined): Promise<void> {
  await chat?.browser.close();
  await chat?.dev.stop();
  await chat?.database.drop();
}

async function startChatting(chat: Chat, name: string, waId: string): Promise<void> {
  const response = await chat.page.goto(`${chat.dev.url}/api/dev/chat`);
  expect(response?.status()).toBe(200);
  expect(response?.headers()['content-security-policy']).toBe(SIMULATOR_CSP);
  await chat.page.fill('#name', name);
  await chat.page.fill('#number', waId);
  await chat.page.click('#start');
  await chat.page.waitForSelector('#chat:not([hidden])');
}

async function say(page: Page, text: string): Promise<void> {
  await page.fill('#text', text);
  await page.click('#send');
}

const conversation = async (data: DataStore, waId: string): Promise<Message[]> =>
  [
    ...(await data.manage.listMessages({ userId: await userIdOf(data, waId), limit: 50, after: null })).items,
  ].reverse();

const bubbles = (page: Page) =>
  page.$$eval('#messages li', (items) =>
    items.map((li) => ({
      direction: li.className,
      type: li.getAttribute('data-type'),
      status: li.querySelector('.status')?.textContent ?? '',
      text: li.querySelector('.text')?.textContent ?? '',
    })),
  );

it('is served only by the local host, never registered with the Functions host', () => {
  const routes = definitions.flatMap((d) => (d.kind === 'http' ? [d.route] : []));
  expect(routes.length).toBeGreaterThan(3);
  expect(routes.filter((route) => /^dev(\/|$)/.test(route))).toEqual([]);
});

describe.skipIf(!CHROMIUM)('chat simulator, dry run (no settings)', () => {
  let chat: Chat;
  const WA_ID = '34600111222';

  beforeAll(async () => {
    chat = await openChat('simulator_dry');
  }, 120_000);
  afterAll(() => closeChat(chat));

  it('npm run dev prints where the simulator and the dashboard are, and where a token comes from', () => {
    expect(chat.dev.output()).toContain(`chat simulator (development only): ${chat.dev.url}/api/dev/chat\n`);
    expect(chat.dev.output()).toContain(
      `dashboard: ${chat.dev.url}/api/manage/ (sign in with a token from \`npm run token -- create --name NAME\`)\n`,
    );
  });

  it('a typed message reaches the bot, and its reply appears as not_sent', async () => {
    await startChatting(chat, 'Ana Dev', WA_ID);
    await say(chat.page, 'hello there, café?');
    await chat.page.waitForSelector('#messages li.outbound .status-not_sent');
    const shown = await bubbles(chat.page);
    expect(shown[0]).toMatchObject({ direction: 'inbound', type: 'text', text: 'hello there, café?' });
    expect(shown[1]).toMatchObject({ direction: 'outbound', status: 'not_sent' });
    expect(shown[1]?.text.length).toBeGreaterThan(0);
    expect(await chat.page.locator('#mode').textContent()).toContain('Dry run');

    const stored = await conversation(chat.data, WA_ID);
    expect(stored.map((m) => [m.direction, m.text])).toEqual([
      ['inbound', 'hello there, café?'],
      ['outbound', shown[1]?.text],
    ]);
    expect(stored[1]?.relatedId).toBe(stored[0]?.id);
    const user = await chat.data.users.getUser(await userIdOf(chat.data, WA_ID));
    expect(user).toMatchObject({ name: 'Ana Dev', waId: WA_ID, messageCount: 2 });
  });

  it('sends a location, stored as one and answered', async () => {
    await chat.page.fill('#text', 'Fake Cafe');
    await chat.page.click('#send-location');
    await chat.page.waitForFunction(() => document.querySelectorAll('#messages li.outbound').length === 2);
    const stored = await conversation(chat.data, WA_ID);
    const location = stored.find((m) => m.type === 'location');
    expect(location).toMatchObject({ direction: 'inbound', text: '[location] Fake Cafe 1 Fake Street' });
    expect(stored.at(-1)).toMatchObject({ direction: 'outbound', relatedId: location?.id });
    expect((await bubbles(chat.page)).at(-2)).toMatchObject({
      type: 'location',
      text: '[location] Fake Cafe 1 Fake Street',
    });
  });

  it('reacts to the bot’s last message: stored, linked, not answered', async () => {
    const before = await conversation(chat.data, WA_ID);
    const lastReply = before.at(-1);
    await chat.page.click('#send-reaction');
    const reaction = await waitFor(async () =>
      (await conversation(chat.data, WA_ID)).find((m) => m.type === 'reaction'),
    );
    expect(reaction).toMatchObject({ direction: 'inbound', relatedId: lastReply?.id });
    await chat.page.waitForSelector('#messages li[data-type="reaction"]');
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await conversation(chat.data, WA_ID)).filter((m) => m.direction === 'outbound')).toHaveLength(2);
    await chat.page.screenshot({ path: path.join(OUTPUT, 'simulator-dry-run.png'), fullPage: true });
  });

  it('refuses bad input with a clear error and stores nothing', async () => {
    const count = (await conversation(chat.data, WA_ID)).length;
    const response = await fetch(`${chat.dev.url}/api/dev/chat/send`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ kind: 'text', waId: '12ab', name: 'X', text: 'hi' }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toEqual({
      error: { code: 'INVALID_INPUT', message: 'waId: a number is 6 to 15 digits, country code first' },
    });
    expect((await conversation(chat.data, WA_ID)).length).toBe(count);
    // The business's own number: what it sends is an echo, which the bot never answers.
    const own = await fetch(`${chat.dev.url}/api/dev/chat/send`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        kind: 'text',
        waId: SIMULATED_BUSINESS.displayPhoneNumber,
        name: 'X',
        text: 'hi',
      }),
    });
    expect(own.status).toBe(400);
    expect(((await own.json()) as { error: { message: string } }).error.message).toMatch(
      /is the simulated business's own number: pick another/,
    );
    expect(chat.errors).toEqual([]);
  });

  it('takes a number as people write it, and says when the app cannot be reached, keeping what was typed', async () => {
    const { page } = chat;
    await page.goto(`${chat.dev.url}/api/dev/chat`);
    await page.fill('#name', '   ');
    await page.click('#start');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.locator('#error').textContent()).toContain('a name and a number');

    await page.fill('#name', 'Plus Spaces');
    await page.fill('#number', '+34 600 111 333');
    await page.click('#start');
    await page.waitForSelector('#chat:not([hidden])');
    await page.waitForSelector('#error', { state: 'hidden' });

    const pageErrors = chat.errors.length;
    await page.route('**/api/dev/chat/**', (route) => route.abort('connectionrefused'));
    await say(page, 'still there?');
    await page.waitForFunction(
      () => document.querySelector('#error')?.textContent?.includes('cannot be reached') === true,
    );
    expect(await page.inputValue('#text')).toBe('still there?');
    await page.unroute('**/api/dev/chat/**');
    // Gone at the first poll (every second) that gets an answer, however long a loaded machine
    // takes to give it: no fixed 5 s.
    await page.waitForSelector('#error', { state: 'hidden' });
    await page.click('#send');
    await page.waitForSelector('#messages li.outbound .status-not_sent');
    expect((await conversation(chat.data, '34600111333')).map((m) => [m.direction, m.text])[0]).toEqual([
      'inbound',
      'still there?',
    ]);
    // The refused requests are the browser's own lines; the page itself threw nothing.
    expect(chat.errors.slice(pageErrors).filter((e) => !e.startsWith('Failed to load resource'))).toEqual([]);
  });

  it('answers only this machine: not another site (CSRF), a rebound name or a tunnel', async () => {
    // The simulator signs whatever it is sent and reads anyone's conversation without a token:
    // a web page the developer visits, or anyone reaching the dev server through a tunnel for
    // Meta's webhooks, must not use it.
    const count = (await conversation(chat.data, WA_ID)).length;
    const url = new URL(chat.dev.url);
    const request = (method: string, route: string, headers: Record<string, string>, body?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request(
          { host: url.hostname, port: url.port, method, path: `/api/dev/chat${route}`, headers },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const send = JSON.stringify({ kind: 'text', waId: WA_ID, name: 'Eve', text: 'forged' });
    const read = `/messages?waId=${WA_ID}`;
    // A page of another site posting without a preflight (text/plain), and one on this machine.
    for (const origin of ['https://evil.example', 'http://localhost:3000', 'null'])
      expect(await request('POST', '/send', { 'Content-Type': 'text/plain', Origin: origin }, send)).toBe(
        403,
      );
    // DNS rebinding: evil.example resolved to 127.0.0.1, the browser's request is same-origin.
    expect(await request('GET', read, { Host: `evil.example:${url.port}` })).toBe(403);
    expect(
      await request('POST', '/send', { Host: 'evil.example', 'Content-Type': 'application/json' }, send),
    ).toBe(403);
    // A tunnel (ngrok, cloudflared, dev tunnels) says whom it forwards for.
    for (const forwarded of [
      { 'X-Forwarded-For': '203.0.113.7' },
      { Forwarded: 'for=203.0.113.7' },
      { 'X-Forwarded-Host': 'abc.ngrok.app' },
    ])
      expect(await request('GET', read, forwarded)).toBe(403);
    expect((await conversation(chat.data, WA_ID)).length).toBe(count);
    // This machine's own requests still work, with the same-origin Origin a page sends.
    expect(await request('GET', read, {})).toBe(200);
    expect(await request('GET', read, { Host: `localhost:${url.port}` })).toBe(200);
    expect(await request('GET', '', { Origin: chat.dev.url })).toBe(200);
  });
});

describe.skipIf(!CHROMIUM)('chat simulator with its Graph stand-in', () => {
  let chat: Chat;
  const WA_ID = '4915100000';

  beforeAll(async () => {
    const port = await freePort();
    chat = await openChat('simulator_graph', {
      PORT: String(port),
      WHATSAPP_ACCESS_TOKEN: 'EAA-simulator-token',
      WHATSAPP_GRAPH_URL: `http://127.0.0.1:${port}/api/dev/graph`,
    });
  }, 120_000);
  afterAll(() => closeChat(chat));

  it('shows a reply as sent, then delivered and read as the user’s phone reports them', async () => {
    await startChatting(chat, 'Bob Dev', WA_ID);
    await say(chat.page, 'help');
    await chat.page.waitForSelector('#messages li.outbound .status-sent');
    expect(await chat.page.locator('#mode').textContent()).toContain('Graph API');

    await chat.page.click('#messages li.outbound .mark-delivered');
    await chat.page.waitForSelector('#messages li.outbound .status-delivered');
    await chat.page.click('#messages li.outbound .mark-read');
    await chat.page.waitForSelector('#messages li.outbound .status-read');
    const reply = (await conversation(chat.data, WA_ID)).find((m) => m.direction === 'outbound');
    expect(reply).toMatchObject({ status: 'read', waMessageId: expect.stringMatching(/^wamid\.SIMOUT/) });

    await chat.page.click('#send-image');
    await chat.page.waitForSelector('#messages li[data-type="image"]');
    await chat.page.waitForFunction(() => document.querySelectorAll('#messages li.outbound').length === 2);
    expect((await conversation(chat.data, WA_ID)).map((m) => [m.direction, m.type, m.status])).toEqual([
      ['inbound', 'text', 'read'],
      ['outbound', 'text', 'read'],
      ['inbound', 'image', 'read'],
      ['outbound', 'text', 'sent'],
    ]);
    await chat.page.screenshot({ path: path.join(OUTPUT, 'simulator-graph.png'), fullPage: true });
    expect(chat.errors).toEqual([]);
  });
});
