// What Meta changed in 2026 (WhatsApp Business Platform changelog), through the real webhook →
// ingest → reply path: standby webhooks (Aug 4, 2026), incoming product messages on the
// interactive messages webhook (Aug 3, 2026), and the edit and revoke messages webhooks (a user
// edits or deletes a message they sent: "Edit messages webhook reference", updated Jul 20, 2026;
// "Revoke messages webhook reference", updated May 21, 2026).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ANSWER, UNREADABLE_ANSWER } from '../../shared/bot/texts';
import { startTestApp, type TestApp } from '../helpers/app';
import { collectionOf } from '../helpers/raw';
import {
  notification,
  nowSeconds,
  BUSINESS_METADATA,
  textMessage,
  value,
  WABA_ID,
  wamid,
} from '../helpers/meta';

let app: TestApp;
let seq = 0;
const newPhone = () => `4478${String(2_000_000 + ++seq)}`;
const sendsTo = (phone: string) => app.graph.sends().filter((s) => s.body['to'] === phone);
const business = BUSINESS_METADATA;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

describe('standby webhooks (Meta Business Agent is the active handler)', () => {
  // Meta delivers them on the `standby` field, the conversation's activity nested in the value's
  // `standby` object: the user's messages, the agent's replies (echoes) and their statuses.
  const standby = (inner: Record<string, unknown>) => ({
    object: 'whatsapp_business_account',
    entry: [
      {
        id: WABA_ID,
        changes: [
          { field: 'standby', value: { messaging_product: 'whatsapp', metadata: business, standby: inner } },
        ],
      },
    ],
  });

  it('are never answered, read or typed to, and each item is archived under the person it names', async () => {
    const [ana, bo] = [newPhone(), newPhone()];
    await app.userWrites(ana, 'hello before the agent');
    const user = await app.services.data.users.findByIdentity({ waId: ana, bsuid: null });
    if (!user) throw new Error('user not stored');
    const before = app.graph.sends().length;
    const at = nowSeconds();
    const text = (from: string, body: string) => ({
      from,
      id: wamid(),
      timestamp: at,
      type: 'text',
      text: { body },
    });
    const echo = (to: string, body: string) => ({
      from: business.display_phone_number,
      to,
      id: wamid(),
      timestamp: at,
      type: 'text',
      text: { body },
    });
    const agentStatus = (to: string) => ({
      id: wamid(),
      status: 'delivered',
      timestamp: at,
      recipient_id: to,
      pricing: { billable: false, pricing_model: 'PMP', category: 'service', type: 'free_customer_service' },
    });
    const response = await app.post(
      standby({
        contacts: [
          { profile: { name: 'Ana' }, wa_id: ana },
          { profile: { name: 'Bo' }, wa_id: bo },
        ],
        messages: [text(ana, 'standby words of ana'), text(bo, 'standby words of bo')],
        message_echoes: [echo(ana, 'agent words to ana'), echo(bo, 'agent words to bo')],
        statuses: [agentStatus(bo), agentStatus(ana)],
      }),
    );
    expect(response.status).toBe(200);
    expect(response.jobs).toEqual([]);
    await app.drain();
    // Silent: no answer, no read receipt, no typing indicator, to anyone.
    expect(app.graph.sends().length).toBe(before);
    // Not a conversation message of the bot's: the user's history holds only what came on `messages`.
    expect(await app.services.data.messages.recent(user.id, 50)).toHaveLength(2);
    expect(await app.services.data.users.findByIdentity({ waId: bo, bsuid: null })).toBeNull();

    // Each item is the person's it names: Ana's export holds hers, and only hers.
    const exported = await app.services.data.personal.exportUser(user.id);
    const mine = JSON.stringify(exported?.events);
    for (const words of ['standby words of ana', 'agent words to ana']) expect(mine).toContain(words);
    expect(mine).not.toContain(bo);
    expect(mine).not.toContain('words of bo');
    expect(mine).not.toContain('words to bo');
    // The two statuses of the agent's messages, one each.
    const statusItems = (exported?.events ?? []).filter((e) =>
      JSON.stringify(e.payload).includes('"statuses"'),
    );
    expect(statusItems).toHaveLength(1);

    // Erasing Ana leaves Bo's items, and nothing of Ana.
    await app.services.data.personal.eraseUser(user.id);
    const left = JSON.stringify(
      await app.database.db
        .collection('events')
        .find({ kind: { $ne: 'audit' } })
        .toArray(),
    );
    expect(left).not.toContain(ana);
    expect(left).not.toContain('of ana');
    expect(left).not.toContain('to ana');
    expect(left).toContain('standby words of bo');
    expect(left).toContain('agent words to bo');
  });
});
describe('incoming product messages on the interactive webhook', () => {
  it('are stored and answered like any other reply to an interactive message, not as unreadable', async () => {
    const phone = newPhone();
    const id = wamid();
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          id: WABA_ID,
          changes: [
            {
              field: 'messages',
              value: {
                messaging_product: 'whatsapp',
                metadata: business,
                contacts: [{ profile: { name: 'Cy' }, wa_id: phone }],
                messages: [
                  {
                    from: phone,
                    id,
                    timestamp: nowSeconds(),
                    type: 'interactive',
                    interactive: {
                      type: 'product',
                      product: { catalog_id: '194836987003835', product_retailer_id: 'di9ozbzfi4' },
                    },
                  },
                ],
              },
            },
          ],
        },
      ],
    };
    const response = await app.post(payload);
    expect(response.status).toBe(200);
    await app.drain();
    const answers = sendsTo(phone).filter((s) => s.body['type'] === 'text');
    expect(answers.map((s) => (s.body['text'] as { body: string }).body)).toEqual([DEFAULT_ANSWER]);
    expect(answers[0]?.body['text']).not.toEqual({ body: UNREADABLE_ANSWER });
    const user = await app.services.data.users.findByIdentity({ waId: phone, bsuid: null });
    const stored = (await app.services.data.messages.recent(user?.id ?? '', 10)).find(
      (m) => m.waMessageId === id,
    );
    expect(stored).toMatchObject({ type: 'interactive', role: 'conversation', text: '[product] di9ozbzfi4' });
  });
});

