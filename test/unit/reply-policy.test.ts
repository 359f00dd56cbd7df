// Reply policy pure parts: commands, splitting long answers, status ordering and queue job parsing.
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../shared/bot/commands';
import { MAX_TEXT_PARTS, markCut, splitMessage, WHATSAPP_TEXT_LIMIT } from '../../shared/bot/split';
import { parseReplyJob } from '../../shared/bot/jobs';
import { CUSTOMER_SERVICE_WINDOW_MS, characters, windowOpen } from '../../shared/whatsapp/outbound';
import { STATUS_RANK } from '../../shared/data/messages';
import { cpuClock } from '../helpers/cpu';

describe('parseCommand', () => {
  it.each([
    [' HELP! ', 'help'],
    ['help', 'help'],
    ['Stop.', 'stop'],
    ['STOP', 'stop'],
    ['start?', 'start'],
    ['Start!!!', 'start'],
    ['reset', 'reset'],
    ['\tReset …\n', 'reset'],
  ] as const)('%j → %s', (input, expected) => {
    expect(parseCommand(input)).toBe(expected);
  });

  it.each(['help me', 'stopp', 'please stop', 'st op', '', '   ', '!', 'restart', 'helpful'])(
    '%j → null',
    (input) => {
      expect(parseCommand(input)).toBeNull();
    },
  );

  it('trims Unicode whitespace (no-break, ideographic, a BOM) and knows no other spelling', () => {
    expect(parseCommand('\u00a0Stop\u00a0')).toBe('stop');
    expect(parseCommand('\u3000HELP\u3000')).toBe('help');
    expect(parseCommand('\ufeffagent')).toBe('human');
    expect(parseCommand('Agent!\n')).toBe('human');
    // The contract names no other spelling: a slash, full-width letters, a command among other
    // words, a mark before it or an emoji after it make a text like any other.
    for (const text of [
      '/stop',
      '\uff33\uff34\uff2f\uff30',
      'ok stop',
      'stop now',
      '¿help?',
      '*stop*',
      'help 🙏',
    ])
      expect(parseCommand(text)).toBeNull();
  });

  it('reads a text of 65,536 characters of spaces or punctuation in linear time (no backtracking)', () => {
    // A user can send texts this long; a backtracking `[\s\p{P}]+$` took seconds on each.
    const n = 65_536;
    // CPU time, not the wall clock: a loaded machine stretched these 25 ms past 200 ms.
    const spent = cpuClock();
    for (const text of ['a' + ' '.repeat(n) + 'a', 'x' + ' !'.repeat(n / 2) + 'y', 'b' + '.'.repeat(n) + 'c'])
      expect(parseCommand(text)).toBeNull();
    expect(parseCommand('help' + ' !'.repeat(n / 2))).toBe('help');
    expect(parseCommand('stop\u{1039F}')).toBe('stop'); // astral punctuation (Ugaritic word divider)
    expect(spent()).toBeLessThan(200);
  });
});

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const words = (s: string) => s.split(/\s+/).filter(Boolean);

function prose(count: number, seed = 1): string {
  const vocabulary = [
    'alpha',
    'beta',
    'gamma',
    'delta',
    'epsilon',
    'zeta',
    'eta',
    'theta',
    'iota',
    'kappa',
    'lambda',
  ];
  const out: string[] = [];
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    let word = vocabulary[x % vocabulary.length] ?? 'mu';
    if (i % 13 === 12) word += '.';
    out.push(word);
  }
  return out.join(' ');
}

describe('markCut (an answer the token limit stopped)', () => {
  it.each([
    ['Parking is behind the buil', 'Parking is behind the…'],
    ['Parking is behind the building ', 'Parking is behind the building…'],
    ['It opens at nine.', 'It opens at nine.'],
    ['東京タワーに行きま', '東京タワーに行きま…'],
    ['a verylongwordthatgoeson', 'a verylongwordthatgoeson…'],
  ])('%j → %j', (text, expected) => {
    expect(markCut(text)).toBe(expected);
  });
});

