// The dashboard in headless Chromium (found by test/helpers/browser.ts, driven by playwright-core) against
// the management handlers on the dev server's router and a real database.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { manageDefinitionsFor } from '../../functions/manage';
import { openApiDefinition } from '../../functions/openapi';
import { startDevServer, type DevServer } from '../../scripts/dev-server';
import { DASHBOARD_CSP } from '../../shared/manage/dashboard';
import { launchChromium } from '../helpers/browser';
import { BOOTSTRAP, manageFixture, seedUser, type ManageFixture } from '../helpers/manage-fixture';

// Browser globals as the page functions below see them (the project's tsconfig has no DOM lib).
declare const document: {
  querySelector(selector: string): { textContent: string | null } | null;
  querySelectorAll(selector: string): { length: number };
  documentElement: { scrollWidth: number };
};
declare const window: { innerWidth: number };
declare const sessionStorage: {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
};
declare const localStorage: { length: number };

const CHROMIUM = inject('chromiumPath');
const OUTPUT = path.resolve(__dirname, '../../test-output');

let f: ManageFixture;
let server: DevServer;
let browser: Browser;
let page: Page;
const consoleErrors: string[] = [];
const ANA_TEXTS = [
  'Hola, un café por favor',
  'Claro, ¿algo más?',
  'Gracias <script>window.pwned=1</script>',
  'De nada',
];
let anaId = '';
let bobId = '';

async function api(pathname: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(`${server.url}/api/manage/${pathname}`, {
    headers: { Authorization: `Bearer ${BOOTSTRAP}` },
  });
  return { status: r.status, body: r.status === 204 ? null : await r.json() };
}

beforeAll(async () => {
  mkdirSync(OUTPUT, { recursive: true });
  f = await manageFixture('dashboard');
  const now = Date.now();
  anaId = (
    await seedUser(f.data, {
      waId: '34600111222',
      name: 'Ana',
      start: new Date(now - 3_600_000),
      texts: ANA_TEXTS,
      ai: true,
    })
  ).userId;
  bobId = (
    await seedUser(f.data, {
      waId: '4915100000',
      name: 'Bob',
      start: new Date(now - 5 * 86_400_000),
      texts: ['Can we fix it?', 'Yes we can'],
    })
  ).userId;
  await seedUser(f.data, {
    waId: '15550001',
    name: 'Cleo',
    start: new Date(now - 12 * 86_400_000),
    texts: ['hello there'],
  });
  server = await startDevServer({
    definitions: [...manageDefinitionsFor(() => Promise.resolve(f.services)), openApiDefinition],
    port: 0,
    log: () => undefined,
  });
  browser = await launchChromium(CHROMIUM);
  page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(e.message));
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await f?.close();
});

describe.skipIf(!CHROMIUM)('dashboard', () => {
  it('serves the page with a strict CSP and asks for a token', async () => {
    const response = await page.goto(`${server.url}/api/manage/`);
    expect(response?.status()).toBe(200);
    expect(response?.headers()['content-security-policy']).toBe(DASHBOARD_CSP);
    expect(await page.locator('#login').isVisible()).toBe(true);
    expect(await page.locator('#app').isHidden()).toBe(true);
    expect((await fetch(`${server.url}/api/manage`)).status).toBe(200);
  });

  it('shows the same numbers as the API and one chart point per day', async () => {
    await page.fill('#token', BOOTSTRAP);
    await page.click('#login-form button[type=submit]');
    await page.waitForFunction(
      () => document.querySelector('[data-stat="users.total"]')?.textContent !== '–',
    );
    expect(await page.evaluate(() => sessionStorage.getItem('manageToken'))).toBe(BOOTSTRAP);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    const stats = (await api('stats')).body as {
      users: Record<string, number>;
      messages: Record<string, number>;
      ai: Record<string, number>;
      daily: { date: string }[];
    };
    const expected: Record<string, number> = {};
    for (const group of ['users', 'messages', 'ai'] as const)
      for (const [k, v] of Object.entries(stats[group])) expected[`${group}.${k}`] = v;
    const shown = await page.$$eval('[data-stat]', (els) =>
      Object.fromEntries(els.map((e) => [e.getAttribute('data-stat') ?? '', Number(e.textContent)])),
    );
    expect(shown).toEqual(expected);
    expect(shown['users.total']).toBe(3);
    const dates = await page.$$eval('#chart svg .point', (els) =>
      els.map((e) => e.getAttribute('data-date')),
    );
    expect(dates).toHaveLength(30);
    expect(dates).toEqual(stats.daily.map((d) => d.date));
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-stats.png'), fullPage: true });
  });

  it('lists the latest chats and shows a conversation in order, user text as text', async () => {
    await page.waitForSelector(`#chats button[data-user-id="${anaId}"]`);
    const chatIds = await page.$$eval('#chats button[data-user-id]', (els) =>
      els.map((e) => e.getAttribute('data-user-id')),
    );
    expect(chatIds[0]).toBe(anaId);
    expect(chatIds).toContain(bobId);
    await page.click(`#chats button[data-user-id="${anaId}"]`);
    await page.waitForFunction(
      (n) => document.querySelectorAll('#conversation li').length === n,
      ANA_TEXTS.length,
    );
    const texts = await page.$$eval('#conversation li .text', (els) => els.map((e) => e.textContent));
    expect(texts).toEqual(ANA_TEXTS);
    expect(await page.locator('#conversation script').count()).toBe(0);
    expect(await page.evaluate(() => (window as { pwned?: number }).pwned)).toBeUndefined();
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-conversation.png'), fullPage: true });
  });

  it('finds a seeded word, ignoring accents', async () => {
    await page.fill('#q', 'CAFE');
    await page.click('#search-form button[type=submit]');
    await page.waitForSelector('#results li button');
    const results = await page.$$eval('#results li .text', (els) => els.map((e) => e.textContent));
    expect(results).toEqual(['Hola, un café por favor']);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-search.png'), fullPage: true });
  });

  it('exports a user as a JSON download', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    expect(download.suggestedFilename()).toBe(`user-${anaId}.json`);
    const file = path.join(OUTPUT, 'dashboard-export.json');
    await download.saveAs(file);
    const exported = JSON.parse(await (await import('node:fs/promises')).readFile(file, 'utf8')) as {
      messages: { text: string }[];
    };
    expect(exported.messages.map((m) => m.text)).toEqual(ANA_TEXTS);
  });

  it('erases a user after confirmation', async () => {
    let asked = '';
    page.once('dialog', (dialog) => {
      asked = dialog.type();
      void dialog.accept();
    });
    await page.click('#erase');
    await page.waitForFunction(
      (id) =>
        !document.querySelector(`#chats button[data-user-id="${id}"]`) &&
        document.querySelector('[data-stat="users.total"]')?.textContent === '2',
      anaId,
    );
    expect(asked).toBe('confirm');
    expect((await api(`users/${anaId}`)).status).toBe(404);
    expect(await page.locator('#conversation-section').isHidden()).toBe(true);
    expect(await page.locator('#results li').count()).toBe(0);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-erased.png'), fullPage: true });
  });

  it('is readable on a phone and raised no script or CSP errors', async () => {
    await page.setViewportSize({ width: 390, height: 844 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    await page.screenshot({ path: path.join(OUTPUT, 'dashboard-phone.png'), fullPage: true });
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
