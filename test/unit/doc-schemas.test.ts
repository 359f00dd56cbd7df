// The schemas of stored documents: documents of this version and of the next (optional fields)
// pass; a refusal names the field and never echoes content.
import { describe, expect, it } from 'vitest';
import { checkStoredDocument } from '../../shared/data';
import type { EventDoc } from '../../shared/data/events';
import type { MessageDoc } from '../../shared/data/messages';
import type { UserDoc } from '../../shared/data/users';

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

  it('the counter documents: totals, a day, an AI model', () => {
    expect(checkStoredDocument('stats', { _id: 'totals', inbound: 3, aiTokens: 40 })).toBeNull();
    expect(
      checkStoredDocument('stats', { _id: 'day:2026-03-01', date: '2026-03-01', inbound: 1 }),
    ).toBeNull();
    expect(
      checkStoredDocument('stats', { _id: 'model:gpt-4o-mini', aiRequests: 2, aiTokens: 40 }),
    ).toBeNull();
    expect(checkStoredDocument('stats', { _id: 'model:', aiRequests: 1 })).toMatch(/^field _id/);
    expect(checkStoredDocument('stats', { _id: 'week:9', inbound: 1 })).toMatch(/^field _id/);
  });

  it('the optional fields of the next version, and their absence', () => {
    expect(
      checkStoredDocument('users', {
        ...user,
        lastInboundAt: at,
        handoff: { since: at, by: 'agent', activeAt: at },
        replyLock: { owner: null, until: at },
        previousWaIds: ['15550001111'],
      }),
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
    expect(checkStoredDocument('users', { ...user, handoff: { since: 'yesterday', by: 'x' } })).toMatch(
      /^field handoff\.since: /,
    );
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
});
