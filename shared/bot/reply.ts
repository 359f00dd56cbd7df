// The reply worker: answers the messages of one user, in order, exactly once each.
//
// A worker takes the user's reply lock (a lease on the user document, read in the same round
// trip), reads the user's latest messages once (what waits for an answer, and the AI's context),
// answers each waiting message, records each answer with the inbound message's new state in one
// write (which also marks them for the counters: ../data/pending), then frees the lock while
// recording the user's summary. A job that finds the lock taken simply ends: the holder looks
// again before it lets go (the user's inbound count tells it whether anything arrived meanwhile),
// so no job waits, spins or fails because another worker is busy with the same user. One job makes
// at most MAX_LOOKS looks and starts no answer after REPLY_BUDGET_MS: what still waits then goes to
// a new job, the lock freed first.
//
// The Graph API has no idempotency key: a crash between a send that Graph accepted and the one
// write that records it leaves the message waiting, and it is answered again once the lease ends.
// That window is the only accepted duplicate.
import { randomUUID } from 'node:crypto';
import { activeHandoff, type Message, type MessageError, type OutboundRecord, type User } from '../data';
import { pseudonym, type LogFields, type Logger } from '../log';
import { sleep } from '../time';
import {
  GraphError,
  REENGAGEMENT,
  type Recipient,
  type RetryPolicy,
  type SendResult,
} from '../whatsapp/graph';
import { windowOpen } from '../whatsapp/outbound';
import { leftAs } from './ai-responder';
import { decideAndApply } from './decide';
import type { ReplyJob } from './jobs';
import type { ReplyContent, ReplyPorts } from './ports';
import { splitMessage } from './split';
import { NOT_ASKED, WELCOME_TEXT } from './texts';

/** How long a welcome whose job failed every attempt waits before the sweeper re-queues it. */
export const WELCOME_POISON_PAUSE_MS = 10 * 60_000;
/**
 * A welcome whose job failed every attempt this many times (rounds of the queue's attempts some
 * WELCOME_POISON_PAUSE_MS apart: about half an hour in all) fails for a reason that lasts (a bug, a
 * setting): it is recorded `failed`, as one Graph refused, and not tried again.
 */
export const MAX_WELCOME_POISONINGS = 3;
/**
 * Longer than one answer takes at the default AI_TIMEOUT_MS: its model call and one retry (at most
 * 2 × 20 s and the wait between, 60 s), Graph's retries; renewed while a longer one runs.
 */
export const LEASE_MS = 90_000;
/**
 * The waits before a reply is sent again after Meta's pair rate limit (Graph code 131056: about
 * one message every 6 s to one user once a burst is spent; Meta's advice is to wait and retry,
 * backing off), or after Graph failed for a passing reason beyond the Graph client's quick retries
 * (throttling, a 5xx, no connection): 6 s, 12 s, 24 s, 42 s in all, well inside the lease, which
 * is renewed meanwhile. Each part of an answer has its own. Then the answer is recorded failed.
 */
export const PAIR_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 6_000, maxDelayMs: 24_000 };
/** Latest messages read per look without AI (what waits for an answer). */
const WINDOW = 20;
/** Looks one job makes; more waiting after them goes to a follow-up job (bounds one invocation). */
export const MAX_LOOKS = 20;
/**
 * Time one job answers for before what still waits goes to a follow-up job: MAX_LOOKS bounds the
 * looks, not what one look answers (up to the read's size, each answer up to two AI calls and the
 * pair-rate-limit waits of each part), so a long burst answered under a slow AI endpoint or the
 * pair rate limit would outlast `functionTimeout` (host.json, 30 min): the host then fails the
 * invocation and restarts the worker mid-answer. Checked before each answer but the job's first,
 * so one invocation lasts at most this plus one answer.
 */
export const REPLY_BUDGET_MS = 5 * 60_000;
/** Attempts at recording an answer that Graph accepted (a database error must not resend it). */
const RECORD_ATTEMPTS = 6;

export const recipientOf = (user: User): Recipient => ({ waId: user.waId, bsuid: user.bsuid });

const waiting = (m: Message): boolean =>
  m.direction === 'inbound' && (m.replyState === 'pending' || m.replyState === 'sending');

/** What one look at the user's messages found: the waiting ones and the context, oldest first. */
interface Look {
  recent: Message[];
  partial: boolean;
  waiting: Message[];
  /** More may wait than this look holds: look again once these are answered. */
  more: boolean;
  /**
   * Business numbers through which Graph refused an answer for the 24-hour window (131047) during
   * this look, with when: the window is closed for the rest of the look (`refusedInLook`).
   */
  refused: Map<string, Date>;
}

/**
 * One read of the user's latest messages (our clock) gives the AI's context and, usually, what
 * waits. Older ones may wait beyond it (a burst longer than the window, or a window filled by the
 * answers just sent): they are read oldest first when the oldest read waits, when the job's own
 * message is not among those read, or on a second look.
 */
