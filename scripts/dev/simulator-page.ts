// The chat simulator's page and style (its script is web/simulator/app.ts). Served from their own
// routes so the Content-Security-Policy allows only 'self': no inline code, no CDN.

export const SIMULATOR_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export const SIMULATOR_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>Chat simulator · WhatsApp bot (development)</title>
<link rel="stylesheet" href="/api/dev/chat/app.css">
<script type="module" src="/api/dev/chat/app.js"></script>
</head>
<body>
<header>
  <h1>Chat simulator</h1>
  <p>Development only: you are a WhatsApp user writing to the bot. Each message goes to
  <code>/api/webhook</code> signed with the app secret, exactly as Meta sends it.</p>
</header>
<main>
  <form id="who" autocomplete="off">
    <label>Name <input id="name" name="name" required maxlength="60" value="Dev Tester"></label>
    <label>Number <input id="number" name="number" type="tel" required maxlength="30" value="15550001234"></label>
    <button type="submit" id="start">Chat</button>
  </form>
  <section id="chat" hidden>
    <p id="mode" class="note"></p>
    <ol id="messages" aria-live="polite"></ol>
    <form id="composer" autocomplete="off">
      <input id="text" name="text" maxlength="4096" placeholder="Type a message (try help, reset, stop, start)">
      <button type="submit" id="send">Send</button>
    </form>
    <div id="extras">
      <button type="button" id="send-image" title="An image (the text box, if filled, is its caption)">Image</button>
      <button type="button" id="send-location" title="A shared location">Location</button>
      <button type="button" id="send-reaction" title="Reacts to the bot's last message">React 👍</button>
    </div>
  </section>
  <p id="error" class="error" role="alert" hidden></p>
</main>
</body>
</html>
`;

export const SIMULATOR_CSS = `*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,sans-serif;background:#efeae2;color:#111b21}
header{background:#075e54;color:#fff;padding:.75rem 1rem}
header h1{margin:0;font-size:1.2rem}
header p{margin:.25rem 0 0;font-size:.85rem;opacity:.9}
header code{color:#fff}
main{max-width:46rem;margin:0 auto;padding:1rem}
form{display:flex;gap:.5rem;flex-wrap:wrap;align-items:end}
label{display:flex;flex-direction:column;font-size:.8rem;gap:.2rem}
input{font:inherit;padding:.45rem .6rem;border:1px solid #c9c9c9;border-radius:.4rem;min-width:0}
button{font:inherit;padding:.45rem .8rem;border:0;border-radius:.4rem;background:#128c7e;color:#fff;cursor:pointer}
button:disabled{opacity:.5;cursor:default}
#chat{margin-top:1rem}
#messages{list-style:none;margin:0 0 .75rem;padding:.5rem;display:flex;flex-direction:column;gap:.4rem;min-height:12rem;background:#e4ddd4;border-radius:.5rem}
#messages li{max-width:85%;padding:.4rem .6rem;border-radius:.5rem;background:#fff;box-shadow:0 1px 1px rgba(0,0,0,.1);overflow-wrap:anywhere}
#messages li.inbound{align-self:flex-end;background:#d9fdd3}
#messages li.outbound{align-self:flex-start}
#messages .text{white-space:pre-wrap}
#messages .meta{display:flex;gap:.5rem;align-items:center;justify-content:flex-end;font-size:.72rem;color:#667781;margin-top:.15rem}
#messages .meta button{padding:.1rem .4rem;font-size:.7rem;background:#8696a0}
#messages .status-not_sent,#messages .status-failed{color:#b3261e}
#composer input{flex:1}
#extras{display:flex;gap:.5rem;margin-top:.5rem;flex-wrap:wrap}
#extras button{background:#54656f}
.note{font-size:.85rem;color:#54656f;margin:0 0 .5rem}
.error{color:#b3261e}
`;
