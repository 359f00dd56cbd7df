// User ids in tests. Ids are keyed with the deployment's key (shared/data/subjects.ts), so a test
// never derives one: it asks the data module, as an operator reads it from the API.
import { expect } from 'vitest';
import type { manageHandlers } from '../../functions/manage';
import type { DataStore } from '../../shared/data';
import type { TestApp } from './app';
import { call } from './manage-fixture';

/** The id of the user stored with number `waId` (throws when there is none). */
export async function userIdOf(data: DataStore, waId: string): Promise<string> {
  const user = await data.users.findByIdentity({ waId, bsuid: null });
  if (!user) throw new Error(`no user with number ${waId}`);
  return user.id;
}

/** The id a user with number `waId` has, or would get if imported now (migration, seed). */
export async function importIdOf(data: DataStore, waId: string): Promise<string> {
  return (await data.users.idsForImport([waId])).idOf(waId);
}

/** How many messages the Graph stand-in was asked to send to `phone`. */
export const repliesTo = (app: TestApp, phone: string): number =>
  app.graph.sends().filter((s) => s.body['to'] === phone).length;

/**
 * Erases user `userId` (number `phone`) through the management API, then delivers `payload`, a
 * message of theirs from before the erase, again: it is dropped (no answer, no user comes back).
 */
export async function eraseThenRedeliver(
  app: TestApp,
  handlers: ReturnType<typeof manageHandlers>,
  user: { id: string; phone: string },
  payload: unknown,
): Promise<void> {
  expect((await call(handlers.user, { method: 'DELETE', params: { id: user.id } })).status).toBe(204);
  const replies = repliesTo(app, user.phone);
  expect((await app.post(payload)).status).toBe(200);
  await app.drain();
  expect(repliesTo(app, user.phone)).toBe(replies);
  expect(await app.services.data.users.findByIdentity({ waId: user.phone, bsuid: null })).toBeNull();
}
