// The Graph API client (axios): sends messages and read receipts for a business number. Retries
// 429, 5xx and network errors with backoff and jitter up to a bound; never retries permanent
// errors. Its errors keep method, host, status and the Graph error code, never the token.
import axios, { type AxiosInstance } from 'axios';
import { AppError, ErrorCode } from '../errors';
import { sleep } from '../time';

export interface Recipient {
  readonly waId: string | null;
  readonly bsuid: string | null;
}

export interface SendResult {
  /** The wamid Graph assigned, or null in dry run (no access token): the reply is `not_sent`. */
  readonly waMessageId: string | null;
}

/** An approved message template: its name, language code and body parameters, in order. */
export interface TemplateMessage {
  readonly name: string;
  readonly language: string;
  readonly parameters: readonly string[];
}

export interface GraphClient {
  readonly dryRun: boolean;
  sendText(phoneNumberId: string, to: Recipient, body: string): Promise<SendResult>;
  /** Sends a template (the only kind of message allowed outside the 24-hour window). */
  sendTemplate(phoneNumberId: string, to: Recipient, template: TemplateMessage): Promise<SendResult>;
  /** Marks an inbound message as read; with `typing`, shows the typing indicator too. */
  markRead(phoneNumberId: string, messageId: string, typing: boolean): Promise<void>;
}

/** Graph error codes that will fail the same way again: never retried, recorded on the message. */
export const PERMANENT_CODES: ReadonlySet<number> = new Set([
  100, // invalid parameter
  190, // access token expired or invalid
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
  131047, // re-engagement message (24 h window over)
  131049, // not delivered to maintain ecosystem health
  131050, // user stopped marketing messages
  131051, // unsupported message type
  131052, // media download error
  131053, // media upload error
  132000, // template parameter count mismatch
  132001, // template does not exist
  133010, // phone number not registered
]);

/** Throttling codes that may succeed later even though Graph answers them with a 4xx. */
const RETRYABLE_CODES: ReadonlySet<number> = new Set([4, 80007, 130429, 131056, 131000, 1, 2]);

export class GraphError extends AppError {
  constructor(
    readonly method: string,
    readonly host: string,
    readonly status: number | null,
    readonly graphCode: number | null,
    readonly title: string,
    readonly permanent: boolean,
  ) {
    super(
      ErrorCode.UPSTREAM_FAILED,
      `Graph ${method} ${host} failed: ${status ?? 'network error'}${graphCode !== null ? ` code ${graphCode}` : ''} ${title}`.trim(),
    );
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
  const advised = retryAfter && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000 : 0;
  const exponential = policy.baseDelayMs * 2 ** attempt;
  const jittered = exponential / 2 + Math.random() * (exponential / 2);
  return Math.min(policy.maxDelayMs, Math.max(advised, jittered));
}

interface GraphErrorBody {
  error?: { code?: number; message?: string; error_user_title?: string; error_data?: { details?: string } };
}

export function createGraphClient(options: GraphOptions): GraphClient {
  const policy = options.retry ?? DEFAULT_RETRY;
  const http: AxiosInstance = axios.create({
    baseURL: `${options.baseUrl}/${options.apiVersion}`,
    timeout: options.timeoutMs ?? 15_000,
    headers: { Authorization: `Bearer ${options.accessToken}`, 'Content-Type': 'application/json' },
    validateStatus: () => true,
    // Never follow redirects with the bearer token attached.
    maxRedirects: 0,
  });
  const host = new URL(options.baseUrl).host;

  async function post(path: string, body: unknown): Promise<Record<string, unknown>> {
    for (let attempt = 0; ; attempt++) {
      let error: GraphError;
      let retryAfter: string | undefined;
      try {
        const response = await http.post<unknown>(path, body);
        if (response.status >= 200 && response.status < 300) {
          return (response.data ?? {}) as Record<string, unknown>;
        }
        const payload = (response.data ?? {}) as GraphErrorBody;
        const code = typeof payload.error?.code === 'number' ? payload.error.code : null;
        const retryable =
          (response.status === 429 ||
            response.status >= 500 ||
            (code !== null && RETRYABLE_CODES.has(code))) &&
          !(code !== null && PERMANENT_CODES.has(code));
        const title = (payload.error?.error_user_title ?? payload.error?.message ?? '').slice(0, 200);
        error = new GraphError('POST', host, response.status, code, title, !retryable);
        const header: unknown = response.headers['retry-after'];
        retryAfter = typeof header === 'string' ? header : undefined;
      } catch (cause) {
        // Network error or timeout: drop axios' error (its config carries the token).
        const code = axios.isAxiosError(cause) ? (cause.code ?? 'network') : 'network';
        error = new GraphError('POST', host, null, null, code, false);
      }
      if (error.permanent || attempt + 1 >= policy.attempts) throw error;
      await sleep(backoff(policy, attempt, retryAfter));
    }
  }

  const address = (to: Recipient) => (to.waId ? { to: to.waId } : { recipient: to.bsuid });

  async function send(phoneNumberId: string, to: Recipient, content: object): Promise<SendResult> {
    const data = await post(`/${encodeURIComponent(phoneNumberId)}/messages`, {
      messaging_product: 'whatsapp',
      recipient_type: 'individual',
      ...address(to),
      ...content,
    });
    const messages = data['messages'];
    const id = Array.isArray(messages) ? (messages[0] as { id?: unknown } | undefined)?.id : undefined;
    if (typeof id !== 'string' || !id) {
      throw new GraphError('POST', host, 200, null, 'response without a message id', true);
    }
    return { waMessageId: id };
  }

  return {
    dryRun: false,
    sendText: (phoneNumberId, to, text) =>
      send(phoneNumberId, to, { type: 'text', text: { preview_url: false, body: text } }),
    sendTemplate: (phoneNumberId, to, template) =>
      send(phoneNumberId, to, {
        type: 'template',
        template: {
          name: template.name,
          language: { code: template.language },
          ...(template.parameters.length
            ? {
                components: [
                  { type: 'body', parameters: template.parameters.map((text) => ({ type: 'text', text })) },
                ],
              }
            : {}),
        },
      }),
    async markRead(phoneNumberId, messageId, typing) {
      await post(`/${encodeURIComponent(phoneNumberId)}/messages`, {
        messaging_product: 'whatsapp',
        status: 'read',
        message_id: messageId,
        ...(typing ? { typing_indicator: { type: 'text' } } : {}),
      });
    },
  };
}

/** Without an access token (local development) nothing is sent: replies are recorded `not_sent`. */
export const dryRunGraphClient: GraphClient = {
  dryRun: true,
  sendText: () => Promise.resolve({ waMessageId: null }),
  sendTemplate: () => Promise.resolve({ waMessageId: null }),
  markRead: () => Promise.resolve(),
};
