// What the operator is told about a message that failed or went unanswered (`Message.error` in the
// management API, shown under the message by the dashboard): what Graph said when it refused a
// reply, what Meta's failed status said, why the bot did not answer, and nothing on a message that
// went well.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ingestNotification } from '../../shared/bot/ingest';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { MessagesPageSchema, type MessageJson } from '../../shared/manage/schemas';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { call } from '../helpers/manage-fixture';
import { notification, status, textMessage, value } from '../helpers/meta';
import { parseBody } from '../helpers/shapes';
import { userIdOf } from '../helpers/users';

const TOKEN = 'manage-token-for-message-error-tests';
const HOUR_MS = 3_600_000;

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
const { log } = capturedLog();
let n = 0;
const newNumber = () => `4492${Date.now().toString().slice(-6)}${++n}`;

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

/** The user's conversation as the management API lists it. */
async function conversation(userId: string): Promise<MessageJson[]> {
  const r = await call(h.userMessages, { token: TOKEN, params: { id: userId } });
  expect(r.status).toBe(200);
  return parseBody(MessagesPageSchema, r.body).items;
}

const byText = (messages: MessageJson[], text: string) => messages.find((m) => m.text === text);

describe("a message's error in the management API", () => {
  it('says what Graph answered when it refused a reply, on the reply and on the message it answers; null when all went well', async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'help'); // welcome and answer go out
    app.graph.sendResponses.push({
      status: 400,
      body: { error: { code: 131026, message: 'Message undeliverable', type: 'OAuthException' } },
    });
    await app.userWrites(waId, 'help again');
    const messages = await conversation(await userIdOf(app.services.data, waId));
    const answered = byText(messages, 'help');
    expect(answered?.error).toBeNull();
    for (const m of messages.filter((x) => x.direction === 'outbound' && x.status !== 'failed'))
      expect(m.error).toBeNull();
    const refused = messages.find((m) => m.direction === 'outbound' && m.status === 'failed');
    expect(refused?.error).toMatchObject({ code: 131026, detail: null });
    expect(refused?.error?.title).toContain('Message undeliverable');
    expect(byText(messages, 'help again')?.error).toEqual(refused?.error);
  });

  it("gives a failed status's code, title and Meta's details", async () => {
    const waId = newNumber();
    await app.userWrites(waId, 'help');
    const userId = await userIdOf(app.services.data, waId);
    const reply = (await conversation(userId)).find((m) => m.direction === 'outbound' && m.waMessageId);
    expect(reply?.error).toBeNull();
    const details = 'Message failed to send because of an unknown error.';
    await ingestNotification(
      app.services,
      notification(
        value({
          statuses: [
            status(reply?.waMessageId ?? '', 'failed', waId, {
              errors: [{ code: 131000, title: 'Something went wrong', error_data: { details } }],
            }),
          ],
        }),
      ),
      log,
    );
    const failed = (await conversation(userId)).find((m) => m.id === reply?.id);
    expect(failed?.status).toBe('failed');
    expect(failed?.error).toEqual({ code: 131000, title: 'Something went wrong', detail: details });
  });

  it("says why a message was left unanswered (WhatsApp's 24-hour window had closed)", async () => {
    const waId = newNumber();
    // Its job ran 25 hours after the message reached us.
    const { jobs } = await ingestNotification(
      { ...app.services, now: () => new Date(Date.now() - 25 * HOUR_MS) },
      notification(value({ contacts: [{ waId }], messages: [textMessage(waId, 'anyone?')] })),
      log,
    );
    for (const job of jobs) await app.runJob(job);
    const messages = await conversation(await userIdOf(app.services.data, waId));
    expect(messages.filter((m) => m.direction === 'outbound' && m.role !== 'notice')).toEqual([]);
    const error = byText(messages, 'anyone?')?.error;
    expect(error?.code).toBe('OUTSIDE_WINDOW');
    expect(error?.title).toContain('24-hour');
  });
});
