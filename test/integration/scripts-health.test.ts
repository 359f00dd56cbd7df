// npm run health (--repair) and npm run retention (and its timer function) against the real test
// database.
import { InvocationContext } from '@azure/functions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config';
import { createDataStore, observeCommands, type DataStore } from '../../shared/data';
import { userIdOf } from '../helpers/users';
import { prefixTerms, words } from '../../shared/data/terms';
import { buildServices, runtimeOf } from '../../shared/deps';
import { setPseudonymKey } from '../../shared/log';
import { retentionDefinition, retentionTimer, RETENTION_SCHEDULE } from '../../functions/retention';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as health } from '../../scripts/health';
import { main as retention } from '../../scripts/retention';
import { testDatabase, type TestDatabase } from '../helpers/db';
import { collectionOf } from '../helpers/raw';
import { captureIo } from '../fixtures/scripts';

let t: TestDatabase;
let store: DataStore;
const SETTINGS = {
  WHATSAPP_VERIFY_TOKEN: 'verify-token-for-tests',
  WHATSAPP_APP_SECRET: 'app-secret-for-tests',
};
const env = (extra: Record<string, string> = {}) => ({
  MONGODB_URI: t.uri,
  MONGODB_DATABASE: t.dbName,
  ...SETTINGS,
  ...extra,
});
const DAY = 86_400_000;
const now = Date.now();
const ago = (days: number) => new Date(now - days * DAY);

async function addUser(waId: string, at: Date): Promise<string> {
  return (await store.users.resolve({ waId, bsuid: null, name: 'Test' }, at)).user.id;
}

/** Seeds history the way the app stores it (the data module's import: summaries and counters included). */
async function addInbound(userId: string, id: string, at: Date, text = `in ${id}`) {
  await store.maintenance.importMessages([
    { id, userId, waMessageId: id, direction: 'inbound', text, createdAt: at, phoneNumberId: 'p1' },
  ]);
}

async function addOutbound(userId: string, id: string, at: Date, status: 'sent' | 'failed' = 'sent') {
  await store.maintenance.importMessages([
    {
      id,
      userId,
      waMessageId: id,
      direction: 'outbound',
      text: `out ${id}`,
      createdAt: at,
      status,
      phoneNumberId: 'p1',
      relatedId: 'x',
    },
  ]);
}

let A: string;
let B: string;

beforeAll(async () => {
  t = await testDatabase('scripts-health');
  store = createDataStore(t.db);
  await store.ensureIndexes('create');
  A = await addUser('15550009001', ago(40));
  B = await addUser('15550009002', ago(50));
  await addInbound(A, 'wamid.a1', ago(40));
  await addOutbound(A, 'wamid.a2', ago(35));
  await addInbound(A, 'wamid.a3', ago(1), 'recent question');
  await addInbound(B, 'wamid.b1', ago(50));
  await addOutbound(B, 'wamid.b2', ago(45), 'failed');
});

afterAll(async () => {
  await t?.drop();
});

