// Management API tokens: made, listed and revoked by `npm run token`; the plain token is returned
// once at creation and only its SHA-256 hash is stored.
import { HANDOFF_BY_USER, type ApiToken, type DataStore } from '../data';
import { AppError, ErrorCode } from '../errors';
import { BOOTSTRAP_TOKEN_NAME, newToken, tokenState } from './auth';

const DAY_MS = 86_400_000;

/** Days a token may be valid: a whole number from 1 to ten years. */
export const TOKEN_EXPIRY_DAYS = { min: 1, max: 3650 } as const;

export const isTokenExpiryDays = (days: number): boolean =>
  Number.isSafeInteger(days) && days >= TOKEN_EXPIRY_DAYS.min && days <= TOKEN_EXPIRY_DAYS.max;

/** Longest token name, in characters. */
export const TOKEN_NAME_MAX = 100;

/**
 * Names no token may have, in any case: a handoff's `by` and the audit trail already use them for
 * the user (the `human` command) and for MANAGE_API_TOKEN, and a token so named would pass for them
 * (the handoff code treats `by: "user"` as the user's own request).
 */
export const RESERVED_TOKEN_NAMES: readonly string[] = [HANDOFF_BY_USER, BOOTSTRAP_TOKEN_NAME];

/** Why a token name is refused (never quoting it), or null when it is fine. */
export function tokenNameProblem(name: string): string | null {
  if (name.length === 0) return 'the name must not be empty';
  // Characters as the contract counts them (code points): an emoji is one.
  if ([...name].length > TOKEN_NAME_MAX) return `the name must be at most ${TOKEN_NAME_MAX} characters`;
  // Control characters (tab, newline...) and line separators would break `list`'s one line per token.
  if (/[\p{Cc}\u2028\u2029]/u.test(name))
    return 'the name must not contain control characters or line breaks';
  // Marks and overrides of writing direction would reorder what `list`, `by` and the audit trail
  // show around the name (U+202E turns the text after it around). A joiner (emoji) is fine.
  if (/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/u.test(name))
    return 'the name must not contain characters that change the writing direction (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069)';
  if (name.trim() !== name) return 'the name must not start or end with whitespace';
  const reserved = RESERVED_TOKEN_NAMES.find((r) => r.toLowerCase() === name.toLowerCase());
  if (reserved) return `the name "${reserved}" is reserved (it stands for the user or for MANAGE_API_TOKEN)`;
  return null;
}

/** Tokens read to count the valid ones with the name asked for (far more than any deployment has). */
const TOKENS_READ = 10_000;

/**
 * Makes a token. Several may share a name (a setup script run again makes its token again): each
 * has its own id, which `list` shows and `revoke` takes, and the Idempotency-Key's check tells
 * them apart by it; `by` and the audit trail show the name, so namesakes read alike there.
 * `namesakes`: how many valid tokens had the name already (`npm run token` notes it).
 */
export async function createToken(
  data: DataStore,
  input: { name: string; expiresDays: number | null; now: Date },
): Promise<{ token: string; record: ApiToken; namesakes: number }> {
  const nameProblem = tokenNameProblem(input.name);
  if (nameProblem) throw new AppError(ErrorCode.INVALID_INPUT, nameProblem);
  if (input.expiresDays !== null && !isTokenExpiryDays(input.expiresDays)) {
    throw new AppError(
      ErrorCode.INVALID_INPUT,
      `a token expires after ${TOKEN_EXPIRY_DAYS.min} to ${TOKEN_EXPIRY_DAYS.max} days`,
    );
  }
  const tokens = await data.tokens.list(TOKENS_READ);
  const namesakes = tokens.filter(
    (t) => t.name === input.name && tokenState(t, input.now) === 'active',
  ).length;
  const { token, hash } = newToken();
  const record = await data.tokens.create({
    name: input.name,
    hash,
    createdAt: input.now,
    expiresAt: input.expiresDays === null ? null : new Date(input.now.getTime() + input.expiresDays * DAY_MS),
  });
  return { token, record, namesakes };
}

/** One line per token: id, name, created, expires, last used, state (never the token). */
export function formatToken(t: ApiToken, now: Date): string {
  const iso = (d: Date | null, none: string) => (d ? d.toISOString() : none);
  return [
    t.id,
    t.name,
    `created=${t.createdAt.toISOString()}`,
    `expires=${iso(t.expiresAt, 'never')}`,
    `lastUsed=${iso(t.lastUsedAt, 'never')}`,
    t.revokedAt ? `revoked=${t.revokedAt.toISOString()}` : null,
    tokenState(t, now),
  ]
    .filter((part): part is string => part !== null)
    .join('\t');
}
