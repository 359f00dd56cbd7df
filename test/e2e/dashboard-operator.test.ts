// The inbox dashboard as an operator meets it on a bad day, in headless Chromium against the
// management functions on the dev server's router, a real database and a loopback Graph stub:
// searches that must keep numbers and words out of URLs (request logs keep them), the waiting
// list's search, search pages, hostile names, the keyboard, a double click on Send, emoji counted
// as the API counts them, a window the server closes, the server going away and coming back, and
// too many failed sign-ins.
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from 'vitest';
import { runtimeOf } from '../../shared/deps';
import { manageDefinitionsFor } from '../../functions/manage';
import { startDevServer, type DevServer } from '../../scripts/dev-server';
import { userIdOf } from '../helpers/users';
import { MAX_FAILURES_PER_MINUTE } from '../../shared/manage/auth';
import { startTestApp, type TestApp } from '../helpers/app';
import { launchChromium } from '../helpers/browser';
import { notification, PHONE_NUMBER_ID, textMessage, value } from '../helpers/meta';

// Browser globals as the page functions below see them (the project's tsconfig has no DOM lib).
interface Box {
  left: number;
  right: number;
}
interface Node {
  textContent: string | null;
  scrollWidth: number;
  clientWidth: number;
  getBoundingClientRect(): Box;
}
declare const document: {
  querySelector(selector: string): Node | null;
  querySelectorAll(selector: string): { length: number };
  activeElement: Node | null;
  documentElement: Node;
};
declare const window: { __pwned?: unknown };
declare function getComputedStyle(e: Node): { outlineStyle: string };
declare class MutationObserver {
  constructor(callback: () => void);
  observe(target: Node, options: { childList: boolean }): void;
  disconnect(): void;
}
declare const sessionStorage: { getItem(key: string): string | null };

const TOKEN = 'dashboard-operator-token-0123456789';
const CHROMIUM = inject('chromiumPath');
const HOUR = 3_600_000;

let app: TestApp;
let server: DevServer;
let browser: Browser;
let page: Page;
const requested: string[] = [];
const pageErrors: string[] = [];

/** Longer than the dashboard's refresh (every 3 s). */
const POLL_WAIT_MS = 3500;

const JORG = '491701234567';
const EVIL_NAME = '<img src=x onerror="window.__pwned=1">';
const EVIL = '491709876543';
const RLO = '15550001111';
const LONG = '15550002222';
const OLD = '15550003333';
const SEARCHER = '15550004444';
const TANAKA = '81901234567';
const STRAUSS = '4930555000111';
const GONE = '15550005555';
const BUSY = '15550006666';
const DATED = '15550007777';
const WIDE = '15550008888';
const TALL = '15550009999';
/** A text as long as an operator may send, one unbroken word (a pasted link, a row of emoji). */
const WIDE_TEXT = `Unbrokenword${'W'.repeat(4096 - 12)}`;
/** The longest business-scoped id Meta gives (140 characters: a parent id), one unbroken word. */
const LONG_BSUID = `US.ENT.${'7'.repeat(133)}`;
let bsuidId = '';
let jorgId = '';
let rloId = '';
let longId = '';
let oldId = '';

async function manage(method: string, pathname: string): Promise<number> {
  const r = await fetch(`${server.url}/api/manage/${pathname}`, {
    method,
    headers: { Authorization: `Bearer ${TOKEN}` },
  });
  return r.status;
}

const listIds = (p: Page) =>
  p.$$eval('#chat-list button[data-user-id]', (els) => els.map((e) => e.getAttribute('data-user-id')));

async function listSearch(q: string, expected: (string | null)[]): Promise<void> {
  await page.fill('#list-q', q);
  await expect.poll(() => listIds(page), { timeout: 5000 }).toEqual(expected);
}

async function openUser(id: string): Promise<void> {
  await page.click(`#chat-list button[data-user-id="${id}"]`);
  await page.waitForSelector(`#chat-list button[aria-current="true"][data-user-id="${id}"]`);
  await page.waitForSelector('#conversation li');
}

