// Management operations: validate the query, run one data-module query, shape the JSON answer.
import type { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import type { ArchivedEvent, DataStore, Message, User } from '../data';
import { decodeCursor, encodeCursor } from './cursor';
import type { Caller } from './auth';
import type { ExportJson, MessageJson, StatsJson, UserJson } from './schemas';

export const userJson = (u: User): UserJson => ({
  id: u.id,
  waId: u.waId,
  bsuid: u.bsuid,
  name: u.name,
  createdAt: u.createdAt.toISOString(),
  lastMessageAt: u.lastMessageAt ? u.lastMessageAt.toISOString() : null,
  lastMessagePreview: u.lastMessagePreview,
  messageCount: u.messageCount,
  optedOut: u.optedOut,
});

export const messageJson = (m: Message): MessageJson => ({
  id: m.id,
  userId: m.userId,
  waMessageId: m.waMessageId,
  direction: m.direction,
  type: m.type,
  text: m.text,
  status: m.status,
  createdAt: m.createdAt.toISOString(),
});

const eventJson = (e: ArchivedEvent) => ({
  id: e.id,
  kind: e.kind,
  reason: e.reason,
  createdAt: e.createdAt.toISOString(),
  payload: e.payload,
});

/** Validates query parameters; a bad value is a 400 whose message names the parameter. */
export function parseQuery<S extends z.ZodType>(schema: S, query: URLSearchParams): z.infer<S> {
  const raw: Record<string, string> = {};
  for (const [key, value] of query) if (!(key in raw)) raw[key] = value;
  const result = schema.safeParse(raw);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const name = String(issue?.path[0] ?? 'query');
  throw new AppError(
    ErrorCode.INVALID_INPUT,
    `invalid query parameter "${name}": ${issue?.message ?? 'invalid'}`,
  );
}

const notFound = (): AppError => new AppError(ErrorCode.NOT_FOUND, 'user not found');

export interface ManageContext {
  readonly data: DataStore;
  readonly now: Date;
}

export async function getStats({ data, now }: ManageContext): Promise<StatsJson> {
  const [users, totals, daily] = await Promise.all([
    data.manage.countUsers(now),
    data.stats.totals(),
    data.stats.daily(now),
  ]);
  return {
    users,
    messages: {
      total: totals.inbound + totals.outbound,
      inbound: totals.inbound,
      outbound: totals.outbound,
      failed: totals.failed,
    },
    ai: { requests: totals.aiRequests, tokens: totals.aiTokens },
    daily: daily.map((d) => ({
      date: d.date,
      inbound: d.inbound,
      outbound: d.outbound,
      newUsers: d.newUsers,
    })),
  };
}

export async function listUsers(
  { data }: ManageContext,
  query: { limit: number; cursor?: string | undefined; q?: string | undefined },
): Promise<{ items: UserJson[]; nextCursor: string | null }> {
  const page = await data.manage.listUsers({
    limit: query.limit,
    after: decodeCursor(query.cursor),
    q: query.q ?? null,
  });
  return { items: page.items.map(userJson), nextCursor: encodeCursor(page.next) };
}

export async function getUser({ data }: ManageContext, id: string): Promise<UserJson> {
  const user = await data.manage.getUser(id);
  if (!user) throw notFound();
  return userJson(user);
}

export async function listUserMessages(
  { data }: ManageContext,
  id: string,
  query: { limit: number; cursor?: string | undefined },
): Promise<{ items: MessageJson[]; nextCursor: string | null }> {
  const after = decodeCursor(query.cursor);
  if (!(await data.manage.getUser(id))) throw notFound();
  const page = await data.manage.listMessages({ userId: id, limit: query.limit, after });
  return { items: page.items.map(messageJson), nextCursor: encodeCursor(page.next) };
}

export async function latestChats(
  { data }: ManageContext,
  query: { limit: number },
): Promise<{ items: { user: UserJson; lastMessage: MessageJson }[] }> {
  const chats = await data.manage.latestChats(query.limit);
  return { items: chats.map((c) => ({ user: userJson(c.user), lastMessage: messageJson(c.lastMessage) })) };
}

export async function searchMessages(
  { data }: ManageContext,
  query: { q: string; limit: number; cursor?: string | undefined },
): Promise<{ items: MessageJson[]; nextCursor: string | null }> {
  const page = await data.manage.searchMessages({
    q: query.q,
    limit: query.limit,
    after: decodeCursor(query.cursor),
  });
  return { items: page.items.map(messageJson), nextCursor: encodeCursor(page.next) };
}

export async function exportUser(
  { data, now }: ManageContext,
  caller: Caller,
  id: string,
): Promise<ExportJson> {
  const found = await data.personal.exportUser(id);
  if (!found) throw notFound();
  await data.personal.audit({ tokenName: caller.name, action: 'export', userId: id, at: now });
  return {
    user: userJson(found.user),
    messages: found.messages.map(messageJson),
    events: found.events.map(eventJson),
  };
}

export async function eraseUser({ data, now }: ManageContext, caller: Caller, id: string): Promise<void> {
  // Recorded first: an erase must never happen without its audit entry.
  if (!(await data.manage.getUser(id))) throw notFound();
  await data.personal.audit({ tokenName: caller.name, action: 'erase', userId: id, at: now });
  if (!(await data.personal.eraseUser(id))) throw notFound();
}
