// Ingests one authentic webhook notification (the events of shared/whatsapp/notification): users
// found or created, inbound messages stored once (keyed by their WhatsApp id), statuses applied,
// anything not understood archived. Returns the reply jobs to queue: one for every message still
// waiting for its answer, also on a redelivery (so a job lost after the store heals).
//
// Each event stands on its own: one that the database refuses (anything but the database being
// unreachable or throttling) is archived and the others are still stored and answered.
import { AppError, ErrorCode } from '../errors';
import { boundedJson, ErasureInProgress, SentBeforeErase, type MessageRole, type ReplyState } from '../data';
import { pseudonym, type Logger } from '../log';
import {
  parseNotification,
  type ArchiveEvent,
  type MessageEvent,
  type StatusEvent,
} from '../whatsapp/notification';
import { BSUID, isNumberChange, SystemMessageSchema, WA_ID } from '../whatsapp/schemas';
import { parseCommand } from './commands';
import type { ReplyJob } from './jobs';
import type { IngestPorts } from './ports';

export interface IngestSummary {
  messages: number;
  duplicates: number;
  /**
   * Messages sent before their sender was erased, and archivable items from before the erase of
   * the person they name, delivered after: dropped (an erase is for good).
   */
  sentBeforeErase: number;
  statuses: number;
  archived: number;
}

export interface IngestResult {
  readonly jobs: ReplyJob[];
  readonly summary: IngestSummary;
}

/** What a command's text asks of the opt-out: `stop` true, `start` false, anything else null. */
const optOutOf = (text: string): boolean | null => {
  const command = parseCommand(text);
  return command === 'stop' ? true : command === 'start' ? false : null;
};

/** Errors that mean "try the whole notification again later", not "this item is odd". */
const isTransient = (error: unknown): boolean =>
  (error instanceof AppError &&
    (error.code === ErrorCode.UNAVAILABLE || error.code === ErrorCode.THROTTLED)) ||
  // The sender's erase is under way: once it is over, the same person writing is a new user.
  error instanceof ErasureInProgress;

