// Counters kept with $inc: one totals document and one document per UTC day, so reading the
// stats costs O(days), never a scan.
import type { Collection } from 'mongodb';
import type { DailyStats } from './types';
import { directGate, withRetry, type UpdateGate } from './client';

export interface StatsDoc {
  _id: string;
  date?: string;
  inbound?: number;
  outbound?: number;
  failed?: number;
  newUsers?: number;
  aiRequests?: number;
  aiTokens?: number;
}

export interface CounterDelta {
  inbound?: number;
  outbound?: number;
  failed?: number;
  newUsers?: number;
  aiRequests?: number;
  aiTokens?: number;
}

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

export class StatsRepository {
  constructor(
    private readonly stats: Collection<StatsDoc>,
    private readonly gate: UpdateGate = directGate,
  ) {}

  /** Adds to the running totals and to the UTC day of `at` (daily series counts inbound, outbound, new users). */
  async bump(delta: CounterDelta, at: Date): Promise<void> {
    await this.gate.run(() => this.apply(delta, at));
  }

  private async apply(delta: CounterDelta, at: Date): Promise<void> {
    const inc = Object.fromEntries(
      Object.entries(delta).filter(([, v]) => v !== undefined && v !== 0),
    ) as Record<string, number>;
    if (Object.keys(inc).length === 0) return;
    await withRetry(() => this.stats.updateOne({ _id: TOTALS_ID }, { $inc: inc }, { upsert: true }));
    const daily: Record<string, number> = {};
    for (const key of ['inbound', 'outbound', 'newUsers'] as const) if (inc[key]) daily[key] = inc[key];
    if (Object.keys(daily).length) {
      const date = dayKey(at);
      await withRetry(() =>
        this.stats.updateOne({ _id: dayId(date) }, { $inc: daily, $setOnInsert: { date } }, { upsert: true }),
      );
    }
  }

  async totals(): Promise<Required<Omit<StatsDoc, '_id' | 'date'>>> {
    const doc = await withRetry(() => this.stats.findOne({ _id: TOTALS_ID }));
    return {
      inbound: doc?.inbound ?? 0,
      outbound: doc?.outbound ?? 0,
      failed: doc?.failed ?? 0,
      newUsers: doc?.newUsers ?? 0,
      aiRequests: doc?.aiRequests ?? 0,
      aiTokens: doc?.aiTokens ?? 0,
    };
  }

  /** Adds AI answers and their tokens to a model's running totals (erasing a user subtracts). */
  async bumpModel(model: string, requests: number, tokens: number): Promise<void> {
    if (!requests && !tokens) return;
    await this.gate.run(() =>
      withRetry(() =>
        this.stats.updateOne(
          { _id: MODEL_PREFIX + model },
          { $inc: { aiRequests: requests, aiTokens: tokens } },
          { upsert: true },
        ),
      ),
    );
  }

  /** AI usage per model since the start, most tokens first. */
  async models(): Promise<ModelUsage[]> {
    const docs = await withRetry(() =>
      this.stats
        .find({ _id: { $gte: MODEL_PREFIX, $lt: 'model;' } })
        .limit(MAX_MODELS)
        .toArray(),
    );
    return docs
      .map((d) => ({
        model: d._id.slice(MODEL_PREFIX.length),
        requests: d.aiRequests ?? 0,
        tokens: d.aiTokens ?? 0,
      }))
      .filter((m) => m.requests > 0 || m.tokens > 0)
      .sort((a, b) => b.tokens - a.tokens || (a.model < b.model ? -1 : 1));
  }

  /** The last `days` UTC days including today's, oldest first, zeros for quiet days. */
  async daily(now: Date, days = 30): Promise<DailyStats[]> {
    const dates: string[] = [];
    for (let i = days - 1; i >= 0; i--) dates.push(dayKey(new Date(now.getTime() - i * 86_400_000)));
    const docs = await withRetry(() => this.stats.find({ _id: { $in: dates.map(dayId) } }).toArray());
    const byId = new Map(docs.map((d) => [d._id, d]));
    return dates.map((date) => {
      const d = byId.get(dayId(date));
      return { date, inbound: d?.inbound ?? 0, outbound: d?.outbound ?? 0, newUsers: d?.newUsers ?? 0 };
    });
  }
}
