// The checker the integration tests hold every management answer against (test/helpers/openapi-check.ts):
// it must fail on each kind of mismatch, or those tests could not fail.
import { describe, expect, it } from 'vitest';
import { openApiDocument } from '../../shared/manage/openapi';
import { checkExchange } from '../helpers/openapi-check';

const doc = openApiDocument() as Record<string, unknown>;
const user = {
  id: 'u_1',
  waId: '34600111222',
  bsuid: null,
  name: null,
  createdAt: '2026-01-31T12:00:00.000Z',
  lastMessageAt: null,
  lastMessagePreview: null,
  messageCount: 0,
  optedOut: false,
  handoff: null,
};
const get = (body: unknown, status = 200, headers: Record<string, string> = {}) =>
  checkExchange(doc, { method: 'GET', path: '/manage/users/{id}', status, headers, body });

describe('the OpenAPI answer checker', () => {
  it('accepts an answer that is exactly the documented one', () => {
    expect(get(user)).toEqual([]);
    expect(get({ error: { code: 'NOT_FOUND', message: 'user not found' } }, 404)).toEqual([]);
    expect(
      get({ error: { code: 'TOO_MANY_REQUESTS', message: 'wait' } }, 429, { 'Retry-After': '12' }),
    ).toEqual([]);
  });

  it('finds each kind of mismatch', () => {
    const withoutWaId = Object.fromEntries(Object.entries(user).filter(([k]) => k !== 'waId'));
    for (const [body, status, headers, error] of [
      [{ ...user, extra: 1 }, 200, {}, '$.extra: not in the document'],
      [withoutWaId, 200, {}, '$.waId: required, missing'],
      [{ ...user, createdAt: 'yesterday' }, 200, {}, 'not an ISO 8601 date-time'],
      [{ ...user, messageCount: 1.5 }, 200, {}, 'expected integer'],
      [{ ...user, name: 7 }, 200, {}, 'expected a string'],
      [{ ...user, optedOut: null }, 200, {}, 'null, not allowed'],
      [{ ...user, handoff: { since: user.createdAt, by: 'x' } }, 200, {}, 'expiresAt: required'],
      [user, 418, {}, 'status not documented'],
      [{ error: { code: 'X', message: 'y' } }, 429, {}, 'header Retry-After missing'],
      [user, 200, { 'content-type': 'text/html' }, 'content type text/html'],
    ] as const) {
      expect(get(body, status, headers).join('\n')).toContain(error);
    }
    // An extended object (allOf of the Message and its `raw`) is one closed object.
    const message = {
      id: 'm',
      userId: 'u_1',
      waMessageId: null,
      direction: 'inbound',
      type: 'text',
      text: 'hi',
      status: 'received',
      createdAt: user.createdAt,
      receivedAt: user.createdAt,
      role: 'conversation',
      by: null,
      error: null,
    };
    const exported = (messages: unknown[]) =>
      checkExchange(doc, {
        method: 'GET',
        path: '/manage/users/{id}/export',
        status: 200,
        headers: {},
        body: { user, previousWaIds: [], previousBsuids: [], messages, events: [], truncated: false },
      });
    expect(exported([{ ...message, raw: { any: 'thing' } }])).toEqual([]);
    expect(exported([{ ...message, raw: null, extra: 1 }]).join()).toContain(
      '$.messages[0].extra: not in the document',
    );
    expect(exported([{ ...message, raw: null, role: 'x' }]).join()).toContain('is not one of');
    // A union: Graph's code is a number or the app's own a string; nothing else.
    const failed = (code: unknown) => ({ ...message, raw: null, error: { code, title: 't', detail: null } });
    expect(exported([failed(131026), failed('OUTSIDE_WINDOW'), failed(null)])).toEqual([]);
    expect(exported([failed(true)]).join()).toContain('$.messages[0].error.code: matches none of anyOf');
    expect(
      checkExchange(doc, { method: 'PUT', path: '/manage/users/{id}', status: 200, headers: {}, body: user }),
    ).toEqual(['PUT /manage/users/{id} → 200: no such operation in the document']);
    expect(
      checkExchange(doc, {
        method: 'DELETE',
        path: '/manage/users/{id}',
        status: 204,
        headers: {},
        body: { gone: true },
      }).join(),
    ).toContain('a body where the document has none');
  });
});
