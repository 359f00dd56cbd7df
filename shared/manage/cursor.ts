// Opaque keyset cursors: base64url of {t, id} (the sort time and id of a page's last item).
import { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import type { Position } from '../data';

const CursorJson = z.object({ t: z.string().datetime(), id: z.string().min(1) });

export function encodeCursor(position: Position | null): string | null {
  if (!position) return null;
  return Buffer.from(JSON.stringify({ t: position.t.toISOString(), id: position.id })).toString('base64url');
}

/** The position a cursor holds; a bad one is a 400 naming it as a query parameter or a body field. */
export function decodeCursor(
  cursor: string | undefined,
  where: 'query parameter' | 'body field' = 'query parameter',
): Position | null {
  if (cursor === undefined) return null;
  try {
    const parsed = CursorJson.parse(JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')));
    return { t: new Date(parsed.t), id: parsed.id };
  } catch {
    throw new AppError(ErrorCode.INVALID_INPUT, `invalid ${where} "cursor": not a cursor of this API`);
  }
}
