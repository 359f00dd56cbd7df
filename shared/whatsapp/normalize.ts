// Turns a validated inbound message into what the bot stores and answers: its type, a short text
// (the text, an image's, video's or document's caption, the chosen title, or a description such as
// "[location] Fake Cafe" or "[image]" for an image without a caption) and what kind
// of treatment it gets (docs/contract.md, "What the bot does with each notification").
import { InboundMessageSchema, type InboundMessage } from './schemas';

/**
 * - `answer`: stored, marked read, one answer (AI or built-in; commands decided later)
 * - `unreadable`: stored, marked read, one short polite "cannot read that" answer
 * - `reaction`: stored, linked to the message reacted to, not read, no answer
 * - `note`: an edit or deletion of an earlier message, or an answer to a request of the business
 *   (a call permission): stored (linked to the message it changes), not read, no answer
 * - `welcome`: first contact (request_welcome): the welcome text once per user, nothing stored
 * - `system`: applied to the user (e.g. number changed), no answer
 */
export type Treatment = 'answer' | 'unreadable' | 'reaction' | 'note' | 'welcome' | 'system';

export interface NormalizedMessage {
  readonly type: string;
  readonly text: string;
  readonly treatment: Treatment;
  readonly relatedId: string | null;
}

const join = (...parts: (string | undefined | null)[]): string =>
  parts
    .filter((p): p is string => Boolean(p && p.trim()))
    .join(' ')
    .trim();

const label = (kind: string, detail?: string | null): string => join(`[${kind}]`, detail);

/** An order line's quantity: a whole number from 1 to 99,999 (as a number or digits), else 1. */
const quantityOf = (quantity: number | string | undefined): number => {
  const n = typeof quantity === 'string' && /^\s*\d{1,5}\s*$/.test(quantity) ? Number(quantity) : quantity;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 99_999 ? n : 1;
};

/** A caption as the user wrote it, or null when there is none (missing or blank). */
const captionOf = (caption: string | null | undefined): string | null =>
  caption && caption.trim() ? caption : null;

/**
 * Kinds of unsupported message (`unsupported.type`, Meta's "Unsupported messages webhook
 * reference") that only act on a message already in the chat: a reaction, a pin, "keep in chat",
 * a vote in a poll (`poll_update`: each change of vote sends one), and an edit or deletion (edits
 * come as unsupported while the edit webhook is unavailable: "Edit messages webhook reference").
 */
const ACTIONS_ON_A_MESSAGE: ReadonlySet<string> = new Set([
  'reaction',
  'pin',
  'keep_in_chat',
  'poll_update',
  'edit',
  'revoke',
]);

/** Longest description of a flow's answers (the whole reply stays in the message's raw form). */
const MAX_FLOW_TEXT = 1024;

/**
 * A non-text answer as JSON, or '…' when it is nested deeper than JSON.stringify (which recurses)
 * can write: JSON.parse takes any depth, and such an answer must not cost the message.
 */
function written(value: unknown): string {
  try {
    return JSON.stringify(value);
  } catch {
    return '…';
  }
}

/**
 * What the user answered in a WhatsApp Flow, as `field: value` pairs (`response_json`, a JSON
 * object of the flow's fields; `flow_token` is the business's own, not an answer), or ''.
 */
function flowAnswers(responseJson: string): string {
  let fields: unknown;
  try {
    fields = JSON.parse(responseJson);
  } catch {
    return '';
  }
  if (typeof fields !== 'object' || fields === null || Array.isArray(fields)) return '';
  const pairs = Object.entries(fields)
    .filter(([key, value]) => key !== 'flow_token' && value !== null && value !== '')
    .map(([key, value]) => `${key}: ${typeof value === 'string' ? value : written(value)}`);
  const text = pairs.join(', ');
  const chars = [...text];
  return chars.length > MAX_FLOW_TEXT ? `${chars.slice(0, MAX_FLOW_TEXT - 1).join('')}…` : text;
}