describe('edit and revoke messages (a user edits or deletes a message they sent)', () => {
  // Meta's documented payloads: `edit.original_message_id` and the edited message in
  // `edit.message`; `revoke.original_message_id`. Neither is a new message to answer.
  it('are stored linked to the message they change, never read or answered', async () => {
    const phone = newPhone();
    const original = textMessage(phone, 'Do you have it in size M?');
    await app.post(
      notification(value({ contacts: [{ waId: phone, name: 'Sheena Nelson' }], messages: [original] })),
    );
    await app.drain();
    expect(sendsTo(phone)).toHaveLength(1);
    const receiptsBefore = app.graph.receipts().length;

    const edit = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'edit',
      edit: {
        original_message_id: original.id,
        message: { context: { id: original.id }, type: 'text', text: { body: 'Do you have it in size L?' } },
      },
    };
    const revoke = {
      from: phone,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'revoke',
      revoke: { original_message_id: original.id },
    };
    const response = await app.post(
      notification(value({ contacts: [{ waId: phone, name: 'Sheena Nelson' }], messages: [edit, revoke] })),
    );
    expect(response.status).toBe(200);
    await app.drain();

    // No "cannot read that" answer to an edit or a deletion, and no read receipt for them.
    expect(sendsTo(phone)).toHaveLength(1);
    expect(app.graph.receipts().slice(receiptsBefore)).toEqual([]);
    const messages = collectionOf(app.database.db, 'messages');
    expect(await messages.findOne({ _id: edit.id })).toMatchObject({
      type: 'edit',
      text: '[edited] Do you have it in size L?',
      relatedId: original.id,
      replyState: 'none',
      role: 'notice',
    });
    expect(await messages.findOne({ _id: revoke.id })).toMatchObject({
      type: 'revoke',
      text: '[message deleted]',
      relatedId: original.id,
      replyState: 'none',
      role: 'notice',
    });
    // The original keeps its answer; it is not answered again.
    expect(await messages.findOne({ _id: original.id })).toMatchObject({ replyState: 'sent' });
  });
});

describe('unsupported messages that only act on an earlier message', () => {
  // Meta's "Unsupported messages webhook reference" (updated Mar 20, 2026): `unsupported.type`
  // names what the user sent; a reaction, a pin or a "keep in chat" only act on a message already
  // in the chat, and edits come this way while the edit webhook is unavailable ("Edit messages
  // webhook reference": edited messages are delivered as an unsupported message type webhook).
  // A vote in a poll (`poll_update`, the reference's own example) acts on the poll: a user who
  // changes their vote twice must not get two "cannot read that" answers.
  const unsupported = (from: string, type: string) => ({
    from,
    id: wamid(),
    timestamp: nowSeconds(),
    errors: [
      {
        code: 131051,
        title: 'Message type unknown',
        message: 'Message type unknown',
        error_data: { details: 'Message type is currently not supported.' },
      },
    ],
    type: 'unsupported',
    unsupported: { type },
  });

  it('are stored and never answered; other unsupported content still gets the polite answer', async () => {
    const phone = newPhone();
    const actions = ['reaction', 'pin', 'keep_in_chat', 'edit', 'poll_update'].map((t) =>
      unsupported(phone, t),
    );
    const content = unsupported(phone, 'poll_creation');
    const receiptsBefore = app.graph.receipts().length;
    const response = await app.post(
      notification(
        value({ contacts: [{ waId: phone, name: 'Sheena Nelson' }], messages: [...actions, content] }),
      ),
    );
    expect(response.status).toBe(200);
    await app.drain();
    const answers = sendsTo(phone).map((s) => (s.body['text'] as { body: string }).body);
    expect(answers).toEqual([UNREADABLE_ANSWER]);
    const messages = collectionOf(app.database.db, 'messages');
    for (const action of actions)
      expect(await messages.findOne({ _id: action.id })).toMatchObject({
        type: 'unsupported',
        replyState: 'none',
        role: 'notice',
      });
    expect(await messages.findOne({ _id: content.id })).toMatchObject({
      type: 'unsupported',
      replyState: 'sent',
    });
    const read = app.graph
      .receipts()
      .slice(receiptsBefore)
      .map((r) => r.body['message_id']);
    expect(read).toEqual([content.id]);
  });
});

