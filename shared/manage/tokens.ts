// Management API tokens: made, listed and revoked by `npm run token`; the plain token is returned
// once at creation and only its SHA-256 hash is stored.
import type { ApiToken, DataStore } from '../data';
import { AppError, ErrorCode } from '../errors';
import { newToken, tokenState } from './auth';

const DAY_MS = 86_400_000;

/** Days a token may be valid: a whole number from 1 to ten years. */
export const TOKEN_EXPIRY_DAYS = { min: 1, max: 3650 } as const;

export const isTokenExpiryDays = (days: number): boolean =>
  Number.isSafeInteger(days) && days >= TOKEN_EXPIRY_DAYS.min && days <= TOKEN_EXPIRY_DAYS.max;

export async function createToken(
  data: DataStore,
  input: { name: string; expiresDays: number | null; now: Date },
): Promise<{ token: string; record: ApiToken }> {
  if (input.expiresDays !== null && !isTokenExpiryDays(input.expiresDays)) {
    throw new AppError(
      ErrorCode.INVALID_INPUT,
      `a token expires after ${TOKEN_EXPIRY_DAYS.min} to ${TOKEN_EXPIRY_DAYS.max} days`,
    );
  }
  const { token, hash } = newToken();
  const record = await data.tokens.create({
    name: input.name,
    hash,
    createdAt: input.now,
    expiresAt: input.expiresDays === null ? null : new Date(input.now.getTime() + input.expiresDays * DAY_MS),
  });
  return { token, record };
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
