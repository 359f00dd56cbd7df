// The chat-completions client (axios) for OpenAI-compatible endpoints, Azure OpenAI's /openai/v1
// and deployment (`?api-version=`) forms included. Auth: a key (`api-key` to Azure hosts, Bearer
// elsewhere), else Microsoft Entra ID for Azure hosts (@azure/identity, loaded only then), else
// none. Every failure gets exactly one retry
// (the brief: "fails or times out after one retry"): any status but 2xx, a network error, a timeout,
// an answer without text (unreadable, no choices, null or blank content, a refusal, one the content
// filter stopped), a failed Entra ID sign-in; after the endpoint's Retry-After when it gives one
// (no retry when it asks for longer than a call may take). The caller may give the retry other
// turns for a failure (`retryWith`): that is the retry then, never a third call. An answer the
// content filter stopped is never sent in part; one the token limit stopped (`finish_reason`
// `length`, Mistral's `model_length`) is an answer, marked `cut`; one an error stopped is not.
// Reasoning a model writes first (<think> tags, a lone </think>, harmony channels) is left out
// (all reasoning, the answer is none). The text is made well-formed (no lone surrogates, no control
// characters but line breaks and tabs), and an answer is read up to 4 MiB. Its errors keep method,
// host and status, never keys, tokens or prompts.
import axios, { type AxiosInstance } from 'axios';
import { z } from 'zod';
import type { AiConfig } from '../config';
import { AppError, ErrorCode } from '../errors';
import { retryAfterMs, sleep } from '../time';

export interface ChatMessage {
  readonly role: 'system' | 'user' | 'assistant';
  readonly content: string;
}

export const AiProvider = { azureOpenAi: 'azure-openai', openAiCompatible: 'openai-compatible' } as const;
export type AiProvider = (typeof AiProvider)[keyof typeof AiProvider];

export interface Completion {
  readonly text: string;
  /** The model stopped at its token limit (`finish_reason` `length`): the text ends mid-way. */
  readonly cut: boolean;
  readonly provider: AiProvider;
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly totalTokens: number;
  readonly latencyMs: number;
  /** The turns the answer was given for: those asked, or those the retry asked with. */
  readonly turns: readonly ChatMessage[];
}

/** Tokens an endpoint reported for the answers of one call (its retry included). */
export interface Usage {
  readonly model: string;
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly totalTokens: number;
}

export interface CompleteOptions {
  /**
   * The turns the one retry asks with after `error` (e.g. the history left out when the prompt was
   * too long); null or absent: the same turns again. Either way there is one retry, no more.
   */
  readonly retryWith?: (error: AiError) => readonly ChatMessage[] | null;
}

export interface AiClient {
  readonly provider: AiProvider;
  /** One call and, when it fails, exactly one retry (none only when Retry-After is too long). */
  complete(messages: readonly ChatMessage[], options?: CompleteOptions): Promise<Completion>;
}

/** What @azure/identity's credentials offer (and what tests may pass instead). */
export interface TokenSource {
  getToken(
    scope: string,
    options?: { abortSignal?: AbortSignal },
  ): Promise<{ token: string; expiresOnTimestamp: number } | null>;
}

export interface AiClientOptions {
  /** Treat the endpoint as Azure whatever its host (tests point an "Azure" endpoint at 127.0.0.1). */
  readonly azure?: boolean;
  /** The Entra ID credential; default DefaultAzureCredential (managed identity in Azure, developer sign-in locally). */
  readonly credential?: TokenSource;
  /** Pause before the one retry. */
  readonly retryDelayMs?: number;
}

export const ENTRA_SCOPE = 'https://cognitiveservices.azure.com/.default';
/** A cached Entra ID token is renewed this long before it expires. */
export const TOKEN_REFRESH_MARGIN_MS = 5 * 60_000;
const AZURE_HOST = /\.(openai\.azure\.com|cognitiveservices\.azure\.com|services\.ai\.azure\.com)$/i;

export const isAzureHost = (endpoint: string): boolean => AZURE_HOST.test(new URL(endpoint).hostname);