async function look(ports: ReplyPorts, userId: string, hint: { messageId: string | null; again: boolean }) {
  const size = Math.max(WINDOW, ports.ai?.window ?? 0);
  const newestFirst = await ports.data.messages.recent(userId, size);
  const recent = [...newestFirst].reverse();
  const partial = newestFirst.length === size;
  let pending = recent.filter(waiting);
  let more = false;
  if (
    partial &&
    ((recent[0] && waiting(recent[0])) ||
      hint.again ||
      (hint.messageId !== null && !recent.some((m) => m.id === hint.messageId)))
  ) {
    pending = await ports.data.messages.pendingReplies(userId, size);
    more = pending.length === size;
  }
  // Answered in the order they were sent: Meta's time, which has whole seconds, then ours (a
  // notification's messages are stored in the order Meta lists them).
  pending.sort(
    (a, b) =>
      a.createdAt.getTime() - b.createdAt.getTime() ||
      a.seqAt.getTime() - b.seqAt.getTime() ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  return { recent, partial, waiting: pending, more, refused: new Map() } satisfies Look;
}

/** The conversation was taken (by an operator, or the user) after `read` was read. */
const takenSince = (read: User, fresh: User): boolean =>
  (fresh.handoffTakenAt?.getTime() ?? 0) !== (read.handoffTakenAt?.getTime() ?? 0);

/**
 * Whether the rest of an answer must not go out, the user read again: an operator took the
 * conversation (or wrote, which takes it) since `read` was read, handed back since or not, or the
 * user's erase began. Asked before each further part and after each wait to send one again.
 */
async function takenMeanwhile(ports: ReplyPorts, read: User): Promise<boolean> {
  const fresh = await ports.data.users.getLiveUser(read.id);
  return (
    !fresh || activeHandoff(fresh, ports.now(), ports.config.handoffHours) !== null || takenSince(read, fresh)
  );
}

/**
 * Renews the reply lock every third of its lease while the worker answers: one answer may outlast
 * the lease (an AI call and its retry under a long AI_TIMEOUT_MS, Graph's retries), and another
 * worker taking the lock then would answer the same message again. `lost` turns true when a
 * renewal finds the lock taken, or once the lease last taken (`takenAt`) has run out on the clock:
 * a worker paused past it (a frozen instance) ran no renewal, and another may hold the user now.
 * `stop` ends the renewals and waits for one under way, so that none lands after the lock is freed.
 */
function keepLease(ports: ReplyPorts, userId: string, owner: string, leaseMs: number, takenAt: Date) {
  let lost = false;
  let until = takenAt.getTime() + leaseMs;
  let renewing: Promise<void> | null = null;
  const timer = setInterval(() => {
    if (renewing) return; // one at a time: `stop` waits for the one under way
    const at = ports.now();
    renewing = ports.data.users
      .lockForReply(userId, owner, leaseMs, at)
      .then(
        (renewed) => {
          if (renewed) {
            until = Math.max(until, at.getTime() + leaseMs);
            return;
          }
          lost = true;
          clearInterval(timer);
        },
        () => undefined, // a database error: the next renewal tries again within the lease
      )
      .finally(() => {
        renewing = null;
      });
  }, leaseMs / 3);
  timer.unref();
  return {
    get lost() {
      return lost || ports.now().getTime() >= until;
    },
    async stop() {
      clearInterval(timer);
      await renewing;
    },
  };
}

export async function processReplyJob(
  ports: ReplyPorts,
  job: ReplyJob,
  log: Logger,
  {
    leaseMs = LEASE_MS,
    pairRetry = PAIR_RETRY,
    maxLooks = MAX_LOOKS,
    budgetMs = REPLY_BUDGET_MS,
  }: { leaseMs?: number; pairRetry?: RetryPolicy; maxLooks?: number; budgetMs?: number } = {},
): Promise<ReplyJob[]> {
  if (job.kind === 'welcome') {
    await sendWelcome(ports, job, log, leaseMs);
    return [];
  }
  const { data } = ports;
  const startedAt = ports.now().getTime();
  let answered = false;
  const owner = randomUUID();
  let lockedAt = ports.now();
  let locked = await data.users.lockForReply(job.userId, owner, leaseMs, lockedAt);
  if (!locked) return []; // another worker answers this user and looks again before it lets go
  // A worker died holding the lock, or a notification was found already stored when delivered
  // again (its first writer may have died): the summary may lack what they stored. Recounted while nothing else
  // answers this user; done again if another writer (ingest, an operator) notes a message meanwhile.
  if (locked.tookOver || job.recount) {
    await data.users.recountSummary(job.userId);
    lockedAt = ports.now();
    locked = await data.users.lockForReply(job.userId, owner, leaseMs, lockedAt);
    if (!locked) return [];
  }
  // What still waits after the last look: the lock is freed and a new job answers it.
  const followUp: ReplyJob[] = [];
  for (let looks = 0; looks < maxLooks && locked; looks++) {
    const seen: number = locked.inboundCount;
    const generation = locked.generation;
    let user: User = locked.user;
    const found = await look(ports, user.id, {
      messageId: looks === 0 ? job.messageId : null,
      again: looks > 0,
    });
    const recorded: OutboundRecord[] = [];
    // Renewed only when an answer or a drain takes long (never on the common path).
    const lease = keepLease(ports, user.id, owner, leaseMs, lockedAt);
    let done = false;
    let keepLock = false;
    // The job's time is spent: what still waits goes to a follow-up job.
    let spent = false;
    try {
      for (const [index, message] of found.waiting.entries()) {
        if (answered && ports.now().getTime() - startedAt >= budgetMs) {
          spent = true;
          break;
        }
        // While the answers before it went out, the user may have deleted or edited this message,
        // or sent one before it (a notification delivered late): what this look read is stale
        // then, and a new look answers what waits as the user left it, in order.
        if (index > 0 && (await data.users.inboundCount(user.id)) !== seen) break;
        user = await replyTo(ports, user, message, found, recorded, log, lease, pairRetry);
        answered = true;
      }
      done = true;
    } catch (error) {
      // An answer Graph accepted that the database would not record: the lock is kept until its
      // lease ends, so that a retry does not send it again at once.
      keepLock = error instanceof UnrecordedSend;
      throw error;
    } finally {
      await lease.stop();
      if (!keepLock) {
        // Recorded in the summary even when an answer failed half-way.
        const count = await data.users.releaseReplyLock(
          user.id,
          owner,
          recorded.map((a) => ({ id: a.id, text: a.text, at: a.createdAt, direction: 'outbound' })),
          generation,
        );
        // Erased while this worker answered: what the erase did not see is taken back.
        if (count === null && recorded.length && (await data.users.goneAfterErase(user.id, generation)))
          await data.messages.takeBack(
            user.id,
            recorded.map((a) => a.id),
          );
        const again = done && count !== null && (spent || count !== seen || found.more);
        lockedAt = ports.now();
        if (again && (spent || looks + 1 >= maxLooks)) {
          followUp.push({ kind: 'message', userId: user.id, messageId: job.messageId });
          locked = null;
        } else {
          locked = again ? await data.users.lockForReply(user.id, owner, leaseMs, lockedAt) : null;
        }
      }
    }
  }
  return followUp;
}

/** A send Graph accepted whose record could not be written. */
export class UnrecordedSend extends Error {
  override readonly name = 'UnrecordedSend';
}

/** Replies to one waiting message: decision, read receipt, send (maybe in parts), one write to record it. */
async function replyTo(
  ports: ReplyPorts,
  user: User,
  waiting: Message,
  found: Look,
  recorded: OutboundRecord[],
  log: Logger,
  lease: { readonly lost: boolean },
  pairRetry: RetryPolicy,
): Promise<User> {
  // Another worker holds the user now and answers this message: leave it to that worker.
  const stillOurs = () => {
    if (lease.lost) throw new Error('the reply lock was lost');
  };
  stillOurs();
  // An answer of several parts interrupted between two of them (the process died, or a database
  // error after a part went out): the parts not recorded yet follow, as decided then; those out
  // are never sent again, nor is the model asked again. One none of whose parts is recorded is
  // decided anew below (an operator may have taken the conversation since). Its parts are read on
  // their own: the user may have written more since than this look's read holds.
  const planned = waiting.replyPlan;
  const answeredBy = planned
    ? await ports.data.messages.answersTo(waiting)
    : found.recent.filter((m) => m.direction === 'outbound' && m.relatedId === waiting.id);
  if (
    planned &&
    answeredBy.length > 0 &&
    answeredBy.length < planned.parts.length &&
    !answeredBy.some((m) => m.status === 'failed')
  ) {
    // The rest goes out only as a new answer would. The bot never talks over an operator: one
    // who took the conversation since (handed back since or not), or an erase begun, leaves the
    // rest unsent, the message settled with the parts that went out; so does an opt-out since (a
    // `stop` sent before this message, delivered late, is answered first): an opted-out user gets
    // only the `start` confirmation. Once WhatsApp's 24-hour window has closed, Meta would refuse
    // the rest (131047): the message is settled as any message answered too late is.
    const fresh = await ports.data.users.getLiveUser(user.id);
    const cut = async (state: 'sent' | 'failed', error: MessageError | null) => {
      await record(ports, { inbound: waiting, parts: [], state, error, read: false });
      const index = found.recent.findIndex((m) => m.id === waiting.id);
      if (index >= 0) found.recent[index] = { ...waiting, replyState: state, error: error ?? waiting.error };
    };
    // Taken since its first part went out, handed back since or not (`handoffTakenAt` stays):
    // the rest was planned for a conversation an operator has had their say in.
    const began = Math.min(...answeredBy.map((m) => m.createdAt.getTime()));
    const why = !fresh
      ? 'the user is being erased'
      : activeHandoff(fresh, ports.now(), ports.config.handoffHours) ||
          (fresh.handoffTakenAt?.getTime() ?? 0) > began
        ? 'the conversation was taken meanwhile'
        : fresh.optedOut
          ? 'the user opted out meanwhile'
          : null;
    if (!fresh || why) {
      await cut('sent', null);
      log.info(`reply cut short: ${why}`, {
        id: waiting.id,
        user: pseudonym(user.id),
        part: answeredBy.length,
      });
      return fresh ?? user;
    }
    const closed = refusedInLook(waiting, found)
      ? REFUSED_IN_LOOK
      : (await windowClosed(ports, fresh, waiting, found))
        ? OUTSIDE_WINDOW
        : null;
    if (closed) {
      await cut('failed', closed);
      log.warn('reply cut short: outside the 24-hour window', {
        id: waiting.id,
        user: pseudonym(user.id),
        part: answeredBy.length,
      });
      return fresh;
    }
    log.warn('reply resumed after its part', {
      id: waiting.id,
      user: pseudonym(user.id),
      part: answeredBy.length,
    });
    await answer(
      ports,
      fresh,
      waiting,
      planned,
      answeredBy.length,
      {
        read: false,
        unsentAi: null,
        failure: null,
        refused: null,
        talkedOver: () => takenMeanwhile(ports, fresh),
      },
      found,
      recorded,
      log,
      pairRetry,
      stillOurs,
    );
    return fresh;
  }
  // An answer already recorded for it (a crash landed between the two halves of the record
  // write): settle the message, never send again.
  if (answeredBy.length) {
    await record(ports, { inbound: waiting, parts: [], state: 'sent', error: null, read: false });
    log.warn('reply found recorded; settled without sending', { id: waiting.id, user: pseudonym(user.id) });
    return user;
  }
  // Deleted for everyone (`revoke`) before it was answered, as far as this look read: left
  // unanswered, as if never sent (a deleted command takes no effect). Edited: answered as the
  // user left it, with its latest text.
  const message = leftAs(waiting, found.recent);
  if (!message) {
    await record(ports, { inbound: waiting, parts: [], state: 'none', error: null, read: false });
    const index = found.recent.findIndex((m) => m.id === waiting.id);
    if (index >= 0) found.recent[index] = { ...waiting, replyState: 'none' };
    log.info('not answered: deleted by the user', { id: waiting.id, user: pseudonym(user.id) });
    return user;
  }
  const decided = await decideAndApply(ports, user, message);
  // WhatsApp delivers an answer only within 24 hours of the user's latest message: one the worker
  // knows to be due later (the user's latest message reached us a day ago: a job handed over late)
  // would be refused (131047) after the AI was asked. Neither is done, and no read receipt goes
  // out; a command's effect above stands. Otherwise Graph judges (../whatsapp/outbound.ts `windowFrom`). So does a
  // message after one whose answer Graph refused for the window in this look (`refusedInLook`):
  // the next answer through that number would be refused too.
  const closed =
    decided.decision.kind === 'none'
      ? null
      : refusedInLook(message, found)
        ? REFUSED_IN_LOOK
        : (await windowClosed(ports, user, message, found))
          ? OUTSIDE_WINDOW
          : null;
  if (closed) {
    await record(ports, { inbound: message, parts: [], state: 'failed', error: closed, read: false });
    const index = found.recent.findIndex((m) => m.id === message.id);
    if (index >= 0) found.recent[index] = { ...message, replyState: 'failed', error: closed };
    log.warn(
      closed === REFUSED_IN_LOOK
        ? 'not answered: outside the 24-hour window (Graph refused an earlier answer to that number)'
        : 'not answered: outside the 24-hour window',
      { id: message.id, user: pseudonym(user.id) },
    );
    return decided.user;
  }
  // Marked read once: with the typing indicator right before the model is asked, else plainly
  // (a user over the AI rate limit sees no "typing…" followed by silence). Graph refusing the
  // access token for it refuses the answer too: the model is not asked (it would be paid for an
  // answer that cannot go out), and the answer is recorded failed as a refused send is.
  let read: boolean | null = null;
  let reply: ReplyContent | null = null;
  // Set when the model was about to be asked (its read receipt sent, or refused).
  let prepared = false;
  // Set when Graph refused the access token for the read receipt (not logged yet).
  const receipt: { refused: GraphError | null } = { refused: null };
  const markedRead = async (typing: boolean) => {
    const marked = await markRead(ports, message, typing, log);
    if (marked instanceof GraphError) receipt.refused = marked;
    return marked === true;
  };
  let current = decided.user;
  if (decided.decision.kind === 'fixed') reply = decided.decision.reply;
  else if (decided.decision.kind === 'ai' && ports.ai) {
    reply = await ports.ai.respond({
      user: decided.user,
      message,
      recent: found.recent,
      recentIsPartial: found.partial,
      preparing: async () => {
        read = await markedRead(true);
        prepared = true;
        return receipt.refused === null;
      },
      log,
    });
    // Not asked: what would have gone out is recorded failed (`answer`), said as such.
    if (prepared && receipt.refused)
      reply = { text: NOT_ASKED, role: 'conversation', ai: null, failure: null };
  }
  read ??= await markedRead(false);
  // The model was asked: `preparing` ran and Graph took its read receipt.
  const asked = prepared && receipt.refused === null;
  // The bot never talks over an operator. Since the lock read the user, an operator may have taken
  // the conversation (or written, which takes it) while the model answered or the read receipt
  // went out, or the user's erase began: the user is read again just before the answer goes out,
  // and then the answer is dropped and the message settled unanswered, as if the handoff had come
  // first; also when the conversation was handed back since (a take marks `handoffTakenAt`): the
  // answer was prepared without what the operator said. Not the answers that go out whatever an
  // operator did (`overHandoff`).
  const overHandoff = decided.decision.kind === 'fixed' && decided.decision.overHandoff;
  // The usage of a model call whose answer does not go out as such (an apology for a failed call,
  // an answer dropped): counted all the same, on the inbound message.
  let unsentAi = reply?.failure ? reply.ai : null;
  if (reply && !overHandoff) {
    const fresh = await ports.data.users.getLiveUser(user.id);
    if (
      !fresh ||
      activeHandoff(fresh, ports.now(), ports.config.handoffHours) ||
      takenSince(decided.user, fresh)
    ) {
      log.info('answer dropped: the conversation was taken meanwhile', {
        id: message.id,
        user: pseudonym(user.id),
        ai: asked,
      });
      unsentAi = reply.ai;
      reply = null;
    }
    if (fresh) current = fresh;
  }
  const refused = receipt.refused;
  // Nothing to answer (the AI's rate limit stays silent, an operator took the conversation): the
  // refusal is logged as such; else it is the answer's (`answer`).
  if (refused && !reply)
    sendFailed(log, refused, 'read receipt failed', {
      id: message.id,
      code: refused.graphCode ?? refused.status,
    });

  const texts = reply ? splitMessage(reply.text) : [];
  const plan = {
    parts: texts,
    role: reply?.role ?? 'conversation',
    ai: reply && !reply.failure ? reply.ai : null,
  };
  // Kept before the first part goes out when there are several (see `ReplyPlan`).
  if (texts.length > 1) await ports.data.messages.planReply(message.id, plan);
  await answer(
    ports,
    user,
    message,
    plan,
    0,
    {
      read,
      unsentAi,
      failure: reply?.failure ?? null,
      refused: reply ? refused : null,
      talkedOver: overHandoff ? null : () => takenMeanwhile(ports, decided.user),
    },
    found,
    recorded,
    log,
    pairRetry,
    stillOurs,
  );
  return current;
}

/**
 * Sends the parts of an answer from `from` on (none: the message is settled unanswered) and
 * records them: each but the last as soon as Graph accepted it, when there are several, the last
 * in the one write that settles the inbound message. What this look knows is brought up to date.
 */
async function answer(
  ports: ReplyPorts,
  user: User,
  message: Message,
  plan: { parts: readonly string[]; role: ReplyContent['role']; ai: ReplyContent['ai'] },
  from: number,
  settle: {
    read: boolean;
    unsentAi: ReplyContent['ai'];
    failure: MessageError | null;
    /** Graph refused the access token for the read receipt: no part is sent, the first recorded failed. */
    refused: GraphError | null;
    /**
     * Whether an operator took the conversation since the answer was decided (null: an answer that
     * goes out whatever an operator did): asked before each part after the first and after each
     * wait to send one again; the parts not out yet are then dropped (the bot never talks over an
     * operator), the message settled by the parts that went out, unanswered when none did.
     */
    talkedOver: (() => Promise<boolean>) | null;
  },
  found: Look,
  recorded: OutboundRecord[],
  log: Logger,
  pairRetry: RetryPolicy,
  stillOurs: () => void,
): Promise<void> {
  const { graph } = ports;
  const early: OutboundRecord[] = [];
  const parts: OutboundRecord[] = [];
  let failure: MessageError | null = null;
  // The index of the first part not sent because an operator took the conversation meanwhile.
  let dropped: number | null = null;
  const phoneNumberId = message.phoneNumberId ?? '';
  for (let index = from; index < plan.parts.length; index++) {
    const text = plan.parts[index] ?? '';
    const first = index === 0;
    // The answer was checked right before its first part (here, `from`); a later one may follow
    // an operator's take.
    if (index > from && settle.talkedOver && (await settle.talkedOver())) {
      dropped = index;
      break;
    }
    const base = {
      userId: user.id,
      type: 'text',
      text,
      role: plan.role,
      phoneNumberId,
      relatedId: message.id,
      ai: first ? plan.ai : null,
    };
    let sent: { waMessageId: string | null } | null;
    // Before each part: the parts out are recorded and the plan is kept, so a worker that took
    // the user over (this one's lease ran out: a frozen instance) sends the rest; this one sending
    // too would deliver a part twice.
    stillOurs();
    try {
      // The same refusal as a send would meet: recorded as one.
      if (settle.refused) throw settle.refused;
      sent = await sendPart(ports, phoneNumberId, recipientOf(user), text, pairRetry, (waitMs, why) => {
        log.info(why.pairRateLimited ? 'reply waits: pair rate limit' : 'reply waits: Graph failed for now', {
          id: message.id,
          user: pseudonym(user.id),
          part: index,
          waitMs,
          code: why.graphCode ?? why.status,
        });
        // Another worker may hold the user after the wait, and send this part itself; an operator
        // may have taken the conversation while it waited.
        return async () => {
          stillOurs();
          return !(settle.talkedOver && (await settle.talkedOver()));
        };
      });
    } catch (error) {
      // Only what Graph refused is a send failure; anything else is retried by the queue.
      if (!(error instanceof GraphError)) throw error;
      failure = { code: error.graphCode ?? error.status, title: error.description };
      parts.push({
        ...base,
        id: `out:${message.id}:${index}`,
        waMessageId: null,
        status: 'failed',
        createdAt: ports.now(),
        error: failure,
      });
      sendFailed(log, error, 'reply failed', {
        id: message.id,
        user: pseudonym(user.id),
        code: failure.code,
      });
      break;
    }
    if (!sent) {
      dropped = index;
      break;
    }
    const part: OutboundRecord = {
      ...base,
      id: sent.waMessageId ?? `out:${message.id}:${index}`,
      waMessageId: sent.waMessageId,
      status: sent.waMessageId ? 'sent' : 'not_sent',
      createdAt: ports.now(),
      error: null,
    };
    // Another part follows: this one is recorded now, so that it is never sent again, and goes
    // in the summary when the lock is freed even if the answer stops before its end.
    if (index < plan.parts.length - 1) {
      const stored = await recordPart(ports, part);
      if (stored) {
        early.push(stored);
        recorded.push(stored);
      }
    } else parts.push(part);
  }
  // Dropped before any part went out: unanswered, the model's usage (if any) kept on the message.
  const unanswered = dropped === 0;
  if (dropped !== null)
    log.info('answer dropped: the conversation was taken meanwhile', {
      id: message.id,
      user: pseudonym(user.id),
      part: dropped,
    });
  const state = plan.parts.length === 0 || unanswered ? 'none' : failure ? 'failed' : 'sent';
  // Graph refused it for the 24-hour window: the message keeps the reason any message answered too
  // late keeps (the part that did not go out keeps Graph's code).
  const why = failure?.code === REENGAGEMENT ? REFUSED_OUTSIDE_WINDOW : failure;
  // The window is closed through this number for the rest of the look: the messages after this
  // one are settled without a read receipt, an AI call or a send (`refusedInLook`).
  if (failure?.code === REENGAGEMENT) found.refused.set(phoneNumberId, ports.now());
  const settled = await record(ports, {
    inbound: message,
    parts,
    state,
    error: unanswered ? null : (why ?? settle.failure),
    read: settle.read,
    ai: unanswered ? (plan.ai ?? settle.unsentAi) : settle.unsentAi,
    answered: early.length > 0,
  });
  recorded.push(...settled.stored);
  const stored = [...early, ...settled.stored];
  // What this look knows now: the message answered, the answer sent (the next message's context).
  const index = found.recent.findIndex((m) => m.id === message.id);
  if (index >= 0)
    found.recent[index] = {
      ...message,
      replyState: state,
      error: unanswered ? message.error : (why ?? settle.failure ?? message.error),
    };
  found.recent.push(
    ...stored.map((p): Message => ({
      id: p.id,
      userId: p.userId,
      waMessageId: p.waMessageId,
      direction: 'outbound',
      type: p.type,
      text: p.text,
      status: p.status,
      createdAt: p.createdAt,
      seqAt: p.createdAt,
      role: p.role,
      phoneNumberId: p.phoneNumberId,
      replyState: null,
      error: p.error,
      ai: p.ai,
      relatedId: p.relatedId,
    })),
  );
  if (plan.parts.length && !failure && !unanswered)
    log.info('reply sent', {
      id: message.id,
      user: pseudonym(user.id),
      parts: (dropped ?? plan.parts.length) - from,
      dryRun: graph.dryRun,
    });
}

/** What a message answered too late keeps (the code the management API answers an operator with). */
const OUTSIDE_WINDOW: MessageError = {
  code: 'OUTSIDE_WINDOW',
  title:
    "not answered: the user's latest message reached us 24 hours or more before the answer was due " +
    "(WhatsApp's 24-hour customer service window had closed); only a template can reach them",
};

/** What a message keeps when Graph refused its answer for the window (code 131047). */
const REFUSED_OUTSIDE_WINDOW: MessageError = {
  code: 'OUTSIDE_WINDOW',
  title:
    "not answered: WhatsApp refused the answer (Graph code 131047): the user's 24-hour customer " +
    'service window had closed; only a template can reach them',
};

/** What a message keeps when Graph refused, for the window, an earlier answer of the same look. */
const REFUSED_IN_LOOK: MessageError = {
  code: 'OUTSIDE_WINDOW',
  title:
    'not answered: WhatsApp had just refused an earlier answer to the user through the same business ' +
    "number (Graph code 131047): the user's 24-hour customer service window had closed; only a " +
    'template can reach them',
};

/**
 * Whether Graph refused an answer for the window (131047) through the business number of this
 * message earlier in this look, and no message to that number has reached us since (the user
 * wrote: the window is open again). Each further answer would be refused as well, after a read
 * receipt and an AI call. A new look starts with no refusal.
 */
function refusedInLook(message: Message, found: Look): boolean {
  const refusedAt = found.refused.get(message.phoneNumberId ?? '');
  if (!refusedAt) return false;
  const since = (m: Message) =>
    m.direction === 'inbound' &&
    m.phoneNumberId === message.phoneNumberId &&
    (m.receivedAt ?? m.createdAt) > refusedAt;
  return !(since(message) || found.recent.some(since));
}

/**
 * Whether WhatsApp's customer service window is known closed now for the business number the
 * message was sent to (the answer goes out through it, and Meta keeps a window per business number
 * and user): the user's latest inbound message to that number reached us, and was sent on Meta's
 * clock, 24 hours ago or more (`windowFrom`). A message within it, or a later one to that number
 * in the messages read, answers without a round trip; only an old message asks the database for
 * the user's latest to that number as it reached us.
 */
async function windowClosed(ports: ReplyPorts, user: User, message: Message, found: Look): Promise<boolean> {
  const now = ports.now();
  const open = (m: Message) =>
    m.direction === 'inbound' && m.phoneNumberId === message.phoneNumberId && windowOpen(m, now);
  if (open(message) || found.recent.some(open)) return false;
  const last = await ports.data.handoff.lastArrived(user.id, message.phoneNumberId);
  return !last || !windowOpen(last, now);
}

/**
 * Sends one part of an answer. Meta's pair rate limit (131056) refused it without sending, or Graph
 * failed for a passing reason longer than the Graph client's own quick retries (throttling 429 or
 * 130429, a 5xx, no connection: not permanent, and never a send that may have gone out): it is
 * sent again after the waits of `policy`, here, while the worker holds the user's lock (renewed
 * meanwhile), so the user's answers keep their order and the AI is not asked again, as a retry by
 * the queue would. `waiting` is told each wait and why, and gives what to check once it is over:
 * whether to send again (null: not sent, an operator took the conversation while it waited).
 */
async function sendPart(
  ports: ReplyPorts,
  phoneNumberId: string,
  to: Recipient,
  text: string,
  policy: RetryPolicy,
  waiting: (waitMs: number, why: GraphError) => () => Promise<boolean>,
): Promise<SendResult | null> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await ports.graph.sendText(phoneNumberId, to, text);
    } catch (error) {
      if (!(error instanceof GraphError) || error.permanent || attempt >= policy.attempts) throw error;
      const waitMs = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const goOn = waiting(waitMs, error);
      await sleep(waitMs);
      if (!(await goOn())) return null;
    }
  }
}

