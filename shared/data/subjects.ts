// The deployment's keys, and what is derived from them: the subject of an archived item and the id
// of a new user. A subject is a keyed hash of the number or business-scoped id an item carries,
// never the identifier itself, so that erase and export find the item and nothing else can
// reverse it; a user id is one too, so that the ids in management URLs (which request logs keep)
// cannot be traced back to a number by hashing every number. The key is the deployment's own, kept
// in the database (`stats`, `_id: 'keys'`), made on first use: the app, the scripts (migrate,
// restore, health) and a restore into another database all derive the same way without any of the
// app's secrets, and resetting the app secret changes nothing. Keys are a list: the first files new
// items and names new users; lookups try each (a restore brings its file's key along), and the
// pseudonym earlier versions used (keyed with the app secret, when the process has it). Users are
// found by their number or bsuid, never by recomputing their id: users created by earlier versions
// keep their unkeyed ids. An erase remembers the ids of the messages it erased the same way (a
// short keyed hash, never the id: a wamid holds the sender's number).
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { pseudonym } from '../log';
import type { Gateway } from './gateway';
import type { StatsDoc } from './stats';

export const KEYS_ID = 'keys';
/** Keys kept: the deployment's own, and those restores brought along. */
export const MAX_SUBJECT_KEYS = 16;

const keyed = (key: string, identifier: string): string =>
  's_' + createHmac('sha256', Buffer.from(key, 'hex')).update(identifier).digest('hex').slice(0, 24);

const userId = (key: string, natural: string): string =>
  'u_' + createHmac('sha256', Buffer.from(key, 'hex')).update(`user:${natural}`).digest('hex').slice(0, 24);

/** 64 bits of a keyed hash of a message id (a wamid), in hex: what an erase remembers of it. */
const messageHash = (key: string, wamid: string): string =>
  createHmac('sha256', Buffer.from(key, 'hex')).update(`message:${wamid}`).digest('hex').slice(0, 16);

/** Every subject an item about one of `identifiers` may be filed under with `keys`. */
const subjectsUnder = (keys: readonly string[], identifiers: readonly string[]): string[] => [
  ...new Set(identifiers.flatMap((id) => [...keys.map((key) => keyed(key, id)), pseudonym(`subject:${id}`)])),
];

export class SubjectKeys {
  /**
   * The keys as last read (never empty). Only their first is used from memory: lookups read the
   * list again, since a restore beside this process may add to it.
   */
  private known: readonly string[] | null = null;

  constructor(private readonly stats: Gateway<StatsDoc>) {}

  /**
   * Names new users: a function from the identifier a user id is derived from (`wa:<number>`,
   * `bsuid:<id>`, with `#n` for the n-th person on a number) to the id. Every process derives the
   * same id for one person, so two first contacts at once still make one user.
   */
  async userIds(): Promise<(natural: string) => string> {
    const key = await this.first();
    return (natural) => userId(key, natural);
  }

  /**
   * Every id a user derived from `natural` may have been given (by this database, or by another
   * whose key a restore brought along): under each key, and the unkeyed hash of earlier versions.
   */
  async everyUserIdOf(): Promise<(natural: string) => string[]> {
    return (await this.everyIdAndHashOf()).userIds;
  }

  /**
   * `everyUserIdOf`, every hash a message id may have been remembered under by an erase (one per
   * key), and every subject an item about an identifier may be filed under (`subjectsOf`), from
   * one read of the keys.
   */
  async everyIdAndHashOf(): Promise<{
    userIds: (natural: string) => string[];
    messageHashes: (wamid: string) => string[];
    subjects: (identifier: string) => string[];
  }> {
    const keys = await this.fresh();
    return {
      subjects: (identifier) => subjectsUnder(keys, [identifier]),
      userIds: (natural) => [
        ...keys.map((key) => userId(key, natural)),
        'u_' + createHash('sha256').update(natural).digest('hex').slice(0, 24),
      ],
      messageHashes: (wamid) => keys.map((key) => messageHash(key, wamid)),
    };
  }

  /** What an erase remembers of a message id (keyed with the deployment's key). */
  async messageHashes(): Promise<(wamid: string) => string> {
    const key = await this.first();
    return (wamid) => messageHash(key, wamid);
  }

  /** The subject a new item about `identifier` is filed under (the key is made on first use). */
  async subjectOf(identifier: string): Promise<string> {
    return keyed(await this.first(), identifier);
  }

  /** Every subject an item about one of `identifiers` may be filed under. */
  async subjectsOf(identifiers: readonly string[]): Promise<string[]> {
    if (!identifiers.length) return [];
    return subjectsUnder(await this.fresh(), identifiers);
  }

  /**
   * Adds the keys of a restored backup after the database's own, so its items are found; a
   * database that has none yet takes the file's as they are. A compare-and-set on the whole list:
   * two restores at once both keep theirs.
   */
  async adopt(keys: readonly string[]): Promise<void> {
    if (!keys.length) return;
    const unique = [...new Set(keys)].slice(0, MAX_SUBJECT_KEYS);
    for (;;) {
      const current = await this.fresh();
      if (!current.length) {
        if ((await this.stats.insertOne({ _id: KEYS_ID, subjectKeys: unique })) === 'inserted') return;
        continue;
      }
      const merged = [...new Set([...current, ...unique])].slice(0, MAX_SUBJECT_KEYS);
      if (merged.length === current.length) return;
      const { matched } = await this.stats.updateOne(
        { _id: KEYS_ID, subjectKeys: [...current] },
        { $set: { subjectKeys: merged } },
      );
      if (matched) return;
    }
  }

  /** The keys as stored now (a restore beside this process may have added some). */
  private async fresh(): Promise<readonly string[]> {
    const found = (await this.stats.findOne({ _id: KEYS_ID }))?.subjectKeys;
    if (found?.length) this.known = found;
    return found ?? [];
  }

  /** The deployment's own key (the first), made when there is none yet; it never changes. */
  private async first(): Promise<string> {
    const [known] = this.known ?? (await this.fresh());
    if (known) return known;
    // Two processes making it at once: the second insert is a duplicate, and both read the first.
    await this.stats.insertOne({ _id: KEYS_ID, subjectKeys: [randomBytes(32).toString('hex')] });
    const [made] = await this.fresh();
    if (!made) throw new Error('the deployment key of archived items could not be stored');
    return made;
  }
}
