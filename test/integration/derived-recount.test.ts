// Randomized: the derived data (each user's summary and search keys, each message's search terms,
// the stats' totals, days and models) always equals a recount of the stored documents, made here
// on its own, after every step of a random sequence of what writers do: messages of several types
// through the signed webhook (batches, duplicates, redeliveries, number changes), statuses in and
// out of order, answers (AI usage, Graph failures), operator messages, handoffs, erase, the sweep,
// retention, `npm run migrate` of legacy files of the same people, notifications kept poisoned and
// put back by `npm run replay-poison` (on a real Azurite), and `npm run health -- --repair` (which
// must change nothing on a healthy database and rebuild exactly the recount on a damaged one). The
// waiting list and the latest chats, read through the management API, equal a recount from the
// stored users too, handoffs expiring on the way. Seeded: DERIVED_SEED=<n> replays a failure.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { manageHandlers } from '../../functions/manage';
import type { AiResponder } from '../../shared/bot/ports';
import { runtimeOf } from '../../shared/deps';
import type { MessageDoc } from '../../shared/data/messages';
import type { UserDoc } from '../../shared/data/users';
import { InvocationContext } from '@azure/functions';
import { QueueServiceClient } from '@azure/storage-queue';
import { keepPoisonedWorker } from '../../functions/keep-poisoned';
import { startAzurite, type Azurite } from '../../scripts/lib/azurite';
import { runToExitCode } from '../../scripts/lib/cli';
import { hostQueueSettings } from '../../scripts/lib/queue-host';
import { main as backup } from '../../scripts/backup';
import { main as health } from '../../scripts/health';
import { main as migrate } from '../../scripts/migrate';
import { main as replayPoison } from '../../scripts/replay-poison';
import { main as restore } from '../../scripts/restore';
import { captureIo, writeLegacyDb, type LegacyMessageRow, type LegacyUserRow } from '../fixtures/scripts';
import { APP_SECRET, startTestApp, type TestApp } from '../helpers/app';
import { accepted } from '../helpers/graph-stub';
import { call } from '../helpers/manage-fixture';
import { notification, value } from '../helpers/meta';
import { collectionOf } from '../helpers/raw';

const TOKEN = 'manage-token-for-derived-recount-0123';
const DAY = 86_400_000;
const MINUTE = 60_000;
const HOUR = 3_600_000;
/** HANDOFF_HOURS as the test app runs (the default). */
const HANDOFF_HOURS = 24;
const STEPS = Number(process.env['DERIVED_STEPS'] ?? 80);

/** mulberry32: a small seeded generator. */
function generator(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)] as T,
    chance: (p: number) => next() < p,
  };
}

// ---------------------------------------------------------------------------------------------
// The recount, on its own: nothing of the data module's rules is borrowed.

const WORDS = ['hola', 'price', 'Über', 'reset', 'order', 'help', 'cafe', 'Zürich', 'ticket', 'x1'];
const fold = (w: string) => w.normalize('NFKD').replace(/\p{M}/gu, '').toLowerCase();
/** Every prefix (up to 24 characters) of every word; the texts here are short and of Latin letters. */
function prefixes(...texts: (string | null | undefined)[]): string[] {
  const out = new Set<string>();
  for (const t of texts)
    for (const word of fold(t ?? '').match(/[\p{L}\p{N}]+/gu) ?? [])
      for (let n = 1; n <= Math.min(24, word.length); n++) out.add(word.slice(0, n));
  return [...out].sort();
}
const previewOf = (text: string) => (text.length > 120 ? `${text.slice(0, 119)}…` : text);
const placeOf = (m: MessageDoc) => (m.seqAt ?? m.createdAt) as Date;
const dayOf = (at: Date) => at.toISOString().slice(0, 10);

interface Ledger {
  /** What retention deleted of the counters' messages: running totals keep it. */
  totals: Record<string, number>;
  days: Map<string, Record<string, number>>;
  /** Users retention took messages of (their last activity and inbound count stay). */
  touched: Set<string>;
  inbound: Map<string, number>;
  /** Retention ran: counters can no longer be rebuilt exactly, only raised to what is stored. */
  retained: boolean;
  models: Map<string, { requests: number; tokens: number }>;
}

/** How a stored message counts, by the contract: inbound once answered or settled, outbound always. */
function counts(m: MessageDoc): { direction: 'inbound' | 'outbound'; day: string; failed: boolean } | null {
  if (!m.userId || !m.direction || !(m.createdAt instanceof Date)) return null;
  if (m.direction === 'inbound' && (m.replyState === 'pending' || m.replyState === 'sending')) return null;
  return {
    direction: m.direction,
    day: dayOf(m.createdAt),
    failed: m.direction === 'outbound' && m.status === 'failed',
  };
}