/** The one write after a send: tried again on a database error, since the send must not repeat. */
async function record(
  ports: ReplyPorts,
  {
    answered = false,
    ...input
  }: Parameters<ReplyPorts['data']['messages']['settleReply']>[0] & {
    /** Parts of this answer went out already (recorded on their own). */
    answered?: boolean;
  },
) {
  // Nothing went out: a database error is the queue's to retry.
  if (!answered && !input.parts.some((p) => p.status !== 'failed'))
    return ports.data.messages.settleReply(input);
  return retriedRecord('an accepted answer', async (attempt) => {
    const settled = await ports.data.messages.settleReply(input);
    // On a second attempt, parts found stored are the first attempt's, whose write landed though
    // its answer was lost (each part's id is the wamid Graph just gave it): this call stored them.
    return attempt > 1 ? { ...settled, stored: [...input.parts] } : settled;
  });
}

/**
 * Records a part Graph accepted before the next is sent: tried again, since the send must not
 * repeat. The record as stored (its id may differ from the wamid, see `rekeyCollisions`) when this
 * call stored it: on a second attempt, a record found already there is the
 * first attempt's, whose write landed though its answer was lost (the part's id is the wamid
 * Graph just gave it; a status that came first leaves a placeholder the record joins, no duplicate).
 */
