// The chat simulator's notifications (scripts/dev/simulator.ts) have the envelope Meta sends (the
// one test/helpers/meta.ts builds from Meta's documented payloads) and each message or status
// passes the webhook's schemas as the kind it claims to be.
import { describe, expect, it } from 'vitest';
import { metaJson, notificationFor, SendSchema, type SimulatedSend } from '../../scripts/dev/simulator';
import {
  ContactSchema,
  InboundMessageSchema,
  MessagesValueSchema,
  NotificationSchema,
  StatusSchema,
} from '../../shared/whatsapp/schemas';
import { normalize } from '../../shared/whatsapp/normalize';
import { notification, textMessage, value } from '../helpers/meta';

const user = { waId: '34600111222', name: 'Ana Dev' };

type Shape = unknown;
/** The structure of a JSON value: keys and value types, not the values. */
const shape = (v: unknown): Shape =>
  Array.isArray(v)
    ? v.map(shape)
    : v && typeof v === 'object'
      ? Object.fromEntries(Object.entries(v).map(([k, x]) => [k, shape(x)]))
      : typeof v;

function parts(payload: unknown) {
  const parsed = NotificationSchema.parse(payload);
  const entry = parsed.entry[0] as { changes: { field: string; value: unknown }[] };
  const change = entry.changes[0]!;
  return { object: parsed.object, field: change.field, value: MessagesValueSchema.parse(change.value) };
}

describe('simulator notifications', () => {
  it('a text has exactly the envelope of a documented text notification', () => {
    const { payload, messageId } = notificationFor({ kind: 'text', ...user, text: 'hola' });
    const documented = notification(value({ contacts: [user], messages: [textMessage(user.waId, 'hola')] }));
    expect(shape(payload)).toEqual(shape(documented));
    const { value: v } = parts(payload);
    expect(ContactSchema.parse(v.contacts?.[0])).toMatchObject({
      wa_id: user.waId,
      profile: { name: 'Ana Dev' },
    });
    const message = InboundMessageSchema.parse(v.messages?.[0]);
    expect(message).toMatchObject({ id: messageId, from: user.waId, type: 'text', text: { body: 'hola' } });
    expect((v.messages?.[0] as { timestamp: unknown }).timestamp).toMatch(/^\d{10}$/);
  });

  const kinds: [SimulatedSend, string, string][] = [
    [{ kind: 'image', ...user, caption: 'a jacket' }, 'image', 'a jacket'],
    [
      {
        kind: 'location',
        ...user,
        latitude: 38.7,
        longitude: -9.1,
        place: 'Fake Cafe',
        address: '1 Fake Street',
      },
      'location',
      '[location] Fake Cafe 1 Fake Street',
    ],
  ];
  it.each(kinds)('a %o is a valid %s message the bot reads as "%s"', (send, type, text) => {
    const message = InboundMessageSchema.parse(parts(notificationFor(send).payload).value.messages?.[0]);
    expect(message.type).toBe(type);
    expect(normalize(message)).toMatchObject({ type, text, treatment: 'answer' });
  });

  it('a reaction points at the message reacted to and gets no answer', () => {
    const send = { kind: 'reaction', ...user, messageId: 'wamid.OUT1', emoji: '👍' } as const;
    const message = InboundMessageSchema.parse(parts(notificationFor(send).payload).value.messages?.[0]);
    expect(normalize(message)).toMatchObject({ type: 'reaction', relatedId: 'wamid.OUT1' });
    expect(normalize(message).treatment).not.toBe('answer');
  });

  it('a status is a statuses-only notification for the reply, with no contact or message', () => {
    const { payload, messageId } = notificationFor({
      kind: 'status',
      waId: user.waId,
      messageId: 'wamid.OUT1',
      status: 'read',
    });
    expect(messageId).toBeNull();
    const { value: v } = parts(payload);
    expect(v.messages).toBeUndefined();
    expect(v.contacts).toBeUndefined();
    expect(StatusSchema.parse(v.statuses?.[0])).toMatchObject({
      id: 'wamid.OUT1',
      status: 'read',
      recipient_id: user.waId,
    });
  });

  it('serialises non-ASCII as Meta does and refuses what Meta would never send', () => {
    const body = metaJson(notificationFor({ kind: 'text', ...user, text: 'café 👍' }).payload);
    expect(body).toContain('caf\\u00e9 \\ud83d\\udc4d');
    expect(JSON.parse(body)).toMatchObject({
      entry: [{ changes: [{ value: { messages: [{ text: { body: 'café 👍' } }] } }] }],
    });
    expect(SendSchema.safeParse({ kind: 'text', waId: '+34 600', name: 'A', text: 'x' }).success).toBe(false);
    expect(SendSchema.safeParse({ kind: 'text', ...user, text: '   ' }).success).toBe(false);
    expect(SendSchema.safeParse({ kind: 'location', ...user, latitude: 91, longitude: 0 }).success).toBe(
      false,
    );
    expect(
      SendSchema.safeParse({ kind: 'status', waId: user.waId, messageId: 'x', status: 'sent' }).success,
    ).toBe(false);
  });
});
