// Search against a real database: every word of any stored text is found, however long the text,
// and users are found by several words of the name or by a number written with spaces and signs
// (docs/contract.md, "Search" and the users route).
import { BSON } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_TEXT, checkStoredDocument, type DataStore } from '../../shared/data';
import { MessagesPageSchema, UsersPageSchema } from '../../shared/manage/schemas';
import { TEXT_BODY_LIMIT } from '../../shared/whatsapp/outbound';
import { call, manageFixture, seedUser, type ManageFixture } from '../helpers/manage-fixture';
import { collectionOf } from '../helpers/raw';
import { cpuClock } from '../helpers/cpu';
import { parseBody } from '../helpers/shapes';

let f: ManageFixture;
const at = new Date(Date.UTC(2026, 0, 5, 12));

beforeAll(async () => {
  f = await manageFixture('search');
});
afterAll(async () => {
  await f?.close();
});

/** Deterministic distinct "random" words of `size` characters from `base` (mulberry32); a–z by default. */
function randomWords(count: number, length: number, seed: number, base = 97, size = 26): string[] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  const out = new Set<string>();
  while (out.size < count) {
    let w = '';
    for (let i = 0; i < length; i++) w += String.fromCharCode(base + (next() % size));
    out.add(w);
  }
  return [...out];
}

let seq = 0;
async function storeInbound(data: DataStore, text: string): Promise<string> {
  const { user } = await data.users.resolve(
    { waId: `4420000${String(++seq).padStart(4, '0')}`, bsuid: null, name: null },
    at,
  );
  const id = `wamid.search.${seq}`;
  await data.messages.recordInbound({
    id,
    userId: user.id,
    type: 'text',
    text,
    createdAt: at,
    receivedAt: at,
    phoneNumberId: '1234',
    role: 'conversation',
    replyState: 'none',
    relatedId: null,
    rawJson: '{}',
  });
  return id;
}

async function search(q: string): Promise<string[]> {
  const r = await call(f.handlers.messages, { query: { q, limit: '50' } });
  expect(r.status).toBe(200);
  return parseBody(MessagesPageSchema, r.body).items.map((m) => m.id);
}

async function storedBytes(id: string): Promise<number> {
  const doc = await collectionOf(f.db.db, 'messages').findOne({ _id: id });
  return doc ? BSON.calculateObjectSize(doc) : 0;
}

