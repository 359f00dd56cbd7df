// Markdown, as models answer, to WhatsApp's own text formatting (`*bold*`, `_italic_`, `~strike~`,
// ```mono```, `code`, `> quote`, `- ` and `1. ` lists), which shows Markdown's marks as they are.
//
// Conservative by design: what is not clearly Markdown is left as written. Code (fenced blocks and
// inline code spans) and tables are never touched; an emphasis mark needs its partner on the same
// line, and marks inside a word (snake_case, 2*3*4) or inside a URL are not emphasis.

/** A line opening or closing a fenced code block (any indentation: a block in a list item). */
const FENCE = /^\s*(`{3,}|~{3,})(.*)$/;
const THEMATIC_BREAK = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const ATX_HEADING = /^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const SETEXT_UNDERLINE = /^ {0,3}(?:=+|-+)[ \t]*$/;
const QUOTE = /^(\s*>[ \t]?)(.*)$/;
const BULLET = /^(\s*)[-*+]([ \t]+)(.*)$/;
const ORDERED = /^(\s*\d{1,9}[.)][ \t]+)(.*)$/;
const TABLE_DELIMITER = /^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)+\|?\s*$|^\s*\|\s*:?-+:?\s*\|\s*$/;

/** The answer in WhatsApp's formatting (see the module comment). */
export function toWhatsApp(text: string): string {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  const out: string[] = [];
  /** Whether the last line put out is a paragraph's (a setext underline turns it into a heading). */
  let paragraph: string | null = null;
  let dropped = false;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const fence = FENCE.exec(line);
    if (fence && !(fence[1]!.startsWith('`') && fence[2]!.includes('`'))) {
      // A fenced block, verbatim to its closing fence (or the end, when it has none).
      const mark = fence[1]!;
      out.push(line);
      for (i++; i < lines.length; i++) {
        const inner = lines[i]!;
        out.push(inner);
        const close = FENCE.exec(inner);
        if (close && close[1]![0] === mark[0] && close[1]!.length >= mark.length && !close[2]!.trim()) break;
      }
      paragraph = null;
      continue;
    }
    if (paragraph !== null && SETEXT_UNDERLINE.test(line)) {
      out[out.length - 1] = heading(paragraph);
      paragraph = null;
      continue;
    }
    if (THEMATIC_BREAK.test(line)) {
      // Dropped, and with it one of the blank lines around it (else there would be two).
      if ((!out.length || !out[out.length - 1]!.trim()) && lines[i + 1]?.trim() === '') i++;
      dropped = true;
      paragraph = null;
      continue;
    }
    if (isTableStart(lines, i)) {
      for (; i < lines.length && lines[i]!.includes('|') && lines[i]!.trim(); i++) out.push(lines[i]!);
      i--;
      paragraph = null;
      continue;
    }
    const converted = block(line);
    out.push(converted.text);
    paragraph = converted.paragraph ? line : null;
  }
  // A rule at the start or the end leaves no blank line there.
  if (dropped) {
    while (out.length && !out[0]!.trim()) out.shift();
    while (out.length && !out[out.length - 1]!.trim()) out.pop();
  }
  return out.join('\n');
}

function isTableStart(lines: readonly string[], i: number): boolean {
  const next = lines[i + 1];
  return lines[i]!.includes('|') && next !== undefined && TABLE_DELIMITER.test(next);
}

/** One line outside code and tables; `paragraph` when it is plain text (a setext heading's title). */
function block(line: string): { text: string; paragraph: boolean } {
  if (!line.trim()) return { text: line, paragraph: false };
  const atx = ATX_HEADING.exec(line);
  if (atx) return { text: heading(atx[1] ?? ''), paragraph: false };
  const quote = QUOTE.exec(line);
  if (quote) return { text: `${quote[1]!}${block(quote[2]!).text}`, paragraph: false };
  const bullet = BULLET.exec(line);
  if (bullet) return { text: `${bullet[1]!}-${bullet[2]!}${inline(bullet[3]!)}`, paragraph: false };
  const ordered = ORDERED.exec(line);
  if (ordered) return { text: `${ordered[1]!}${inline(ordered[2]!)}`, paragraph: false };
  return { text: inline(line), paragraph: true };
}

/** A heading as a bold line (bold within it goes: the whole line is). */
function heading(title: string): string {
  const text = inline(title.trim(), '').trim();
  return text ? `*${text}*` : '';
}

type Node =
  | { readonly kind: 'text'; readonly text: string }
  | {
      readonly kind: 'run';
      readonly char: '*' | '_' | '~';
      readonly length: number;
      /** Marks of the run not (yet) matched, written as they are. */
      left: number;
      readonly canOpen: boolean;
      readonly canClose: boolean;
      /** WhatsApp marks this run opens, innermost first. */
      readonly opens: string[];
      /** WhatsApp marks this run closes, innermost first. */
      readonly closes: string[];
    };

const PUNCTUATION = /[\p{P}\p{S}]/u;
const SPACE = /\s/u;
const ESCAPABLE = /[!-/:-@[-`{-~]/;
const URL = /^(?:https?:\/\/|www\.)[^\s<>]*[^\s<>.,:;!?"')\]*_~]/i;
const AUTOLINK = /^<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>/;

/**
 * Inline Markdown of one line to WhatsApp's: emphasis (`strong` is what bold becomes: `*`, or
 * nothing in a heading, which is bold as a whole), strikethrough, links and images; code spans,
 * URLs and what is escaped are kept as they are.
 */
function inline(line: string, strong = '*'): string {
  const nodes: Node[] = [];
  let text = '';
  const flush = () => {
    if (text) nodes.push({ kind: 'text', text });
    text = '';
  };
  const keep = (kept: string) => {
    text += kept;
  };
  let i = 0;
  while (i < line.length) {
    const c = line[i]!;
    const rest = line.slice(i);
    if (c === '\\' && ESCAPABLE.test(line[i + 1] ?? '')) {
      keep(line[i + 1]!);
      i += 2;
      continue;
    }
    if (c === '`') {
      const ticks = /^`+/.exec(rest)![0];
      const close = closingTicks(line, i + ticks.length, ticks.length);
      const end = close === null ? i + ticks.length : close + ticks.length;
      keep(line.slice(i, end));
      i = end;
      continue;
    }
    if (c === '!' || c === '[') {
      const link = parseLink(line, c === '!' ? i + 1 : i);
      if (link) {
        keep(c === '!' ? image(link.label, link.url) : linkText(link.label, link.url, strong));
        i = link.end;
        continue;
      }
    }
    if (c === '<') {
      const auto = AUTOLINK.exec(rest);
      if (auto) {
        keep(auto[1]!);
        i += auto[0].length;
        continue;
      }
    }
    const before = line[i - 1];
    if ((c === 'h' || c === 'H' || c === 'w' || c === 'W') && !(before && /[\p{L}\p{N}]/u.test(before))) {
      const url = URL.exec(rest);
      if (url) {
        keep(url[0]);
        i += url[0].length;
        continue;
      }
    }
    if (c === '*' || c === '_' || c === '~') {
      const length = /^(\*+|_+|~+)/.exec(rest)![0].length;
      flush();
      nodes.push(run(line, i, c, length));
      i += length;
      continue;
    }
    keep(c);
    i++;
  }
  flush();
  matchRuns(nodes, strong);
  return nodes
    .map((n) =>
      n.kind === 'text'
        ? n.text
        : `${n.closes.join('')}${n.char.repeat(n.left)}${[...n.opens].reverse().join('')}`,
    )
    .join('');
}

/** Where a code span opened by `count` backticks closes (a run of exactly as many), or null. */
function closingTicks(line: string, from: number, count: number): number | null {
  for (const match of line.slice(from).matchAll(/`+/g))
    if (match[0].length === count) return from + match.index;
  return null;
}

/**
 * A delimiter run. Stricter than CommonMark on purpose: no mark opens or closes inside a word
 * (CommonMark's rule for `_`, applied to `*` and `~` too), so that `2*3*4` and snake_case stay as
 * written, as WhatsApp would not format them either.
 */
function run(line: string, at: number, char: '*' | '_' | '~', length: number): Node {
  const before = line[at - 1] ?? ' ';
  const after = line[at + length] ?? ' ';
  const space = (ch: string) => SPACE.test(ch);
  const punct = (ch: string) => PUNCTUATION.test(ch);
  const leftFlanking = !space(after) && (!punct(after) || space(before) || punct(before));
  const rightFlanking = !space(before) && (!punct(before) || space(after) || punct(after));
  return {
    kind: 'run',
    char,
    length,
    left: length,
    canOpen: leftFlanking && (!rightFlanking || punct(before)),
    canClose: rightFlanking && (!leftFlanking || punct(after)),
    opens: [],
    closes: [],
  };
}

/**
 * Pairs the runs as CommonMark's emphasis does (each closer with the nearest opener of its kind
 * before it; two marks a side make bold, one italic) and notes the WhatsApp mark of each pair.
 * `~~x~~` (or `~x~`) is strikethrough; longer tilde runs, and runs left unpaired, stay as written.
 */
function matchRuns(nodes: Node[], strong: string): void {
  const openers: Extract<Node, { kind: 'run' }>[] = [];
  for (const node of nodes) {
    if (node.kind !== 'run') continue;
    if (node.canClose) {
      for (let o = openers.length - 1; o >= 0 && node.left > 0; o--) {
        const opener = openers[o]!;
        if (opener.char !== node.char) continue;
        if (node.char === '~') {
          if (opener.length !== node.length || node.length > 2) continue;
          opener.opens.push('~');
          node.closes.push('~');
          opener.left = 0;
          node.left = 0;
        } else {
          while (opener.left > 0 && node.left > 0) {
            const use = opener.left >= 2 && node.left >= 2 ? 2 : 1;
            const mark = use === 2 ? strong : '_';
            opener.opens.push(mark);
            node.closes.push(mark);
            opener.left -= use;
            node.left -= use;
          }
        }
        // The openers after this one are left unpaired (emphasis does not overlap).
        openers.splice(opener.left > 0 ? o + 1 : o);
        o = openers.length;
      }
    }
    if (node.canOpen && node.left > 0) openers.push(node);
  }
}

interface Link {
  readonly label: string;
  readonly url: string;
  /** Index just after the link. */
  readonly end: number;
}

/** `[label](url "title")` at `at` (the `[`), or null when it is not one. */
function parseLink(line: string, at: number): Link | null {
  if (line[at] !== '[') return null;
  let depth = 0;
  let close = -1;
  for (let i = at; i < line.length; i++) {
    const c = line[i];
    if (c === '\\') i++;
    else if (c === '[') depth++;
    else if (c === ']' && --depth === 0) {
      close = i;
      break;
    }
  }
  if (close < 0 || line[close + 1] !== '(') return null;
  let i = close + 2;
  while (line[i] === ' ') i++;
  let url: string;
  if (line[i] === '<') {
    const end = line.indexOf('>', i);
    if (end < 0) return null;
    url = line.slice(i + 1, end);
    i = end + 1;
  } else {
    const start = i;
    let parens = 0;
    for (; i < line.length; i++) {
      const c = line[i]!;
      if (c === '\\') i++;
      else if (c === '(') parens++;
      else if (c === ')' && parens-- === 0) break;
      else if (SPACE.test(c)) break;
    }
    url = line.slice(start, i);
  }
  const title = /^(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)/.exec(line.slice(i));
  if (!title) return null;
  return { label: line.slice(at + 1, close), url, end: i + title[0].length };
}

/** A link as WhatsApp shows it: its text, then its address (once, when they are one). */
function linkText(label: string, url: string, strong: string): string {
  const text = inline(label, strong).trim();
  if (!url) return text;
  if (!text || text === url) return url;
  // An address written as the link's text: once (a number or an e-mail address WhatsApp links).
  if (`mailto:${text}` === url || `tel:${text}` === url) return text;
  return `${text} (${url})`;
}

/** An image: its description, then its address. */
function image(alt: string, url: string): string {
  const text = alt.trim();
  if (!url) return text;
  return text && text !== url ? `${text} (${url})` : url;
}
