// User ids in tests. Ids are keyed with the deployment's key (shared/data/subjects.ts), so a test
// never derives one: it asks the data module, as an operator reads it from the API.
import type { DataStore } from '../../shared/data';

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
