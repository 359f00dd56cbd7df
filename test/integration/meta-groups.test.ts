// What Meta sends about groups (Groups API) and other newer webhooks, built as Meta's references
// show them and sent signed through the real webhook → ingest → reply path. The bot answers a
// person's one-to-one chat only: nothing a group carries is answered, read or made a user, and
// what it names of a person is theirs to export and erase.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_ANSWER } from '../../shared/bot/texts';
import { startTestApp, type TestApp } from '../helpers/app';
import { accepted } from '../helpers/graph-stub';
import { collectionOf } from '../helpers/raw';
import { splitByPerson } from '../../shared/whatsapp/notification';
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
const newPhone = () => `4479${String(3_000_000 + ++seq)}`;
const business = BUSINESS_METADATA;
/** Meta's example group id ("Group messages webhook reference"). */
const GROUP_ID = 'Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD';

const change = (field: string, inner: Record<string, unknown>) => ({
  object: 'whatsapp_business_account',
  entry: [
    {
      id: WABA_ID,
      changes: [{ field, value: { messaging_product: 'whatsapp', metadata: business, ...inner } }],
    },
  ],
});

const userOf = async (waId: string) => {
  const user = await app.services.data.users.findByIdentity({ waId, bsuid: null });
  if (!user) throw new Error('user not stored');
  return user;
};
const eventsText = async () =>
  JSON.stringify(
    await app.database.db
      .collection('events')
      .find({ kind: { $ne: 'audit' } })
      .toArray(),
  );

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

describe('group participants updates (Groups API webhooks, group_participants_update)', () => {
  // "Webhooks for Groups API" and "Business-scoped user IDs" (group_participants_update webhooks):
  // a business's removal lists each participant by the `input` it was given (number or BSUID); a
  // participant who leaves, or joins by invite link, by `wa_id`, `user_id` and `username`.
  it('name each participant: each one’s export holds the update, and erasing one leaves nothing of them', async () => {
    const [ana, bo, cy] = [newPhone(), newPhone(), newPhone()];
    for (const phone of [ana, bo, cy]) await app.userWrites(phone, 'hello, one to one');
    const before = app.graph.sends().length;
    const at = Number(nowSeconds());
    const response = await app.post(
      change('group_participants_update', {
        groups: [
          {
            timestamp: at,
            group_id: GROUP_ID,
            type: 'group_participants_remove',
            request_id: 'REQUEST_ID',
            removed_participants: [{ input: ana }, { input: bo }],
            initiated_by: 'business',
          },
          {
            timestamp: at,
            group_id: GROUP_ID,
            type: 'group_participants_add',
            reason: 'invite_link',
            added_participants: [{ wa_id: cy, user_id: 'US.13491208655302741918', username: '@cy' }],
          },
        ],
      }),
    );
    expect(response.status).toBe(200);
    expect(response.jobs).toEqual([]);
    await app.drain();
    expect(app.graph.sends().length).toBe(before);

    for (const [phone, others] of [
      [ana, [bo, cy]],
      [bo, [ana, cy]],
      [cy, [ana, bo]],
    ] as const) {
      const exported = JSON.stringify(
        (await app.services.data.personal.exportUser((await userOf(phone)).id))?.events,
      );
      expect(exported).toContain(GROUP_ID);
      expect(exported).toContain(phone);
      for (const other of others) expect(exported).not.toContain(other);
    }

    await app.services.data.personal.eraseUser((await userOf(bo)).id);
    const left = await eventsText();
    expect(left).not.toContain(bo);
    expect(left).toContain(ana);
    expect(left).toContain(cy);
  });

  it('kept as poisoned, are split the same way: each piece names one participant', () => {
    const [ana, bo] = [newPhone(), newPhone()];
    const payload = change('group_participants_update', {
      groups: [
        {
          timestamp: Number(nowSeconds()),
          group_id: GROUP_ID,
          type: 'group_participants_remove',
          request_id: 'REQUEST_ID',
          removed_participants: [{ input: ana }],
          failed_participants: [
            { input: bo, errors: [{ code: 131009, title: 'Parameter value is not valid' }] },
          ],
          initiated_by: 'business',
        },
      ],
    });
    const pieces = splitByPerson(payload, new Date());
    expect(pieces.map((p) => p.identifier).sort()).toEqual([ana, bo].sort());
    for (const piece of pieces) {
      const json = JSON.stringify(piece.payload);
      expect(json).toContain(GROUP_ID);
      expect(json).not.toContain(piece.identifier === ana ? bo : ana);
    }
  });
});

