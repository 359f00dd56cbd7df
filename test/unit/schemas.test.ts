// Every fixture under test/fixtures/meta (shaped like Meta's Cloud API webhook docs) parses with the
// webhook schemas, and normalize gives the type, text and treatment docs/contract.md describes.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ContactSchema,
  InboundMessageSchema,
  MessagesValueSchema,
  NotificationSchema,
  StatusSchema,
} from '../../shared/whatsapp/schemas';
import { normalize, type Treatment } from '../../shared/whatsapp/normalize';
import { MAX_NAME, nameOf } from '../../shared/whatsapp/notification';

const FIXTURES = join(__dirname, '..', 'fixtures', 'meta');

interface Notification {
  object: string;
  entry: { id: string; changes: { field: string; value: Record<string, unknown> }[] }[];
}

function load(name: string): Notification {
  return JSON.parse(readFileSync(join(FIXTURES, `${name}.json`), 'utf8')) as Notification;
}

/** The single `messages` change value of a fixture. */
function valueOf(name: string) {
  const notification = load(name);
  expect(NotificationSchema.safeParse(notification).success).toBe(true);
  const change = notification.entry[0]?.changes[0];
  expect(change?.field).toBe('messages');
  return MessagesValueSchema.parse(change?.value);
}

function messageOf(name: string) {
  const messages = valueOf(name).messages ?? [];
  expect(messages).toHaveLength(1);
  return InboundMessageSchema.parse(messages[0]);
}

interface Expected {
  type: string;
  treatment: Treatment;
  /** Exact text, or a check on it. */
  text: string | ((text: string) => void);
  relatedId?: string | null;
}

const EXPECTED: Record<string, Expected> = {
  text: { type: 'text', treatment: 'answer', text: 'Does it come in another color?' },
  image: { type: 'image', treatment: 'answer', text: 'Black jacket, size M' },
  audio: { type: 'audio', treatment: 'answer', text: '[voice message]' },
  video: { type: 'video', treatment: 'answer', text: '[video]' },
  document: { type: 'document', treatment: 'answer', text: 'Receipt' },
  sticker: { type: 'sticker', treatment: 'answer', text: '[sticker]' },
  location: {
    type: 'location',
    treatment: 'answer',
    text: (t) => {
      expect(t.startsWith('[location]')).toBe(true);
      expect(t).toBe('[location] Fake Cafe 1 Hacker Way, Menlo Park, CA 94025');
    },
  },
  contacts: { type: 'contacts', treatment: 'answer', text: '[contact] Kerry Fisher' },
  'interactive-button-reply': { type: 'interactive', treatment: 'answer', text: 'Change' },
  'interactive-list-reply': { type: 'interactive', treatment: 'answer', text: 'Express Shipping' },
  // The user's answer to a call permission request (Calling API): a note, not a message to answer.
  'interactive-call-permission-reply': {
    type: 'interactive',
    treatment: 'note',
    text: '[call permission: accept]',
    relatedId: null,
  },
  'interactive-nfm-reply': {
    type: 'interactive',
    treatment: 'answer',
    text: '[flow] appointment_date: 2025-06-12',
  },
  button: { type: 'button', treatment: 'answer', text: 'Stop promotions' },
  reaction: {
    type: 'reaction',
    treatment: 'reaction',
    text: '[reaction] \u{1F44D}',
    relatedId: 'wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJFRUVFRUVFRUVFRUVFRUVFRQA',
  },
  'reaction-removed': {
    type: 'reaction',
    treatment: 'reaction',
    text: '[reaction removed]',
    relatedId: 'wamid.HBgLMTY1MDU1NTEyMzQVAgARGBJFRUVFRUVFRUVFRUVFRUVFRQA',
  },
  // Two of one product and one of another: 3 items (it said 2, its lines).
  order: { type: 'order', treatment: 'answer', text: '[order] 3 items Please deliver before Friday' },
  system: {
    type: 'system',
    treatment: 'system',
    text: 'User Sheena Nelson changed from 16505551234 to 16505556789',
  },
  'request-welcome': { type: 'request_welcome', treatment: 'welcome', text: '' },
  // An edit delivered as unsupported (the fixture's `unsupported.type`): acts on an earlier message.
  unsupported: { type: 'unsupported', treatment: 'note', text: '[unsupported: edit]' },
  // A vote in a poll (the doc's own example `unsupported.type`): acts on an earlier message too.
  'unsupported-poll-update': { type: 'unsupported', treatment: 'note', text: '[unsupported: poll_update]' },
  edit: {
    type: 'edit',
    treatment: 'note',
    text: '[edited] Black jacket, size L',
    relatedId: 'wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjFFOUIwMDhFQTUyNDlGRQA=',
  },
  revoke: {
    type: 'revoke',
    treatment: 'note',
    text: '[message deleted]',
    relatedId: 'wamid.HBgLMTQxMjU1NTA4MjkVAgASGBQzQUNCNjFFOUIwMDhFQTUyNDlGRQA=',
  },
  referral: { type: 'text', treatment: 'answer', text: 'Can I get more info about this?' },
  'bsuid-user': { type: 'text', treatment: 'answer', text: 'Hi, do you ship to Spain?' },
};

