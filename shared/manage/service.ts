// Management operations: validate the query, run one data-module query, shape the JSON answer.
import { randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import { scrub } from '../log';
import {
  activeHandoff,
  type ArchivedEvent,
  type DataStore,
  type KeyedAudit,
  MAX_WA_ID_DIGITS,
  type Message,
  type MessageError,
  queryTerms,
  type User,
  userQueryTerms,
} from '../data';
import {
  ACCESS_TOKEN_REFUSED,
  GraphError,
  PAIR_RATE_LIMIT,
  type GraphClient,
  type SendResult,
} from '../whatsapp/graph';
import { OutboundLimitError, windowOpen } from '../whatsapp/outbound';
import type { CursorCodec } from './cursor';
import type { Caller } from './auth';
import type { ExportJson, MessageJson, SendBody, StatsJson, UserJson } from './schemas';

const HOUR_MS = 3_600_000;
/** Graph's code for free text outside the 24-hour window. */
const GRAPH_REENGAGEMENT = 131047;

/** What a management operation works with. */
export interface ManageContext {
  readonly data: DataStore;
  readonly now: Date;
  readonly graph: GraphClient;
  readonly handoffHours: number;
  /** Page cursors, encrypted with the deployment's key (./cursor). */
  readonly cursors: CursorCodec;
}

export const userJson = (u: User, ctx: Pick<ManageContext, 'now' | 'handoffHours'>): UserJson => {
  const handoff = activeHandoff(u, ctx.now, ctx.handoffHours);
  return {
    id: u.id,
    waId: u.waId,
    bsuid: u.bsuid,
    name: u.name,
    createdAt: u.createdAt.toISOString(),
    lastMessageAt: u.lastMessageAt ? u.lastMessageAt.toISOString() : null,
    lastMessagePreview: u.lastMessagePreview,
    messageCount: u.messageCount,
    optedOut: u.optedOut,
    handoff: handoff
      ? {
          since: handoff.since.toISOString(),
          by: handoff.by,
          expiresAt: new Date(handoff.activeAt.getTime() + ctx.handoffHours * HOUR_MS).toISOString(),
        }
      : null,
  };
};

export const messageJson = (m: Message): MessageJson => ({
  id: m.id,
  userId: m.userId,
  waMessageId: m.waMessageId,
  direction: m.direction,
  type: m.type,
  text: m.text,
  status: m.status,
  createdAt: m.createdAt.toISOString(),
  receivedAt: m.direction === 'inbound' && m.receivedAt ? m.receivedAt.toISOString() : null,
  role: m.role,
  by: m.by ?? null,
  error: m.error ? { code: m.error.code, title: m.error.title, detail: m.error.detail ?? null } : null,
});

const eventJson = (e: ArchivedEvent) => ({
  id: e.id,
  kind: e.kind,
  reason: e.reason,
  createdAt: e.createdAt.toISOString(),
  payload: e.payload,
});

/**
 * Validates query parameters; a bad value is a 400 whose message names the parameter, and so is
 * one of the schema's parameters given twice (which one was meant is unknown), empty or not. An
 * empty value (`cursor=`) counts as absent. Others are ignored.
 */
export function parseQuery<S extends z.ZodObject>(schema: S, query: URLSearchParams): z.infer<S> {
  const raw = new Map<string, string>();
  const seen = new Set<string>();
  for (const [key, value] of query) {
    if (seen.has(key) && Object.hasOwn(schema.shape, key)) {
      throw new AppError(ErrorCode.INVALID_INPUT, `invalid query parameter "${key}": must be given once`);
    }
    seen.add(key);
    // An empty value is an absent one: the brief writes the routes `?limit=&cursor=&q=`, and a
    // client filling in that template sends `cursor=` for the first page or `limit=` for the default.
    if (value !== '') raw.set(key, value);
  }
  const result = schema.safeParse(Object.fromEntries(raw));
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const name = String(issue?.path[0] ?? 'query');
  throw new AppError(
    ErrorCode.INVALID_INPUT,
    `invalid query parameter "${name}": ${issue?.message ?? 'invalid'}`,
  );
}

/** The audit trail's who: the token's name (as the brief says), and its id (names may repeat). */
const who = (caller: Caller): { tokenName: string; tokenId: string | null } => ({
  tokenName: caller.name,
  tokenId: caller.tokenId,
});

const notFound = (): AppError => new AppError(ErrorCode.NOT_FOUND, 'user not found');

export async function getStats({ data, now }: ManageContext): Promise<StatsJson> {
  // The counters with what writers marked and the sweep has not folded in yet (shared/data/pending).
  const [users, { totals, daily, models }] = await Promise.all([
    data.manage.countUsers(now),
    data.stats.snapshot(now),
  ]);
  return {
    users,
    messages: {
      total: totals.inbound + totals.outbound,
      inbound: totals.inbound,
      outbound: totals.outbound,
      failed: totals.failed,
    },
    ai: { requests: totals.aiRequests, tokens: totals.aiTokens, models },
    daily: daily.map((d) => ({
      date: d.date,
      inbound: d.inbound,
      outbound: d.outbound,
      newUsers: d.newUsers,
    })),
  };
}

/** Where a cursor came from, for the 400 that names it. */
type CursorIn = 'query parameter' | 'body field';

/**
 * A search's terms in any order. A q with no terms (punctuation only) lists nothing: its scope is
 * '\0', which no list of terms gives (terms are never empty), so it is not the list without q.
 */
const termsScope = (terms: readonly string[]): string => (terms.length ? [...terms].sort().join('\0') : '\0');

/**
 * The lists cursors are bound to: a cursor pages only the list that gave it, named by the filter its
 * query gives (a search by its terms, in any order: `AI` and `ai`, or `a b` and `b a`, page one list).
 */
export const cursorScope = {
  users: (q: string | null) => `users\0${q === null ? '' : termsScope(userQueryTerms(q, MAX_WA_ID_DIGITS))}`,
  userMessages: (userId: string) => `messages\0${userId}`,
  waiting: () => 'waiting',
  search: (q: string) => `search\0${[...queryTerms(q)].sort().join('\0')}`,
} as const;

export async function listUsers(
  ctx: ManageContext,
  query: { limit: number; cursor?: string | undefined; q?: string | undefined },
  cursorIn: CursorIn = 'query parameter',
): Promise<{ items: UserJson[]; nextCursor: string | null }> {
  const scope = cursorScope.users(query.q ?? null);
  const page = await ctx.data.manage.listUsers({
    limit: query.limit,
    after: ctx.cursors.decode(query.cursor, scope, cursorIn),
    q: query.q ?? null,
  });
  return {
    items: page.items.map((u) => userJson(u, ctx)),
    nextCursor: ctx.cursors.encode(page.next, scope),
  };
}

export async function getUser(ctx: ManageContext, id: string): Promise<UserJson> {
  const user = await ctx.data.users.getLiveUser(id);
  if (!user) throw notFound();
  return userJson(user, ctx);
}

export async function listUserMessages(
  { data, cursors }: ManageContext,
  id: string,
  query: { limit: number; cursor?: string | undefined },
): Promise<{ items: MessageJson[]; nextCursor: string | null }> {
  const scope = cursorScope.userMessages(id);
  const after = cursors.decode(query.cursor, scope);
  if (!(await data.users.getLiveUser(id))) throw notFound();
  const page = await data.manage.listMessages({ userId: id, limit: query.limit, after });
  return { items: page.items.map(messageJson), nextCursor: cursors.encode(page.next, scope) };
}

/** The most recently active users with their last message. */
export async function latestChats(
  ctx: ManageContext,
  query: { limit: number },
): Promise<{ items: { user: UserJson; lastMessage: MessageJson }[]; nextCursor: null }> {
  const chats = await ctx.data.manage.latestChats(query.limit);
  return {
    items: chats.map((c) => ({ user: userJson(c.user, ctx), lastMessage: messageJson(c.lastMessage) })),
    nextCursor: null,
  };
}

/** Latest chats; with `state=waiting` only the conversations handed to operators, longest-waiting first. */
export async function listChats(
  ctx: ManageContext,
  query: { limit: number; state?: 'waiting' | undefined; cursor?: string | undefined },
): Promise<{ items: { user: UserJson; lastMessage: MessageJson | null }[]; nextCursor: string | null }> {
  if (query.state !== 'waiting') return latestChats(ctx, query);
  const page = await ctx.data.handoff.waiting({
    limit: query.limit,
    after: ctx.cursors.decode(query.cursor, cursorScope.waiting()),
    now: ctx.now,
    hours: ctx.handoffHours,
  });
  return {
    items: page.items.map((c) => ({
      user: userJson(c.user, ctx),
      lastMessage: c.lastMessage ? messageJson(c.lastMessage) : null,
    })),
    nextCursor: ctx.cursors.encode(page.next, cursorScope.waiting()),
  };
}

export async function searchMessages(
  { data, cursors }: ManageContext,
  query: { q: string; limit: number; cursor?: string | undefined },
  cursorIn: CursorIn = 'query parameter',
): Promise<{ items: MessageJson[]; nextCursor: string | null }> {
  const scope = cursorScope.search(query.q);
  const page = await data.manage.searchMessages({
    q: query.q,
    limit: query.limit,
    after: cursors.decode(query.cursor, scope, cursorIn),
  });
  return { items: page.items.map(messageJson), nextCursor: cursors.encode(page.next, scope) };
}

export async function exportUser(ctx: ManageContext, caller: Caller, id: string): Promise<ExportJson> {
  const { data, now } = ctx;
  const found = await data.personal.exportUser(id);
  if (!found) throw notFound();
  await data.personal.audit({ ...who(caller), action: 'export', userId: id, at: now });
  return {
    user: userJson(found.user, ctx),
    previousWaIds: found.previousWaIds,
    previousBsuids: found.previousBsuids,
    messages: found.messages.map((m) => ({ ...messageJson(m), raw: m.raw })),
    events: found.events.map(eventJson),
    truncated: found.truncated,
  };
}

export async function eraseUser({ data, now }: ManageContext, caller: Caller, id: string): Promise<void> {
  // Recorded first: an erase must never happen without its audit entry.
  if (!(await data.users.getUser(id))) throw notFound();
  await data.personal.audit({ ...who(caller), action: 'erase', userId: id, at: now });
  if (!(await data.personal.eraseUser(id, now))) throw notFound();
}

/**
 * An audited change to a user no erase is taking: the audit entry is written first (no change is
 * ever unaudited), and withdrawn with a 404 when `change` finds the user erased meanwhile (null).
 */
async function auditedChange<T>(
  ctx: ManageContext,
  caller: Caller,
  id: string,
  action: string,
  change: () => Promise<T | null>,
): Promise<T> {
  if (!(await ctx.data.users.getLiveUser(id))) throw notFound();
  const auditId = await ctx.data.personal.audit({ ...who(caller), action, userId: id, at: ctx.now });
  const done = await change();
  if (done === null) {
    await ctx.data.personal.withdrawAudit(auditId);
    throw notFound();
  }
  return done;
}

/** An operator takes the conversation: the bot stays silent for this user (audited). */
export async function takeHandoff(ctx: ManageContext, caller: Caller, id: string): Promise<UserJson> {
  const taken = await auditedChange(ctx, caller, id, 'handoff', () =>
    ctx.data.handoff.take(id, caller.name, ctx.now, ctx.handoffHours),
  );
  return userJson(taken.user, ctx);
}

/** An operator hands the conversation back to the bot (audited). */
export async function handBack(ctx: ManageContext, caller: Caller, id: string): Promise<UserJson> {
  const user = await auditedChange(ctx, caller, id, 'handback', () => ctx.data.handoff.handBack(id));
  return userJson(user, ctx);
}

const describeTemplate = (t: NonNullable<SendBody['template']>): string =>
  `[template] ${t.name} (${t.language})${t.parameters.length ? `: ${t.parameters.join(' · ')}` : ''}`;

/** What an operator message stores as its text. */
const textOf = (body: SendBody): string =>
  body.template ? describeTemplate(body.template) : (body.text ?? '');

/**
 * The `4xx` answer to a send that certainly did not go out, or null: WhatsApp's limits refused it
 * before any request, or Graph refused it for the 24-hour window (131047).
 */
function sendRefusal(error: unknown, body: SendBody): AppError | null {
  if (error instanceof OutboundLimitError) return error;
  if (!(error instanceof GraphError) || error.graphCode !== GRAPH_REENGAGEMENT) return null;
  return new AppError(
    ErrorCode.OUTSIDE_WINDOW,
    body.template
      ? 'WhatsApp refused to deliver the template until the user writes again (re-engagement required); nothing was sent'
      : 'WhatsApp refused free text outside the 24-hour window; nothing was sent',
    { cause: error },
  );
}

const graphFailure = (error: GraphError): MessageError => ({
  code: error.graphCode ?? error.status,
  title: error.title || error.message,
});

/**
 * Whether WhatsApp's 24-hour window is open now for the business number of `last`, the user's
 * latest inbound message on Meta's clock, as the reply worker counts it (../whatsapp/outbound.ts
 * `windowFrom`: the later of Meta's time and when the message reached us). Open by `last` answers
 * without a round trip; else the user's latest message to that number as it reached us decides (one
 * dated long ago by the sender's clock may have reached us now). Graph's 131047 judges the rest.
 */
async function windowOpenTo(
  data: ManageContext['data'],
  id: string,
  last: { createdAt: Date; receivedAt: Date | null; phoneNumberId: string | null },
  now: Date,
): Promise<boolean> {
  if (windowOpen(last, now)) return true;
  const arrived = await data.handoff.lastArrived(id, last.phoneNumberId);
  return arrived !== null && windowOpen(arrived, now);
}

/**
 * An operator's message to a user through the Graph API: free text within 24 hours of the user's
 * last message, else only a template, from the business number the user last wrote to (else the
 * latest that names one: a welcome lets a template reach a user who never wrote). Sending takes the
 * conversation (the bot must not talk over an operator) and restarts the handoff's clock. Stored
 * with role `operator` and the token's name, whether it went out or failed (502); audited without
 * its text. A `4xx` leaves no trace: the checks come before anything is written, and a window
 * refusal from Graph (409) undoes the take and the audit entry, which are written first so that no
 * send is ever unaudited or talked over.
 */
export async function sendMessage(
  ctx: ManageContext,
  caller: Caller,
  id: string,
  body: SendBody,
  idempotencyKey?: string,
): Promise<MessageJson> {
  const { data, now, graph } = ctx;
  const user = await data.users.getLiveUser(id);
  if (!user) throw notFound();
  // The request as a whole, for its Idempotency-Key: a stored text alone may read the same for
  // two bodies (free text written like a template's, parameters joined).
  const request = JSON.stringify(
    body.template
      ? ['template', body.template.name, body.template.language, body.template.parameters]
      : ['text', body.text],
  );
  if (idempotencyKey !== undefined) {
    const earlier = await data.personal.auditOf(id, idempotencyKey, request);
    if (earlier) return replaySend(ctx, caller, id, body, earlier);
  }
  if (user.optedOut) throw new AppError(ErrorCode.OPTED_OUT, 'the user opted out (stop); nothing was sent');
  // The previous owner of a number given to someone else (a recycled number) keeps their
  // conversation without it: nothing addresses them until they write from a number again.
  if (!user.waId && !user.bsuid) {
    throw new AppError(
      ErrorCode.UNREACHABLE,
      'the user has no number or business-scoped id (their number now belongs to someone else): ' +
        'nothing can reach them until they write again; nothing was sent',
    );
  }
  const last = await data.handoff.lastInbound(id);
  if (body.text !== undefined && !last) {
    throw new AppError(ErrorCode.OUTSIDE_WINDOW, 'the user has never written: only a template can be sent');
  }
  if (body.text !== undefined && last && !(await windowOpenTo(data, id, last, now))) {
    throw new AppError(
      ErrorCode.OUTSIDE_WINDOW,
      "the user's last message is more than 24 hours old: only a template can be sent",
    );
  }
  const phoneNumberId = last?.phoneNumberId ?? (await data.handoff.lastBusinessNumber(id));
  if (!phoneNumberId) {
    throw new AppError(
      ErrorCode.OUTSIDE_WINDOW,
      'no business number is known for this user (only migrated messages): they must write again first',
    );
  }
  const entry = { ...who(caller), action: 'send', userId: id, at: now };
  let auditId: string;
  if (idempotencyKey === undefined) auditId = await data.personal.audit(entry);
  else {
    // Two requests with one key at once: one writes the entry and sends, the other replays it.
    const once = await data.personal.auditOnce(entry, idempotencyKey, request);
    if (!once.first) return replaySend(ctx, caller, id, body, once.entry);
    auditId = once.id;
  }
  const taken = await data.handoff.take(id, caller.name, now, ctx.handoffHours);
  if (!taken) {
    // Erased meanwhile (or being erased): nothing goes out to them.
    await data.personal.withdrawAudit(auditId);
    throw notFound();
  }
  const recipient = { waId: user.waId, bsuid: user.bsuid };
  const type = body.template ? 'template' : 'text';
  const text = textOf(body);
  let sent: SendResult | null = null;
  let failure: GraphError | null = null;
  try {
    sent = body.template
      ? await graph.sendTemplate(phoneNumberId, recipient, body.template)
      : await graph.sendText(phoneNumberId, recipient, text);
  } catch (error) {
    const refusal = sendRefusal(error, body);
    if (!refusal) {
      if (!(error instanceof GraphError)) throw error;
      failure = error;
    } else {
      // Nothing went out: nothing is stored or counted, the conversation goes back to whoever had
      // it, and the audit entry goes last (an interrupted undo leaves it, never an unaudited change).
      if (taken.user.handoff) await data.handoff.restore(id, taken.user.handoff, taken.previous);
      await data.personal.withdrawAudit(auditId);
      throw refusal;
    }
  }
  const messageId = sent?.waMessageId ?? `op:${randomUUID()}`;
  const recorded = await data.messages.storeOutbound({
    id: messageId,
    waMessageId: sent?.waMessageId ?? null,
    userId: id,
    type,
    text,
    status: failure ? 'failed' : sent?.waMessageId ? 'sent' : 'not_sent',
    createdAt: now,
    role: 'operator',
    phoneNumberId,
    relatedId: null,
    error: failure ? graphFailure(failure) : null,
    ai: null,
    by: caller.name,
  });
  // Erased by another operator meanwhile: the message went with the user.
  if (recorded.outcome === 'erased') throw notFound();
  if (failure) throw sendFailed(graphFailure(failure), failure);
  const stored = await data.messages.getMessage(recorded.id);
  if (!stored) {
    // An erase that began once it was stored took it with the user: 404, as for one erased first.
    if (!(await data.users.getLiveUser(id))) throw notFound();
    throw new AppError(ErrorCode.INTERNAL, 'the sent message was not stored');
  }
  return messageJson(stored);
}

/** The most of Graph's own words an operator is told (its code always). */
const GRAPH_WORDS_MAX = 120;

/**
 * What Graph answered, as an operator is told it: its code and its short title (or what went
 * wrong when it gave no answer), on one line, bounded, without anything that looks like a phone
 * number or a token (Graph's words may echo what was sent).
 */
function graphSaid(failure: MessageError): string {
  const words = scrub(failure.title)
    .replace(/[A-Za-z0-9_-]{32,}/g, '***')
    .replace(/\s+/g, ' ')
    .trim();
  const bounded = words.length > GRAPH_WORDS_MAX ? `${words.slice(0, GRAPH_WORDS_MAX - 1)}…` : words;
  if (failure.code === null) return bounded ? ` Graph: ${bounded}.` : '';
  return ` Graph: code ${failure.code}${bounded ? `, "${bounded}"` : ''}.`;
}

/**
 * Said to the operator: a send Graph did not answer may still reach the user. Meta's pair rate
 * limit (131056) is said as such: nothing went out, and the same send goes through a few seconds
 * later (an operator's request does not wait for it, as the reply worker does); so is a refused
 * access token. Each ends with Graph's code and title, as the failed message keeps them (`failure`:
 * a send repeated with its Idempotency-Key is answered in the same words, read from it).
 */
const sendFailed = (failure: MessageError | null, cause?: GraphError): AppError =>
  new AppError(
    ErrorCode.UPSTREAM_FAILED,
    (failure?.code === PAIR_RATE_LIMIT
      ? "WhatsApp's pair rate limit: too many messages to this user in a short time. Nothing went out " +
        '(stored as failed): try again in a few seconds, as a new send (a new Idempotency-Key: ' +
        'the same key answers this again).'
      : (cause?.tokenRefused ?? (failure?.code === ACCESS_TOKEN_REFUSED || failure?.code === 401))
        ? "WhatsApp refused the app's access token (WHATSAPP_ACCESS_TOKEN expired, revoked or wrong: a " +
          'configuration problem; every send fails until it is replaced). Nothing went out: it is stored as failed.'
        : 'WhatsApp did not accept the message, or did not answer (it may then still arrive): it is stored as failed.') +
      (failure ? graphSaid(failure) : ''),
    { cause, exposed: true },
  );

/**
 * A send repeated with its Idempotency-Key (a client's retry after a timeout, say): nothing goes out
 * again. The first request's answer is given again, read from the message it stored (the same
 * request time, token and text); a key given with another body or by another token is refused
 * (422), and one whose first request has stored no message yet (still under way, or interrupted
 * between Graph and the database) answers 409: whether that one went out is not known here.
 */
async function replaySend(
  ctx: ManageContext,
  caller: Caller,
  id: string,
  body: SendBody,
  earlier: KeyedAudit,
): Promise<MessageJson> {
  const reused = () =>
    new AppError(
      ErrorCode.IDEMPOTENCY_KEY_REUSED,
      'this Idempotency-Key was used for another request (another message, or another token); nothing was sent',
    );
  // By the token's id: names may repeat. An entry from before ids were kept has only the name.
  const sameToken =
    earlier.tokenId === undefined ? earlier.tokenName === caller.name : earlier.tokenId === caller.tokenId;
  if (!sameToken || earlier.sameRequest === false) throw reused();
  const sent = await ctx.data.messages.operatorMessagesAt(id, earlier.at, earlier.tokenName);
  if (!sent.length) {
    throw new AppError(
      ErrorCode.IN_PROGRESS,
      `a send with this Idempotency-Key began at ${earlier.at.toISOString()} and has no stored outcome ` +
        '(still under way, or interrupted): it is not sent again; look at the conversation, or send with a new key',
    );
  }
  const same = sent.find((m) => m.text === textOf(body) && m.type === (body.template ? 'template' : 'text'));
  if (!same) throw reused();
  // Stored failed by the send itself (Graph refused it or gave no answer: no wamid), as the first
  // answered, in its words (the pair rate limit's, read from the Graph code stored with it). One
  // Graph accepted (201) that a delivery status reported failed since is answered as the first
  // was: 201, with the message as it is now.
  if (same.status === 'failed' && same.waMessageId === null) throw sendFailed(same.error);
  return messageJson(same);
}