describe('messages and statuses of a group (Group messages webhook reference, Group messaging)', () => {
  it('a participant’s group text and unsupported message are never answered or read; their own chat is', async () => {
    const dee = newPhone();
    const stranger = newPhone();
    const before = app.graph.requests.length;
    const inGroup = textMessage(dee, 'What do you all think about this?', { group_id: GROUP_ID });
    // "Receive unsupported group message webhook sample": no `unsupported` object, Meta's error.
    const unsupported = {
      from: stranger,
      group_id: GROUP_ID,
      id: wamid(),
      timestamp: nowSeconds(),
      errors: [
        {
          code: 130501,
          message: 'Message type is not currently supported',
          title: 'Unsupported message type',
          error_data: { details: 'Message type is not currently supported' },
        },
      ],
      type: 'unsupported',
    };
    const direct = textMessage(dee, 'and this is just for you');
    const response = await app.post(
      notification(
        value({
          contacts: [
            { waId: dee, name: 'Dee' },
            { waId: stranger, name: 'Stranger' },
          ],
          messages: [inGroup, unsupported, direct],
        }),
      ),
    );
    expect(response.status).toBe(200);
    await app.drain();
    const requests = app.graph.requests.slice(before);
    // One read receipt and one answer, both for the one-to-one message.
    expect(requests.filter((r) => r.body['status'] === 'read').map((r) => r.body['message_id'])).toEqual([
      direct.id,
    ]);
    expect(requests.filter((r) => r.body['type'] === 'text').map((r) => r.body['to'])).toEqual([dee]);
    const messages = collectionOf(app.database.db, 'messages');
    expect(await messages.countDocuments({ _id: { $in: [inGroup.id, unsupported.id] } })).toBe(0);
    // A participant who never wrote one to one is no user.
    expect(await app.services.data.users.findByIdentity({ waId: stranger, bsuid: null })).toBeNull();
    expect(await eventsText()).toContain(unsupported.id);
  });

  it('a group message from a participant known by a username alone, or written with a leading +, is never answered', async () => {
    const max = newPhone();
    const before = app.graph.requests.length;
    const users = await app.database.db.collection('users').countDocuments();
    // Business-scoped user IDs: a participant who adopted a username comes without `from`.
    const byUsername = {
      from_user_id: 'US.1000000000000000003',
      group_id: GROUP_ID,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'text',
      text: { body: 'hi all' },
    };
    // Group messages webhook reference: its example user phone number is written "+16505551234".
    const withPlus = textMessage(`+${max}`, 'hello group', { group_id: GROUP_ID });
    const response = await app.post(
      notification({
        ...value({ messages: [byUsername, withPlus] }),
        contacts: [
          { profile: { username: '@lee' }, user_id: 'US.1000000000000000003' },
          { profile: { name: 'Max' }, wa_id: max },
        ],
      }),
    );
    expect(response.status).toBe(200);
    expect(response.jobs).toEqual([]);
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    expect(await app.database.db.collection('users').countDocuments()).toBe(users);
  });

  it('aggregated statuses of a message to a group, with their participants, change nothing and answer no one', async () => {
    // "Business-scoped user IDs", group messages webhooks: one webhook per message and status
    // type, a status per participant, and (delivered, read) the participants as contacts.
    const [eve, fay] = [newPhone(), newPhone()];
    const sent = wamid();
    const groupStatus = (participant: string, bsuid: string, status: string) => ({
      id: sent,
      status,
      timestamp: nowSeconds(),
      recipient_id: GROUP_ID,
      recipient_type: 'group',
      recipient_participant_id: participant,
      recipient_participant_user_id: bsuid,
      pricing: { billable: true, pricing_model: 'PMP', type: 'regular', category: 'marketing_lite' },
    });
    const before = app.graph.requests.length;
    const users = await app.database.db.collection('users').countDocuments();
    const response = await app.post(
      notification({
        ...value({
          statuses: [
            groupStatus(eve, 'US.1000000000000000001', 'read'),
            groupStatus(fay, 'US.1000000000000000002', 'read'),
          ],
        }),
        contacts: [
          { profile: { name: 'Eve', username: '@eve' }, wa_id: eve, user_id: 'US.1000000000000000001' },
          { profile: { name: 'Fay' }, wa_id: fay, user_id: 'US.1000000000000000002' },
        ],
      }),
    );
    expect(response.status).toBe(200);
    expect(response.jobs).toEqual([]);
    // Group message failed example: Meta's placeholder writes the code as a string.
    const failed = await app.post(
      notification(
        value({
          statuses: [
            {
              id: wamid(),
              recipient_id: GROUP_ID,
              recipient_type: 'group',
              status: 'failed',
              timestamp: nowSeconds(),
              errors: [
                {
                  code: '131026',
                  title: 'Message undeliverable',
                  message: 'Message undeliverable',
                  error_data: { details: 'Message undeliverable' },
                  href: '/docs/whatsapp/cloud-api/support/error-codes/',
                },
              ],
            },
          ],
        }),
      ),
    );
    expect(failed.status).toBe(200);
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    expect(await app.database.db.collection('users').countDocuments()).toBe(users);
  });

  it('group lifecycle, settings and status updates are archived and answer no one', async () => {
    const before = app.graph.requests.length;
    const at = Number(nowSeconds());
    for (const [field, group] of [
      [
        'group_lifecycle_update',
        {
          timestamp: at,
          group_id: GROUP_ID,
          type: 'group_create',
          request_id: 'REQUEST_ID',
          subject: 'test invite link',
          invite_link: 'https://chat.whatsapp.com/LINK_ID',
          join_approval_mode: 'auto_approve',
        },
      ],
      [
        'group_settings_update',
        {
          timestamp: at,
          group_id: GROUP_ID,
          type: 'group_settings_update',
          request_id: 'REQUEST_ID',
          group_subject: { text: 'New subject', update_successful: true },
        },
      ],
      ['group_status_update', { timestamp: at, group_id: GROUP_ID, type: 'group_suspend' }],
    ] as const) {
      const response = await app.post(change(field, { groups: [group] }));
      expect(response.status).toBe(200);
      expect(response.jobs).toEqual([]);
    }
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    for (const field of ['group_lifecycle_update', 'group_settings_update', 'group_status_update'])
      expect(await app.database.db.collection('events').countDocuments({ reason: `field ${field}` })).toBe(1);
  });
});

