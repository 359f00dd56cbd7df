// Bearer-token authentication of the management API: the bootstrap MANAGE_API_TOKEN (compared in
// constant time) or a token made with `npm run token`, stored as a SHA-256 hash.
import { createHash, randomBytes } from 'node:crypto';
import { isIPv6 } from 'node:net';
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

/** Failed authentications one client may make in a minute before the API answers 429. */
export const MAX_FAILURES_PER_MINUTE = 10;
const MINUTE_MS = 60_000;
/** Clients remembered at most (each instance keeps its own; a restart forgets them). */
export const MAX_LIMITER_CLIENTS = 10_000;

interface Window {
  start: number;
  failures: number;
  /** Attempts admitted and not settled yet: each may still turn out a failure. */
  pending: number;
  waiters: (() => void)[];
}

/** One admitted authentication attempt: settled once, with whether it failed. */
export interface Attempt {
  settle(failed: boolean): void;
}

const UNTRACKED: Attempt = { settle: () => undefined };

/**
 * Counts failed authentications per client (its address) in fixed one-minute windows, in this
 * process. Tokens are 256 random bits, so guessing is hopeless anyway: the limit keeps a guesser
 * from costing a database read per attempt. Attempts still being checked count as possible
 * failures: past the limit, a client's next attempt waits for them instead of being checked at
 * once (a burst of concurrent guesses costs 10 reads, and concurrent good requests all pass).
 * Windows are kept in the order they began and forgotten once their minute ends; when as many
 * clients as it remembers are within their minute, a new one is not counted until one ends (a
 * lockout is never forgotten early).
 */
export class FailureLimiter {
  private readonly windows = new Map<string, Window>();

  /** Clients remembered now (tests). */
  get size(): number {
    return this.windows.size;
  }

  /**
   * Admits one attempt of the client, or throws TOO_MANY_REQUESTS while it is over the limit in
   * the current minute, with the seconds until the minute ends (the answer's Retry-After). `now`
   * is the request's time; after a wait for other attempts, the time is `now` plus the wait, so
   * that a window begun then, and its Retry-After, count from when the wait ended.
   */
  async admit(client: string, now: Date): Promise<Attempt> {
    const began = performance.now();
    for (;;) {
      const t = now.getTime() + Math.round(performance.now() - began);
      this.forgetEnded(t);
      let w = this.windows.get(client);
      if (w && w.failures >= MAX_FAILURES_PER_MINUTE) {
        throw new AppError(
          ErrorCode.TOO_MANY_REQUESTS,
          'too many failed authentications; try again in a minute',
          { retryAfterSeconds: Math.max(1, Math.ceil((w.start + MINUTE_MS - t) / 1000)) },
        );
      }
      if (w && w.failures + w.pending >= MAX_FAILURES_PER_MINUTE) {
        const waitOn = w;
        await new Promise<void>((resolve) => waitOn.waiters.push(resolve));
        continue;
      }
      if (!w) {
        if (this.windows.size >= MAX_LIMITER_CLIENTS) return UNTRACKED;
        w = { start: t, failures: 0, pending: 0, waiters: [] };
        this.windows.set(client, w);
      }
      w.pending++;
      return this.attemptOn(client, w);
    }
  }

  private attemptOn(client: string, w: Window): Attempt {
    let settled = false;
    return {
      settle: (failed) => {
        if (settled) return;
        settled = true;
        w.pending--;
        if (failed) w.failures++;
        for (const wake of w.waiters.splice(0)) wake();
        // A client that has not failed leaves nothing behind.
        if (w.failures === 0 && w.pending === 0 && this.windows.get(client) === w)
          this.windows.delete(client);
      },
    };
  }

  /** Drops the windows whose minute has ended (the oldest come first). */
  private forgetEnded(t: number): void {
    for (const [key, w] of this.windows) {
      if (t - w.start < MINUTE_MS) return;
      this.windows.delete(key);
      for (const wake of w.waiters.splice(0)) wake();
    }
  }
}

