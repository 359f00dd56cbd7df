// zod schemas of what Meta sends to the webhook (WhatsApp Cloud API, `messages` field): the
// envelope, every documented inbound message type, statuses and errors. Unknown extra fields are
// kept (Meta adds fields over time); a message whose body does not match its type is handled by
// the caller as `unknown`.
import { z } from 'zod';

const obj = z.looseObject;
const str = z.string();
const optStr = z.string().optional();
/** Unix seconds, sent as a string (tolerate a number). Out-of-window values are settled by the parser. */
const timestamp = z
  .union([z.string().regex(/^\d{1,12}$/), z.number().int().nonnegative().max(999_999_999_999)])
  .transform(Number);

// Bounds on the identifiers Meta sends: a value outside them is not authentic-looking enough to key
// a document on, and is archived instead (docs/contract.md, "What the bot does with each notification").
/** Message ids (wamid.…): printable ASCII. */
export const MESSAGE_ID = /^[\x21-\x7e]{1,256}$/;
/** A WhatsApp number as Meta writes it: digits only (E.164 has at most 15). */
export const WA_ID = /^\d{1,20}$/;
/**
 * Business-scoped user ids, e.g. "US.13491208655302741918": Meta gives a country code, a period
 * and up to 128 alphanumeric characters, a parent id "ENT." after the country code (up to 135).
 */
export const BSUID = /^[A-Za-z0-9._:-]{1,140}$/;
/** Graph object ids (phone_number_id). */
export const GRAPH_ID = /^\d{1,32}$/;

export const GraphErrorSchema = obj({
  // A number; Meta's Groups API examples quote it ("code": "<ERROR_CODE>"), read as its digits.
  code: z.union([
    z.number().int(),
    z
      .string()
      .regex(/^\d{1,12}$/)
      .transform(Number),
  ]),
  title: optStr,
  message: optStr,
  error_data: obj({ details: optStr }).optional(),
  href: optStr,
});
export type GraphErrorPayload = z.infer<typeof GraphErrorSchema>;

/**
 * Meta's `errors` on a message or a status: the items that parse. An odd item (or list) is
 * dropped here, never a reason to lose what it came with, and never the other items.
 */
const ErrorsSchema = z
  .array(z.unknown())
  .optional()
  .catch(undefined)
  .transform((items) => {
    const parsed = items?.flatMap((item) => {
      const one = GraphErrorSchema.safeParse(item);
      return one.success ? [one.data] : [];
    });
    return parsed?.length ? parsed : undefined;
  });

/**
 * A value's business number: its id is what replies go out through; the display number is only
 * shown, so an odd one (a JSON number: Meta's older syntax leaves the placeholder unquoted) never
 * costs the value.
 */
export const MetadataSchema = obj({
  display_phone_number: optStr.catch(undefined),
  phone_number_id: str.regex(GRAPH_ID),
});

export const ContactSchema = obj({
  wa_id: optStr,
  /** Business-scoped user id (BSUID), e.g. "US.13491208655302741918". */
  user_id: optStr,
  parent_user_id: optStr,
  profile: obj({ name: optStr, username: optStr }).optional(),
});

const MediaSchema = obj({
  id: optStr,
  mime_type: optStr,
  sha256: optStr,
  caption: optStr,
  url: optStr,
});

export const ContextSchema = obj({
  from: optStr,
  id: optStr,
  forwarded: z.boolean().optional(),
  frequently_forwarded: z.boolean().optional(),
  referred_product: obj({ catalog_id: optStr, product_retailer_id: optStr }).optional(),
});

export const ReferralSchema = obj({
  source_url: optStr,
  source_id: optStr,
  source_type: optStr,
  headline: optStr,
  body: optStr,
  media_type: optStr,
  ctwa_clid: optStr,
});

const base = {
  id: str.regex(MESSAGE_ID),
  from: optStr,
  from_user_id: optStr,
  timestamp,
  // What comes with a message (what it replies to, the ad it came from, Meta's errors) is kept
  // in its raw form; an odd one is dropped here rather than cost the message itself.
  context: ContextSchema.optional().catch(undefined),
  referral: ReferralSchema.optional().catch(undefined),
  errors: ErrorsSchema,
};

