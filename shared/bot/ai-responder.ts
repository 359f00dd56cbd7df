// The AI responder: composes the reply to one message with a model: per-user rate limit (one notice, then silence for the minute), the
// context (system prompt, recent conversation since the last reset, the new message described in
// words), the call, and on failure a short apology with the failure recorded.
import type { AiConfig } from '../config';
import type { DataStore, Message, MessageRole, User } from '../data';
import { pseudonym, type Logger } from '../log';
import { AiError, createAiClient, type AiClient, type AiClientOptions, type ChatMessage } from '../ai/client';
import { aiWindow, type AiResponder, type ReplyContent } from './ports';
import { characters } from '../whatsapp/outbound';
import { markCut } from './split';
import { toWhatsApp } from './whatsapp-format';
import { AI_APOLOGY, RATE_LIMIT_NOTICE } from './texts';

export interface AiResponderDeps {
  readonly config: AiConfig;
  readonly data: Pick<DataStore, 'messages'>;
  readonly now: () => Date;
  /** A ready client (tests); otherwise one is built from the config. */
  readonly client?: AiClient;
  readonly clientOptions?: AiClientOptions;
}

const MINUTE_MS = 60_000;
/** The failure recorded on a message whose prompt the endpoint's content filter refused. */
export const PROMPT_FILTERED = 'content_filter';
/**
 * The most characters (Unicode code points) of conversation one call carries: the history turns
 * and the new message together, the system prompt not counted. `AI_HISTORY_LIMIT` counts
 * messages, and a message may hold 65,536 characters: without this bound ten long ones would make
 * a request of 650,000 characters (and tokens to match) for every answer.
 */
export const AI_CONTEXT_MAX_CHARS = 100_000;
/** What is logged, at error level, for a failure every answer meets until an operator fixes it. */
const CONFIGURATION_PROBLEM = {
  credentials:
    'ai failed: the AI endpoint refused AI_API_KEY, or the Microsoft Entra ID sign-in used when it is unset failed, a configuration problem: every AI answer fails until it is fixed',
  not_found:
    'ai failed: the AI endpoint has no such deployment or model (HTTP 404, or a 400 saying so): AI_ENDPOINT or AI_MODEL is wrong, a configuration problem: every AI answer fails until it is fixed',
  quota:
    "ai failed: the AI endpoint says the account's quota or spending limit is used up (HTTP 402, or 429 insufficient_quota), a billing problem: every AI answer fails until it is fixed",
} as const;

/** What joins two turns of one role merged into one (`alternating`). */
const TURN_JOIN = '\n\n';
/** Extra messages read beyond the context and the rate limit (later waiting ones, commands). */
const SLACK = 20;

const LABEL = /^\[([^\]]+)\]\s*/;
/** What an operator's message is given to the model with: a person wrote it, not the model. */
export const OPERATOR_PREFIX = '(A human agent wrote:) ';

/**
 * A message as the model reads it: its text, or a non-text message described in words; what an
 * operator wrote is marked as a human agent's (the model must not take it for its own words, nor
 * the user's).
 */
