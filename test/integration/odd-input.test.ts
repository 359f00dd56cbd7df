// Authentic but odd notifications never wedge the bot: every one is ingested without an error
// (the webhook answers 200 and archives what it cannot understand), the well-formed messages of a
// batch are still stored and answered once, and nothing unbounded is stored. The named cases come
// from an adversarial review; the property-based test throws generated ones at the same path.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { spillBody } from '../../shared/bot/jobs';
import { processReplyJob } from '../../shared/bot/reply';
import { createLogger } from '../../shared/log';
import { startTestApp, type TestApp } from '../helpers/app';
import {
  notification,
  nowSeconds,
  status,
  textMessage,
  value,
  wamid,
  PHONE_NUMBER_ID,
} from '../helpers/meta';

let app: TestApp;
const log = createLogger({ log: () => undefined, warn: () => undefined, error: () => undefined });
let seq = 0;
const newPhone = () => `3361${String(1_000_000 + ++seq)}`;
/** Every stored document stays far below Cosmos DB's 2 MB. */
const MAX_DOC_BYTES = 512 * 1024;

beforeAll(async () => {
  app = await startTestApp();
});
afterAll(async () => {
  await app.close();
});

const raw = (name: string) => app.database.db.collection(name);

async function largestDocument(): Promise<number> {
  let largest = 0;
  for (const name of ['users', 'messages', 'events', 'stats']) {
    for (const doc of await raw(name).find({}).toArray())
      largest = Math.max(largest, JSON.stringify(doc).length);
  }
  return largest;
}

/** Ingests, then answers; returns the ids of the messages that got a reply job. */
/** Ingests and runs the reply jobs; returns the messages first stored (a redelivery's job only recounts). */
async function deliver(payload: unknown): Promise<string[]> {
  const { jobs } = await ingestNotification(app.services, payload, log);
  for (const job of jobs) await processReplyJob(app.services, job, log);
  return jobs.flatMap((j) => (j.kind === 'message' && !j.recount ? [j.messageId] : []));
}

/** A batch: one good text message next to an odd item; the good one must be stored and answered. */
async function besideGood(odd: unknown): Promise<void> {
  const from = newPhone();
  const good = textMessage(from, 'a well-formed message');
  const answered = await deliver(notification(value({ contacts: [{ waId: from }], messages: [odd, good] })));
  expect(answered).toContain(good.id);
  expect(await raw('messages').findOne({ _id: good.id } as Record<string, unknown>)).toMatchObject({
    replyState: 'sent',
  });
}

function deep(levels: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < levels; i++) v = [v];
  return v;
}

