// Opaque keyset cursors: {t, id} (the sort time and id of a page's last item), encrypted and
// authenticated with a key of the deployment (AES-256-GCM). A message id is a wamid, which holds
// the sender's number, and cursors travel in URLs that request logs keep: in clear, a cursor would
// put the number in the logs. A cursor that does not decrypt is not one of this API's. Each is bound
// to the list it pages (its scope, authenticated as GCM's additional data): a cursor of another
// list, or of the same list with another filter, would silently skip or repeat items, so it is a 400.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import type { Position } from '../data';

const CursorJson = z.object({ t: z.string().datetime(), id: z.string().min(1) });
const IV_BYTES = 12;
const TAG_BYTES = 16;

export interface CursorCodec {
  /** A cursor for `position` in the list named by `scope` (the list and its filter). */
  encode(position: Position | null, scope: string): string | null;
  /**
   * The position a cursor of the list `scope` holds; a bad one, or one of another list, is a 400
   * naming it as a query parameter or a body field.
   */
  decode(
    cursor: string | undefined,
    scope: string,
    where?: 'query parameter' | 'body field',
  ): Position | null;
}

/** Cursors keyed by `secret` (the app secret: cursors of another deployment are refused). */
export function cursorCodec(secret: string): CursorCodec {
  const key = createHash('sha256').update('manage-cursor\0').update(secret).digest();
  return {
    encode(position, scope) {
      if (!position) return null;
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(Buffer.from(scope, 'utf8'));
      const plain = JSON.stringify({ t: position.t.toISOString(), id: position.id });
      const sealed = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
      return Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url');
    },
    decode(cursor, scope, where = 'query parameter') {
      if (cursor === undefined) return null;
      try {
        const raw = Buffer.from(cursor, 'base64url');
        const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, IV_BYTES), {
          authTagLength: TAG_BYTES,
        });
        decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
        decipher.setAAD(Buffer.from(scope, 'utf8'));
        const plain = Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]);
        const parsed = CursorJson.parse(JSON.parse(plain.toString('utf8')));
        return { t: new Date(parsed.t), id: parsed.id };
      } catch {
        throw new AppError(
          ErrorCode.INVALID_INPUT,
          `invalid ${where} "cursor": not a cursor of this list (give the nextCursor of its previous page)`,
        );
      }
    },
  };
}