const STATUSES = ['status-sent', 'status-delivered', 'status-read', 'status-failed'];

describe('fixtures', () => {
  it('covers every fixture file with an expectation', () => {
    const files = readdirSync(FIXTURES)
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.replace(/\.json$/, ''))
      .sort();
    expect(files).toEqual([...Object.keys(EXPECTED), ...STATUSES].sort());
  });

  it('keeps non-ASCII escaped the way Meta sends it', () => {
    const raw = readFileSync(join(FIXTURES, 'reaction.json'), 'utf8');
    expect(raw).toContain('\\ud83d\\udc4d');
    expect([...raw].every((c) => c.charCodeAt(0) < 0x80)).toBe(true);
  });
});

describe('InboundMessageSchema + normalize', () => {
  for (const [name, expected] of Object.entries(EXPECTED)) {
    it(`${name}: parses and normalizes to ${expected.type}/${expected.treatment}`, () => {
      const message = messageOf(name);
      const n = normalize(message);
      expect(n.type).toBe(expected.type);
      expect(n.treatment).toBe(expected.treatment);
      if (typeof expected.text === 'string') expect(n.text).toBe(expected.text);
      else expected.text(n.text);
      expect(n.relatedId).toBe(expected.relatedId ?? null);
    });
  }

  it('counts an order in items, each line by its quantity, one without a readable quantity as 1', () => {
    const message = structuredClone(messageOf('order')) as Record<string, unknown>;
    const order = message['order'] as { text?: string; product_items: Record<string, unknown>[] };
    delete order.text;
    order.product_items = [{ quantity: '4' }, { quantity: 0 }, { quantity: 'x' }, { quantity: 2.5 }, {}];
    expect(normalize(InboundMessageSchema.parse(message)).text).toBe('[order] 8 items');
    order.product_items = [{ quantity: 1 }];
    expect(normalize(InboundMessageSchema.parse(message)).text).toBe('[order] 1 item');
  });

  it("describes a flow reply by the user's answers, else Meta's body: never by the business's flow_token", () => {
    const flow = (responseJson: string) => {
      const message = structuredClone(messageOf('interactive-nfm-reply')) as Record<string, unknown>;
      const interactive = message['interactive'] as { nfm_reply: { response_json: string } };
      interactive.nfm_reply.response_json = responseJson;
      return normalize(InboundMessageSchema.parse(message)).text;
    };
    expect(flow('{"flow_token":"secret-token","size":"M","count":2,"extras":["a"]}')).toBe(
      '[flow] size: M, count: 2, extras: ["a"]',
    );
    expect(flow('{"flow_token":"secret-token"}')).toBe('[flow] Sent');
    expect(flow('not json')).toBe('[flow] Sent');
    const long = flow(JSON.stringify({ note: '😀'.repeat(2000) }));
    expect([...long]).toHaveLength('[flow] '.length + 1024);
    expect(long.endsWith('😀…')).toBe(true);
    // An answer nested deeper than JSON.stringify can write (it recurses) costs the description
    // only, never the message: the other answers are still described.
    const deep = `{"size":"M","tree":${'['.repeat(100_000)}${']'.repeat(100_000)}}`;
    expect(flow(deep)).toBe('[flow] size: M, tree: …');
  });

  it('describes a shared contact by its first and last name when its formatted name is empty or blank', () => {
    const shared = (names: { formatted_name?: string; first_name?: string; last_name?: string }[]) => {
      const message = structuredClone(messageOf('contacts')) as Record<string, unknown>;
      message['contacts'] = names.map((name) => ({ name }));
      return normalize(InboundMessageSchema.parse(message)).text;
    };
    expect(shared([{ formatted_name: '', first_name: 'Ana', last_name: 'Silva' }])).toBe(
      '[contact] Ana Silva',
    );
    expect(shared([{ formatted_name: '  ', first_name: 'Ana' }, { formatted_name: 'Bo' }])).toBe(
      '[contact] Ana, Bo',
    );
    expect(shared([{ formatted_name: 'Kerry Fisher', first_name: 'K' }])).toBe('[contact] Kerry Fisher');
  });

  it('keeps context (reply + forwarded) on a text', () => {
    const message = messageOf('text');
    expect(message.context?.forwarded).toBe(true);
    expect(message.context?.id).toMatch(/^wamid\./);
    expect(message.timestamp).toBe(1749416383);
  });

  it('keeps the click-to-WhatsApp referral, including fields the schema does not name', () => {
    const message = messageOf('referral');
    expect(message.referral?.source_type).toBe('ad');
    expect(message.referral?.ctwa_clid).toMatch(/^ARA/);
    expect((message.referral as Record<string, unknown> | undefined)?.['image_url']).toMatch(/^https:/);
  });

  it('parses a username (BSUID) user: contact with user_id and no wa_id, message with from_user_id', () => {
    const value = valueOf('bsuid-user');
    const contact = ContactSchema.parse(value.contacts?.[0]);
    expect(contact.wa_id).toBeUndefined();
    expect(contact.user_id).toBe('US.13491208655302741918');
    expect(contact.profile?.username).toBe('@pablomorales');
    const message = messageOf('bsuid-user');
    expect(message.from).toBeUndefined();
    expect(message.from_user_id).toBe('US.13491208655302741918');
  });

  it('parses every contact of the message fixtures', () => {
    let parsed = 0;
    for (const name of Object.keys(EXPECTED)) {
      for (const contact of valueOf(name).contacts ?? []) {
        expect(ContactSchema.safeParse(contact).success, name).toBe(true);
        parsed++;
      }
    }
    // Each message fixture names its sender, except a system message (Meta sends no contact).
    expect(parsed).toBe(Object.keys(EXPECTED).length - 1);
    expect(valueOf('system').contacts).toBeUndefined();
  });

  it('keeps the errors of an unsupported message', () => {
    const message = messageOf('unsupported');
    expect(message.errors?.[0]?.code).toBe(131051);
    expect(message.errors?.[0]?.error_data?.details).toMatch(/not supported/);
  });

  it('reads audio voice, sticker animated and order items', () => {
    const audio = messageOf('audio');
    expect(audio.type === 'audio' && audio.audio.voice).toBe(true);
    const sticker = messageOf('sticker');
    expect(sticker.type === 'sticker' && sticker.sticker.animated).toBe(true);
    const order = messageOf('order');
    expect(order.type === 'order' ? order.order.product_items.length : -1).toBe(2);
  });
});

