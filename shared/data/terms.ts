// Search terms: the prefixes of the words of a text, folded for case and accents, stored on
// documents so that prefix search is an exact match on an indexed array (no text index, no regex).

/** Longest prefix stored; a longer query word is cut the same way. */
const MAX_PREFIX = 24;

/**
 * Budget of a document's terms: their BSON size, estimated as UTF-8 bytes plus 12 per entry. A
 * word of L letters gives min(L, 24) prefixes, but folding can turn one character into several
 * letters (a Korean syllable into three jamo of three bytes each), so the bound comes from the
 * worst text found: every text of up to 4,096 characters (WhatsApp's limit for a text the bot or
 * an operator sends) keeps all its prefixes, in any script; the worst, random eight-syllable
 * Korean words, takes about 520 KiB (English about 90 KiB). A longer inbound text (up to 65,536
 * characters are stored) keeps the prefixes of its words up to the budget: every word of the first
 * 4,096 characters at least, and usually all of them. With the text (at most 192 KiB as UTF-8) and
 * its raw form (at most 192 KiB), a message stays near 1 MB, under Cosmos DB's 2 MB.
 */
export const MAX_TERM_BYTES = 640 * 1024;
const ENTRY_BYTES = 12;
/** Most terms a document can hold: each one costs at least 13 bytes of the budget. */
export const MAX_TERMS = Math.floor(MAX_TERM_BYTES / (ENTRY_BYTES + 1));

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

/** Every prefix (up to 24 characters) of every word of the texts, deduplicated, within MAX_TERM_BYTES. */
export function prefixTerms(...texts: (string | null | undefined)[]): string[] {
  const terms = new Set<string>();
  let bytes = 0;
  for (const text of texts) {
    if (!text) continue;
    for (const word of words(text)) {
      const chars = [...word];
      let prefix = '';
      for (let n = 0; n < Math.min(chars.length, MAX_PREFIX); n++) {
        prefix += chars[n] ?? '';
        if (terms.has(prefix)) continue;
        bytes += Buffer.byteLength(prefix) + ENTRY_BYTES;
        if (bytes > MAX_TERM_BYTES) return [...terms];
        terms.add(prefix);
      }
    }
  }
  return [...terms];
}

/** The terms a query must all match: its words, each cut to the longest stored prefix. */
export function queryTerms(query: string): string[] {
  return [...new Set(words(query).map((w) => [...w].slice(0, MAX_PREFIX).join('')))];
}

/** Digits and phone punctuation only, with at least one digit: "+49 (170) 123-45.6". */
const PHONE_NUMBER = /^[\d\s+\-().]*\d[\d\s+\-().]*$/;

/**
 * The terms of a user search: a query written as a phone number is one term, its digits (the start
 * of the number); any other query, its words (each the start of a word of the name or the number).
 */
export function userQueryTerms(query: string, maxDigits: number): string[] {
  if (PHONE_NUMBER.test(query)) return [query.replace(/\D/g, '').slice(0, maxDigits)];
  return queryTerms(query);
}

/** A filter on an array of stored prefix terms: it holds every one of `terms` (non-empty). */
export function holdsEvery(field: string, terms: readonly string[]): Record<string, unknown> {
  return { [field]: terms.length === 1 ? terms[0] : { $all: terms } };
}