export class AiError extends AppError {
  constructor(
    readonly host: string,
    /** HTTP status, or null for a network error or timeout. */
    readonly status: number | null,
    /** `http`, `timeout`, `network`, `auth` or `bad_response`. */
    readonly reason: 'http' | 'timeout' | 'network' | 'auth' | 'bad_response',
    /** The endpoint's error code for an HTTP error (`content_filter`, …), else the network's. */
    readonly detail = '',
    /** How long the endpoint asked to wait before trying again (Retry-After), if it said. */
    readonly retryAfterMs: number | null = null,
    /**
     * The tokens the call used although it failed (an answer the content filter stopped, one
     * without text, a first attempt before the retry): they count in the stats all the same.
     */
    public usage: Usage | null = null,
  ) {
    super(
      ErrorCode.UPSTREAM_FAILED,
      `AI POST ${host} failed: ${status ?? reason}${detail ? ` ${detail}` : ''}`.trim(),
    );
  }

  /**
   * The endpoint refused the prompt itself (Azure OpenAI's content filter: HTTP 400, code
   * `content_filter`; OpenRouter's moderation: HTTP 403 with the flagged input's `reasons`): any
   * call whose context holds the same message fails the same way.
   */
  get promptFiltered(): boolean {
    return (this.status === 400 || this.status === 403) && this.detail === 'content_filter';
  }

  /**
   * The prompt is longer than the model's context window (OpenAI and Azure OpenAI: HTTP 400,
   * code `context_length_exceeded`): the same call fails again; a shorter one may not.
   */
  get contextTooLong(): boolean {
    return this.status === 400 && (this.detail === 'context_length_exceeded' || this.saysContextTooLong);
  }

  /**
   * The same refusal in words only, from servers that give no such code (`code` the number 400):
   * vLLM ("This model's maximum context length is 4096 tokens and your request has …") and
   * llama.cpp's server ("the request exceeds the available context size"). Set from the error's
   * message, which is otherwise never kept.
   */
  saysContextTooLong = false;

  /**
   * The endpoint's chat template takes only turns whose roles alternate (Mistral or Llama served by
   * vLLM: HTTP 400 "After the optional system message, conversation roles must alternate
   * user/assistant/user/assistant/...", vllm-project/vllm#6862): the same turns, merged so that they
   * alternate, may pass. Set from the error's message, which is otherwise never kept.
   */
  rolesMustAlternate = false;

  /**
   * The model takes no system turn (HTTP 400): OpenAI's o1-mini and o1-preview ("Unsupported value:
   * 'messages[0].role' does not support 'system' with this model.", code `unsupported_value`,
   * microsoft/agent-framework#1077), Gemma's chat template on vLLM ("System role not supported",
   * vllm-project/vllm#2964): the same turns with the system prompt given in the first user turn may
   * pass. Set from the error's message, which is otherwise never kept.
   */
  systemRoleRefused = false;

  /**
   * The account may spend no more (HTTP 402 Payment Required: OpenRouter's insufficient credits;
   * OpenAI: HTTP 429, `error.type` `insufficient_quota`, `error.code`
   * `insufficient_quota`, `credit_balance_exhausted`, `*_spend_limit_exceeded` or
   * `*_usage_limit_exceeded`; platform.openai.com/docs/guides/error-codes: retrying does not bring
   * access back, only credits or a higher limit do). Not a rate limit: every call fails until an
   * operator acts.
   */
  quotaExhausted = false;

  /**
   * No such model, said with HTTP 400 rather than 404: OpenRouter ("x is not a valid model ID"),
   * LiteLLM's proxy ("Invalid model name passed in model=x", BerriAI/litellm#9663). Set from the
   * error's message, which is otherwise never kept.
   */
  saysNoSuchModel = false;

  /**
   * A failure an operator must fix, that every answer meets until then: refused credentials (401,
   * 403, a failed Entra ID sign-in), no such deployment or model (404: Azure `DeploymentNotFound`,
   * OpenAI `model_not_found`, a wrong path), the account's quota used up (`quotaExhausted`).
   */
  get configurationProblem(): 'credentials' | 'not_found' | 'quota' | null {
    if (this.promptFiltered) return null;
    if (this.reason === 'auth' || this.status === 401 || this.status === 403) return 'credentials';
    if (this.status === 404 || this.saysNoSuchModel) return 'not_found';
    return this.quotaExhausted ? 'quota' : null;
  }
}

/** An endpoint's refusal of a prompt longer than the model's context window, in its words. */
const CONTEXT_TOO_LONG = /maximum context length is|exceeds the available context size/i;

/** An endpoint's refusal of turns whose roles do not alternate, in its words. */
const ROLES_MUST_ALTERNATE = /roles must alternate|must alternate between/i;

/** An endpoint's answer that it has no such model, in its words. */
const NO_SUCH_MODEL = /is not a valid model ID|Invalid model name passed in/i;

