// The operator's inbox: conversations on the left (waiting ones marked, search, pages), the open
// conversation on the right (reply, template, take over, hand back, export, erase), stats on their
// own view. New messages appear by polling the API. User text only ever goes through textContent.
import {
  api,
  newIdempotencyKey,
  ApiError,
  clearToken,
  setToken,
  token,
  userPath,
  type Chat,
  type Message,
  type Page,
  type Stats,
  type Template,
  type User,
} from './api.js';
import { dailyChart, modelsChart } from './chart.js';

const POLL_MS = 3000;
const LIST_PAGE = 30;
/** The API's largest page. */
const MAX_LIMIT = 200;
const MESSAGES_PAGE = 50;
const WINDOW_MS = 24 * 3_600_000;

type View = 'inbox' | 'search' | 'stats';

interface State {
  view: View;
  filter: 'all' | 'waiting';
  q: string;
  listCursor: string | null;
  listPages: number;
  users: User[];
  open: User | null;
  messages: Map<string, Message>;
  olderCursor: string | null;
  templateMode: boolean;
  templates: Set<string>;
  timer: number | null;
  /** The token got an answer other than 401/403/429 in this sign-in. */
  verified: boolean;
  /** The error shown came from the background refresh (cleared when a refresh succeeds). */
  pollFailed: boolean;
  /** An operator message is on its way (a second click must not send it again). */
  sending: boolean;
  /** The server answered OUTSIDE_WINDOW for the open conversation. */
  windowClosed: boolean;
  /** The words of the message search shown, and the cursor of its next page. */
  searchQ: string;
  searchCursor: string | null;
}

const state: State = {
  view: 'inbox',
  filter: 'all',
  q: '',
  listCursor: null,
  listPages: 1,
  users: [],
  open: null,
  messages: new Map(),
  olderCursor: null,
  templateMode: false,
  templates: new Set(['hello_world']),
  timer: null,
  verified: false,
  pollFailed: false,
  sending: false,
  windowClosed: false,
  searchQ: '',
  searchCursor: null,
};