export function describeForModel(
  message: Pick<Message, 'type' | 'text' | 'direction'> & { readonly role?: MessageRole },
): string {
  if (message.direction === 'outbound')
    return message.role === 'operator' ? `${OPERATOR_PREFIX}${message.text}` : message.text;
  const detail = message.text.replace(LABEL, '').trim();
  const quoted = detail ? `: ${detail}` : '';
  // A medium's text is its caption, else its description ("[image]"; "[image] caption" as
  // earlier versions stored it).
  const described = message.text.startsWith(`[${message.type}]`);
  const caption = described ? detail : message.text.trim();
  switch (message.type) {
    case 'text':
      return message.text;
    case 'image':
      return caption
        ? `(The user sent an image with the caption: ${caption})`
        : '(The user sent an image without a caption.)';
    case 'video':
      return caption
        ? `(The user sent a video with the caption: ${caption})`
        : '(The user sent a video without a caption.)';
    case 'audio':
      return message.text.startsWith('[voice')
        ? '(The user sent a voice message, which you cannot listen to.)'
        : '(The user sent an audio file, which you cannot listen to.)';
    case 'document':
      return described
        ? `(The user sent a document${quoted})`
        : `(The user sent a document with the caption: ${caption})`;
    case 'sticker':
      return '(The user sent a sticker.)';
    case 'location':
      return `(The user shared a location${quoted})`;
    case 'contacts':
      return `(The user shared a contact${quoted})`;
    case 'order':
      return `(The user placed an order${quoted})`;
    case 'interactive':
      // Stored as the chosen title (which may itself begin with brackets: "[A] Monday"), or
      // labelled: a flow's answers, a product sent from the catalog.
      if (message.text.startsWith('[flow]')) return `(The user submitted a form${quoted})`;
      if (message.text.startsWith('[product]')) return `(The user sent a product from the catalog${quoted})`;
      return `(The user chose: ${message.text})`;
    case 'button':
      return `(The user tapped the button: ${message.text})`;
    default:
      return message.text;
  }
}

/**
 * The history in the order of its exchanges: each answer right after the message it answers. On
 * our clock a burst's messages are all stored before the first of their answers is sent (b1 b2 b3
 * a1 a2 a3); read that way the model sees questions, then answers to questions it must pair up
 * itself, and the history limit cuts the questions first, leaving answers to messages it is not
 * shown. An answer whose message is not among the rows (older) stays where it is.
 */
export function inExchanges(history: readonly Message[]): Message[] {
  const asked = new Set(history.filter((m) => m.direction === 'inbound').map((m) => m.id));
  const answers = new Map<string, Message[]>();
  const answersAsked = (m: Message): m is Message & { relatedId: string } =>
    m.direction === 'outbound' && m.relatedId !== null && asked.has(m.relatedId);
  for (const m of history)
    if (answersAsked(m)) answers.set(m.relatedId, [...(answers.get(m.relatedId) ?? []), m]);
  const ordered: Message[] = [];
  for (const m of history) {
    if (answersAsked(m)) continue;
    ordered.push(m);
    if (m.direction === 'inbound') ordered.push(...(answers.get(m.id) ?? []));
  }
  return ordered;
}

const EDITED = /^\[edited\]\s*/;

/**
 * The history as the user left it: a message they deleted for everyone (`revoke`) is left out,
 * and the answer to it with it (it would stand for a question the model is not shown); a message
 * they edited reads its latest edit's text. Only what the model is given changes: the stored
 * messages stay as they came. An edit whose new content the bot cannot read keeps the text before.
 */
export function asLeft(rows: readonly Message[]): Message[] {
  const deleted = new Set<string>();
  const edited = new Map<string, string>();
  for (const m of rows) {
    if (m.direction !== 'inbound' || m.relatedId === null) continue;
    if (m.type === 'revoke') deleted.add(m.relatedId);
    else if (m.type === 'edit' && EDITED.test(m.text)) {
      const text = m.text.replace(EDITED, '');
      if (text) edited.set(m.relatedId, text);
    }
  }
  const out: Message[] = [];
  for (const m of rows) {
    if (m.type === 'edit' || m.type === 'revoke') continue;
    if (m.direction === 'inbound' ? deleted.has(m.id) : m.relatedId !== null && deleted.has(m.relatedId))
      continue;
    const text = m.direction === 'inbound' ? edited.get(m.id) : undefined;
    out.push(text === undefined ? m : { ...m, text });
  }
  return out;
}

/**
 * One inbound message as the user left it by what `rows` hold of its edits and deletion (the
 * rules of `asLeft`): null when they deleted it for everyone, else with its latest edit's text.
 */
export function leftAs(message: Message, rows: readonly Message[]): Message | null {
  const changes = rows.filter(
    (m) =>
      m.direction === 'inbound' && m.relatedId === message.id && (m.type === 'edit' || m.type === 'revoke'),
  );
  return changes.length ? (asLeft([message, ...changes])[0] ?? null) : message;
}

