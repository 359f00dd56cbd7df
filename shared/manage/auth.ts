// Bearer-token authentication of the management API: the bootstrap MANAGE_API_TOKEN (compared in
// constant time) or a token made with `npm run token`, stored as a SHA-256 hash.
import { createHash, randomBytes } from 'node:crypto';
import { AppError, ErrorCode } from '../errors';
import { sameSecret } from '../secrets';
import type { ApiToken, DataStore } from '../data';

export interface Caller {
  /** The token's name, recorded in the audit trail. */
  readonly name: string;
  readonly tokenId: string | null;
}

export const BOOTSTRAP_TOKEN_NAME = 'MANAGE_API_TOKEN';

export const hashToken = (token: string): string => createHash('sha256').update(token, 'utf8').digest('hex');

/** A new random token (shown once) and its hash (stored). */
export function newToken(): { token: string; hash: string } {
  const token = `wam_${randomBytes(32).toString('base64url')}`;
  return { token, hash: hashToken(token) };
}

export function bearerToken(header: string | null): string | null {
  if (!header) return null;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header);
  return match?.[1] ?? null;
}

export function tokenState(token: ApiToken, now: Date): 'active' | 'revoked' | 'expired' {
  if (token.revokedAt) return 'revoked';
  if (token.expiresAt && token.expiresAt.getTime() <= now.getTime()) return 'expired';
  return 'active';
}

/** The caller of a request; 401 without a token or with an unknown one, 403 for a revoked or expired one. */
export async function authenticate(
  authorization: string | null,
  deps: { data: DataStore; bootstrapToken: string | undefined; now: Date },
): Promise<Caller> {
  const token = bearerToken(authorization);
  if (!token) throw new AppError(ErrorCode.UNAUTHORIZED, 'a bearer token is required');
  if (deps.bootstrapToken && sameSecret(token, deps.bootstrapToken)) {
    return { name: BOOTSTRAP_TOKEN_NAME, tokenId: null };
  }
  const found = await deps.data.tokens.findByHash(hashToken(token));
  if (!found) throw new AppError(ErrorCode.UNAUTHORIZED, 'unknown token');
  const state = tokenState(found, deps.now);
  if (state !== 'active') throw new AppError(ErrorCode.FORBIDDEN, `token ${state}`);
  await deps.data.tokens.touch(found.id, deps.now);
  return { name: found.name, tokenId: found.id };
}