export async function ingestNotification(
  ports: IngestPorts,
  payload: unknown,
  log: Logger,
): Promise<IngestResult> {
  const { data } = ports;
  const summary: IngestSummary = { messages: 0, duplicates: 0, sentBeforeErase: 0, statuses: 0, archived: 0 };
  const jobs = new Map<string, ReplyJob>();
  let lastReceivedAt = 0;

  const archive = async (
    kind: string,
    reason: string,
    payloadOf: unknown,
    identifier: string | null,
    userId: string | null = null,
    sentAt: Date | null = null,
  ) => {
    const holder =
      !userId && identifier ? (await data.users.holdersOf([identifier])).get(identifier) : undefined;
    const item = { kind, reason, payload: payloadOf, userId: userId ?? holder ?? null, identifier, sentAt };
    if (await data.events.archiveUnlessErased([item], ports.now())) {
      summary.sentBeforeErase++;
      log.info('archivable item from before its person was erased: dropped', { kind });
      return;
    }
    summary.archived++;
    log.warn('webhook item archived', { kind, reason });
  };

  const events = parseNotification(payload, ports.now());
  // What the bot cannot use goes in bulk (a history sync holds thousands of threads); when the
  // database refuses the bulk write, each item is tried on its own below.
  const archivedInBulk = await archiveInBulk(events.filter((e): e is ArchiveEvent => e.kind === 'archive'));
  for (const event of events) {
    try {
      if (event.kind === 'archive' && archivedInBulk) continue;
      if (event.kind === 'archive')
        await archive(event.archiveKind, event.reason, event.payload, event.identifier, null, event.at);
      else if (event.kind === 'message') await ingestMessage(event);
    } catch (error) {
      if (isTransient(error)) throw error;
      if (error instanceof SentBeforeErase) {
        summary.sentBeforeErase++;
        log.info('message from before its sender was erased: dropped', { kind: event.kind });
        continue;
      }
      const name = error instanceof Error ? error.name : 'unknown';
      log.error('webhook item could not be stored', { kind: event.kind, error: name });
      const identifier = event.kind === 'message' ? (event.sender.waId ?? event.sender.bsuid) : null;
      await archive(
        'unstorable',
        `${event.kind}: ${name}`,
        event.kind === 'message' ? event.raw : event,
        identifier,
        null,
        event.at,
      );
    }
  }

  // Statuses go in one write; when the database refuses it, each is tried on its own.
  const statuses = events.filter((e): e is StatusEvent => e.kind === 'status');
  try {
    await applyStatuses(statuses);
  } catch (error) {
    if (isTransient(error)) throw error;
    for (const s of statuses) {
      try {
        await applyStatuses([s]);
      } catch (single) {
        if (isTransient(single)) throw single;
        const name = single instanceof Error ? single.name : 'unknown';
        await archive('unstorable', `status: ${name}`, s, s.recipient, null, s.at);
      }
    }
  }

  async function archiveInBulk(list: ArchiveEvent[]): Promise<boolean> {
    if (list.length === 0) return true;
    let dropped: number;
    try {
      // Filed with the person holding the number or id now (not its previous or next owner).
      const holders = await data.users.holdersOf(list.flatMap((e) => (e.identifier ? [e.identifier] : [])));
      // What a notification from before an erase holds about the person erased is not filed again.
      dropped = await data.events.archiveUnlessErased(
        list.map((e) => ({
          kind: e.archiveKind,
          reason: e.reason,
          payload: e.payload,
          userId: (e.identifier && holders.get(e.identifier)) || null,
          identifier: e.identifier,
          sentAt: e.at,
        })),
        ports.now(),
      );
    } catch (error) {
      if (isTransient(error)) throw error;
      log.warn('archived items refused in bulk, trying each', {
        items: list.length,
        error: error instanceof Error ? error.name : 'unknown',
      });
      return false;
    }
    summary.archived += list.length - dropped;
    if (dropped) {
      summary.sentBeforeErase += dropped;
      log.info('archivable items from before their person was erased: dropped', { items: dropped });
    }
    const counts = new Map<string, { kind: string; reason: string; items: number }>();
    for (const e of list) {
      const key = `${e.archiveKind}\n${e.reason}`;
      const entry = counts.get(key) ?? { kind: e.archiveKind, reason: e.reason, items: 0 };
      entry.items++;
      counts.set(key, entry);
    }
    for (const entry of counts.values()) log.warn('webhook item archived', entry);
    return true;
  }

  async function applyStatuses(list: StatusEvent[]): Promise<void> {
    if (list.length === 0) return;
    const { placeholders } = await data.messages.applyStatuses(
      list.map((s) => ({
        waMessageId: s.waMessageId,
        status: s.status,
        at: s.at,
        recipient: s.recipient,
        error: s.error,
      })),
    );
    // A status of an answer whose person was erased since: the placeholder would keep their number.
    const erased = await data.events.erasedAmong(placeholders, ports.now());
    if (erased.length) {
      await data.messages.dropPlaceholdersOf(erased);
      log.info('statuses of messages an erase removed: dropped', { statuses: erased.length });
    }
    summary.statuses += list.length;
    for (const s of list)
      if (s.status === 'failed') log.warn('outbound message failed', { code: s.error?.code });
  }

  async function ingestSystem(m: MessageEvent): Promise<void> {
    const system = m.message?.type === 'system' ? m.message.system : null;
    // `user_changed_number` carries the new number (`wa_id`, `new_wa_id` before v12) and, since
    // business-scoped ids, the new id (`user_id`: a new number gets a new one);
    // `user_changed_user_id` only the new id.
    const changed = isNumberChange(system?.type) || system?.type === 'user_changed_user_id';
    const wanted = isNumberChange(system?.type) ? (system?.wa_id ?? system?.new_wa_id) : undefined;
    const newWaId = wanted && WA_ID.test(wanted) ? wanted : null;
    const newBsuid = changed && system?.user_id && BSUID.test(system.user_id) ? system.user_id : null;
    const next = { waId: newWaId, bsuid: newBsuid };
    // Applied before (its archived item is kept once applied): a redelivery, which must not undo
    // a later change (back to the old number: A→B→A, then A→B again).
    if ((newWaId || newBsuid) && (await data.events.archivedBefore('system', m.raw))) {
      log.info('user changed identity', { result: 'already applied' });
      return;
    }
    // The sender is the id the person left behind when Meta names it (./notification). Nothing to
    // move when the change was applied before (a redelivery, or a retry after a failure past the
    // move: the old number or id is no one's now, or a new person's), or when only the new number
    // or id ever wrote: that user stays who they are.
    const known = await data.users.findByIdentity(m.sender);
    const done =
      newWaId || newBsuid
        ? ((newWaId && m.sender.waId ? await data.users.movedAway(m.sender.waId, newWaId) : null) ??
          (known ? null : await data.users.findByIdentity(next)))
        : null;
    if (done) {
      log.info('user changed identity', { user: pseudonym(done.id), result: 'unchanged' });
      await archive('system', 'system message applied to the user', m.raw, m.sender.waId, done.id);
      return;
    }
    if (!known) {
      // No one to apply it to: a person never seen (erased, from before the data was kept, or
      // whose earlier change to this number is still on its way). A user holding no message would
      // be counted, listed first and called active as a new person: the item is archived under the
      // number or id it moves away from instead, where a change to that number delivered later
      // finds it and follows it (laterChangeFrom). One sent before the person was erased stays
      // dropped.
      await data.users.refuseSentBeforeErase(m.sender, m.sentAt, m.id);
      log.info('user changed identity', { result: 'user never seen' });
      await archive('system', 'system message for a user never seen', m.raw, m.sender.waId ?? m.sender.bsuid);
      return;
    }
    const { user } = await data.users.resolve(m.sender, m.at, undefined, m.sentAt);
    if (newWaId || newBsuid) {
      // Meta may deliver two changes the other way round (A→B, then B→C: B→C first, applied to
      // whoever had B, or to a record made for it): the person is who that later change moved,
      // on their number now, and B is no longer theirs (its next owner must not inherit them).
      const later = newWaId ? await laterChangeFrom(newWaId, m.at, user.id) : null;
      // The number it passed through stays among the person's (what was archived under it).
      const result = await data.users.changeIdentity(
        user.id,
        later ? { ...later, via: newWaId } : next,
        m.at,
        optOutOf,
      );
      log.info('user changed identity', { user: pseudonym(user.id), result });
      // The merged record's messages are this user's now: one still waiting (its job, queued
      // for the record merged away, finds no user and ends) is answered by this job, after a
      // recount of the summary the two records made.
      if (result === 'merged' || result === 'reassigned')
        jobs.set(`message:${m.id}`, { kind: 'message', userId: user.id, messageId: m.id, recount: true });
    }
    // One that changes nothing (`user_preference_changed`, an identity check) is kept all the same.
    const reason = newWaId || newBsuid ? 'system message applied to the user' : 'system message of the user';
    await archive('system', reason, m.raw, m.sender.waId, user.id);
  }

  /**
   * The identity of the user a `user_changed_number` away from `waId`, sent at `at` or later and
   * applied before, moved (its archived item is filed under `waId`), or null.
   */
  async function laterChangeFrom(
    waId: string,
    at: Date,
    userId: string,
  ): Promise<{ waId: string; bsuid: string | null } | null> {
    for (const item of await data.events.archivedUnder('system', waId, 20)) {
      const change = SystemMessageSchema.safeParse(item.payload);
      if (!change.success || !isNumberChange(change.data.system.type)) continue;
      if (change.data.from !== waId || change.data.timestamp * 1000 < at.getTime()) continue;
      const to = change.data.system.wa_id ?? change.data.system.new_wa_id;
      const moved =
        (item.userId ? await data.users.getLiveUser(item.userId) : null) ??
        (to && WA_ID.test(to) ? await data.users.findByIdentity({ waId: to, bsuid: null }) : null);
      if (moved?.waId && moved.id !== userId && moved.waId !== waId)
        return { waId: moved.waId, bsuid: moved.bsuid };
      // A change that moved no one (its sender was not known when it came): the person it was
      // sent by is this user, and their number is the one it gives.
      if (!moved && !item.userId && to && WA_ID.test(to) && to !== waId) {
        const id = change.data.system.user_id;
        return { waId: to, bsuid: id && BSUID.test(id) ? id : null };
      }
    }
    return null;
  }

  async function ingestMessage(m: MessageEvent): Promise<void> {
    if (m.normalized.treatment === 'system') return ingestSystem(m);
    const { user, changes, merged } = await data.users.resolve(m.sender, m.at, m.id, m.sentAt);
    const { normalized } = m;
    if (normalized.treatment === 'welcome') {
      if (!user.welcomeSentAt)
        jobs.set(`welcome:${user.id}`, {
          kind: 'welcome',
          userId: user.id,
          phoneNumberId: m.phoneNumberId,
          requestId: m.id,
        });
      return;
    }

    const role: MessageRole =
      normalized.treatment === 'answer'
        ? // A template's quick-reply button reads as its text: a "Stop" button an operator's
          // template offers opts out as the word does.
          (normalized.type === 'text' || normalized.type === 'button') && parseCommand(normalized.text)
          ? 'command'
          : 'conversation'
        : 'notice';
    // A reaction, an edit or a deletion concerns an earlier message: never answered.
    const replyState: ReplyState =
      normalized.treatment === 'reaction' || normalized.treatment === 'note' ? 'none' : 'pending';
    // Strictly increasing within a notification: Meta lists its messages in the order sent, and
    // the reply worker breaks ties on Meta's whole seconds with this time.
    const now = ports.now();
    const receivedAt = new Date(Math.max(now.getTime(), lastReceivedAt + 1));
    lastReceivedAt = receivedAt.getTime();
    const result = await data.messages.recordInbound({
      id: m.id,
      userId: user.id,
      type: normalized.type,
      text: normalized.text,
      createdAt: m.at,
      receivedAt,
      phoneNumberId: m.phoneNumberId,
      role,
      replyState,
      relatedId: normalized.relatedId,
      rawJson: boundedJson(m.raw).json,
    });
    log.info('inbound message', { id: m.id, type: normalized.type, user: pseudonym(user.id), result });
    if (result === 'inserted') {
      summary.messages++;
      const noted = { id: m.id, text: normalized.text, at: receivedAt, direction: 'inbound' } as const;
      if (!(await data.users.noteMessages(user.id, [noted], changes))) {
        // The user's erase began after they were read. An erase that outlasts the wait, run again,
        // deletes the message itself: the notification is tried again.
        if (!(await data.users.goneAfterErase(user.id))) throw new ErasureInProgress();
        // The erase is over and the message outlived it (stored after the erase read the user's
        // messages). When the person wrote again meanwhile, a new user holds the id, and its reply
        // worker may have answered this message already: it is that user's now, as the retry would
        // make it. Taken back and stored again, it would be answered a second time (the first
        // answer is no longer among the user's latest messages by the time the queue retries).
        const outlived = (await data.messages.getMessage(m.id))?.userId === user.id;
        if (!outlived || !(await data.users.noteMessages(user.id, [noted]))) {
          // No one holds the id yet (or the erase took the message): the retry stores it anew.
          await data.messages.takeBack(user.id, [m.id]);
          throw new ErasureInProgress();
        }
      }
      // A record merged into this user as it was made brought messages its summary may lack
      // (noted for it while it was merged): the job recounts it first.
      if (replyState === 'pending' || merged)
        jobs.set(`message:${m.id}`, {
          kind: 'message',
          userId: user.id,
          messageId: m.id,
          ...(merged ? { recount: true as const } : {}),
        });
    } else {
      // Stored before: its first writer may have died between the message and the summary, and
      // before its reply job was queued. The job recounts the summary under the user's reply lock
      // and answers what still waits (nothing, usually: a redelivery is never answered twice).
      summary.duplicates++;
      jobs.set(`message:${m.id}`, { kind: 'message', userId: user.id, messageId: m.id, recount: true });
    }
  }

  return { jobs: [...jobs.values()], summary };
}
