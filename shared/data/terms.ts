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

/**
 * Letters that lower case and NFKD leave as they are, yet Unicode takes for others: ß (and
 * capital ẞ, lower-cased first) is "ss" and the final sigma ς is σ in its case folding
 * (CaseFolding.txt), so that "STRASSE" finds "Straße" and "ΠΡΟΣ" (lower case writes a final sigma
 * at the end of a word) finds "πρόσωπο"; and its collation takes a letter with a stroke for the
 * base letter and æ, œ for ae, oe (Intl.Collator, sensitivity "base": the accents of "Łódź",
 * "Øresund", "Đorđe", "Guðrún", "cœur"), which NFKD does not decompose. The dashboard folds alike
 * (web/dashboard/app.ts).
 */
export const LETTER_FOLDS: Readonly<Record<string, string>> = {
  ß: 'ss',
  ς: 'σ',
  ł: 'l',
  ø: 'o',
  đ: 'd',
  ð: 'd',
  ħ: 'h',
  æ: 'ae',
  œ: 'oe',
};
const LETTERS_TO_FOLD = /[ßςłøđðħæœ]/g;

/** Lower case, accents removed: "Café" → "cafe", "Łódź" → "lodz", "Straße" → "strasse". */
export function fold(text: string): string {
  return text
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toLowerCase()
    .replace(LETTERS_TO_FOLD, (c) => LETTER_FOLDS[c] ?? c);
}

/**
 * The letters `fold` folds beyond lower case (`LETTER_FOLDS`): search terms or keys holding one
 * were stored by a version before that rule (`npm run health` finds them, `--repair` folds them).
 */
export const UNFOLDED_LETTER_PATTERN = '[ßςłøđðħæœ]';

/** The words of a text, folded. */
export function words(text: string): string[] {
  return fold(text).match(/[\p{L}\p{N}]+/gu) ?? [];
}

/**
 * Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar): a
 * run of them is one "word" to `words`, yet a reader looks for a word inside it. Every character
 * of such a run starts a word too, with prefixes of up to RUN_PREFIX characters (a query's run is
 * matched in pieces of that length), and so does the first character after one, a word like any. The ranges are written
 * out (not as Unicode properties) so that the same class works in a database's `$regex`.
 */
const SPACELESS_RANGES =
  '\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf' +
  '\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f';
const SPACELESS = new RegExp(`[${SPACELESS_RANGES}\\u{20000}-\\u{323af}]`, 'u');
/** Matches a text that holds a character of those scripts (literal characters: any regex engine). */
export const SPACELESS_TEXT_PATTERN = `[${JSON.parse(`"${SPACELESS_RANGES}"`) as string}]`;
/** Longest prefix stored from a character inside a run (4 Han characters are most words and names). */
const RUN_PREFIX = 4;
/**
 * Stored among the terms of a text that holds such a run: says its terms follow this rule (a
 * message stored before it is found by `npm run health`). Never a query term: queries are words.
 */
export const RUN_TERMS_MARK = '#runs';

const spaceless = (c: string | undefined): boolean => c !== undefined && SPACELESS.test(c);

/**
 * Every prefix (up to 24 characters) of every word of the texts, and inside runs of spaceless
 * scripts the prefixes (up to 4 characters) from each character, deduplicated, within MAX_TERM_BYTES.
 */