function $<T extends HTMLElement = HTMLElement>(id: string): T {
  const e = document.getElementById(id);
  if (!e) throw new Error(`missing #${id}`);
  return e as T;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string | null,
  cls?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

const fmt = (iso: string | null): string =>
  iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : '';

const who = (u: User): string => (u.waId ? `+${u.waId}` : (u.bsuid ?? u.id));
// The name isolated (FSI … PDI): a right-to-left name, or one holding direction marks, cannot
// reorder the number and words after it. Its own isolate marks (U+2066–U+2069) are left out: a PDI
// of its own would end the isolate early (an override in the name then reversing the number), an
// initiator would take the closing PDI; the PDI closes any embedding or override it opened.
const label = (u: User): string =>
  `\u2068${(u.name ?? '(no name)').replace(/[\u2066-\u2069]/g, '')}\u2069 · ${who(u)}`;

/** Letters the API folds beyond lower case and NFKD (shared/data/terms.ts, `LETTER_FOLDS`). */
const LETTER_FOLDS: Readonly<Record<string, string>> = {
  ß: 'ss',
  ς: 'σ',
  ł: 'l',
  ø: 'o',
  đ: 'd',
  ð: 'd',
  ħ: 'h',
  æ: 'ae',
  œ: 'oe',
};
/**
 * Folded for search as the API folds: compatibility forms unified, lower case, accents dropped,
 * ß as ss, a final sigma as a sigma, a letter with a stroke as its base letter, æ and œ as ae, oe.
 */
const fold = (text: string): string =>
  text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(/[ßςłøđðħæœ]/g, (c) => LETTER_FOLDS[c] ?? c);
const words = (text: string): string[] =>
  fold(text)
    .split(/[^\p{L}\p{N}]+/u)
    .filter(Boolean);
/** Scripts written without spaces (the API's ./terms): a word may start at any of their characters. */
const SPACELESS =
  /[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\u{20000}-\u{323af}]/u;
/**
 * Whether `query`, a folded word, starts a word inside `word` where the API's terms have one: at
 * its start, at any character of a run of spaceless script, and right after such a run.
 */
const startsWordIn = (word: string, query: string): boolean => {
  const chars = [...word];
  return chars.some(
    (c, i) =>
      (i === 0 || SPACELESS.test(c) || SPACELESS.test(chars[i - 1] ?? '')) &&
      chars.slice(i).join('').startsWith(query),
  );
};

/**
 * Whether a user matches the list's search the way GET /manage/users does (for the waiting list,
 * which the API does not search): a number (digits, spaces and `+ - ( ) .`) is the start of the
 * user's number; other words each start a word of the name or the number.
 */
function matchesUser(u: User, q: string): boolean {
  if (!q) return true;
  if (/^[\d\s+\-().]+$/.test(q) && /\d/.test(q)) return (u.waId ?? '').startsWith(q.replace(/\D/g, ''));
  const own = [...words(u.name ?? ''), ...(u.waId ? [u.waId] : [])];
  return words(q).every((w) => own.some((o) => startsWordIn(o, w)));
}

function showError(message: string): void {
  const box = $('error');
  box.textContent = message;
  box.hidden = !message;
}

/** What to tell the operator about a failed request that is not about the token. */
function describe(error: unknown): string {
  if (!(error instanceof ApiError)) return error instanceof Error ? error.message : 'Something went wrong.';
  const wait = error.retryAfter ? `in ${error.retryAfter} seconds` : 'in a moment';
  if (error.status === 429) return `The server is busy (HTTP 429). Try again ${wait}.`;
  // The API says what WhatsApp answered, its code and title included (stored with the failed
  // message): shown as it is, so that an undeliverable message is told from a policy block.
  if (error.code === 'UPSTREAM_FAILED') {
    return error.message === `HTTP ${error.status}`
      ? 'WhatsApp did not accept the message (it is kept as failed). Try again later.'
      : error.message;
  }
  if (error.code === 'THROTTLED') return `The database is busy. Try again ${wait}.`;
  // The first try of this message has no outcome yet: it is under way, or it was cut off after
  // WhatsApp may have taken it. The next Send is a new message (the page drops that try's key).
  if (error.code === 'IN_PROGRESS') {
    return 'This message may already be on its way: look at the conversation in a moment. Sending it again sends it anew.';
  }
  if (error.code === 'UNAVAILABLE')
    return `The server cannot do this now (${error.message}). Try again ${wait}.`;
  // The API answers 5xx with a generic body, a proxy in front of it with none: say what to do.
  if (error.status >= 500) {
    return `The server ran into a problem (HTTP ${error.status}). Try again ${wait}; if it keeps happening, the app's logs say why.`;
  }
  return error.message;
}

/**
 * The user of a conversation is gone (another operator erased them, say): their conversation
 * closes, so that nothing of them stays on the screen, and the page says why. The notice stays
 * until the operator's next action, not only until the next refresh.
 */
function closeErased(): void {
  state.open = null;
  state.messages = new Map();
  state.olderCursor = null;
  $('conversation').replaceChildren();
  $('chat').hidden = true;
  $('chat-empty').hidden = false;
  state.pollFailed = false;
  showError('This user was erased (by another operator, say): their conversation is closed.');
}

function fail(error: unknown, fromPoll = false): void {
  state.pollFailed = fromPoll;
  // Only the routes of one user answer 404 (NOT_FOUND): the conversation open, or being opened.
  if (error instanceof ApiError && error.status === 404 && error.code === 'NOT_FOUND') {
    closeErased();
    return;
  }
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    clearToken();
    signedIn(false);
    showError(error.status === 401 ? 'The token was not accepted.' : 'The token is revoked or expired.');
    return;
  }
  if (error instanceof ApiError && error.code === 'TOO_MANY_REQUESTS') {
    const wait = error.retryAfter ? `in ${error.retryAfter} seconds` : 'in a minute';
    // A token never accepted yet may be the mistyped one: ask again instead of showing an inbox.
    if (!state.verified) {
      clearToken();
      signedIn(false);
    }
    showError(`Too many failed sign-ins from this address. Try again ${wait}.`);
    return;
  }
  showError(describe(error));
}

function signedIn(on: boolean): void {
  $('login').hidden = on;
  $('app').hidden = !on;
  $('logout').hidden = !on;
  $('nav').hidden = !on;
  if (!on) state.verified = false;
  if (!on && state.timer !== null) {
    window.clearInterval(state.timer);
    state.timer = null;
  }
}

// ---- views ----

