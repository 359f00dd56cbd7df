// The reply worker: answers the messages of one user, in order, exactly once each. A per-user lock
// serialises answers; each message is claimed (`pending` → `sending` with a lease) before its
// answer goes out, then stored under its wamid and the inbound message marked `sent` or `failed`.
import { randomUUID } from 'node:crypto';
import type { Services } from '../deps';
import { AppError, ErrorCode } from '../errors';
import type { Message, MessageError, User } from '../data';
import { pseudonym, type Logger } from '../log';
import { GraphError, type Recipient } from '../whatsapp/graph';
import { planAnswer, type Reply } from './answer';
import type { ReplyJob } from './jobs';
import { splitMessage } from './split';
import { WELCOME_TEXT } from './texts';

/** Longer than one answer can take (AI timeout and retry, Graph retries). */
export const LEASE_MS = 90_000;
const DRAIN_BATCH = 10;
const MAX_ROUNDS = 20;
const LOCK_WAIT_MS = 30_000;
const LOCK_POLL_MS = 200;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const recipientOf = (user: User): Recipient => ({ waId: user.waId, bsuid: user.bsuid });

const errorOf = (error: unknown): MessageError =>
  error instanceof GraphError
    ? { code: error.graphCode ?? error.status, title: error.message }
    : { code: null, title: error instanceof Error ? error.message : 'unknown error' };

export async function processReplyJob(services: Services, job: ReplyJob, log: Logger): Promise<void> {
  if (job.kind === 'welcome') return sendWelcome(services, job, log);

  const { data } = services;
  const owner = randomUUID();
  const deadline = Date.now() + LOCK_WAIT_MS;
  // Another worker may be answering this user: wait for it to finish, or to answer our message.
  while (!(await data.users.acquireReplyLock(job.userId, owner, LEASE_MS))) {
    const message = await data.messages.getMessage(job.messageId);
    if (!message || (message.replyState !== 'pending' && message.replyState !== 'sending')) return;
    if (Date.now() > deadline) {
      throw new AppError(ErrorCode.THROTTLED, 'the user is being answered by another worker; retry later');
    }
    await sleep(LOCK_POLL_MS);
  }
  let blocked = false;
  try {
    for (let round = 0; round < MAX_ROUNDS && !blocked; round++) {
      const pending = await data.messages.pendingReplies(job.userId, DRAIN_BATCH);
      if (pending.length === 0) break;
      for (const message of pending) {
        const claimed = await data.messages.claimReply(message.id, LEASE_MS);
        if (!claimed) {
          // Still leased by a worker that stopped: later messages wait for it (order is kept).
          blocked = true;
          break;
        }
        await answer(services, claimed, log);
        await data.users.acquireReplyLock(job.userId, owner, LEASE_MS);
      }
    }
  } finally {
    await data.users.releaseReplyLock(job.userId, owner);
  }
  const mine = await data.messages.getMessage(job.messageId);
  if (mine && (mine.replyState === 'pending' || mine.replyState === 'sending')) {
    if (blocked || mine.replyState === 'sending') {
      throw new AppError(ErrorCode.THROTTLED, 'an earlier message is still being answered; retry later');
    }
    // Stored after our last look while we held the lock: answer it now.
    return processReplyJob(services, job, log);
  }
}