async function recordPart(ports: ReplyPorts, part: OutboundRecord): Promise<OutboundRecord | null> {
  return retriedRecord(
    'an accepted part of an answer',
    async (attempt) => (await ports.data.messages.recordPart(part)) ?? (attempt > 1 ? part : null),
  );
}

/** A record of what Graph accepted, tried again on a database error (`RECORD_ATTEMPTS` in all). */
async function retriedRecord<T>(what: string, write: (attempt: number) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await write(attempt);
    } catch (error) {
      if (attempt >= RECORD_ATTEMPTS)
        throw new UnrecordedSend(`${what} could not be recorded`, { cause: error });
      await sleep(250 * 2 ** attempt);
    }
  }
}

/**
 * A request Graph refused, logged. A refused access token is not the message's problem but the
 * deployment's, and fails every send until an operator replaces it: said as such, at error level.
 */
function sendFailed(log: Logger, error: GraphError, what: string, fields: LogFields): void {
  if (error.tokenRefused)
    log.error(
      `${what}: the Graph API refused WHATSAPP_ACCESS_TOKEN (expired, revoked or wrong), a configuration problem: every send fails until the setting is replaced`,
      fields,
    );
  else log.warn(what, fields);
}

/**
 * Read receipt (and typing indicator before an AI answer); a failure here never blocks the answer,
 * but for Graph refusing the access token, which refuses the answer too: that error is returned,
 * not logged (the caller records and logs it once).
 */
