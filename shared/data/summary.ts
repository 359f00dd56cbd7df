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

/**
 * The inbound side of a rebuilt summary for a rebuild that does not hold the user's reply lock:
 * raised to what is stored, never lowered (messages deleted by retention, or moved to a number's
 * new owner, leave the time as it was; the holder of the lock, which compares the count, alone
 * sets it exactly: `recountSummary`). A user document written back from older data (a restore)
 * is so set right.
 */
export function raisedInbound(
  tally: Pick<StoredTally, 'inbound' | 'lastInboundAt'> | undefined,
  current: { inboundCount?: number | undefined; lastInboundAt?: Date | null | undefined },
): Pick<SummaryFields, 'inboundCount' | 'lastInboundAt'> {
  const stored = tally?.lastInboundAt ?? null;
  const at = current.lastInboundAt ?? null;
  return {
    inboundCount: Math.max(current.inboundCount ?? 0, tally?.inbound ?? 0),
    lastInboundAt: stored && (!at || stored > at) ? stored : at,
  };
}

/**
 * A message's place in the conversation as the summary orders it: `seqAt`, else `createdAt`
 * (messages stored before `seqAt` existed, and restored from backups of that time), then its id.
 */
export const placeOf = (m: { seqAt?: Date | undefined; createdAt?: Date | undefined }): Date | undefined =>
  m.seqAt ?? m.createdAt;

/** The fields of a stored message `tallyMessage` reads (a projection). */
export const TALLY_FIELDS = { userId: 1, direction: 1, createdAt: 1, seqAt: 1 } as const;

/** A user's stored messages as a rebuild counts them: how many (inbound), and the latest. */
export interface StoredTally {
  count: number;
  inbound: number;
  lastAt: Date;
  lastId: string;
  /** The latest inbound message's place, null when none is stored. */
  lastInboundAt: Date | null;
}

/**
 * Adds one stored message to its user's tally, in a pass over messages in any order: the one rule
 * every rebuild of the summary follows (the reply worker's recount, retention, the health check
 * and its repair). A message of a user counts (a status placeholder has no user); the latest is
 * the last by `placeOf`, then id.
 */
export function tallyMessage(
  tallies: Map<string, StoredTally>,
  m: {
    readonly _id: string;
    readonly userId?: string | undefined;
    readonly direction?: string | undefined;
    readonly createdAt?: Date | undefined;
    readonly seqAt?: Date | undefined;
  },
): void {
  const at = placeOf(m);
  if (!m.userId || !(at instanceof Date)) return;
  const inbound = m.direction === 'inbound' ? 1 : 0;
  const s = tallies.get(m.userId);
  if (!s) {
    tallies.set(m.userId, {
      count: 1,
      inbound,
      lastAt: at,
      lastId: m._id,
      lastInboundAt: inbound ? at : null,
    });
    return;
  }
  s.count++;
  s.inbound += inbound;
  if (inbound && (!s.lastInboundAt || at > s.lastInboundAt)) s.lastInboundAt = at;
  const t = at.getTime();
  if (t > s.lastAt.getTime() || (t === s.lastAt.getTime() && m._id > s.lastId)) {
    s.lastAt = at;
    s.lastId = m._id;
  }
}
