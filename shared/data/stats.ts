// Counters kept with $inc: one totals document and one document per UTC day, so reading the
// stats costs O(days), never a scan. `counterOps` is the one rule that turns counts into writes:
// the sweep (what writers marked, ./pending), erase, migration and repair all go through it. The
// stats read adds what writers marked and the sweep has not folded in yet: they are exact at once.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AnyBulkWriteOperation, Filter } from 'mongodb';
import { isDuplicateKey } from './client';
import type { Gateway } from './gateway';
import type { DailyStats } from './types';

export interface StatsDoc {
  _id: string;
  date?: string;
  inbound?: number;
  outbound?: number;
  failed?: number;
  newUsers?: number;
  aiRequests?: number;
  aiTokens?: number;
  /** Totals only: how often retention deleted messages (counters can no longer be rebuilt exactly). */
  retentionRuns?: number;
  lastRetentionAt?: Date;
  lastRetentionCutoff?: Date;
  /** The `keys` document only: the deployment's keys of archived items' subjects (subjects.ts). */
  subjectKeys?: string[];
  /** Totals only: a sweep folding marked documents in holds this lease (`foldPending`). */
  foldUntil?: Date;
  foldOwner?: string;
}

/** Running totals. */
export interface TotalsDelta {
  inbound?: number;
  outbound?: number;
  failed?: number;
  newUsers?: number;
  aiRequests?: number;
  aiTokens?: number;
}

/** What one UTC day counts (a message on the day of its createdAt, a user on the day it was created). */
export type DayDelta = Pick<TotalsDelta, 'inbound' | 'outbound' | 'newUsers'>;

export const TOTALS_ID = 'totals';
/** One counter document per AI model: `model:<name>`. */
const MODEL_PREFIX = 'model:';
const MAX_MODELS = 100;

export interface ModelUsage {
  readonly model: string;
  readonly requests: number;
  readonly tokens: number;
}
export const dayKey = (at: Date): string => at.toISOString().slice(0, 10);
export const dayId = (date: string): string => `day:${date}`;

/** A set of counter changes: totals plus per-day counts, accumulated then written in one bulk write. */
export class CounterDelta {
  readonly totals: Required<TotalsDelta> = {
    inbound: 0,
    outbound: 0,
    failed: 0,
    newUsers: 0,
    aiRequests: 0,
    aiTokens: 0,
  };
  readonly days = new Map<string, Required<DayDelta>>();
  /** AI answers and tokens per model (`model:<name>` documents). */
  readonly models = new Map<string, { aiRequests: number; aiTokens: number }>();

  /** A message stored (or, with sign -1, erased): counted in the totals and on its day. */
  message(
    m: {
      direction: 'inbound' | 'outbound';
      createdAt: Date;
      failed?: boolean;
      aiTokens?: number | null;
      aiModel?: string | null;
    },
    sign = 1,
  ): this {
    this.totals[m.direction] += sign;
    this.day(m.createdAt)[m.direction] += sign;
    if (m.direction === 'outbound' && m.failed) this.totals.failed += sign;
    // A model call: on its answer, or on the inbound message when its answer did not go out (an
    // apology for a failed call that reported usage, an answer dropped for an operator).
    if (m.aiTokens !== undefined && m.aiTokens !== null) {
      this.totals.aiRequests += sign;
      this.totals.aiTokens += sign * m.aiTokens;
      if (m.aiModel) {
        const used = this.models.get(m.aiModel) ?? { aiRequests: 0, aiTokens: 0 };
        used.aiRequests += sign;
        used.aiTokens += sign * m.aiTokens;
        this.models.set(m.aiModel, used);
      }
    }
    return this;
  }

  user(createdAt: Date, sign = 1): this {
    this.totals.newUsers += sign;
    this.day(createdAt).newUsers += sign;
    return this;
  }

  failed(sign = 1): this {
    this.totals.failed += sign;
    return this;
  }

  private day(at: Date): Required<DayDelta> {
    const key = dayKey(at);
    let d = this.days.get(key);
    if (!d) this.days.set(key, (d = { inbound: 0, outbound: 0, newUsers: 0 }));
    return d;
  }
}

const sumDay = (a: Required<DayDelta>, b: Required<DayDelta>): Required<DayDelta> => ({
  inbound: a.inbound + b.inbound,
  outbound: a.outbound + b.outbound,
  newUsers: a.newUsers + b.newUsers,
});

const nonZero = (values: Record<string, number>): Record<string, number> =>
  Object.fromEntries(Object.entries(values).filter(([, v]) => v !== 0));

/** The writes of a counter change: `$inc` on the totals and on each day touched. */
export function counterOps(delta: CounterDelta): AnyBulkWriteOperation<StatsDoc>[] {
  const ops: AnyBulkWriteOperation<StatsDoc>[] = [];
  const totals = nonZero(delta.totals);
  if (Object.keys(totals).length)
    ops.push({ updateOne: { filter: { _id: TOTALS_ID }, update: { $inc: totals }, upsert: true } });
  for (const [date, counts] of delta.days) {
    const inc = nonZero(counts);
    if (!Object.keys(inc).length) continue;
    ops.push({
      updateOne: {
        filter: { _id: dayId(date) },
        update: { $inc: inc, $setOnInsert: { date } },
        upsert: true,
      },
    });
  }
  for (const [model, used] of delta.models) {
    const inc = nonZero(used);
    if (Object.keys(inc).length)
      ops.push({ updateOne: { filter: { _id: MODEL_PREFIX + model }, update: { $inc: inc }, upsert: true } });
  }
  return ops;
}

