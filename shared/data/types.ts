// Domain types of the data module: what repositories take and return. No driver types here.

export const Direction = { inbound: 'inbound', outbound: 'outbound' } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

/** Inbound: received/read. Outbound: pending/sent/delivered/read/failed/not_sent. */
export type MessageStatus = 'received' | 'read' | 'pending' | 'sent' | 'delivered' | 'failed' | 'not_sent';

/** Where the answer to an inbound message stands. `none`: the message gets no answer. */
export type ReplyState = 'pending' | 'sending' | 'sent' | 'failed' | 'none';

/**
 * What a message is to the conversation: `conversation` messages form the AI context;
 * commands, their confirmations, apologies and notices do not.
 */
export type MessageRole = 'conversation' | 'command' | 'notice' | 'operator';

/** `by` of a handoff the user asked for with the `human` command. */
export const HANDOFF_BY_USER = 'user';

/** A conversation handed to operators: since when, and by whom (a token's name, or `user`). */
export interface Handoff {
  readonly since: Date;
  readonly by: string;
  /** The start or the last operator reply: the handoff ends HANDOFF_HOURS after it. */
  readonly activeAt: Date;
}

export interface User {
  readonly id: string;
  readonly waId: string | null;
  readonly bsuid: string | null;
  readonly name: string | null;
  readonly createdAt: Date;
  readonly lastMessageAt: Date | null;
  readonly lastMessagePreview: string | null;
  readonly lastMessageId: string | null;
  /** Meta's time of the latest inbound message (the 24-hour customer service window). */
  readonly lastInboundAt: Date | null;
  readonly messageCount: number;
  readonly optedOut: boolean;
  readonly welcomeSentAt: Date | null;
  /** Messages before this time are not AI context (the user's last `reset`). */
  readonly contextResetAt: Date | null;
  /** Set while operators answer this user instead of the bot (see ./handoff). */
  readonly handoff: Handoff | null;
  /** When the conversation was last taken, also after it was handed back (see ./handoff `take`). */
  readonly handoffTakenAt: Date | null;
}

export interface MessageError {
  readonly code: number | string | null;
  readonly title: string;
  readonly detail?: string;
}

export interface AiUsage {
  readonly provider: string;
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly totalTokens: number;
  readonly latencyMs: number;
}

export interface Message {
  readonly id: string;
  readonly userId: string;
  readonly waMessageId: string | null;
  readonly direction: Direction;
  readonly type: string;
  readonly text: string;
  readonly status: MessageStatus;
  readonly createdAt: Date;
  /** Conversation order on our clock (stored inbound / sent outbound); AI history and resets use it. */
  readonly seqAt: Date;
  /**
   * Inbound: when the notification reached us (stored by ingest, our clock); absent on messages
   * stored without it (migrated). The reply worker's 24-hour window runs from the later of it and
   * Meta's `createdAt`. Internal: not in the management API's message shape.
   */
  readonly receivedAt?: Date;
  readonly role: MessageRole;
  /** The business number (Graph `phone_number_id`) the conversation runs through. */
  readonly phoneNumberId: string | null;
  readonly replyState: ReplyState | null;
  readonly error: MessageError | null;
  readonly ai: AiUsage | null;
  /** Outbound: the inbound message it answers. Reaction: the message reacted to. */
  readonly relatedId: string | null;
  /** An operator message: the name of the token that sent it. */
  readonly by?: string;
  /** Inbound, while an answer of several parts goes out: the whole answer (see `ReplyPlan`). */
  readonly replyPlan?: ReplyPlan;
}

/**
 * An answer that goes out in several WhatsApp messages, kept on the inbound message it answers
 * before the first part is sent and until the answer is settled: a worker that takes over after a
 * crash between two parts sends the parts not recorded yet, never the ones already out.
 */
export interface ReplyPlan {
  readonly parts: readonly string[];
  readonly role: MessageRole;
  /** The model call's usage, kept on the first part. */
  readonly ai: AiUsage | null;
}

/** One inbound message as the webhook understood it, ready to be recorded. */
export interface InboundRecord {
  readonly id: string;
  readonly userId: string;
  readonly type: string;
  readonly text: string;
  readonly createdAt: Date;
  /** When we stored it (our clock): its place in the conversation against our answers. */
  readonly receivedAt: Date;
  readonly phoneNumberId: string;
  readonly role: MessageRole;
  readonly replyState: ReplyState;
  readonly relatedId: string | null;
  /** The message as Meta sent it, as JSON text (bounded: see ./bounded-json). */
  readonly rawJson: string;
}

/** An answer to store once it went out (or could not). */
export interface OutboundRecord {
  /** The wamid Graph returned, or a natural key `out:<inbound id>:<part>` when there is none. */
  readonly id: string;
  readonly waMessageId: string | null;
  readonly userId: string;
  readonly type: string;
  readonly text: string;
  readonly status: 'sent' | 'failed' | 'not_sent';
  readonly createdAt: Date;
  readonly role: MessageRole;
  readonly phoneNumberId: string | null;
  /** The inbound message it answers; null for an operator's message. */
  readonly relatedId: string | null;
  readonly error: MessageError | null;
  readonly ai: AiUsage | null;
  /** An operator message: the token's name. */
  readonly by?: string;
}

export interface StatusUpdate {
  readonly waMessageId: string;
  readonly status: 'sent' | 'delivered' | 'read' | 'failed';
  readonly at: Date;
  readonly recipient: string | null;
  readonly error: MessageError | null;
}

export interface Identity {
  readonly waId: string | null;
  readonly bsuid: string | null;
  readonly name: string | null;
}

export interface DailyStats {
  readonly date: string;
  readonly inbound: number;
  readonly outbound: number;
  readonly newUsers: number;
}

export interface Stats {
  readonly users: { readonly total: number; readonly optedOut: number; readonly active24h: number };
  readonly messages: {
    readonly total: number;
    readonly inbound: number;
    readonly outbound: number;
    readonly failed: number;
  };
  readonly ai: { readonly requests: number; readonly tokens: number };
  readonly daily: readonly DailyStats[];
}

export interface ArchivedEvent {
  readonly id: string;
  readonly kind: string;
  readonly reason: string;
  readonly createdAt: Date;
  readonly userId: string | null;
  /** The payload as received (parsed back from its stored JSON text; the text itself when it was cut). */
  readonly payload: unknown;
}

/** Keyset page: items plus an opaque cursor when more exist. */
export interface Page<T> {
  readonly items: readonly T[];
  readonly nextCursor: string | null;
}