describe('statuses with per-message pricing (2025–2026)', () => {
  it('are applied without a conversation, whatever the pricing category and type', async () => {
    const gus = newPhone();
    const out = `wamid.out.pricing.${Date.now()}`;
    app.graph.sendResponses.push(accepted(out));
    await app.userWrites(gus, 'a question');
    const answer = await collectionOf(app.database.db, 'messages').findOne({ waMessageId: out });
    expect(answer).toMatchObject({ direction: 'outbound', text: DEFAULT_ANSWER });
    const priced = (status: string, category: string, type: string) => ({
      id: out,
      status,
      timestamp: nowSeconds(),
      recipient_id: gus,
      pricing: { billable: type === 'regular', pricing_model: 'PMP', type, category },
    });
    await app.post(
      notification(
        value({
          statuses: [
            priced('sent', 'authentication_international', 'regular'),
            priced('delivered', 'marketing_lite', 'free_customer_service'),
          ],
        }),
      ),
    );
    await app.drain();
    expect(await collectionOf(app.database.db, 'messages').findOne({ waMessageId: out })).toMatchObject({
      status: 'delivered',
    });
  });
});

describe('a failed status whose error code is written as text', () => {
  // Meta's Groups API examples write it quoted ("code": "<ERROR_CODE>", Group messaging, "Group
  // message failed example"): the failure keeps its code, as for a numeric one.
  it('is applied with its code and details', async () => {
    const hal = newPhone();
    const out = `wamid.out.code.${Date.now()}`;
    app.graph.sendResponses.push(accepted(out));
    await app.userWrites(hal, 'another question');
    await app.post(
      notification(
        value({
          statuses: [
            {
              id: out,
              status: 'failed',
              timestamp: nowSeconds(),
              recipient_id: hal,
              errors: [
                {
                  code: '131026',
                  title: 'Message undeliverable',
                  message: 'Message undeliverable',
                  error_data: { details: 'Message Undeliverable.' },
                  href: '/documentation/business-messaging/whatsapp/support/error-codes',
                },
              ],
            },
          ],
        }),
      ),
    );
    await app.drain();
    expect(await collectionOf(app.database.db, 'messages').findOne({ waMessageId: out })).toMatchObject({
      status: 'failed',
      error: { code: 131026, title: 'Message undeliverable', detail: 'Message Undeliverable.' },
    });
  });
});

