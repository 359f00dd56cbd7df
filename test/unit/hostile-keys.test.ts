// Keys named like the members of Object.prototype (`__proto__`, `constructor`, `toString`...) in an
// authentic notification: JSON.parse makes them own keys like any other, so splitting a poisoned
// notification by person and archiving the parts of a value keep what they hold, and never change
// a prototype (assigning `record['__proto__']` would replace the record's prototype instead).
import { afterEach, describe, expect, it } from 'vitest';
import { parseNotification, splitByPerson } from '../../shared/whatsapp/notification';

const NOW = new Date('2026-06-01T12:00:00Z');
const ANN = '15551230001';
const BOB = '15551230002';
const MARK = 'KEPT-0123';
const OBJECT_KEYS = Object.getOwnPropertyNames(Object.prototype).sort();

afterEach(() => {
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(OBJECT_KEYS);
});

const text = (from: string, id: string) => ({
  from,
  id,
  timestamp: '1780315200',
  type: 'text',
  text: { body: 'hello' },
});

/** A notification of Ann's and Bob's texts, as JSON text, with `extra` (JSON) put at `where`. */
function notificationWith(where: 'top' | 'entry' | 'value', key: string, extra: string): string {
  const ins = `${JSON.stringify(key)}:${extra},`;
  const value = `{${where === 'value' ? ins : ''}"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550783881","phone_number_id":"106540352242922"},"contacts":[{"profile":{"name":"Ann"},"wa_id":"${ANN}"},{"profile":{"name":"Bob"},"wa_id":"${BOB}"}],"messages":[${JSON.stringify(text(ANN, 'wamid.ann'))},${JSON.stringify(text(BOB, 'wamid.bob'))}]}`;
  return `{${where === 'top' ? ins : ''}"object":"whatsapp_business_account","entry":[{${where === 'entry' ? ins : ''}"id":"102290129340398","changes":[{"field":"messages","value":${value}}]}]}`;
}

const KEYS = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
const EXTRAS = [
  ['an object', `{"note":"${MARK}","wa_id":"${ANN}"}`],
  ['a list', `[{"note":"${MARK}","wa_id":"${ANN}"}]`],
  ['text', `"${MARK}"`],
] as const;

describe('a poisoned notification with keys named like Object.prototype members', () => {
  for (const where of ['top', 'entry', 'value'] as const)
    for (const key of KEYS)
      for (const [label, extra] of EXTRAS)
        it(`${key} holding ${label} at the ${where} level: kept in a piece, whose objects are plain`, () => {
          const payload: unknown = JSON.parse(notificationWith(where, key, extra));
          const pieces = splitByPerson(payload, NOW);
          const json = pieces.map((p) => JSON.stringify(p.payload));
          expect(json.join('\n')).toContain(MARK);
          // Each person's messages still in their own piece.
          expect(json.filter((j) => j.includes('wamid.ann'))).toHaveLength(1);
          expect(json.filter((j) => j.includes('wamid.bob'))).toHaveLength(1);
          const plain = (v: unknown): boolean =>
            typeof v !== 'object' ||
            v === null ||
            (Array.isArray(v)
              ? v.every(plain)
              : Object.getPrototypeOf(v) === Object.prototype && Object.values(v).every(plain));
          for (const piece of pieces) expect(plain(piece.payload)).toBe(true);
        });
});

describe('ingest of a value with a part named like an Object.prototype member', () => {
  for (const key of KEYS)
    it(`archives a ${key} part as "part ${key}", with what it holds`, () => {
      const payload: unknown = JSON.parse(notificationWith('value', key, EXTRAS[1][1]));
      const archived = parseNotification(payload, NOW).filter(
        (e) => e.kind === 'archive' && e.reason === `part ${key}`,
      );
      expect(archived).toHaveLength(1);
      expect(JSON.stringify(archived[0]?.kind === 'archive' ? archived[0].payload : null)).toContain(MARK);
    });

  it('archives nothing for an odd messaging_product, which the value read as it always did', () => {
    const payload: unknown = JSON.parse(
      notificationWith('value', 'x', '0').replace(
        '"messaging_product":"whatsapp"',
        `"messaging_product":${EXTRAS[0][1]}`,
      ),
    );
    expect(parseNotification(payload, NOW).filter((e) => e.kind === 'archive')).toEqual([]);
  });

  it('keeps a __proto__ object in the value of another field in each item archived', () => {
    const payload: unknown = JSON.parse(
      `{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"history","value":{"__proto__":{"note":"${MARK}"},"history":[{"wa_id":"${ANN}"},{"wa_id":"${BOB}"}]}}]}]}`,
    );
    const archived = parseNotification(payload, NOW).filter((e) => e.kind === 'archive');
    expect(archived).toHaveLength(2);
    for (const event of archived)
      expect(JSON.stringify(event.kind === 'archive' ? event.payload : null)).toContain(MARK);
  });
});
