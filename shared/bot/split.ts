// Splits an answer into WhatsApp text messages of at most 4096 characters (Unicode code points,
// as WhatsApp and the contract count them), at paragraph, line, sentence or word boundaries when
// possible, never inside a character as the user sees it (a surrogate pair, an emoji sequence
// joined with ZWJ or a skin tone, a letter with its combining marks). At most MAX_TEXT_PARTS
// messages: a longer answer (a model that ran on) is cut at a boundary and ends with "…" — a user
// flooded with dozens of messages reads none of them, and Meta limits the messages a business sends
// one user in a burst (error 131056).

import { characters, TEXT_BODY_LIMIT } from '../whatsapp/outbound';

export const WHATSAPP_TEXT_LIMIT = TEXT_BODY_LIMIT;
/** The most messages one answer goes out in. */
export const MAX_TEXT_PARTS = 4;
const CUT_MARK = '…';
/** Where a part may end, strongest first: a paragraph, a line, a sentence, a word. */
const BREAKS = [/\n\s*\n/g, /\n/g, /[.!?…]\s/g, /\s/g];

// Made on first use: building it costs about 5 ms, which every cold start paid at load.
let graphemes: Intl.Segmenter | undefined;

export function splitMessage(text: string, limit = WHATSAPP_TEXT_LIMIT, maxParts = MAX_TEXT_PARTS): string[] {
  const parts: string[] = [];
  let rest = text.trim();
  while (characters(rest) > limit) {
    const last = parts.length === maxParts - 1;
    const window = longestStart(rest, last ? limit - CUT_MARK.length : limit);
    // The strongest break in the part's second half: an early paragraph break gives way to a later
    // line, sentence or word break (never a cut inside a word when there is a space to cut at).
    const cut = BREAKS.map((pattern) => lastBreak(window, pattern)).find(
      (index) => index !== null && index > window.length / 2,
    );
    const head = cut ? window.slice(0, cut) : window;
    if (last) return [...parts, `${head.trim()}${CUT_MARK}`];
    parts.push(head.trim());
    rest = rest.slice(head.length).trim();
  }
  if (rest) parts.push(rest);
  return parts;
}

/**
 * An answer that stops short (the model reached its token limit) as the user should read it: cut
 * back to its last whole word (when that keeps more than half of it) and ending with "…", as a cut
 * long answer ends; one that stops at the end of a sentence is left as it is.
 */
export function markCut(text: string): string {
  const trimmed = text.trimEnd();
  if (/[.!?…]$/.test(trimmed)) return trimmed;
  // Ending in a space, its last word is whole.
  const cut = /\s$/.test(text) ? null : lastBreak(trimmed, /\s/g);
  const head = cut && cut > trimmed.length / 2 ? trimmed.slice(0, cut).trimEnd() : trimmed;
  return `${head}${CUT_MARK}`;
}

/**
 * The longest start of `text` of at most `limit` code points that ends between two graphemes; a
 * single grapheme longer than the limit (a pathological chain of combining marks) is cut between
 * code points.
 */
function longestStart(text: string, limit: number): string {
  // Where `limit` code points end (in UTF-16 units), read from the start only.
  let units = 0;
  let count = 0;
  for (const point of text) {
    if (count === limit) break;
    units += point.length;
    count++;
  }
  if (units >= text.length) return text;
  // The grapheme there, asked of the segmenter once and of that start alone (with the character
  // at the cut): V8's segmenter costs the length of the text it segments at each step, so walking
  // the graphemes of a whole answer of 400 KB (a model that ran on) took half a minute a part and
  // held up every reply. A boundary depends only on the characters before it and the one after.
  graphemes ??= new Intl.Segmenter(undefined, { granularity: 'grapheme' });
  const grapheme = graphemes.segment(text.slice(0, units + 2)).containing(units);
  const end = grapheme?.index ?? units;
  return text.slice(0, end > 0 ? end : units);
}

/** Index just after the last match of `pattern` in `text`, or null. */
function lastBreak(text: string, pattern: RegExp): number | null {
  let index: number | null = null;
  for (const match of text.matchAll(pattern)) index = match.index + match[0].length;
  return index;
}