describe('what the business itself sent, delivered among the messages', () => {
  // An echo (smb_message_echoes webhook reference: `from` the business's display number, `to` the
  // user) that a relay or an outside client delivers on the `messages` field: the business's own
  // words are no one's message to answer, and its number is no user.
  it('is archived under the person it went to, never answered, and makes no user', async () => {
    const ivy = newPhone();
    await app.userWrites(ivy, 'hi there');
    const before = app.graph.requests.length;
    const echo = {
      from: business.display_phone_number,
      to: ivy,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'text',
      text: { body: 'typed in the WhatsApp Business app' },
    };
    const response = await app.post(notification(value({ messages: [echo] })));
    expect(response.status).toBe(200);
    expect(response.jobs).toEqual([]);
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    expect(
      await app.services.data.users.findByIdentity({ waId: business.display_phone_number, bsuid: null }),
    ).toBeNull();
    const exported = JSON.stringify(
      (await app.services.data.personal.exportUser((await userOf(ivy)).id))?.events,
    );
    expect(exported).toContain('typed in the WhatsApp Business app');
  });
});

describe('a security code change (system message customer_identity_changed)', () => {
  it('is kept on the user, never answered or read', async () => {
    const jo = newPhone();
    await app.userWrites(jo, 'hello');
    const user = await userOf(jo);
    const before = app.graph.requests.length;
    const message = {
      from: jo,
      id: wamid(),
      timestamp: nowSeconds(),
      type: 'system',
      system: {
        body: 'User’s security code changed',
        customer: jo,
        identity: 'DF2lS5v2W6x=',
        type: 'customer_identity_changed',
      },
      identity: { acknowledged: true, created_timestamp: Number(nowSeconds()), hash: 'DF2lS5v2W6x=' },
    };
    const response = await app.post(notification(value({ messages: [message] })));
    expect(response.status).toBe(200);
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    expect(await userOf(jo)).toMatchObject({ id: user.id, waId: jo });
    expect(
      await app.database.db.collection('events').findOne({ kind: 'system', userId: user.id }),
    ).not.toBeNull();
  });
});

describe('calls, marketing preferences and a played voice answer (Calling API, user_preferences, statuses)', () => {
  it('are archived under the person they name and answer no one', async () => {
    const kim = newPhone();
    await app.userWrites(kim, 'call me maybe');
    const user = await userOf(kim);
    const before = app.graph.requests.length;
    const at = nowSeconds();
    // Calling API, "User-initiated calls": connect and terminate on the `calls` field.
    const call = (event: string, extra: Record<string, unknown>) =>
      change('calls', {
        contacts: [{ profile: { name: 'Kim' }, wa_id: kim }],
        calls: [
          {
            id: 'wacid.HBgLMTYzMTU1NTM2MDEVAgARGBIyMEMwQjI1QjM2ODlBRjZERQA=',
            to: business.display_phone_number,
            from: kim,
            event,
            timestamp: at,
            direction: 'USER_INITIATED',
            ...extra,
          },
        ],
      });
    // user_preferences webhook reference: the user stops marketing messages.
    const preferences = change('user_preferences', {
      contacts: [{ profile: { name: 'Kim' }, wa_id: kim }],
      user_preferences: [
        {
          wa_id: kim,
          detail: 'User requested to stop marketing messages',
          category: 'marketing_messages',
          value: 'stop',
          timestamp: Number(at),
        },
      ],
    });
    for (const payload of [
      call('connect', { session: { sdp_type: 'offer', sdp: 'v=0' } }),
      call('terminate', { status: 'COMPLETED', start_time: at, end_time: at, duration: 0 }),
      preferences,
      notification(
        value({ statuses: [{ id: wamid(), status: 'played', timestamp: at, recipient_id: kim }] }),
      ),
    ]) {
      const response = await app.post(payload);
      expect(response.status).toBe(200);
      expect(response.jobs).toEqual([]);
    }
    await app.drain();
    expect(app.graph.requests.length).toBe(before);
    expect(await userOf(kim)).toMatchObject({ id: user.id, optedOut: false });
    const exported = (await app.services.data.personal.exportUser(user.id))?.events ?? [];
    const reasons = exported.map((e) => e.reason);
    expect(reasons.filter((r) => r === 'field calls').length).toBeGreaterThanOrEqual(2);
    expect(reasons).toContain('field user_preferences');
    expect(reasons).toContain('status played');
  });
});
