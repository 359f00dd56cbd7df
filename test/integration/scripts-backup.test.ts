// npm run seed, indexes, backup and restore against the real test database.
import { execFile, execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as backup } from '../../scripts/backup';
import { main as indexes } from '../../scripts/indexes';
import { main as health } from '../../scripts/health';
import { main as restore } from '../../scripts/restore';
import { main as seed } from '../../scripts/seed';
import { createDataStore, SentBeforeErase } from '../../shared/data';
import { hashToken } from '../../shared/manage/auth';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { captureIo, runScriptUntil } from '../fixtures/scripts';
import type { Io } from '../../scripts/lib/cli';
import { importIdOf } from '../helpers/users';

let t: TestDatabase;
let dir: string;
const env = () => ({ MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName });

async function snapshot() {
  const out: Record<string, unknown[]> = {};
  for (const name of ['users', 'messages', 'stats', 'events', 'tokens']) {
    out[name] = await t.db.collection(name).find({}).sort({ _id: 1 }).toArray();
  }
  return out;
}

beforeAll(async () => {
  t = await testDatabase('scripts-backup');
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'backup-'));
});

afterAll(async () => {
  await t?.drop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe('npm run indexes', () => {
  it('creates the indexes, then verifies them', async () => {
    const first = captureIo();
    expect(await runToExitCode(indexes, [], env(), first)).toBe(0);
    expect(first.stdout.join('\n')).toMatch(/created {2}messages\.userId_createdAt_id/);
    const second = captureIo();
    expect(await runToExitCode(indexes, ['--verify'], env(), second)).toBe(0);
    expect(second.stdout.join('\n')).toMatch(/created:\s+0/);
    expect(second.stdout.join('\n')).toMatch(/missing:\s+0/);
  });

  it('rejects unknown options', async () => {
    const io = captureIo();
    expect(await runToExitCode(indexes, ['--bogus'], env(), io)).toBe(2);
    expect(io.text()).toMatch(/Unknown option '--bogus'.*see --help/);
  });
});

describe('npm run seed', () => {
  it('produces the requested counts with consistent summaries and counters', async () => {
    const io = captureIo();
    expect(await runToExitCode(seed, ['--users', '5', '--messages', '31', '--yes'], env(), io)).toBe(0);
    expect(await t.db.collection('users').countDocuments()).toBe(5);
    expect(await t.db.collection('messages').countDocuments()).toBe(31);
    const users = await t.db.collection('users').find({}).toArray();
    expect(users.reduce((n, u) => n + (u['messageCount'] as number), 0)).toBe(31);
    const totals = await createDataStore(t.db).maintenance.readTotals();
    expect(totals).toMatchObject({ newUsers: 5 });
    expect((totals?.inbound ?? 0) + (totals?.outbound ?? 0)).toBe(31);
    const oldest = await t.db.collection('messages').find({}).sort({ createdAt: 1 }).limit(1).toArray();
    expect(Date.now() - (oldest[0]?.['createdAt'] as Date).getTime()).toBeLessThanOrEqual(30 * 86_400_000);
    // Nothing seeded waits for an answer.
    expect(
      await t.db.collection('messages').countDocuments({ replyState: { $in: ['pending', 'sending'] } }),
    ).toBe(0);
  });
});

describe('npm run backup / restore', () => {
  it('round-trips every collection exactly (tokens only when asked), and restoring twice changes nothing', async () => {
    const data = createDataStore(t.db);
    await data.events.archive({
      kind: 'unparsed',
      reason: 'test',
      payload: { a: [1, 2.5, 'x'], n: null },
      at: new Date(),
    });
    await data.tokens.create({
      name: 'ops',
      hash: hashToken('wam_ops'),
      createdAt: new Date(),
      expiresAt: null,
    });
    // Documents as the webhook path writes them: an inbound message with its raw form, a reply
    // lock, an answer moved forward by a status, and the placeholder of a status that came first.
    const at = new Date();
    const { user } = await data.users.resolve({ waId: '15550001111', bsuid: null, name: 'Ana' }, at);
    await data.messages.recordInbound({
      id: 'wamid.in1',
      userId: user.id,
      type: 'text',
      text: 'hola',
      createdAt: at,
      receivedAt: at,
      phoneNumberId: '1234',
      role: 'conversation',
      replyState: 'pending',
      relatedId: null,
      rawJson: JSON.stringify({ from: '15550001111', id: 'wamid.in1', text: { body: 'hola' }, type: 'text' }),
    });
    expect(await data.users.lockForReply(user.id, 'worker-1', 60_000, new Date())).not.toBeNull();
    await data.messages.recordOutbound({
      id: 'wamid.out1',
      waMessageId: 'wamid.out1',
      userId: user.id,
      type: 'text',
      text: '¡hola!',
      status: 'sent',
      createdAt: at,
      role: 'conversation',
      phoneNumberId: '1234',
      relatedId: 'wamid.in1',
      error: null,
      ai: {
        provider: 'test',
        model: 'm',
        promptTokens: 3,
        completionTokens: 2,
        totalTokens: 5,
        latencyMs: 12.5,
      },
    });
    await data.messages.applyStatus({
      waMessageId: 'wamid.out1',
      status: 'delivered',
      at,
      recipient: null,
      error: null,
    });
    await data.messages.applyStatus({
      waMessageId: 'wamid.unknown',
      status: 'failed',
      at,
      recipient: null,
      error: { code: 131026, title: 'Message undeliverable' },
    });
    const before = await snapshot();
    expect(before['tokens']).toHaveLength(1);
    const file = path.join(dir, 'nested', 'b.jsonl.gz');
    const io = captureIo();
    expect(await runToExitCode(backup, ['--out', file], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages:\s+34\n/);

    await t.db.dropDatabase();
    expect(await t.db.collection('users').countDocuments()).toBe(0);

    const r1 = captureIo();
    expect(await runToExitCode(restore, [file], env(), r1), r1.text()).toBe(0);
    expect(r1.stdout.join('\n')).toMatch(/tokens skipped:\s+1 \(restore them with --include-tokens\)/);
    expect(await snapshot()).toEqual({ ...before, tokens: [] });

    const r2 = captureIo();
    expect(await runToExitCode(restore, [file, '--include-tokens'], env(), r2), r2.text()).toBe(0);
    expect(r2.stdout.join('\n')).toMatch(/tokens:\s+1/);
    expect(r2.stdout.join('\n')).not.toMatch(/tokens skipped/);
    expect(await snapshot()).toEqual(before);

    const r3 = captureIo();
    expect(
      await runToExitCode(restore, [file, '--batch-size', '7', '--include-tokens'], env(), r3),
      r3.text(),
    ).toBe(0);
    expect(await snapshot()).toEqual(before);
    const names = (await t.db.collection('messages').listIndexes().toArray()).map((i) => i['name']);
    expect(names).toContain('userId_createdAt_id');
  });

  it('refuses an incompatible version or format with a clear message', async () => {
    const v2 = path.join(dir, 'v2.jsonl.gz');
    await fs.writeFile(v2, gzipSync('{"format":"whatsapp-bot-backup","version":2,"collections":{}}\n'));
    const io = captureIo();
    expect(await runToExitCode(restore, [v2], env(), io)).toBe(1);
    expect(io.text()).toMatch(/backup format version 2; this version restores only version 1/);

    const other = path.join(dir, 'other.jsonl.gz');
    await fs.writeFile(other, gzipSync('{"hello":"world"}\n'));
    const io2 = captureIo();
    expect(await runToExitCode(restore, [other], env(), io2)).toBe(1);
    expect(io2.text()).toMatch(/is not a backup of this bot/);

    const plain = path.join(dir, 'plain.txt');
    await fs.writeFile(plain, 'not gzip');
    const io3 = captureIo();
    expect(await runToExitCode(restore, [plain], env(), io3)).toBe(1);
    expect(io3.text()).toMatch(/not a gzip backup file/);

    const io4 = captureIo();
    expect(await runToExitCode(restore, [path.join(dir, 'missing.gz')], env(), io4)).toBe(1);
    expect(io4.text()).toContain(`cannot read ${path.join(dir, 'missing.gz')}: no such file`);
  });
});

describe('restoring over a database that moved on since the backup', () => {
  it('leaves an erased user erased, keeps newer messages, and leaves summaries and counters agreeing with the messages', async () => {
    await t.db.dropDatabase();
    expect(await runToExitCode(seed, ['--users', '4', '--messages', '80', '--yes'], env(), captureIo())).toBe(
      0,
    );
    const data = createDataStore(t.db);
    const file = path.join(dir, 'moved-on.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);
    const before = await snapshot();
    const [erased, other] = before['users'] as { _id: string; waId: string }[];
    const mine = (docs: unknown[], id: string) =>
      (docs as Record<string, unknown>[]).filter((d) => d['_id'] === id || d['userId'] === id);
    const erasedMessages = mine(before['messages']!, erased!._id).length;
    expect(erasedMessages).toBeGreaterThan(0);
    // After the backup: one user erased (as the management API does: audited, then erased), and
    // another writes again.
    await data.personal.audit({ tokenName: 'ops', action: 'erase', userId: erased!._id, at: new Date() });
    expect(await data.personal.eraseUser(erased!._id)).not.toBeNull();
    const erasedState = await snapshot();
    const newer = { id: 'wamid.newer', userId: other!._id, waMessageId: 'wamid.newer', text: 'newer' };
    await data.maintenance.importMessages([{ ...newer, direction: 'inbound', createdAt: new Date() }]);

    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    const out = io.stdout.join('\n');
    expect(out).toMatch(/summaries rebuilt \(disagreeing with the stored messages\):\s+1/);
    expect(out).toMatch(
      new RegExp(`left out \\(erased after the backup\\):\\s+1 users, ${erasedMessages} messages`),
    );
    const after = await snapshot();
    // The erase stays done: nothing of the erased user came back, the counters are as the erase
    // left them plus the newer message.
    expect(mine(after['users']!, erased!._id)).toEqual([]);
    expect(mine(after['messages']!, erased!._id)).toEqual([]);
    expect(after['messages']).toHaveLength((before['messages']?.length ?? 0) - erasedMessages + 1);
    expect(JSON.stringify(after)).not.toContain(erased!.waId);
    const totals = (state: Record<string, unknown[]>) =>
      (state['stats'] as Record<string, unknown>[]).find((d) => d['_id'] === 'totals');
    expect(totals(after)).toMatchObject({
      ...(totals(erasedState) as object),
      inbound: (totals(erasedState)?.['inbound'] as number) + 1,
    });
    // The newer message is kept, and counted in its user's summary.
    expect(await data.users.getUser(other!._id)).toMatchObject({ lastMessageId: 'wamid.newer' });
    const checked = captureIo();
    expect(await runToExitCode(health, [], env(), checked), checked.text()).toBe(0);
    // Restoring again ends in the same state.
    const settled = await snapshot();
    const again = captureIo();
    expect(await runToExitCode(restore, [file], env(), again), again.text()).toBe(0);
    expect(await snapshot()).toEqual(settled);
  });

  it('an erase applies to the record of the user it erased, not to the person who wrote again after it', async () => {
    await t.db.dropDatabase();
    const data = createDataStore(t.db);
    const erasedAt = new Date('2026-05-01T12:00:00Z');
    for (const userId of ['u-old', 'u-again'])
      await data.personal.audit({ tokenName: 'ops', action: 'erase', userId, at: erasedAt });
    await data.personal.audit({ tokenName: 'ops', action: 'export', userId: 'u-kept', at: erasedAt });
    // The file's items were filed under the deployment's key.
    const subject = await data.events.subjectOf('15550001111');
    const leftOut = await data.personal.erasedSinceBackup(new Date('2026-05-01T11:00:00Z'), [
      { _id: 'u-old', createdAt: new Date('2026-04-01T00:00:00Z'), waId: '15550001111' },
      { _id: 'u-again', createdAt: new Date('2026-05-01T12:05:00Z'), waId: '15550002222' },
      { _id: 'u-kept', createdAt: new Date('2026-04-01T00:00:00Z'), waId: '15550003333' },
    ]);
    expect(leftOut.users).toBe(1);
    expect(leftOut.leavesOut('users', { _id: 'u-old', createdAt: new Date('2026-04-01T00:00:00Z') })).toBe(
      true,
    );
    expect(leftOut.leavesOut('messages', { _id: 'm1', userId: 'u-old' })).toBe(true);
    expect(leftOut.leavesOut('events', { _id: 'e1', kind: 'system', subject })).toBe(true);
    // The audit trail stays; the others' documents are written.
    expect(leftOut.leavesOut('events', { _id: 'a1', kind: 'audit', userId: 'u-old' })).toBe(false);
    expect(leftOut.leavesOut('users', { _id: 'u-again', createdAt: new Date('2026-05-01T12:05:00Z') })).toBe(
      false,
    );
    expect(
      leftOut.leavesOut('events', {
        _id: 'e2',
        kind: 'system',
        subject: await data.events.subjectOf('15550002222'),
      }),
    ).toBe(false);
    expect(leftOut.leavesOut('messages', { _id: 'm2', userId: 'u-kept' })).toBe(false);
    expect(leftOut.left).toEqual({ users: 1, messages: 1, events: 1 });
    expect(leftOut.delta.totals.newUsers).toBe(-1);
    // An erase long before the backup began is not the file's business (the file cannot hold them).
    const later = await data.personal.erasedSinceBackup(new Date('2026-06-01T00:00:00Z'), [
      { _id: 'u-old', createdAt: new Date('2026-04-01T00:00:00Z'), waId: '15550001111' },
    ]);
    expect(later.users).toBe(0);
  });

  it('an erase that comes after the backup leaves out its user’s archived items, not those filed with the number’s next holder', async () => {
    // A moved from one number to another; B took the number after. An item about the number that
    // came while B held it is B's (filed with B, as ingest files it: `holdersOf`); the erase of A
    // left it, and so must a restore of a backup made before that erase, into an empty database
    // and into the same one.
    await t.db.dropDatabase();
    const data = createDataStore(t.db);
    const at = new Date(Date.now() - 3 * 86_400_000);
    const { user: a } = await data.users.resolve({ waId: '15550008881', bsuid: null, name: 'A' }, at);
    const aItem = {
      kind: 'system',
      reason: 'a',
      payload: { from: '15550008881', n: 'a' },
      identifier: '15550008881',
      userId: a.id,
      at,
    };
    await data.events.archive(aItem);
    expect(await data.users.changeNumber(a.id, '15550008882')).toBe('moved');
    const { user: b } = await data.users.resolve({ waId: '15550008881', bsuid: null, name: 'B' }, new Date());
    expect(b.id).not.toBe(a.id);
    const holders = await data.users.holdersOf(['15550008881']);
    expect(holders.get('15550008881')).toBe(b.id);
    await data.events.archive({
      ...aItem,
      reason: 'b',
      payload: { from: '15550008881', n: 'b' },
      userId: b.id,
      at: new Date(),
    });
    const file = path.join(dir, 'next-holder.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);

    await data.personal.audit({ tokenName: 'ops', action: 'erase', userId: a.id, at: new Date() });
    expect(await data.personal.eraseUser(a.id)).toMatchObject({ events: 1 });
    const items = async () =>
      (await t.db.collection('events').find({ kind: 'system' }).toArray()).map((e) => [
        e['reason'],
        e['userId'],
      ]);
    expect(await items()).toEqual([['b', b.id]]);
    const erased = await snapshot();

    // Into the same database: nothing changes.
    const same = captureIo();
    expect(await runToExitCode(restore, [file], env(), same), same.text()).toBe(0);
    expect(same.stdout.join('\n')).toMatch(
      /left out \(erased after the backup\):\s+1 users, 0 messages, 1 archived items/,
    );
    const { users, messages, events } = await snapshot();
    expect({ users, messages, events }).toEqual({
      users: erased['users'],
      messages: erased['messages'],
      events: erased['events'],
    });

    // Into an empty database (the erase's audit entry kept elsewhere, as an operator restoring a
    // lost database brings its trail back too): B's item comes back, A's does not.
    const trail = await t.db.collection('events').find({ kind: 'audit' }).toArray();
    await t.db.dropDatabase();
    await t.db.collection('events').insertMany(trail);
    const empty = captureIo();
    expect(await runToExitCode(restore, [file], env(), empty), empty.text()).toBe(0);
    expect(await items()).toEqual([['b', b.id]]);
    expect((await createDataStore(t.db).personal.exportUser(b.id))?.events.map((e) => e.reason)).toEqual([
      'b',
    ]);
    const checked = captureIo();
    expect(await runToExitCode(health, [], env(), checked), checked.text()).toBe(0);
  });

  it('an erase under way while the backup ran keeps what it remembers when the file is restored into the same database', async () => {
    // The management API writes the erase's audit entry first, then erases, adding to the entry
    // the keyed hashes of the recent messages it removes. A backup taken in between holds the
    // entry without them: restored over the entry the erase completed, it must not take them away.
    await t.db.dropDatabase();
    const data = createDataStore(t.db);
    const phone = '15550008883';
    const now = new Date();
    // Sent (Meta's time) long before the erase, delivered late: only its remembered id drops it.
    const sentAt = new Date(Math.floor((now.getTime() - 10 * 86_400_000) / 1000) * 1000);
    const { user } = await data.users.resolve({ waId: phone, bsuid: null, name: 'C' }, sentAt);
    await data.messages.recordInbound({
      id: 'wamid.late',
      userId: user.id,
      type: 'text',
      text: 'late',
      createdAt: sentAt,
      receivedAt: now,
      phoneNumberId: '1234',
      role: 'conversation',
      replyState: 'none',
      relatedId: null,
      rawJson: JSON.stringify({ from: phone, id: 'wamid.late', text: { body: 'late' }, type: 'text' }),
    });
    await data.personal.audit({ tokenName: 'ops', action: 'erase', userId: user.id, at: now });
    const file = path.join(dir, 'during-erase.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);
    expect(await data.personal.eraseUser(user.id, now)).toMatchObject({ messages: 1 });
    const remembered = async () =>
      (await t.db.collection('events').findOne({ kind: 'audit', reason: 'erase' }))?.['erasedMessages'];
    expect(await remembered()).toHaveLength(1);
    const redelivered = () =>
      createDataStore(t.db).users.refuseSentBeforeErase({ waId: phone, bsuid: null }, sentAt, 'wamid.late');
    await expect(redelivered()).rejects.toBeInstanceOf(SentBeforeErase);
    const before = await remembered();

    for (const run of [1, 2]) {
      const io = captureIo();
      expect(await runToExitCode(restore, [file], env(), io), `${run}: ${io.text()}`).toBe(0);
      expect(io.stdout.join('\n')).toMatch(/left out \(erased after the backup\):\s+1 users, 1 messages/);
      expect(await remembered(), `run ${run}`).toEqual(before);
      await expect(redelivered()).rejects.toBeInstanceOf(SentBeforeErase);
      expect(await t.db.collection('users').countDocuments()).toBe(0);
    }
  });

  it('an item of a person erased before the backup, delivered again after a restore into a database with its own key, is not archived again', async () => {
    // The erase names the person's subjects and remembers its items under the key of the database
    // it ran on; restored into one with a key of its own, that key files new items.
    await t.db.dropDatabase();
    const old = createDataStore(t.db);
    const phone = '15550008884';
    const now = new Date();
    const hourAgo = new Date(Math.floor((now.getTime() - 3_600_000) / 1000) * 1000);
    const longAgo = new Date(hourAgo.getTime() - 10 * 86_400_000);
    const { user } = await old.users.resolve({ waId: phone, bsuid: null, name: 'D' }, hourAgo);
    // Sent an hour before the erase; and sent long before it, delivered late (only its remembered id drops it).
    const recent = {
      kind: 'system',
      reason: 'recent',
      payload: { from: phone, n: 1 },
      identifier: phone,
      userId: user.id,
      sentAt: hourAgo,
    };
    const late = { ...recent, reason: 'late', payload: { from: phone, n: 2 }, sentAt: longAgo };
    expect(await old.events.archiveUnlessErased([recent, late], hourAgo)).toBe(0);
    await old.personal.audit({ tokenName: 'ops', action: 'erase', userId: user.id, at: now });
    expect(await old.personal.eraseUser(user.id, now)).toMatchObject({ events: 2 });
    expect(await old.events.archiveUnlessErased([recent, late], new Date())).toBe(2);
    const file = path.join(dir, 'erased-items-other-key.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);

    await t.db.dropDatabase();
    const own = await createDataStore(t.db).events.subjectOf(phone);
    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    const data = createDataStore(t.db);
    expect(await data.events.subjectOf(phone)).toBe(own);
    expect(await data.events.archiveUnlessErased([recent, late], new Date())).toBe(2);
    expect(await t.db.collection('events').countDocuments({ kind: 'system' })).toBe(0);
  });

  it('a person who wrote to a database that has its own key is one user after the file is restored, twice', async () => {
    // The database was lost; the app ran on an empty one (a new deployment key) before the last
    // backup was restored. Ids are keyed: the file names the person otherwise than the database.
    await t.db.dropDatabase();
    const phone = '15550006666';
    const old = createDataStore(t.db);
    const before = new Date(Date.now() - 2 * 86_400_000);
    const { user: filed } = await old.users.resolve({ waId: phone, bsuid: null, name: 'Ana' }, before);
    await old.maintenance.importMessages([
      {
        id: 'wamid.old',
        userId: filed.id,
        waMessageId: 'wamid.old',
        direction: 'inbound',
        text: 'before',
        createdAt: before,
      },
    ]);
    const file = path.join(dir, 'other-key.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);

    await t.db.dropDatabase();
    const data = createDataStore(t.db);
    const { user: again } = await data.users.resolve({ waId: phone, bsuid: null, name: 'Ana' }, new Date());
    expect(again.id).not.toBe(filed.id);
    await data.maintenance.importMessages([
      {
        id: 'wamid.new',
        userId: again.id,
        waMessageId: 'wamid.new',
        direction: 'inbound',
        text: 'after',
        createdAt: new Date(),
      },
    ]);

    for (const run of [1, 2]) {
      const io = captureIo();
      expect(await runToExitCode(restore, [file], env(), io), `${run}: ${io.text()}`).toBe(0);
      const users = await t.db.collection('users').find({ waId: phone }).toArray();
      expect(
        users.map((u) => String(u._id)),
        `run ${run}`,
      ).toEqual([again.id]);
      const messages = await t.db.collection('messages').find({}).sort({ _id: 1 }).toArray();
      expect(messages.map((m) => [m._id, m['userId']])).toEqual([
        ['wamid.new', again.id],
        ['wamid.old', again.id],
      ]);
      expect(await data.users.getUser(again.id)).toMatchObject({
        messageCount: 2,
        lastMessageId: 'wamid.new',
      });
      const checked = captureIo();
      expect(await runToExitCode(health, [], env(), checked), checked.text()).toBe(0);
    }
    // The person writes on as that user.
    expect(
      (await createDataStore(t.db).users.resolve({ waId: phone, bsuid: null, name: 'Ana' }, new Date())).user
        .id,
    ).toBe(again.id);
  });

  it('a person erased from a database that has its own key stays erased when the file is restored', async () => {
    // The database was lost; on the empty one (a new key) the person wrote and was erased before
    // the last backup was restored: the erase names the id the new key gave, the file another.
    await t.db.dropDatabase();
    const phone = '15550007777';
    const old = createDataStore(t.db);
    const before = new Date(Date.now() - 2 * 86_400_000);
    const { user: filed } = await old.users.resolve({ waId: phone, bsuid: null, name: 'Eve' }, before);
    await old.maintenance.importMessages([
      {
        id: 'wamid.eve-old',
        userId: filed.id,
        waMessageId: 'wamid.eve-old',
        direction: 'inbound',
        text: 'before',
        createdAt: before,
      },
    ]);
    const file = path.join(dir, 'erased-other-key.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);

    await t.db.dropDatabase();
    const data = createDataStore(t.db);
    const { user: again } = await data.users.resolve({ waId: phone, bsuid: null, name: 'Eve' }, new Date());
    expect(again.id).not.toBe(filed.id);
    await data.personal.audit({ tokenName: 'ops', action: 'erase', userId: again.id, at: new Date() });
    expect(await data.personal.eraseUser(again.id)).not.toBeNull();

    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/left out \(erased after the backup\):\s+1 users, 1 messages/);
    expect(await t.db.collection('users').countDocuments({ waId: phone })).toBe(0);
    expect(await t.db.collection('messages').countDocuments({ _id: 'wamid.eve-old' } as object)).toBe(0);
    const checked = captureIo();
    expect(await runToExitCode(health, [], env(), checked), checked.text()).toBe(0);
  });

  it('archived items keep being found after a restore into another database, and after the app secret changes', async () => {
    await t.db.dropDatabase();
    const first = createDataStore(t.db);
    // Filed with the deployment's key, kept in the database; no app secret is involved.
    const item = {
      kind: 'system',
      reason: 'test',
      payload: { from: '15550004444' },
      identifier: '15550004444',
      at: new Date(),
    };
    await first.events.archive(item);
    const subject = await first.events.subjectOf('15550004444');
    expect(subject).toMatch(/^s_[0-9a-f]{24}$/);
    expect((await t.db.collection('events').findOne({}))?.['subject']).toBe(subject);
    const file = path.join(dir, 'keys.jsonl.gz');
    expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);

    // Another database that already has its own key and items.
    await t.db.dropDatabase();
    const second = createDataStore(t.db);
    await second.events.archive({ ...item, payload: { from: '15550004444', n: 2 } });
    expect(await second.events.subjectOf('15550004444')).not.toBe(subject);
    const io = captureIo();
    expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    // Both items are found and erased with the user's number: the file's key was adopted, and
    // the database's own still files new items.
    const fresh = createDataStore(t.db);
    await fresh.maintenance.importUsers([
      {
        id: await importIdOf(fresh, '15550004444'),
        waId: '15550004444',
        name: null,
        createdAt: new Date(),
        optedOut: false,
      },
    ]);
    const [user] = await t.db.collection('users').find({}).toArray();
    const exported = await fresh.personal.exportUser(String(user?._id));
    expect(exported?.events).toHaveLength(2);
    expect(await fresh.personal.eraseUser(String(user?._id))).toMatchObject({ events: 2 });
    expect(await t.db.collection('events').countDocuments({ kind: 'system' })).toBe(0);
  });

  it('a running app finds the items of backups restored beside it', async () => {
    const item = {
      kind: 'system',
      reason: 'test',
      payload: { from: '15550005555' },
      identifier: '15550005555',
      at: new Date(),
    };
    // Two backups of other databases, each with its own key.
    const files: string[] = [];
    for (const name of ['a', 'b']) {
      await t.db.dropDatabase();
      await createDataStore(t.db).events.archive({ ...item, payload: { from: '15550005555', name } });
      const file = path.join(dir, `beside-${name}.jsonl.gz`);
      expect(await runToExitCode(backup, ['--out', file], env(), captureIo())).toBe(0);
      files.push(file);
    }

    // The app runs on a database with a key of its own, which it has used (and keeps in memory).
    await t.db.dropDatabase();
    const app = createDataStore(t.db);
    await app.events.archive({ ...item, payload: { from: '15550005555', name: 'own' } });
    for (const file of files) {
      const io = captureIo();
      expect(await runToExitCode(restore, [file], env(), io), io.text()).toBe(0);
    }

    // The running app's export and erase find all three items.
    await app.maintenance.importUsers([
      {
        id: await importIdOf(app, '15550005555'),
        waId: '15550005555',
        name: null,
        createdAt: new Date(),
        optedOut: false,
      },
    ]);
    const [user] = await t.db.collection('users').find({}).toArray();
    expect((await app.personal.exportUser(String(user?._id)))?.events).toHaveLength(3);
    expect(await app.personal.eraseUser(String(user?._id))).toMatchObject({ events: 3 });
    expect(await t.db.collection('events').countDocuments({ kind: 'system' })).toBe(0);
  });

  it('two restores at once keep the keys of both files after the database key', async () => {
    await t.db.dropDatabase();
    const own = await createDataStore(t.db).events.subjectOf('15550006666');
    const fileKeys = [['a'.repeat(64)], ['b'.repeat(64), 'c'.repeat(64)]];
    // One store: FerretDB applies a conditional update without isolation, and its adapter orders
    // the writes to one document only within a store (MongoDB and Cosmos DB need no help).
    const store = createDataStore(t.db);
    await Promise.all(fileKeys.map((keys) => store.personal.adoptSubjectKeys(keys)));
    const keys = (await t.db.collection('stats').findOne({ _id: 'keys' } as object))?.[
      'subjectKeys'
    ] as string[];
    expect(keys).toHaveLength(4);
    expect(new Set(keys.slice(1))).toEqual(new Set(fileKeys.flat()));
    // The database's own key still files new items.
    expect(await createDataStore(t.db).events.subjectOf('15550006666')).toBe(own);
  });
});

describe('a backup taken while the app writes', () => {
  /**
   * Seeds a database and backs it up while the app writes: at the first document the backup reads
   * (its first batch in hand), `mode` (test/fixtures/write-during-backup.ts) runs in its own
   * process and the backup goes on only once it is done, so the passes it has not begun see the
   * writes and the one under way does not. Then drops the database and restores the file into it.
   */
  async function backupDuring(mode: 'write' | 'erase', name: string) {
    await t.db.dropDatabase();
    expect(await runToExitCode(seed, ['--users', '3', '--messages', '12', '--yes'], env(), captureIo())).toBe(
      0,
    );
    const data = createDataStore(t.db);
    const known = String(
      (await t.db.collection('users').find({}).sort({ _id: 1 }).limit(1).toArray())[0]?._id,
    );
    const knownMessages = await t.db.collection('messages').countDocuments({ userId: known });
    expect(knownMessages).toBeGreaterThan(0);
    const fresh = await importIdOf(data, '15550007777');
    const file = path.join(dir, `${name}.jsonl.gz`);
    const io = captureIo();
    let wrote = false;
    const writing: Io = {
      ...io,
      err: (line) => {
        io.err(line);
        if (wrote || !/backing up: \d+%/.test(line)) return;
        wrote = true;
        execFileSync(
          process.execPath,
          ['--import', 'tsx', 'test/fixtures/write-during-backup.ts', mode, t.uri, t.dbName, known, fresh],
          { stdio: ['ignore', 'ignore', 'inherit'] },
        );
      },
    };
    expect(await runToExitCode(backup, ['--out', file], env(), writing), io.text()).toBe(0);
    expect(wrote).toBe(true);
    const lines = gunzipSync(await fs.readFile(file))
      .toString('utf8')
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => JSON.parse(l) as { c: string; d: Record<string, unknown> });
    const held = (c: string) => lines.filter((l) => l.c === c).map((l) => l.d);
    await t.db.dropDatabase();
    const restored = captureIo();
    expect(await runToExitCode(restore, [file], env(), restored), restored.text()).toBe(0);
    return { data, known, knownMessages, fresh, held, restored: restored.stdout.join('\n') };
  }

  /** `npm run health` (its main) exits 0, summaries and counters checked by its rules too. */
  async function expectHealthy(data: ReturnType<typeof createDataStore>) {
    const checked = captureIo();
    expect(await runToExitCode(health, [], env(), checked), checked.text()).toBe(0);
    expect(checked.stdout.join('\n')).toMatch(/summary problems:\s+0\n/);
    expect(checked.stdout.join('\n')).toMatch(/counter problems:\s+0\n/);
    const counts = await data.maintenance.countStored();
    expect(await data.maintenance.checkCounters(counts)).toEqual([]);
    expect(await data.maintenance.checkSummaries(counts)).toEqual([]);
  }

  const ids = (docs: unknown[]) => (docs as { _id: unknown }[]).map((d) => d._id).sort();

  it('restores into an empty database to one `npm run health` finds clean, holding all the file holds', async () => {
    const { data, fresh, held, restored } = await backupDuring('write', 'during-traffic');
    // The file holds some of what was written during it, not all: a summary and the messages
    // it counts were read at different times.
    const during = [
      held('users').some((u) => u['_id'] === fresh),
      held('messages').some((m) => m['_id'] === 'wamid.during.new'),
    ];
    expect(during).toContain(true);
    expect(during).toContain(false);
    // Every message of the file has its user in the file.
    const userIds = new Set(held('users').map((u) => u['_id']));
    expect(held('messages').filter((m) => !userIds.has(m['userId']))).toEqual([]);
    expect(restored).toMatch(/summaries rebuilt \(disagreeing with the stored messages\):\s+[1-9]/);
    await expectHealthy(data);
    // Nothing the file holds was lost: every message and user of it is stored.
    const stored = await snapshot();
    expect(ids(stored['messages']!)).toEqual(ids(held('messages')));
    expect(ids(stored['users']!)).toEqual(ids(held('users')));
  });

  it('a user erased between its reads of messages and of users stays erased, messages too', async () => {
    const { data, known, knownMessages, held, restored } = await backupDuring('erase', 'during-erase');
    // The file holds the erased user's messages, not the user, and the erase's audit entry.
    expect(held('users').some((u) => u['_id'] === known)).toBe(false);
    expect(held('messages').filter((m) => m['userId'] === known)).toHaveLength(knownMessages);
    expect(held('events').some((e) => e['reason'] === 'erase' && e['userId'] === known)).toBe(true);
    expect(restored).toMatch(
      new RegExp(`left out \\(erased after the backup\\):\\s+0 users, ${knownMessages} messages`),
    );
    expect(await t.db.collection('messages').countDocuments({ userId: known })).toBe(0);
    await expectHealthy(data);
    const stored = await snapshot();
    expect(ids(stored['messages']!)).toEqual(ids(held('messages').filter((m) => m['userId'] !== known)));
    expect(ids(stored['users']!)).toEqual(ids(held('users')));
  });
});

describe('npm run backup without --out', () => {
  it('writes beside the data of `npm run dev` (DEV_DATA_DIR), in a folder only its owner can open', async () => {
    // Before, it wrote under the project's .data/backups whatever DEV_DATA_DIR said, in a folder
    // others could list (0755).
    const data = await fs.mkdtemp(path.join(dir, 'data-'));
    const io = captureIo();
    expect(await runToExitCode(backup, [], { ...env(), DEV_DATA_DIR: data }, io), io.text()).toBe(0);
    const files = await fs.readdir(path.join(data, 'backups'));
    expect(files).toEqual([expect.stringMatching(/^backup-.*\.jsonl\.gz$/)]);
    expect(io.stdout.join('\n')).toContain(path.join(data, 'backups', files[0]!));
    if (process.platform !== 'win32') {
      expect((await fs.stat(path.join(data, 'backups'))).mode & 0o777).toBe(0o700);
    }
  });
});

describe('npm run backup --out', () => {
  const previous = gzipSync('the previous backup\n');
  const leftovers = async (folder: string) =>
    (await fs.readdir(folder)).filter((name) => name.includes('.part'));

  beforeAll(async () => {
    // Enough documents that a backup is still writing a while after its first progress line.
    const seeded = captureIo();
    expect(await runToExitCode(seed, ['--users', '50', '--messages', '4000', '--yes'], env(), seeded)).toBe(
      0,
    );
  }, 60_000);

  it('a document written while the backup runs is counted by the header; the file restores; no temporary file is left', async () => {
    const folder = await fs.mkdtemp(path.join(dir, 'out-'));
    const file = path.join(folder, 'b.jsonl.gz');
    await fs.writeFile(file, previous);
    const io = captureIo();
    let written: Promise<unknown> | undefined;
    const writing: Io = {
      ...io,
      err: (line) => {
        io.err(line);
        // The app records an event while the backup reads users (events are read last).
        written ??= /backing up: /.test(line)
          ? t.db.collection('events').insertOne({
              _id: 'late:1' as never,
              kind: 'late',
              reason: 'written during the backup',
              createdAt: new Date(),
              userId: null,
              payload: {},
            })
          : undefined;
      },
    };
    expect(await runToExitCode(backup, ['--out', file], env(), writing), io.text()).toBe(0);
    await written;
    expect(await leftovers(folder)).toEqual([]);
    const lines = gunzipSync(await fs.readFile(file))
      .toString('utf8')
      .trim()
      .split('\n');
    const header = JSON.parse(lines[0] ?? '{}') as { collections: Record<string, { $numberInt: string }> };
    const counted = Object.values(header.collections).reduce((n, v) => n + Number(v.$numberInt), 0);
    expect(counted).toBe(lines.length - 1);
    expect(lines.some((l) => l.includes('"late:1"'))).toBe(true);
    const r = captureIo();
    expect(await runToExitCode(restore, [file], env(), r), r.text()).toBe(0);
  });

  /** A backup over an earlier file, stopped by `signal` at its first progress line. */
  async function stoppedBackup(signal: NodeJS.Signals) {
    const folder = await fs.mkdtemp(path.join(dir, `${signal}-`));
    const file = path.join(folder, 'b.jsonl.gz');
    await fs.writeFile(file, previous);
    const run = await runScriptUntil('scripts/backup.ts', ['--out', file], env(), /backing up: /, signal);
    return { ...run, folder, file };
  }

  it('a backup killed while it writes leaves the earlier file at --out as it was', async () => {
    const run = await stoppedBackup('SIGKILL');
    expect(run.signal).toBe('SIGKILL');
    expect(await fs.readFile(run.file)).toEqual(previous);
  }, 60_000);

  it('Ctrl-C during a backup says so, exits 130 and leaves no file behind', async () => {
    const run = await stoppedBackup('SIGINT');
    expect(run.code, run.stderr).toBe(130);
    expect(run.stderr).toMatch(
      /interrupted by SIGINT: no backup was written and the file at --out was not changed/,
    );
    expect(await fs.readFile(run.file)).toEqual(previous);
    expect(await leftovers(run.folder)).toEqual([]);
  }, 60_000);

  it('a folder, or a path below a file, is refused as a bad argument (exit 2) and nothing is touched', async () => {
    const folder = await fs.mkdtemp(path.join(dir, 'bad-'));
    const io = captureIo();
    expect(await runToExitCode(backup, ['--out', folder], env(), io)).toBe(2);
    expect(io.text()).toBe(`error: --out ${folder} is a folder; give a file name (see --help)`);
    expect(await fs.readdir(folder)).toEqual([]);

    const file = path.join(folder, 'b.jsonl.gz');
    await fs.writeFile(file, previous);
    const io2 = captureIo();
    expect(await runToExitCode(backup, ['--out', path.join(file, 'x.gz')], env(), io2)).toBe(2);
    expect(io2.text()).toMatch(
      /^error: --out .*x\.gz: a part of its folder is a file, not a folder \(see --help\)$/,
    );
    expect(await fs.readFile(file)).toEqual(previous);
    expect(await leftovers(folder)).toEqual([]);
  });

  it('a pipe (or a device) or a blank name is refused (exit 2) and nothing is touched', async () => {
    // Before, the backup was renamed over what --out named: `--out /dev/full` left a regular file of
    // personal data where the device node was (exit 0), a FIFO was replaced alike, and `--out " "`
    // wrote a file named " ". (A FIFO stands for the devices: this test must not risk a real one.)
    const folder = await fs.mkdtemp(path.join(dir, 'odd-'));
    const fifo = path.join(folder, 'pipe');
    execFileSync('mkfifo', [fifo]);
    for (const [out, says] of [
      [fifo, /^error: --out .*pipe is not a regular file \(a device, pipe or socket\); give a file name/],
      [' ', /^error: --out needs a file name \(see --help\)$/],
      ['', /^error: --out needs a file name \(see --help\)$/],
      [path.join(folder, 'b.gz '), /^error: --out ".*b\.gz ": the file name starts or ends with whitespace/],
    ] as const) {
      const io = captureIo();
      expect(await runToExitCode(backup, ['--out', out], { ...env(), INIT_CWD: folder }, io), out).toBe(2);
      expect(io.text()).toMatch(says);
      expect(io.stdout).toEqual([]);
    }
    expect((await fs.lstat(fifo)).isFIFO()).toBe(true);
    expect(await fs.readdir(folder)).toEqual(['pipe']);
  });
});

describe('as processes (npm run <script>)', () => {
  const tsx = path.join(process.cwd(), 'node_modules', '.bin', 'tsx');
  const run = promisify(execFile);

  it('--help prints the usage and exits 0', async () => {
    const { stdout } = await run(tsx, ['scripts/migrate.ts', '--help'], {
      env: { ...process.env, ...env() },
    });
    expect(stdout).toMatch(/Usage: npm run migrate -- <legacy.db> \[--dry-run\]/);
  }, 60_000);

  it('a missing legacy file exits 1 with a clear message and no stack trace', async () => {
    const error = await run(tsx, ['scripts/migrate.ts', path.join(dir, 'nope.db')], {
      env: { ...process.env, ...env() },
    }).then(
      () => null,
      (e: { code: number; stderr: string }) => e,
    );
    expect(error?.code).toBe(1);
    expect(error?.stderr).toContain(
      `error: cannot read the legacy database ${path.join(dir, 'nope.db')}: no such file`,
    );
    expect(error?.stderr).not.toMatch(/\n\s+at /);
  }, 60_000);
});
