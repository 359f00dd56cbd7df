// The conversation summary kept on each user (so lists never scan messages): how many messages,
// the latest one (time, id, preview), the latest inbound time and how many inbound messages were
// stored. This file is the one rule for it: messages newly stored (webhook and reply paths,
// migration) and rebuilds from what is stored (retention, repair) all go through these functions.
import type { Document } from 'mongodb';

const PREVIEW_LENGTH = 120;

export const preview = (text: string): string =>
  text.length > PREVIEW_LENGTH ? `${text.slice(0, PREVIEW_LENGTH - 1)}…` : text;

/**
 * A message as the summary sees it. `at` is its place in the conversation on our clock (`seqAt`:
 * when we stored an inbound message, when we sent an outbound one): Meta's whole-second timestamps
 * cannot say whether a message came before or after one of our answers.
 */
export interface SummaryMessage {
  readonly id: string;
  readonly text: string;
  readonly at: Date;
  readonly direction: 'inbound' | 'outbound';
}

/** The summary fields of a user document. */
export interface SummaryFields {
  messageCount: number;
  lastMessageAt: Date;
  lastMessagePreview: string | null;
  lastMessageId: string | null;
  lastInboundAt?: Date | null;
  inboundCount?: number;
}

export interface SummaryChange {
  /** Counts to add. */
  readonly inc: Record<string, number>;
  /** Only when the user's last message is not newer than `latest`: the new last message. */
  readonly latest: { lastMessageAt: Date; lastMessagePreview: string; lastMessageId: string };
  readonly max: Document;
}

/** The change for messages newly stored for one user (never call it twice for one message). */
export function summaryChange(messages: readonly SummaryMessage[]): SummaryChange | null {
  if (messages.length === 0) return null;
  let latest = messages[0] as SummaryMessage;
  let lastInbound: Date | null = null;
  let inbound = 0;
  for (const m of messages) {
    if (m.at.getTime() >= latest.at.getTime()) latest = m;
    if (m.direction === 'inbound') {
      inbound++;
      if (!lastInbound || m.at > lastInbound) lastInbound = m.at;
    }
  }
  return {
    inc: { messageCount: messages.length, ...(inbound ? { inboundCount: inbound } : {}) },
    latest: {
      lastMessageAt: latest.at,
      lastMessagePreview: preview(latest.text),
      lastMessageId: latest.id,
    },
    max: lastInbound ? { lastInboundAt: lastInbound } : {},
  };
}

/**
 * The summary rebuilt from what is stored: the count and the latest remaining message. The time of
 * the last activity stays when messages were deleted (it orders the users list).
 */
export function rebuiltSummary(
  count: number,
  latest: SummaryMessage | null,
  lastActivity: Date,
): Pick<SummaryFields, 'messageCount' | 'lastMessageAt' | 'lastMessagePreview' | 'lastMessageId'> {
  return {
    messageCount: count,
    lastMessageAt: latest && latest.at > lastActivity ? latest.at : lastActivity,
    lastMessagePreview: latest ? preview(latest.text) : null,
    lastMessageId: latest?.id ?? null,
  };
}

/** A user's stored messages as a rebuild counts them: how many, and the latest by (`at`, id). */
export interface StoredTally {
  count: number;
  lastAt: Date;
  lastId: string;
}

/**
 * Adds one stored message (its `seqAt`, else `createdAt`, and its id) to its user's tally: the
 * order the summary's latest message follows, in a pass over messages in any order.
 */
export function tallyMessage(tallies: Map<string, StoredTally>, userId: string, at: Date, id: string): void {
  const s = tallies.get(userId);
  if (!s) {
    tallies.set(userId, { count: 1, lastAt: at, lastId: id });
    return;
  }
  s.count++;
  const t = at.getTime();
  if (t > s.lastAt.getTime() || (t === s.lastAt.getTime() && id > s.lastId)) {
    s.lastAt = at;
    s.lastId = id;
  }
}
