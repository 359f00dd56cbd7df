// The dashboard (an operator's inbox): one HTML page and its style as strings here, its script a
// TypeScript module tree under web/dashboard/ compiled to dist/web/dashboard/ by `npm run
// build:web`. Each is served from its own route so the Content-Security-Policy allows only 'self'
// (no inline code, no CDN).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

let packageRoot: string | undefined;

/** The folder of package.json above this module (from shared/ with tsx, from dist/shared/ built). */
function findPackageRoot(): string {
  if (packageRoot) return packageRoot;
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error('package.json not found above ' + __dirname);
    dir = parent;
  }
  packageRoot = dir;
  return dir;
}

const scripts = new Map<string, string>();

/**
 * A compiled dashboard module by file name (`app.js`), read once from dist/web/dashboard/; null
 * for any other name or when it was not built.
 */
export function dashboardScript(name: string): string | null {
  if (!/^[a-z][a-z0-9-]*\.js$/.test(name)) return null;
  const cached = scripts.get(name);
  if (cached !== undefined) return cached;
  try {
    const body = readFileSync(path.join(findPackageRoot(), 'dist', 'web', 'dashboard', name), 'utf8');
    scripts.set(name, body);
    return body;
  } catch {
    return null;
  }
}

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WhatsApp bot – inbox</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/api/manage/app.css">
<script type="module" src="/api/manage/js/app.js"></script>
</head>
<body>
<header class="top">
  <h1>WhatsApp bot</h1>
  <nav id="nav" aria-label="Views" hidden>
    <button type="button" data-view="inbox" aria-pressed="true">Inbox <span id="waiting-count" class="count" hidden></span></button>
    <button type="button" data-view="search" aria-pressed="false">Search</button>
    <button type="button" data-view="stats" aria-pressed="false">Stats</button>
  </nav>
  <button type="button" id="logout" hidden>Sign out</button>