describe('splitMessage', () => {
  it('leaves short text unchanged (one part)', () => {
    expect(splitMessage('Hello! How can I help you today?')).toEqual(['Hello! How can I help you today?']);
    const exactly = 'x'.repeat(WHATSAPP_TEXT_LIMIT);
    expect(splitMessage(exactly)).toEqual([exactly]);
  });

  it(`sends at most ${MAX_TEXT_PARTS} parts: a longer answer is cut at a boundary and ends with "…"`, () => {
    const text = prose(20_000);
    expect(text.length).toBeGreaterThan(20 * WHATSAPP_TEXT_LIMIT);
    const parts = splitMessage(text);
    expect(parts).toHaveLength(MAX_TEXT_PARTS);
    for (const part of parts) expect(characters(part)).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
    const last = parts.at(-1) as string;
    expect(last.endsWith('…')).toBe(true);
    expect(last).not.toMatch(/\s…$/);
    // What was sent is the answer's start, word for word.
    const sent = words(parts.join(' ').slice(0, -1));
    expect(sent).toEqual(words(text).slice(0, sent.length));
    // Exactly the cap's length is not cut.
    const full = splitMessage(text, WHATSAPP_TEXT_LIMIT, Infinity).slice(0, MAX_TEXT_PARTS).join('\n\n');
    expect(splitMessage(full).at(-1)?.endsWith('…')).toBe(false);
  });

  it('returns nothing for blank text', () => {
    expect(splitMessage('   \n ')).toEqual([]);
  });

  it('splits long prose into parts of at most 4096 characters that join back to the same words', () => {
    const text = prose(3000);
    expect(text.length).toBeGreaterThan(3 * WHATSAPP_TEXT_LIMIT);
    const parts = splitMessage(text, WHATSAPP_TEXT_LIMIT, Infinity);
    expect(parts.length).toBeGreaterThan(3);
    for (const part of parts) {
      expect(part.length).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
      expect(part).toBe(part.trim());
      expect(part).not.toBe('');
    }
    expect(words(parts.join(' '))).toEqual(words(text));
  });

  it('prefers a paragraph break over a line or sentence break', () => {
    const first = prose(450, 2); // ~2.5k chars
    const second = prose(300, 3) + '.\n' + prose(300, 4); // line break and sentences past the limit
    const third = prose(300, 5);
    const text = `${first}\n\n${second}\n\n${third}`;
    const parts = splitMessage(text);
    expect(first.length).toBeGreaterThan(WHATSAPP_TEXT_LIMIT / 2);
    expect(first.length).toBeLessThan(WHATSAPP_TEXT_LIMIT);
    expect(first.length + 2 + second.length).toBeGreaterThan(WHATSAPP_TEXT_LIMIT);
    expect(parts[0]).toBe(first);
    for (const part of parts) expect(part.length).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
    expect(words(parts.join('\n\n'))).toEqual(words(text));
  });

  it('falls back to a sentence break, then a space', () => {
    const sentence = 'This is a fairly ordinary sentence that keeps going on. ';
    const text = sentence.repeat(200).trim();
    const parts = splitMessage(text);
    expect(parts.length).toBeGreaterThan(2);
    for (const part of parts.slice(0, -1)) expect(part.endsWith('.')).toBe(true);
    expect(words(parts.join(' '))).toEqual(words(text));

    const unpunctuated = 'word '.repeat(2000).trim();
    const cut = splitMessage(unpunctuated);
    expect(cut.length).toBeGreaterThan(1);
    // Cut at spaces only: joined with one space, the text comes back exactly (no word cut in two).
    expect(cut.join(' ')).toBe(unpunctuated);
  });

  // A paragraph break early in a part (under half of it) is no reason to cut inside a word: the
  // part ends at the last line, sentence or word break instead.
  it('never cuts a word when an early paragraph break is the only one of its kind', () => {
    const paragraph = `${'word '.repeat(1000)}End of para.`;
    const text = `${paragraph}\n\n${paragraph}`;
    const parts = splitMessage(text);
    expect(parts.length).toBeGreaterThan(2);
    for (const part of parts) {
      expect(characters(part)).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
      expect(part).toMatch(/^(word|End)\b/);
      expect(part).toMatch(/\b(word|para\.)$/);
    }
    expect(words(parts.join(' '))).toEqual(words(text));
  });

  // WhatsApp's limit is counted in characters, Unicode code points (as the contract counts them):
  // an emoji outside the BMP is one, though two UTF-16 units.
  it('counts code points: an answer of up to 4096 emoji is one part', () => {
    const emoji = '\u{1F600}'.repeat(WHATSAPP_TEXT_LIMIT);
    expect(splitMessage(emoji)).toEqual([emoji]);
    const text = 'a'.repeat(WHATSAPP_TEXT_LIMIT - 1) + '\u{1F600}'.repeat(20);
    expect(splitMessage(text)).toEqual([
      'a'.repeat(WHATSAPP_TEXT_LIMIT - 1) + '\u{1F600}',
      '\u{1F600}'.repeat(19),
    ]);
  });

  it.each([0, 1, 2, 3])(
    'cuts text of emoji only (offset %i) into full parts of at most 4096 code points',
    (offset) => {
      const text = 'b'.repeat(offset) + '\u{1F600}'.repeat(5000);
      const parts = splitMessage(text);
      expect(parts.map(characters)).toEqual([WHATSAPP_TEXT_LIMIT, 5000 + offset - WHATSAPP_TEXT_LIMIT]);
      for (const part of parts) expect(LONE_SURROGATE.test(part)).toBe(false);
      expect(parts.join('')).toBe(text);
    },
  );

  it('never splits a surrogate pair in emoji-heavy prose', () => {
    const text = Array.from({ length: 5000 }, (_, i) => (i % 3 === 0 ? '\u{1F44D}' : 'ok')).join(' ');
    const parts = splitMessage(text);
    expect(parts.length).toBeGreaterThan(1);
    for (const part of parts) {
      expect(LONE_SURROGATE.test(part)).toBe(false);
      expect(characters(part)).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
    }
    expect(words(parts.join(' '))).toEqual(words(text));
  });

  it('never cuts an emoji sequence (ZWJ family, skin tone, flag) or a letter from its accent', () => {
    for (const unit of [
      '\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466}',
      '\u{1F44D}\u{1F3FD}',
      '\u{1F1F5}\u{1F1F9}',
      'e\u0301',
    ]) {
      for (const offset of [0, 1, 2, 3, 5]) {
        const text =
          'x'.repeat(offset) + unit.repeat(Math.ceil((3 * WHATSAPP_TEXT_LIMIT) / characters(unit)));
        const parts = splitMessage(text);
        expect(parts.join('')).toBe(text);
        for (const part of parts) {
          expect(characters(part)).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
          // Every part but the first is whole units.
          if (part !== parts[0]) expect(part.split(unit).join('')).toBe('');
        }
      }
    }
  });

  it('splits an answer of 400,000 characters (a model that ran on) at once, not by walking all of it', () => {
    // Walking the graphemes of the whole answer cost its length at each of them (V8's segmenter):
    // 25 s for this one, which held up every reply of the instance and failed on each retry.
    const text = 'a\n'.repeat(200_000);
    const spent = cpuClock();
    const parts = splitMessage(text);
    expect(spent()).toBeLessThan(1000);
    expect(parts).toHaveLength(MAX_TEXT_PARTS);
    for (const part of parts) expect(characters(part)).toBeLessThanOrEqual(WHATSAPP_TEXT_LIMIT);
    expect(parts.at(-1)?.endsWith('…')).toBe(true);
  });

  it('hard-cuts one very long word into full-size parts', () => {
    const text = 'y'.repeat(WHATSAPP_TEXT_LIMIT * 2 + 10);
    const parts = splitMessage(text);
    expect(parts.map((p) => p.length)).toEqual([WHATSAPP_TEXT_LIMIT, WHATSAPP_TEXT_LIMIT, 10]);
    expect(parts.join('')).toBe(text);
  });
});