export const TextMessageSchema = obj({ ...base, type: z.literal('text'), text: obj({ body: str }) });
export const ImageMessageSchema = obj({ ...base, type: z.literal('image'), image: MediaSchema });
export const AudioMessageSchema = obj({
  ...base,
  type: z.literal('audio'),
  audio: MediaSchema.extend({ voice: z.boolean().optional() }),
});
export const VideoMessageSchema = obj({ ...base, type: z.literal('video'), video: MediaSchema });
export const DocumentMessageSchema = obj({
  ...base,
  type: z.literal('document'),
  document: MediaSchema.extend({ filename: optStr }),
});
export const StickerMessageSchema = obj({
  ...base,
  type: z.literal('sticker'),
  sticker: MediaSchema.extend({ animated: z.boolean().optional() }),
});
export const LocationMessageSchema = obj({
  ...base,
  type: z.literal('location'),
  location: obj({
    latitude: z.number(),
    longitude: z.number(),
    name: optStr,
    address: optStr,
    url: optStr,
  }),
});
const SharedContactSchema = obj({
  name: obj({ formatted_name: optStr, first_name: optStr, last_name: optStr }).optional(),
  phones: z.array(obj({ phone: optStr, wa_id: optStr, type: optStr })).optional(),
  emails: z.array(obj({ email: optStr })).optional(),
  org: obj({ company: optStr }).optional(),
  vcard: optStr,
});
export const ContactsMessageSchema = obj({
  ...base,
  type: z.literal('contacts'),
  contacts: z.array(SharedContactSchema).min(1),
});
export const InteractiveMessageSchema = obj({
  ...base,
  type: z.literal('interactive'),
  interactive: z.discriminatedUnion('type', [
    obj({ type: z.literal('button_reply'), button_reply: obj({ id: str, title: str }) }),
    obj({ type: z.literal('list_reply'), list_reply: obj({ id: str, title: str, description: optStr }) }),
    obj({ type: z.literal('nfm_reply'), nfm_reply: obj({ name: optStr, body: optStr, response_json: str }) }),
    // A product the user sends from the business's catalog (Meta's changelog, Aug 3, 2026: the
    // interactive messages webhook reference documents it); what names it is optional, so a
    // detail Meta spells otherwise never makes the message unreadable.
    obj({
      type: z.literal('product'),
      product: obj({ catalog_id: optStr, product_retailer_id: optStr, title: optStr, name: optStr })
        .optional()
        .catch(undefined),
    }),
    // The user's answer to a request to call them (Calling API: `call_permission_reply`): accept
    // or reject, for a while (`expiration_timestamp`) or for good (`is_permanent`), by the user or
    // automatically (`response_source`). Read loosely: an odd detail never makes it unreadable.
    obj({
      type: z.literal('call_permission_reply'),
      call_permission_reply: obj({
        response: optStr,
        is_permanent: z.boolean().optional(),
        expiration_timestamp: z.union([str, z.number()]).optional(),
        response_source: optStr,
      })
        .optional()
        .catch(undefined),
    }),
  ]),
});
export const ButtonMessageSchema = obj({
  ...base,
  type: z.literal('button'),
  button: obj({ text: str, payload: optStr }),
});
export const ReactionMessageSchema = obj({
  ...base,
  type: z.literal('reaction'),
  /** An empty or missing emoji means the reaction was removed. */
  reaction: obj({ message_id: str.max(256), emoji: optStr }),
});
export const OrderMessageSchema = obj({
  ...base,
  type: z.literal('order'),
  order: obj({
    catalog_id: optStr,
    text: optStr,
    product_items: z
      .array(
        obj({
          product_retailer_id: optStr,
          quantity: z.union([z.number(), z.string()]).optional(),
          item_price: z.union([z.number(), z.string()]).optional(),
          currency: optStr,
        }),
      )
      .default([]),
  }),
});
/**
 * The system message types that give a user a new number: `user_changed_number`, and
 * `customer_changed_number`, its name in Meta's earlier webhook reference (with `new_wa_id`).
 */
export const NUMBER_CHANGES: readonly string[] = ['user_changed_number', 'customer_changed_number'];
export const isNumberChange = (type: string | undefined): boolean => NUMBER_CHANGES.includes(type ?? '');
/**
 * A number Meta may write as a JSON number (`new_wa_id`: Meta's earlier reference leaves it
 * unquoted, and whatsapp-api-js types it `number | string`), read as its digits; an integer
 * too large to hold exactly is no number ('' matches no WA_ID).
 */
const numberText = z
  .union([str, z.number()])
  .transform((v) => (typeof v === 'string' ? v : Number.isSafeInteger(v) && v >= 0 ? String(v) : ''))
  .optional();
