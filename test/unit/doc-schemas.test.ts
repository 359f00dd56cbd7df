// The schemas of stored documents: documents of this version and of the next (optional fields)
// pass; a refusal names the field and never echoes content.
import { describe, expect, it } from 'vitest';
import { checkStoredDocument } from '../../shared/data';
import type { EventDoc } from '../../shared/data/events';
import type { MessageDoc } from '../../shared/data/messages';
import type { UserDoc } from '../../shared/data/users';
import type { MessageRole } from '../../shared/data/types';

const at = new Date('2026-03-01T10:00:00Z');
const user: UserDoc = {
  _id: 'u_0123456789abcdef01234567',
  waId: '15550002222',
  bsuid: null,
  name: 'Ana',
  createdAt: at,
  lastMessageAt: at,
  lastMessagePreview: null,
  lastMessageId: null,
  messageCount: 0,
  optedOut: false,
  welcomeSentAt: null,
  contextResetAt: null,
  searchKeys: ['1', 'ana'],
};
const placeholder: MessageDoc = { _id: 'wamid.x', waMessageId: 'wamid.x', status: 'read', statusRank: 3 };
const omit = (doc: object, field: string) =>
  Object.fromEntries(Object.entries(doc).filter(([k]) => k !== field));
const event: EventDoc = {
  _id: 'e1',
  kind: 'errors',
  reason: 'webhook errors',
  createdAt: at,
  userId: null,
  payload: {},
};

describe('documents that pass', () => {
  it('a user, a status placeholder, an event as this version writes them', () => {
    expect(checkStoredDocument('users', user)).toBeNull();
    expect(checkStoredDocument('messages', placeholder)).toBeNull();
    expect(checkStoredDocument('events', event)).toBeNull();
  });

  it('the counter documents: totals, a day, a model', () => {
    expect(checkStoredDocument('stats', { _id: 'totals', inbound: 3, aiTokens: 20 })).toBeNull();
    expect(
      checkStoredDocument('stats', { _id: 'day:2026-03-01', date: '2026-03-01', inbound: 1 }),
    ).toBeNull();
    expect(
      checkStoredDocument('stats', { _id: 'model:gpt-4o-mini', aiRequests: 2, aiTokens: 20 }),
    ).toBeNull();
    expect(checkStoredDocument('stats', { _id: 'model:', aiRequests: 2 })).toMatch(/^field _id: /);
    expect(checkStoredDocument('stats', { _id: 'day:yesterday' })).toMatch(/^field _id: /);
  });

  it('the optional fields of the next version, and their absence', () => {
    expect(
      checkStoredDocument('users', {
        ...user,
        lastInboundAt: at,
        handoff: { since: at, by: 'agent', activeAt: at },
        replyLock: { owner: null, until: at },
        previousWaIds: ['15550001111'],
        previousBsuids: ['US.13491208655302741918'],
        earlier: { name: 'Ana', bsuid: 'US.13491208655302741918', until: at },
        priorErase: at,
      }),
    ).toBeNull();
    expect(
      checkStoredDocument('users', { ...user, earlier: { name: null, bsuid: null, until: at } }),
    ).toBeNull();
    expect(checkStoredDocument('users', { ...user, handoff: null, replyLock: null })).toBeNull();
    expect(checkStoredDocument('messages', { ...placeholder, rawJson: '{"a":1}' })).toBeNull();
    expect(
      checkStoredDocument('events', { ...omit(event, 'payload'), subject: 's_1', payloadJson: '{}' }),
    ).toBeNull();
    expect(checkStoredDocument('events', { ...event, subject: null })).toBeNull();
    // FerretDB v1 drops a null set on upsert: the field is then absent.
    expect(checkStoredDocument('events', omit(event, 'userId'))).toBeNull();
  });
});