beforeAll(async () => {
  if (!CHROMIUM) return; // no browser here: the tests below are skipped (test/helpers/browser.ts)
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN });
  await app.userWrites(JORG, 'Hallo, ich brauche Hilfe', 'Jörg Müller');
  await app.userWrites(EVIL, `Text ${EVIL_NAME} <script>window.__pwned=2</script>`, EVIL_NAME);
  // A right-to-left override, and an isolate's end of its own (it would end the dashboard's early).
  await app.userWrites(RLO, 'human', '\u202eRLO\u2069 name');
  await app.userWrites(LONG, 'hi', 'Long'.repeat(60));
  await app.userWrites(WIDE, WIDE_TEXT, 'Wide');
  // Sixty messages holding one word: more than a page of search results.
  const { data } = app.services;
  jorgId = await userIdOf(data, JORG);
  rloId = await userIdOf(data, RLO);
  longId = await userIdOf(data, LONG);
  const start = new Date(Date.now() - 2 * HOUR);
  const searcherId = (await data.users.resolve({ waId: SEARCHER, bsuid: null, name: 'Searcher' }, start)).user
    .id;
  await data.maintenance.importMessages(
    Array.from({ length: 60 }, (_, i) => ({
      id: `wamid.searcher.${i}`,
      userId: searcherId,
      waMessageId: `wamid.searcher.${i}`,
      direction: 'inbound' as const,
      text: `pagination ${i}`,
      createdAt: new Date(start.getTime() + i * 1000),
      phoneNumberId: PHONE_NUMBER_ID,
    })),
  );
  // A person known only by the longest business-scoped id, which the list and the header show.
  bsuidId = (await data.users.resolve({ waId: null, bsuid: LONG_BSUID, name: 'Scoped Sue' }, new Date())).user
    .id;
  await data.maintenance.importMessages([
    {
      id: 'legacy:sue',
      userId: bsuidId,
      waMessageId: null,
      direction: 'inbound',
      text: 'known by an id',
      createdAt: new Date(),
    },
  ]);
  // A user who wrote an hour ago, but only in migrated messages: no business number to send from.
  oldId = (
    await data.users.resolve({ waId: OLD, bsuid: null, name: 'Migrated Mia' }, new Date(Date.now() - HOUR))
  ).user.id;
  await data.maintenance.importMessages([
    {
      id: 'legacy:mia',
      userId: oldId,
      waMessageId: null,
      direction: 'inbound',
      text: 'from the old bot',
      createdAt: new Date(Date.now() - HOUR),
    },
  ]);
  server = await startDevServer({
    definitions: manageDefinitionsFor(runtimeOf(app.services)),
    port: 0,
    log: () => undefined,
  });
  browser = await launchChromium(CHROMIUM);
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on('request', (r) => requested.push(`${r.method()} ${decodeURIComponent(r.url())}`));
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(`${server.url}/api/manage/`);
  await page.fill('#token', TOKEN);
  await page.press('#token', 'Enter');
  await page.waitForSelector(`#chat-list button[data-user-id="${jorgId}"]`);
}, 120_000);

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  await app?.close();
});