async function stored(app: TestApp) {
  const users = await collectionOf(app.database.db, 'users').find({}).toArray();
  const messages = await collectionOf(app.database.db, 'messages').find({}).toArray();
  return { users, messages };
}

/** Every difference between the derived data and the recount, as readable lines. */
async function differences(app: TestApp, ledger: Ledger, realNow: Date): Promise<string[]> {
  const out: string[] = [];
  const { users, messages } = await stored(app);
  const byUser = new Map<string, MessageDoc[]>();
  for (const m of messages) if (m.userId) byUser.set(m.userId, [...(byUser.get(m.userId) ?? []), m]);
  const userIds = new Set(users.map((u) => u._id));
  for (const id of byUser.keys()) if (!userIds.has(id)) out.push(`messages of a user not stored: ${id}`);

  for (const u of users as UserDoc[]) {
    if (u.erasing) continue;
    const mine = byUser.get(u._id) ?? [];
    const inbound = mine.filter((m) => m.direction === 'inbound');
    let latest: MessageDoc | null = null;
    for (const m of mine) {
      if (
        !latest ||
        placeOf(m).getTime() > placeOf(latest).getTime() ||
        (placeOf(m).getTime() === placeOf(latest).getTime() && m._id > latest._id)
      )
        latest = m;
    }
    const who = `user ${u._id.slice(0, 8)} (${u.waId ?? '-'}${ledger.touched.has(u._id) ? ', retention' : ''})`;
    if (u.messageCount !== mine.length)
      out.push(`${who}: messageCount ${u.messageCount}, recount ${mine.length}`);
    // Only the holder of the reply lock recounts the inbound count (a change detector for it): after
    // retention it lies between the stored inbound messages and those with the ones retention deleted.
    const deleted = ledger.inbound.get(u._id) ?? 0;
    const inboundCount = u.inboundCount ?? 0;
    if (
      deleted
        ? inboundCount < inbound.length || inboundCount > inbound.length + deleted
        : inboundCount !== inbound.length
    )
      out.push(`${who}: inboundCount ${u.inboundCount}, recount ${inbound.length} (+${deleted} deleted)`);
    // Messages at the same place (one millisecond): any of them is the latest, as the health check
    // accepts; the preview is that message's.
    const named = mine.find((m) => m._id === u.lastMessageId);
    const tie = latest && named && placeOf(named).getTime() === placeOf(latest).getTime() ? named : latest;
    if ((u.lastMessageId ?? null) !== (tie?._id ?? null))
      out.push(`${who}: lastMessageId ${u.lastMessageId}, recount ${latest?._id ?? null}`);
    if ((u.lastMessagePreview ?? null) !== (tie ? previewOf(tie.text ?? '') : null))
      out.push(
        `${who}: lastMessagePreview ${JSON.stringify(u.lastMessagePreview)}, recount ${JSON.stringify(tie?.text)}`,
      );
    // Retention deleted some of their messages, or a new owner of their number took the latest:
    // the time of their last activity stays (it orders the users list).
    const touched = ledger.touched.has(u._id) || (u.waId === null && (u.previousWaIds ?? []).length > 0);
    if (latest && !touched && u.lastMessageAt?.getTime() !== placeOf(latest).getTime())
      out.push(
        `${who}: lastMessageAt ${u.lastMessageAt?.toISOString()}, recount ${placeOf(latest).toISOString()}`,
      );
    if (latest && touched && !(u.lastMessageAt.getTime() >= placeOf(latest).getTime()))
      out.push(`${who}: lastMessageAt ${u.lastMessageAt?.toISOString()} before the latest message`);
    const lastIn = inbound.reduce<number | null>((a, m) => Math.max(a ?? 0, placeOf(m).getTime()), null);
    const lastInAt = u.lastInboundAt?.getTime() ?? null;
    if (touched ? lastIn !== null && (lastInAt === null || lastInAt < lastIn) : lastInAt !== lastIn)
      out.push(
        `${who}: lastInboundAt ${u.lastInboundAt?.toISOString()}, recount ${lastIn && new Date(lastIn).toISOString()}`,
      );
    const keys = [...(u.searchKeys ?? [])].sort();
    const wantKeys = prefixes(u.name ?? null, u.waId ?? null);
    if (JSON.stringify(keys) !== JSON.stringify(wantKeys))
      out.push(`${who}: searchKeys ${JSON.stringify(keys)}, recount ${JSON.stringify(wantKeys)}`);
  }
  for (const m of messages) {
    if (!m.userId) continue;
    const terms = [...(m.terms ?? [])].sort();
    const want = prefixes(m.text);
    if (JSON.stringify(terms) !== JSON.stringify(want))
      out.push(
        `message ${m._id} (${m.type}): terms ${JSON.stringify(terms)}, recount ${JSON.stringify(want)}`,
      );
  }

  // Counters as operators read them (running counters plus what is marked).
  const totals: Record<string, number> = {
    inbound: 0,
    outbound: 0,
    failed: 0,
    newUsers: 0,
    aiRequests: 0,
    aiTokens: 0,
  };
  const days = new Map<string, Record<string, number>>();
  const day = (d: string) => {
    let x = days.get(d);
    if (!x) days.set(d, (x = { inbound: 0, outbound: 0, newUsers: 0 }));
    return x;
  };
  const models = new Map<string, { requests: number; tokens: number }>();
  for (const u of users as UserDoc[]) {
    totals['newUsers']!++;
    day(dayOf(u.createdAt)).newUsers!++;
  }
  for (const m of messages) {
    const c = counts(m);
    if (!c) continue;
    totals[c.direction]!++;
    day(c.day)[c.direction]!++;
    if (c.failed) totals['failed']!++;
    if (m.ai) {
      totals['aiRequests']!++;
      totals['aiTokens']! += m.ai.totalTokens;
      const x = models.get(m.ai.model) ?? { requests: 0, tokens: 0 };
      models.set(m.ai.model, { requests: x.requests + 1, tokens: x.tokens + m.ai.totalTokens });
    }
  }
  for (const [k, v] of Object.entries(ledger.totals)) totals[k]! += v;
  for (const [model, used] of ledger.models) {
    const x = models.get(model) ?? { requests: 0, tokens: 0 };
    models.set(model, { requests: x.requests + used.requests, tokens: x.tokens + used.tokens });
  }
  for (const [d, v] of ledger.days) for (const [k, n] of Object.entries(v)) day(d)[k]! += n;
  const snap = await app.services.data.stats.snapshot(realNow, 30);
  for (const [k, v] of Object.entries(totals))
    if (snap.totals[k as keyof typeof snap.totals] !== v)
      out.push(`totals.${k} ${snap.totals[k as keyof typeof snap.totals]}, recount ${v}`);
  for (const d of snap.daily) {
    const want = days.get(d.date) ?? { inbound: 0, outbound: 0, newUsers: 0 };
    for (const k of ['inbound', 'outbound', 'newUsers'] as const)
      if (d[k] !== want[k]) out.push(`${d.date}.${k} ${d[k]}, recount ${want[k]}`);
  }
  const wantModels = [...models]
    .map(([model, x]) => ({ model, ...x }))
    .sort((a, b) => b.tokens - a.tokens || (a.model < b.model ? -1 : 1));
  if (JSON.stringify(snap.models) !== JSON.stringify(wantModels))
    out.push(`models ${JSON.stringify(snap.models)}, recount ${JSON.stringify(wantModels)}`);
  out.push(...(await listDifferences(users, byUser, ledger)));
  return out;
}

