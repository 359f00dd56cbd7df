// The dashboard: one HTML page with its script and style served from their own routes, so the
// Content-Security-Policy can allow only 'self' (no inline code). No build step, no CDN. Kept as
// strings in a .ts module so they are part of dist/ without a copy step.

export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>WhatsApp bot – dashboard</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/api/manage/app.css">
<script src="/api/manage/app.js" defer></script>
</head>
<body>
<header>
  <h1>WhatsApp bot</h1>
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
    <p class="hint">The token is kept in this tab's session storage only.</p>
  </section>
  <div id="app" hidden>
    <section id="stats" aria-labelledby="stats-title">
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
    </section>
    <section id="chats-section" aria-labelledby="chats-title">
      <h2 id="chats-title">Latest chats</h2>
      <ul id="chats"></ul>
    </section>
    <section id="search-section" aria-labelledby="search-title">
      <h2 id="search-title">Search messages</h2>
      <form id="search-form" role="search">
        <label for="q">Words</label>
        <input id="q" name="q" type="search" required>
        <button type="submit">Search</button>
      </form>
      <ul id="results" aria-live="polite"></ul>
    </section>
    <section id="conversation-section" aria-labelledby="conversation-title" hidden>
      <h2 id="conversation-title">Conversation</h2>
      <p id="conversation-user"></p>
      <div class="actions">
        <button type="button" id="export">Export JSON</button>
        <button type="button" id="erase" class="danger">Erase user</button>
      </div>
      <button type="button" id="older" hidden>Older messages</button>
      <ol id="conversation" aria-label="Messages, oldest first"></ol>
    </section>
  </div>