async function markRead(
  ports: ReplyPorts,
  message: Message,
  typing: boolean,
  log: Logger,
): Promise<boolean | GraphError> {
  if (ports.graph.dryRun || !message.phoneNumberId) return false;
  try {
    await ports.graph.markRead(message.phoneNumberId, message.id, typing);
    return true;
  } catch (error) {
    if (!(error instanceof GraphError)) throw error;
    if (error.tokenRefused) return error;
    sendFailed(log, error, 'read receipt failed', { id: message.id, code: error.graphCode ?? error.status });
    return false;
  }
}

async function sendWelcome(
  ports: ReplyPorts,
  job: Extract<ReplyJob, { kind: 'welcome' }>,
  log: Logger,
  leaseMs: number,
): Promise<void> {
  const { data, graph } = ports;
  const user = await data.users.getLiveUser(job.userId);
  if (!user || user.optedOut) {
    // Never welcomed: a claim a killed worker left is not re-queued again.
    await data.users.dropEndedWelcomeClaim(job.userId, ports.now());
    return;
  }
  // Claimed only while no operator holds the conversation (an operator who took a user who only
  // opened the chat answers them instead), for a lease: a worker killed before it sent the welcome
  // leaves a claim that ends. A job that finds another worker's claim holding ends (that worker
  // may be sending it); once the claim has ended unsent, the job handed over again sends the
  // welcome, or the sweeper re-queues it (the queue hands a job over again while the claim still
  // holds: locally after 30 s, in Azure 15 s after a failed attempt). A kill after Graph accepted
  // it and before it is marked sent sends it again once the lease ends: as for answers, the one
  // accepted duplicate (Graph has no idempotency key).
  const claimed = await data.users.claimWelcome(
    user.id,
    ports.now(),
    ports.config.handoffHours,
    leaseMs,
    job,
  );
  if (!claimed) return;
  let sent: { waMessageId: string | null };
  try {
    sent = await graph.sendText(job.phoneNumberId, recipientOf(user), WELCOME_TEXT);
  } catch (error) {
    // As for an answer, only what Graph refused for good is a send failure (a request that may
    // have reached Graph without an answer read is one: it is not sent again). Anything else (a
    // throttled or failing Graph, a failure before the request went out, a bug) is the queue's to
    // retry: the claim is freed for the job handed over again.
    if (!(error instanceof GraphError) || !error.permanent) {
      await data.users.releaseWelcome(user.id);
      throw error;
    }
    // Refused for good: not tried again, and recorded `failed` as an answer Graph refused is (the
    // conversation and the stats show it).
    const createdAt = ports.now();
    await data.users.settleWelcome(user.id, createdAt);
    const failure = { code: error.graphCode ?? error.status, title: error.description };
    await data.messages.recordOutbound(
      welcomeRecord(user.id, job, { waMessageId: null }, createdAt, failure),
    );
    sendFailed(log, error, 'welcome failed', { user: pseudonym(user.id), code: failure.code });
    return;
  }
  const createdAt = ports.now();
  await retriedRecord('an accepted welcome', () => data.users.settleWelcome(user.id, createdAt));
  const result = await data.messages.recordOutbound(welcomeRecord(user.id, job, sent, createdAt, null));
  log.info('welcome sent', { user: pseudonym(user.id), result });
}

