// Nothing lost, nothing answered twice, across a crash: 200 signed text notifications from 20
// senders through `npm run dev` (embedded database and Azurite in one data folder), the whole
// process group SIGKILLed mid-run, a restart on the same folder, every notification delivered
// once more as Meta would. Afterwards every inbound message is stored once with exactly one
// reply; a second Graph send is allowed only for a reply the Graph API accepted before the kill
// whose outbound record was not written yet (the documented window), and those are counted. The
// stats and every user's summary then agree with what is stored, with no repair.
// CRASH_KILL_POINTS="acks:60,sends:40" runs several kill points: after N acknowledgements (mid
// delivery; the default), or after N Graph sends (everything acknowledged, replies going out). The
// suite runs the default only: each kill point waits for the reply lease and a sweep. Then a start
// on a folder a kill during the start left half-claimed.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { afterAll, describe, expect, it } from 'vitest';
import { LEASE_MS } from '../../shared/bot/reply';
import { createDataStore } from '../../shared/data';
import { databaseUriOf, startDev, type DevProcess } from '../helpers/dev-process';
import { startGraphStub, type GraphStub } from '../helpers/graph-stub';
import { signed, textNotification } from '../helpers/meta';

const SECRET = 'crash-app-secret';
const SENDERS = 20;
const PER_SENDER = 10;
const CONCURRENCY = 16;
const KILL_POINTS = (process.env['CRASH_KILL_POINTS'] ?? 'acks:100')
  .split(',')
  .map((p) => /^(acks|sends):(\d+)$/.exec(p.trim()))
  .filter((m) => m !== null)
  .map((m) => ({ kind: m[1] as 'acks' | 'sends', count: Number(m[2]) }));

interface Notification {
  id: string;
  from: string;
  body: string;
  signature: string;
}

function notifications(): Notification[] {
  const list: Notification[] = [];
  for (let i = 0; i < PER_SENDER; i++) {
    for (let s = 0; s < SENDERS; s++) {
      const from = `4477009${String(10_000 + s).slice(1)}`;
      const { message, payload } = textNotification(from, `message ${i} from sender ${s}`);
      const { body, signature } = signed(payload, SECRET);
      list.push({ id: message.id, from, body, signature });
    }
  }
  return list;
}

async function deliver(
  url: string,
  items: readonly Notification[],
  stopAfterAcks = Infinity,
): Promise<{ acked: Set<string>; ackMs: number[] }> {
  const acked = new Set<string>();
  const ackMs: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length && acked.size < stopAfterAcks) {
      const item = items[next++] as Notification;
      const started = Date.now();
      try {
        const res = await fetch(`${url}/api/webhook`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-hub-signature-256': item.signature },
          body: item.body,
        });
        if (res.status === 200) {
          acked.add(item.id);
          ackMs.push(Date.now() - started);
        }
      } catch {
        // the server died mid-request: not acknowledged, Meta delivers it again
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  return { acked, ackMs };
}

