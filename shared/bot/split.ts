// Splits an answer into WhatsApp text messages of at most 4096 characters, at paragraph, line,
// sentence or word boundaries when possible, never inside a surrogate pair.

import { TEXT_BODY_LIMIT } from '../whatsapp/outbound';

export const WHATSAPP_TEXT_LIMIT = TEXT_BODY_LIMIT;

export function splitMessage(text: string, limit = WHATSAPP_TEXT_LIMIT): string[] {
  const parts: string[] = [];
  let rest = text.trim();
  // Counted in UTF-16 units (the stricter reading of "characters"); a pair is never cut.
  while (rest.length > limit) {
    let window = rest.slice(0, limit);
    if (/[\uD800-\uDBFF]$/.test(window)) window = window.slice(0, -1);
    const cut =
      lastBreak(window, /\n\s*\n/g) ??
      lastBreak(window, /\n/g) ??
      lastBreak(window, /[.!?…]\s/g) ??
      lastBreak(window, /\s/g);
    const head = cut && cut > limit / 2 ? window.slice(0, cut) : window;
    parts.push(head.trim());
    rest = rest.slice(head.length).trim();
  }
  if (rest) parts.push(rest);
  return parts;
}

/** Index just after the last match of `pattern` in `text`, or null. */
function lastBreak(text: string, pattern: RegExp): number | null {
  let index: number | null = null;
  for (const match of text.matchAll(pattern)) index = match.index + match[0].length;
  return index;
}