/**
 * The waiting list (`GET /api/manage/chats?state=waiting`, read page by page) and the latest chats
 * against a recount from the stored users, as the contract defines them: a handoff in force
 * (HANDOFF_HOURS since the operator's last reply or the take), the longest-waiting first
 * (`handoff.since`, then id), users under erase left out; each user's `handoff` shown only while in
 * force; a handoff the user asked for (`by` "user") backed by their own `human` or `agent`.
 */
async function listDifferences(
  users: UserDoc[],
  byUser: Map<string, MessageDoc[]>,
  ledger: Ledger,
): Promise<string[]> {
  const out: string[] = [];
  const now = clock;
  const live = users.filter((u) => !u.erasing);
  const inForce = (u: UserDoc) =>
    Boolean(u.handoff && u.handoff.activeAt.getTime() + HANDOFF_HOURS * HOUR > now);
  const byId = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
  const want = live
    .filter(inForce)
    .sort((a, b) => a.handoff!.since.getTime() - b.handoff!.since.getTime() || byId(a._id, b._id));
  type Chat = { user: { id: string; handoff: unknown }; lastMessage: { id: string } | null };
  const got: Chat[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 20; page++) {
    const res = await call(h.chats, {
      token: TOKEN,
      query: { state: 'waiting', limit: '2', ...(cursor ? { cursor } : {}) },
    });
    if (res.status !== 200) return [...out, `waiting list: ${res.status} ${JSON.stringify(res.body)}`];
    const body = res.body as { items: Chat[]; nextCursor: string | null };
    got.push(...body.items);
    cursor = body.nextCursor;
    if (!cursor) break;
  }
  const short = (ids: string[]) => JSON.stringify(ids.map((x) => x.slice(0, 8)));
  const ids = got.map((c) => c.user.id);
  const wantIds = want.map((u) => u._id);
  if (JSON.stringify(ids) !== JSON.stringify(wantIds))
    out.push(`waiting list ${short(ids)}, recount ${short(wantIds)}`);
  const latestOf = (u: UserDoc | undefined) =>
    u?.lastMessageId && (byUser.get(u._id) ?? []).some((m) => m._id === u.lastMessageId)
      ? u.lastMessageId
      : null;
  for (const c of got) {
    if (!c.user.handoff) out.push(`waiting list: user ${c.user.id.slice(0, 8)} shown without a handoff`);
    const last = latestOf(live.find((x) => x._id === c.user.id));
    if ((c.lastMessage?.id ?? null) !== last)
      out.push(
        `waiting list: user ${c.user.id.slice(0, 8)} lastMessage ${c.lastMessage?.id}, recount ${last}`,
      );
  }
  // The latest chats: by last activity, then id, each with its latest message.
  const chats = await call(h.chats, { token: TOKEN, query: { limit: '50' } });
  const wantChats = live
    .filter((u) => latestOf(u) !== null)
    .sort((a, b) => b.lastMessageAt.getTime() - a.lastMessageAt.getTime() || byId(b._id, a._id));
  const gotChats = (chats.body as { items: Chat[] }).items;
  const chatIds = gotChats.map((c) => c.user.id);
  if (JSON.stringify(chatIds) !== JSON.stringify(wantChats.map((u) => u._id)))
    out.push(`latest chats ${short(chatIds)}, recount ${short(wantChats.map((u) => u._id))}`);
  for (const c of gotChats) {
    const u = live.find((x) => x._id === c.user.id);
    if (u && Boolean(c.user.handoff) !== inForce(u))
      out.push(
        `latest chats: user ${u._id.slice(0, 8)} handoff ${JSON.stringify(c.user.handoff)}, in force ${inForce(u)}`,
      );
  }
  for (const u of live) {
    if (u.handoff?.by !== 'user' || ledger.touched.has(u._id)) continue;
    const asked = (byUser.get(u._id) ?? []).some(
      (m) => m.direction === 'inbound' && /^(human|agent)[.!?]*$/i.test((m.text ?? '').trim()),
    );
    if (!asked) out.push(`user ${u._id.slice(0, 8)}: handoff by the user, who never asked for it`);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
const realStart = Date.now();
let clock = realStart - 6 * DAY;
let inSeq = 0;
let aiCalls = 0;
let azurite: Azurite | undefined;

const ai: AiResponder = {
  window: 40,
  async respond({ message, preparing }) {
    if (!(await preparing())) return null;
    const n = ++aiCalls;
    return {
      text: `answer ${n} to ${(message.text ?? '').slice(0, 20)}`,
      role: 'conversation',
      ai: {
        provider: 'openai',
        model: n % 3 === 0 ? 'model-b' : 'model-a',
        promptTokens: 10,
        completionTokens: n % 7,
        totalTokens: 10 + (n % 7),
        latencyMs: 5,
      },
      failure: null,
    };
  },
};

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN }, { now: () => new Date(clock), ai });
  h = manageHandlers(runtimeOf(app.services));
});
afterAll(async () => {
  await azurite?.stop();
  await app?.close();
});

