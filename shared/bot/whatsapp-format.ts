// Markdown, as models answer, to WhatsApp's own text formatting (`*bold*`, `_italic_`, `~strike~`,
// ```mono```, `code`, `> quote`, `- ` and `1. ` lists), which shows Markdown's marks as they are.
//
// Conservative by design: what is not clearly Markdown is left as written. Code (fenced blocks and
// inline code spans) and tables are never touched; an emphasis mark needs its partner on the same
// line, and marks inside a word (snake_case, 2*3*4) or inside a URL are not emphasis.

/** A line opening or closing a fenced code block (any indentation: a block in a list item). */
const FENCE = /^\s*(`{3,}|~{3,})(.*)$/;
const THEMATIC_BREAK = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/;
const ATX_OPENING = /^ {0,3}#{1,6}(?:[ \t]|$)/;
const SETEXT_UNDERLINE = /^ {0,3}(?:=+|-+)[ \t]*$/;
/** The quote marks of a line, all of them (`> > nested`). */
const QUOTE = /^(?:[ \t]*>[ \t]?)+/;
const BULLET = /^(\s*)[-*+]([ \t]+)(.*)$/;
const ORDERED = /^(\s*\d{1,9}[.)][ \t]+)(.*)$/;
const TABLE_CELL = /^:?-+:?$/;
/** The longest link address looked at: work stays linear on any line. */
const MAX_LINK_URL = 2_048;

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

/** A line with a `|` above a delimiter row (`|---|:---:|`, `---|---`): a table. */
function isTableStart(lines: readonly string[], i: number): boolean {
  const next = lines[i + 1]?.trim();
  if (!lines[i]!.includes('|') || !next?.includes('|')) return false;
  const cells = next.replace(/^\|/, '').replace(/\|$/, '').split('|');
  return cells.every((cell) => TABLE_CELL.test(cell.trim()));
}

/** One line outside code and tables; `paragraph` when it is plain text (a setext heading's title). */
function block(line: string): { text: string; paragraph: boolean } {
  if (!line.trim()) return { text: line, paragraph: false };
  const quote = QUOTE.exec(line);
  if (quote) {
    const rest = line.slice(quote[0].length);
    return { text: `${quote[0]}${QUOTE.test(rest) ? rest : block(rest).text}`, paragraph: false };
  }
  const atx = ATX_OPENING.exec(line);
  if (atx) return { text: heading(atxTitle(line.slice(atx[0].length))), paragraph: false };
  const bullet = BULLET.exec(line);
  if (bullet) return { text: `${bullet[1]!}-${bullet[2]!}${inline(bullet[3]!)}`, paragraph: false };
  const ordered = ORDERED.exec(line);
  if (ordered) return { text: `${ordered[1]!}${inline(ordered[2]!)}`, paragraph: false };
  return { text: inline(line), paragraph: true };
}

/** An ATX heading's title: without the closing `#`s (those after a space, or all there are). */
function atxTitle(rest: string): string {
  const title = rest.trim();
  let end = title.length;
  while (end > 0 && title[end - 1] === '#') end--;
  if (end === 0) return '';
  return end < title.length && (title[end - 1] === ' ' || title[end - 1] === '\t')
    ? title.slice(0, end)
    : title;
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
const space = (ch: string): boolean => ch <= ' ' || (ch > '~' && SPACE.test(ch));
const punct = (ch: string): boolean => PUNCTUATION.test(ch);
const ESCAPABLE = /[!-/:-@[-`{-~]/;
// Sticky: each is tried where the scan stands.
const URL = /(?:https?:\/\/|www\.)[^\s<>]*[^\s<>.,:;!?"')\]*_~]/iy;
const AUTOLINK = /<([A-Za-z][A-Za-z0-9+.-]{1,31}:[^\s<>]*)>/y;
const TICKS = /`+/y;
const RUN = /\*+|_+|~+/y;
/** Where something other than plain text may begin. */
const SPECIAL = /[\\`![<hHwW*_~]/g;
const WORD = /[\p{L}\p{N}]/u;

/**
 * Inline Markdown of one line to WhatsApp's: emphasis (`strong` is what bold becomes: `*`, or
 * nothing in a heading, which is bold as a whole), strikethrough, links and images; code spans,
 * URLs and what is escaped are kept as they are.
 */
function inline(line: string, strong = '*', inLink = false): string {
  const nodes: Node[] = [];
  let text = '';
  const flush = () => {
    if (text) nodes.push({ kind: 'text', text });
    text = '';
  };
  let brackets: Map<number, number> | undefined;
  let ticks: TickRuns | undefined;
  let i = 0;
  while (i < line.length) {
    SPECIAL.lastIndex = i;
    const next = SPECIAL.exec(line)?.index ?? line.length;
    text += line.slice(i, next);
    i = next;
    if (i >= line.length) break;
    const c = line[i]!;
    if (c === '\\' && ESCAPABLE.test(line[i + 1] ?? '')) {
      text += line[i + 1]!;
      i += 2;
      continue;
    }
    if (c === '`') {
      const length = stickyAt(TICKS, line, i)![0].length;
      ticks ??= tickRuns(line);
      const close = ticks.closing(i + length, length);
      const end = close === null ? i + length : close + length;
      text += line.slice(i, end);
      i = end;
      continue;
    }
    // No link within a link's text (CommonMark has none either): one level deep at most.
    if ((c === '!' && line[i + 1] === '[') || (c === '[' && !inLink)) {
      brackets ??= matchBrackets(line);
      const link = parseLink(line, c === '!' ? i + 1 : i, brackets);
      if (link) {
        text += c === '!' ? image(link.label, link.url) : linkText(link.label, link.url, strong);
        i = link.end;
        continue;
      }
    }
    if (c === '<') {
      const auto = stickyAt(AUTOLINK, line, i);
      if (auto) {
        text += auto[1]!;
        i += auto[0].length;
        continue;
      }
    }
    const before = line[i - 1];
    if (/[hw]/i.test(c) && !(before && WORD.test(before))) {
      const url = stickyAt(URL, line, i);
      if (url) {
        text += url[0];
        i += url[0].length;
        continue;
      }
    }
    if (c === '*' || c === '_' || c === '~') {
      const length = stickyAt(RUN, line, i)![0].length;
      flush();
      nodes.push(run(line, i, c, length));
      i += length;
      continue;
    }
    text += c;
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

/** A sticky pattern's match where the scan stands. */
function stickyAt(pattern: RegExp, line: string, at: number): RegExpExecArray | null {
  pattern.lastIndex = at;
  return pattern.exec(line);
}

interface TickRuns {
  /** Where the first run of exactly `count` backticks at or after `from` begins, or null. */
  closing(from: number, count: number): number | null;
}

/** The backtick runs of a line by length, each list read forward once (code spans open in order). */
function tickRuns(line: string): TickRuns {
  const runs = new Map<number, { at: number[]; next: number }>();
  for (const match of line.matchAll(/`+/g)) {
    const list = runs.get(match[0].length) ?? { at: [], next: 0 };
    list.at.push(match.index);
    runs.set(match[0].length, list);
  }
  return {
    closing(from, count) {
      const list = runs.get(count);
      if (!list) return null;
      while (list.next < list.at.length && list.at[list.next]! < from) list.next++;
      return list.at[list.next] ?? null;
    },
  };
}

/**
 * A delimiter run. Stricter than CommonMark on purpose: no mark opens or closes inside a word
 * (CommonMark's rule for `_`, applied to `*` and `~` too), so that `2*3*4` and snake_case stay as
 * written, as WhatsApp would not format them either.
 */
function run(line: string, at: number, char: '*' | '_' | '~', length: number): Node {
  const before = line[at - 1] ?? ' ';
  const after = line[at + length] ?? ' ';
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
  type Run = Extract<Node, { kind: 'run' }>;
  // One stack of openers per kind (a tilde run pairs only with one as long), each opener with its
  // place: every closer looks at the top of its own stack only, so the work stays linear.
  const stacks = new Map<string, { run: Run; at: number }[]>();
  const kind = (run: Run) => (run.char === '~' ? `~${run.length}` : run.char);
  for (const [at, node] of nodes.entries()) {
    if (node.kind !== 'run' || (node.char === '~' && node.length > 2)) continue;
    const own = stacks.get(kind(node)) ?? [];
    stacks.set(kind(node), own);
    if (node.canClose) {
      while (node.left > 0 && own.length) {
        const opener = own[own.length - 1]!;
        if (node.char === '~') {
          opener.run.opens.push('~');
          node.closes.push('~');
          opener.run.left = 0;
          node.left = 0;
        } else {
          while (opener.run.left > 0 && node.left > 0) {
            const use = opener.run.left >= 2 && node.left >= 2 ? 2 : 1;
            const mark = use === 2 ? strong : '_';
            opener.run.opens.push(mark);
            node.closes.push(mark);
            opener.run.left -= use;
            node.left -= use;
          }
        }
        if (opener.run.left === 0) own.pop();
        // The openers of other kinds after this one are left unpaired (emphasis does not overlap).
        for (const stack of stacks.values())
          while (stack.length && stack[stack.length - 1]!.at > opener.at) stack.pop();
      }
    }
    if (node.canOpen && node.left > 0) own.push({ run: node, at });
  }
}

interface Link {
  readonly label: string;
  readonly url: string;
  /** Index just after the link. */
  readonly end: number;
}

/** `[label](url "title")` at `at` (the `[`), or null when it is not one. */
function parseLink(line: string, at: number, brackets: ReadonlyMap<number, number>): Link | null {
  const close = brackets.get(at);
  if (close === undefined || line[close + 1] !== '(') return null;
  let i = close + 2;
  const limit = Math.min(line.length, i + MAX_LINK_URL);
  while (line[i] === ' ') i++;
  let url: string;
  if (line[i] === '<') {
    const end = line.indexOf('>', i);
    if (end < 0 || end >= limit) return null;
    url = line.slice(i + 1, end);
    i = end + 1;
  } else {
    const start = i;
    let parens = 0;
    for (; i < limit; i++) {
      const c = line[i]!;
      if (c === '\\') i++;
      else if (c === '(') parens++;
      else if (c === ')' && parens-- === 0) break;
      else if (space(c)) break;
    }
    url = line.slice(start, i);
  }
  const title = /^(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?\s*\)/.exec(line.slice(i, limit));
  if (!title) return null;
  return { label: line.slice(at + 1, close), url, end: i + title[0].length };
}

/** Where each `[` of a line closes (its matching `]`, nesting counted; escaped ones not counted). */
function matchBrackets(line: string): Map<number, number> {
  const closes = new Map<number, number>();
  const open: number[] = [];
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '\\') i++;
    else if (c === '[') open.push(i);
    else if (c === ']' && open.length) closes.set(open.pop()!, i);
  }
  return closes;
}

/** A link as WhatsApp shows it: its text, then its address (once, when they are one). */
function linkText(label: string, url: string, strong: string): string {
  const text = inline(label, strong, true).trim();
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