describe('message search covers the whole text', () => {
  it('finds each of 60 random twelve-letter words of one message', async () => {
    const words = randomWords(60, 12, 7);
    const id = await storeInbound(f.data, words.join(' '));
    const missed: number[] = [];
    for (const [i, word] of words.entries()) if (!(await search(word)).includes(id)) missed.push(i);
    expect(missed).toEqual([]);
    expect(await search(`${words[59] ?? ''} ${words[0] ?? ''}`)).toContain(id);
  });

  it('finds the last word of a 4,096-character text in any script; the document stays far below 2 MB', async () => {
    // The most prefixes per character: random 24-letter words, and random eight-syllable Korean
    // words (a syllable folds into three letters).
    const texts = {
      latin: randomWords(200, 24, 11),
      korean: randomWords(600, 8, 12, 0xac00, 11_172),
    };
    for (const [script, pool] of Object.entries(texts)) {
      const last = script === 'latin' ? 'Zuletzt' : '마지막';
      let text = '';
      for (const word of pool) {
        if (text.length + word.length + 1 + last.length + 1 > TEXT_BODY_LIMIT) break;
        text += `${word} `;
      }
      text = `${text.padEnd(TEXT_BODY_LIMIT - last.length - 1, '.')} ${last}`;
      expect(text).toHaveLength(TEXT_BODY_LIMIT);
      const id = await storeInbound(f.data, text);
      expect(await search(last), script).toEqual([id]);
      expect(await search(last.slice(0, 2)), script).toContain(id);
      expect(await storedBytes(id), script).toBeLessThan(768 * 1024);
      // A backup of it restores (the restore checks every document).
      const stored = await collectionOf(f.db.db, 'messages').findOne({ _id: id });
      expect(checkStoredDocument('messages', stored), script).toBeNull();
    }
  });

  it('finds the last word of a 65,536-character text of everyday words', async () => {
    const vocabulary = [...randomWords(1_500, 7, 21), ...randomWords(500, 11, 22)];
    let text = '';
    for (let i = 0; text.length < MAX_TEXT; i++) text += `${vocabulary[(i * 7) % vocabulary.length] ?? ''} `;
    text = `${text.slice(0, MAX_TEXT - 8)} Schluss`;
    expect(text).toHaveLength(MAX_TEXT);
    const id = await storeInbound(f.data, text);
    expect(await search('schluss')).toEqual([id]);
    expect(await storedBytes(id)).toBeLessThan(512 * 1024);
  });

  it('keeps a 65,536-character text of random Korean words far below 2 MB, its start searchable', async () => {
    const pool = randomWords(20_000, 8, 31, 0xac00, 11_172);
    const first = pool[400] ?? '';
    const text = pool.join(' ').slice(0, MAX_TEXT);
    expect(text.indexOf(first)).toBeLessThan(TEXT_BODY_LIMIT);
    const id = await storeInbound(f.data, text);
    expect(await search(first)).toEqual([id]);
    expect(await storedBytes(id)).toBeLessThan(1024 * 1024);
    const stored = await collectionOf(f.db.db, 'messages').findOne({ _id: id });
    expect(checkStoredDocument('messages', stored)).toBeNull();
  });

  it('finds a word inside text written without spaces (Chinese, Japanese, Thai), not one that is not there', async () => {
    const ja = await storeInbound(f.data, '昨日は東京タワーに行きました。iPhone15を買った');
    const zh = await storeInbound(f.data, '我们明天在北京见面吧');
    const th = await storeInbound(f.data, 'สวัสดีครับยินดีต้อนรับ');
    expect(await search('タワー')).toEqual([ja]);
    expect(await search('東京タワーに行きました')).toEqual([ja]);
    expect(await search('ﾀﾜｰ')).toEqual([ja]); // halfwidth katakana folds to the full width
    expect(await search('iphone15を')).toEqual([ja]);
    expect(await search('行き タワー')).toEqual([ja]);
    expect(await search('北京')).toEqual([zh]);
    expect(await search('见面')).toEqual([zh]);
    expect(await search('上海')).toEqual([]);
    expect(await search('ยินดี')).toEqual([th]);
    expect(await search('ครับ')).toEqual([th]);
    // Words of spaced scripts keep their rule: the start of a word only.
    expect(await search('hone15')).toEqual([]);
  });

  it('finds a word longer than the stored prefixes whole, and not a longer or other word that shares its first 24 letters', async () => {
    const id = await storeInbound(
      f.data,
      'Supercalifragilisticexpialidocious! 大阪Donaudampfschifffahrtsgesellschaft',
    );
    expect(await search('supercalifragilisticexpialidocious')).toEqual([id]);
    expect(await search('SUPERCALIFRAGILISTICEXPIALI')).toEqual([id]);
    expect(await search('donaudampfschifffahrtsgesellschaft')).toEqual([id]);
    expect(await search('supercalifragilisticexpialidociousness')).toEqual([]);
    expect(await search('supercalifragilisticexpixxxxxx')).toEqual([]);
    expect(await search('donaudampfschifffahrtsgesellschaftskapitan')).toEqual([]);
  });

  it('finds a word written right after such a run whole, as before the run rule (大阪でNintendoを買った)', async () => {
    const id = await storeInbound(f.data, '大阪でNintendoを買った。大阪stationで待ち合わせ');
    expect(await search('nintendo')).toEqual([id]);
    expect(await search('Nintendoを')).toEqual([id]);
    expect(await search('大阪station')).toEqual([id]);
    expect(await search('station')).toEqual([id]);
    expect(await search('tendo')).toEqual([]); // still the start of a word only
  });

  it('keeps a text alternating such characters with letters of 4,096 characters far below 2 MB, its last word found', async () => {
    const text = `${'東a'.repeat((TEXT_BODY_LIMIT - 8) / 2)}最後abcdef`;
    const id = await storeInbound(f.data, text);
    expect(await search('最後abcdef')).toEqual([id]);
    expect(await storedBytes(id)).toBeLessThan(768 * 1024);
  });

  it('checks a long word against long texts alternating such characters with letters in linear time', async () => {
    // Each letter after a run starts a word: the check built every such start's rest of the word
    // as a string, quadratic in the text (a stored text of 16,384 characters took 1.3 s and
    // 250 MB; of MAX_TEXT, 65,536, written by a user sharing many contacts, seconds and gigabytes
    // per message of the page).
    const long = 'pneumonoultramicroscopicsilicovolcanoconiosis';
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push(await storeInbound(f.data, `${'東a'.repeat(8192)} ${long}`));
    // This process's CPU time (where the check runs), not the wall clock a loaded machine stretches.
    const spent = cpuClock();
    expect(new Set(await search(long))).toEqual(new Set(ids));
    expect(await search(`${long.slice(0, 26)}xxxxxxxx`)).toEqual([]);
    expect(spent()).toBeLessThan(1000);
  });

  it('finds the last word of a 4,096-character Chinese text of random characters, far below 2 MB', async () => {
    const chars = randomWords(1, TEXT_BODY_LIMIT - 2, 41, 0x4e00, 20_000)[0] ?? '';
    const text = `${chars}終点`;
    const id = await storeInbound(f.data, text);
    expect(await search('終点')).toEqual([id]);
    expect(await search(chars.slice(2000, 2007))).toEqual([id]);
    expect(await storedBytes(id)).toBeLessThan(768 * 1024);
    const stored = await collectionOf(f.db.db, 'messages').findOne({ _id: id });
    expect(checkStoredDocument('messages', stored)).toBeNull();
  });

  it('ignores case as Unicode folds it: ß is ss, a final sigma is a sigma', async () => {
    // "STRASSENCAFÉ" is "Straßencafé" in capitals, and "ΠΡΟΣ" the start of "πρόσωπο": lower case
    // alone writes them "strassencafé" and "προς" (a final sigma), which the stored words lack.
    const german = await storeInbound(f.data, 'Treffen im Straßencafé an der Hauptstraße');
    const greek = await storeInbound(f.data, 'Ένα πρόσωπο στην ΟΔΟΣ Ερμού');
    expect(await search('strassencafe')).toEqual([german]);
    expect(await search('STRASSENCAFÉ')).toEqual([german]);
    expect(await search('straßencafé')).toEqual([german]);
    expect(await search('hauptstrasse')).toEqual([german]);
    expect(await search('HAUPTSTRAẞE')).toEqual([german]);
    expect(await search('ΠΡΟΣ')).toEqual([greek]);
    expect(await search('οδοσ')).toEqual([greek]);
    expect(await search('οδός')).toEqual([greek]);
    expect(await search('strassenbahn')).toEqual([]);
  });

  it('ignores a stroke as an accent: ł, ø, đ, ð and ħ are l, o, d, d and h; æ and œ are ae and oe', async () => {
    // Unicode has no decomposition for these letters (NFKD leaves them), yet its collation takes
    // them for the base letter (Intl.Collator, sensitivity "base"): "Łódź" is "Lodz" with accents.
    const polish = await storeInbound(f.data, 'Pociąg do Łodzi, potem Wrocław');
    const nordic = await storeInbound(f.data, 'Færgen over Øresund til Ærø, sagde Guðrún');
    const other = await storeInbound(f.data, 'Đorđe sends his cœur from Ħamrun');
    expect(await search('lodzi')).toEqual([polish]);
    expect(await search('WROCLAW')).toEqual([polish]);
    expect(await search('łódzi')).toEqual([polish]);
    expect(await search('oresund aero')).toEqual([nordic]);
    expect(await search('faergen gudrun')).toEqual([nordic]);
    expect(await search('Ærø')).toEqual([nordic]);
    expect(await search('dorde coeur hamrun')).toEqual([other]);
    expect(await search('lodz oresund')).toEqual([]);
  });

  it('cuts a longer text at MAX_TEXT, on every write path, and finds its last kept word', async () => {
    const tail = (n: number) => `${'ab '.repeat(Math.ceil(MAX_TEXT / 3))}`.slice(0, MAX_TEXT - n);
    const inbound = await storeInbound(f.data, `${tail(14)} Schluss kept beyond`);
    const imported = await seedUser(f.data, {
      waId: '4420009999',
      name: 'Import',
      start: at,
      texts: [`${tail(11)} Ende kept beyond`],
    });
    const importedId = imported.messageIds[0] ?? '';
    const messages = collectionOf(f.db.db, 'messages');
    for (const id of [inbound, importedId])
      expect((await messages.findOne({ _id: id }))?.text).toHaveLength(MAX_TEXT);
    expect(await search('schluss kep')).toEqual([inbound]);
    expect(await search('ende kep')).toEqual([importedId]);
    expect(await search('beyond')).toEqual([]);
  });

  it('counts MAX_TEXT in characters: a text of emoji keeps 65,536 of them, never half of one', async () => {
    // An emoji is two UTF-16 units: cut by units, the text kept half of them, and a cut after an
    // odd number of units left a lone surrogate stored.
    const emoji = '\u{1F600}';
    const id = await storeInbound(f.data, `${emoji.repeat(MAX_TEXT)}${emoji}beyond`);
    const odd = await storeInbound(f.data, `a${emoji.repeat(MAX_TEXT)}`);
    const messages = collectionOf(f.db.db, 'messages');
    const kept = String((await messages.findOne({ _id: id }))?.text);
    expect(Array.from(kept)).toHaveLength(MAX_TEXT);
    expect(kept).toBe(emoji.repeat(MAX_TEXT));
    const keptOdd = String((await messages.findOne({ _id: odd }))?.text);
    expect(keptOdd).toBe(`a${emoji.repeat(MAX_TEXT - 1)}`);
  });
});