describe('windowOpen (the 24-hour customer service window)', () => {
  const at = new Date('2026-03-01T12:00:00.000Z');
  const later = (ms: number) => new Date(at.getTime() + ms);
  it("is open until 24 hours after the later of Meta's time and the arrival, closed from then on", () => {
    expect(windowOpen({ createdAt: at, receivedAt: at }, later(CUSTOMER_SERVICE_WINDOW_MS - 1))).toBe(true);
    expect(windowOpen({ createdAt: at, receivedAt: at }, later(CUSTOMER_SERVICE_WINDOW_MS))).toBe(false);
    // Reached us an hour after Meta's time (a late delivery): the arrival counts.
    const late = { createdAt: at, receivedAt: later(3_600_000) };
    expect(windowOpen(late, later(CUSTOMER_SERVICE_WINDOW_MS + 3_600_000 - 1))).toBe(true);
    expect(windowOpen(late, later(CUSTOMER_SERVICE_WINDOW_MS + 3_600_000))).toBe(false);
    // Meta's time later than the arrival (a clock ahead): the later one counts too.
    const ahead = { createdAt: later(60_000), receivedAt: at };
    expect(windowOpen(ahead, later(CUSTOMER_SERVICE_WINDOW_MS + 59_999))).toBe(true);
    // A migrated message carries only Meta's time.
    expect(windowOpen({ createdAt: at }, later(CUSTOMER_SERVICE_WINDOW_MS))).toBe(false);
  });
});