export const SystemMessageSchema = obj({
  ...base,
  type: z.literal('system'),
  system: obj({
    body: optStr,
    type: optStr,
    wa_id: numberText,
    new_wa_id: numberText,
    identity: optStr,
    customer: optStr,
    user_id: optStr,
    // The id left behind (Meta's changelog, Aug 11, 2026: on both kinds of change).
    previous_user_id: optStr,
  }),
});
/**
 * A user edited a message they sent (text, or media with its caption, within 15 minutes): the
 * edited message in `edit.message` (Meta's "Edit messages webhook reference"). What it holds is
 * read loosely: it never makes the edit itself unreadable.
 */
export const EditMessageSchema = obj({
  ...base,
  type: z.literal('edit'),
  edit: obj({ original_message_id: str.max(256), message: z.unknown().optional() }),
});
/** A user deleted a message they sent (Meta's "Revoke messages webhook reference"). */
export const RevokeMessageSchema = obj({
  ...base,
  type: z.literal('revoke'),
  revoke: obj({ original_message_id: str.max(256) }),
});
export const RequestWelcomeMessageSchema = obj({ ...base, type: z.literal('request_welcome') });
export const UnsupportedMessageSchema = obj({
  ...base,
  type: z.enum(['unsupported', 'unknown']),
  unsupported: obj({ type: optStr }).optional(),
});

/** Every documented inbound message, discriminated on `type`. */
export const InboundMessageSchema = z.discriminatedUnion('type', [
  TextMessageSchema,
  ImageMessageSchema,
  AudioMessageSchema,
  VideoMessageSchema,
  DocumentMessageSchema,
  StickerMessageSchema,
  LocationMessageSchema,
  ContactsMessageSchema,
  InteractiveMessageSchema,
  ButtonMessageSchema,
  ReactionMessageSchema,
  OrderMessageSchema,
  SystemMessageSchema,
  EditMessageSchema,
  RevokeMessageSchema,
  RequestWelcomeMessageSchema,
  UnsupportedMessageSchema,
]);
export type InboundMessage = z.infer<typeof InboundMessageSchema>;

/** The least a message needs to be stored (as `unknown`) when its body does not match its type. */
export const MessageBaseSchema = obj({ ...base, type: str.min(1).default('unknown') });
export type MessageBase = z.infer<typeof MessageBaseSchema>;

export const StatusSchema = obj({
  id: str.regex(MESSAGE_ID),
  status: z.enum(['sent', 'delivered', 'read', 'failed', 'deleted', 'warning', 'played']).or(str),
  timestamp,
  recipient_id: optStr,
  recipient_user_id: optStr,
  biz_opaque_callback_data: optStr,
  // What comes with a status (billing details, Meta's errors) never costs the status: an odd one
  // is dropped (the status's own fields decide what is applied).
  conversation: obj({
    id: optStr,
    expiration_timestamp: z.union([str, z.number()]).optional(),
    origin: obj({ type: optStr }).optional(),
  })
    .optional()
    .catch(undefined),
  pricing: obj({
    billable: z.boolean().optional(),
    pricing_model: optStr,
    category: optStr,
    type: optStr,
  })
    .optional()
    .catch(undefined),
  errors: ErrorsSchema,
});
export type Status = z.infer<typeof StatusSchema>;

/** What a `messages` change value needs before any of its parts can be used: the business number. */
export const ValueHeadSchema = obj({ messaging_product: optStr.catch(undefined), metadata: MetadataSchema });

/** The parts of a `messages` value; the parser checks each on its own, so one odd part never hides the others. */
export const VALUE_PARTS = ['contacts', 'messages', 'statuses', 'errors'] as const;
/** A part is an array whose items stay unknown, so each item is checked on its own too. */
export const ValuePartSchema = z.array(z.unknown()).optional();

/** A well-formed `value` of a `messages` change. */
export const MessagesValueSchema = ValueHeadSchema.extend({
  contacts: ValuePartSchema,
  messages: ValuePartSchema,
  statuses: ValuePartSchema,
  errors: ValuePartSchema,
});
export type MessagesValue = z.infer<typeof MessagesValueSchema>;

export const ChangeSchema = obj({ field: str, value: z.unknown() });
/** An entry: its own fields (the account id, the batch's time) are not read, so an odd one never costs its changes. */
export const EntrySchema = obj({
  id: optStr.catch(undefined),
  time: z.number().optional().catch(undefined),
  changes: z.array(z.unknown()).default([]),
});
export const NotificationSchema = obj({ object: str, entry: z.array(z.unknown()) });
