// X-Hub-Signature-256: HMAC-SHA256 of the exact request bytes with the app secret.
import { createHmac, timingSafeEqual } from 'node:crypto';

const PREFIX = 'sha256=';

function hmac(secret: string, bytes: Buffer | string): Buffer {
  return createHmac('sha256', secret).update(bytes).digest();
}

function hasNonAscii(bytes: Buffer): boolean {
  for (const byte of bytes) if (byte > 0x7f) return true;
  return false;
}

/** The body as Meta signs it: every non-ASCII UTF-16 unit escaped as \uXXXX. */
function escapeNonAscii(text: string, upper: boolean): string {
  return text.replace(/[\u0080-\uffff]/g, (c) => {
    const hex = c.charCodeAt(0).toString(16).padStart(4, '0');
    return `\\u${upper ? hex.toUpperCase() : hex}`;
  });
}

/**
 * True when `header` is a valid signature of `body`. Meta signs its escaped-unicode serialisation;
 * a body that reaches us as raw UTF-8 (re-encoded on the way) is checked in that form too. Every
 * comparison is constant-time; a missing or malformed header is a rejection.
 */
export function verifySignature(body: Buffer, header: string | null | undefined, secret: string): boolean {
  if (!header || !header.startsWith(PREFIX)) return false;
  const hex = header.slice(PREFIX.length).trim();
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
  const expected = Buffer.from(hex, 'hex');
  const candidates: (Buffer | string)[] = [body];
  if (hasNonAscii(body)) {
    const text = body.toString('utf8');
    candidates.push(escapeNonAscii(text, false), escapeNonAscii(text, true));
  }
  let valid = false;
  for (const candidate of candidates) valid = timingSafeEqual(hmac(secret, candidate), expected) || valid;
  return valid;
}

/** The header value for a body (tests, the local tools). */
export function signBody(body: Buffer | string, secret: string): string {
  return PREFIX + hmac(secret, body).toString('hex');
}