describe('user search', () => {
  let zoe: string;
  let zoeOther: string;
  let siobhan: string;
  const ties: string[] = [];

  beforeAll(async () => {
    const start = new Date(Date.UTC(2026, 0, 6));
    zoe = (await seedUser(f.data, { waId: '4917012345678', name: 'Zoë Test', start, texts: ['hi'] })).userId;
    zoeOther = (await seedUser(f.data, { waId: '4420555000', name: 'Zoe Other', start, texts: ['hi'] }))
      .userId;
    siobhan = (
      await seedUser(f.data, { waId: '353861234567', name: "Siobhán O'Neill", start, texts: ['hi'] })
    ).userId;
    for (let i = 0; i < 5; i++)
      ties.push(
        (await seedUser(f.data, { waId: `1777000000${i}`, name: `Tie Break ${i}`, start, texts: ['hi'] }))
          .userId,
      );
  });

  const users = async (q: string, extra: Record<string, string> = {}) => {
    const r = await call(f.handlers.users, { query: { q, ...extra } });
    expect(r.status).toBe(200);
    return parseBody(UsersPageSchema, r.body);
  };
  const ids = async (q: string) => (await users(q)).items.map((u) => u.id);

  it('matches when every word of q starts a word of the name or the number', async () => {
    expect(await ids('Zoë Test')).toEqual([zoe]);
    expect(await ids('zoe t')).toEqual([zoe]);
    expect((await ids('zoe')).sort()).toEqual([zoe, zoeOther].sort());
    expect(await ids('Siobhán O')).toEqual([siobhan]);
    expect(await ids("o'neill")).toEqual([siobhan]);
    expect(await ids('neill')).toEqual([siobhan]);
    expect(await ids('zoe 4917')).toEqual([zoe]);
    expect(await ids('zoe siobhan')).toEqual([]);
    expect(await ids('test zoe')).toEqual([zoe]);
  });

  it('matches a name word longer than the stored prefixes whole, not one that only shares its first 24 letters', async () => {
    const start = new Date(Date.UTC(2026, 0, 7));
    const hubert = (
      await seedUser(f.data, {
        waId: '4930111222333',
        name: 'Hubert Wolfeschlegelsteinhausenbergerdorff',
        start,
        texts: ['hi'],
      })
    ).userId;
    expect(await ids('wolfeschlegelsteinhausenbergerdorff')).toEqual([hubert]);
    expect(await ids('hubert wolfeschlegelsteinhausen')).toEqual([hubert]);
    expect(await ids('wolfeschlegelsteinhausenbergerdorffs')).toEqual([]);
    expect(await ids('wolfeschlegelsteinhausenxxxxxxxx')).toEqual([]);
  });

  it('finds a name with ß written with ss or in capitals, as message search does', async () => {
    const start = new Date(Date.UTC(2026, 0, 8));
    const strauss = (
      await seedUser(f.data, { waId: '4930999888777', name: 'Jürgen Strauß', start, texts: ['hi'] })
    ).userId;
    expect(await ids('strauss')).toEqual([strauss]);
    expect(await ids('JÜRGEN STRAUSS')).toEqual([strauss]);
    expect(await ids('strauß')).toEqual([strauss]);
  });

  it('finds a name with a stroke letter written without it', async () => {
    const start = new Date(Date.UTC(2026, 0, 9));
    const soren = (
      await seedUser(f.data, { waId: '4531999888777', name: 'Søren Łukasz', start, texts: ['hi'] })
    ).userId;
    expect(await ids('soren lukasz')).toEqual([soren]);
    expect(await ids('SØREN')).toEqual([soren]);
  });

  it('reads digits with phone punctuation as the start of a number', async () => {
    expect(await ids('+49 170')).toEqual([zoe]);
    expect(await ids('(+49) 170-12.34')).toEqual([zoe]);
    expect(await ids('4917')).toEqual([zoe]);
    expect(await ids('+353 86')).toEqual([siobhan]);
    expect(await ids('+44 170')).toEqual([]);
    // Digits of a number are one key: "170" alone is not the start of any number.
    expect(await ids('170')).toEqual([]);
  });

  it('pages a several-word search in the usual order', async () => {
    const first = await users('tie break', { limit: '3' });
    expect(first.items).toHaveLength(3);
    const rest = await users('tie break', { limit: '3', cursor: first.nextCursor ?? '' });
    expect(rest.nextCursor).toBeNull();
    const all = [...first.items, ...rest.items].map((u) => u.id);
    // Equal activity: ties broken by id, descending.
    expect(all).toEqual([...ties].sort().reverse());
  });
});