function showView(view: View): void {
  state.view = view;
  $('inbox-view').hidden = view !== 'inbox';
  $('search-view').hidden = view !== 'search';
  $('stats-view').hidden = view !== 'stats';
  for (const b of document.querySelectorAll<HTMLButtonElement>('#nav button[data-view]')) {
    b.setAttribute('aria-pressed', String(b.dataset['view'] === view));
  }
  if (view === 'stats') loadStats().catch(fail);
}

// ---- conversation list ----

function listItem(u: User): HTMLLIElement {
  const li = el('li', null, u.handoff ? 'waiting' : '');
  const b = el('button');
  b.type = 'button';
  b.dataset['userId'] = u.id;
  if (state.open?.id === u.id) b.setAttribute('aria-current', 'true');
  const name = el('div', null, 'name');
  name.appendChild(el('bdi', u.name ?? '(no name)'));
  if (u.handoff) name.appendChild(el('span', 'Waiting', 'badge'));
  b.appendChild(name);
  b.appendChild(el('div', who(u), 'meta'));
  b.appendChild(el('div', u.lastMessagePreview ?? '', 'preview'));
  b.appendChild(el('div', fmt(u.lastMessageAt), 'meta'));
  b.addEventListener('click', () => void openUser(u.id).catch(fail));
  li.appendChild(b);
  return li;
}

function renderList(): void {
  const list = $('chat-list');
  // The refresh every few seconds redraws the list: the keyboard keeps its place in it.
  const active = document.activeElement;
  const focused =
    active instanceof HTMLElement && list.contains(active) ? active.dataset['userId'] : undefined;
  list.replaceChildren(...state.users.map(listItem));
  if (focused) list.querySelector<HTMLElement>(`button[data-user-id="${CSS.escape(focused)}"]`)?.focus();
  if (!state.users.length) {
    list.appendChild(
      el(
        'li',
        state.filter === 'all'
          ? 'No conversations.'
          : state.q
            ? 'No waiting conversation matches.'
            : 'Nobody is waiting.',
        'meta',
      ),
    );
  }
  $('more').hidden = !state.listCursor;
}

async function fetchListPage(cursor: string | null): Promise<Page<User>> {
  const c = cursor ? `&cursor=${encodeURIComponent(cursor)}` : '';
  if (state.filter === 'waiting') {
    if (!state.q) {
      const page = await api<Page<Chat>>(`chats?state=waiting&limit=${LIST_PAGE}${c}`);
      return { items: page.items.map((chat) => chat.user), nextCursor: page.nextCursor };
    }
    // The API does not search the waiting list: the page filters it as the API searches users.
    // It reads on, in the API's largest pages, until a page holds a match or the list ends: a
    // match beyond the first page is found, and "no match" is never said of a list not read.
    for (let next = cursor; ;) {
      const after = next ? `&cursor=${encodeURIComponent(next)}` : '';
      const page = await api<Page<Chat>>(`chats?state=waiting&limit=${MAX_LIMIT}${after}`);
      const users = page.items.map((chat) => chat.user).filter((u) => matchesUser(u, state.q));
      if (users.length || !page.nextCursor) return { items: users, nextCursor: page.nextCursor };
      next = page.nextCursor;
    }
  }
  // A search goes in a POST body: URLs end up in request logs, and q may be a number or a name.
  if (state.q) {
    const body = { q: state.q, limit: LIST_PAGE, ...(cursor ? { cursor } : {}) };
    return api<Page<User>>('users', { method: 'POST', body });
  }
  return api<Page<User>>(`users?limit=${LIST_PAGE}${c}`);
}

/** Reloads the list from its first page (keeps as many pages as were shown). */
async function loadList(): Promise<void> {
  const filter = state.filter;
  const q = state.q;
  let page = await fetchListPage(null);
  const users = [...page.items];
  for (let i = 1; i < state.listPages && page.nextCursor; i++) {
    page = await fetchListPage(page.nextCursor);
    users.push(...page.items);
  }
  if (filter !== state.filter || q !== state.q) return;
  state.users = users;
  state.listCursor = page.nextCursor;
  renderList();
}

async function moreList(): Promise<void> {
  if (!state.listCursor) return;
  const page = await fetchListPage(state.listCursor);
  state.users.push(...page.items);
  state.listCursor = page.nextCursor;
  state.listPages++;
  renderList();
}