describe('npm run health, per-model counters', () => {
  let db: TestDatabase;
  let own: DataStore;
  let ownEnv: Record<string, string>;
  beforeAll(async () => {
    db = await testDatabase('scripts-health-models');
    own = createDataStore(db.db);
    await own.ensureIndexes('create');
    ownEnv = { MONGODB_URI: db.uri, MONGODB_DATABASE: db.dbName, ...SETTINGS };
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('counts AI usage per model by the writers’ rule; --repair rebuilds the per-model counters', async () => {
    const user = (await own.users.resolve({ waId: '15550009101', bsuid: null, name: 'Test' }, ago(45))).user
      .id;
    const usage = { provider: 'openai', promptTokens: 30, completionTokens: 12, latencyMs: 900 };
    await own.maintenance.importMessages([
      {
        id: 'wamid.ai1',
        userId: user,
        waMessageId: 'wamid.ai1',
        direction: 'outbound',
        text: 'an AI answer',
        createdAt: ago(44),
        status: 'sent',
        phoneNumberId: 'p1',
        ai: { ...usage, model: 'model-a', totalTokens: 42 },
      },
      {
        id: 'wamid.ai2',
        userId: user,
        waMessageId: 'wamid.ai2',
        direction: 'outbound',
        text: 'another',
        createdAt: ago(43),
        status: 'sent',
        phoneNumberId: 'p1',
        ai: { ...usage, model: 'model-b', totalTokens: 8 },
      },
    ]);
    const models = () => own.stats.models();
    expect(await models()).toEqual([
      { model: 'model-a', requests: 1, tokens: 42 },
      { model: 'model-b', requests: 1, tokens: 8 },
    ]);
    expect(await runToExitCode(health, [], ownEnv, captureIo())).toBe(0);

    // Counters the app never writes: one model lost its tokens, a model never used appears.
    const stats = collectionOf(db.db, 'stats');
    await stats.updateOne({ _id: 'model:model-a' }, { $set: { aiTokens: 2 } });
    await stats.insertOne({ _id: 'model:ghost', aiRequests: 5, aiTokens: 500 });
    const io = captureIo();
    expect(await runToExitCode(health, [], ownEnv, io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(/model-a\.aiTokens: 2 < 42 stored/);

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], ownEnv, fix)).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/model model-a\.aiTokens: 2 → 42/);
    expect(fix.stdout.join('\n')).toMatch(/model ghost\.aiRequests: 5 → 0/);
    expect(await models()).toEqual([
      { model: 'model-a', requests: 1, tokens: 42 },
      { model: 'model-b', requests: 1, tokens: 8 },
    ]);
    expect(await own.stats.totals()).toMatchObject({ aiRequests: 2, aiTokens: 50, outbound: 2 });
    expect(await runToExitCode(health, [], ownEnv, captureIo())).toBe(0);
  });

  it('counts a failure a status reported as the writers do, and retention keeps it counted', async () => {
    const user = (await own.users.resolve({ waId: '15550009102', bsuid: null, name: 'Test' }, ago(60))).user
      .id;
    await own.maintenance.importMessages([
      {
        id: 'wamid.out.old',
        userId: user,
        waMessageId: 'wamid.out.old',
        direction: 'outbound',
        text: 'an old answer',
        createdAt: ago(60),
        status: 'sent',
        phoneNumberId: 'p1',
      },
    ]);
    const failedBefore = (await own.stats.totals()).failed;
    await own.messages.applyStatus({
      waMessageId: 'wamid.out.old',
      status: 'failed',
      at: ago(59),
      recipient: '15550009102',
      error: { code: 131026, title: 'Message undeliverable' },
    });
    // Not in the counter yet, and not counted as stored yet either: health is ok.
    const pendingFailures = async () =>
      (await own.stats.totals()).failed - (await own.stats.runningTotals()).failed;
    expect(await pendingFailures()).toBe(1);
    expect(await runToExitCode(health, [], ownEnv, captureIo())).toBe(0);
    // Retention leaves it until a sweep has counted it, then deletes it: the counter keeps it.
    await own.retention.deleteOlderThan(ago(30));
    expect(await own.messages.getMessage('wamid.out.old')).not.toBeNull();
    expect((await own.stats.totals()).failed).toBe(failedBefore + 1);
    await own.stats.foldPending();
    expect(await pendingFailures()).toBe(0);
    expect((await own.retention.deleteOlderThan(ago(30))).deleted).toBeGreaterThanOrEqual(1);
    expect(await own.messages.getMessage('wamid.out.old')).toBeNull();
    expect((await own.stats.totals()).failed).toBe(failedBefore + 1);
    expect(await runToExitCode(health, [], ownEnv, captureIo())).toBe(0);
  });
});

