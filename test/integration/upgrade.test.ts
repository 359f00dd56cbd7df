// The upgrade from the version at commit 08b1686: a backup that version wrote (by the real old code
// through its webhook, reply worker and management API: AI answers, Chinese, Japanese and Thai
// texts, a number change, handoffs, operator sends, an erase, a stop; test/fixtures/upgrade/) is
// restored by today's `npm run restore`, checked and repaired by `npm run health`, and used by
// today's app: existing users write again, an operator sends with an Idempotency-Key, users the
// old version created are exported and erased, and the stats are those the old version kept.
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as health } from '../../scripts/health';
import { main as restore } from '../../scripts/restore';
import { runtimeOf } from '../../shared/deps';
import { manageHandlers } from '../../functions/manage';
import { captureIo } from '../fixtures/scripts';
import { startTestApp, type TestApp } from '../helpers/app';
import { call } from '../helpers/manage-fixture';
import { textNotification } from '../helpers/meta';

const FIXTURE = path.join(__dirname, '../fixtures/upgrade/backup-08b1686.jsonl');
const TOKEN = 'manage-token-for-upgrade-tests-0123';
// The users of the fixture (fictional numbers), as the old version stored them.
const CEM = { id: 'u_376c3d4cc0a26d60de59f2a6', waId: '15550001016', previous: '15550001006' };
const EVE = { id: 'u_a4601e9fffcc48a6d557230d', waId: '15550001008' };
const ANA = { id: 'u_8f6277471e5d60dd9d4ccdec', waId: '15550001001' };

let app: TestApp;
let h: ReturnType<typeof manageHandlers>;
let dir: string;
let file: string;
const env = () => ({ MONGODB_URI: app.database.uri, MONGODB_DATABASE: app.database.dbName });
const stats = async () => (await call(h.stats, { token: TOKEN })).body as Record<string, unknown>;

beforeAll(async () => {
  app = await startTestApp({ MANAGE_API_TOKEN: TOKEN });
  h = manageHandlers(runtimeOf(app.services));
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'upgrade-'));
  file = path.join(dir, 'backup-08b1686.jsonl.gz');
  await fs.writeFile(file, gzipSync(await fs.readFile(FIXTURE)));
});

afterAll(async () => {
  await app?.close();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('a backup of the version at 08b1686, on today’s code', () => {
  it('is restored whole, operator messages included', async () => {
    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    expect(io.text()).toMatch(/users: +9\b/);
    expect(io.text()).toMatch(/messages: +27\b/);
    const operator = await app.database.db.collection('messages').countDocuments({ role: 'operator' });
    expect(operator).toBe(2);
  });

  it('health reports only the search terms today’s rule changed, and --repair leaves no problem', async () => {
    const before = await stats();
    // Exactly the texts and names written in Chinese, Japanese or Thai (user texts, AI answers, an
    // operator's message, names): nothing else the old version wrote is a problem today.
    const db = app.database.db;
    const spaceless = /[\u0e00-\u0e7f\u3040-\u30ff\u4e00-\u9fff]/;
    const texts = await db
      .collection('messages')
      .find({}, { projection: { text: 1 } })
      .toArray();
    const names = await db
      .collection('users')
      .find({}, { projection: { name: 1 } })
      .toArray();
    const stale =
      texts.filter((m) => spaceless.test(String(m['text'] ?? ''))).length +
      names.filter((u) => spaceless.test(String(u['name'] ?? ''))).length;
    expect(stale).toBe(19);
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.text()).toMatch(/out-of-date search terms: +19\n/);
    // Every message the backup held, counted or not yet folded into the counters.
    expect(io.text()).toMatch(/\n *messages: +27\n/);
    expect(io.text()).toMatch(/problems: +19\n/);
    // The line says how to repair it.
    expect(io.text()).toMatch(
      /: 19 \(search misses some of their words\); `npm run health -- --repair` recomputes them\n/,
    );
    const repair = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), repair), repair.text()).toBe(0);
    expect(repair.text()).toMatch(/search terms recomputed: +19\n/);
    const again = captureIo();
    expect(await runToExitCode(health, [], env(), again), again.text()).toBe(0);
    expect(await stats()).toEqual(before);
    const found = await call(h.messages, { token: TOKEN, query: { q: 'nintendo' } });
    expect((found.body as { items: { text: string }[] }).items.map((m) => m.text)).toEqual([
      '大阪でNintendoを買った',
    ]);
  });

  it('serves its users: a new message, a keyed operator send, export and erase', async () => {
    const { payload } = textNotification(ANA.waId, 'back after the upgrade', 'Ana Latin');
    expect((await app.post(payload)).status).toBe(200);
    await app.drain();
    const ana = (await call(h.user, { token: TOKEN, params: { id: ANA.id } })).body as {
      messageCount: number;
    };
    expect(ana.messageCount).toBe(6);

    // Eve's conversation was taken by the old version; she writes, an operator answers twice
    // with the same Idempotency-Key: one send.
    expect((await app.post(textNotification(EVE.waId, 'still there?', 'Eve Waiting').payload)).status).toBe(
      200,
    );
    await app.drain();
    const sends = app.graph.sends().length;
    const send = () =>
      call(h.userMessages, {
        token: TOKEN,
        method: 'POST',
        params: { id: EVE.id },
        body: { text: 'yes, here' },
        headers: { 'idempotency-key': 'upgrade-key-1' },
      });
    const first = await send();
    const second = await send();
    expect(first.status).toBe(201);
    expect(second).toMatchObject({ status: 201, body: first.body });
    expect(app.graph.sends().length).toBe(sends + 1);

    const exported = await call(h.userExport, { token: TOKEN, params: { id: CEM.id } });
    expect(exported.body).toMatchObject({
      previousWaIds: [CEM.previous],
      previousBsuids: [],
      truncated: false,
    });
    expect((exported.body as { events: { kind: string }[] }).events.map((e) => e.kind)).toEqual(['system']);
    expect((await call(h.user, { token: TOKEN, method: 'DELETE', params: { id: CEM.id } })).status).toBe(204);
    const db = app.database.db;
    for (const number of [CEM.waId, CEM.previous]) {
      expect(await db.collection('users').countDocuments({ waId: number })).toBe(0);
      expect(await db.collection('events').countDocuments({ payloadJson: { $regex: number } })).toBe(0);
    }
    expect(await db.collection('messages').countDocuments({ userId: CEM.id })).toBe(0);
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io), io.text()).toBe(0);
  });
});