const env = () => ({
  MONGODB_URI: app.database.uri,
  MONGODB_DATABASE: app.database.dbName,
  WHATSAPP_VERIFY_TOKEN: 'verify',
  WHATSAPP_APP_SECRET: APP_SECRET,
});

async function runHealth(args: string[]): Promise<{ code: number; out: string }> {
  const io = captureIo();
  const code = await runToExitCode(health, args, env(), io);
  return { code, out: [...io.stdout, ...io.stderr].join('\n') };
}

describe('derived data equals a recount', () => {
  it('a number change that takes the new number’s recent messages from its previous owner counts them in the user’s summary', async () => {
    const { data } = app.services;
    const at = (ms: number) => String(Math.floor(ms / 1000));
    const write = async (from: string, text: string, name: string) => {
      const m = {
        from,
        id: `wamid.focused.${++inSeq}`,
        timestamp: at(clock),
        type: 'text',
        text: { body: text },
      };
      await app.post(notification(value({ contacts: [{ waId: from, name }], messages: [m] })));
      await app.drain();
    };
    clock = Date.now() - 5 * DAY;
    await write('4479100001', 'hello from the first number', 'Mover'); // the user, on number X
    await write('4479100002', 'the previous owner of Y', 'Previous'); // Y's previous owner
    clock = Date.now() - 2 * 3_600_000;
    await write('4479100002', 'the user writes from Y', 'Mover'); // the user, already on Y
    clock += MINUTE;
    const change = {
      from: '4479100001',
      id: `wamid.focused.${++inSeq}`,
      timestamp: at(clock),
      type: 'system',
      system: { body: 'changed', wa_id: '4479100002', type: 'user_changed_number' },
    };
    await app.post(notification(value({ contacts: [{ waId: '4479100001' }], messages: [change] })));

    // Right after the change, not only once its reply job has recounted the summary.
    const messages = collectionOf(app.database.db, 'messages');
    for (const stage of ['ingested', 'answered']) {
      const user = await data.users.findByIdentity({ waId: '4479100002', bsuid: null });
      expect(await messages.countDocuments({ userId: user!.id }), stage).toBe(4); // hello, its answer, the moved two
      expect(user, stage).toMatchObject({
        messageCount: 4,
        lastMessagePreview: 'answer 3 to the user writes from',
      });
      const doc = await collectionOf(app.database.db, 'users').findOne({ _id: user!.id });
      expect(doc?.inboundCount, stage).toBe(2);
      expect(await data.maintenance.checkSummaries(await data.maintenance.countStored()), stage).toEqual([]);
      await app.drain();
    }
  });

  it('a restore of an older backup over newer messages sets the inbound count and time to what is stored', async () => {
    const { data } = app.services;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derived-'));
    const file = path.join(dir, 'before.ejson.gz');
    const write = async (text: string) => {
      clock += MINUTE;
      const m = {
        from: '4479200001',
        id: `wamid.restore.${++inSeq}`,
        timestamp: String(Math.floor(clock / 1000)),
        type: 'text',
        text: { body: text },
      };
      await app.post(
        notification(value({ contacts: [{ waId: '4479200001', name: 'Rita' }], messages: [m] })),
      );
      await app.drain();
    };
    clock = Date.now() - DAY;
    await write('before the backup');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);
    await write('after the backup');
    await write('and again');
    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.stdout.join('\n')).toBe(0);

    const user = await collectionOf(app.database.db, 'users').findOne({ waId: '4479200001' });
    const inbound = await collectionOf(app.database.db, 'messages')
      .find({ userId: user!._id, direction: 'inbound' })
      .toArray();
    const latest = Math.max(...inbound.map((m) => m.seqAt!.getTime()));
    expect(inbound).toHaveLength(3);
    expect(user).toMatchObject({ messageCount: 6, inboundCount: 3, lastInboundAt: new Date(latest) });
    expect(await data.maintenance.checkSummaries(await data.maintenance.countStored())).toEqual([]);
  });

  it(
    'holds for a random sequence of writers, and health --repair restores it',
    { timeout: 120_000 },
    async () => {
      const seed = Number(process.env['DERIVED_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
      const r = generator(seed);
      // Days to go through (handoffs expire, retention has something to delete), whatever ran before.
      clock = Date.now() - 6 * DAY;
      const numbers = ['4479000001', '4479000002', '4479000003', '4479000004', '4479000005', '4479000006'];
      const names = ['Ana Lopez', 'Bo', 'Cleo Über', 'Dan', 'Eva Zürich', 'Fay'];
      const sent: unknown[] = [];
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'derived-'));
      const backups: { file: string; retained: boolean }[] = [];
      const ledger: Ledger = {
        totals: {},
        days: new Map(),
        touched: new Set(),
        inbound: new Map(),
        retained: false,
        models: new Map(),
      };
      const trace: string[] = [];
      const tick = () => {
        clock = Math.min(clock + r.int(90) * MINUTE + 1000, Date.now() - MINUTE);
      };
      const sentence = () =>
        Array.from({ length: 1 + r.int(4) }, () => r.pick(WORDS)).join(r.pick([' ', ', ', '! ']));
      const message = (from: string) => {
        const base = { from, id: `wamid.in.${seed}.${++inSeq}`, timestamp: String(Math.floor(clock / 1000)) };
        const kind = r.int(10);
        if (kind < 6) return { ...base, type: 'text', text: { body: sentence() } };
        if (kind < 8)
          return {
            ...base,
            type: 'image',
            image: { id: `media${inSeq}`, mime_type: 'image/jpeg', caption: sentence() },
          };
        if (kind < 9)
          return { ...base, type: 'location', location: { latitude: 1.5, longitude: 2.5, name: sentence() } };
        return { ...base, type: 'text', text: { body: r.pick(['human', 'stop', 'start', 'reset', 'help']) } };
      };
      const userOf = async (waId: string) => app.services.data.users.findByIdentity({ waId, bsuid: null });

      const ops: [number, string, () => Promise<void>][] = [
        [
          30,
          'message',
          async () => {
            const i = r.int(numbers.length);
            const from = numbers[i]!;
            const m = message(from);
            const payload = notification(
              value({ contacts: [{ waId: from, name: names[i]! }], messages: [m] }),
            );
            sent.push(payload);
            await app.post(payload);
            if (r.chance(0.6)) await app.drain();
          },
        ],
        [
          8,
          'batch',
          async () => {
            const picks = [r.int(numbers.length), r.int(numbers.length)];
            const msgs = picks.map((i) => message(numbers[i]!));
            if (r.chance(0.5)) msgs.push(msgs[0]!); // the same message twice in one notification
            const payload = notification(
              value({ contacts: picks.map((i) => ({ waId: numbers[i]!, name: names[i]! })), messages: msgs }),
            );
            sent.push(payload);
            await app.post(payload);
          },
        ],
        [
          6,
          'redeliver',
          async () => {
            if (sent.length) await app.post(r.pick(sent));
          },
        ],
        [10, 'drain', () => app.drain()],
        [
          8,
          'status',
          async () => {
            const outs = await collectionOf(app.database.db, 'messages')
              .find({ direction: 'outbound' })
              .toArray();
            const target = outs.length && r.chance(0.85) ? r.pick(outs)._id : `wamid.out.unknown.${++inSeq}`;
            const recipient = outs.find((o) => o._id === target)
              ? ((await app.services.data.users.getUser(outs.find((o) => o._id === target)!.userId!))?.waId ??
                numbers[0]!)
              : numbers[0]!;
            const order = r.pick([
              ['sent', 'delivered', 'read'],
              ['read', 'delivered'],
              ['failed'],
              ['delivered', 'failed'],
              ['failed', 'failed'],
            ]);
            const statuses = order.map((s) => ({
              id: target,
              status: s,
              timestamp: String(Math.floor(clock / 1000)),
              recipient_id: recipient,
              ...(s === 'failed' ? { errors: [{ code: 131026, title: 'Message undeliverable' }] } : {}),
            }));
            await app.post(notification(value({ statuses })));
          },
        ],
        [
          5,
          'graph refuses the next send',
          async () => {
            app.graph.sendResponses.push({
              status: 400,
              body: { error: { code: 131026, message: 'Message undeliverable', type: 'OAuthException' } },
            });
          },
        ],
        [
          5,
          'operator message',
          async () => {
            const u = await userOf(r.pick(numbers));
            if (u)
              await call(h.userMessages, {
                token: TOKEN,
                method: 'POST',
                params: { id: u.id },
                body: { text: sentence() },
              });
          },
        ],
        [
          4,
          'handoff',
          async () => {
            const u = await userOf(r.pick(numbers));
            if (u)
              await call(h.userHandoff, {
                token: TOKEN,
                method: r.chance(0.5) ? 'POST' : 'DELETE',
                params: { id: u.id },
              });
          },
        ],
        [
          3,
          'erase',
          async () => {
            const u = await userOf(r.pick(numbers));
            if (u) await call(h.user, { token: TOKEN, method: 'DELETE', params: { id: u.id } });
          },
        ],
        [
          3,
          'number change',
          async () => {
            const i = r.int(numbers.length);
            const j = r.int(numbers.length);
            if (i === j) return;
            const from = numbers[i]!;
            const payload = notification(
              value({
                contacts: [{ waId: from }],
                messages: [
                  {
                    from,
                    id: `wamid.sys.${seed}.${++inSeq}`,
                    timestamp: String(Math.floor(clock / 1000)),
                    type: 'system',
                    system: {
                      body: `changed to ${numbers[j]}`,
                      wa_id: numbers[j],
                      type: 'user_changed_number',
                    },
                  },
                ],
              }),
            );
            sent.push(payload);
            await app.post(payload);
          },
        ],
        [6, 'sweep', async () => void (await app.services.data.stats.foldPending())],
        [
          4,
          'statuses before their message',
          async () => {
            // The next answer gets this id; its statuses arrive before it is stored (a placeholder).
            const id = `wamid.early.${seed}.${++inSeq}`;
            app.graph.sendResponses.push(accepted(id));
            const order = r.pick([['delivered'], ['failed'], ['read', 'delivered'], ['sent', 'failed']]);
            const statuses = order.map((st) => ({
              id,
              status: st,
              timestamp: String(Math.floor(clock / 1000)),
              recipient_id: r.pick(numbers),
              ...(st === 'failed' ? { errors: [{ code: 131026, title: 'Message undeliverable' }] } : {}),
            }));
            await app.post(notification(value({ statuses })));
          },
        ],
        [
          3,
          'reply job poisoned',
          async () => {
            const job = app.queued.shift();
            if (job) await app.runPoison(job);
          },
        ],
        [
          4,
          'notification poisoned',
          async () => {
            // Ingest failed on every attempt: the function of inbound-poison keeps it, per person.
            const picks = [r.int(numbers.length), r.int(numbers.length)];
            const payload = notification(
              value({
                contacts: picks.map((i) => ({ waId: numbers[i]!, name: names[i]! })),
                messages: picks.map((i) => message(numbers[i]!)),
              }),
            );
            sent.push(payload);
            await keepPoisonedWorker(runtimeOf(app.services))(
              JSON.parse(JSON.stringify(payload)),
              new InvocationContext({ functionName: 'keepPoisoned', logHandler: () => {} }),
            );
          },
        ],
        [
          2,
          'replay-poison',
          async () => {
            azurite ??= await startAzurite({ location: path.join(dir, 'azurite'), log: () => {} });
            const queueEnv = { ...env(), AzureWebJobsStorage: azurite.connectionString };
            const io = captureIo();
            expect(await runToExitCode(replayPoison, [], queueEnv, io), io.text()).toBe(0);
            const inbound = QueueServiceClient.fromConnectionString(azurite.connectionString).getQueueClient(
              'inbound',
            );
            const base64 = hostQueueSettings().messageEncoding === 'base64';
            for (;;) {
              const { receivedMessageItems } = await inbound.receiveMessages({ numberOfMessages: 32 });
              if (!receivedMessageItems.length) break;
              for (const item of receivedMessageItems) {
                const text = base64
                  ? Buffer.from(item.messageText, 'base64').toString('utf8')
                  : item.messageText;
                await app.ingest(text);
                await inbound.deleteMessage(item.messageId, item.popReceipt);
              }
            }
            if (r.chance(0.5)) await app.drain();
          },
        ],
        [
          3,
          'migrate',
          async () => {
            // A legacy file of some of the same people (and one new), into a database that has them.
            const people = [...numbers, '4479000007'];
            const rows: LegacyUserRow[] = [];
            const msgs: LegacyMessageRow[] = [];
            const stamp = (ms: number) => new Date(ms).toISOString().replace('T', ' ').slice(0, 23);
            const storedIn = await collectionOf(app.database.db, 'messages')
              .find({ direction: 'inbound' }, { projection: { _id: 1, waMessageId: 1 } })
              .toArray();
            for (let k = 1; k <= 1 + r.int(3); k++) {
              const i = r.int(people.length);
              if (rows.some((row) => row[1] === people[i])) continue;
              const created = clock - r.int(72) * HOUR;
              rows.push([
                k,
                people[i]!,
                r.chance(0.5) ? (names[i] ?? 'Gil') : null,
                r.chance(0.8) ? 1 : 0,
                stamp(created),
                stamp(created),
              ]);
              for (let n = 0; n < 1 + r.int(4); n++) {
                const role = r.pick(['user', 'user', 'assistant']);
                const wamid =
                  role === 'user'
                    ? r.chance(0.2) && storedIn.length
                      ? (r.pick(storedIn).waMessageId ?? null)
                      : `wamid.legacy.${seed}.${++inSeq}`
                    : null;
                msgs.push([
                  msgs.length + 1,
                  k,
                  role,
                  sentence(),
                  wamid,
                  stamp(created + n * MINUTE + r.int(1000)),
                ]);
              }
            }
            const file = await writeLegacyDb(rows, msgs);
            const io = captureIo();
            const code = await runToExitCode(migrate, [file], env(), io);
            expect(code, io.text()).toBe(0);
            await fs.rm(path.dirname(file), { recursive: true, force: true });
          },
        ],
        [
          2,
          'backup',
          async () => {
            const file = path.join(dir, `backup-${++inSeq}.ejson.gz`);
            const io = captureIo();
            expect(await runToExitCode(backup, ['--out', file], env(), io), io.stdout.join('\n')).toBe(0);
            backups.push({ file, retained: ledger.retained });
          },
        ],
        [
          2,
          'restore',
          async () => {
            // A backup from before a retention run would bring back what the ledger counts as deleted.
            const usable = backups.filter((b) => b.retained === ledger.retained && !ledger.retained);
            if (!usable.length) return;
            const io = captureIo();
            const code = await runToExitCode(restore, [r.pick(usable).file], env(), io);
            expect(code, [...io.stdout, ...io.stderr].join('\n')).toBe(0);
          },
        ],
        [
          2,
          'retention',
          async () => {
            await app.services.data.stats.foldPending();
            const before = await collectionOf(app.database.db, 'messages').find({}).toArray();
            ledger.retained = true;
            await app.services.data.retention.deleteOlderThan(new Date(clock - (2 + r.int(3)) * DAY));
            const left = new Set(
              (
                await collectionOf(app.database.db, 'messages')
                  .find({}, { projection: { _id: 1 } })
                  .toArray()
              ).map((m) => m._id),
            );
            for (const m of before) {
              if (left.has(m._id)) continue;
              if (m.userId) {
                ledger.touched.add(m.userId);
                if (m.direction === 'inbound')
                  ledger.inbound.set(m.userId, (ledger.inbound.get(m.userId) ?? 0) + 1);
              }
              const c = m.uncounted ? null : counts(m);
              if (!c) continue;
              ledger.totals[c.direction] = (ledger.totals[c.direction] ?? 0) + 1;
              if (c.failed && !m.failedUncounted)
                ledger.totals['failed'] = (ledger.totals['failed'] ?? 0) + 1;
              const d = ledger.days.get(c.day) ?? {};
              d[c.direction] = (d[c.direction] ?? 0) + 1;
              ledger.days.set(c.day, d);
              if (m.ai) {
                ledger.totals['aiRequests'] = (ledger.totals['aiRequests'] ?? 0) + 1;
                ledger.totals['aiTokens'] = (ledger.totals['aiTokens'] ?? 0) + m.ai.totalTokens;
                const x = ledger.models.get(m.ai.model) ?? { requests: 0, tokens: 0 };
                ledger.models.set(m.ai.model, {
                  requests: x.requests + 1,
                  tokens: x.tokens + m.ai.totalTokens,
                });
              }
            }
          },
        ],
        [
          2,
          'a day passes',
          async () => {
            clock = Math.min(clock + DAY, Date.now() - MINUTE);
          },
        ],
        [
          2,
          'handoffs near their end',
          async () => {
            // To within half an hour either side of HANDOFF_HOURS after the latest handoff's clock.
            const users = await collectionOf(app.database.db, 'users')
              .find({ handoff: { $ne: null } })
              .toArray();
            const latest = Math.max(0, ...users.map((u) => u.handoff?.activeAt.getTime() ?? 0));
            if (!latest) return;
            const end = latest + HANDOFF_HOURS * HOUR + (r.int(60) - 30) * MINUTE;
            clock = Math.min(Math.max(clock, end), Date.now() - MINUTE);
          },
        ],
      ];
      const total = ops.reduce((a, [w]) => a + w, 0);
      const pickOp = () => {
        let x = r.int(total);
        for (const op of ops) if ((x -= op[0]) < 0) return op;
        return ops[0]!;
      };

      try {
        for (let step = 0; step < STEPS; step++) {
          tick();
          const [, name, run] = pickOp();
          trace.push(name);
          await run();
          const diff = await differences(app, ledger, new Date());
          if (diff.length)
            throw new Error(`after step ${step} (${trace.slice(-6).join(' → ')}):\n${diff.join('\n')}`);
        }
        // Kept poisoned notifications are a problem to the health check until replayed.
        if (await collectionOf(app.database.db, 'events').countDocuments({ kind: 'poisoned' }))
          await ops.find(([, name]) => name === 'replay-poison')![2]();
        await app.drain();
        await app.services.data.stats.foldPending();
        if (process.env['DERIVED_VERBOSE']) {
          const { users, messages } = await stored(app);
          const tally = (xs: string[]) =>
            Object.fromEntries([...new Set(xs)].map((x) => [x, xs.filter((y) => y === x).length]));
          console.log(
            seed,
            tally(trace),
            users.length,
            tally(
              messages.map(
                (m) => `${m.direction}/${m.type}/${m.status}/${m.replyState ?? ''}/${m.role ?? ''}`,
              ),
            ),
          );
        }
        expect(await differences(app, ledger, new Date())).toEqual([]);

        // Healthy: the repair changes nothing.
        const snapshot = await stored(app);
        const healthy = await runHealth(['--repair']);
        expect(healthy.out).not.toMatch(/→/);
        expect(await stored(app)).toEqual(snapshot);

        // Damaged on purpose: the repair restores exactly the recount.
        const users = collectionOf(app.database.db, 'users');
        const stats = collectionOf(app.database.db, 'stats');
        for (const u of await users.find({}).toArray())
          await users.updateOne(
            { _id: u._id },
            {
              $set: {
                messageCount: 99,
                lastMessageId: 'nothing',
                lastMessagePreview: 'x',
                inboundCount: 0,
                lastInboundAt: null,
              },
            },
          );
        if (!ledger.retained) {
          await stats.updateOne(
            { _id: 'totals' },
            { $inc: { inbound: 5, outbound: -1, failed: 3, newUsers: 2 } },
          );
          await stats.updateMany({ _id: { $regex: '^day:' } }, { $inc: { inbound: 1 } });
        }
        if (!ledger.retained) {
          // After a retention run counters are only raised to what is stored (deleted messages
          // cannot be counted again): damaged counters are then a different check.
          await stats.insertOne({ _id: `day:${dayOf(new Date(realStart - 20 * DAY))}`, inbound: 4 });
          await stats.deleteMany({ _id: { $regex: '^model:model-a' } });
        }
        const broken = await runHealth([]);
        expect(broken.code).toBe(1);
        const repaired = await runHealth(['--repair']);
        expect(repaired.code, repaired.out).toBe(0);
        expect(await differences(app, ledger, new Date())).toEqual([]);
        expect((await runHealth([])).code).toBe(0);
      } catch (error) {
        (error as Error).message = `DERIVED_SEED=${seed}: ${(error as Error).message}`;
        throw error;
      }
    },
  );
});
