// Ingests one authentic webhook notification: every entry, change, message, status and error.
// Users are upserted, inbound messages stored once (keyed by their WhatsApp id), statuses applied,
// and anything not understood archived in `events`. Returns the reply jobs to queue: one for every
// message still waiting for its answer, also on a redelivery (so a job lost after the store heals).
import { createHash } from 'node:crypto';
import type { Services } from '../deps';
import type { Identity, MessageError, MessageRole, ReplyState } from '../data';
import { pseudonym, type Logger } from '../log';
import { normalize, normalizeUnreadable, type NormalizedMessage } from '../whatsapp/normalize';
import {
  ChangeSchema,
  ContactSchema,
  EntrySchema,
  InboundMessageSchema,
  MessageBaseSchema,
  MessagesValueSchema,
  NotificationSchema,
  StatusSchema,
  type GraphErrorPayload,
  type MessagesValue,
} from '../whatsapp/schemas';
import { parseCommand } from './commands';
import type { ReplyJob } from './jobs';
import type { z } from 'zod';

export interface IngestSummary {
  messages: number;
  duplicates: number;
  statuses: number;
  archived: number;
}

export interface IngestResult {
  readonly jobs: ReplyJob[];
  readonly summary: IngestSummary;
}

type Contact = z.infer<typeof ContactSchema>;

const digits = (value: string | undefined | null): string | null => {
  const d = value?.replace(/\D/g, '') ?? '';
  return d.length ? d : null;
};

const keyOf = (kind: string, payload: unknown): string =>
  `${kind}:${createHash('sha256')
    .update(JSON.stringify(payload) ?? '')
    .digest('hex')
    .slice(0, 32)}`;

export const toMessageError = (e: GraphErrorPayload | undefined): MessageError | null =>
  e
    ? {
        code: e.code,
        title: e.title ?? e.message ?? 'error',
        ...(e.error_data?.details ? { detail: e.error_data.details } : {}),
      }
    : null;