describe.skipIf(!CHROMIUM)('the dashboard for an operator', () => {
  // Each test starts from the inbox listing everyone, whatever the one before left.
  beforeEach(async () => {
    await page.click('#nav button[data-view="inbox"]');
    await page.click('#filter-all');
  });

  it('searches people and messages without putting a number, name or word in a URL', async () => {
    requested.length = 0;
    await listSearch('+49 170', expect.arrayContaining([jorgId]));
    await listSearch('jorg mul', [jorgId]);
    await page.click('#nav button[data-view="search"]');
    await page.fill('#q', 'brauche');
    await page.click('#search-form button[type=submit]');
    await page.waitForSelector('#results li button');
    expect(await page.$$eval('#results li .text', (els) => els.map((e) => e.textContent))).toEqual([
      'Hallo, ich brauche Hilfe',
    ]);
    const urls = requested.map((r) => r.split(' ')[1] ?? '');
    expect(urls.length).toBeGreaterThan(0);
    for (const leak of ['49 170', '+49', '49170', 'jorg', 'brauche']) {
      expect(urls.filter((u) => u.toLowerCase().includes(leak))).toEqual([]);
    }
    expect(requested.filter((r) => r.startsWith('POST '))).not.toEqual([]);
    expect(page.url()).toBe(`${server.url}/api/manage/`);
    await page.click('#nav button[data-view="inbox"]');
    await listSearch('', expect.arrayContaining([jorgId, rloId]));
  });

  it('wraps a 4096-character word in the search results as in the conversation: the page never scrolls sideways', async () => {
    const pageWidth = () =>
      page.evaluate(() => ({
        scroll: document.documentElement.scrollWidth,
        client: document.documentElement.clientWidth,
      }));
    await page.click('#nav button[data-view="search"]');
    await page.fill('#q', 'unbrokenword');
    await page.click('#search-form button[type=submit]');
    // The list may still show the last search's results: wait for this one's.
    await page
      .locator('#results li .text', { hasText: WIDE_TEXT.slice(0, 40) })
      .first()
      .waitFor({ timeout: 10_000 })
      .catch(() => undefined);
    expect(await page.$$eval('#results li .text', (els) => els.map((e) => e.textContent))).toEqual([
      WIDE_TEXT,
    ]);
    const results = await pageWidth();
    expect(results.scroll).toBeLessThanOrEqual(results.client);
    await page.click('#results li button');
    await page.waitForSelector('#conversation li');
    const conversation = await pageWidth();
    expect(conversation.scroll).toBeLessThanOrEqual(conversation.client);
  });

  it('wraps the longest business-scoped id in the list and the conversation header: nothing scrolls sideways', async () => {
    const overflow = () =>
      page.evaluate(() =>
        ['#chat-list', '.chat-head', '#chat-meta'].map((s) => {
          const e = document.querySelector(s);
          return { s, over: (e?.scrollWidth ?? 0) - (e?.clientWidth ?? 0) };
        }),
      );
    await listSearch('scoped sue', [bsuidId]);
    await openUser(bsuidId);
    expect(await page.textContent('#chat-meta')).toContain(LONG_BSUID);
    expect(await overflow()).toEqual([
      { s: '#chat-list', over: 0 },
      { s: '.chat-head', over: 0 },
      { s: '#chat-meta', over: 0 },
    ]);
  });

  it('pages search results beyond the first 50', async () => {
    await page.click('#nav button[data-view="search"]');
    await page.fill('#q', 'pagination');
    await page.click('#search-form button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('#results li button').length === 50);
    await page.click('#results-more');
    await page.waitForFunction(() => document.querySelectorAll('#results li button').length === 60);
    expect(await page.locator('#results-more').isHidden()).toBe(true);
    await page.click('#nav button[data-view="inbox"]');
  });

  it('searches the waiting list as the API searches users: numbers with spaces, accents ignored', async () => {
    expect(await manage('POST', `users/${jorgId}/handoff`)).toBe(200);
    await page.click('#filter-waiting');
    await listSearch('', [rloId, jorgId]);
    await listSearch('+49 170', [jorgId]);
    await listSearch('jorg', [jorgId]);
    await listSearch('MÜLL', [jorgId]);
    await listSearch('zzz', []);
    await listSearch('', [rloId, jorgId]);
    // A name written without spaces: a word starts at any of its characters, as the API has it.
    await app.userWrites(TANAKA, 'human', '田中太郎Tarō');
    const tanakaId = await userIdOf(app.services.data, TANAKA);
    await listSearch('太郎', [tanakaId]);
    await listSearch('aro', []);
    await listSearch('taro', [tanakaId]); // the word after such a run starts a word too
    await listSearch('ﾀﾛｳ', []);
    // The API's user search finds the same.
    const api = await fetch(`${server.url}/api/manage/users?q=taro`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
    });
    expect(((await api.json()) as { items: { id: string }[] }).items.map((u) => u.id)).toEqual([tanakaId]);
    // ß is ss whatever the case, as the API folds it (so is a final sigma a sigma), and ł is l.
    await app.userWrites(STRAUSS, 'human', 'Jürgen Łukasz Strauß');
    const straussId = await userIdOf(app.services.data, STRAUSS);
    // Each search after one that shows no one: the list then has to change for it to pass.
    for (const q of ['strauss', 'JÜRGEN STRAUSS', 'strauß', 'jurgen lukasz']) {
      await listSearch('zzz', []);
      await listSearch(q, [straussId]);
    }
    await listSearch('', [rloId, jorgId, tanakaId, straussId]);
    expect(await manage('DELETE', `users/${straussId}/handoff`)).toBe(200);
    expect(await manage('DELETE', `users/${tanakaId}/handoff`)).toBe(200);
    await page.click('#filter-all');
    expect(await manage('DELETE', `users/${jorgId}/handoff`)).toBe(200);
  });

  it('finds a waiting conversation beyond the first page of the waiting list, and never says nobody waits when some do', async () => {
    // 35 conversations wait; the one searched for was taken last, so it waits the shortest time
    // and comes after the first page (30) of the list, longest-waiting first.
    const { data } = app.services;
    const taken: string[] = [];
    for (let i = 0; i < 35; i++) {
      const name = i === 34 ? 'Zed Zebedee' : `Queue Person ${i}`;
      const at = new Date(Date.now() - (40 - i) * 60_000);
      const id = (await data.users.resolve({ waId: `1555700${String(1000 + i)}`, bsuid: null, name }, at))
        .user.id;
      await data.handoff.take(id, 'ops', at, 24);
      taken.push(id);
    }
    try {
      await page.click('#filter-waiting');
      await listSearch('zebedee', [taken[34] ?? '']);
      await listSearch('nobody-like-this', []);
      expect(await page.locator('#chat-list').textContent()).toBe('No waiting conversation matches.');
      await listSearch('', expect.arrayContaining(taken.slice(0, 30)));
      await page.fill('#list-q', '');
    } finally {
      // Gone again: the tests that follow find their users on the first page of the inbox.
      for (const id of taken) await manage('DELETE', `users/${id}`);
    }
  });

  it('shows hostile names as text: no script runs, a right-to-left name keeps its badge after it, a long one wraps', async () => {
    await listSearch('', expect.arrayContaining([rloId, longId]));
    expect(await page.locator('#chat-list img').count()).toBe(0);
    expect(await page.evaluate(() => window.__pwned)).toBeUndefined();
    const [name, badge] = await page.evaluate((id) => {
      const root = `#chat-list button[data-user-id="${id}"] .name`;
      const box = (s: string) => document.querySelector(s)?.getBoundingClientRect() ?? null;
      return [box(`${root} bdi`), box(`${root} .badge`)];
    }, rloId);
    expect(name).not.toBeNull();
    expect(badge?.left).toBeGreaterThanOrEqual(name?.right ?? Infinity);
    await openUser(longId);
    const title = await page.evaluate(() => {
      const t = document.querySelector('#chat-title');
      return { scroll: t?.scrollWidth ?? 0, client: t?.clientWidth ?? 0 };
    });
    expect(title.scroll).toBeLessThanOrEqual(title.client);
    let asked = '';
    page.once('dialog', (dialog) => {
      asked = dialog.message();
      void dialog.dismiss();
    });
    await openUser(rloId);
    await page.click('#erase');
    // The name's own U+2069 left out: it would end the isolate before the number, which the
    // override would then reverse.
    await expect.poll(() => asked).toContain('\u2068\u202eRLO name\u2069 · +15550001111');
  });

  it('shows where the keyboard is in the conversation list and the search results', async () => {
    await page.focus('#filter-waiting');
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const e = document.activeElement;
      return e
        ? {
            user: (e as unknown as { dataset: Record<string, string> }).dataset['userId'],
            outline: getComputedStyle(e).outlineStyle,
          }
        : null;
    });
    expect(focused?.user).toBeTruthy();
    expect(focused?.outline).not.toBe('none');
  });

  it('keeps the keyboard on the same conversation when the list refreshes', async () => {
    await page.focus(`#chat-list button[data-user-id="${jorgId}"]`);
    // Until a refresh has redrawn the list (not a fixed wait, which a loaded machine can outlast
    // with no refresh at all): the observer runs once the redraw, focus kept or not, has ended.
    await page.evaluate(
      () =>
        new Promise<void>((resolve) => {
          const observer = new MutationObserver(() => {
            observer.disconnect();
            resolve();
          });
          observer.observe(document.querySelector('#chat-list')!, { childList: true });
        }),
    );
    const focused = await page.evaluate(
      () =>
        (document.activeElement as unknown as { dataset?: Record<string, string> } | null)?.dataset?.[
          'userId'
        ],
    );
    expect(focused).toBe(jorgId);
  });

  it('starts no refresh while the last one still waits for a slow server', async () => {
    // A server that takes longer than the refresh interval to answer (a busy database, a slow
    // link): refreshes must not pile up on it, each one more request in flight every 3 s.
    let inFlight = 0;
    let most = 0;
    let answered = 0;
    await page.route('**/api/manage/chats?state=waiting*', async (route) => {
      inFlight++;
      most = Math.max(most, inFlight);
      await new Promise((resolve) => setTimeout(resolve, 2.5 * POLL_WAIT_MS));
      inFlight--;
      answered++;
      await route.continue().catch(() => undefined);
    });
    await expect.poll(() => answered, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    await page.unroute('**/api/manage/chats?state=waiting*');
    expect(most).toBe(1);
    expect(pageErrors).toEqual([]);
  }, 40_000);

  it('sends once when Send is clicked twice, and counts emoji as the API does', async () => {
    await openUser(jorgId);
    app.graph.requests.length = 0;
    await page.fill('#reply-text', 'Einmal, bitte');
    await page.dblclick('#reply-send');
    await page.waitForSelector('#conversation li.operator');
    await page.waitForTimeout(500);
    expect(app.graph.sends().map((r) => r.body)).toEqual([
      expect.objectContaining({ to: JORG, text: expect.objectContaining({ body: 'Einmal, bitte' }) }),
    ]);

    app.graph.requests.length = 0;
    const emoji = '😀'.repeat(3000);
    await page.fill('#reply-text', emoji);
    expect(await page.locator('#reply-count').textContent()).toBe('3000 / 4096');
    await page.click('#reply-send');
    await expect.poll(() => app.graph.sends().length).toBe(1);
    expect(app.graph.sends()[0]?.body).toEqual(
      expect.objectContaining({ text: expect.objectContaining({ body: emoji }) }),
    );
  });

  it('keeps the newest message in view when the conversation is taken over, by a send or by Take over', async () => {
    // More messages than the box shows: it scrolls, and opens at the newest.
    for (let i = 0; i < 12; i++) await app.userWrites(TALL, `question ${i}`, 'Tall Tom');
    const tallId = await userIdOf(app.services.data, TALL);
    await listSearch('tall tom', [tallId]);
    await openUser(tallId);
    const hidden = () =>
      page.$eval('#messages-box', (e) => {
        const box = e as unknown as { scrollHeight: number; scrollTop: number; clientHeight: number };
        return box.scrollHeight - box.scrollTop - box.clientHeight;
      });
    expect(await hidden()).toBeLessThan(2);
    // The first operator message takes the conversation: the header grows (the handoff's line and
    // Hand back), and the box with it shrinks. Before, the message just sent stayed below the fold.
    await page.fill('#reply-text', 'An operator here');
    await page.click('#reply-send');
    await page.waitForSelector('#handback:not([hidden])');
    await page.waitForSelector('#conversation li.operator');
    await page.waitForTimeout(500);
    expect(await hidden()).toBeLessThan(2);
    await page.click('#handback');
    await page.waitForSelector('#take:not([hidden])');
    await page.click('#take');
    await page.waitForSelector('#handback:not([hidden])');
    expect(await hidden()).toBeLessThan(2);
    expect(pageErrors).toEqual([]);
    // As the tests after this one expect it: the bot answers Tom, and the list shows everyone.
    await page.click('#handback');
    await page.waitForSelector('#take:not([hidden])');
    await listSearch('', expect.arrayContaining([tallId, jorgId]));
  });

  it('sends once when the answer to a send is lost and the operator sends it again', async () => {
    await openUser(jorgId);
    app.graph.requests.length = 0;
    const keys: string[] = [];
    let loseNext = true;
    // The first try reaches the server, which sends; its answer never reaches the page.
    await page.route('**/api/manage/users/*/messages', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      keys.push(route.request().headers()['idempotency-key'] ?? '');
      if (!loseNext) return route.fallback();
      loseNext = false;
      await route.fetch();
      return route.abort('connectionreset');
    });
    try {
      await page.fill('#reply-text', 'Nur einmal senden');
      await page.click('#reply-send');
      await expect.poll(() => keys.length).toBe(1);
      await expect.poll(() => app.graph.sends().length).toBe(1);
      await page.waitForSelector('#reply-send:not([disabled])');
      expect(await page.inputValue('#reply-text')).toBe('Nur einmal senden');
      await page.click('#reply-send');
      await page.waitForSelector('#conversation li.operator:has-text("Nur einmal senden")');
      // A new message is a new send.
      await page.fill('#reply-text', 'Noch etwas');
      await page.click('#reply-send');
      await page.waitForSelector('#conversation li.operator:has-text("Noch etwas")');
    } finally {
      await page.unroute('**/api/manage/users/*/messages');
    }
    expect(keys).toHaveLength(3);
    expect(keys[0]).toMatch(/^"[0-9a-f-]{32,36}"$/);
    expect(keys[1]).toBe(keys[0]);
    expect(keys[2]).not.toBe(keys[0]);
    expect(app.graph.sends().map((r) => (r.body['text'] as { body?: string }).body)).toEqual([
      'Nur einmal senden',
      'Noch etwas',
    ]);
    expect(pageErrors).toEqual([]);
  });

  it('says a message may be on its way when its first try has no outcome yet, and sends anew when asked again', async () => {
    await openUser(jorgId);
    app.graph.requests.length = 0;
    const keys: string[] = [];
    let first = true;
    await page.route('**/api/manage/users/*/messages', async (route) => {
      if (route.request().method() !== 'POST') return route.fallback();
      keys.push(route.request().headers()['idempotency-key'] ?? '');
      if (!first) return route.fallback();
      first = false;
      return route.fulfill({
        status: 409,
        contentType: 'application/json',
        body: JSON.stringify({ error: { code: 'IN_PROGRESS', message: 'a send with this key began' } }),
      });
    });
    try {
      await page.fill('#reply-text', 'Vielleicht unterwegs');
      await page.click('#reply-send');
      await expect
        .poll(() => page.locator('#error').textContent())
        .toBe(
          'This message may already be on its way: look at the conversation in a moment. Sending it again sends it anew.',
        );
      await page.waitForSelector('#reply-send:not([disabled])');
      await page.click('#reply-send');
      await page.waitForSelector('#conversation li.operator:has-text("Vielleicht unterwegs")');
    } finally {
      await page.unroute('**/api/manage/users/*/messages');
    }
    expect(keys).toHaveLength(2);
    expect(keys[1]).not.toBe(keys[0]);
    expect(app.graph.sends()).toHaveLength(1);
  });

  it('offers free text to a user who wrote minutes ago, also when their message is not among the newest 50', async () => {
    // Ten minutes ago the user wrote; 55 answers followed (an operator's long exchange, a burst's
    // answers): the newest page of the conversation holds none of the user's messages.
    const { data } = app.services;
    const start = new Date(Date.now() - 10 * 60_000);
    const busyId = (await data.users.resolve({ waId: BUSY, bsuid: null, name: 'Busy Bea' }, start)).user.id;
    await data.maintenance.importMessages([
      {
        id: 'wamid.busy.in',
        userId: busyId,
        waMessageId: 'wamid.busy.in',
        direction: 'inbound',
        text: 'Tell me everything',
        createdAt: start,
        phoneNumberId: PHONE_NUMBER_ID,
      },
      ...Array.from({ length: 55 }, (_, i) => ({
        id: `wamid.busy.out.${i}`,
        userId: busyId,
        waMessageId: `wamid.busy.out.${i}`,
        direction: 'outbound' as const,
        text: `part ${i}`,
        createdAt: new Date(start.getTime() + (i + 1) * 1000),
        phoneNumberId: PHONE_NUMBER_ID,
      })),
    ]);
    await page.waitForSelector(`#chat-list button[data-user-id="${busyId}"]`, { timeout: 10_000 });
    await openUser(busyId);
    // Nothing says the window is closed, and free text can be written (the server decides).
    expect(await page.locator('#reply-form').isVisible()).toBe(true);
    expect(await page.locator('#window-note').isVisible()).toBe(false);
    await page.fill('#reply-text', 'Here is the rest');
    await page.click('#reply-send');
    await page.waitForSelector('#conversation li.operator:has-text("Here is the rest")');
    expect(app.graph.sends().at(-1)?.body).toMatchObject({ to: BUSY, type: 'text' });
    await manage('DELETE', `users/${busyId}/handoff`);
  });

  it('offers free text to a user whose message is dated 2020 but reached us now, as the server counts the window', async () => {
    // Meta's own examples carry timestamps from 2020: the window runs from when it reached us.
    const dated = textMessage(DATED, 'hello from an old clock', { timestamp: '1603059201' });
    expect(
      (await app.post(notification(value({ contacts: [{ waId: DATED }], messages: [dated] })))).status,
    ).toBe(200);
    await app.drain();
    const datedId = await userIdOf(app.services.data, DATED);
    await page.waitForSelector(`#chat-list button[data-user-id="${datedId}"]`, { timeout: 10_000 });
    await openUser(datedId);
    expect(await page.locator('#reply-form').isVisible()).toBe(true);
    expect(await page.locator('#template-form').isVisible()).toBe(false);
    expect(await page.locator('#window-note').isVisible()).toBe(false);
    await page.fill('#reply-text', 'An operator here');
    await page.click('#reply-send');
    await page.waitForSelector('#conversation li.operator:has-text("An operator here")');
    expect(app.graph.sends().at(-1)?.body).toMatchObject({ to: DATED, type: 'text' });
    await manage('DELETE', `users/${datedId}/handoff`);
  });

  it('keeps saying why only a template can go out after the server answered OUTSIDE_WINDOW', async () => {
    await openUser(oldId);
    expect(await page.locator('#reply-form').isVisible()).toBe(true);
    await page.fill('#reply-text', 'Hello Mia');
    await page.click('#reply-send');
    await page.waitForSelector('#template-form:not([hidden])');
    expect(await page.locator('#error').textContent()).toContain('business number');
    expect(await page.locator('#window-note').isVisible()).toBe(true);
    // A refresh later (every 3 s), the note is still there.
    await page.waitForTimeout(POLL_WAIT_MS);
    expect(await page.locator('#window-note').isVisible()).toBe(true);
  });

  it('says what to do when the server fails, and drops the error once the next action succeeds', async () => {
    const shown = async () =>
      (await page.locator('#error').isVisible()) ? page.locator('#error').textContent() : null;
    // A gateway in front of the API answers 502 with an HTML page: no API error to show.
    await page.route('**/api/manage/messages', (route) =>
      route.fulfill({ status: 502, contentType: 'text/html', body: '<html>Bad gateway</html>' }),
    );
    await page.click('#nav button[data-view="search"]');
    await page.fill('#q', 'brauche');
    await page.click('#search-form button[type=submit]');
    await expect.poll(shown).toMatch(/^The server ran into a problem \(HTTP 502\)\. Try again in a moment;/);
    await page.unroute('**/api/manage/messages');
    await page.click('#search-form button[type=submit]');
    await page.waitForSelector('#results li button');
    await expect.poll(shown).toBeNull();

    // A 429 that is not about sign-ins (a front end's limit) leaves the operator signed in.
    await page.route('**/api/manage/stats', (route) =>
      route.fulfill({ status: 429, headers: { 'Retry-After': '7' }, body: '' }),
    );
    await page.click('#nav button[data-view="stats"]');
    await expect.poll(shown).toBe('The server is busy (HTTP 429). Try again in 7 seconds.');
    expect(await page.locator('#app').isVisible()).toBe(true);
    await page.unroute('**/api/manage/stats');
    await page.click('#nav button[data-view="inbox"]');
    await expect.poll(shown).toBeNull();

    // The API's own 502 for a message Graph refused says what happened, with Graph's code: shown
    // as the API says it (an undeliverable message told from a policy block).
    await openUser(jorgId);
    const refused =
      'WhatsApp did not accept the message, or did not answer (it may then still arrive): it is stored as failed. ' +
      'Graph: code 368, "Temporarily blocked for policies violations".';
    await page.route('**/api/manage/users/*/messages', (route) =>
      route.request().method() === 'POST'
        ? route.fulfill({
            status: 502,
            contentType: 'application/json',
            body: JSON.stringify({ error: { code: 'UPSTREAM_FAILED', message: refused } }),
          })
        : route.fallback(),
    );
    await page.fill('#reply-text', 'Are you there?');
    await page.click('#reply-send');
    await expect.poll(shown).toBe(refused);
    await page.unroute('**/api/manage/users/*/messages');

    // The searches cannot be given more than the API takes (100 and 200 characters).
    expect(await page.getAttribute('#list-q', 'maxlength')).toBe('100');
    expect(await page.getAttribute('#q', 'maxlength')).toBe('200');
    expect(pageErrors).toEqual([]);
  });

  it('shows under a message WhatsApp refused what it said; a message that went out shows nothing', async () => {
    await openUser(jorgId);
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Message undeliverable', type: 'OAuthException' } },
    });
    await page.fill('#reply-text', 'Did this reach you?');
    await page.click('#reply-send');
    const failed = page.locator('#conversation li.failed', { hasText: 'Did this reach you?' });
    await failed.waitFor({ timeout: POLL_WAIT_MS * 2 });
    expect(await failed.locator('.error').textContent()).toMatch(/^code 131026: .*Message undeliverable$/);
    expect(await page.locator('#conversation li:not(.failed) .error').count()).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it('closes a conversation whose user another operator erased, and says so instead of "user not found"', async () => {
    await app.userWrites(GONE, 'Please forget me', 'Gina Gone');
    const goneId = await userIdOf(app.services.data, GONE);
    await page.waitForSelector(`#chat-list button[data-user-id="${goneId}"]`, { timeout: 10_000 });
    await openUser(goneId);
    expect(await page.locator('#conversation').textContent()).toContain('Please forget me');
    // Another operator erases the user while this page shows the conversation.
    expect(await manage('DELETE', `users/${goneId}`)).toBe(204);
    // The next refresh finds the user gone: nothing of them stays on the screen, and the page
    // says what happened (not the API's bare "user not found", refreshed every few seconds).
    await page.waitForSelector('#chat', { state: 'hidden', timeout: 10_000 });
    expect(await page.locator('#chat-empty').isVisible()).toBe(true);
    expect(await page.locator('#conversation li').count()).toBe(0);
    expect(await page.locator('#error').textContent()).toBe(
      'This user was erased (by another operator, say): their conversation is closed.',
    );
    // It stays said after the refreshes that follow succeed.
    await page.waitForTimeout(POLL_WAIT_MS);
    expect(await page.locator('#error').isVisible()).toBe(true);
    expect(await listIds(page)).not.toContain(goneId);
    expect(pageErrors).toEqual([]);
  });

  it('says the server cannot be reached while it is gone, and stops saying so when it is back', async () => {
    await page.route('**/api/manage/**', (route) => route.abort('connectionrefused'));
    await page.waitForFunction(
      () => document.querySelector('#error')?.textContent?.includes('cannot be reached') === true,
      undefined,
      { timeout: 10_000 },
    );
    await page.unroute('**/api/manage/**');
    await page.waitForSelector('#error[hidden]', { state: 'attached', timeout: 10_000 });
    expect(pageErrors).toEqual([]);
  });

  // Last: once this client is over the limit, every token is refused for the rest of the minute.
  it('asks again for the token after too many failed sign-ins, saying when to try', async () => {
    const context = await browser.newContext();
    const fresh = await context.newPage();
    await fresh.goto(`${server.url}/api/manage/`);
    for (let i = 0; i < MAX_FAILURES_PER_MINUTE; i++) {
      await fresh.fill('#token', `wrong-token-${i}`);
      await fresh.press('#token', 'Enter');
      await fresh.waitForFunction(
        () => document.querySelector('#error')?.textContent === 'The token was not accepted.',
      );
      await fresh.evaluate(() => {
        const e = document.querySelector('#error');
        if (e) e.textContent = '';
      });
    }
    await fresh.fill('#token', TOKEN);
    await fresh.press('#token', 'Enter');
    await fresh.waitForFunction(
      () => document.querySelector('#error')?.textContent?.includes('Too many') === true,
    );
    expect(await fresh.locator('#error').textContent()).toMatch(/Try again in \d+ seconds\./);
    expect(await fresh.locator('#login').isVisible()).toBe(true);
    expect(await fresh.locator('#app').isHidden()).toBe(true);
    expect(await fresh.evaluate(() => sessionStorage.getItem('manageToken'))).toBeNull();
    await context.close();
  });
});