export function normalize(message: InboundMessage): NormalizedMessage {
  const answer = (text: string): NormalizedMessage => ({
    type: message.type,
    text,
    treatment: 'answer',
    relatedId: null,
  });
  switch (message.type) {
    case 'text':
      return answer(message.text.body);
    // A medium's text is its caption (the type says what it is); without one, a description.
    case 'image':
      return answer(captionOf(message.image.caption) ?? '[image]');
    case 'video':
      return answer(captionOf(message.video.caption) ?? '[video]');
    case 'audio':
      return answer(message.audio.voice ? '[voice message]' : '[audio]');
    case 'document':
      return answer(captionOf(message.document.caption) ?? label('document', message.document.filename));
    case 'sticker':
      return answer('[sticker]');
    case 'location': {
      const { name, address, latitude, longitude } = message.location;
      return answer(label('location', join(name, address) || `${latitude}, ${longitude}`));
    }
    case 'contacts':
      return answer(
        label(
          'contact',
          message.contacts
            // A blank formatted name (some clients send "") is no name: first and last stand in.
            .map((c) => c.name?.formatted_name?.trim() || join(c.name?.first_name, c.name?.last_name))
            .filter(Boolean)
            .join(', '),
        ),
      );
    case 'interactive': {
      const i = message.interactive;
      if (i.type === 'button_reply') return answer(i.button_reply.title);
      if (i.type === 'list_reply') return answer(i.list_reply.title);
      // An answer to the business's request to call: no message to answer (the business calls,
      // or not), kept as a note of what the user chose.
      if (i.type === 'call_permission_reply') {
        const response = i.call_permission_reply?.response;
        return {
          type: message.type,
          text: /^[a-z_]{1,32}$/.test(response ?? '')
            ? `[call permission: ${response}]`
            : '[call permission]',
          treatment: 'note',
          relatedId: null,
        };
      }
      if (i.type === 'product')
        return answer(
          label('product', i.product?.title ?? i.product?.name ?? i.product?.product_retailer_id),
        );
      return answer(
        label('flow', flowAnswers(i.nfm_reply.response_json) || i.nfm_reply.body || i.nfm_reply.name),
      );
    }
    case 'button':
      return answer(message.button.text);
    case 'order': {
      // Items as a shop counts them: each line's quantity (2 of one product are 2 items), a line
      // without a readable one as 1.
      const count = message.order.product_items.reduce((sum, line) => sum + quantityOf(line.quantity), 0);
      return answer(label('order', join(`${count} item${count === 1 ? '' : 's'}`, message.order.text)));
    }
    case 'reaction':
      return {
        type: 'reaction',
        text: message.reaction.emoji ? label('reaction', message.reaction.emoji) : '[reaction removed]',
        treatment: 'reaction',
        relatedId: message.reaction.message_id,
      };
    case 'edit':
      return {
        type: 'edit',
        text: join('[edited]', editedText(message)),
        treatment: 'note',
        relatedId: message.edit.original_message_id,
      };
    case 'revoke':
      return {
        type: 'revoke',
        text: '[message deleted]',
        treatment: 'note',
        relatedId: message.revoke.original_message_id,
      };
    case 'system':
      return {
        type: 'system',
        text: message.system.body ?? '[system]',
        treatment: 'system',
        relatedId: null,
      };
    case 'request_welcome':
      return { type: 'request_welcome', text: '', treatment: 'welcome', relatedId: null };
    case 'unsupported':
    case 'unknown': {
      // What only acts on a message already in the chat is no message to answer, even unreadable.
      const what = message.unsupported?.type;
      if (what !== undefined && ACTIONS_ON_A_MESSAGE.has(what))
        return { type: message.type, text: `[${message.type}: ${what}]`, treatment: 'note', relatedId: null };
      return { type: message.type, text: `[${message.type}]`, treatment: 'unreadable', relatedId: null };
    }
  }
}

/**
 * The text of an edited message (`edit.message`: a message without id, sender or time of its
 * own), as its kind of message reads; '' when it is not one the bot can read.
 */
function editedText(message: Extract<InboundMessage, { type: 'edit' }>): string {
  const inner = message.edit.message;
  if (typeof inner !== 'object' || inner === null || Array.isArray(inner)) return '';
  const parsed = InboundMessageSchema.safeParse({
    ...inner,
    id: message.id,
    timestamp: message.timestamp,
  });
  if (!parsed.success || parsed.data.type === 'edit' || parsed.data.type === 'revoke') return '';
  const normalized = normalize(parsed.data);
  return normalized.treatment === 'answer' ? normalized.text : '';
}

/**
 * A message whose body did not match its type: stored as its type (or `unknown`), answered
 * politely; unless its type is one the bot never answers (a system message is WhatsApp's note about
 * the person, a reaction, edit or deletion acts on an earlier message): that stays unanswered.
 */
export function normalizeUnreadable(type: string): NormalizedMessage {
  const text = `[${type}]`;
  if (type === 'system') return { type, text, treatment: 'system', relatedId: null };
  if (type === 'reaction') return { type, text, treatment: 'reaction', relatedId: null };
  if (type === 'edit' || type === 'revoke') return { type, text, treatment: 'note', relatedId: null };
  return { type, text, treatment: 'unreadable', relatedId: null };
}
