// X-Hub-Signature-256: HMAC-SHA256 of the body with the app secret. Meta signs its serialisation,
// which escapes every non-ASCII UTF-16 unit as a lowercase \uXXXX; a body re-encoded to raw UTF-8 on
// the way must verify too.
import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { signBody, verifySignature } from '../../shared/whatsapp/signature';

const SECRET = 'd41d8cd98f00b204e9800998ecf8427e';

const metaSign = (bytes: Buffer | string, secret = SECRET): string =>
  'sha256=' + createHmac('sha256', secret).update(bytes).digest('hex');

/** A notification body as Meta sends it: café and a thumbs-up emoji, escaped (lowercase hex, surrogate pair). */
const ESCAPED = Buffer.from(
  '{"object":"whatsapp_business_account","entry":[{"changes":[{"value":{"messages":[{"type":"text","text":{"body":"caf\\u00e9 \\ud83d\\udc4d na\\u00efve"}}]}}]}]}',
  'utf8',
);
/** The same JSON as raw UTF-8. */
const RAW = Buffer.from(JSON.stringify(JSON.parse(ESCAPED.toString('utf8'))), 'utf8');

describe('verifySignature', () => {
  it('accepts a valid signature over an ASCII body', () => {
    const body = Buffer.from('{"object":"whatsapp_business_account","entry":[]}');
    expect(verifySignature(body, metaSign(body), SECRET)).toBe(true);
    expect(verifySignature(body, signBody(body, SECRET), SECRET)).toBe(true);
    expect(signBody(body, SECRET)).toBe(metaSign(body));
  });

  it('accepts upper-case hex in the header', () => {
    const body = Buffer.from('{"a":1}');
    const header = metaSign(body);
    expect(verifySignature(body, 'sha256=' + header.slice(7).toUpperCase(), SECRET)).toBe(true);
  });

  it('the fixtures really differ: escaped is ASCII, raw has multi-byte UTF-8', () => {
    expect([...ESCAPED].every((b) => b < 0x80)).toBe(true);
    expect([...RAW].some((b) => b >= 0x80)).toBe(true);
    expect(RAW.toString('utf8')).toContain('café \u{1F44D} naïve');
    expect(RAW.equals(ESCAPED)).toBe(false);
  });

  it('verifies the escaped bytes exactly as Meta signed them', () => {
    expect(verifySignature(ESCAPED, metaSign(ESCAPED), SECRET)).toBe(true);
  });

  it('verifies the same JSON arriving as raw UTF-8 against Meta’s (escaped) signature', () => {
    expect(verifySignature(RAW, metaSign(ESCAPED), SECRET)).toBe(true);
  });

  it('verifies a raw UTF-8 body signed as raw UTF-8', () => {
    expect(verifySignature(RAW, metaSign(RAW), SECRET)).toBe(true);
  });

  it('verifies a raw body whose signer escaped with upper-case hex', () => {
    const upper = Buffer.from(
      ESCAPED.toString('utf8').replace(/\\u([0-9a-f]{4})/g, (_m, h: string) => `\\u${h.toUpperCase()}`),
    );
    expect(upper.equals(ESCAPED)).toBe(false);
    expect(verifySignature(RAW, metaSign(upper), SECRET)).toBe(true);
  });

  it('accepts a raw body against the escaped form of any text, as a signer escaping every UTF-16 unit writes it', () => {
    // Each non-ASCII unit (lone surrogates and the U+FFFD of bytes that are not UTF-8 included) in
    // lower- or upper-case hex: the escaped forms are written byte by byte, not by a regex.
    const escape = (text: string, upper: boolean) =>
      text.replace(/[\u0080-\uffff]/g, (c) => {
        const h = c.charCodeAt(0).toString(16).padStart(4, '0');
        return `\\u${upper ? h.toUpperCase() : h}`;
      });
    const bytes = fc.oneof(
      fc.string({ unit: 'binary' }).map((t) => Buffer.from(t, 'utf8')),
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    fc.assert(
      fc.property(bytes, fc.boolean(), (raw, upper) => {
        const signed = escape(raw.toString('utf8'), upper);
        expect(verifySignature(raw, metaSign(signed), SECRET)).toBe(true);
        expect(verifySignature(raw, metaSign(signed + ' '), SECRET)).toBe(false);
      }),
      { numRuns: 500 },
    );
  });

  it('rejects a wrong secret', () => {
    expect(verifySignature(ESCAPED, metaSign(ESCAPED, 'another-secret'), SECRET)).toBe(false);
    expect(verifySignature(RAW, metaSign(ESCAPED, 'another-secret'), SECRET)).toBe(false);
  });

  it('rejects a tampered body', () => {
    const header = metaSign(ESCAPED);
    const tampered = Buffer.from(ESCAPED.toString('utf8').replace('caf', 'cab'));
    expect(verifySignature(tampered, header, SECRET)).toBe(false);
    const tamperedRaw = Buffer.from(RAW.toString('utf8').replace('café', 'cafè'));
    expect(verifySignature(tamperedRaw, header, SECRET)).toBe(false);
    expect(verifySignature(Buffer.concat([ESCAPED, Buffer.from(' ')]), header, SECRET)).toBe(false);
  });

  it('rejects a missing header', () => {
    expect(verifySignature(ESCAPED, undefined, SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, null, SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, '', SECRET)).toBe(false);
  });

  it('rejects a header without sha256=', () => {
    const hex = metaSign(ESCAPED).slice('sha256='.length);
    expect(verifySignature(ESCAPED, hex, SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha1=' + hex, SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha256:' + hex, SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha256=', SECRET)).toBe(false);
  });

  it('rejects a signature of the wrong length or with non-hex characters, without throwing', () => {
    const hex = metaSign(ESCAPED).slice('sha256='.length);
    expect(verifySignature(ESCAPED, 'sha256=' + hex.slice(0, 63), SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha256=' + hex.slice(0, 62), SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha256=' + hex + '00', SECRET)).toBe(false);
    expect(verifySignature(ESCAPED, 'sha256=' + 'z'.repeat(64), SECRET)).toBe(false);
    // A SHA-1-length (40 hex) signature must not be compared with timingSafeEqual (it would throw).
    expect(verifySignature(ESCAPED, 'sha256=' + hex.slice(0, 40), SECRET)).toBe(false);
  });
});