/** The eight 16-bit groups of an IPv6 address (a zone after `%` ignored), or null for anything else. */
function ipv6Groups(address: string): number[] | null {
  let text = address.split('%')[0] ?? '';
  if (!isIPv6(text)) return null;
  // A dotted IPv4 tail (`::ffff:192.0.2.1`) is the last two groups.
  const dotted = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (dotted) {
    const [a, b, c, d] = dotted.slice(2).map(Number) as [number, number, number, number];
    text = `${dotted[1]}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((group) => parseInt(group, 16));
}

/**
 * What the limiter counts for an address: an IPv4 address itself; an IPv6 address by its /64
 * network (the least a subscriber is given: counted per address, a caller could take a fresh one
 * for every guess, and soon fill the limiter), an IPv4-mapped one (`::ffff:a.b.c.d`) as its IPv4
 * address.
 */
function clientKey(address: string): string {
  const groups = ipv6Groups(address);
  if (!groups) return address.toLowerCase();
  const [g0, g1, g2, g3, g4, g5, g6 = 0, g7 = 0] = groups;
  if (g0 === 0 && g1 === 0 && g2 === 0 && g3 === 0 && g4 === 0 && g5 === 0xffff) {
    return `${g6 >> 8}.${g6 & 255}.${g7 >> 8}.${g7 & 255}`;
  }
  return `${groups
    .slice(0, 4)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/**
 * The client of a request, as the limiter counts it: the LAST address of X-Forwarded-For, without
 * its port (an IPv6 one by its /64 network: clientKey). The caller controls everything before it;
 * the platform's front end (Azure App Service / Functions, and the local host of `npm run dev`
 * likewise) appends the address it saw, so the last entry is the one a caller cannot choose.
 * Handlers get no socket address from the Functions host: without the header every request is one
 * client, 'direct'.
 */
export function clientOf(forwardedFor: string | null): string {
  const last = forwardedFor?.split(',').at(-1)?.trim() ?? '';
  // `[v6]:port` or `[v6]`; `v4:port` (one colon); anything else (a bare IPv6 address) as it is.
  const bracketed = /^\[([^\]]*)\](?::\d*)?$/.exec(last);
  const address = bracketed ? bracketed[1] : last.split(':').length === 2 ? last.replace(/:\d*$/, '') : last;
  return address ? clientKey(address) : 'direct';
}

/**
 * The caller of a request; 401 without a token or with an unknown one, 403 for a revoked or
 * expired one, 429 after too many failures from the same client this minute.
 */
export async function authenticate(
  authorization: string | null,
  deps: {
    data: Pick<DataStore, 'tokens'>;
    bootstrapToken: string | undefined;
    now: Date;
    limiter?: FailureLimiter;
    client?: string;
  },
): Promise<Caller> {
  const client = deps.client ?? 'direct';
  const attempt = (await deps.limiter?.admit(client, deps.now)) ?? null;
  try {
    const token = bearerToken(authorization);
    if (!token) throw new AppError(ErrorCode.UNAUTHORIZED, 'a bearer token is required');
    if (deps.bootstrapToken && sameSecret(token, deps.bootstrapToken)) {
      attempt?.settle(false);
      return { name: BOOTSTRAP_TOKEN_NAME, tokenId: null };
    }
    const found = await deps.data.tokens.findByHash(hashToken(token));
    if (!found) throw new AppError(ErrorCode.UNAUTHORIZED, 'unknown token');
    const state = tokenState(found, deps.now);
    if (state !== 'active') throw new AppError(ErrorCode.FORBIDDEN, `token ${state}`);
    attempt?.settle(false);
    await deps.data.tokens.touch(found.id, deps.now);
    return { name: found.name, tokenId: found.id };
  } catch (error) {
    attempt?.settle(
      error instanceof AppError &&
        (error.code === ErrorCode.UNAUTHORIZED || error.code === ErrorCode.FORBIDDEN),
    );
    throw error;
  }
}