describe('documents that are refused', () => {
  it('names the field, never the value', () => {
    expect(
      checkStoredDocument('users', { ...user, handoff: { since: 'yesterday', by: 'x', activeAt: at } }),
    ).toMatch(/^field handoff\.since: /);
    expect(checkStoredDocument('users', { ...user, previousWaIds: ['1'.repeat(200)] })).toMatch(
      /^field previousWaIds\.0: Too big/,
    );
    expect(checkStoredDocument('messages', { ...placeholder, rawJson: 7 })).toMatch(/^field rawJson: /);
    const problem = checkStoredDocument('messages', { ...placeholder, statusTimes: { '15550009999': at } });
    expect(problem).toMatch(/^field statusTimes/);
    expect(problem).not.toContain('15550009999');
    expect(checkStoredDocument('users', [user])).toBe('not a document');
    expect(checkStoredDocument('events', { ...event, subject: '' })).toMatch(/^field subject: Too small/);
  });

  it('a field the schema does not know, at the top or nested, named with its collection', () => {
    expect(checkStoredDocument('messages', { ...placeholder, extraField: 'hello' })).toBe(
      'field extraField: not a field of messages documents',
    );
    expect(checkStoredDocument('messages', { ...placeholder, $where: 'x' })).toBe(
      'field $where: not a field of messages documents',
    );
    expect(
      checkStoredDocument('users', { ...user, handoff: { since: at, by: 'x', activeAt: at, extra: 1 } }),
    ).toBe('field handoff.extra: not a field of users documents');
    // A key that could be data (a number) is not printed.
    const problem = checkStoredDocument('users', { ...user, '15550009999': 1, other: 2 });
    expect(problem).toBe('field ?: not a field of users documents (and 1 more)');
  });
});

describe('every field the app writes is known', () => {
  it('a message of every role passes (an operator message too: a backup holding one restores)', () => {
    // Record<MessageRole, …>: a role added to the type must be listed here.
    const roles: Record<MessageRole, true> = {
      conversation: true,
      command: true,
      notice: true,
      operator: true,
    };
    for (const role of Object.keys(roles)) {
      expect(checkStoredDocument('messages', { ...placeholder, role }), role).toBeNull();
    }
  });

  it('a message and an event with every field of their interfaces pass', () => {
    const full: Required<MessageDoc> = {
      _id: 'out:wamid.in1:0',
      userId: user._id,
      waMessageId: 'wamid.out1',
      direction: 'outbound',
      type: 'text',
      text: 'hello',
      status: 'sent',
      statusRank: 2,
      statusTimes: { sent: at },
      createdAt: at,
      receivedAt: at,
      seqAt: at,
      role: 'conversation',
      phoneNumberId: '1234',
      terms: ['hello'],
      relatedId: 'wamid.in1',
      replyState: 'sent',
      leaseUntil: null,
      requeueAfter: at,
      replyPlan: { parts: ['first part', 'second part'], role: 'conversation', ai: null },
      error: null,
      failedUncounted: true,
      uncounted: true,
      ai: null,
      by: 'operator',
      rawJson: '{}',
      raw: {},
    };
    expect(checkStoredDocument('messages', full)).toBeNull();
    const fullEvent: Required<EventDoc> = {
      ...event,
      payload: {},
      subject: 's_1',
      payloadJson: '"cut',
      truncated: true,
      parts: 2,
      part: 1,
      erasedMessages: ['0123456789abcdef'],
      erasedSubjects: ['s_1'],
      erasedItems: ['0123456789abcdef'],
    };
    expect(checkStoredDocument('events', fullEvent)).toBeNull();
    // An erase remembers 64-bit hashes, never a message id in clear.
    expect(checkStoredDocument('events', { ...event, erasedMessages: ['wamid.HBgL'] })).toMatch(
      /^field erasedMessages\.0: /,
    );
    expect(checkStoredDocument('events', { ...event, erasedItems: ['events:abc'] })).toMatch(
      /^field erasedItems\.0: /,
    );
  });
});
