// Comparing secrets (tokens, verify tokens) without leaking them through timing.
import { createHash, timingSafeEqual } from 'node:crypto';

/** Constant-time equality of two secrets, whatever their lengths. */
export function sameSecret(a: string, b: string): boolean {
  // Equal-length digests, so timingSafeEqual neither throws nor leaks the length.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}