/** What the running counters do not hold yet (./pending): marked by writers, folded by the sweep. */
export interface PendingSource {
  delta(): Promise<CounterDelta>;
  take(limit: number): Promise<{ delta: CounterDelta; messages: number; users: number; failures: number }>;
}

/** The stats as operators see them: running counters plus what is marked and not folded yet. */
export interface StatsSnapshot {
  readonly totals: Required<TotalsDelta>;
  readonly daily: DailyStats[];
  readonly models: ModelUsage[];
}

/** Marked documents the sweep folds in per kind and batch, and batches per sweep at most. */
const FOLD_BATCH = 500;
const FOLD_BATCHES = 20;
/** How long a sweep may hold the fold (FOLD_BATCHES batches take seconds). */
const FOLD_LEASE_MS = 5 * 60_000;

export class StatsRepository {
  constructor(
    private readonly stats: Gateway<StatsDoc>,
    private readonly pending: PendingSource,
  ) {}

  /** Applies a counter change in one round trip. */
  async apply(delta: CounterDelta): Promise<void> {
    const ops = counterOps(delta);
    if (ops.length) await this.stats.bulkWrite(ops);
  }

  /**
   * The sweep: takes the marks off what writers marked and adds it to the running counters, batch
   * after batch (at most FOLD_BATCHES). Marks go first, so a crash in between leaves counters low,
   * never counts twice. One sweep folds at a time (a lease on the totals document): a second one
   * (another host on the database, a seed while the app runs) would take the same documents, and
   * a bulk write cannot say which of them it was the one to unmark. That one folds nothing.
   * Returns how many documents of each kind it folded in.
   */
  async foldPending(): Promise<{ messages: number; users: number; failures: number }> {
    const folded = { messages: 0, users: 0, failures: 0 };
    const owner = randomUUID();
    if (!(await this.takeFoldLease(owner, new Date()))) return folded;
    try {
      for (let batch = 0; batch < FOLD_BATCHES; batch++) {
        // Renewed before each further batch: a sweep paused past the lease, which another sweep
        // took meanwhile, stops instead of unmarking the documents that one takes too.
        if (batch > 0 && !(await this.takeFoldLease(owner, new Date()))) break;
        const taken = await this.pending.take(FOLD_BATCH);
        await this.apply(taken.delta);
        folded.messages += taken.messages;
        folded.users += taken.users;
        folded.failures += taken.failures;
        if (Math.max(taken.messages, taken.users, taken.failures) < FOLD_BATCH) break;
      }
    } finally {
      await this.releaseFold(owner);
    }
    return folded;
  }

  /**
   * Runs `work` holding the fold, so that no sweep folds marked documents meanwhile: a repair that
   * counts what is stored and then sets the counters (`npm run health -- --repair`, the settling of
   * an import or a restore) would otherwise set them back below what a fold in between added, and
   * what it folded, unmarked by then, would never be counted again. Waits for a sweep folding now
   * (seconds) at most `waitMs`; renews the lease while `work` runs.
   */
  async holdingFold<T>(work: () => Promise<T>, { waitMs = 60_000 }: { waitMs?: number } = {}): Promise<T> {
    const owner = randomUUID();
    const deadline = Date.now() + waitMs;
    while (!(await this.takeFoldLease(owner, new Date()))) {
      if (Date.now() >= deadline)
        throw new Error(
          'another process (a sweep, a repair) is folding the counters: try again in a few minutes',
        );
      await sleep(500);
    }
    const renew = setInterval(() => {
      this.takeFoldLease(owner, new Date()).catch(() => undefined);
    }, FOLD_LEASE_MS / 3);
    renew.unref();
    try {
      return await work();
    } finally {
      clearInterval(renew);
      await this.releaseFold(owner);
    }
  }

  private async releaseFold(owner: string): Promise<void> {
    await this.stats.updateOne(
      { _id: TOTALS_ID, foldOwner: owner },
      { $unset: { foldUntil: '', foldOwner: '' } },
    );
  }

  /** False while another holds the fold (the upsert then meets the totals document); renews our own. */
  private async takeFoldLease(owner: string, now: Date): Promise<boolean> {
    try {
      await this.stats.updateOne(
        {
          _id: TOTALS_ID,
          $or: [{ foldUntil: null }, { foldUntil: { $lt: now } }, { foldOwner: owner }],
        } as Filter<StatsDoc>,
        { $set: { foldUntil: new Date(now.getTime() + FOLD_LEASE_MS), foldOwner: owner } },
        { upsert: true },
      );
      return true;
    } catch (error) {
      if (isDuplicateKey(error)) return false;
      throw error;
    }
  }

