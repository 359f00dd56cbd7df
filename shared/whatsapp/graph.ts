// The Graph API client (axios): sends messages and read receipts for a business number. Retries
// 429, 5xx and network errors with backoff and jitter up to a bound; never retries permanent
// errors, nor Meta's pair rate limit (131056: left to a caller that can wait), nor a message whose
// request may have reached Graph without an answer read (a timeout, a reset connection, a cut or
// oversized answer: Graph may have sent it, and the Graph API has no idempotency key). Each call
// is bounded in time and in the size of the answer it reads. Its errors keep method, host, status
// and the Graph error code, never the token.
import axios, { type AxiosInstance } from 'axios';
import { z } from 'zod';
import { AppError, ErrorCode } from '../errors';
import { retryAfterMs, sleep } from '../time';
import { MESSAGE_ID } from './schemas';
import { readReceipt, templateMessage, textMessage, type Recipient, type TemplateMessage } from './outbound';

export type { Recipient, TemplateMessage } from './outbound';

export interface SendResult {
  /** The wamid Graph assigned, or null in dry run (no access token): the reply is `not_sent`. */
  readonly waMessageId: string | null;
}

export interface GraphClient {
  readonly dryRun: boolean;
  sendText(phoneNumberId: string, to: Recipient, body: string): Promise<SendResult>;
  /** Sends a template (the only kind of message allowed outside the 24-hour window). */
  sendTemplate(phoneNumberId: string, to: Recipient, template: TemplateMessage): Promise<SendResult>;
  /** Marks an inbound message as read; with `typing`, shows the typing indicator too. */
  markRead(phoneNumberId: string, messageId: string, typing: boolean): Promise<void>;
}

/**
 * Meta's error format. Only `code` is required: it is what the client acts on (Meta: build error
 * handling on `code`). Every other field is read when it has the documented type and ignored
 * otherwise, so that an odd one never costs the code: not every error carries `type` or
 * `fbtrace_id` (proxies, some 5xx), and the Graph API writes `error_data` as JSON text on some
 * errors (`"error_data":"{\"blame_field_specs\":…}"`).
 */
const optional = <T extends z.ZodTypeAny>(schema: T) => schema.optional().catch(undefined);
export const GraphErrorBodySchema = z.object({
  error: z
    .object({
      message: optional(z.string()),
      type: optional(z.string()),
      code: z.number().int(),
      error_subcode: optional(z.number().int()),
      error_user_title: optional(z.string()),
      error_user_msg: optional(z.string()),
      error_data: optional(z.object({ details: optional(z.string()) }).passthrough()),
      fbtrace_id: optional(z.string()),
    })
    .passthrough(),
});
export type GraphErrorBody = z.infer<typeof GraphErrorBodySchema>;

/** The answer to a sent message: the wamid Graph assigned it. */
const SentMessageSchema = z
  // A wamid as Meta writes them (the bounds of an inbound message id): it becomes the stored id.
  .object({ id: z.string().regex(MESSAGE_ID), message_status: z.string().optional() })
  .passthrough();
export const SendResponseSchema = z.object({
  messaging_product: z.literal('whatsapp'),
  // A BSUID-addressed send answers with `user_id` instead of `wa_id`; neither is used here.
  contacts: z
    .array(z.object({ input: z.string().optional(), wa_id: z.string().optional() }).passthrough())
    .optional(),
  // At least one: the first carries the wamid.
  messages: z.tuple([SentMessageSchema], SentMessageSchema),
});
export type SendResponse = z.infer<typeof SendResponseSchema>;

/** The answer to a read receipt or a webhook subscription. */
export const SuccessResponseSchema = z.object({ success: z.literal(true) });

/**
 * Meta's refusal of a message other than a template outside the user's 24-hour customer service
 * window ("re-engagement message"): the authority on the window, which the bot's own check only
 * anticipates (../bot/reply.ts).
 */
export const REENGAGEMENT = 131047;

/** Meta's code for an access token that expired, was revoked or is not one (HTTP 401). */
export const ACCESS_TOKEN_REFUSED = 190;

/** Graph error codes that will fail the same way again: never retried, recorded on the message. */
export const PERMANENT_CODES: ReadonlySet<number> = new Set([
  3, // capability or permissions issue: Meta answers it with HTTP 500, yet it lasts
  100, // invalid parameter
  ACCESS_TOKEN_REFUSED,
  10, // permission denied
  200, // permission error
  368, // temporarily blocked for policy violations
  131005, // access denied
  131008, // required parameter missing
  131009, // parameter value invalid
  131021, // recipient cannot be sender
  131026, // message undeliverable
  131030, // recipient not in allowed list
  131031, // account locked
  131045, // incorrect certificate
  REENGAGEMENT, // re-engagement message (24 h window over)
  131049, // not delivered to maintain ecosystem health
  131050, // user stopped marketing messages
  131051, // unsupported message type
  131052, // media download error
  131053, // media upload error
  132000, // template parameter count mismatch
  132001, // template does not exist
  133010, // phone number not registered
]);