describe('crash test', () => {
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  });

  for (const killAt of KILL_POINTS) {
    it(
      `loses nothing and answers once when killed after ${killAt.count} ${killAt.kind === 'acks' ? 'acknowledgements' : 'Graph sends'}`,
      async () => {
        const graph: GraphStub = await startGraphStub();
        cleanups.push(() => graph.close());
        graph.delayMs = 5;
        const env = {
          WHATSAPP_VERIFY_TOKEN: 'crash-verify',
          WHATSAPP_APP_SECRET: SECRET,
          WHATSAPP_ACCESS_TOKEN: 'EAA-crash-token',
          WHATSAPP_GRAPH_URL: graph.url,
        };
        const items = notifications();
        let dev: DevProcess = await startDev(env);
        const dataDir = dev.dataDir;
        cleanups.push(async () => {
          const { rmSync } = await import('node:fs');
          rmSync(dataDir, { recursive: true, force: true });
        });

        const first = await deliver(dev.url, items, killAt.kind === 'acks' ? killAt.count : Infinity);
        if (killAt.kind === 'sends') {
          const until = Date.now() + 60_000;
          while (graph.sends().length < killAt.count && Date.now() < until)
            await new Promise((r) => setTimeout(r, 5));
        }
        await dev.kill();
        const sendsAtKill = graph.sends().length;

        dev = await startDev({ ...env, DEV_DATA_DIR: dataDir });
        cleanups.push(() => dev.stop());
        const second = await deliver(dev.url, items);
        expect(second.acked.size).toBe(items.length);

        const client = await new MongoClient(databaseUriOf(dev.output())).connect();
        cleanups.push(() => client.close());
        const messages = client
          .db('whatsapp_chatbot')
          .collection<{ _id: string } & Record<string, unknown>>('messages');
        const ids = items.map((i) => i.id);
        // Quiet: every message stored and answered, and no send for a while. A reply caught by the
        // kill holds its user's lock until the lease (LEASE_MS) ends; the sweeper (every minute)
        // then re-queues it.
        const deadline = Date.now() + LEASE_MS + 150_000;
        let lastSends = -1;
        let stableSince = Date.now();
        for (;;) {
          const open = await messages.countDocuments({
            _id: { $in: ids },
            replyState: { $nin: ['sent', 'failed', 'none'] },
          });
          const stored = await messages.countDocuments({ _id: { $in: ids } });
          const sends = graph.sends().length;
          if (sends !== lastSends) {
            lastSends = sends;
            stableSince = Date.now();
          }
          if (stored === ids.length && open === 0 && Date.now() - stableSince > 1_500) break;
          if (Date.now() > deadline) {
            const states = await messages
              .find({ _id: { $in: ids }, replyState: { $nin: ['sent', 'failed', 'none'] } })
              .project({ replyState: 1, leaseUntil: 1, receivedAt: 1, userId: 1, replyAttempts: 1 })
              .toArray();
            const log = dev
              .output()
              .split('\n')
              .filter((l) => /warn|error|poison|sweep done/i.test(l))
              .slice(-60)
              .join('\n');
            const userLocks = await client
              .db('whatsapp_chatbot')
              .collection('users')
              .find({ _id: { $in: states.map((m) => m['userId']) } })
              .project({ replyLock: 1 })
              .toArray();
            throw new Error(
              `not quiet: ${stored} stored, ${open} open, ${sends} sends\nOPEN ${JSON.stringify(states)}\n` +
                `USERLOCKS ${JSON.stringify(userLocks)}\n${log}`,
            );
          }
          await new Promise((r) => setTimeout(r, 250));
        }

        const inbound = await messages.find({ _id: { $in: ids } }).toArray();
        expect(inbound).toHaveLength(items.length);
        expect(inbound.filter((m) => m['replyState'] !== 'sent')).toEqual([]);
        const outbound = await messages.find({ direction: 'outbound', relatedId: { $in: ids } }).toArray();
        const perMessage = new Map<string, number>();
        for (const o of outbound)
          perMessage.set(String(o['relatedId']), (perMessage.get(String(o['relatedId'])) ?? 0) + 1);
        // Every Graph send is a stored reply, except first sends accepted before the kill whose
        // record was never written (the documented window): those were sent again after the restart.
        const stored = new Set(outbound.map((o) => Number(/^wamid\.out\.(\d+)\./.exec(o._id)?.[1])));
        const sends = graph.sends();
        const unrecorded = sends.map((_, i) => i + 1).filter((n) => !stored.has(n));
        const twice = ids.filter((id) => (perMessage.get(id) ?? 0) > 1);
        process.stderr.write(
          `crash test: killed after ${first.acked.size} acks and ${sendsAtKill} sends; ` +
            `stored ${inbound.length}/${items.length}, unanswered ${ids.filter((id) => !perMessage.get(id)).length}, ` +
            `Graph sends ${sends.length}, duplicates in the window ${unrecorded.length}, ` +
            `replies recorded twice (outside the window) ${twice.length}\n`,
        );
        expect(ids.filter((id) => !perMessage.get(id))).toEqual([]);
        // A reply recorded and then sent again means the crash fell between the outbound record and
        // the end of the reply: outside the one-write window the contract allows.
        expect(twice).toEqual([]);
        expect(unrecorded.every((n) => n <= sendsAtKill)).toBe(true);
        expect(sends.length).toBe(items.length + unrecorded.length);
        // At most one per reply in flight at the kill (the reply queue's concurrency).
        expect(unrecorded.length).toBeLessThanOrEqual(12);

        // The stats and every user's summary agree with what is stored, with no repair: what a
        // killed writer stored was marked for the counters in the same write, and the summaries
        // are recounted under the reply lock (a lock taken over, a message delivered again). The
        // recounts of the second delivery may still be running: waited for, within a bound.
        const store = createDataStore(client.db('whatsapp_chatbot'));
        const shown = await store.stats.totals();
        expect([shown.inbound, shown.outbound, shown.newUsers]).toEqual([
          items.length,
          await messages.countDocuments({ direction: 'outbound' }),
          SENDERS,
        ]);
        const settledBy = Date.now() + 60_000;
        let summaries = await store.maintenance.checkSummaries(await store.maintenance.countStored());
        while (summaries.length && Date.now() < settledBy) {
          await new Promise((r) => setTimeout(r, 500));
          summaries = await store.maintenance.checkSummaries(await store.maintenance.countStored());
        }
        expect(summaries).toEqual([]);
        const { code } = await dev.stop();
        expect(code).toBe(0);
      },
      LEASE_MS + 300_000,
    );
  }
});

describe('a start after a kill during the start', () => {
  // A SIGKILL of `npm run dev` as it claimed its data folder, between making the claim's lock
  // (dev.pid.lock) and writing its owner into it, left a lock without an owner and a dev.pid of a
  // dead process: the next `npm run dev` waited 15 minutes on that lock, printing nothing.
  it('starts, and answers, on a folder whose claim lock has no owner', async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), 'wa-dev-killed-'));
    const dead = Number(execFileSync('sh', ['-c', 'echo $$'], { encoding: 'utf8' }).trim());
    writeFileSync(path.join(dataDir, 'dev.pid'), `${dead}\n`);
    mkdirSync(path.join(dataDir, 'dev.pid.lock'));
    writeFileSync(path.join(dataDir, 'dev.pid.lock', 'owner'), '');
    let dev: DevProcess | undefined;
    try {
      const started = Date.now();
      dev = await startDev({ WHATSAPP_APP_SECRET: SECRET, DEV_DATA_DIR: dataDir });
      expect(Date.now() - started).toBeLessThan(30_000);
      const { message, payload } = textNotification('447700900123', 'help');
      const { body, signature } = signed(payload, SECRET);
      const res = await fetch(`${dev.url}/api/webhook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-hub-signature-256': signature },
        body,
      });
      expect(res.status).toBe(200);
      const client = await new MongoClient(databaseUriOf(dev.output())).connect();
      try {
        const messages = client.db('whatsapp_chatbot').collection<{ _id: string }>('messages');
        const deadline = Date.now() + 20_000;
        while (!(await messages.countDocuments({ relatedId: message.id })) && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 200));
        expect(await messages.countDocuments({ relatedId: message.id })).toBe(1);
      } finally {
        await client.close();
      }
      expect((await dev.stop()).code).toBe(0);
    } finally {
      if (dev) await dev.kill();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 60_000);
});
