// The dashboard filters its waiting list as the API searches, with its own copy of the letters the
// API folds beyond lower case and NFKD (its build cannot import shared/): the two tables must agree.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { fold, LETTER_FOLDS } from '../../shared/data/terms';

const DASHBOARD = path.resolve(__dirname, '../../web/dashboard/app.ts');

/** The dashboard's `LETTER_FOLDS` entries and the character class it replaces, read from its source. */
function dashboardTable(): { folds: Record<string, string>; pattern: string } {
  const source = readFileSync(DASHBOARD, 'utf8');
  const block = /const LETTER_FOLDS[^{]*\{([^}]*)\}/.exec(source)?.[1];
  const pattern = /\.replace\(\/(\[[^\]]+\])\/g, \(c\) => LETTER_FOLDS\[c\]/.exec(source)?.[1];
  if (!block || !pattern) throw new Error('LETTER_FOLDS or its replace not found in web/dashboard/app.ts');
  const folds: Record<string, string> = {};
  for (const [, from, to] of block.matchAll(/(\S+): '([^']*)'/g)) folds[from as string] = to as string;
  return { folds, pattern };
}

describe('the dashboard folds letters as the API does', () => {
  it('holds the same table and replaces the same letters', () => {
    const { folds, pattern } = dashboardTable();
    expect(folds).toEqual(LETTER_FOLDS);
    expect(pattern).toBe(`[${Object.keys(LETTER_FOLDS).join('')}]`);
  });

  it('each folded letter is what the API searches for', () => {
    for (const [letter, folded] of Object.entries(LETTER_FOLDS)) expect(fold(letter)).toBe(folded);
  });
});