/** Answers one claimed inbound message: read receipt, decision, send (maybe in parts), store. */
async function answer(services: Services, message: Message, log: Logger): Promise<void> {
  const { data, graph } = services;
  const user = await data.users.getUser(message.userId);
  if (!user) {
    await data.messages.finishReply(message.id, 'none');
    return;
  }
  const plan = await planAnswer(services, user, message);
  await markRead(services, message, plan.kind === 'ai', log);
  let reply: Reply | null;
  if (plan.kind === 'none') reply = null;
  else if (plan.kind === 'fixed') reply = plan.reply;
  else reply = (await services.ai?.answer({ user, message, log })) ?? null;
  if (!reply) {
    await data.messages.finishReply(message.id, 'none');
    return;
  }
  const phoneNumberId = message.phoneNumberId ?? '';
  const parts = splitMessage(reply.text);
  for (const [index, part] of parts.entries()) {
    const partReply: Reply = index === 0 ? reply : { ...reply, ai: null };
    try {
      const sent = await graph.sendText(phoneNumberId, recipientOf(user), part);
      await data.messages.recordOutbound({
        id: sent.waMessageId ?? `out:${message.id}:${index}`,
        waMessageId: sent.waMessageId,
        userId: user.id,
        type: 'text',
        text: part,
        status: sent.waMessageId ? 'sent' : 'not_sent',
        createdAt: services.now(),
        role: partReply.role,
        phoneNumberId,
        relatedId: message.id,
        error: null,
        ai: partReply.ai,
      });
    } catch (error) {
      if (error instanceof AppError && !(error instanceof GraphError)) throw error;
      const failure = errorOf(error);
      await data.messages.recordOutbound({
        id: `out:${message.id}:${index}`,
        waMessageId: null,
        userId: user.id,
        type: 'text',
        text: part,
        status: 'failed',
        createdAt: services.now(),
        role: partReply.role,
        phoneNumberId,
        relatedId: message.id,
        error: failure,
        ai: partReply.ai,
      });
      await data.messages.finishReply(message.id, 'failed', failure);
      log.warn('reply failed', { id: message.id, user: pseudonym(user.id), code: failure.code });
      return;
    }
  }
  await data.messages.finishReply(message.id, 'sent', reply.failure);
  log.info('reply sent', {
    id: message.id,
    user: pseudonym(user.id),
    parts: parts.length,
    dryRun: graph.dryRun,
  });
}

/** Read receipt (and typing indicator before an AI answer); a failure here never blocks the answer. */
async function markRead(services: Services, message: Message, typing: boolean, log: Logger): Promise<void> {
  if (services.graph.dryRun || !message.phoneNumberId) return;
  try {
    await services.graph.markRead(message.phoneNumberId, message.id, typing);
    await services.data.messages.markInboundRead(message.id);
  } catch (error) {
    if (!(error instanceof GraphError)) throw error;
    log.warn('read receipt failed', { id: message.id, code: error.graphCode ?? error.status });
  }
}

async function sendWelcome(
  services: Services,
  job: Extract<ReplyJob, { kind: 'welcome' }>,
  log: Logger,
): Promise<void> {
  const { data, graph } = services;
  const user = await data.users.getUser(job.userId);
  if (!user || user.optedOut) return;
  if (!(await data.users.claimWelcome(user.id, services.now()))) return;
  let sent: { waMessageId: string | null };
  try {
    sent = await graph.sendText(job.phoneNumberId, recipientOf(user), WELCOME_TEXT);
  } catch (error) {
    if (error instanceof GraphError && !error.permanent) {
      await data.users.releaseWelcome(user.id);
      throw error;
    }
    log.warn('welcome failed', { user: pseudonym(user.id) });
    return;
  }
  await data.messages.recordOutbound({
    id: sent.waMessageId ?? `out:${job.requestId}:0`,
    waMessageId: sent.waMessageId,
    userId: user.id,
    type: 'text',
    text: WELCOME_TEXT,
    status: sent.waMessageId ? 'sent' : 'not_sent',
    createdAt: services.now(),
    role: 'command',
    phoneNumberId: job.phoneNumberId,
    relatedId: job.requestId,
    error: null,
    ai: null,
  });
  log.info('welcome sent', { user: pseudonym(user.id) });
}

/** The poison queue: a job that failed every attempt. Its message is marked `failed`, never left `sending`. */
export async function handlePoisonJob(
  services: Services,
  job: ReplyJob,
  reason: string,
  log: Logger,
): Promise<void> {
  if (job.kind !== 'message') return;
  await services.data.messages.finishReply(job.messageId, 'failed', { code: null, title: reason });
  log.warn('reply job poisoned', { id: job.messageId });
}
