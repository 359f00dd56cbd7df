// X-Hub-Signature-256: HMAC-SHA256 of the exact request bytes with the app secret.
import { isAscii } from 'node:buffer';
import { createHmac, timingSafeEqual } from 'node:crypto';

const PREFIX = 'sha256=';

function hmac(secret: string, bytes: Buffer | string): Buffer {
  return createHmac('sha256', secret).update(bytes).digest();
}

const LOWER = Buffer.from('0123456789abcdef', 'latin1');
const UPPER = Buffer.from('0123456789ABCDEF', 'latin1');

/**
 * The body as Meta signs it: every non-ASCII UTF-16 unit escaped as \uXXXX, written straight into
 * bytes. Anyone can send a body of 3 MiB of non-ASCII text with a made-up signature: built with a
 * regex callback per character, this took about half a second of the event loop per request.
 */
function escapeNonAscii(text: string, upper: boolean): Buffer {
  let size = text.length;
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0x7f) size += 5;
  const hex = upper ? UPPER : LOWER;
  const out = Buffer.allocUnsafe(size);
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c <= 0x7f) {
      out[o++] = c;
      continue;
    }
    out[o++] = 0x5c; // \
    out[o++] = 0x75; // u
    out[o++] = hex[c >> 12] ?? 0;
    out[o++] = hex[(c >> 8) & 15] ?? 0;
    out[o++] = hex[(c >> 4) & 15] ?? 0;
    out[o++] = hex[c & 15] ?? 0;
  }
  return out;
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
  const candidates: Buffer[] = [body];
  if (!isAscii(body)) {
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