  /**
   * Totals, the last `days` UTC days and the models as operators see them, in one read of each.
   * The counters are read before what is marked: a sweep takes marks off before it adds them, so a
   * read that meets it mid-way may count a document in neither (for that instant), never in both.
   */
  async snapshot(now: Date, days = 30): Promise<StatsSnapshot> {
    const [totals, daily, models] = await Promise.all([
      this.runningTotals(),
      this.runningDaily(now, days),
      this.modelDocs(MAX_MODELS),
    ]);
    const pending = await this.pending.delta();
    for (const key of Object.keys(totals) as (keyof TotalsDelta)[]) totals[key] += pending.totals[key];
    for (const day of daily) {
      const more = pending.days.get(day.date);
      if (more) Object.assign(day, sumDay(day, more));
    }
    const byModel = new Map(models.map((m) => [m.model, { ...m }]));
    for (const [model, used] of pending.models) {
      const m = byModel.get(model) ?? { model, requests: 0, tokens: 0 };
      byModel.set(model, { model, requests: m.requests + used.aiRequests, tokens: m.tokens + used.aiTokens });
    }
    return {
      totals,
      daily,
      models: [...byModel.values()]
        .filter((m) => m.requests > 0 || m.tokens > 0)
        .sort((a, b) => b.tokens - a.tokens || (a.model < b.model ? -1 : 1)),
    };
  }

  /** The totals as operators see them (running counters plus what is not folded in yet). */
  async totals(): Promise<Required<TotalsDelta>> {
    return (await this.snapshot(new Date(), 1)).totals;
  }

  /** AI usage per model since the start, most tokens first (as operators see it). */
  async models(): Promise<ModelUsage[]> {
    return (await this.snapshot(new Date(), 1)).models;
  }

  /** The last `days` UTC days including today's, oldest first, zeros for quiet days (as operators see them). */
  async daily(now: Date, days = 30): Promise<DailyStats[]> {
    return (await this.snapshot(now, days)).daily;
  }

  /** The running totals alone, zero where nothing was counted yet (health compares them). */
  async runningTotals(): Promise<Required<TotalsDelta>> {
    const doc = await this.stats.findOne({ _id: TOTALS_ID });
    return {
      inbound: doc?.inbound ?? 0,
      outbound: doc?.outbound ?? 0,
      failed: doc?.failed ?? 0,
      newUsers: doc?.newUsers ?? 0,
      aiRequests: doc?.aiRequests ?? 0,
      aiTokens: doc?.aiTokens ?? 0,
    };
  }

  private async runningDaily(now: Date, days: number): Promise<DailyStats[]> {
    const dates: string[] = [];
    for (let i = days - 1; i >= 0; i--) dates.push(dayKey(new Date(now.getTime() - i * 86_400_000)));
    const docs = await this.stats.find({ _id: { $in: dates.map(dayId) } });
    const byId = new Map(docs.map((d) => [d._id, d]));
    return dates.map((date) => {
      const d = byId.get(dayId(date));
      return { date, inbound: d?.inbound ?? 0, outbound: d?.outbound ?? 0, newUsers: d?.newUsers ?? 0 };
    });
  }

  /** Every day document (repair). */
  dayDocs(): Promise<StatsDoc[]> {
    return this.stats.find({ _id: { $regex: '^day:' } });
  }

  /** The per-model documents, zeros included (all of them for repair). */
  async modelDocs(limit?: number): Promise<ModelUsage[]> {
    const filter = { _id: { $gte: MODEL_PREFIX, $lt: 'model;' } };
    const docs = await this.stats.find(filter, limit === undefined ? {} : { limit });
    return docs.map((d) => ({
      model: d._id.slice(MODEL_PREFIX.length),
      requests: d.aiRequests ?? 0,
      tokens: d.aiTokens ?? 0,
    }));
  }

  /** Sets counters to exact values (repair): totals, days and models, in one bulk write. */
  async set(
    totals: Record<string, number>,
    days: ReadonlyMap<string, Record<string, number>>,
    models: ReadonlyMap<string, Record<string, number>> = new Map(),
  ): Promise<void> {
    const ops: AnyBulkWriteOperation<StatsDoc>[] = [];
    if (Object.keys(totals).length)
      ops.push({ updateOne: { filter: { _id: TOTALS_ID }, update: { $set: totals }, upsert: true } });
    for (const [date, set] of days)
      ops.push({
        updateOne: { filter: { _id: dayId(date) }, update: { $set: { ...set, date } }, upsert: true },
      });
    for (const [model, set] of models)
      ops.push({ updateOne: { filter: { _id: MODEL_PREFIX + model }, update: { $set: set }, upsert: true } });
    if (ops.length) await this.stats.bulkWrite(ops);
  }

  /** Retention deleted messages: counters can no longer be rebuilt exactly from the documents. */
  async recordRetention(at: Date, cutoff: Date): Promise<void> {
    await this.stats.updateOne(
      { _id: TOTALS_ID },
      { $inc: { retentionRuns: 1 }, $set: { lastRetentionAt: at, lastRetentionCutoff: cutoff } },
      { upsert: true },
    );
  }
}