export async function ingestNotification(
  services: Services,
  payload: unknown,
  log: Logger,
): Promise<IngestResult> {
  const { data } = services;
  const summary: IngestSummary = { messages: 0, duplicates: 0, statuses: 0, archived: 0 };
  const jobs = new Map<string, ReplyJob>();

  const archive = async (kind: string, reason: string, item: unknown, userId: string | null = null) => {
    await data.events.archive({ kind, reason, payload: item, userId, key: keyOf(kind, item) });
    summary.archived++;
    log.warn('webhook item archived', { kind, reason });
  };

  const notification = NotificationSchema.safeParse(payload);
  if (!notification.success || notification.data.object !== 'whatsapp_business_account') {
    await archive(
      'unhandled_notification',
      notification.success ? 'unknown object' : 'malformed envelope',
      payload,
    );
    return { jobs: [], summary };
  }

  for (const rawEntry of notification.data.entry) {
    const entry = EntrySchema.safeParse(rawEntry);
    if (!entry.success) {
      await archive('unhandled_entry', 'malformed entry', rawEntry);
      continue;
    }
    for (const rawChange of entry.data.changes) {
      const change = ChangeSchema.safeParse(rawChange);
      if (!change.success || change.data.field !== 'messages') {
        await archive(
          'unhandled_change',
          change.success ? `field ${change.data.field}` : 'malformed change',
          rawChange,
        );
        continue;
      }
      const value = MessagesValueSchema.safeParse(change.data.value);
      if (!value.success) {
        await archive('unhandled_change', 'malformed messages value', rawChange);
        continue;
      }
      await ingestValue(value.data);
    }
  }

  async function ingestValue(value: MessagesValue): Promise<void> {
    const phoneNumberId = value.metadata.phone_number_id;
    const contacts = (value.contacts ?? [])
      .map((c) => ContactSchema.safeParse(c))
      .filter((c) => c.success)
      .map((c) => c.data);

    for (const raw of value.messages ?? []) await ingestMessage(raw, phoneNumberId, contacts);

    for (const raw of value.statuses ?? []) {
      const status = StatusSchema.safeParse(raw);
      if (!status.success) {
        await archive('unhandled_status', 'malformed status', raw);
        continue;
      }
      const s = status.data;
      if (s.status !== 'sent' && s.status !== 'delivered' && s.status !== 'read' && s.status !== 'failed') {
        await archive('status', `status ${s.status}`, raw);
        continue;
      }
      const result = await data.messages.applyStatus({
        waMessageId: s.id,
        status: s.status,
        at: new Date(s.timestamp * 1000),
        recipient: digits(s.recipient_id),
        error: toMessageError(s.errors?.[0]),
      });
      summary.statuses++;
      if (s.status === 'failed')
        log.warn('outbound message failed', { status: s.status, code: s.errors?.[0]?.code, result });
    }

    if (value.errors?.length)
      await archive('errors', 'webhook errors', { phoneNumberId, errors: value.errors });
  }

  async function ingestMessage(raw: unknown, phoneNumberId: string, contacts: Contact[]): Promise<void> {
    const parsed = InboundMessageSchema.safeParse(raw);
    const base = parsed.success ? parsed.data : MessageBaseSchema.safeParse(raw).data;
    if (!base) {
      await archive('unhandled_message', 'message without id or timestamp', raw);
      return;
    }
    const normalized: NormalizedMessage = parsed.success
      ? normalize(parsed.data)
      : normalizeUnreadable(base.type);

    const waId = digits(base.from);
    const bsuid = base.from_user_id ?? null;
    const contact =
      contacts.find((c) => (waId && digits(c.wa_id) === waId) || (bsuid && c.user_id === bsuid)) ??
      (contacts.length === 1 ? contacts[0] : undefined);
    const identity: Identity = {
      waId: waId ?? digits(contact?.wa_id),
      bsuid: bsuid ?? contact?.user_id ?? null,
      name: contact?.profile?.name?.trim() || null,
    };
    if (!identity.waId && !identity.bsuid) {
      await archive('unhandled_message', 'message without sender', raw);
      return;
    }
    const at = new Date(base.timestamp * 1000);
    const { user } = await data.users.upsertFromContact(identity, at);

    if (normalized.treatment === 'system') {
      if (parsed.success && parsed.data.type === 'system') {
        const newWaId = digits(parsed.data.system.wa_id ?? parsed.data.system.new_wa_id);
        if (parsed.data.system.type === 'user_changed_number' && newWaId)
          await data.users.changeNumber(user.id, newWaId);
      }
      await archive('system', 'system message applied to the user', raw, user.id);
      return;
    }
    if (normalized.treatment === 'welcome') {
      if (!user.welcomeSentAt)
        jobs.set(`welcome:${user.id}`, {
          kind: 'welcome',
          userId: user.id,
          phoneNumberId,
          requestId: base.id,
        });
      return;
    }

    const role: MessageRole =
      normalized.treatment === 'answer'
        ? normalized.type === 'text' && parseCommand(normalized.text)
          ? 'command'
          : 'conversation'
        : 'notice';
    const replyState: ReplyState = normalized.treatment === 'reaction' ? 'none' : 'pending';
    const result = await data.messages.recordInbound({
      id: base.id,
      userId: user.id,
      type: normalized.type,
      text: normalized.text,
      createdAt: at,
      receivedAt: services.now(),
      phoneNumberId,
      role,
      replyState,
      relatedId: normalized.relatedId,
      raw,
    });
    if (result === 'inserted') summary.messages++;
    else summary.duplicates++;
    log.info('inbound message', { id: base.id, type: normalized.type, user: pseudonym(user.id), result });

    if (replyState !== 'pending') return;
    if (result === 'duplicate') {
      const stored = await data.messages.getMessage(base.id);
      if (!stored || (stored.replyState !== 'pending' && stored.replyState !== 'sending')) return;
    }
    jobs.set(`message:${base.id}`, { kind: 'message', userId: user.id, messageId: base.id });
  }

  return { jobs: [...jobs.values()], summary };
}