async function loadWaitingCount(): Promise<void> {
  const page = await api<Page<Chat>>(`chats?state=waiting&limit=${MAX_LIMIT}`);
  const badge = $('waiting-count');
  badge.textContent = page.items.length ? String(page.items.length) + (page.nextCursor ? '+' : '') : '';
  badge.hidden = page.items.length === 0;
}

function setFilter(filter: 'all' | 'waiting'): void {
  state.filter = filter;
  state.listPages = 1;
  $('filter-all').setAttribute('aria-pressed', String(filter === 'all'));
  $('filter-waiting').setAttribute('aria-pressed', String(filter === 'waiting'));
  loadList().catch(fail);
}

// ---- the open conversation ----

/**
 * When the window an inbound message opened began: the later of Meta's time and the time it
 * reached us, as the server counts it (shared/whatsapp/outbound.ts `windowFrom`).
 */
const windowFrom = (m: Message): number =>
  Math.max(Date.parse(m.createdAt), m.receivedAt ? Date.parse(m.receivedAt) : -Infinity);

/** The latest start of a window among the user's messages loaded, or null when none is inbound. */
function latestWindowStart(): number | null {
  let last: number | null = null;
  for (const m of state.messages.values()) {
    if (m.direction === 'inbound' && (last === null || windowFrom(m) > last)) last = windowFrom(m);
  }
  return last;
}

/**
 * Whether free text may go out (WhatsApp's 24-hour window), as far as the messages loaded tell.
 * When none of them is the user's and older ones exist (more than a page of answers since the
 * user wrote), the page cannot tell: free text is offered, and the server's OUTSIDE_WINDOW, if it
 * answers so, switches to templates (`send`).
 */
function inWindow(): boolean {
  const last = latestWindowStart();
  if (last === null) return state.olderCursor !== null;
  return Date.now() - last < WINDOW_MS;
}

function messageItem(m: Message): HTMLLIElement {
  const li = el('li', null, `${m.direction} ${m.role} ${m.status}`);
  li.dataset['id'] = m.id;
  li.appendChild(el('div', m.text, 'text'));
  const author = m.direction === 'inbound' ? 'user' : m.role === 'operator' ? (m.by ?? 'operator') : 'bot';
  li.appendChild(el('div', `${fmt(m.createdAt)} · ${author} · ${m.type} · ${m.status}`, 'meta'));
  if (m.error) li.appendChild(el('div', errorLine(m.error), 'error'));
  return li;
}

/** What a message's error says, on one line: `code 131026: Message undeliverable (Meta's details)`. */
function errorLine(error: NonNullable<Message['error']>): string {
  const code = error.code === null ? '' : `code ${error.code}: `;
  return `${code}${error.title}${error.detail ? ` (${error.detail})` : ''}`;
}

function renderConversation(): void {
  const box = $('messages-box');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const sorted = [...state.messages.values()].sort((a, b) =>
    a.createdAt === b.createdAt ? (a.id < b.id ? -1 : 1) : a.createdAt < b.createdAt ? -1 : 1,
  );
  $('conversation').replaceChildren(...sorted.map(messageItem));
  $('older').hidden = !state.olderCursor;
  if (atBottom) box.scrollTop = box.scrollHeight;
  renderComposer();
}

function renderComposer(): void {
  const open = inWindow();
  const templates = state.templateMode || !open;
  $('reply-form').hidden = templates;
  $('template-form').hidden = !templates;
  $('window-note').hidden = open && !state.windowClosed;
  $('use-text').hidden = !open;
  const known = $('tpl-known');
  known.replaceChildren(
    ...[...state.templates].map((name) => {
      const option = el('option');
      option.value = name;
      return option;
    }),
  );
}

