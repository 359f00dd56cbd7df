// Search terms: the prefixes of the words of a text, folded for case and accents, stored on
// documents so that prefix search is an exact match on an indexed array (no text index, no regex).

const MAX_PREFIX = 24;
const MAX_TERMS = 400;

/** Lower case, accents removed: "Café" → "cafe". */
export function fold(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase();
}

/** The words of a text, folded. */
export function words(text: string): string[] {
  return fold(text).match(/[\p{L}\p{N}]+/gu) ?? [];
}

/** Every prefix (up to 24 characters) of every word of the texts, deduplicated and bounded. */
export function prefixTerms(...texts: (string | null | undefined)[]): string[] {
  const terms = new Set<string>();
  for (const text of texts) {
    if (!text) continue;
    for (const word of words(text)) {
      const chars = [...word];
      for (let n = 1; n <= Math.min(chars.length, MAX_PREFIX); n++) {
        terms.add(chars.slice(0, n).join(''));
        if (terms.size >= MAX_TERMS) return [...terms];
      }
    }
  }
  return [...terms];
}

/** The terms a query must all match: its words, each cut to the longest stored prefix. */
export function queryTerms(query: string): string[] {
  return [...new Set(words(query).map((w) => [...w].slice(0, MAX_PREFIX).join('')))];
}