/**
 * Meta's pair rate limit: too many messages from one business number to one user in a short time
 * (about one every 6 s once a burst is spent). It clears in seconds, longer than this client's
 * backoff waits, so the client does not retry it: the reply worker, which holds the user's lock,
 * waits and sends again (../bot/reply.ts); an operator's request answers at once.
 */
export const PAIR_RATE_LIMIT = 131056;

/**
 * Codes that may succeed later whatever HTTP status carries them: throttling (Graph answers it with
 * a 4xx), and Meta's outages, which its documentation pairs with a 5xx but tells clients to handle
 * by code (131016 service unavailable, 131057 business account in maintenance mode). Graph's own
 * throttling codes count too, as its error handling guide says ("wait and retry the operation":
 * https://developers.facebook.com/docs/graph-api/using-graph-api/error-handling/), since the Cloud
 * API is built on the Graph API: 17 (user request limit), 341 (application limit reached) and 613
 * ("Calls to this API have exceeded the rate limit", sent with a 400 like WhatsApp's own limits).
 */
const RETRYABLE_CODES: ReadonlySet<number> = new Set([
  4, // app's API call rate limit
  17, // user's API call rate limit
  341, // application limit reached
  613, // calls to this API have exceeded the rate limit
  80007, // WhatsApp Business Account rate limit
  130429, // Cloud API throughput reached
  PAIR_RATE_LIMIT,
  131000, // something went wrong
  1, // unknown, possibly downtime
  2, // service: downtime or overload
  131016, // service unavailable
  131057, // business account in maintenance mode
]);

export class GraphError extends AppError {
  constructor(
    readonly method: string,
    readonly host: string,
    readonly status: number | null,
    readonly graphCode: number | null,
    readonly title: string,
    readonly permanent: boolean,
    readonly subcode: number | null = null,
    /**
     * The title is Graph's own words (its error's message or user title), which may echo what was
     * sent (a number, a name, a text): kept off `message`, which the host logs when it is thrown.
     */
    readonly titleFromGraph = false,
  ) {
    super(
      ErrorCode.UPSTREAM_FAILED,
      `Graph ${method} ${host} failed: ${status ?? 'network error'}${graphCode !== null ? ` code ${graphCode}` : ''}${titleFromGraph ? '' : ` ${title}`}`.trim(),
    );
  }

  /** Meta's pair rate limit (131056): nothing went out; the same send may succeed in seconds. */
  get pairRateLimited(): boolean {
    return this.graphCode === PAIR_RATE_LIMIT;
  }

  /**
   * Graph refused the access token (HTTP 401, or code 190: expired, revoked or wrong): every send
   * fails so until WHATSAPP_ACCESS_TOKEN is replaced, a configuration problem for an operator.
   */
  get tokenRefused(): boolean {
    return this.status === 401 || this.graphCode === ACCESS_TOKEN_REFUSED;
  }

  /** The message with Graph's title: what a failed message keeps (stored with it, never logged). */
  get description(): string {
    return this.titleFromGraph && this.title ? `${this.message} ${this.title}` : this.message;
  }
}

export interface RetryPolicy {
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 300, maxDelayMs: 4_000 };

export interface GraphOptions {
  readonly baseUrl: string;
  readonly apiVersion: string;
  readonly accessToken: string;
  readonly timeoutMs?: number;
  readonly retry?: RetryPolicy;
}

function backoff(policy: RetryPolicy, attempt: number, retryAfter: string | undefined): number {
  const advised = retryAfterMs(retryAfter) ?? 0;
  const exponential = policy.baseDelayMs * 2 ** attempt;
  const jittered = exponential / 2 + Math.random() * (exponential / 2);
  return Math.min(policy.maxDelayMs, Math.max(advised, jittered));
}

/** What is safe to say about a schema mismatch: where, not the values. */
function mismatch(error: z.ZodError): string {
  const issue = error.issues[0];
  return `unexpected response${issue ? `: ${issue.path.join('.') || 'body'} ${issue.message}` : ''}`;
}

/**
 * A POST to the Graph API whose 2xx answer must match `schema`. `resendable`: sending it twice
 * does no harm (a read receipt, a subscription); a message is not, so a timed-out one is not sent
 * again.
 */
type Post = <T>(path: string, body: unknown, schema: z.ZodType<T>, resendable: boolean) => Promise<T>;

/** Axios' codes for a request that got no answer in time (it reached Graph, which may act on it). */
const TIMEOUT_CODES: ReadonlySet<string> = new Set(['ECONNABORTED', 'ETIMEDOUT', 'ERR_CANCELED']);
/**
 * Network errors raised before a connection existed: the request never reached Graph, so a
 * message is safely sent again. Any other (a reset or cut connection, an answer too large) may
 * come after Graph read the request.
 */