/** The welcome as stored: `sent` (`not_sent` on a dry run) or, with `error`, `failed`. */
function welcomeRecord(
  userId: string,
  job: Extract<ReplyJob, { kind: 'welcome' }>,
  sent: { waMessageId: string | null },
  createdAt: Date,
  error: MessageError | null,
): OutboundRecord {
  return {
    id: sent.waMessageId ?? `out:${job.requestId}:0`,
    waMessageId: sent.waMessageId,
    userId,
    type: 'text',
    text: WELCOME_TEXT,
    status: error ? 'failed' : sent.waMessageId ? 'sent' : 'not_sent',
    createdAt,
    role: 'command',
    phoneNumberId: job.phoneNumberId,
    relatedId: job.requestId,
    error,
    ai: null,
  };
}

/**
 * The poison queue: a job that failed every attempt. A welcome is kept on the user for the
 * sweeper to re-queue after WELCOME_POISON_PAUSE_MS, until its job has failed so
 * MAX_WELCOME_POISONINGS times: then it is recorded `failed` and not tried again. A
 * message is marked `failed` with the reason, unless a worker holds the user's lock right now (it
 * is being answered), or parts of its answer went out before the job failed (an answer in several
 * parts, its first parts recorded):
 * the user got the start of the answer, and the message is settled `sent`, as an answer cut short
 * by a handoff is. What was not sent stays unsent. A lock taken over from a dead worker has the
 * user's summary recounted before it is freed.
 */