describe('a vote in a poll, as the Unsupported messages webhook reference shows it', () => {
  it('is stored as a note, not marked read and not answered', async () => {
    const phone = newPhone();
    const id = wamid();
    const fixture = readFileSync(
      join(__dirname, '..', 'fixtures', 'meta', 'unsupported-poll-update.json'),
      'utf8',
    )
      .replaceAll('16505551234', phone)
      .replace('wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=', id);
    const receiptsBefore = app.graph.receipts().length;
    const response = await app.post(JSON.parse(fixture) as unknown);
    expect(response.status).toBe(200);
    await app.drain();
    expect(sendsTo(phone)).toEqual([]);
    expect(
      app.graph
        .receipts()
        .slice(receiptsBefore)
        .map((r) => r.body['message_id']),
    ).not.toContain(id);
    expect(await collectionOf(app.database.db, 'messages').findOne({ _id: id })).toMatchObject({
      type: 'unsupported',
      text: '[unsupported: poll_update]',
      replyState: 'none',
      role: 'notice',
    });
  });
});

describe('call permission replies (Calling API: the user answers a request to call them)', () => {
  // Meta's `call_permission_reply` webhook: an interactive message answering the business's
  // call permission request, whose `response` is `accept` or `reject`.
  const reply = (from: string, response: string, extra: Record<string, unknown> = {}) => ({
    context: { from: business.display_phone_number, id: wamid() },
    from,
    id: wamid(),
    timestamp: nowSeconds(),
    type: 'interactive',
    interactive: {
      type: 'call_permission_reply',
      call_permission_reply: {
        response,
        is_permanent: false,
        expiration_timestamp: Number(nowSeconds(7 * 86_400)),
        response_source: 'user_action',
        ...extra,
      },
    },
  });

  it('are stored as a note of the answer, never read or answered (not "cannot read that")', async () => {
    const phone = newPhone();
    const accepted = reply(phone, 'accept');
    const rejected = reply(phone, 'reject', { is_permanent: true, expiration_timestamp: undefined });
    const receiptsBefore = app.graph.receipts().length;
    const response = await app.post(
      notification(
        value({ contacts: [{ waId: phone, name: 'Sheena Nelson' }], messages: [accepted, rejected] }),
      ),
    );
    expect(response.status).toBe(200);
    await app.drain();
    expect(sendsTo(phone)).toEqual([]);
    expect(app.graph.receipts().slice(receiptsBefore)).toEqual([]);
    const messages = collectionOf(app.database.db, 'messages');
    expect(await messages.findOne({ _id: accepted.id })).toMatchObject({
      type: 'interactive',
      text: '[call permission: accept]',
      role: 'notice',
      replyState: 'none',
    });
    expect(await messages.findOne({ _id: rejected.id })).toMatchObject({
      text: '[call permission: reject]',
      replyState: 'none',
    });
    // The user writes next: answered as usual, once.
    const text = textMessage(phone, 'thanks, call me tomorrow');
    await app.post(notification(value({ contacts: [{ waId: phone }], messages: [text] })));
    await app.drain();
    expect(sendsTo(phone).map((s) => (s.body['text'] as { body: string }).body)).toEqual([DEFAULT_ANSWER]);
  });
});

describe('a user with a username and no profile name (Business-scoped user IDs, 2026)', () => {
  // "Usernames can be used in lieu of profile names": a person known by their business-scoped id
  // and username alone shows under the username, not as a nameless id; a profile name, once
  // sent, wins.
  const fromUsername = (bsuid: string, profile: Record<string, string>, body: string) =>
    JSON.parse(
      readFileSync(join(__dirname, '..', 'fixtures', 'meta', 'bsuid-user.json'), 'utf8')
        .replaceAll('US.13491208655302741918', bsuid)
        .replace('wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUIyMFFrRTVSa1EzTWpNNFJEZzVRMFVB', wamid())
        .replace('1749416383', nowSeconds())
        .replace('Hi, do you ship to Spain?', body),
      (key, v: unknown) => (key === 'profile' ? profile : v),
    ) as unknown;

  it('is named by the username until a profile name comes', async () => {
    const bsuid = `US.${String(7_000_000_000 + ++seq)}`;
    const users = collectionOf(app.database.db, 'users');
    expect((await app.post(fromUsername(bsuid, { username: '@pablo.m' }, 'hello'))).status).toBe(200);
    await app.drain();
    expect(await users.findOne({ bsuid })).toMatchObject({ waId: null, name: '@pablo.m' });

    await app.post(fromUsername(bsuid, { name: 'Pablo Morales', username: '@pablo.m' }, 'again'));
    await app.drain();
    expect(await users.findOne({ bsuid })).toMatchObject({ name: 'Pablo Morales' });
  });
});