describe('StatusSchema', () => {
  for (const name of STATUSES) {
    it(`${name} parses`, () => {
      const value = valueOf(name);
      expect(value.messages).toBeUndefined();
      expect(value.statuses).toHaveLength(1);
      const status = StatusSchema.parse(value.statuses?.[0]);
      expect(status.status).toBe(name.replace('status-', ''));
      // Meta sends Unix seconds as a string: parsed to that number, not just to some number.
      const sent = (value.statuses?.[0] as { timestamp: unknown }).timestamp;
      expect(sent).toMatch(/^\d{10}$/);
      expect(status.timestamp).toBe(Number(sent));
    });
  }

  it('keeps conversation and pricing of a sent status', () => {
    const status = StatusSchema.parse(valueOf('status-sent').statuses?.[0]);
    expect(status.conversation?.origin?.type).toBe('service');
    expect(status.pricing?.billable).toBe(false);
    expect(status.pricing?.category).toBe('service');
  });

  it('keeps the errors of a failed status', () => {
    const status = StatusSchema.parse(valueOf('status-failed').statuses?.[0]);
    expect(status.errors?.[0]?.code).toBe(131047);
    expect(status.errors?.[0]?.error_data?.details).toMatch(/24 hours/);
  });
});

describe('mismatched bodies and unknown fields', () => {
  const base = { from: '16505551234', id: 'wamid.X', timestamp: '1749416383' };

  it.each([
    ['text without text', { ...base, type: 'text' }],
    ['text with image body', { ...base, type: 'text', image: { id: '1' } }],
    ['text with a number body', { ...base, type: 'text', text: { body: 42 } }],
    ['image without image', { ...base, type: 'image', text: { body: 'hi' } }],
    ['location without coordinates', { ...base, type: 'location', location: { name: 'Fake Cafe' } }],
    ['interactive of an unknown kind', { ...base, type: 'interactive', interactive: { type: 'carousel' } }],
    [
      'button_reply without title',
      { ...base, type: 'interactive', interactive: { type: 'button_reply', button_reply: { id: 'x' } } },
    ],
    ['reaction without message_id', { ...base, type: 'reaction', reaction: { emoji: 'x' } }],
    ['contacts empty', { ...base, type: 'contacts', contacts: [] }],
    ['unknown type', { ...base, type: 'hologram', hologram: {} }],
    ['missing id', { from: '1', timestamp: '1', type: 'text', text: { body: 'hi' } }],
    ['bad timestamp', { ...base, timestamp: 'yesterday', type: 'text', text: { body: 'hi' } }],
  ])('%s fails', (_name, message) => {
    expect(InboundMessageSchema.safeParse(message).success).toBe(false);
  });

  it('keeps unknown extra fields on the message, its body and statuses', () => {
    const parsed = InboundMessageSchema.parse({
      ...base,
      type: 'text',
      text: { body: 'hi', future_field: 1 },
      brand_new: { nested: true },
    }) as Record<string, unknown>;
    expect(parsed['brand_new']).toEqual({ nested: true });
    expect((parsed['text'] as Record<string, unknown>)['future_field']).toBe(1);

    const status = StatusSchema.parse({
      id: 'wamid.Y',
      status: 'sent',
      timestamp: '1',
      new_thing: 'x',
    }) as Record<string, unknown>;
    expect(status['new_thing']).toBe('x');
  });

  it('accepts a numeric timestamp and an unknown status name', () => {
    expect(StatusSchema.parse({ id: 'w', status: 'held_for_quality', timestamp: 1749416383 }).timestamp).toBe(
      1749416383,
    );
  });
});

describe('profile names as stored', () => {
  it('keep at most MAX_NAME characters, counted as code points: an emoji is never cut in half', () => {
    const emoji = '\u{1F600}';
    // Cut by UTF-16 units, 300 emoji kept 128 of them, and 'a' before them left half of one.
    expect(nameOf(emoji.repeat(300))).toBe(emoji.repeat(MAX_NAME));
    expect(nameOf(`a${emoji.repeat(300)}`)).toBe(`a${emoji.repeat(MAX_NAME - 1)}`);
    expect(nameOf('x'.repeat(1_000_000))).toBe('x'.repeat(MAX_NAME));
    expect(nameOf('  Ana\u0000 ')).toBe('Ana');
    expect(nameOf(' \u0007 ')).toBeNull();
  });

  it('drop every control character, C1 too (U+0080–U+009F): a name shown on the dashboard', () => {
    expect(nameOf('Ana\u0085 Lu\u009b\u0080')).toBe('Ana Lu');
    expect(nameOf(' \u0090 ')).toBeNull();
  });
});