export async function handlePoisonJob(
  ports: ReplyPorts,
  job: ReplyJob,
  reason: string,
  log: Logger,
): Promise<void> {
  if (job.kind === 'welcome') {
    // Kept on the user for the sweeper, which re-queues it after a pause (the cause, a Graph or
    // database outage, may last), and again after each poisoning until it goes out, or the user
    // opts out, or an operator takes the conversation, or the user is erased; or, poisoned
    // MAX_WELCOME_POISONINGS times, it is given up: recorded failed (the conversation, the stats
    // and `npm run health` show it), never retried every few minutes for ever.
    const now = ports.now();
    const until = new Date(now.getTime() + WELCOME_POISON_PAUSE_MS);
    const poisonings = await ports.data.users.welcomeLater(job.userId, now, until, job);
    if (poisonings === null) return;
    const user = pseudonym(job.userId);
    if (poisonings < MAX_WELCOME_POISONINGS) {
      log.warn('welcome job poisoned; re-queued by the sweeper later', {
        user,
        poisonings,
        pauseMs: WELCOME_POISON_PAUSE_MS,
      });
      return;
    }
    if (await ports.data.users.giveUpWelcome(job.userId, now)) {
      const failure = { code: null, title: `${reason}, ${poisonings} times: given up` };
      await ports.data.messages.recordOutbound(
        welcomeRecord(job.userId, job, { waMessageId: null }, now, failure),
      );
      log.error('welcome job poisoned too many times; recorded failed, not tried again', {
        user,
        poisonings,
      });
    }
    return;
  }
  const { messages } = ports.data;
  // The lock that counts is the message's owner's: the job may name another user (one the
  // message has moved from with a number change, or any, written there with the storage key).
  const stored = await messages.getMessage(job.messageId);
  if (!stored) {
    log.info('poisoned reply job for a message not stored', { id: job.messageId });
    return;
  }
  const userId = stored.userId;
  const owner = randomUUID();
  const locked = await ports.data.users.lockForReply(userId, owner, LEASE_MS, ports.now());
  if (!locked) {
    log.info('poisoned reply job left to the worker answering the user', { id: job.messageId });
    return;
  }
  try {
    // Taken from a worker whose lease ended (the job's last attempt was killed, say after a part
    // of its answer was recorded): the summary may lack what it stored, and this handler frees the
    // lock as its own, so no later worker would find it taken over and recount. Recounted here, as
    // the reply worker does when it takes a lock over.
    if (locked.tookOver) await ports.data.users.recountSummary(userId);
    // Read again under the lock: the answer may have gone out meanwhile.
    const message = await messages.getMessage(job.messageId);
    const out = message ? await messages.answersTo(message) : [];
    if (out.some((m) => m.status !== 'failed')) {
      if (await messages.finishReply(job.messageId, 'sent'))
        log.warn('reply job poisoned; settled with the parts that went out', {
          id: job.messageId,
          part: out.length,
        });
    } else if (await messages.finishReply(job.messageId, 'failed', { code: null, title: reason }))
      log.warn('reply job poisoned', { id: job.messageId });
  } finally {
    await ports.data.users.releaseReplyLock(userId, owner, []);
  }
}
