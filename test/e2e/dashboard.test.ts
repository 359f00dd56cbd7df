// The inbox dashboard in headless Chromium (found by test/helpers/browser.ts, driven by playwright-core)
// against the management functions on the dev server's router, the real webhook and reply worker,
// a real database and a loopback Graph stub: an operator takes a conversation, replies, hands it
// back; templates outside the 24-hour window; the `human` command; stats; export and erase.
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { manageDefinitionsFor } from '../../functions/manage';
import { openApiDefinition } from '../../functions/openapi';
import { startDevServer, type DevServer } from '../../scripts/dev-server';
import { DEFAULT_ANSWER, HUMAN_ANSWER } from '../../shared/bot/texts';
import { userIdOf } from '../helpers/users';
import { DASHBOARD_CSP } from '../../shared/manage/dashboard';
import { ExportSchema, StatsSchema, UserSchema } from '../../shared/manage/schemas';
import { startTestApp, type TestApp } from '../helpers/app';
import { launchChromium } from '../helpers/browser';
import { PHONE_NUMBER_ID } from '../helpers/meta';
import { parseBody } from '../helpers/shapes';

// Browser globals as the page functions below see them (the project's tsconfig has no DOM lib).
declare const document: {
  querySelector(selector: string): { textContent: string | null; hidden?: boolean } | null;
  querySelectorAll(selector: string): { length: number };
  documentElement: { scrollWidth: number };
};
declare const window: { innerWidth: number };
declare const sessionStorage: {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
};
declare const localStorage: { length: number };

const TOKEN = 'dashboard-token-for-tests-0123456789';
const OUTPUT = path.resolve(__dirname, '../../test-output');
// The README's screenshots: refreshed with UPDATE_SCREENSHOTS=1, else written to test-output/ only.
const DOCS = path.resolve(
  __dirname,
  process.env['UPDATE_SCREENSHOTS'] === '1' ? '../../docs' : '../../test-output',
);
const HOUR = 3_600_000;
const CHROMIUM = inject('chromiumPath');

let app: TestApp;
let server: DevServer;
let browser: Browser;
let page: Page;
const consoleErrors: string[] = [];

const ANA = '34600111222';
const BOB = '4915100000';
const DORA = '15550009999';
let anaId = '';
let bobId = '';
let doraId = '';

const sentBodies = () => app.graph.sends().map((r) => r.body);