describe('odd but authentic input', () => {
  it.each([
    ['a key that starts with $', { ...textMessage('33611111111', 'x'), $where: 'boom' }],
    ['a key with a dot', { ...textMessage('33611111112', 'x'), 'a.b': 1 }],
    ['a NUL byte in a key', { ...textMessage('33611111113', 'x'), 'bad\u0000key': 1 }],
    ['an object as the message id', { ...textMessage('33611111114', 'x'), id: { $gt: '' } }],
    ['a nested array', { ...textMessage('33611111115', 'x'), extra: [[[[1]]], [[2]]] }],
    ['nesting 20,000 levels deep', { ...textMessage('33611111116', 'x'), extra: deep(20_000) }],
    [
      'a timestamp beyond the range of a date',
      { ...textMessage('33611111117', 'x'), timestamp: '999999999999' },
    ],
    ['a sender of 10,000 digits', { ...textMessage('1'.repeat(10_000), 'x') }],
    ['a text of 300,000 characters', textMessage('33611111118', 'y'.repeat(300_000))],
  ])('%s: nothing fails, the other message of the batch is answered', async (_label, odd) => {
    await besideGood(odd);
    expect(await largestDocument()).toBeLessThan(MAX_DOC_BYTES);
  });

  it.each([
    ['contacts', 'x'],
    ['contacts', { wa_id: '33600000001', profile: { name: 'Not a list' } }],
    ['statuses', { id: 'wamid.odd', status: 'read', timestamp: '1', recipient_id: '33600000002' }],
    ['errors', { code: 131000, title: 'Something went wrong' }],
  ])(
    'a value whose %s part is not a list: the message next to it is stored and answered once, the part archived whole',
    async (part, odd) => {
      const from = newPhone();
      const good = textMessage(from, 'a well-formed message');
      const payload = notification({
        ...value({ contacts: [{ waId: from }], messages: [good] }),
        [part]: odd,
      });
      expect(await deliver(payload)).toEqual([good.id]);
      expect(await deliver(payload)).toEqual([]);
      expect(await raw('messages').countDocuments({ _id: good.id } as Record<string, unknown>)).toBe(1);
      expect(await raw('messages').countDocuments({ relatedId: good.id, direction: 'outbound' })).toBe(1);
      const events = await raw('events')
        .find({ kind: 'unhandled_value', reason: `malformed ${part}` })
        .toArray();
      expect(events.map((e) => JSON.parse(String(e['payloadJson'])) as unknown)).toContainEqual({
        phoneNumberId: PHONE_NUMBER_ID,
        [part]: odd,
      });
    },
  );

  it.each([
    ['a context whose product ids are numbers', { context: { referred_product: { catalog_id: 123 } } }],
    ['a forwarded flag written as text', { context: { forwarded: 'true' } }],
    ['an error without a code', { errors: [{ title: 'Something odd' }] }],
    ['a referral whose source id is a number', { referral: { source_id: 12345, source_type: 'ad' } }],
  ])('%s: the message is still read as what it is, stored, answered once', async (_label, extra) => {
    const from = newPhone();
    const message = textMessage(from, 'the words themselves', extra);
    const payload = notification(value({ contacts: [{ waId: from }], messages: [message] }));
    expect(await deliver(payload)).toEqual([message.id]);
    expect(await deliver(payload)).toEqual([]);
    const stored = await raw('messages').findOne({ _id: message.id } as Record<string, unknown>);
    expect(stored).toMatchObject({ type: 'text', text: 'the words themselves', replyState: 'sent' });
    expect(JSON.parse(String(stored?.['rawJson']))).toMatchObject(extra);
    const archived = await raw('events').find({ kind: 'unhandled_message' }).toArray();
    expect(archived.filter((e) => String(e['payloadJson']).includes(message.id))).toEqual([]);
  });

  it.each([
    // Reactions, edits and deletions act on an earlier message ("Reaction messages", "Edit
    // messages" and "Revoke messages" webhook references): never answered nor read, also when
    // the object naming that message is odd (a misspelt `messsage_id`, say).
    ['reaction', { reaction: { messsage_id: 'wamid.earlier', emoji: '\u{1F44D}' } }],
    ['edit', { edit: { message: { type: 'text', text: { body: 'new words' } } } }],
    ['revoke', { revoke: {} }],
  ])('a %s whose body does not match its type is stored, never read or answered', async (type, body) => {
    const from = newPhone();
    const message = { from, id: wamid(), timestamp: nowSeconds(), type, ...body };
    const before = app.graph.requests.length;
    await deliver(notification(value({ contacts: [{ waId: from }], messages: [message] })));
    expect(await raw('messages').findOne({ _id: message.id } as Record<string, unknown>)).toMatchObject({
      type,
      replyState: 'none',
    });
    expect(app.graph.requests.slice(before)).toEqual([]);
  });

  it('odd items of the contacts list are archived; the sender still gets the name of their own contact', async () => {
    const from = newPhone();
    const good = textMessage(from, 'my contact is the last one');
    const contacts = [null, 5, { wa_id: 5 }, { wa_id: from, profile: { name: 'Right Person' } }];
    expect(await deliver(notification({ ...value({ messages: [good] }), contacts }))).toEqual([good.id]);
    const user = await app.services.data.users.findByIdentity({ waId: from, bsuid: null });
    expect(user?.name).toBe('Right Person');
    const archived = await raw('events')
      .find({ kind: 'unhandled_contact', reason: 'malformed contact' })
      .toArray();
    expect(archived.map((e) => e['payloadJson'])).toEqual(
      expect.arrayContaining(['null', '5', '{"wa_id":5}']),
    );
  });

  it('a message written in a group is kept under its sender and not answered; a group status changes nothing', async () => {
    const from = newPhone();
    const groupId = 'Y2FwaV9ncm91cDoxNzA1NTU1MDEzOToxMjAzNjM0MDQ2OTQyMzM4MjAZD';
    const inGroup = textMessage(from, 'What do you all think about this?', { group_id: groupId });
    const direct = textMessage(from, 'and this one is just for the bot');
    const groupStatus = status(wamid(), 'sent', groupId, { recipient_type: 'group' });
    const before = app.graph.sends().length;
    const answered = await deliver(
      notification(
        value({
          contacts: [{ waId: from, name: 'Sheena' }],
          messages: [inGroup, direct],
          statuses: [groupStatus],
        }),
      ),
    );
    expect(answered).toEqual([direct.id]);
    expect(await raw('messages').findOne({ _id: inGroup.id } as Record<string, unknown>)).toBeNull();
    expect(await raw('events').findOne({ kind: 'group_message' })).toMatchObject({
      subject: await app.services.data.events.subjectOf(from),
    });
    expect(
      app.graph
        .sends()
        .slice(before)
        .map((s) => s.body['to']),
    ).toEqual([from]);
  });

  it.each<[string, Record<string, unknown>, Record<string, unknown>?]>([
    // Meta's older webhook syntax writes these placeholders unquoted (`"display_phone_number":
    // PHONE_NUMBER`, "Webhooks components"); only the business's number id is needed to answer.
    ['a display number written as a JSON number', { display_phone_number: 15550783881 }],
    ['no display number', {}],
    [
      'a messaging product that is not text',
      { display_phone_number: '15550783881' },
      { messaging_product: 1 },
    ],
  ])(
    'a value with %s is still read: its message stored and answered',
    async (_label, metadata, head = {}) => {
      const from = newPhone();
      const good = textMessage(from, 'the business number id is all it takes');
      const payload = notification({
        ...value({ contacts: [{ waId: from }], messages: [good] }),
        metadata: { ...metadata, phone_number_id: PHONE_NUMBER_ID },
        ...head,
      });
      expect(await deliver(payload)).toEqual([good.id]);
      expect(await raw('messages').findOne({ _id: good.id } as Record<string, unknown>)).toMatchObject({
        replyState: 'sent',
      });
    },
  );

  it.each<[string, Record<string, unknown>]>([
    // The entry's own fields name the business account and the time of the batch (templates'
    // webhooks give `time` as an Integer): the app reads neither, so an odd one costs nothing.
    ['an entry id written as a JSON number', { id: 102290129340398 }],
    ['an entry time written as text', { id: '102290129340398', time: '1739321024' }],
  ])('%s: its messages are still stored and answered', async (_label, entry) => {
    const from = newPhone();
    const good = textMessage(from, 'the entry is only an envelope');
    const payload = {
      object: 'whatsapp_business_account',
      entry: [
        {
          ...entry,
          changes: [{ field: 'messages', value: value({ contacts: [{ waId: from }], messages: [good] }) }],
        },
      ],
    };
    expect(await deliver(payload)).toEqual([good.id]);
    expect(await raw('events').countDocuments({ reason: 'malformed entry' })).toBe(0);
  });

  it('a value whose messages part is not a list: its statuses are still applied, the part archived', async () => {
    const from = newPhone();
    const statusId = wamid();
    const payload = notification({
      ...value({
        statuses: [{ id: statusId, status: 'delivered', timestamp: nowSeconds(), recipient_id: from }],
      }),
      messages: textMessage(from, 'one message, not a list of them'),
    });
    expect(await deliver(payload)).toEqual([]);
    expect(await raw('messages').findOne({ _id: statusId } as Record<string, unknown>)).toMatchObject({
      status: 'delivered',
    });
    expect(
      await raw('events').countDocuments({ kind: 'unhandled_value', reason: 'malformed messages' }),
    ).toBeGreaterThan(0);
    // The number is found in the odd part, so erase and export find it.
    expect(await raw('events').findOne({ reason: 'malformed messages' })).toMatchObject({
      subject: await app.services.data.events.subjectOf(from),
    });
  });

  it('a part of a messages value the bot does not read (user_actions: a marketing link click) is archived, one item per element, under the person it names', async () => {
    const from = newPhone();
    const good = textMessage(from, 'a well-formed message');
    // As Meta documents it ("Track click events"): delivered on the messages field, with no message.
    const click = {
      action_type: 'marketing_messages_link_click',
      timestamp: nowSeconds(),
      marketing_messages_link_click_data: {
        click_component: 'cta',
        product_id: 'sku_id',
        click_id: 'click_id',
        tracking_token: 'example_token',
      },
    };
    const clickOf = { ...click, wa_id: from };
    const payload = notification({
      ...value({ contacts: [{ waId: from }], messages: [good] }),
      user_actions: [click, clickOf],
    });
    expect(await deliver(payload)).toEqual([good.id]);
    const archived = await raw('events')
      .find({ kind: 'unhandled_value', reason: 'part user_actions' })
      .toArray();
    expect(archived.map((e) => JSON.parse(String(e['payloadJson'])) as unknown)).toEqual(
      expect.arrayContaining([
        { phoneNumberId: PHONE_NUMBER_ID, user_actions: [click] },
        { phoneNumberId: PHONE_NUMBER_ID, user_actions: [clickOf] },
      ]),
    );
    // The one that names the person is theirs: erase and export find it.
    const subject = await app.services.data.events.subjectOf(from);
    expect(archived.filter((e) => String(e['payloadJson']).includes(from)).map((e) => e['subject'])).toEqual([
      subject,
    ]);
    // A value holding only such a part (Meta's own example) is archived too.
    const alone = { ...click, timestamp: nowSeconds(1) };
    expect(await deliver(notification({ ...value({}), user_actions: [alone] }))).toEqual([]);
    const kept = await raw('events').find({ reason: 'part user_actions' }).toArray();
    expect(kept.map((e) => JSON.parse(String(e['payloadJson'])) as unknown)).toContainEqual({
      phoneNumberId: PHONE_NUMBER_ID,
      user_actions: [alone],
    });
  });

  it("odd billing details or errors on a status never cost the status: a failure keeps Meta's readable error", async () => {
    const from = newPhone();
    const [delivered, failed] = [wamid(), wamid()];
    const statuses = [
      {
        id: delivered,
        status: 'delivered',
        timestamp: nowSeconds(),
        recipient_id: from,
        pricing: { billable: 'yes', category: ['service'] },
        conversation: 'not an object',
      },
      {
        id: failed,
        status: 'failed',
        timestamp: nowSeconds(),
        recipient_id: from,
        errors: [{ code: 'not a code' }, { code: 131026, title: 'Message undeliverable' }],
      },
    ];
    expect(await deliver(notification(value({ statuses })))).toEqual([]);
    expect(await raw('messages').findOne({ _id: delivered } as Record<string, unknown>)).toMatchObject({
      status: 'delivered',
    });
    expect(await raw('messages').findOne({ _id: failed } as Record<string, unknown>)).toMatchObject({
      status: 'failed',
      error: { code: 131026, title: 'Message undeliverable' },
    });
    expect(await raw('events').countDocuments({ reason: 'malformed status' })).toBe(0);
  });

  it('a contact for another number gives the sender neither its name nor its identity', async () => {
    const [from, other] = [newPhone(), newPhone()];
    const good = textMessage(from, 'which contact is mine?');
    expect(
      await deliver(
        notification(value({ contacts: [{ waId: other, name: 'Wrong Person' }], messages: [good] })),
      ),
    ).toEqual([good.id]);
    const user = await app.services.data.users.findByIdentity({ waId: from, bsuid: null });
    expect(user?.name).toBeNull();

    const next = newPhone();
    const bsuid = `US.${next}`;
    await deliver(
      notification(
        value({ contacts: [{ bsuid, name: 'Someone Else' }], messages: [textMessage(next, 'hi')] }),
      ),
    );
    const second = await app.services.data.users.findByIdentity({ waId: next, bsuid: null });
    expect(second).toMatchObject({ name: null, bsuid: null });
    // The contact that does name the sender still gives its name.
    const third = newPhone();
    await deliver(
      notification(
        value({
          contacts: [
            { waId: other, name: 'Wrong Person' },
            { waId: third, name: 'Right Person' },
          ],
          messages: [textMessage(third, 'hello')],
        }),
      ),
    );
    expect((await app.services.data.users.findByIdentity({ waId: third, bsuid: null }))?.name).toBe(
      'Right Person',
    );
  });

  it('business-scoped ids of the longest form Meta gives (country code, period, 128 characters; a parent id with ENT.) are stored and answered', async () => {
    // Meta: a BSUID is an ISO 3166 alpha-2 country code, a period, and up to 128 alphanumeric
    // characters; a parent BSUID has ENT. after the country code.
    for (const bsuid of [`BR.${'7'.repeat(128)}`, `US.ENT.${'8'.repeat(128)}`]) {
      const message = {
        from_user_id: bsuid,
        id: wamid(),
        timestamp: nowSeconds(),
        type: 'text',
        text: { body: 'hello from a username' },
      };
      const payload = notification(value({ contacts: [{ bsuid, name: 'Long Id' }], messages: [message] }));
      expect(await deliver(payload)).toEqual([message.id]);
      expect(await app.services.data.users.findByIdentity({ waId: null, bsuid })).toMatchObject({
        bsuid,
        name: 'Long Id',
      });
      expect(app.graph.sends().filter((s) => s.body['recipient'] === bsuid)).toHaveLength(1);
    }
    expect(await largestDocument()).toBeLessThan(MAX_DOC_BYTES);
  });

  it('a timestamp far in the future does not pin the user to the top of the lists', async () => {
    const from = newPhone();
    await deliver(
      notification(
        value({
          contacts: [{ waId: from }],
          messages: [{ ...textMessage(from, 'future'), timestamp: String(4_000_000_000) }],
        }),
      ),
    );
    const user = await app.services.data.users.findByIdentity({ waId: from, bsuid: null });
    expect(user?.lastMessageAt?.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it('a sender of 5,000 digits stores no quadratic search keys', async () => {
    const from = '7'.repeat(5_000);
    await deliver(
      notification(value({ contacts: [{ waId: from }], messages: [textMessage(from, 'long number')] })),
    );
    expect(await raw('users').countDocuments({ waId: from })).toBe(0);
    expect(await raw('events').countDocuments({ reason: 'sender out of bounds' })).toBeGreaterThan(0);
  });

  it('1,000 statuses for unknown messages are applied quickly, dated, and bounded', async () => {
    const statuses = Array.from({ length: 1_000 }, () => ({
      id: wamid(),
      status: 'delivered',
      timestamp: nowSeconds(),
      recipient_id: '33600000000',
    }));
    const started = Date.now();
    await deliver(notification(value({ statuses })));
    const placeholders = await raw('messages')
      .find({ _id: { $in: statuses.map((s) => s.id) } } as Record<string, unknown>)
      .toArray();
    expect(placeholders).toHaveLength(1_000);
    // Placeholders carry the time of their status, so retention removes them too.
    expect(placeholders.every((p) => p['createdAt'] instanceof Date)).toBe(true);
    process.stderr.write(`odd-input: 1,000 unknown statuses in ${Date.now() - started} ms\n`);
  }, 300_000);

  it('a spilled body that is not JSON is archived and its spill removed, as an inbound item that is not JSON is', async () => {
    // replay-poison spills a kept piece over 48 KiB, and keeps what was not JSON whole: put back,
    // it must not fail ingest on every attempt (and land in inbound-poison again, for ever).
    const text = `not JSON ${'\ufffd'.repeat(20_000)}`;
    const spills = app.services.data.spills;
    const reference = await spillBody(spills, Buffer.from(text, 'utf8'));
    expect(await app.ingest(reference)).toEqual([]);
    expect(await spills.take(reference.spill)).toBeNull();
    const archived = await raw('events')
      .find({ kind: 'unhandled_notification', reason: 'malformed envelope' })
      .toArray();
    expect(archived.map((e) => JSON.parse(String(e['payloadJson'])) as unknown)).toContainEqual(text);
    // Handed over again: its spill is gone, nothing is archived twice.
    expect(await app.ingest(reference)).toEqual([]);
    expect(
      await raw('events').countDocuments({ kind: 'unhandled_notification', reason: 'malformed envelope' }),
    ).toBe(archived.length);
  });
});

// Odd values for a field: what a signed but surprising notification may carry.
const oddValue = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.constantFrom('', '$gt', 'a.b', '\u0000', '999999999999', '-1', '1e400', 'wamid.' + 'x'.repeat(300)),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.dictionary(fc.constantFrom('$a', 'a.b', 'x\u0000', 'id', 'type'), fc.string({ maxLength: 5 }), {
    maxKeys: 3,
  }),
  fc.array(fc.oneof(fc.string({ maxLength: 5 }), fc.integer()), { maxLength: 3 }),
);

/** A message whose every field may be replaced by an odd value or dropped. */
const oddMessage = fc
  .record({
    from: fc.oneof(fc.constant(undefined), oddValue, fc.constant('33699999999')),
    id: fc.oneof(oddValue, fc.constant('odd')),
    timestamp: fc.oneof(oddValue, fc.constant(nowSeconds())),
    type: fc.oneof(
      oddValue,
      fc.constantFrom('text', 'image', 'reaction', 'system', 'location', 'unsupported'),
    ),
    text: fc.oneof(oddValue, fc.record({ body: oddValue })),
    extra: oddValue,
  })
  .map((m) => ({ ...m, id: m.id === 'odd' ? wamid() : m.id }));

const oddNotification = fc.record({
  object: fc.oneof(fc.constant('whatsapp_business_account'), oddValue),
  field: fc.oneof(fc.constant('messages'), oddValue),
  phoneNumberId: fc.oneof(fc.constant(PHONE_NUMBER_ID), oddValue),
  messages: fc.array(oddMessage, { maxLength: 4 }),
  statuses: fc.array(
    fc.record({
      id: oddValue,
      status: fc.oneof(oddValue, fc.constant('read')),
      timestamp: oddValue,
      recipient_id: oddValue,
    }),
    { maxLength: 3 },
  ),
  contacts: fc.oneof(
    oddValue,
    fc.array(fc.record({ wa_id: oddValue, profile: fc.record({ name: oddValue }) }), { maxLength: 2 }),
  ),
});

describe('generated odd notifications (property-based)', () => {
  it('never fail, store and answer every well-formed message once, store nothing unbounded', async () => {
    const seed = Number(process.env['FC_SEED'] ?? Date.now() % 1_000_000);
    process.stderr.write(`odd-input: fast-check seed ${seed} (FC_SEED=${seed} to replay)\n`);
    await fc.assert(
      fc.asyncProperty(oddNotification, async (n) => {
        const from = newPhone();
        const good = textMessage(from, 'the good one');
        const payload = {
          object: n.object,
          entry: [
            {
              id: 'WABA',
              changes: [
                {
                  field: n.field,
                  value: {
                    messaging_product: 'whatsapp',
                    metadata: { phone_number_id: n.phoneNumberId },
                    contacts: n.contacts,
                    messages: n.messages,
                    statuses: n.statuses,
                  },
                },
                { field: 'messages', value: value({ contacts: [{ waId: from }], messages: [good] }) },
              ],
            },
          ],
        };
        const first = await deliver(payload);
        // A redelivery stores nothing new and answers nothing again.
        const sendsBefore = app.graph.sends().length;
        await deliver(payload);
        expect(app.graph.sends().length).toBe(sendsBefore);
        if (n.object === 'whatsapp_business_account') {
          expect(first).toContain(good.id);
          expect(await raw('messages').countDocuments({ _id: good.id } as Record<string, unknown>)).toBe(1);
          expect(await raw('messages').countDocuments({ relatedId: good.id, direction: 'outbound' })).toBe(1);
        }
      }),
      { numRuns: 40, seed, endOnFailure: true },
    );
    expect(await largestDocument()).toBeLessThan(MAX_DOC_BYTES);
  }, 180_000);
});
