// The chat simulator's page script (served by scripts/dev/simulator.ts): sends what the developer
// does as a WhatsApp user and shows the conversation as the bot stored it. Text is always set as
// text, never as HTML.

interface ChatMessage {
  id: string;
  waMessageId: string | null;
  direction: 'inbound' | 'outbound';
  type: string;
  text: string;
  status: string;
  createdAt: string;
  relatedId: string | null;
}

interface Conversation {
  dryRun: boolean;
  messages: ChatMessage[];
}

const POLL_MS = 1_000;
const STORAGE_KEY = 'devChatUser';

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) throw new Error(`#${id} is missing`);
  return found as T;
}

const nameInput = element<HTMLInputElement>('name');
const numberInput = element<HTMLInputElement>('number');
const textInput = element<HTMLInputElement>('text');
const list = element<HTMLOListElement>('messages');
const errorLine = element<HTMLParagraphElement>('error');

let who: { name: string; waId: string } | null = null;
let shown = '';
let latest: ChatMessage[] = [];
let timer: number | undefined;
/** The error shown is about reaching the app or reading the conversation (gone once a read succeeds). */
let pollFailed = false;

function showError(message: string | null): void {
  errorLine.hidden = message === null;
  errorLine.textContent = message ?? '';
}

const UNREACHABLE = 'the app cannot be reached: is npm run dev still running?';

/** Sends one thing as the user; false (with the error shown) when it did not reach the webhook. */
async function send(body: Record<string, unknown>): Promise<boolean> {
  if (!who) return false;
  let response: Response;
  try {
    response = await fetch('/api/dev/chat/send', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ...body, waId: who.waId, name: who.name }),
    });
  } catch {
    showError(UNREACHABLE);
    pollFailed = true;
    return false;
  }
  const answer = (await response.json().catch(() => ({}))) as {
    webhookStatus?: number;
    error?: { message?: string };
  };
  if (!response.ok) {
    showError(answer.error?.message ?? `the webhook answered ${answer.webhookStatus ?? response.status}`);
    return false;
  }
  showError(null);
  pollFailed = false;
  await refresh().catch(() => undefined);
  return true;
}

/** Sends what the text box held; puts it back when it did not go, so nothing typed is lost. */
function sendTyped(body: Record<string, unknown>, typed: string): void {
  textInput.value = '';
  void send(body).then((sent) => {
    if (!sent && !textInput.value) textInput.value = typed;
  });
}

function button(label: string, onClick: () => void, className = ''): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  if (className) b.className = className;
  b.addEventListener('click', onClick);
  return b;
}

function render(conversation: Conversation): void {
  element('mode').textContent = conversation.dryRun
    ? 'Dry run: WHATSAPP_ACCESS_TOKEN is not set, so the bot records its replies as not_sent instead of sending them.'
    : 'Replies go to the Graph API at WHATSAPP_GRAPH_URL; mark them delivered or read as WhatsApp would.';
  latest = conversation.messages;
  const snapshot = JSON.stringify(conversation);
  if (snapshot === shown) return;
  shown = snapshot;
  const items = conversation.messages.map((m) => {
    const li = document.createElement('li');
    li.className = m.direction;
    li.dataset['id'] = m.id;
    li.dataset['type'] = m.type;
    li.dataset['status'] = m.status;
    const text = document.createElement('div');
    text.className = 'text';
    text.textContent = m.text;
    const meta = document.createElement('div');
    meta.className = 'meta';
    const time = document.createElement('time');
    time.dateTime = m.createdAt;
    time.textContent = new Date(m.createdAt).toLocaleTimeString();
    const status = document.createElement('span');
    status.className = `status status-${m.status}`;
    status.textContent = m.status;
    meta.append(time, status);
    const wamid = m.waMessageId;
    if (m.direction === 'outbound' && wamid) {
      for (const next of ['delivered', 'read'] as const) {
        meta.append(
          button(next, () => void send({ kind: 'status', messageId: wamid, status: next }), `mark-${next}`),
        );
      }
    }
    li.append(text, meta);
    return li;
  });
  list.replaceChildren(...items);
  list.lastElementChild?.scrollIntoView({ block: 'nearest' });
}

async function refresh(): Promise<void> {
  if (!who) return;
  const response = await fetch(`/api/dev/chat/messages?waId=${encodeURIComponent(who.waId)}`);
  if (!response.ok) {
    showError(`could not read the conversation (${response.status})`);
    pollFailed = true;
    return;
  }
  render((await response.json()) as Conversation);
  if (pollFailed) {
    pollFailed = false;
    showError(null);
  }
}

function poll(): void {
  window.clearTimeout(timer);
  refresh()
    .catch(() => {
      showError(UNREACHABLE);
      pollFailed = true;
    })
    .finally(() => {
      timer = window.setTimeout(poll, POLL_MS);
    });
}

function start(event: SubmitEvent): void {
  event.preventDefault();
  const waId = numberInput.value.replace(/\D/g, '');
  const name = nameInput.value.trim();
  if (!name || !/^\d{6,15}$/.test(waId)) {
    showError('a name and a number of 6 to 15 digits (country code first) are needed');
    return;
  }
  showError(null);
  who = { name, waId };
  localStorage.setItem(STORAGE_KEY, JSON.stringify(who));
  shown = '';
  element('chat').hidden = false;
  textInput.focus();
  poll();
}

function lastBotMessage(): ChatMessage | undefined {
  return [...latest].reverse().find((m) => m.direction === 'outbound');
}

const remembered = localStorage.getItem(STORAGE_KEY);
if (remembered) {
  try {
    const saved = JSON.parse(remembered) as { name?: unknown; waId?: unknown };
    if (typeof saved.name === 'string') nameInput.value = saved.name;
    if (typeof saved.waId === 'string') numberInput.value = saved.waId;
  } catch {
    localStorage.removeItem(STORAGE_KEY);
  }
}

element<HTMLFormElement>('who').addEventListener('submit', start);
element<HTMLFormElement>('composer').addEventListener('submit', (event) => {
  event.preventDefault();
  const text = textInput.value.trim();
  if (!text) return;
  sendTyped({ kind: 'text', text }, textInput.value);
});
element('send-image').addEventListener('click', () => {
  const caption = textInput.value.trim();
  sendTyped({ kind: 'image', ...(caption ? { caption } : {}) }, textInput.value);
});
element('send-location').addEventListener('click', () => {
  const place = textInput.value.trim() || 'Fake Cafe';
  sendTyped(
    { kind: 'location', latitude: 38.7223, longitude: -9.1393, place, address: '1 Fake Street' },
    textInput.value,
  );
});
element('send-reaction').addEventListener('click', () => {
  const target = lastBotMessage();
  if (!target) {
    showError('no message from the bot to react to yet');
    return;
  }
  void send({ kind: 'reaction', messageId: target.waMessageId ?? target.id, emoji: '👍' });
});