/** An endpoint's refusal of the system turn, in its words. */
const SYSTEM_ROLE_REFUSED = /does not support 'system'|system role not supported/i;

/**
 * The URL chat completions are posted to: the endpoint's path and `/chat/completions`, its query
 * kept. Azure OpenAI's deployment form takes its `api-version` there
 * (`https://<resource>.openai.azure.com/openai/deployments/<deployment>?api-version=2024-10-21`,
 * learn.microsoft.com/azure/ai-foundry/openai/reference), and the Target URI the Foundry portal
 * shows for a deployment is the whole URL, `/chat/completions` included: taken as it is, not doubled.
 */
export function chatCompletionsUrl(endpoint: string): string {
  const url = new URL(endpoint);
  const path = url.pathname.replace(/\/+$/, '');
  url.pathname = /\/chat\/completions$/i.test(path) ? path : `${path}/chat/completions`;
  url.hash = '';
  return url.toString();
}

/** A token count as the endpoint gave it; anything but a count (null, a string) is no count. */
const tokens = () => z.number().int().nonnegative().optional().catch(undefined);

// Only the choice is the answer: the model name and the usage are bookkeeping, and an endpoint that
// gives them oddly (null, strings: "OpenAI-compatible" servers vary) must not cost the user the
// answer. Missing or unreadable, the configured model stands in and the usage counts what it can.
// They are read on their own, so that an answer without a readable choice (none, or content that
// is not text) still counts the tokens its endpoint reported.
const BookkeepingSchema = z.object({
  model: z.string().optional().catch(undefined),
  usage: z
    .object({ prompt_tokens: tokens(), completion_tokens: tokens(), total_tokens: tokens() })
    .passthrough()
    .nullish()
    .catch(null),
});
const ResponseSchema = BookkeepingSchema.extend({
  choices: z
    .array(
      z
        .object({
          // Text, or (some OpenAI-compatible servers: Mistral's reasoning models) a list of parts.
          message: z.object({ content: z.union([z.string(), z.array(z.unknown())]).nullish() }).passthrough(),
          finish_reason: z.string().nullish(),
          // OpenRouter: an error the model met after it began answering (the status is then 200).
          error: z.unknown().optional(),
        })
        .passthrough(),
    )
    .min(1),
});

/**
 * The text of an answer's content: the string, or the `text` of its parts of type `text` in order
 * (the other parts, such as a reasoning model's `thinking`, are not the answer).
 */
function textOf(content: string | readonly unknown[] | null | undefined): string {
  if (typeof content === 'string') return content;
  if (!content) return '';
  return content
    .map((part) =>
      part !== null && typeof part === 'object' && (part as { type?: unknown }).type === 'text'
        ? (part as { text?: unknown }).text
        : undefined,
    )
    .filter((text): text is string => typeof text === 'string')
    .join('');
}

/** The tokens of two attempts of one call (the model named by the later one). */
function addUsage(a: Usage | null, b: Usage | null): Usage | null {
  if (!a || !b) return a ?? b;
  return {
    model: b.model,
    promptTokens: a.promptTokens + b.promptTokens,
    completionTokens: a.completionTokens + b.completionTokens,
    totalTokens: a.totalTokens + b.totalTokens,
  };
}

/** The most of an answer read (a long answer is a few hundred KiB). */
export const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

/** Lone surrogates (not valid Unicode: WhatsApp and the database would garble them). */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
/**
 * Control characters (Unicode's Cc: C0, DEL and C1) a chat message has no use for (NUL among
 * them); tabs and line breaks (`\n`, `\r`) stay, as in an operator's text (shared/manage/schemas.ts).
 */
const CONTROL = /[^\P{Cc}\t\n\r]/gu;

/**
 * The reasoning a model writes before its answer, in <think> tags (DeepSeek-R1 on Azure AI Foundry,
 * models served by vLLM or Ollama without a reasoning parser): never for the user. Only at the
 * start, one block or more; one never closed (the token limit stopped it) is all reasoning.
 */
const REASONING = /^(?:\s*<think>(?:[\s\S]*?<\/think>|[\s\S]*$))+/;
const THINK_OPEN = '<think>';
const THINK_CLOSE = '</think>';
/**
 * gpt-oss's harmony format when the server leaves it unparsed (a GGUF on llama.cpp's server:
 * johnbean393/Sidekick#75): `<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>answer`.
 */
