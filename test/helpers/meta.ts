// Builders of webhook notifications shaped like Meta's documented payloads, and signing.
import { signBody } from '../../shared/whatsapp/signature';

export const PHONE_NUMBER_ID = '106540352242922';
export const WABA_ID = '102290129340398';
/** The `metadata` of every notification the tests send: the business number it reached. */
export const BUSINESS_METADATA = { display_phone_number: '15550783881', phone_number_id: PHONE_NUMBER_ID };

let counter = 0;
export const wamid = (): string =>
  `wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA${(++counter).toString(36)}${Date.now().toString(36)}`;

export const nowSeconds = (offset = 0): string => String(Math.floor(Date.now() / 1000) + offset);

export interface ContactInit {
  waId?: string;
  name?: string;
  bsuid?: string;
}

/** One `messages` change value with contacts, messages and statuses. */
export function value(init: {
  contacts?: ContactInit[];
  messages?: unknown[];
  statuses?: unknown[];
  errors?: unknown[];
}) {
  return {
    messaging_product: 'whatsapp',
    metadata: { ...BUSINESS_METADATA },
    ...(init.contacts
      ? {
          contacts: init.contacts.map((c) => ({
            profile: { name: c.name ?? 'Kerry Fisher' },
            ...(c.waId ? { wa_id: c.waId } : {}),
            ...(c.bsuid ? { user_id: c.bsuid } : {}),
          })),
        }
      : {}),
    ...(init.messages ? { messages: init.messages } : {}),
    ...(init.statuses ? { statuses: init.statuses } : {}),
    ...(init.errors ? { errors: init.errors } : {}),
  };
}

export function notification(...values: unknown[]) {
  return {
    object: 'whatsapp_business_account',
    entry: [{ id: WABA_ID, changes: values.map((v) => ({ value: v, field: 'messages' })) }],
  };
}

export function textMessage(from: string, body: string, extra: Record<string, unknown> = {}) {
  return { from, id: wamid(), timestamp: nowSeconds(), type: 'text', text: { body }, ...extra };
}

/** A notification with one text message from one user. */
export function textNotification(from: string, body: string, name = 'Kerry Fisher') {
  const message = textMessage(from, body);
  return { message, payload: notification(value({ contacts: [{ waId: from, name }], messages: [message] })) };
}

export function status(id: string, status: string, recipient: string, extra: Record<string, unknown> = {}) {
  return {
    id,
    status,
    timestamp: nowSeconds(),
    recipient_id: recipient,
    conversation: { id: 'CONVERSATION_ID', origin: { type: 'service' } },
    pricing: { billable: true, pricing_model: 'PMP', category: 'service', type: 'regular' },
    ...extra,
  };
}

/** Serialises like Meta does (non-ASCII escaped as \uXXXX) and signs. */
export function signed(
  payload: unknown,
  secret: string,
  escapeUnicode = true,
): { body: string; signature: string } {
  const json = JSON.stringify(payload);
  const body = escapeUnicode
    ? json.replace(/[\u0080-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)
    : json;
  return { body, signature: signBody(body, secret) };
}
