// What we send to the Graph API: one typed builder per outgoing body, enforcing WhatsApp's limits
// before any request. A body over a limit is an OutboundLimitError, never silently cut or split
// (splitting a long answer is the bot's decision, shared/bot/split.ts).
import { AppError, ErrorCode } from '../errors';

/** WhatsApp's limit on a text message body, in characters (Unicode code points, see `characters`). */
export const TEXT_BODY_LIMIT = 4096;
/** Template names: lower-case letters, digits and underscores, at most 512. */
export const TEMPLATE_NAME = /^[a-z0-9_]{1,512}$/;
/** Template language codes such as `en` or `en_US`. */
export const TEMPLATE_LANGUAGE = /^[a-z]{2,3}(_[A-Za-z]{2,4})?$/;
/** The longest text of one template body parameter, in characters. */
export const TEMPLATE_PARAMETER_LIMIT = 1024;
/** The most body parameters a template send carries. */
export const TEMPLATE_PARAMETERS_MAX = 20;
/**
 * What the Graph API refuses in a template body parameter, refusing the whole send (code 132018,
 * "Param text cannot have new-line/tab characters or more than 4 consecutive spaces").
 */
const TEMPLATE_PARAMETER_FORBIDDEN = /[\n\r\t]| {5}/;
/** Why WhatsApp would refuse `text` as a template parameter, or null when it would take it. */
export function templateParameterProblem(text: string): string | null {
  return TEMPLATE_PARAMETER_FORBIDDEN.test(text)
    ? 'must not contain line breaks, tabs or more than 4 spaces in a row (WhatsApp refuses them in a template parameter)'
    : null;
}

/**
 * WhatsApp's customer service window: a message other than a template reaches a user only within
 * 24 hours of their latest message (after it, Graph refuses it: code 131047).
 */
export const CUSTOMER_SERVICE_WINDOW_MS = 24 * 3_600_000;

/** An inbound message as the window reads it: Meta's time and, when known, when it reached us. */
export interface Arrival {
  readonly createdAt: Date;
  readonly receivedAt?: Date | null | undefined;
}

/**
 * When the window a message opened began, as far as we know: the later of Meta's time and the time
 * the notification reached us. A notification received now may carry any timestamp (a wrong
 * clock, a client that plays Meta, Meta's own examples dated 2020): whether its window is really
 * closed is then the Graph API's to say (131047). Only a message that reached us 24 hours ago or
 * more is known to be outside it. Migrated messages carry only Meta's time.
 */
export const windowFrom = (m: Arrival): Date =>
  m.receivedAt && m.receivedAt > m.createdAt ? m.receivedAt : m.createdAt;

/**
 * Whether the window opened by the user's message `m` is open at `now`, counted from `windowFrom`:
 * the one anchor of the reply worker and the operator send.
 */
export const windowOpen = (m: Arrival, now: Date): boolean =>
  now.getTime() - windowFrom(m).getTime() < CUSTOMER_SERVICE_WINDOW_MS;

/** Who a message goes to: the phone number (wa_id) when known, else the business-scoped user id. */
export interface Recipient {
  readonly waId: string | null;
  readonly bsuid: string | null;
}

/** An approved message template: its name, language code and body parameters, in order. */
export interface TemplateMessage {
  readonly name: string;
  readonly language: string;
  readonly parameters: readonly string[];
}

/** How many characters a text has for WhatsApp's limits: Unicode code points (an emoji is one). */
export const characters = (text: string): number => Array.from(text).length;

/** A message that breaks one of WhatsApp's limits; refused before any request. */
export class OutboundLimitError extends AppError {
  constructor(
    readonly field: string,
    detail: string,
  ) {
    super(ErrorCode.INVALID_INPUT, `${field} ${detail}`);
  }
}

type Address = { readonly to: string } | { readonly recipient: string };

type Envelope = Address & {
  readonly messaging_product: 'whatsapp';
  readonly recipient_type: 'individual';
};

export type TextMessageBody = Envelope & {
  readonly type: 'text';
  readonly text: { readonly preview_url: false; readonly body: string };
};

export type TemplateMessageBody = Envelope & {
  readonly type: 'template';
  readonly template: {
    readonly name: string;
    readonly language: { readonly code: string };
    readonly components?: readonly [
      {
        readonly type: 'body';
        readonly parameters: readonly { readonly type: 'text'; readonly text: string }[];
      },
    ];
  };
};

/** A message sent to a user (POST /{phone-number-id}/messages), discriminated on `type`. */
export type OutboundMessage = TextMessageBody | TemplateMessageBody;

/** Marks an inbound message as read, optionally showing the typing indicator. */
export interface ReadReceiptBody {
  readonly messaging_product: 'whatsapp';
  readonly status: 'read';
  readonly message_id: string;
  readonly typing_indicator?: { readonly type: 'text' };
}

function address(to: Recipient): Address {
  if (to.waId) return { to: to.waId };
  if (to.bsuid) return { recipient: to.bsuid };
  throw new OutboundLimitError('recipient', 'needs a wa_id or a business-scoped user id');
}

const envelope = (to: Recipient): Envelope => ({
  messaging_product: 'whatsapp',
  recipient_type: 'individual',
  ...address(to),
});

/** A text message; its body must be 1 to 4096 characters. */
export function textMessage(to: Recipient, body: string): TextMessageBody {
  if (body.trim() === '') throw new OutboundLimitError('text body', 'must not be empty');
  const length = characters(body);
  if (length > TEXT_BODY_LIMIT) {
    throw new OutboundLimitError(
      'text body',
      `is ${length} characters; WhatsApp allows at most ${TEXT_BODY_LIMIT}`,
    );
  }
  return { ...envelope(to), type: 'text', text: { preview_url: false, body } };
}

/** A template message (the only kind allowed outside the 24-hour window). */
export function templateMessage(to: Recipient, template: TemplateMessage): TemplateMessageBody {
  if (!TEMPLATE_NAME.test(template.name)) {
    throw new OutboundLimitError('template name', 'must be 1-512 lower-case letters, digits or _');
  }
  if (!TEMPLATE_LANGUAGE.test(template.language)) {
    throw new OutboundLimitError('template language', 'must be a language code such as en or en_US');
  }
  if (template.parameters.length > TEMPLATE_PARAMETERS_MAX) {
    throw new OutboundLimitError('template parameters', `must be at most ${TEMPLATE_PARAMETERS_MAX}`);
  }
  for (const [index, text] of template.parameters.entries()) {
    if (text === '' || characters(text) > TEMPLATE_PARAMETER_LIMIT) {
      throw new OutboundLimitError(
        `template parameter ${index + 1}`,
        `must be 1-${TEMPLATE_PARAMETER_LIMIT} characters`,
      );
    }
    const problem = templateParameterProblem(text);
    if (problem) throw new OutboundLimitError(`template parameter ${index + 1}`, problem);
  }
  return {
    ...envelope(to),
    type: 'template',
    template: {
      name: template.name,
      language: { code: template.language },
      ...(template.parameters.length
        ? {
            components: [
              { type: 'body', parameters: template.parameters.map((text) => ({ type: 'text', text })) },
            ] as const,
          }
        : {}),
    },
  };
}

/** The read receipt for an inbound message; with `typing`, the typing indicator too. */
export function readReceipt(messageId: string, typing: boolean): ReadReceiptBody {
  if (!messageId) throw new OutboundLimitError('message id', 'must not be empty');
  return {
    messaging_product: 'whatsapp',
    status: 'read',
    message_id: messageId,
    ...(typing ? { typing_indicator: { type: 'text' } as const } : {}),
  };
}