const HARMONY = /^\s*<\|(?:start|channel)\|>/;
const HARMONY_FINAL = '<|channel|>final<|message|>';
const HARMONY_END = /<\|(?:end|return)\|>\s*$/;

/**
 * The answer a model's content holds, its reasoning left out: leading <think> blocks; everything
 * up to a `</think>` with no `<think>` before it (DeepSeek-R1's chat template writes the opening tag
 * into the prompt, so vLLM without a reasoning parser returns only the closing one:
 * vllm-project/vllm#13125, deepseek-ai/DeepSeek-R1#506); harmony's channels but the final one
 * (none: all reasoning).
 */
export function withoutReasoning(content: string): string {
  if (HARMONY.test(content)) {
    const final = content.lastIndexOf(HARMONY_FINAL);
    return final < 0 ? '' : content.slice(final + HARMONY_FINAL.length).replace(HARMONY_END, '');
  }
  if (REASONING.test(content)) return content.replace(REASONING, '');
  const close = content.indexOf(THINK_CLOSE);
  const open = content.indexOf(THINK_OPEN);
  return close >= 0 && (open < 0 || open > close) ? content.slice(close + THINK_CLOSE.length) : content;
}

/** A model's text as a message can carry it. */
export const wellFormed = (text: string): string =>
  text.replace(LONE_SURROGATE, '\uFFFD').replace(CONTROL, '');

/**
 * `retry-after-ms` (Azure OpenAI), else `retry-after` (seconds or an HTTP date); null when absent or
 * unreadable.
 */
function retryAfter(headers: Record<string, unknown>): number | null {
  const ms = headers['retry-after-ms'];
  if (typeof ms === 'string' && /^\d+(\.\d+)?$/.test(ms.trim())) return Math.ceil(Number(ms));
  return retryAfterMs(headers['retry-after']);
}

const ErrorBodySchema = z
  .object({ error: z.object({ code: z.unknown().optional(), type: z.unknown().optional() }).passthrough() })
  .passthrough();

/** OpenAI's words for an account that may spend no more, in `error.type` or `error.code`. */
const QUOTA_EXHAUSTED =
  /^(insufficient_quota|credit_balance_exhausted|\w+_spend_limit_exceeded|\w+_usage_limit_exceeded)$/;

/** OpenRouter's moderation refusal: HTTP 403, `error.metadata.reasons` (a list). */
function flaggedByModeration(status: number, error: Record<string, unknown> | null): boolean {
  const metadata = error?.['metadata'];
  return (
    status === 403 &&
    typeof metadata === 'object' &&
    metadata !== null &&
    Array.isArray((metadata as Record<string, unknown>)['reasons'])
  );
}

/** The error message of an answer: `error.message` (OpenAI, Azure), else a top-level `message` (vLLM). */
function errorMessage(data: unknown): string {
  if (typeof data !== 'object' || data === null) return '';
  const record = data as Record<string, unknown>;
  const error = record['error'];
  const nested =
    typeof error === 'object' && error !== null ? (error as Record<string, unknown>)['message'] : undefined;
  const message = typeof nested === 'string' ? nested : record['message'];
  return typeof message === 'string' ? message.slice(0, 1000) : '';
}

/** Lazily created DefaultAzureCredential; it reads AZURE_CLIENT_ID (user-assigned identity) itself. */
async function defaultCredential(): Promise<TokenSource> {
  const { DefaultAzureCredential } = await import('@azure/identity');
  return new DefaultAzureCredential();
}