describe('npm run health', () => {
  it('is ok on consistent data', async () => {
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/health: ok/);
  });

  it('checks only the data when the environment holds none of the app settings', async () => {
    const io = captureIo();
    expect(await runToExitCode(health, [], { MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName }, io)).toBe(0);
    expect(io.text()).toMatch(/configuration: not checked/);
    expect(io.text()).toMatch(/health: ok/);
  });

  it('reports invalid configuration by name, never by value', async () => {
    const io = captureIo();
    const code = await runToExitCode(
      health,
      [],
      { MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName, WHATSAPP_VERIFY_TOKEN: 'secret-value-123' },
      io,
    );
    expect(code).toBe(1);
    expect(io.text()).toMatch(/WHATSAPP_APP_SECRET is missing/);
    expect(io.text()).not.toMatch(/secret-value-123/);
  });

  it('finds a broken summary and a low counter; --repair fixes them and says what changed', async () => {
    // A state the app never writes, so only a raw write makes it.
    await collectionOf(t.db, 'users').updateOne(
      { _id: A },
      { $set: { messageCount: 7, lastMessageId: 'wamid.a1', lastMessagePreview: 'wrong' } },
    );
    await collectionOf(t.db, 'stats').updateOne({ _id: 'totals' }, { $set: { inbound: 1 } });
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    const report = io.stdout.join('\n');
    expect(report).toMatch(
      /users whose summary disagrees with the stored messages: 1; `npm run health -- --repair` rebuilds them from the messages\n/,
    );
    expect(report).toMatch(
      /counters below what is stored, or not a count: 1; `npm run health -- --repair` sets them from the stored documents\n/,
    );
    expect(report).toMatch(/messageCount 7, stored 3/);
    expect(report).toMatch(/inbound: 1 < 3 stored/);
    expect(report).not.toMatch(/15550009001/);

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix)).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/repaired: 1 user summaries rebuilt/);
    expect(fix.stdout.join('\n')).toMatch(/totals\.inbound: 1 → 3/);
    expect(await store.users.getUser(A)).toMatchObject({
      messageCount: 3,
      lastMessageId: 'wamid.a3',
      lastMessagePreview: 'recent question',
    });
    expect(await store.stats.totals()).toMatchObject({ inbound: 3, outbound: 2, failed: 1, newUsers: 2 });

    const again = captureIo();
    expect(await runToExitCode(health, [], env(), again)).toBe(0);
  });

  it('finds a counter that is not a count (a string, a negative number); --repair rebuilds it', async () => {
    const day = (await store.maintenance.countStored()).counters.days.keys().next().value as string;
    // A hand edit: the collection untyped, as the database takes anything.
    await t.db.collection('stats').updateOne({ _id: 'totals' as never }, { $set: { outbound: '9000' } });
    await collectionOf(t.db, 'stats').updateOne({ _id: `day:${day}` }, { $set: { inbound: -4 } });
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    const report = io.stdout.join('\n');
    expect(report).toMatch(/counters below what is stored, or not a count: 2/);
    expect(report).toMatch(/outbound: string \(not a count\), 2 stored/);
    expect(report).toMatch(new RegExp(`${day}\\.inbound: -4 < \\d+ stored`));
    expect(report).not.toMatch(/9000/);

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix)).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/totals\.outbound: string \(not a count\) → 2/);
    expect(await store.stats.totals()).toMatchObject({ outbound: 2 });
    const again = captureIo();
    expect(await runToExitCode(health, [], env(), again)).toBe(0);
  });

  it('finds an erase that never finished; --repair finishes it; an erase under way now is left alone', async () => {
    const C = await addUser('15550009003', ago(3));
    await addInbound(C, 'wamid.c1', ago(3));
    await addOutbound(C, 'wamid.c2', ago(3));
    const D = await addUser('15550009004', ago(2));
    await addInbound(D, 'wamid.d1', ago(2));
    const before = await store.stats.totals();
    // The first step of an erase, as one interrupted 20 minutes ago and one that began just now.
    const began = (at: Date) => ({
      $set: {
        erasing: true as const,
        erasingSince: at,
        replyLock: { owner: 'erase', until: new Date('9999-12-31') },
      },
    });
    await collectionOf(t.db, 'users').updateOne({ _id: C }, began(new Date(Date.now() - 20 * 60_000)));
    await collectionOf(t.db, 'users').updateOne({ _id: D }, began(new Date()));

    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(/users whose erase did not finish: 1 /);
    expect(io.stdout.join('\n')).toMatch(/unfinished erases:\s+1/);

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix), fix.text()).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/repaired: 1 erases finished/);
    expect(await store.users.getUser(C)).toBeNull();
    expect(await t.db.collection('messages').countDocuments({ userId: C })).toBe(0);
    expect(await store.stats.totals()).toMatchObject({
      inbound: before.inbound - 1,
      outbound: before.outbound - 1,
      newUsers: before.newUsers - 1,
    });
    // The one under way is its own erase's business (which finishes it here, past the wait).
    expect(await store.users.getUser(D)).not.toBeNull();
    await collectionOf(t.db, 'users').updateOne({ _id: D }, began(new Date(Date.now() - 20 * 60_000)));
    expect(await store.personal.eraseUser(D)).toMatchObject({ messages: 1 });
    expect(await runToExitCode(health, [], env(), captureIo())).toBe(0);
  });

  it("--repair finishes an erase with the app's key: archived items found by number go too, and without the key it erases nothing", async () => {
    const phone = '15550009006';
    const F = await addUser(phone, ago(2));
    await addInbound(F, 'wamid.f1', ago(2));
    // The app archived an item that carries the number (its pseudonym keyed with the app secret)...
    setPseudonymKey(SETTINGS.WHATSAPP_APP_SECRET);
    await store.events.archive({
      kind: 'unhandled_status',
      reason: 'malformed status',
      payload: { recipient_id: phone, note: 'held about the person' },
      identifier: phone,
      at: ago(2),
    });
    // ...and began an erase that stopped; the script runs in a process of its own (default key).
    setPseudonymKey('whatsapp-bot');
    await collectionOf(t.db, 'users').updateOne(
      { _id: F },
      {
        $set: {
          erasing: true as const,
          erasingSince: new Date(Date.now() - 20 * 60_000),
          replyLock: { owner: 'erase', until: new Date('9999-12-31') },
        },
      },
    );
    const held = () => t.db.collection('events').countDocuments({ payloadJson: { $regex: 'held about' } });
    expect(await held()).toBe(1);

    // Without the app settings it says why and leaves the erase (and the item) as they are.
    const bare = captureIo();
    expect(
      await runToExitCode(health, ['--repair'], { MONGODB_URI: t.uri, MONGODB_DATABASE: t.dbName }, bare),
    ).toBe(1);
    expect(bare.stdout.join('\n')).toMatch(/not repaired: finishing an erase needs the app configuration/);
    expect(await store.users.getUser(F)).not.toBeNull();

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix), fix.text()).toBe(0);
    expect(await store.users.getUser(F)).toBeNull();
    expect(await held()).toBe(0);
  });

  it('finds messages whose search terms an earlier version cut at 400; --repair recomputes them', async () => {
    // 120 distinct words of 8 letters: 960 prefixes, so the old rule kept those of the first 50 words.
    const wordsOf = Array.from({ length: 120 }, (_, i) => `w${String(i).padStart(3, '0')}abcd`);
    const text = wordsOf.join(' ');
    const E = await addUser('15550009005', ago(2));
    await addInbound(E, 'wamid.long1', ago(2), text);
    const all = prefixTerms(text);
    expect(all.length).toBeGreaterThan(400);
    // As the old version stored it.
    await collectionOf(t.db, 'messages').updateOne(
      { _id: 'wamid.long1' },
      { $set: { terms: all.slice(0, 400) } },
    );
    const search = async () =>
      (await store.manage.searchMessages({ q: 'w119abcd', limit: 5, after: null })).items.map((m) => m.id);
    expect(await search()).toEqual([]);

    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(
      /messages and names whose search terms an earlier version stored otherwise \(cut at 400, without the words inside Chinese, Japanese or Thai text, or with ß, ς, ł, ø or another letter only lower-cased\): 1 /,
    );

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix), fix.text()).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/repaired: search terms of 1 messages or names recomputed/);
    expect(await search()).toEqual(['wamid.long1']);
    expect(await runToExitCode(health, [], env(), captureIo())).toBe(0);
    await store.personal.eraseUser(E); // the next tests count the messages
  });

  it('finds messages stored without the words inside Chinese, Japanese or Thai text; --repair adds them', async () => {
    const text = '昨日は東京タワーに行きました';
    const J = await addUser('15550009006', ago(2));
    await addInbound(J, 'wamid.runs1', ago(2), text);
    // As versions before the rule stored it: the prefixes of the whole run only.
    const run = [...words(text).join('')];
    await collectionOf(t.db, 'messages').updateOne(
      { _id: 'wamid.runs1' },
      { $set: { terms: run.slice(0, 24).map((_, i) => run.slice(0, i + 1).join('')) } },
    );
    // A name as well: 田中太郎 was one word to earlier versions.
    await collectionOf(t.db, 'users').updateOne(
      { _id: J },
      { $set: { name: '田中太郎', searchKeys: ['田', '田中', '田中太', '田中太郎', '1', '15'] } },
    );
    const search = async () =>
      (await store.manage.searchMessages({ q: 'タワー', limit: 5, after: null })).items.map((m) => m.id);
    const findUser = async () =>
      (await store.manage.listUsers({ q: '太郎', limit: 5, after: null })).items.map((u) => u.id);
    expect(await search()).toEqual([]);
    expect(await findUser()).toEqual([]);

    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(
      /Thai text, or with ß, ς, ł, ø or another letter only lower-cased\): 2 /,
    );

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix), fix.text()).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/repaired: search terms of 2 messages or names recomputed/);
    expect(await search()).toEqual(['wamid.runs1']);
    expect(await findUser()).toEqual([J]);
    expect(await runToExitCode(health, [], env(), captureIo())).toBe(0);
    await store.personal.eraseUser(J);
  });

  it('finds messages and names stored with ß, ς or ø as lower case writes them; --repair folds them', async () => {
    const text = 'Treffen im Straßencafé, ΟΔΟΣ Ερμού';
    const G = await addUser('15550009007', ago(2));
    await addInbound(G, 'wamid.fold1', ago(2), text);
    // As versions before the rule stored them: lower case only (ß and ς kept).
    const lowerOnly = (s: string) =>
      (
        s
          .normalize('NFKD')
          .replace(/\p{M}+/gu, '')
          .toLowerCase()
          .match(/[\p{L}\p{N}]+/gu) ?? []
      ).flatMap((w) => [...w].map((_, i) => [...w].slice(0, i + 1).join('')));
    await collectionOf(t.db, 'messages').updateOne(
      { _id: 'wamid.fold1' },
      { $set: { terms: lowerOnly(text) } },
    );
    await collectionOf(t.db, 'users').updateOne(
      { _id: G },
      { $set: { name: 'Søren Strauß', searchKeys: [...lowerOnly('Søren Strauß'), '1', '15'] } },
    );
    const search = async (q: string) =>
      (await store.manage.searchMessages({ q, limit: 5, after: null })).items.map((m) => m.id);
    const findUser = async () =>
      (await store.manage.listUsers({ q: 'soren strauss', limit: 5, after: null })).items.map((u) => u.id);
    expect(await search('strassencafe')).toEqual([]);
    expect(await search('ΟΔΟΣ')).toEqual([]);
    expect(await findUser()).toEqual([]);

    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(/or with ß, ς, ł, ø or another letter only lower-cased\): 2 /);

    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix), fix.text()).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/repaired: search terms of 2 messages or names recomputed/);
    expect(await search('strassencafe')).toEqual(['wamid.fold1']);
    expect(await search('straßencafé οδος')).toEqual(['wamid.fold1']);
    expect(await findUser()).toEqual([G]);
    expect(await runToExitCode(health, [], env(), captureIo())).toBe(0);
    await store.personal.eraseUser(G);
  });

  it('finds a missing index', async () => {
    await t.db.collection('messages').dropIndex('createdAt');
    const io = captureIo();
    expect(await runToExitCode(health, [], env(), io)).toBe(1);
    expect(io.stdout.join('\n')).toMatch(/missing database indexes: messages\.createdAt/);
    const fix = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), fix)).toBe(0);
    expect(fix.stdout.join('\n')).toMatch(/created index messages\.createdAt/);
  });
});