async function api(pathname: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${server.url}/api/manage/${pathname}`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

const conversationTexts = (p: Page) =>
  p.$$eval('#conversation li .text', (els) => els.map((e) => e.textContent));

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(OUTPUT, `${name}.png`) });
}

beforeAll(async () => {
  if (!CHROMIUM) return; // no browser here: the tests below are skipped (test/helpers/browser.ts)
  mkdirSync(OUTPUT, { recursive: true });
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN });
  const { data } = app.services;
  // Bob wrote 25 hours ago: outside the 24-hour window.
  const old = new Date(Date.now() - 25 * HOUR);
  bobId = (await data.users.resolve({ waId: BOB, bsuid: null, name: 'Bob Builder' }, old)).user.id;
  await data.maintenance.importMessages([
    {
      id: 'wamid.bob.1',
      userId: bobId,
      waMessageId: 'wamid.bob.1',
      direction: 'inbound',
      text: 'Can we fix it?',
      createdAt: old,
      phoneNumberId: PHONE_NUMBER_ID,
    },
    {
      id: 'wamid.bob.2',
      userId: bobId,
      waMessageId: 'wamid.bob.2',
      direction: 'outbound',
      text: 'Yes we can',
      createdAt: new Date(old.getTime() + 60_000),
      phoneNumberId: PHONE_NUMBER_ID,
      relatedId: 'wamid.bob.1',
      ai: {
        provider: 'test',
        model: 'gpt-test-mini',
        promptTokens: 30,
        completionTokens: 12,
        totalTokens: 42,
        latencyMs: 5,
      },
    },
  ]);
  await app.userWrites(ANA, 'Hola, un café por favor', 'Ana');
  anaId = await userIdOf(data, ANA);
  server = await startDevServer({
    definitions: [...manageDefinitionsFor(runtimeOf(app.services)), openApiDefinition],
    port: 0,
    log: () => undefined,
  });
  browser = await launchChromium(CHROMIUM);
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
});

describe.skipIf(!CHROMIUM)('inbox dashboard', () => {
  it('serves the page and its module with a strict CSP and asks for a token', async () => {
    const response = await page.goto(`${server.url}/api/manage/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toBe(DASHBOARD_CSP);
    const script = await fetch(`${server.url}/api/manage/js/app.js`);
    expect(script.status).toBe(200);
    expect(script.headers.get('content-type')).toContain('javascript');
    expect((await fetch(`${server.url}/api/manage/js/nope.js`)).status).toBe(404);
    expect(await page.locator('#login').isVisible()).toBe(true);
    expect(await page.locator('#app').isHidden()).toBe(true);
  });

  it('lists conversations and opens one in the right pane', async () => {
    await page.fill('#token', TOKEN);
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector(`#chat-list button[data-user-id="${anaId}"]`);
    expect(await page.evaluate(() => sessionStorage.getItem('manageToken'))).toBe(TOKEN);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    const ids = await page.$$eval('#chat-list button[data-user-id]', (els) =>
      els.map((e) => e.getAttribute('data-user-id')),
    );
    expect(ids).toEqual([anaId, bobId]);
    await page.click(`#chat-list button[data-user-id="${anaId}"]`);
    await page.waitForFunction(() => document.querySelectorAll('#conversation li').length === 2);
    expect(await conversationTexts(page)).toEqual(['Hola, un café por favor', DEFAULT_ANSWER]);
    expect(await page.locator('#reply-form').isVisible()).toBe(true);
    expect(await page.locator('#template-form').isHidden()).toBe(true);
  });

  it('takes the conversation and replies; the reply reaches Graph and shows at once', async () => {
    await page.click('#take');
    await page.waitForSelector('#chat-state.handed');
    expect(await page.locator('#handback').isVisible()).toBe(true);
    expect(parseBody(UserSchema, (await api(`users/${anaId}`)).body).handoff?.by).toBe('MANAGE_API_TOKEN');
    await page.waitForSelector(`#chat-list li.waiting button[data-user-id="${anaId}"]`);

    app.graph.requests.length = 0;
    await page.fill('#reply-text', 'Hola Ana, soy Marta del equipo. ¿Con leche?');
    await page.click('#reply-send');
    await page.waitForSelector('#conversation li.operator');
    expect(await page.locator('#conversation li.operator .text').textContent()).toBe(
      'Hola Ana, soy Marta del equipo. ¿Con leche?',
    );
    expect(await page.inputValue('#reply-text')).toBe('');
    expect(sentBodies()).toEqual([
      expect.objectContaining({
        to: ANA,
        type: 'text',
        text: expect.objectContaining({ body: expect.stringContaining('Marta') }),
      }),
    ]);
  });

  it('shows the user writing again without a reload, while the bot stays silent', async () => {
    app.graph.requests.length = 0;
    await app.userWrites(ANA, 'Sí, con leche <b>gracias</b>', 'Ana');
    expect(app.graph.sends()).toEqual([]);
    await page.waitForFunction(() => document.querySelectorAll('#conversation li').length === 4, undefined, {
      timeout: 10_000,
    });
    expect(await conversationTexts(page)).toContain('Sí, con leche <b>gracias</b>');
    expect(await page.locator('#conversation b').count()).toBe(0);
    mkdirSync(DOCS, { recursive: true });
    await page.screenshot({ path: path.join(DOCS, 'inbox.png') });
  });

  it('hands the conversation back, and the bot answers again', async () => {
    await page.click('#handback');
    await page.waitForSelector('#take:not([hidden])');
    expect(parseBody(UserSchema, (await api(`users/${anaId}`)).body).handoff).toBeNull();
    app.graph.requests.length = 0;
    await app.userWrites(ANA, '¿Cuánto es?', 'Ana');
    expect(sentBodies()).toEqual([
      expect.objectContaining({ text: expect.objectContaining({ body: DEFAULT_ANSWER }) }),
    ]);
    await page.waitForFunction(() => document.querySelectorAll('#conversation li').length === 6, undefined, {
      timeout: 10_000,
    });
    expect((await conversationTexts(page)).slice(-1)).toEqual([DEFAULT_ANSWER]);
  });

  it('offers only templates outside the 24-hour window, and sends one', async () => {
    await page.click(`#chat-list button[data-user-id="${bobId}"]`);
    await page.waitForFunction(() => document.querySelectorAll('#conversation li').length === 2);
    expect(await page.locator('#reply-form').isHidden()).toBe(true);
    expect(await page.locator('#template-form').isVisible()).toBe(true);
    expect(await page.locator('#window-note').isVisible()).toBe(true);
    app.graph.requests.length = 0;
    await page.fill('#tpl-name', 'order_update');
    await page.fill('#tpl-lang', 'en_US');
    await page.fill('#tpl-params', 'Bob\n#4711');
    await page.screenshot({ path: path.join(DOCS, 'inbox-template.png') });
    await page.click('#template-send');
    await page.waitForSelector('#conversation li.operator');
    expect(await page.locator('#conversation li.operator .text').textContent()).toContain('order_update');
    expect(sentBodies()).toEqual([
      expect.objectContaining({
        to: BOB,
        type: 'template',
        template: {
          name: 'order_update',
          language: { code: 'en_US' },
          components: [
            {
              type: 'body',
              parameters: [
                { type: 'text', text: 'Bob' },
                { type: 'text', text: '#4711' },
              ],
            },
          ],
        },
      }),
    ]);
  });

  it("shows a user's human command as waiting, in the list, the filter and the count", async () => {
    app.graph.requests.length = 0;
    await app.userWrites(DORA, 'human', 'Dora');
    doraId = await userIdOf(app.services.data, DORA);
    expect(sentBodies()).toEqual([
      expect.objectContaining({ text: expect.objectContaining({ body: HUMAN_ANSWER }) }),
    ]);
    await page.waitForSelector(`#chat-list li.waiting button[data-user-id="${doraId}"]`, { timeout: 10_000 });
    expect(await page.locator(`#chat-list button[data-user-id="${doraId}"] .badge`).textContent()).toBe(
      'Waiting',
    );
    await page.click('#filter-waiting');
    await page.waitForFunction(
      () => document.querySelectorAll('#chat-list button[data-user-id]').length === 2,
    );
    const waiting = await page.$$eval('#chat-list button[data-user-id]', (els) =>
      els.map((e) => e.getAttribute('data-user-id')),
    );
    // Longest-waiting first: Bob was taken when the template went out, Dora asked after.
    expect(waiting).toEqual([bobId, doraId]);
    expect(await page.locator('#waiting-count').textContent()).toBe('2');
    await page.click('#filter-all');
    await page.fill('#list-q', 'dor');
    await page.waitForFunction(
      () => document.querySelectorAll('#chat-list button[data-user-id]').length === 1,
    );
    expect(await page.getAttribute('#chat-list button[data-user-id]', 'data-user-id')).toBe(doraId);
    await page.fill('#list-q', '4915');
    await page.waitForFunction(
      (id) => document.querySelector(`#chat-list button[data-user-id="${id}"]`) !== null,
      bobId,
    );
    await page.fill('#list-q', '');
    await page.waitForFunction(
      () => document.querySelectorAll('#chat-list button[data-user-id]').length === 3,
    );
  });

  it('shows stats on their own view: the API numbers, labelled axes, AI tokens per model', async () => {
    await page.click('#nav button[data-view="stats"]');
    await page.waitForFunction(
      () => document.querySelector('[data-stat="users.total"]')?.textContent !== '–',
    );
    expect(await page.locator('#inbox-view').isHidden()).toBe(true);
    const stats = parseBody(StatsSchema, (await api('stats')).body);
    const shown = await page.$$eval('[data-stat]', (els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute('data-stat') ?? '', Number(e.textContent)])),
    );
    expect(shown['users.total']).toBe(3);
    expect(shown['messages.total']).toBe(stats.messages.total);
    expect(shown['ai.tokens']).toBe(42);
    const dates = await page.$$eval('#chart svg .point', (els) =>
      els.map((e) => e.getAttribute('data-date')),
    );
    expect(dates).toEqual(stats.daily.map((d) => d.date));
    expect(await page.locator('#chart .axis-label.x').textContent()).toContain('Day');
    expect(await page.locator('#chart .axis-label.y').textContent()).toContain('Messages');
    expect(await page.locator('#chart .tick.y').count()).toBeGreaterThan(1);
    expect(stats.ai.models).toEqual([{ model: 'gpt-test-mini', requests: 1, tokens: 42 }]);
    expect(await page.getAttribute('#models-chart .model', 'data-model')).toBe('gpt-test-mini');
    expect(await page.getAttribute('#models-chart .model', 'data-tokens')).toBe('42');
    expect(await page.locator('#models-chart .axis-label.x').textContent()).toBe('Tokens');
    await page.screenshot({ path: path.join(DOCS, 'stats.png') });
  });

  it('finds a word in messages, ignoring accents, and opens its conversation', async () => {
    await page.click('#nav button[data-view="search"]');
    await page.fill('#q', 'CAFE');
    await page.click('#search-form button[type=submit]');
    await page.waitForSelector('#results li button');
    expect(await page.$$eval('#results li .text', (els) => els.map((e) => e.textContent))).toEqual([
      'Hola, un café por favor',
    ]);
    await page.click('#results li button');
    await page.waitForFunction(() => document.querySelectorAll('#conversation li').length === 6);
    expect(await page.locator('#inbox-view').isVisible()).toBe(true);
  });

  it('exports a user as a JSON download', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    expect(download.suggestedFilename()).toBe(`user-${anaId}.json`);
    const file = path.join(OUTPUT, 'dashboard-export.json');
    await download.saveAs(file);
    // The file is the API's export as is.
    const exported = parseBody(ExportSchema, JSON.parse(await readFile(file, 'utf8')));
    expect(exported.user.id).toBe(anaId);
    expect(exported.messages.map((m) => m.text)[0]).toBe('Hola, un café por favor');
    expect(exported.messages.filter((m) => m.role === 'operator')).toHaveLength(1);
  });

  it('erases a user after confirmation', async () => {
    let asked = '';
    page.once('dialog', (dialog) => {
      asked = dialog.type();
      void dialog.accept();
    });
    await page.click('#erase');
    await page.waitForFunction(
      (id) => !document.querySelector(`#chat-list button[data-user-id="${id}"]`),
      anaId,
    );
    expect(asked).toBe('confirm');
    expect((await api(`users/${anaId}`)).status).toBe(404);
    expect(await page.locator('#chat').isHidden()).toBe(true);
    expect(await page.locator('#results li').count()).toBe(0);
  });

  it('is usable on a phone and raised no script or CSP errors', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    await page.click(`#chat-list button[data-user-id="${doraId}"]`);
    await page.waitForSelector('#conversation li');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await shot('dashboard-phone');
    expect(consoleErrors).toEqual([]);
  });

  it('drops the token and asks again when it is refused', async () => {
    await page.evaluate(() => sessionStorage.setItem('manageToken', 'wrong-token'));
    await page.reload();
    await page.waitForSelector('#login:not([hidden])');
    expect(await page.locator('#error').textContent()).toContain('not accepted');
    expect(await page.evaluate(() => sessionStorage.getItem('manageToken'))).toBeNull();
  });
});
