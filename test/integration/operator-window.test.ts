// The operator send's 24-hour window (POST /api/manage/users/{id}/messages) counts from the same
// anchor as the reply worker's: the later of Meta's `timestamp` and the time the message reached
// us. A user whose message dated 2020 reached us now is answered by the bot and can be written to
// by an operator; one that reached us 25 hours ago leaves only a template. Graph's 131047 still
// answers 409 OUTSIDE_WINDOW.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { ErrorSchema, MessageSchema } from '../../shared/manage/schemas';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { call } from '../helpers/manage-fixture';
import { notification, PHONE_NUMBER_ID, textMessage, value } from '../helpers/meta';
import { parseBody } from '../helpers/shapes';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-operator-window-tests';
const HOUR_MS = 3_600_000;
/** Meta's own examples carry timestamps from 2020. */
const META_EXAMPLE_TIMESTAMP = '1603059201';

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
const { log } = capturedLog();
let n = 0;
const newNumber = () => `4490${Date.now().toString().slice(-6)}${++n}`;

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN });
  h = manageHandlers(runtimeOf(app.services));
});

afterAll(async () => {
  await app?.close();
});

beforeEach(() => {
  app.graph.requests.length = 0;
  app.graph.sendResponses.length = 0;
});

/** Ingests the user's texts (Meta's `timestamp` each) as received `receivedAgoMs` ago; no reply job runs. */
async function received(waId: string, timestamps: string[], receivedAgoMs: number): Promise<string> {
  const messages = timestamps.map((timestamp, i) => textMessage(waId, `message ${i}`, { timestamp }));
  await ingestNotification(
    { ...app.services, now: () => new Date(Date.now() - receivedAgoMs) },
    notification(value({ contacts: [{ waId }], messages })),
    log,
  );
  return userIdOf(app.services.data, waId);
}

const send = (id: string, text: string) =>
  call(h.userMessages, { token: TOKEN, method: 'POST', params: { id }, body: { text } });

const sentTexts = (waId: string) =>
  app.graph
    .sends()
    .filter((r) => r.body['to'] === waId)
    .map((r) => (r.body['text'] as { body: string }).body);

describe('the operator send counts the window as the reply worker does', () => {
  it('sends free text to a user whose only message is dated 2020 but reached us now', async () => {
    const waId = newNumber();
    const id = await received(waId, [META_EXAMPLE_TIMESTAMP], 0);
    const r = await send(id, 'an operator here');
    expect(r.status).toBe(201);
    expect(parseBody(MessageSchema, r.body)).toMatchObject({ role: 'operator', status: 'sent' });
    expect(sentTexts(waId)).toEqual(['an operator here']);
    const sent = app.graph.sends().find((s) => s.body['to'] === waId);
    expect(sent?.path).toContain(PHONE_NUMBER_ID);
  });

  it('refuses free text (409 OUTSIDE_WINDOW, nothing sent) when that message reached us 25 hours ago', async () => {
    const waId = newNumber();
    const id = await received(waId, [META_EXAMPLE_TIMESTAMP], 25 * HOUR_MS);
    const r = await send(id, 'too late');
    expect(r.status).toBe(409);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('OUTSIDE_WINDOW');
    expect(sentTexts(waId)).toEqual([]);
  });

  it('counts the latest message that reached us, not the one with the latest Meta time', async () => {
    const waId = newNumber();
    const dayAgo = String(Math.floor((Date.now() - 30 * HOUR_MS) / 1000));
    // Sent and received 30 hours ago, then one dated 2020 received now, to the same number.
    await received(waId, [dayAgo], 30 * HOUR_MS);
    const id = await received(waId, [META_EXAMPLE_TIMESTAMP], 0);
    const r = await send(id, 'still here');
    expect(r.status).toBe(201);
    expect(sentTexts(waId)).toEqual(['still here']);
  });

  it("answers Graph's window refusal (131047) with 409 OUTSIDE_WINDOW", async () => {
    const waId = newNumber();
    const id = await received(waId, [META_EXAMPLE_TIMESTAMP], 0);
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131047, message: 'Re-engagement message' } },
    });
    const r = await send(id, 'refused by Meta');
    expect(r.status).toBe(409);
    expect(parseBody(ErrorSchema, r.body).error.code).toBe('OUTSIDE_WINDOW');
  });
});

describe('a user no number or id reaches (the previous owner of a number given to someone else)', () => {
  it('refuses free text and templates alike with 409 UNREACHABLE, before anything is taken, audited or sent', async () => {
    const [previousOwner, person] = [newNumber(), newNumber()];
    const threeDaysAgo = String(Math.floor((Date.now() - 72 * HOUR_MS) / 1000));
    const ownerId = await received(previousOwner, [threeDaysAgo], 72 * HOUR_MS);
    await received(person, [String(Math.floor(Date.now() / 1000))], 0);
    // The person's number changes to the previous owner's: a recycled number.
    const change = {
      from: person,
      id: `wamid.change-${person}`,
      timestamp: String(Math.floor(Date.now() / 1000)),
      type: 'system',
      system: { body: 'changed', wa_id: previousOwner, type: 'user_changed_number' },
    };
    await ingestNotification(app.services, notification(value({ messages: [change] })), log);
    const detached = await app.services.data.users.getUser(ownerId);
    expect(detached).toMatchObject({ waId: null, bsuid: null });

    const audits = () =>
      app.database.db.collection('events').countDocuments({ userId: ownerId, kind: 'audit' });
    const auditsBefore = await audits();
    for (const body of [
      { text: 'hello again' },
      { template: { name: 'hello_world', language: 'en_US', parameters: [] } },
    ]) {
      const r = await call(h.userMessages, { token: TOKEN, method: 'POST', params: { id: ownerId }, body });
      expect(r.status).toBe(409);
      expect(parseBody(ErrorSchema, r.body).error).toMatchObject({ code: 'UNREACHABLE' });
    }
    expect(app.graph.requests).toHaveLength(0);
    expect(await audits()).toBe(auditsBefore);
    expect((await app.services.data.users.getUser(ownerId))?.handoff ?? null).toBeNull();
  });
});