export function createAiClient(config: AiConfig, options: AiClientOptions = {}): AiClient {
  const host = new URL(config.endpoint).host;
  const target = chatCompletionsUrl(config.endpoint);
  const azure = options.azure ?? isAzureHost(config.endpoint);
  const provider: AiProvider = azure ? AiProvider.azureOpenAi : AiProvider.openAiCompatible;
  const retryDelayMs = options.retryDelayMs ?? 500;
  const http: AxiosInstance = axios.create({
    timeout: config.timeoutMs,
    headers: { 'Content-Type': 'application/json' },
    validateStatus: () => true,
    // Never follow redirects with a key or token attached.
    maxRedirects: 0,
    maxContentLength: MAX_RESPONSE_BYTES,
  });

  const keyHeaders: Record<string, string> | null = config.apiKey
    ? azure
      ? { 'api-key': config.apiKey }
      : { Authorization: `Bearer ${config.apiKey}` }
    : null;
  const entra = !config.apiKey && azure;

  let credential: Promise<TokenSource> | undefined;
  let cached: { token: string; expiresOnTimestamp: number } | undefined;
  let pending: Promise<string> | undefined;

  /** `work`'s outcome, or a timeout AiError once `signal` aborts first. */
  function beforeAbort<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timedOut = () => reject(new AiError(host, null, 'timeout', ''));
      if (signal.aborted) return timedOut();
      signal.addEventListener('abort', timedOut, { once: true });
      work.then(resolve, reject).finally(() => signal.removeEventListener('abort', timedOut));
    });
  }

  async function entraToken(): Promise<string> {
    if (cached && Date.now() < cached.expiresOnTimestamp - TOKEN_REFRESH_MARGIN_MS) return cached.token;
    // One request at a time: concurrent callers share it.
    pending ??= (async () => {
      try {
        credential ??= options.credential ? Promise.resolve(options.credential) : defaultCredential();
        const source = await credential;
        // Bounded (the credential may not heed the signal), so that a sign-in that hangs is not
        // the one every later call waits on.
        const signal = AbortSignal.timeout(config.timeoutMs);
        const token = await beforeAbort(source.getToken(ENTRA_SCOPE, { abortSignal: signal }), signal);
        if (!token) throw new AiError(host, null, 'auth', 'no Entra ID token');
        cached = { token: token.token, expiresOnTimestamp: token.expiresOnTimestamp };
        return token.token;
      } catch (cause) {
        // A failed credential (or import) is built afresh next time.
        credential = undefined;
        if (cause instanceof AiError) throw cause;
        // The credential's message may name tenants or endpoints but never a token; keep it short.
        const name = cause instanceof Error ? cause.name : 'error';
        throw new AiError(host, null, 'auth', `Entra ID: ${name}`);
      } finally {
        pending = undefined;
      }
    })();
    return pending;
  }

  /** The call's auth headers; an Entra ID sign-in counts in the call's time limit (`signal`). */
  async function headers(signal: AbortSignal): Promise<Record<string, string>> {
    if (keyHeaders) return keyHeaders;
    if (!entra) return {};
    return { Authorization: `Bearer ${await beforeAbort(entraToken(), signal)}` };
  }

  async function attempt(body: unknown): Promise<unknown> {
    // `timeout` is an idle timeout in Node; the signal bounds the whole call, sign-in included.
    const signal = AbortSignal.timeout(config.timeoutMs);
    let response;
    try {
      response = await http.post<unknown>(target, body, {
        headers: await headers(signal),
        signal,
      });
    } catch (cause) {
      if (cause instanceof AiError) throw cause;
      // Drop axios' error: its config carries the key or token.
      const code = axios.isAxiosError(cause) ? cause.code : undefined;
      const timedOut = code === 'ECONNABORTED' || code === 'ETIMEDOUT' || code === 'ERR_CANCELED';
      // ERR_BAD_RESPONSE: an answer cut off, or over MAX_RESPONSE_BYTES.
      const reason = timedOut ? 'timeout' : code === 'ERR_BAD_RESPONSE' ? 'bad_response' : 'network';
      throw new AiError(host, null, reason, timedOut ? '' : (code ?? ''));
    }
    if (response.status >= 200 && response.status < 300) return response.data;
    const parsed = ErrorBodySchema.safeParse(response.data);
    // OpenRouter refuses a prompt its moderation flagged with HTTP 403 and `error.metadata` giving
    // `reasons` and `flagged_input` (openrouter.ai/docs/api-reference/errors): Azure's content filter
    // in other words, not a refused key.
    const code = flaggedByModeration(response.status, parsed.success ? parsed.data.error : null)
      ? 'content_filter'
      : parsed.success && typeof parsed.data.error.code === 'string'
        ? parsed.data.error.code.slice(0, 60)
        : '';
    if (response.status === 401 || response.status === 403) cached = undefined;
    const error = new AiError(host, response.status, 'http', code, retryAfter(response.headers));
    const said = response.status === 400 ? errorMessage(response.data) : '';
    error.rolesMustAlternate = ROLES_MUST_ALTERNATE.test(said);
    error.saysContextTooLong = CONTEXT_TOO_LONG.test(said);
    error.systemRoleRefused = SYSTEM_ROLE_REFUSED.test(said);
    error.saysNoSuchModel = NO_SUCH_MODEL.test(said);
    // 402: OpenRouter's "insufficient credits" (openrouter.ai/docs/api-reference/errors).
    error.quotaExhausted =
      response.status === 402 ||
      (response.status === 429 &&
        parsed.success &&
        [parsed.data.error.code, parsed.data.error.type].some(
          (v) => typeof v === 'string' && QUOTA_EXHAUSTED.test(v),
        ));
    throw error;
  }

  /** One request and its answer's text; an answer without text is a failure. */
  async function answer(body: unknown) {
    const data = await attempt(body);
    const parsed = ResponseSchema.safeParse(data);
    // The bookkeeping is read alone only when there is no readable choice.
    const bookkeeping = parsed.success ? parsed : BookkeepingSchema.safeParse(data);
    const usage = bookkeeping.success ? usageOf(bookkeeping.data) : null;
    // Azure OpenAI: a filtered answer has no content, or rarely the part before the filter cut it.
    const choice = parsed.success ? parsed.data.choices[0] : undefined;
    if (choice?.finish_reason === 'content_filter')
      throw new AiError(host, 200, 'bad_response', 'answer stopped by the content filter', null, usage);
    // An error stopped the answer (`finish_reason` `error`: Mistral, docs.mistral.ai/api; OpenRouter,
    // which also sets the choice's `error`, openrouter.ai/docs/api-reference/errors: "any error
    // occurred while the LLM is producing the output will be emitted in the response body"): what
    // it holds is a part at best, never sent as if whole.
    if (choice && (choice.finish_reason === 'error' || (choice.error !== undefined && choice.error !== null)))
      throw new AiError(host, 200, 'bad_response', 'answer stopped by an error', null, usage);
    const text = parsed.success
      ? wellFormed(withoutReasoning(textOf(parsed.data.choices[0]?.message.content))).trim()
      : '';
    if (!parsed.success || !text)
      throw new AiError(host, 200, 'bad_response', 'no answer in the response', null, usage);
    // `model_length`: Mistral's for an answer the model's context length stopped (docs.mistral.ai/api).
    const cut = choice?.finish_reason === 'length' || choice?.finish_reason === 'model_length';
    return { text, cut, usage, model: parsed.data.model || config.model };
  }

  /** The tokens an answer reports (none when it reports no usage). */
  function usageOf(response: z.infer<typeof BookkeepingSchema>): Usage | null {
    const usage = response.usage;
    if (!usage) return null;
    const promptTokens = usage.prompt_tokens ?? 0;
    const completionTokens = usage.completion_tokens ?? 0;
    return {
      model: response.model || config.model,
      promptTokens,
      completionTokens,
      totalTokens: usage.total_tokens ?? promptTokens + completionTokens,
    };
  }

  /**
   * `stream: false` said, not left to the default: some OpenAI-compatible servers and proxies stream
   * Server-Sent Events when it is omitted (unslothai/unsloth#5047, decolua/9router#4122), an answer
   * this client cannot read. OpenAI's reference: `stream` defaults to false.
   */
  const requestBody = (turns: readonly ChatMessage[]) => ({
    model: config.model,
    messages: turns,
    stream: false,
  });

  return {
    provider,
    async complete(messages, { retryWith } = {}) {
      const started = Date.now();
      let turns = messages;
      let answered: Awaited<ReturnType<typeof answer>>;
      // The tokens of a first attempt that failed: the call's usage includes them.
      let spent: Usage | null = null;
      try {
        answered = await answer(requestBody(turns));
      } catch (error) {
        if (!(error instanceof AiError)) throw error;
        // Asked to wait longer than a call may take: the retry would only be refused again.
        if ((error.retryAfterMs ?? 0) > config.timeoutMs) throw error;
        spent = error.usage;
        const other = retryWith?.(error) ?? null;
        // Other turns are asked at once (the endpoint answered: it refused these turns), the
        // same ones after a pause or the endpoint's Retry-After (here at most AI_TIMEOUT_MS).
        await sleep(Math.max(other ? 0 : retryDelayMs, error.retryAfterMs ?? 0));
        turns = other ?? messages;
        try {
          answered = await answer(requestBody(turns));
        } catch (again) {
          if (again instanceof AiError) again.usage = addUsage(spent, again.usage);
          throw again;
        }
      }
      const { text, cut, usage, model } = answered;
      const total = addUsage(spent, usage);
      return {
        text,
        cut,
        provider,
        model,
        promptTokens: total?.promptTokens ?? 0,
        completionTokens: total?.completionTokens ?? 0,
        totalTokens: total?.totalTokens ?? 0,
        // Latency of the whole call, the retry included.
        latencyMs: Date.now() - started,
        turns,
      };
    },
  };
}
