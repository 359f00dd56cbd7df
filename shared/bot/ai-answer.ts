// The AI answer to one message: per-user rate limit (one notice, then silence for the minute), the
// context (system prompt, recent conversation since the last reset, the new message described in
// words), the call, and on failure a short apology with the failure recorded.
import type { AiConfig } from '../config';
import type { AiUsage, DataStore, Message, MessageError, MessageRole, User } from '../data';
import { pseudonym, type Logger } from '../log';
import { AiError, createAiClient, type AiClient, type AiClientOptions, type ChatMessage } from '../ai/client';
import { AI_APOLOGY, RATE_LIMIT_NOTICE } from './texts';

export interface AiResponderDeps {
  readonly config: AiConfig;
  readonly data: Pick<DataStore, 'messages'>;
  readonly now: () => Date;
  /** A ready client (tests); otherwise one is built from the config. */
  readonly client?: AiClient;
  readonly clientOptions?: AiClientOptions;
}

/**
 * Structurally `Reply` and `AiResponder` of ./answer, restated so that this module, built by the
 * composition root, does not import answer.ts (which imports the root's types: a cycle).
 */
export interface AiReply {
  readonly text: string;
  readonly role: MessageRole;
  readonly ai: AiUsage | null;
  readonly failure: MessageError | null;
}
export interface AiAnswerer {
  answer(input: { user: User; message: Message; log: Logger }): Promise<AiReply | null>;
}

const MINUTE_MS = 60_000;
/**
 * Extra history rows read so that later messages still waiting for their answer (left out: they
 * come after this one) do not shorten the context.
 */
const PENDING_SLACK = 20;

const LABEL = /^\[([^\]]+)\]\s*/;

/** A message as the model reads it: its text, or a non-text message described in words. */
export function describeForModel(message: Pick<Message, 'type' | 'text' | 'direction'>): string {
  if (message.direction === 'outbound') return message.text;
  const detail = message.text.replace(LABEL, '').trim();
  const quoted = detail ? `: ${detail}` : '';
  switch (message.type) {
    case 'text':
      return message.text;
    case 'image':
      return detail
        ? `(The user sent an image with the caption: ${detail})`
        : '(The user sent an image without a caption.)';
    case 'video':
      return detail
        ? `(The user sent a video with the caption: ${detail})`
        : '(The user sent a video without a caption.)';
    case 'audio':
      return message.text.startsWith('[voice')
        ? '(The user sent a voice message, which you cannot listen to.)'
        : '(The user sent an audio file, which you cannot listen to.)';
    case 'document':
      return `(The user sent a document${quoted})`;
    case 'sticker':
      return '(The user sent a sticker.)';
    case 'location':
      return `(The user shared a location${quoted})`;
    case 'contacts':
      return `(The user shared a contact${quoted})`;
    case 'order':
      return `(The user placed an order${quoted})`;
    case 'interactive':
      return LABEL.test(message.text)
        ? `(The user submitted a form${quoted})`
        : `(The user chose: ${message.text})`;
    case 'button':
      return `(The user tapped the button: ${message.text})`;
    default:
      return message.text;
  }
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

export function createAiResponder(deps: AiResponderDeps): AiAnswerer {
  const { config, data, now } = deps;
  const client = deps.client ?? createAiClient(config, deps.clientOptions);

  async function context(user: User, message: Message): Promise<ChatMessage[]> {
    // Up to now (an answer to an earlier message may be stamped after this message's Meta
    // timestamp), leaving out later messages still waiting for their answer. One indexed read.
    const rows =
      config.historyLimit > 0
        ? await data.messages.conversationBefore(
            user.id,
            now(),
            message.id,
            user.contextResetAt,
            config.historyLimit + PENDING_SLACK,
          )
        : [];
    const history = rows
      .filter(
        (m) => !(m.direction === 'inbound' && (m.replyState === 'pending' || m.replyState === 'sending')),
      )
      .slice(-config.historyLimit);
    return [
      { role: 'system', content: config.systemPrompt },
      ...toTurns(history),
      { role: 'user', content: describeForModel(message) },
    ];
  }

  return {
    async answer({ user, message, log }) {
      const minuteAgo = new Date(now().getTime() - MINUTE_MS);
      if ((await data.messages.countAiAnswersSince(user.id, minuteAgo)) >= config.maxPerMinute) {
        const notified = (await data.messages.countNoticesSince(user.id, minuteAgo, RATE_LIMIT_NOTICE)) > 0;
        log.info('ai rate limited', { id: message.id, user: pseudonym(user.id), notice: !notified });
        return notified ? null : { text: RATE_LIMIT_NOTICE, role: 'notice', ai: null, failure: null };
      }
      const messages = await context(user, message);
      try {
        const completion = await client.complete(messages);
        log.info('ai answered', {
          id: message.id,
          provider: completion.provider,
          turns: messages.length,
          tokens: completion.totalTokens,
          ms: completion.latencyMs,
          length: completion.text.length,
        });
        const reply: AiReply = {
          text: completion.text,
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
        log.warn('ai failed', { id: message.id, status: error.status, reason: error.reason });
        return {
          text: AI_APOLOGY,
          role: 'notice',
          ai: null,
          failure: { code: error.status ?? error.reason, title: error.message },
        };
      }
    },
  };
}