</header>
<p id="error" role="alert" hidden></p>
<main>
  <section id="login" aria-labelledby="login-title">
    <h2 id="login-title">Sign in</h2>
    <form id="login-form">
      <label for="token">Management API token</label>
      <input id="token" name="token" type="password" autocomplete="off" required>
      <button type="submit">Open</button>
    </form>
    <p class="hint">The token is kept in this tab's session storage only. An operator makes one with
    <code>npm run token -- create --name NAME</code> (or uses the app's <code>MANAGE_API_TOKEN</code>).</p>
  </section>
  <div id="app" hidden>
    <div id="inbox-view" class="inbox">
      <aside id="list-pane" aria-label="Conversations">
        <form id="list-search" role="search">
          <label for="list-q" class="sr">Search by name or number</label>
          <input id="list-q" name="q" type="search" placeholder="Search name or number" autocomplete="off" maxlength="100">
        </form>
        <div class="filters" role="group" aria-label="Show">
          <button type="button" id="filter-all" aria-pressed="true">All</button>
          <button type="button" id="filter-waiting" aria-pressed="false">Waiting</button>
        </div>
        <ul id="chat-list" aria-live="polite"></ul>
        <button type="button" id="more" hidden>More conversations</button>
      </aside>
      <section id="chat-pane" aria-labelledby="chat-title">
        <p id="chat-empty" class="hint">Choose a conversation on the left.</p>
        <div id="chat" hidden>
          <div class="chat-head">
            <div>
              <h2 id="chat-title"></h2>
              <p id="chat-meta" class="meta"></p>
              <p id="chat-state"></p>
            </div>
            <div class="actions">
              <button type="button" id="take">Take over</button>
              <button type="button" id="handback" hidden>Hand back to bot</button>
              <button type="button" id="export">Export JSON</button>
              <button type="button" id="erase" class="danger">Erase user</button>
            </div>
          </div>
          <div id="messages-box">
            <button type="button" id="older" hidden>Older messages</button>
            <ol id="conversation" aria-label="Messages, oldest first"></ol>
          </div>
          <form id="reply-form">
            <label for="reply-text" class="sr">Reply</label>
            <textarea id="reply-text" rows="2" placeholder="Write a reply…" required></textarea>
            <div class="reply-bar">
              <span id="reply-count" class="meta">0 / 4096</span>
              <button type="button" id="use-template" class="link">Send a template instead</button>
              <button type="submit" id="reply-send">Send</button>
            </div>
          </form>
          <form id="template-form" hidden>
            <p id="window-note" class="note" hidden>Only an approved template can go out: WhatsApp allows free text only within 24 hours of the user's last message.</p>
            <div class="template-grid">
              <label>Template <input id="tpl-name" list="tpl-known" required pattern="[a-z0-9_]+" placeholder="hello_world" autocomplete="off"></label>
              <datalist id="tpl-known"></datalist>
              <label>Language <input id="tpl-lang" required value="en_US" pattern="[a-z]{2,3}(_[A-Za-z]{2,4})?"></label>
              <label class="wide">Body parameters, one per line <textarea id="tpl-params" rows="2"></textarea></label>
            </div>
            <div class="reply-bar">
              <button type="button" id="use-text" class="link">Write free text</button>
              <button type="submit" id="template-send">Send template</button>
            </div>
          </form>
        </div>
      </section>
    </div>
    <section id="search-view" aria-labelledby="search-title" hidden>
      <h2 id="search-title">Search messages</h2>
      <form id="search-form" role="search">
        <label for="q">Words</label>
        <input id="q" name="q" type="search" required maxlength="200">
        <button type="submit">Search</button>
      </form>
      <ul id="results" aria-live="polite"></ul>
      <button type="button" id="results-more" hidden>More results</button>
    </section>
    <section id="stats-view" aria-labelledby="stats-title" hidden>
      <h2 id="stats-title">Stats</h2>
      <dl class="numbers">
        <div><dt>Users</dt><dd data-stat="users.total">–</dd></div>
        <div><dt>Opted out</dt><dd data-stat="users.optedOut">–</dd></div>
        <div><dt>Active 24 h</dt><dd data-stat="users.active24h">–</dd></div>
        <div><dt>Messages</dt><dd data-stat="messages.total">–</dd></div>
        <div><dt>Inbound</dt><dd data-stat="messages.inbound">–</dd></div>
        <div><dt>Outbound</dt><dd data-stat="messages.outbound">–</dd></div>
        <div><dt>Failed</dt><dd data-stat="messages.failed">–</dd></div>
        <div><dt>AI requests</dt><dd data-stat="ai.requests">–</dd></div>
        <div><dt>AI tokens</dt><dd data-stat="ai.tokens">–</dd></div>
      </dl>
      <figure>
        <div id="chart"></div>
        <figcaption>Messages per day (inbound and outbound), last 30 UTC days</figcaption>
      </figure>
      <figure>
        <div id="models-chart"></div>
        <figcaption>AI tokens per model, since the start</figcaption>
      </figure>
    </section>
  </div>
</main>
</body>
</html>
`;

export const DASHBOARD_CSS = `:root { color-scheme: light dark; --accent: #128c7e; --muted: #667; --border: #ccd; --wait: #c77700; --bubble-in: rgba(127,127,127,.12); --bubble-out: rgba(18,140,126,.16); --bubble-op: rgba(60,90,200,.16); }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 15px/1.45 system-ui, sans-serif; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
.top { display: flex; gap: 1rem; align-items: center; padding: .4rem 1rem; background: var(--accent); color: #fff; flex-wrap: wrap; }
.top h1 { font-size: 1.1rem; margin: 0; flex: 1 0 auto; }
.top nav { display: flex; gap: .3rem; }
.top nav button, #logout { background: transparent; color: #fff; border-color: rgba(255,255,255,.5); }
.top nav button[aria-pressed="true"] { background: rgba(255,255,255,.2); font-weight: 600; }
.count { display: inline-block; min-width: 1.4em; padding: 0 .35em; border-radius: 1em; background: var(--wait); color: #fff; font-size: .8rem; }
main { padding: .75rem; }
#login { max-width: 30rem; margin: 2rem auto; }
section, aside { min-width: 0; }
h2 { font-size: 1.05rem; margin: 0 0 .3rem; }
.inbox { display: grid; grid-template-columns: minmax(16rem, 22rem) 1fr; gap: .75rem; height: calc(100vh - 5rem); min-height: 28rem; }
#list-pane { border: 1px solid var(--border); border-radius: .5rem; padding: .5rem; display: flex; flex-direction: column; overflow: hidden; }
#chat-list { overflow-y: auto; flex: 1; }
#chat-pane { border: 1px solid var(--border); border-radius: .5rem; padding: .5rem .75rem; display: flex; flex-direction: column; overflow: hidden; }
#chat { display: flex; flex-direction: column; height: 100%; min-height: 0; }
#messages-box { flex: 1; overflow-y: auto; min-height: 8rem; padding: .25rem 0; }
.filters { display: flex; gap: .3rem; margin: .4rem 0; }
.filters button[aria-pressed="true"] { background: var(--accent); color: #fff; border-color: var(--accent); }
ul, ol { padding-left: 0; list-style: none; margin: 0; }
#chat-list li { border-bottom: 1px solid var(--border); }
#chat-list li button { all: unset; box-sizing: border-box; cursor: pointer; display: block; width: 100%; padding: .4rem .3rem; }
#chat-list li button[aria-current="true"] { background: var(--bubble-out); }
#chat-list .name { font-weight: 600; overflow-wrap: anywhere; }
#chat-title { overflow-wrap: anywhere; }
#chat-list .preview { color: var(--muted); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.badge { display: inline-block; margin-left: .4rem; padding: 0 .4rem; border-radius: .3rem; background: var(--wait); color: #fff; font-size: .75rem; font-weight: 600; }
.waiting .name::before { content: "● "; color: var(--wait); }
.chat-head { display: flex; justify-content: space-between; gap: .5rem; flex-wrap: wrap; border-bottom: 1px solid var(--border); padding-bottom: .4rem; }
.chat-head p { margin: 0; }
#chat-state.handed { color: var(--wait); font-weight: 600; }
#conversation li { max-width: 80%; margin: .3rem 0; padding: .35rem .6rem; border-radius: .6rem; overflow-wrap: anywhere; white-space: pre-wrap; }
#conversation li.inbound { background: var(--bubble-in); margin-right: auto; }
#conversation li.outbound { background: var(--bubble-out); margin-left: auto; }
#conversation li.operator { background: var(--bubble-op); }
#conversation li.failed { outline: 1px solid #b00020; }
.meta { font-size: .78rem; color: var(--muted); overflow-wrap: anywhere; }
#conversation .error { font-size: .78rem; color: light-dark(#b00020, #ff8a80); overflow-wrap: anywhere; }
.actions { display: flex; gap: .4rem; flex-wrap: wrap; align-items: flex-start; }
button { font: inherit; padding: .3rem .7rem; border-radius: .3rem; border: 1px solid var(--border); cursor: pointer; }
button.link { border: none; background: none; color: var(--accent); text-decoration: underline; padding: 0; }
.danger { border-color: #b00020; color: #b00020; }
button:focus-visible, input:focus-visible, textarea:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
#chat-list li button:focus-visible, #results li button:focus-visible { outline: 2px solid var(--accent); outline-offset: -2px; }
input, textarea { font: inherit; padding: .35rem; width: 100%; }
#reply-form, #template-form { border-top: 1px solid var(--border); padding-top: .4rem; }
.reply-bar { display: flex; gap: .5rem; align-items: center; justify-content: flex-end; margin-top: .3rem; }
.reply-bar .meta { margin-right: auto; }
.reply-bar .meta.over { color: #b00020; font-weight: 600; }
.template-grid { display: grid; grid-template-columns: 2fr 1fr; gap: .4rem; }
.template-grid .wide { grid-column: 1 / -1; }
.note { background: #fff3d6; color: #5a3d00; padding: .3rem .5rem; border-radius: .3rem; margin: 0 0 .4rem; }
label { display: block; font-size: .85rem; }
#error { background: #fdd; color: #600; padding: .5rem 1rem; margin: 0; }
.hint { font-size: .85rem; color: var(--muted); }
#search-view, #stats-view { max-width: 70rem; margin: 0 auto; }
#results li { border-bottom: 1px solid var(--border); padding: .35rem 0; }
#results li button { all: unset; cursor: pointer; display: block; width: 100%; }
#results .text { overflow-wrap: anywhere; white-space: pre-wrap; }
.numbers { display: grid; grid-template-columns: repeat(auto-fit, minmax(8rem, 1fr)); gap: .5rem; margin: 0; }
.numbers div { border: 1px solid var(--border); border-radius: .4rem; padding: .4rem .6rem; }
.numbers dt { font-size: .8rem; color: var(--muted); }
.numbers dd { margin: 0; font-size: 1.4rem; font-variant-numeric: tabular-nums; }
figure { margin: 1rem 0 0; }
figcaption { font-size: .8rem; color: var(--muted); }
svg.chart { width: 100%; max-width: 60rem; height: auto; display: block; font-size: 11px; }
svg.chart text { fill: currentColor; }
svg.chart .axis { stroke: currentColor; stroke-width: 1; }
svg.chart .grid { stroke: var(--border); stroke-width: 1; }
svg.chart .in { fill: #5b8def; }
svg.chart .out { fill: var(--accent); }
svg.chart .bar { fill: var(--accent); }
@media (max-width: 50rem) {
  .inbox { grid-template-columns: 1fr; height: auto; }
  #list-pane { max-height: 45vh; }
  #chat-pane { min-height: 70vh; }
  .template-grid { grid-template-columns: 1fr; }
}
`;