export function prefixTerms(...texts: (string | null | undefined)[]): string[] {
  const terms = new Set<string>();
  let bytes = 0;
  const add = (term: string): boolean => {
    if (terms.has(term)) return true;
    bytes += Buffer.byteLength(term) + ENTRY_BYTES;
    if (bytes > MAX_TERM_BYTES) return false;
    terms.add(term);
    return true;
  };
  if (texts.some((t) => t && SPACELESS.test(t))) add(RUN_TERMS_MARK);
  for (const text of texts) {
    if (!text) continue;
    for (const word of words(text)) {
      const chars = [...word];
      for (let start = 0; start < chars.length; start++) {
        const inRun = spaceless(chars[start]);
        if (start > 0 && !inRun && !spaceless(chars[start - 1])) continue;
        // A word after a run is a word like any (up to MAX_PREFIX), up to the next run: a query
        // matches it whole (`queryTerms` cuts a query's word at runs), and the run's characters
        // start their own words.
        const longest = start === 0 ? MAX_PREFIX : inRun ? RUN_PREFIX : MAX_PREFIX;
        let prefix = '';
        for (let n = start; n < Math.min(chars.length, start + longest); n++) {
          if (start > 0 && !inRun && spaceless(chars[n])) break;
          prefix += chars[n] ?? '';
          if (!add(prefix)) return [...terms];
        }
      }
    }
  }
  return [...terms];
}

/**
 * The terms a query must all match: its words, each cut to the longest stored prefix; a word
 * holding spaceless scripts goes in pieces (./prefixTerms): each of its other parts, and each run
 * in RUN_PREFIX-character pieces.
 */
export function queryTerms(query: string): string[] {
  const terms: string[] = [];
  for (const word of words(query)) {
    const chars = [...word];
    if (!chars.some(spaceless)) {
      terms.push(chars.slice(0, MAX_PREFIX).join(''));
      continue;
    }
    let i = 0;
    while (i < chars.length) {
      const inRun = spaceless(chars[i]);
      let end = i + 1;
      while (end < chars.length && spaceless(chars[end]) === inRun) end++;
      if (inRun)
        for (let at = i; at < end; at += RUN_PREFIX)
          terms.push(chars.slice(at, Math.min(end, at + RUN_PREFIX)).join(''));
      else terms.push(chars.slice(i, Math.min(end, i + MAX_PREFIX)).join(''));
      i = end;
    }
  }
  return [...new Set(terms)];
}

/** Runs of spaceless scripts (`SPACELESS`, repeated): what a query word's parts lie between. */
const SPACELESS_RUNS = new RegExp(`[${SPACELESS_RANGES}\\u{20000}-\\u{323af}]+`, 'u');

/**
 * The words of a query (or a word's parts outside runs of spaceless scripts, as `queryTerms` cuts
 * them) longer than the longest stored prefix, folded: the terms match only their first
 * MAX_PREFIX characters, so what they find is checked for the whole word (`startsWordsIn`).
 */
export function longQueryWords(query: string): string[] {
  const long: string[] = [];
  for (const word of words(query))
    for (const part of word.split(SPACELESS_RUNS)) if ([...part].length > MAX_PREFIX) long.push(part);
  return [...new Set(long)];
}

/**
 * Whether each of `long` (folded, `longQueryWords`) is the start of a word of one of the texts, a
 * word as `prefixTerms` reads them: a word, or its part right after a run of spaceless scripts.
 */
export function startsWordsIn(long: readonly string[], ...texts: (string | null | undefined)[]): boolean {
  if (long.length === 0) return true;
  // Compared in place at each start (a word's rest is never copied: a text alternating runs and
  // letters has a start every other character, and copying each start's rest was quadratic).
  const missing = new Set(long);
  for (const text of texts) {
    if (!text) continue;
    for (const word of words(text)) {
      let offset = 0;
      let previous: string | undefined;
      for (const c of word) {
        if (previous === undefined || (!spaceless(c) && spaceless(previous))) {
          for (const w of missing) if (word.startsWith(w, offset)) missing.delete(w);
          if (missing.size === 0) return true;
        }
        previous = c;
        offset += c.length;
      }
    }
  }
  return false;
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

/** `longQueryWords` of a user search: none for a query written as a phone number (its digits). */
export const userLongQueryWords = (query: string): string[] =>
  PHONE_NUMBER.test(query) ? [] : longQueryWords(query);

/** A filter on an array of stored prefix terms: it holds every one of `terms` (non-empty). */
export function holdsEvery(field: string, terms: readonly string[]): Record<string, unknown> {
  return { [field]: terms.length === 1 ? terms[0] : { $all: terms } };
}