/** The history as chat turns; the parts of one long answer become one assistant turn. */
export function toTurns(history: readonly Message[]): ChatMessage[] {
  const turns: ChatMessage[] = [];
  let lastAnswerOf: string | null = null;
  for (const m of history) {
    const content = describeForModel(m);
    const previous = turns[turns.length - 1];
    if (
      m.direction === 'outbound' &&
      previous?.role === 'assistant' &&
      m.relatedId &&
      m.relatedId === lastAnswerOf
    ) {
      turns[turns.length - 1] = { role: 'assistant', content: `${previous.content}\n${content}` };
      continue;
    }
    turns.push({ role: m.direction === 'inbound' ? 'user' : 'assistant', content });
    lastAnswerOf = m.direction === 'outbound' ? m.relatedId : null;
  }
  return turns;
}

/**
 * The turns with roles that alternate, for an endpoint whose chat template demands it (Mistral or
 * Llama served by vLLM answer 400 "After the optional system message, conversation roles must
 * alternate user/assistant/user/assistant/...", e.g. for system, user, user:
 * vllm-project/vllm#6862; OpenAI takes either, and is given each message as its own turn): turns
 * of one role in a row become one (a blank line between them), and an assistant turn right after
 * the system prompt (an answer whose message the limit cut) is left out. The last turn, the message
 * being answered, stays the user's. Used only when the endpoint refused the turns as they are.
 */
export function alternating(turns: readonly ChatMessage[]): ChatMessage[] {
  const out: ChatMessage[] = [];
  for (const turn of turns) {
    const previous = out[out.length - 1];
    if (turn.role === 'assistant' && (!previous || previous.role === 'system')) continue;
    if (previous && previous.role === turn.role && turn.role !== 'system')
      out[out.length - 1] = { role: turn.role, content: `${previous.content}${TURN_JOIN}${turn.content}` };
    else out.push(turn);
  }
  return out;
}

/**
 * The turns for a model that takes no system turn (o1-mini; Gemma's template on vLLM: "System role
 * not supported", vllm-project/vllm#2964): the system prompt leads the first user turn, joined by a
 * blank line, and the roles alternate (`alternating`: Gemma's template demands that too, and this is
 * the one retry). Used only when the endpoint refused the system turn.
 */
export function withoutSystemTurn(turns: readonly ChatMessage[]): ChatMessage[] {
  const strict = alternating(turns);
  const system = strict.filter((turn) => turn.role === 'system').map((turn) => turn.content);
  const rest = strict.filter((turn) => turn.role !== 'system');
  const first = rest.findIndex((turn) => turn.role === 'user');
  if (!system.length || first < 0) return rest;
  const lead = system.join(TURN_JOIN);
  return rest.map((turn, i) =>
    i === first ? { role: 'user', content: `${lead}${TURN_JOIN}${turn.content}` } : turn,
  );
}

/**
 * The conversation within `maxChars`: the new message always (cut to `maxChars` when longer, never
 * inside a character), then the history turns from the newest back while they fit; the first that
 * does not fit is dropped with every older one, so what is given is the latest stretch of the
 * conversation, whole turns only. Each history turn counts with the blank line that would join it
 * to the next (`alternating`), so the bound holds for the turns merged as well.
 */
export function withinBudget(
  history: readonly ChatMessage[],
  current: ChatMessage,
  maxChars = AI_CONTEXT_MAX_CHARS,
): ChatMessage[] {
  const points = Array.from(current.content);
  const last =
    points.length > maxChars ? { ...current, content: points.slice(0, maxChars).join('') } : current;
  let left = maxChars - Math.min(points.length, maxChars);
  let first = history.length;
  while (first > 0) {
    const size = characters(history[first - 1]!.content) + TURN_JOIN.length;
    if (size > left) break;
    left -= size;
    first--;
  }
  return [...history.slice(first), last];
}

/**
 * An answer as it is sent and stored: in WhatsApp's formatting, not the model's Markdown (split
 * into messages afterwards, by the reply worker). An answer that would be left blank (nothing but
 * a horizontal rule, say) is sent as the model wrote it.
 */
