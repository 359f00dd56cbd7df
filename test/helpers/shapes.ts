// Response bodies read through the app's own response schemas (shared/manage/schemas.ts), so a
// field renamed, retyped, dropped or added fails the test instead of being restated by hand.
import { expect } from 'vitest';
import type { z } from 'zod';

/** `body` parsed with `schema`; fails unless it has exactly the schema's fields, at every level. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const parsed = schema.parse(body);
  // zod drops keys its objects do not declare: equal only when the body has none of them.
  expect(body).toStrictEqual(parsed);
  return parsed;
}