describe('STATUS_RANK', () => {
  it('orders sent < delivered < read < failed', () => {
    expect(STATUS_RANK.sent).toBeLessThan(STATUS_RANK.delivered);
    expect(STATUS_RANK.delivered).toBeLessThan(STATUS_RANK.read);
    expect(STATUS_RANK.read).toBeLessThan(STATUS_RANK.failed);
  });

  it('ranks pending and not_sent no higher than sent', () => {
    expect(STATUS_RANK.pending).toBeLessThanOrEqual(STATUS_RANK.sent);
    expect(STATUS_RANK.not_sent).toBeLessThanOrEqual(STATUS_RANK.sent);
  });
});

describe('parseReplyJob', () => {
  const message = { kind: 'message', userId: 'u_1', messageId: 'm_1' } as const;
  const welcome = {
    kind: 'welcome',
    userId: 'u_2',
    phoneNumberId: '106540352242922',
    requestId: 'wamid.X',
  } as const;

  it('accepts a parsed object', () => {
    expect(parseReplyJob(message)).toEqual(message);
    expect(parseReplyJob(welcome)).toEqual(welcome);
  });

  it('accepts a JSON string', () => {
    expect(parseReplyJob(JSON.stringify(message))).toEqual(message);
    expect(parseReplyJob(`  ${JSON.stringify(welcome)}\n`)).toEqual(welcome);
  });

  it('accepts base64 of JSON', () => {
    expect(parseReplyJob(Buffer.from(JSON.stringify(message)).toString('base64'))).toEqual(message);
    expect(parseReplyJob(Buffer.from(JSON.stringify(welcome)).toString('base64'))).toEqual(welcome);
  });

  it.each([
    ['not json', 'not json at all'],
    ['broken JSON', '{"kind":"message",'],
    ['base64 of garbage', Buffer.from('garbage!').toString('base64')],
    ['empty string', ''],
    ['null', null],
    ['undefined', undefined],
    ['a number', 42],
    ['an array', [message]],
    ['unknown kind', { kind: 'other', userId: 'u', messageId: 'm' }],
    ['missing messageId', { kind: 'message', userId: 'u' }],
    ['empty userId', { kind: 'message', userId: '', messageId: 'm' }],
    ['welcome without phoneNumberId', { kind: 'welcome', userId: 'u', requestId: 'r' }],
  ])('rejects %s', (_name, item) => {
    expect(parseReplyJob(item)).toBeNull();
  });
});
