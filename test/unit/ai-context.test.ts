// How messages become chat turns: non-text messages described in words, the parts of one long
// answer joined into one assistant turn.
import { describe, expect, it } from 'vitest';
import type { Message } from '../../shared/data';
import {
  alternating,
  describeForModel,
  inExchanges,
  OPERATOR_PREFIX,
  toTurns,
  withinBudget,
} from '../../shared/bot/ai-responder';

const msg = (over: Partial<Message>): Message => ({
  id: 'm',
  userId: 'u',
  waMessageId: null,
  direction: 'inbound',
  type: 'text',
  text: '',
  status: 'received',
  createdAt: new Date(0),
  seqAt: new Date(0),
  role: 'conversation',
  phoneNumberId: null,
  replyState: 'sent',
  error: null,
  ai: null,
  relatedId: null,
  ...over,
});

describe('describeForModel', () => {
  it.each([
    ['text', 'hello [world]', 'hello [world]'],
    ['image', 'my bike', '(The user sent an image with the caption: my bike)'],
    ['image', '[SALE] my bike', '(The user sent an image with the caption: [SALE] my bike)'],
    // As stored by earlier versions.
    ['image', '[image] my bike', '(The user sent an image with the caption: my bike)'],
    ['video', 'the race', '(The user sent a video with the caption: the race)'],
    ['video', '[video]', '(The user sent a video without a caption.)'],
    ['document', 'my invoice', '(The user sent a document with the caption: my invoice)'],
    ['image', '[image]', '(The user sent an image without a caption.)'],
    ['audio', '[voice message]', '(The user sent a voice message, which you cannot listen to.)'],
    ['document', '[document] invoice.pdf', '(The user sent a document: invoice.pdf)'],
    ['sticker', '[sticker]', '(The user sent a sticker.)'],
    ['location', '[location] Fake Cafe 1 Main St', '(The user shared a location: Fake Cafe 1 Main St)'],
    ['contacts', '[contact] Ana Silva', '(The user shared a contact: Ana Silva)'],
    ['order', '[order] 2 items', '(The user placed an order: 2 items)'],
    ['interactive', 'Tuesday', '(The user chose: Tuesday)'],
    ['interactive', '[flow] booking', '(The user submitted a form: booking)'],
    ['interactive', '[product] Blue shirt', '(The user sent a product from the catalog: Blue shirt)'],
    ['interactive', '[A] Monday', '(The user chose: [A] Monday)'],
    ['button', 'Stop promotions', '(The user tapped the button: Stop promotions)'],
  ])('%s %j', (type, text, expected) => {
    expect(describeForModel({ type, text, direction: 'inbound' })).toBe(expected);
  });

  it('keeps outbound text as it is', () => {
    expect(describeForModel({ type: 'text', text: '[image] x', direction: 'outbound' })).toBe('[image] x');
  });

  it("marks what an operator wrote as a human agent's", () => {
    expect(
      describeForModel({ type: 'text', text: 'Ana here.', direction: 'outbound', role: 'operator' }),
    ).toBe('(A human agent wrote:) Ana here.');
    expect(OPERATOR_PREFIX).toBe('(A human agent wrote:) ');
  });
});

describe('toTurns', () => {
  it('maps inbound to user and outbound to assistant, joining the parts of one answer', () => {
    const turns = toTurns([
      msg({ id: 'a', text: 'question' }),
      msg({ id: 'b', direction: 'outbound', text: 'part 1', relatedId: 'a' }),
      msg({ id: 'c', direction: 'outbound', text: 'part 2', relatedId: 'a' }),
      msg({ id: 'd', text: 'next' }),
      msg({ id: 'e', direction: 'outbound', text: 'reply', relatedId: 'd' }),
    ]);
    expect(turns).toEqual([
      { role: 'user', content: 'question' },
      { role: 'assistant', content: 'part 1\npart 2' },
      { role: 'user', content: 'next' },
      { role: 'assistant', content: 'reply' },
    ]);
  });
});

describe("an operator's messages as turns", () => {
  const history = [
    msg({ id: 'a', text: 'question' }),
    msg({ id: 'b', direction: 'outbound', text: 'answer', relatedId: 'a' }),
    msg({ id: 'o1', direction: 'outbound', role: 'operator', text: 'Ana here.' }),
    msg({ id: 'o2', direction: 'outbound', role: 'operator', text: 'It ships Monday.' }),
    msg({ id: 'c', text: 'thanks' }),
  ];

  it('gives each its own assistant turn, in place, never joined with the answer before it', () => {
    expect(toTurns(inExchanges(history))).toEqual([
      { role: 'user', content: 'question' },
      { role: 'assistant', content: 'answer' },
      { role: 'assistant', content: `${OPERATOR_PREFIX}Ana here.` },
      { role: 'assistant', content: `${OPERATOR_PREFIX}It ships Monday.` },
      { role: 'user', content: 'thanks' },
    ]);
  });

  it('merges them with the assistant turns around them for a strict chat template', () => {
    const system = { role: 'system' as const, content: 'sys' };
    expect(alternating([system, ...toTurns(history)])).toEqual([
      system,
      { role: 'user', content: 'question' },
      {
        role: 'assistant',
        content: `answer\n\n${OPERATOR_PREFIX}Ana here.\n\n${OPERATOR_PREFIX}It ships Monday.`,
      },
      { role: 'user', content: 'thanks' },
    ]);
  });
});

describe('inExchanges', () => {
  it('puts each answer (all its parts) right after its message; an answer to an older message stays in place', () => {
    const ids = (ms: Message[]) => ms.map((m) => m.id);
    const out = (id: string, relatedId: string) => msg({ id, direction: 'outbound', relatedId });
    expect(
      ids(
        inExchanges([
          out('old-answer', 'not-read'),
          msg({ id: 'b1' }),
          msg({ id: 'b2' }),
          msg({ id: 'b3' }),
          out('a1', 'b1'),
          out('a2.1', 'b2'),
          out('a2.2', 'b2'),
          out('a3', 'b3'),
        ]),
      ),
    ).toEqual(['old-answer', 'b1', 'a1', 'b2', 'a2.1', 'a2.2', 'b3', 'a3']);
  });
});

describe('withinBudget', () => {
  const user = (content: string) => ({ role: 'user' as const, content });
  const assistant = (content: string) => ({ role: 'assistant' as const, content });

  it('keeps the newest turns that fit with the new message, counting characters (an emoji is one)', () => {
    const history = [user('a'.repeat(6)), assistant('b'.repeat(3)), user('🙂'.repeat(4)), assistant('cc')];
    // Each history turn counts 2 more (the blank line joining turns merged for a strict template).
    // 14 characters: the new message (3), then 'cc' (2 + 2) and four emoji (4 + 2); the b's do not fit.
    const newest = [user('🙂'.repeat(4)), assistant('cc'), user('new')];
    expect(withinBudget(history, user('new'), 14)).toEqual(newest);
    expect(withinBudget(history, user('new'), 17)).toEqual(newest);
    expect(withinBudget(history, user('new'), 18)).toEqual([...history.slice(1), user('new')]);
    // Nothing older than a turn that does not fit, even when an older one would.
    expect(withinBudget([user('x'), assistant('y'.repeat(9))], user('new'), 9)).toEqual([user('new')]);
    expect(withinBudget(history, user('new'), 100)).toEqual([...history, user('new')]);
  });

  it('always keeps the new message, cut to the budget without splitting a character', () => {
    expect(withinBudget([user('old')], user(`ab${'🙂'.repeat(5)}`), 4)).toEqual([user('ab🙂🙂')]);
  });
});