const NOT_CONNECTED_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
]);
/** The most of an answer read: Graph's answers are a few hundred bytes, error bodies a few KiB. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/** The one transport of the Graph API: bearer token, bounded retries, errors as GraphError. */
function graphTransport(options: GraphOptions): Post {
  const policy = options.retry ?? DEFAULT_RETRY;
  const http: AxiosInstance = axios.create({
    baseURL: `${options.baseUrl}/${options.apiVersion}`,
    timeout: options.timeoutMs ?? 15_000,
    headers: { Authorization: `Bearer ${options.accessToken}`, 'Content-Type': 'application/json' },
    validateStatus: () => true,
    // Never follow redirects with the bearer token attached.
    maxRedirects: 0,
    maxContentLength: MAX_RESPONSE_BYTES,
  });
  const timeoutMs = options.timeoutMs ?? 15_000;
  const host = new URL(options.baseUrl).host;

  return async function post<T>(
    path: string,
    body: unknown,
    schema: z.ZodType<T>,
    resendable: boolean,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let error: GraphError;
      let retryAfter: string | undefined;
      try {
        // `timeout` is an idle timeout in Node (an answer that trickles in never ends it); the
        // signal bounds the whole call.
        const response = await http.post<unknown>(path, body, { signal: AbortSignal.timeout(timeoutMs) });
        if (response.status >= 200 && response.status < 300) {
          const parsed = schema.safeParse(response.data);
          if (parsed.success) return parsed.data;
          // Not retried: Graph accepted the request, and a resent message would be a duplicate.
          throw new GraphError('POST', host, response.status, null, mismatch(parsed.error), true);
        }
        const parsed = GraphErrorBodySchema.safeParse(response.data);
        const meta = parsed.success ? parsed.data.error : null;
        const code = meta?.code ?? null;
        const retryable =
          (response.status === 429 ||
            response.status >= 500 ||
            (code !== null && RETRYABLE_CODES.has(code))) &&
          !(code !== null && PERMANENT_CODES.has(code));
        const title = (meta?.error_user_title ?? meta?.message ?? '').slice(0, 200);
        error = new GraphError(
          'POST',
          host,
          response.status,
          code,
          title,
          !retryable,
          meta?.error_subcode ?? null,
          true,
        );
        const header: unknown = response.headers['retry-after'];
        retryAfter = typeof header === 'string' ? header : undefined;
      } catch (cause) {
        if (cause instanceof GraphError) throw cause;
        // Network error or timeout: drop axios' error (its config carries the token). A message
        // that reached Graph without an answer read may have gone out: sending it again could
        // deliver it twice.
        const code = axios.isAxiosError(cause) ? (cause.code ?? 'network') : 'network';
        const unknownFate = !resendable && !NOT_CONNECTED_CODES.has(code);
        const what = TIMEOUT_CODES.has(code) ? 'timed out' : 'no answer read';
        error = new GraphError(
          'POST',
          host,
          null,
          null,
          unknownFate ? `${code} (${what}; it may have been sent)` : code,
          unknownFate,
        );
      }
      if (error.permanent || error.pairRateLimited || attempt + 1 >= policy.attempts) throw error;
      await sleep(backoff(policy, attempt, retryAfter));
    }
  };
}

export function createGraphClient(options: GraphOptions): GraphClient {
  const post = graphTransport(options);
  const messages = (phoneNumberId: string) => `/${encodeURIComponent(phoneNumberId)}/messages`;

  async function send(phoneNumberId: string, body: object): Promise<SendResult> {
    const sent = await post(messages(phoneNumberId), body, SendResponseSchema, false);
    return { waMessageId: sent.messages[0].id };
  }

  return {
    dryRun: false,
    // The bodies are built (and checked against WhatsApp's limits) before any request.
    sendText: async (phoneNumberId, to, text) => send(phoneNumberId, textMessage(to, text)),
    sendTemplate: async (phoneNumberId, to, template) => send(phoneNumberId, templateMessage(to, template)),
    async markRead(phoneNumberId, messageId, typing) {
      await post(messages(phoneNumberId), readReceipt(messageId, typing), SuccessResponseSchema, true);
    },
  };
}

/**
 * Subscribes the app that owns the token to a WhatsApp Business Account's webhooks
 * (POST /{waba-id}/subscribed_apps); with `override`, Meta sends that account's notifications to
 * the given callback URL (and verifies it at once with the verify token).
 */
export async function subscribeApp(
  options: GraphOptions,
  wabaId: string,
  override?: { readonly callbackUrl: string; readonly verifyToken: string },
): Promise<void> {
  const post = graphTransport(options);
  await post(
    `/${encodeURIComponent(wabaId)}/subscribed_apps`,
    override
      ? { override_callback_uri: override.callbackUrl, verify_token: override.verifyToken }
      : undefined,
    SuccessResponseSchema,
    true,
  );
}

/** Without an access token (local development) nothing is sent: replies are recorded `not_sent`. */
export const dryRunGraphClient: GraphClient = {
  dryRun: true,
  sendText: () => Promise.resolve({ waMessageId: null }),
  sendTemplate: () => Promise.resolve({ waMessageId: null }),
  markRead: () => Promise.resolve(),
};