export function asSent(text: string): string {
  const converted = toWhatsApp(text);
  return converted.trim() ? converted : text;
}

export function createAiResponder(deps: AiResponderDeps): AiResponder {
  const { config, data, now } = deps;
  const client = deps.client ?? createAiClient(config, deps.clientOptions);
  const afterReset = (user: User) => (m: Message) => !user.contextResetAt || m.seqAt > user.contextResetAt;
  const inContext = (user: User, message: Message) => (m: Message) =>
    m.id !== message.id &&
    // The conversation with the bot, and what operators wrote in it (`describeForModel`).
    (m.role === 'conversation' || m.role === 'operator') &&
    afterReset(user)(m) &&
    !(m.direction === 'inbound' && (m.replyState === 'pending' || m.replyState === 'sending')) &&
    // An answer the user never got (Graph refused it, or a status reported it failed): the model
    // must not build on what it believes it said.
    !(m.direction === 'outbound' && m.status === 'failed') &&
    // A message the content filter refused: kept, it would fail every call after it.
    !(m.direction === 'inbound' && m.error?.code === PROMPT_FILTERED);

  /**
   * The conversation since the last reset among `rows`. An answer belongs where the message it
   * answers is: one sent after a reset arrived (it was being prepared) to a message from before it
   * is left out too, so it is kept only when its message is among the rows after the reset (an
   * answer whose message is older than the rows is left out as well: at the oldest end, rarely).
   * An operator's message answers none: it is kept when it was sent after the reset.
   */
  function since(user: User, message: Message, rows: readonly Message[]): Message[] {
    const kept = asLeft(rows).filter(inContext(user, message));
    if (!user.contextResetAt) return kept;
    const asked = new Set(
      rows.filter((m) => m.direction === 'inbound' && afterReset(user)(m)).map((m) => m.id),
    );
    return kept.filter(
      (m) =>
        m.direction === 'inbound' ||
        m.role === 'operator' ||
        (m.relatedId !== null && asked.has(m.relatedId)),
    );
  }

  /** The context: from the worker's read when it holds enough, else one indexed query. */
  async function context(
    user: User,
    message: Message,
    recent: readonly Message[],
    partial: boolean,
  ): Promise<ChatMessage[]> {
    let history = config.historyLimit > 0 ? since(user, message, recent) : [];
    if (config.historyLimit > 0 && partial && history.length < config.historyLimit) {
      // Up to now (an answer to an earlier message may be stamped after this message's Meta
      // timestamp), leaving out later messages still waiting for their answer.
      const rows = await data.messages.conversationBefore(
        user.id,
        now(),
        message.id,
        user.contextResetAt,
        config.historyLimit + SLACK,
      );
      history = since(user, message, rows);
    }
    return [
      { role: 'system', content: config.systemPrompt },
      ...withinBudget(toTurns(inExchanges(history).slice(-config.historyLimit)), {
        role: 'user',
        content: describeForModel(message),
      }),
    ];
  }

  /**
   * The turns the one retry asks with when the first call's failure says these turns cannot pass:
   * without a system turn when the model takes none (see `withoutSystemTurn`); merged so that their
   * roles alternate when the endpoint demands it (see `alternating`); the
   * message alone when the history made the prompt longer than the model takes (kept, it would
   * fail every later message the same way). Null: the same turns again. Either is the retry.
   */
  function retryWith(turns: readonly ChatMessage[], message: Message, log: Logger) {
    return (error: AiError): ChatMessage[] | null => {
      if (error.systemRoleRefused && turns.some((turn) => turn.role === 'system')) {
        log.warn('ai system turn refused, asking with the system prompt in the first user turn', {
          id: message.id,
          turns: turns.length,
        });
        return withoutSystemTurn(turns);
      }
      if (error.rolesMustAlternate) {
        const strict = alternating(turns);
        if (strict.length === turns.length) return null;
        log.warn('ai roles must alternate, asking with the turns merged', {
          id: message.id,
          turns: turns.length,
        });
        return strict;
      }
      if (error.contextTooLong && turns.length > 2) {
        log.warn('ai context too long, asking with the message alone', {
          id: message.id,
          turns: turns.length,
        });
        return [turns[0]!, turns[turns.length - 1]!];
      }
      return null;
    };
  }

  /**
   * Model calls (an answer, or the apology for a failed call: a broken or slow endpoint is asked
   * no more often than one that answers) and rate-limit notices of the last minute: counted in the
   * worker's read when it covers the minute, else by the database in the same two counts.
   */
  async function lastMinute(user: User, recent: readonly Message[], partial: boolean) {
    const since = new Date(now().getTime() - MINUTE_MS);
    const oldest = recent[0];
    if (partial && (!oldest || oldest.createdAt >= since)) {
      const [answers, notices] = await Promise.all([
        data.messages.countOutboundSince(user.id, since, { ai: true, orNotice: AI_APOLOGY }),
        data.messages.countOutboundSince(user.id, since, { text: RATE_LIMIT_NOTICE }),
      ]);
      return { answers, notices };
    }
    const outbound = recent.filter((m) => m.direction === 'outbound' && m.createdAt >= since);
    const notice = (text: string) => (m: Message) => m.role === 'notice' && m.text === text;
    return {
      answers: outbound.filter((m) => m.ai !== null || notice(AI_APOLOGY)(m)).length,
      notices: outbound.filter(notice(RATE_LIMIT_NOTICE)).length,
    };
  }

  return {
    window: aiWindow(config),
    async respond({ user, message, recent, recentIsPartial, preparing, log }) {
      const minute = await lastMinute(user, recent, recentIsPartial);
      if (minute.answers >= config.maxPerMinute) {
        const notified = minute.notices > 0;
        log.info('ai rate limited', { id: message.id, user: pseudonym(user.id), notice: !notified });
        return notified ? null : { text: RATE_LIMIT_NOTICE, role: 'notice', ai: null, failure: null };
      }
      const messages = await context(user, message, recent, recentIsPartial);
      if (!(await preparing())) return null;
      const started = Date.now();
      try {
        // One call and one retry at most, whatever fails: see `retryWith`.
        const completion = await client.complete(messages, { retryWith: retryWith(messages, message, log) });
        log.info('ai answered', {
          id: message.id,
          provider: completion.provider,
          turns: completion.turns.length,
          tokens: completion.totalTokens,
          ms: completion.latencyMs,
          length: completion.text.length,
          cut: completion.cut,
        });
        const reply: ReplyContent = {
          text: asSent(completion.cut ? markCut(completion.text) : completion.text),
          role: 'conversation',
          ai: {
            provider: completion.provider,
            model: completion.model,
            promptTokens: completion.promptTokens,
            completionTokens: completion.completionTokens,
            totalTokens: completion.totalTokens,
            latencyMs: completion.latencyMs,
          },
          failure: null,
        };
        return reply;
      } catch (error) {
        if (!(error instanceof AiError)) throw error;
        const fields = {
          id: message.id,
          status: error.status,
          reason: error.reason,
          tokens: error.usage?.totalTokens ?? null,
        };
        // Refused credentials, a deployment or model that does not exist, a quota used up: the
        // deployment's problem, not the message's, failing every answer until an operator fixes
        // it: said as such, at error level (as a refused WHATSAPP_ACCESS_TOKEN is).
        const problem = error.configurationProblem;
        if (problem) log.error(CONFIGURATION_PROBLEM[problem], fields);
        else log.warn('ai failed', fields);
        // The tokens a failed call used count all the same (kept on the message it answered).
        return {
          text: AI_APOLOGY,
          role: 'notice',
          ai: error.usage && {
            provider: client.provider,
            ...error.usage,
            latencyMs: Date.now() - started,
          },
          failure: {
            code: error.promptFiltered ? PROMPT_FILTERED : (error.status ?? error.reason),
            title: error.message,
          },
        };
      }
    },
  };
}
