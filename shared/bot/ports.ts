// What the bot needs from the rest of the app, declared here so that nothing in shared/bot imports
// the composition root (shared/deps.ts implements these; tests build them on a test database).
import type { Config } from '../config';
import type { AiUsage, DataStore, Message, MessageError, MessageRole, User } from '../data';
import type { Logger } from '../log';
import type { GraphClient } from '../whatsapp/graph';

export type Clock = () => Date;

/** What a reply says, before it is sent: its text, its role, the AI usage behind it. */
export interface ReplyContent {
  readonly text: string;
  readonly role: MessageRole;
  /**
   * The model's usage: recorded on the answer's first part, or on the inbound message when the
   * answer does not go out (an apology for a failed call, an answer dropped for an operator).
   */
  readonly ai: AiUsage | null;
  /** Set when the reply is an apology for a failure (recorded on the inbound message). */
  readonly failure: MessageError | null;
}

/** Composes a reply with a model; null means stay silent (e.g. over the per-minute limit, already notified). */
export interface AiResponder {
  /** How many of the user's latest messages the reply worker reads for it (context and rate limit). */
  readonly window: number;
  respond(input: {
    user: User;
    message: Message;
    /** The user's latest messages, oldest first, as the reply worker knows them now. */
    recent: readonly Message[];
    /** True when `recent` may not hold everything the AI needs (older messages exist). */
    recentIsPartial: boolean;
    /**
     * Called once right before the model is asked (never when the rate limit answers instead);
     * false: the answer cannot go out (Graph refused the access token), so the model is not asked
     * and `respond` answers null.
     */
    preparing: () => Promise<boolean>;
    log: Logger;
  }): Promise<ReplyContent | null>;
}

/** Extra messages the reply worker reads beyond the context and the rate limit (later waiting ones, commands). */
const WINDOW_SLACK = 20;

/** How many of a user's latest messages the reply worker reads for an AI answer. */
export const aiWindow = (ai: { historyLimit: number; maxPerMinute: number }): number =>
  Math.max(ai.historyLimit, ai.maxPerMinute) * 2 + WINDOW_SLACK;

export interface IngestPorts {
  readonly data: Pick<DataStore, 'users' | 'messages' | 'events' | 'stats'>;
  readonly now: Clock;
}

/** Keeping what ingest failed on every attempt (`inbound-poison`): ./poisoned. */
export interface PoisonPorts {
  readonly data: Pick<DataStore, 'poisoned' | 'spills'>;
  readonly now: Clock;
}

export interface SweeperPorts {
  readonly data: Pick<DataStore, 'messages' | 'stats' | 'users'>;
  readonly now: Clock;
}

export interface ReplyPorts {
  readonly data: Pick<DataStore, 'users' | 'messages' | 'stats' | 'handoff'>;
  readonly config: Pick<Config, 'handoffHours'>;
  readonly graph: GraphClient;
  readonly ai: AiResponder | null;
  readonly now: Clock;
}
