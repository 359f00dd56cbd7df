// Opaque keyset cursors: {t, id} (the sort time and id of a page's last item), encrypted and
// authenticated with a key of the deployment (AES-256-GCM). A message id is a wamid, which holds
// the sender's number, and cursors travel in URLs that request logs keep: in clear, a cursor would
// put the number in the logs. A cursor that does not decrypt is not one of this API's.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import type { Position } from '../data';

const CursorJson = z.object({ t: z.string().datetime(), id: z.string().min(1) });
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface CursorCodec {
  encode(position: Position | null): string | null;
  /** The position a cursor holds; a bad one is a 400 naming it as a query parameter or a body field. */
  decode(cursor: string | undefined, where?: 'query parameter' | 'body field'): Position | null;
}

/** Cursors keyed by `secret` (the app secret: cursors of another deployment are refused). */
export function cursorCodec(secret: string): CursorCodec {
  const key = createHash('sha256').update('manage-cursor\0').update(secret).digest();
  return {
    encode(position) {
      if (!position) return null;
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      const plain = JSON.stringify({ t: position.t.toISOString(), id: position.id });
      const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url');
    },
    decode(cursor, where = 'query parameter') {
      if (cursor === undefined) return null;
      try {
        const raw = Buffer.from(cursor, 'base64url');
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES));
        decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
        const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
        const parsed = CursorJson.parse(JSON.parse(plain.toString('utf8')));
        return { t: new Date(parsed.t), id: parsed.id };
      } catch {
        throw new AppError(ErrorCode.INVALID_INPUT, `invalid ${where} "cursor": not a cursor of this API`);
      }
    },
  };
}