function renderUser(u: User): void {
  // The header's height changes with the handoff (its line, Take over / Hand back), and the
  // message box's with it: an operator reading the newest message keeps it in view.
  const box = $('messages-box');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  state.open = u;
  $('chat-title').textContent = u.name ?? '(no name)';
  $('chat-meta').textContent = `${who(u)} · ${u.messageCount} messages${u.optedOut ? ' · opted out' : ''}`;
  const s = $('chat-state');
  s.className = u.handoff ? 'handed' : '';
  s.textContent = u.handoff
    ? `Waiting for an operator: ${u.handoff.by === 'user' ? 'the user asked for a person' : `taken by ${u.handoff.by}`} at ${fmt(u.handoff.since)}; back to the bot at ${fmt(u.handoff.expiresAt)} unless someone replies.`
    : 'The bot answers this conversation.';
  $('take').hidden = u.handoff !== null;
  $('handback').hidden = u.handoff === null;
  for (const b of document.querySelectorAll<HTMLButtonElement>('#chat-list button[data-user-id]')) {
    if (b.dataset['userId'] === u.id) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  if (atBottom) box.scrollTop = box.scrollHeight;
}

async function openUser(id: string): Promise<void> {
  showView('inbox');
  showError('');
  state.messages = new Map();
  state.olderCursor = null;
  state.templateMode = false;
  state.windowClosed = false;
  $('chat-empty').hidden = true;
  $('chat').hidden = false;
  $('conversation').replaceChildren();
  const [user, page] = await Promise.all([
    api<User>(userPath(id)),
    api<Page<Message>>(userPath(id, `/messages?limit=${MESSAGES_PAGE}`)),
  ]);
  renderUser(user);
  for (const m of page.items) state.messages.set(m.id, m);
  state.olderCursor = page.nextCursor;
  renderConversation();
  const box = $('messages-box');
  box.scrollTop = box.scrollHeight;
  // On a phone the panes are stacked: bring the conversation into view.
  if (window.matchMedia('(max-width: 50rem)').matches) $('chat-pane').scrollIntoView();
}

async function loadOlder(): Promise<void> {
  const u = state.open;
  if (!u || !state.olderCursor) return;
  const page = await api<Page<Message>>(
    userPath(u.id, `/messages?limit=${MESSAGES_PAGE}&cursor=${encodeURIComponent(state.olderCursor)}`),
  );
  if (state.open?.id !== u.id) return;
  for (const m of page.items) state.messages.set(m.id, m);
  state.olderCursor = page.nextCursor;
  const box = $('messages-box');
  const fromBottom = box.scrollHeight - box.scrollTop;
  renderConversation();
  box.scrollTop = box.scrollHeight - fromBottom;
}

/** Newest messages (new ones and changed statuses) and the user's state of the open conversation. */
async function refreshOpen(): Promise<void> {
  const u = state.open;
  if (!u) return;
  const [user, page] = await Promise.all([
    api<User>(userPath(u.id)),
    api<Page<Message>>(userPath(u.id, `/messages?limit=${MESSAGES_PAGE}`)),
  ]);
  if (state.open?.id !== u.id) return;
  renderUser(user);
  let changed = false;
  for (const m of page.items) {
    const known = state.messages.get(m.id);
    if (!known || known.status !== m.status) {
      state.messages.set(m.id, m);
      changed = true;
    }
  }
  if (changed) renderConversation();
  else renderComposer();
}

/**
 * The Idempotency-Key of the last send whose outcome the page does not know (the server could not
 * be reached, or failed): sending the same message to the same user again repeats the key, so a
 * message the server did send is never sent twice; the server answers as it did the first time.
 * A key the server says has no outcome yet (IN_PROGRESS) is dropped once the operator is told.
 */
let unsettledSend: { userId: string; body: string; key: string } | null = null;

/** Whether a send's answer leaves its outcome unknown (it may have gone out): keep its key. */
const outcomeUnknown = (error: unknown): boolean =>
  error instanceof ApiError && (error.status === 0 || (error.status >= 500 && error.status !== 502));

/** Sends an operator message; `sent` runs as soon as the server has it (before the refreshes). */
async function send(body: { text: string } | { template: Template }, sent: () => void): Promise<void> {
  const u = state.open;
  if (!u || state.sending) return;
  state.sending = true;
  const buttons = [$<HTMLButtonElement>('reply-send'), $<HTMLButtonElement>('template-send')];
  for (const b of buttons) b.disabled = true;
  const json = JSON.stringify(body);
  const same = unsettledSend?.userId === u.id && unsettledSend.body === json;
  const key = same && unsettledSend ? unsettledSend.key : newIdempotencyKey();
  unsettledSend = { userId: u.id, body: json, key };
  try {
    let message: Message;
    try {
      message = await api<Message>(userPath(u.id, '/messages'), {
        method: 'POST',
        body,
        headers: { 'Idempotency-Key': `"${key}"` },
      });
    } catch (error) {
      if (!outcomeUnknown(error)) unsettledSend = null;
      throw error;
    }
    unsettledSend = null;
    sent();
    state.messages.set(message.id, message);
    renderConversation();
    const box = $('messages-box');
    box.scrollTop = box.scrollHeight;
    showError('');
    await Promise.all([refreshOpen(), loadList(), loadWaitingCount()]);
  } catch (error) {
    if (error instanceof ApiError && error.code === 'OUTSIDE_WINDOW') {
      // The server knows better (e.g. older messages not loaded): offer the template.
      state.templateMode = true;
      state.windowClosed = true;
      renderComposer();
    }
    throw error;
  } finally {
    state.sending = false;
    for (const b of buttons) b.disabled = false;
  }
}

async function sendText(): Promise<void> {
  const area = $<HTMLTextAreaElement>('reply-text');
  const text = area.value;
  if (!text.trim()) return;
  if (textLength(text) > MAX_TEXT) {
    showError(`A text is at most ${MAX_TEXT} characters; this one has ${textLength(text)}.`);
    return;
  }
  await send({ text }, () => {
    area.value = '';
    updateCount();
  });
}

async function sendTemplate(): Promise<void> {
  const name = $<HTMLInputElement>('tpl-name').value.trim();
  const language = $<HTMLInputElement>('tpl-lang').value.trim();
  const parameters = $<HTMLTextAreaElement>('tpl-params')
    .value.split('\n')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  await send({ template: { name, language, parameters } }, () => {
    state.templates.add(name);
    $<HTMLTextAreaElement>('tpl-params').value = '';
  });
  renderComposer();
}

async function setHandoff(take: boolean): Promise<void> {
  const u = state.open;
  if (!u) return;
  const user = await api<User>(userPath(u.id, '/handoff'), { method: take ? 'POST' : 'DELETE' });
  renderUser(user);
  await Promise.all([loadList(), loadWaitingCount()]);
}

async function exportUser(): Promise<void> {
  const u = state.open;
  if (!u) return;
  const data = await api<unknown>(userPath(u.id, '/export'));
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
  const a = el('a');
  a.href = URL.createObjectURL(blob);
  a.download = `user-${u.id}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function eraseUser(): Promise<void> {
  const u = state.open;
  if (!u) return;
  if (!window.confirm(`Erase ${label(u)}, all their messages and events? This cannot be undone.`)) return;
  await api<null>(userPath(u.id), { method: 'DELETE' });
  state.open = null;
  state.messages = new Map();
  $('chat').hidden = true;
  $('chat-empty').hidden = false;
  // Search results may show the erased user's messages.
  $('results').replaceChildren();
  await Promise.all([loadList(), loadWaitingCount()]);
}

// The API counts a text in Unicode code points (an emoji is one), not in UTF-16 units.
const MAX_TEXT = 4096;
const textLength = (text: string): number => [...text].length;

function updateCount(): void {
  const n = textLength($<HTMLTextAreaElement>('reply-text').value);
  const count = $('reply-count');
  count.textContent = `${n} / ${MAX_TEXT}`;
  count.classList.toggle('over', n > MAX_TEXT);
}

// ---- search and stats ----

/** Searches messages (words in a POST body, never in a URL); `more` adds the next page. */
async function search(q: string, more = false): Promise<void> {
  const cursor = more ? state.searchCursor : null;
  if (more && !cursor) return;
  const body = { q, limit: 50, ...(cursor ? { cursor } : {}) };
  const page = await api<Page<Message>>('messages', { method: 'POST', body });
  const list = $('results');
  if (!more) list.replaceChildren();
  state.searchQ = q;
  state.searchCursor = page.nextCursor;
  $('results-more').hidden = !page.nextCursor;
  for (const m of page.items) {
    const li = el('li');
    const b = el('button');
    b.type = 'button';
    b.dataset['userId'] = m.userId;
    b.appendChild(el('div', m.text, 'text'));
    b.appendChild(el('div', `${fmt(m.createdAt)} · ${m.direction}`, 'meta'));
    b.addEventListener('click', () => void openUser(m.userId).catch(fail));
    li.appendChild(b);
    list.appendChild(li);
  }
  if (!list.children.length) list.appendChild(el('li', 'No messages found.', 'meta'));
}

async function loadStats(): Promise<void> {
  const s = await api<Stats>('stats');
  const values: Record<string, number> = {
    'users.total': s.users.total,
    'users.optedOut': s.users.optedOut,
    'users.active24h': s.users.active24h,
    'messages.total': s.messages.total,
    'messages.inbound': s.messages.inbound,
    'messages.outbound': s.messages.outbound,
    'messages.failed': s.messages.failed,
    'ai.requests': s.ai.requests,
    'ai.tokens': s.ai.tokens,
  };
  for (const dd of document.querySelectorAll<HTMLElement>('[data-stat]')) {
    dd.textContent = String(values[dd.dataset['stat'] ?? ''] ?? '–');
  }
  $('chart').replaceChildren(dailyChart(s.daily));
  $('models-chart').replaceChildren(modelsChart(s.ai.models ?? []));
}

// ---- start ----

/** Whether a refresh is still waiting for the server: the next one is skipped, not piled on it. */
let polling = false;

async function poll(): Promise<void> {
  if (!token() || document.hidden || polling) return;
  polling = true;
  try {
    await Promise.all([loadList(), loadWaitingCount(), refreshOpen()]);
  } finally {
    polling = false;
  }
  // The server answered again: an error of an earlier refresh (e.g. unreachable) is over.
  if (state.pollFailed) {
    state.pollFailed = false;
    showError('');
  }
}

/** Checks the token with one request, then shows the inbox (a refused token costs one failure). */
async function start(): Promise<void> {
  showError('');
  await loadWaitingCount();
  state.verified = true;
  signedIn(true);
  await loadList();
  if (state.timer === null) {
    state.timer = window.setInterval(() => poll().catch((error: unknown) => fail(error, true)), POLL_MS);
  }
}

function on(id: string, event: string, handler: (ev: Event) => Promise<void> | void): void {
  $(id).addEventListener(event, (ev) => {
    if (event === 'submit') ev.preventDefault();
    // An error describes the operator's last action: a new one starts without it.
    if (event === 'submit' || event === 'click') showError('');
    Promise.resolve(handler(ev)).catch(fail);
  });
}

function init(): void {
  on('login-form', 'submit', () => {
    const input = $<HTMLInputElement>('token');
    setToken(input.value.trim());
    input.value = '';
    return start();
  });
  on('logout', 'click', () => {
    clearToken();
    signedIn(false);
  });
  for (const b of document.querySelectorAll<HTMLButtonElement>('#nav button[data-view]')) {
    b.addEventListener('click', () => {
      showError('');
      showView((b.dataset['view'] ?? 'inbox') as View);
    });
  }
  let typing: number | undefined;
  on('list-q', 'input', () => {
    window.clearTimeout(typing);
    typing = window.setTimeout(() => {
      showError('');
      state.q = $<HTMLInputElement>('list-q').value.trim();
      state.listPages = 1;
      loadList().catch(fail);
    }, 250);
  });
  on('list-search', 'submit', async () => {
    state.q = $<HTMLInputElement>('list-q').value.trim();
    state.listPages = 1;
    await loadList();
  });
  on('filter-all', 'click', () => setFilter('all'));
  on('filter-waiting', 'click', () => setFilter('waiting'));
  on('more', 'click', moreList);
  on('older', 'click', loadOlder);
  on('take', 'click', () => setHandoff(true));
  on('handback', 'click', () => setHandoff(false));
  on('export', 'click', exportUser);
  on('erase', 'click', eraseUser);
  on('reply-form', 'submit', sendText);
  on('reply-text', 'input', updateCount);
  on('reply-text', 'keydown', async (ev) => {
    const key = ev as KeyboardEvent;
    if (key.key === 'Enter' && (key.ctrlKey || key.metaKey)) await sendText();
  });
  on('template-form', 'submit', sendTemplate);
  on('use-template', 'click', () => {
    state.templateMode = true;
    renderComposer();
  });
  on('use-text', 'click', () => {
    state.templateMode = false;
    renderComposer();
  });
  on('search-form', 'submit', () => search($<HTMLInputElement>('q').value));
  on('results-more', 'click', () => search(state.searchQ, true));
  if (token()) start().catch((error: unknown) => fail(error));
  else signedIn(false);
}

init();