</main>
</body>
</html>
`;

export const DASHBOARD_CSS = `:root { color-scheme: light dark; --accent: #128c7e; --muted: #667; --border: #ccd; }
* { box-sizing: border-box; }
[hidden] { display: none !important; }
body { margin: 0; font: 16px/1.45 system-ui, sans-serif; }
header { display: flex; justify-content: space-between; align-items: center; padding: .5rem 1rem; background: var(--accent); color: #fff; }
header h1 { font-size: 1.2rem; margin: 0; }
main { padding: 1rem; max-width: 70rem; margin: 0 auto; }
#app { display: grid; gap: 1rem; grid-template-columns: 1fr; }
@media (min-width: 50rem) { #app { grid-template-columns: 1fr 1fr; } #stats, #conversation-section { grid-column: 1 / -1; } }
section { border: 1px solid var(--border); border-radius: .5rem; padding: .75rem 1rem; min-width: 0; }
h2 { font-size: 1.05rem; margin: 0 0 .5rem; }
.numbers { display: grid; grid-template-columns: repeat(auto-fit, minmax(8rem, 1fr)); gap: .5rem; margin: 0; }
.numbers div { border: 1px solid var(--border); border-radius: .4rem; padding: .4rem .6rem; }
.numbers dt { font-size: .8rem; color: var(--muted); }
.numbers dd { margin: 0; font-size: 1.4rem; font-variant-numeric: tabular-nums; }
figure { margin: .75rem 0 0; }
figcaption { font-size: .8rem; color: var(--muted); }
#chart svg { width: 100%; height: 10rem; display: block; }
#chart .point { fill: var(--accent); }
ul, ol { padding-left: 0; list-style: none; margin: 0; }
li { border-bottom: 1px solid var(--border); padding: .35rem 0; overflow-wrap: anywhere; }
li button { all: unset; cursor: pointer; display: block; width: 100%; }
li button:focus-visible, button:focus-visible, input:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; }
.meta { font-size: .8rem; color: var(--muted); }
.inbound { margin-right: 15%; }
.outbound { margin-left: 15%; text-align: right; }
.actions { display: flex; gap: .5rem; flex-wrap: wrap; margin-bottom: .5rem; }
button { font: inherit; padding: .35rem .8rem; border-radius: .3rem; border: 1px solid var(--border); cursor: pointer; }
.danger { border-color: #b00020; color: #b00020; }
input { font: inherit; padding: .35rem; width: 100%; max-width: 24rem; }
label { display: block; font-size: .9rem; }
#error { background: #fdd; color: #600; padding: .5rem 1rem; margin: 0; }
.hint { font-size: .85rem; color: var(--muted); }
`;

// Plain browser JavaScript (no template literals inside): every user-supplied string goes through
// textContent, never innerHTML.
export const DASHBOARD_JS = `'use strict';
(function () {
  var KEY = 'manageToken';
  var SVG = 'http://www.w3.org/2000/svg';
  var state = { userId: null, cursor: null };
  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function token() { return sessionStorage.getItem(KEY); }
  function showError(message) {
    var box = $('error');
    box.textContent = message || '';
    box.hidden = !message;
  }
  function signedIn(on) {
    $('login').hidden = on;
    $('app').hidden = !on;
    $('logout').hidden = !on;
  }
  function api(path, options) {
    options = options || {};
    var headers = { Authorization: 'Bearer ' + token() };
    return fetch('/api/manage/' + path, { method: options.method || 'GET', headers: headers }).then(function (r) {
      if (r.status === 401 || r.status === 403) {
        sessionStorage.removeItem(KEY);
        signedIn(false);
        throw new Error(r.status === 401 ? 'The token was not accepted.' : 'The token is revoked or expired.');
      }
      if (r.status === 204) return null;
      return r.json().then(function (body) {
        if (!r.ok) throw new Error((body && body.error && body.error.message) || ('HTTP ' + r.status));
        return body;
      });
    });
  }
  function fmt(iso) { return iso ? new Date(iso).toISOString().replace('T', ' ').slice(0, 16) + ' UTC' : ''; }
  function userLabel(u) { return (u.name || '(no name)') + ' · ' + (u.waId ? '+' + u.waId : (u.bsuid || u.id)); }

  function renderStats(s) {
    var values = {
      'users.total': s.users.total, 'users.optedOut': s.users.optedOut, 'users.active24h': s.users.active24h,
      'messages.total': s.messages.total, 'messages.inbound': s.messages.inbound,
      'messages.outbound': s.messages.outbound, 'messages.failed': s.messages.failed,
      'ai.requests': s.ai.requests, 'ai.tokens': s.ai.tokens
    };
    var dds = document.querySelectorAll('[data-stat]');
    for (var i = 0; i < dds.length; i++) dds[i].textContent = String(values[dds[i].getAttribute('data-stat')]);
    renderChart(s.daily);
  }
  function renderChart(daily) {
    var w = 600, h = 160, pad = 4;
    var max = 1;
    daily.forEach(function (d) { max = Math.max(max, d.inbound + d.outbound); });
    var svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', '0 0 ' + w + ' ' + h);
    svg.setAttribute('role', 'img');
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-label', 'Messages per day over the last ' + daily.length + ' days');
    var step = w / daily.length;
    daily.forEach(function (d, i) {
      var total = d.inbound + d.outbound;
      var bh = Math.max(1, (h - pad) * total / max);
      var r = document.createElementNS(SVG, 'rect');
      r.setAttribute('class', 'point');
      r.setAttribute('data-date', d.date);
      r.setAttribute('data-value', String(total));
      r.setAttribute('x', String(i * step + 1));
      r.setAttribute('width', String(Math.max(1, step - 2)));
      r.setAttribute('y', String(h - bh));
      r.setAttribute('height', String(bh));
      var t = document.createElementNS(SVG, 'title');
      t.textContent = d.date + ': ' + d.inbound + ' in, ' + d.outbound + ' out, ' + d.newUsers + ' new users';
      r.appendChild(t);
      svg.appendChild(r);
    });
    var chart = $('chart');
    chart.replaceChildren(svg);
  }
  function messageItem(m) {
    var li = el('li', null, m.direction);
    li.setAttribute('data-id', m.id);
    li.appendChild(el('div', m.text, 'text'));
    li.appendChild(el('div', fmt(m.createdAt) + ' · ' + m.direction + ' · ' + m.type + ' · ' + m.status, 'meta'));
    return li;
  }
  function loadStats() { return api('stats').then(renderStats); }
  function loadChats() {
    return api('chats?limit=20').then(function (body) {
      var list = $('chats');
      list.replaceChildren();
      body.items.forEach(function (c) {
        var li = el('li');
        var b = el('button');
        b.type = 'button';
        b.setAttribute('data-user-id', c.user.id);
        b.appendChild(el('strong', userLabel(c.user)));
        b.appendChild(el('div', c.lastMessage.text, 'text'));
        b.appendChild(el('div', fmt(c.user.lastMessageAt), 'meta'));
        b.addEventListener('click', function () { openUser(c.user.id); });
        li.appendChild(b);
        list.appendChild(li);
      });
      if (!body.items.length) list.appendChild(el('li', 'No chats yet.', 'meta'));
    });
  }
  function openUser(id) {
    state.userId = id;
    state.cursor = null;
    $('conversation').replaceChildren();
    $('conversation-section').hidden = false;
    return api('users/' + encodeURIComponent(id)).then(function (u) {
      $('conversation-user').textContent = userLabel(u) + ' · ' + u.messageCount + ' messages' + (u.optedOut ? ' · opted out' : '');
      return loadOlder();
    }).then(function () { $('conversation-section').scrollIntoView(); });
  }
  function loadOlder() {
    var id = state.userId;
    var path = 'users/' + encodeURIComponent(id) + '/messages?limit=50' + (state.cursor ? '&cursor=' + encodeURIComponent(state.cursor) : '');
    return api(path).then(function (page) {
      if (state.userId !== id) return;
      var list = $('conversation');
      // The API answers newest first; the conversation reads oldest first (older pages go on top).
      var items = page.items.slice().reverse();
      var first = list.firstChild;
      items.forEach(function (m) { list.insertBefore(messageItem(m), first); });
      state.cursor = page.nextCursor;
      $('older').hidden = !page.nextCursor;
    });
  }
  function search(q) {
    return api('messages?limit=50&q=' + encodeURIComponent(q)).then(function (page) {
      var list = $('results');
      list.replaceChildren();
      page.items.forEach(function (m) {
        var li = el('li');
        var b = el('button');
        b.type = 'button';
        b.appendChild(el('div', m.text, 'text'));
        b.appendChild(el('div', fmt(m.createdAt) + ' · ' + m.direction, 'meta'));
        b.addEventListener('click', function () { openUser(m.userId).catch(fail); });
        li.appendChild(b);
        list.appendChild(li);
      });
      if (!page.items.length) list.appendChild(el('li', 'No messages found.', 'meta'));
    });
  }
  function exportUser() {
    var id = state.userId;
    return api('users/' + encodeURIComponent(id) + '/export').then(function (data) {
      var blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
      var a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'user-' + id + '.json';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(function () { URL.revokeObjectURL(a.href); }, 1000);
    });
  }
  function eraseUser() {
    var id = state.userId;
    if (!window.confirm('Erase this user, all their messages and events? This cannot be undone.')) return Promise.resolve();
    return api('users/' + encodeURIComponent(id), { method: 'DELETE' }).then(function () {
      state.userId = null;
      $('conversation').replaceChildren();
      $('conversation-section').hidden = true;
      // Results may show the erased user's messages.
      $('results').replaceChildren();
      return refresh();
    });
  }
  function fail(e) { showError(e && e.message ? e.message : 'Something went wrong.'); }
  function refresh() { showError(''); return Promise.all([loadStats(), loadChats()]); }

  document.addEventListener('DOMContentLoaded', function () {
    $('login-form').addEventListener('submit', function (ev) {
      ev.preventDefault();
      sessionStorage.setItem(KEY, $('token').value.trim());
      $('token').value = '';
      signedIn(true);
      refresh().catch(fail);
    });
    $('logout').addEventListener('click', function () { sessionStorage.removeItem(KEY); signedIn(false); });
    $('search-form').addEventListener('submit', function (ev) { ev.preventDefault(); search($('q').value).catch(fail); });
    $('older').addEventListener('click', function () { loadOlder().catch(fail); });
    $('export').addEventListener('click', function () { exportUser().catch(fail); });
    $('erase').addEventListener('click', function () { eraseUser().catch(fail); });
    if (token()) { signedIn(true); refresh().catch(fail); } else signedIn(false);
  });
})();
`;
