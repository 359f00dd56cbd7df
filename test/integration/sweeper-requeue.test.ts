// The sweeper re-queues the answer of a message left waiting, but a message whose job waits behind
// a backlog (a slow AI endpoint or database, an instance scaling out) is not queued again at every
// sweep: that added a job per waiting user each minute to the very queue they waited in (a soak
// run at a rate the workers could not keep up with saw the reply queue grow faster than the
// inbound). After a re-queue of a user (one job answers all they wait for) the next waits as long
// as their oldest message had waited, at most 10 minutes, and a lost job is still replaced.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REQUEUE_MAX_WAIT_MS, SWEEP_GRACE_MS, sweepStaleReplies } from '../../shared/bot/sweeper';
import { pseudonym } from '../../shared/log';
import { capturedLog } from '../helpers/logs';
import { startTestApp, type TestApp } from '../helpers/app';
import { textNotification } from '../helpers/meta';
import { userIdOf } from '../helpers/users';

let app: TestApp;
const { log, lines } = capturedLog();
let n = 0;
const newNumber = () => `4481${Date.now().toString().slice(-6)}${++n}`;

beforeAll(async () => {
  app = await startTestApp();
});

afterAll(async () => {
  await app?.close();
});

const MINUTE = 60_000;

describe('the sweeper under a reply backlog', () => {
  it('queues a waiting message again after it has waited as long again, then every 10 minutes, not at every sweep', async () => {
    const waIds = [newNumber(), newNumber(), newNumber()];
    const ids: string[] = [];
    for (const waId of waIds) {
      const { message, payload } = textNotification(waId, 'are you there?');
      await app.post(payload);
      ids.push(message.id);
    }
    // Their jobs wait in the queue behind others (not run here).
    app.queued.length = 0;
    const start = Date.now();
    const requeuedAt = async (minutes: number) => {
      const now = () => new Date(start + minutes * MINUTE);
      const jobs = await sweepStaleReplies({ ...app.services, now }, log);
      return jobs.flatMap((j) => (j.kind === 'message' && ids.includes(j.messageId) ? [j.messageId] : []));
    };
    // One sweep a minute for 40 minutes: every sweep from the second minute on found them waiting.
    const sweeps: number[] = [];
    for (let minute = 0; minute <= 40; minute++) {
      const found = await requeuedAt(minute + 0.5);
      if (found.length) {
        expect(found.sort()).toEqual([...ids].sort());
        sweeps.push(minute);
      }
    }
    // Re-queued having waited 1.5 minutes, then 1.5 minutes on (3.5), 3.5 on (7.5), 7.5 on
    // (15.5), then every 10 minutes: 6 jobs each in 40 minutes, where every sweep made one (40).
    expect(SWEEP_GRACE_MS).toBe(MINUTE);
    expect(REQUEUE_MAX_WAIT_MS).toBe(10 * MINUTE);
    expect(sweeps).toEqual([1, 3, 7, 15, 25, 35]);
    // Their jobs finally run and answer them; no sweep queues them again after that.
    for (const [i, waId] of waIds.entries()) {
      const userId = await userIdOf(app.services.data, waId);
      await app.runJob({ kind: 'message', userId, messageId: ids[i] as string });
    }
    for (const id of ids) expect((await app.services.data.messages.getMessage(id))?.replyState).toBe('sent');
    expect(await requeuedAt(60)).toEqual([]);
  });

  it('one job answers all a user waits for: their later message is not queued again on its own', async () => {
    const waId = newNumber();
    const first = textNotification(waId, 'first');
    const second = textNotification(waId, 'second');
    await app.post(first.payload);
    await app.post(second.payload);
    app.queued.length = 0; // both jobs wait behind a backlog
    const start = Date.now();
    // The second reached us 50 s after the first.
    await app.database.db
      .collection<{ _id: string }>('messages')
      .updateOne({ _id: second.message.id }, { $set: { receivedAt: new Date(start + 50_000) } });
    const userId = await userIdOf(app.services.data, waId);
    const at = (minutes: number) => ({ ...app.services, now: () => new Date(start + minutes * MINUTE) });
    const forUser = async (minutes: number) =>
      (await sweepStaleReplies(at(minutes), log)).filter((j) => j.userId === userId).length;
    expect(await forUser(1.5)).toBe(1); // the first has waited 1.5 minutes
    expect(await forUser(2.5)).toBe(0); // the second has waited a minute: the job queued holds it too
    expect(await forUser(3.5)).toBe(1);
  });

  it('logs one line per user re-queued, with how many of their messages the job answers', async () => {
    const waId = newNumber();
    const sent = ['one', 'two', 'three'].map((text) => textNotification(waId, text));
    for (const { payload } of sent) await app.post(payload);
    app.queued.length = 0;
    const userId = await userIdOf(app.services.data, waId);
    lines.length = 0;
    const now = () => new Date(Date.now() + 1.5 * MINUTE);
    const jobs = (await sweepStaleReplies({ ...app.services, now }, log)).filter((j) => j.userId === userId);
    expect(jobs).toEqual([{ kind: 'message', userId, messageId: sent[0]?.message.id }]);
    const logged = lines.filter((l) => l.includes('stale reply re-queued') && l.includes(pseudonym(userId)));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain('waiting=3');
  });

  it('still replaces a lost job within minutes (the first re-queue after a minute, the next two minutes on)', async () => {
    const waId = newNumber();
    const { message, payload } = textNotification(waId, 'hello?');
    await app.post(payload);
    app.queued.length = 0; // lost with a crashed host
    const start = Date.now();
    const at = (minutes: number) => ({ ...app.services, now: () => new Date(start + minutes * MINUTE) });
    const mine = (jobs: Awaited<ReturnType<typeof sweepStaleReplies>>) =>
      jobs.filter((j) => j.kind === 'message' && j.messageId === message.id);
    expect(mine(await sweepStaleReplies(at(0.5), log))).toEqual([]);
    expect(mine(await sweepStaleReplies(at(1.5), log))).toHaveLength(1);
    // That job was lost too (or found the user locked by a dead worker): queued again at 3 minutes.
    expect(mine(await sweepStaleReplies(at(2.5), log))).toEqual([]);
    const again = mine(await sweepStaleReplies(at(3.5), log));
    expect(again).toHaveLength(1);
    for (const job of again) await app.runJob(job);
    expect((await app.services.data.messages.getMessage(message.id))?.replyState).toBe('sent');
  });
});
