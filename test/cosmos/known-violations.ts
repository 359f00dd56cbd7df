// Allow-list of Cosmos DB rule violations the checker may tolerate, each with its reason. Every entry says why it is here; remove the
// entry together with the fix (test/unit/cosmos-rules.test.ts fails on an index entry that no
// longer occurs).
import type { RuleId, Violation } from './rules';

export interface KnownViolation {
  readonly rule: RuleId;
  readonly collection: string;
  readonly subject: string;
  /** Who sends it, when it is a command: the app, or a test's own query. */
  readonly origin?: 'app' | 'test';
  readonly why: string;
}

// Empty: every violation the checker found was fixed in the data module (indexes.ts and infra/)
// and in scripts/restore.ts. Keep it empty; an entry needs a reason and an issue.
export const KNOWN_VIOLATIONS: readonly KnownViolation[] = [];

export const isKnown = (v: Violation): boolean =>
  KNOWN_VIOLATIONS.some(
    (k) =>
      k.rule === v.rule &&
      k.collection === v.collection &&
      k.subject === v.subject &&
      (k.origin === undefined || v.origin === undefined || k.origin === v.origin),
  );