describe('a repair and the sweep', () => {
  it('a repair holds the fold: a sweep meanwhile folds nothing, and no count of a marked document is lost', async () => {
    const fresh = await testDatabase('health-fold');
    try {
      const data = createDataStore(fresh.db);
      await data.ensureIndexes('create');
      // A user and a message a writer stored and marked for the counters (not folded in yet).
      const { user } = await data.users.resolve({ waId: '15550009777', bsuid: null, name: null }, ago(5));
      await data.messages.recordInbound({
        id: 'wamid.fold.1',
        userId: user.id,
        type: 'reaction',
        text: '👍',
        createdAt: ago(5),
        receivedAt: ago(5),
        phoneNumberId: 'p1',
        role: 'notice',
        replyState: 'none',
        relatedId: null,
        rawJson: '{}',
      });
      const shown = await data.stats.totals();
      expect([shown.inbound, shown.newUsers]).toEqual([1, 1]);
      // The repair counts what is stored (the marked ones left out), a sweep comes, the repair
      // sets the counters: had the sweep folded, what it folded would be lost for good.
      await data.stats.holdingFold(async () => {
        const counts = await data.maintenance.countStored();
        expect(await data.stats.foldPending()).toEqual({ messages: 0, users: 0, failures: 0 });
        await data.maintenance.repairCounters(counts);
      });
      expect(await data.stats.totals()).toEqual(shown);
      expect(await data.stats.foldPending()).toEqual({ messages: 1, users: 1, failures: 0 });
      expect(await data.stats.runningTotals()).toEqual(shown);
      // `npm run health -- --repair` takes the fold the same way, and leaves it free.
      const io = captureIo();
      expect(
        await runToExitCode(
          health,
          ['--repair'],
          { MONGODB_URI: fresh.uri, MONGODB_DATABASE: fresh.dbName },
          io,
        ),
      ).toBe(0);
      expect(await data.stats.totals()).toEqual(shown);
      expect((await data.maintenance.totalsDoc())?.foldOwner).toBeUndefined();
    } finally {
      await fresh.drop();
    }
  });
});

describe('npm run retention', () => {
  it('does nothing without RETENTION_DAYS or --days', async () => {
    const io = captureIo();
    expect(await runToExitCode(retention, [], env(), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/nothing deleted/);
    expect(await t.db.collection('messages').countDocuments()).toBe(5);
  });

  it.each([
    ['99999999999999999999', /RETENTION_DAYS must be a whole number from 1 to 36500, in plain digits$/],
    ['36501', /RETENTION_DAYS must be a whole number from 1 to 36500$/],
    ['1e1', /RETENTION_DAYS must be a whole number from 1 to 36500, in plain digits$/],
  ])('refuses RETENTION_DAYS=%s as the app does: one line, exit 1, nothing deleted', async (value, says) => {
    // Before, a setting the app refuses was taken: 99999999999999999999 days ran the deletion with
    // an invalid cutoff and ended in `RangeError: Invalid time value` and a stack trace.
    for (const args of [['--dry-run'], []]) {
      const io = captureIo();
      expect(await runToExitCode(retention, args, env({ RETENTION_DAYS: value }), io)).toBe(1);
      expect(io.stderr).toEqual([expect.stringMatching(says)]);
      expect(io.stderr[0]).not.toContain(value);
      expect(io.stdout).toEqual([]);
    }
    expect(await t.db.collection('messages').countDocuments()).toBe(5);
  });

  it('--dry-run counts and deletes nothing', async () => {
    const io = captureIo();
    expect(await runToExitCode(retention, ['--dry-run'], env({ RETENTION_DAYS: '30' }), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages to delete:\s+4/);
    expect(await t.db.collection('messages').countDocuments()).toBe(5);
  });

  it('deletes old messages in batches, adjusts summaries, keeps the totals', async () => {
    const totals = await store.stats.totals();
    // Statuses of messages never stored leave placeholders; they carry their status time, so
    // retention removes the old ones too (they used to stay forever).
    await store.messages.applyStatus({
      waMessageId: 'wamid.ghost-old',
      status: 'delivered',
      at: ago(45),
      recipient: null,
      error: null,
    });
    await store.messages.applyStatus({
      waMessageId: 'wamid.ghost-new',
      status: 'delivered',
      at: new Date(),
      recipient: null,
      error: null,
    });
    const io = captureIo();
    expect(await runToExitCode(retention, ['--batch-size', '1'], env({ RETENTION_DAYS: '30' }), io)).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/messages deleted:\s+5/);
    expect(io.stdout.join('\n')).toMatch(/batches:\s+5/);
    expect(
      (await t.db.collection('messages').find({}).sort({ _id: 1 }).toArray()).map((m) => m['_id']),
    ).toEqual(['wamid.a3', 'wamid.ghost-new']);
    const a = await store.users.getUser(A);
    expect(a).toMatchObject({
      messageCount: 1,
      lastMessageId: 'wamid.a3',
      lastMessagePreview: 'recent question',
    });
    const b = await store.users.getUser(B);
    expect(b).toMatchObject({ messageCount: 0, lastMessageId: null, lastMessagePreview: null });
    expect(b?.lastMessageAt?.toISOString()).toBe(ago(45).toISOString());
    expect(await store.stats.totals()).toEqual(totals);
    expect((await store.maintenance.totalsDoc())?.retentionRuns).toBe(1);

    // Health stays ok, and a repair after retention does not lower the running totals.
    const h = captureIo();
    expect(await runToExitCode(health, ['--repair'], env(), h)).toBe(0);
    expect(await store.stats.totals()).toEqual(totals);
  });

  it('runs as a timer function that does nothing unless RETENTION_DAYS is set', async () => {
    expect(retentionDefinition).toMatchObject({
      kind: 'timer',
      name: 'retention',
      schedule: RETENTION_SCHEDULE,
    });
    // The user of that number (found by number, as every writer finds them).
    expect(await userIdOf(store, '15550009002')).toBe(B);
    await addInbound(B, 'wamid.b3', ago(90));
    const timer = {
      isPastDue: false,
      schedule: { adjustForDST: false },
      scheduleStatus: { last: '', next: '', lastUpdated: '' },
    };
    const logs: string[] = [];
    const context = () =>
      new InvocationContext({ logHandler: (_level, ...args) => logs.push(args.join(' ')) });

    const off = await buildServices(loadConfig(SETTINGS), { data: store });
    await retentionTimer(runtimeOf(off))(timer, context());
    expect(await store.messages.getMessage('wamid.b3')).toMatchObject({ id: 'wamid.b3' });
    expect(logs.join('\n')).toMatch(/retention skipped/);

    const on = await buildServices(loadConfig({ ...SETTINGS, RETENTION_DAYS: '30' }), { data: store });
    await retentionTimer(runtimeOf(on))(timer, context());
    expect(await store.messages.getMessage('wamid.b3')).toBeNull();
    expect(await store.users.getUser(B)).toMatchObject({ messageCount: 0 });
    expect(logs.join('\n')).toMatch(/retention done.*deleted=1/);
  });
});

describe('npm run retention at scale', () => {
  let db: TestDatabase;
  let own: DataStore;
  afterAll(async () => {
    await db?.drop();
  });

  it('rebuilds the summaries of the users it touched in batches, not several round trips per user', async () => {
    db = await testDatabase('scripts-retention-scale');
    own = createDataStore(db.db);
    await own.ensureIndexes('create');
    const USERS = 120;
    const waIds = Array.from({ length: USERS }, (_, i) => `1555070${String(i).padStart(4, '0')}`);
    const { idOf } = await own.users.idsForImport(waIds);
    await own.maintenance.importUsers(
      waIds.map((waId) => ({ id: idOf(waId), waId, name: null, createdAt: ago(60), optedOut: false })),
    );
    await own.maintenance.importMessages(
      waIds.flatMap((waId, i) =>
        [ago(50), ago(40), ago(2)].map((at, k) => ({
          id: `wamid.scale.${i}.${k}`,
          userId: idOf(waId),
          waMessageId: `wamid.scale.${i}.${k}`,
          direction: k === 1 ? ('outbound' as const) : ('inbound' as const),
          text: `text ${i} ${k}`,
          createdAt: at,
          phoneNumberId: 'p1',
        })),
      ),
    );
    const commands: string[] = [];
    const stop = observeCommands((c) => {
      if (c.databaseName === db.dbName) commands.push(c.commandName);
    });
    const io = captureIo();
    try {
      const code = await runToExitCode(
        retention,
        ['--days', '30'],
        { MONGODB_URI: db.uri, MONGODB_DATABASE: db.dbName, ...SETTINGS },
        io,
      );
      expect(code).toBe(0);
    } finally {
      stop();
    }
    expect(io.stdout.join('\n')).toMatch(/messages deleted:\s+240/);
    // Each user keeps one message, and the summary says so.
    const users = await db.db.collection('users').find({}).toArray();
    expect(users.map((u) => u['messageCount'])).toEqual(Array(USERS).fill(1));
    expect(
      users.every((u) => typeof u['lastMessageId'] === 'string' && u['lastMessageId'].endsWith('.2')),
    ).toBe(true);
    // 120 users touched: before, 4 round trips each (two counts, a find, a read and an update).
    expect(commands.length).toBeLessThan(USERS / 2);
    // Health agrees.
    const h = captureIo();
    expect(
      await runToExitCode(health, [], { MONGODB_URI: db.uri, MONGODB_DATABASE: db.dbName, ...SETTINGS }, h),
    ).toBe(0);
  });
});

describe('operator errors are one clear line', () => {
  it('a connection string the driver cannot read, and --days out of range', async () => {
    for (const uri of ['notauri', 'mongodb://h.example:99999/']) {
      const io = captureIo();
      expect(await runToExitCode(health, [], { MONGODB_URI: uri, ...SETTINGS }, io)).toBe(1);
      expect(io.stderr.join('\n')).toMatch(/^error: MONGODB_URI is not a valid connection string/m);
      expect(io.text()).not.toMatch(/\n\s+at /);
    }
    const io = captureIo();
    expect(await runToExitCode(retention, ['--days', '999999999999'], { ...SETTINGS }, io)).toBe(2);
    expect(io.text()).toContain('--days must be an integer of at least 1 and at most 36500');
  });
});
