// Decides the answer to one inbound message (CONTRACT.md, "What the bot does with each
// notification"): commands, the polite "cannot read" answer, AI when configured, else built-in.
import type { Services } from '../deps';
import {
  activeHandoff,
  HANDOFF_BY_USER,
  type AiUsage,
  type Message,
  type MessageError,
  type MessageRole,
  type User,
} from '../data';
import type { Logger } from '../log';
import { parseCommand } from './commands';
import {
  DEFAULT_ANSWER,
  HELP_TEXT,
  HUMAN_ANSWER,
  RESET_ANSWER,
  START_ANSWER,
  STOP_ANSWER,
  UNREADABLE_ANSWER,
} from './texts';

export interface Reply {
  readonly text: string;
  readonly role: MessageRole;
  readonly ai: AiUsage | null;
  /** Set when the answer is an apology for a failure (recorded on the inbound message). */
  readonly failure: MessageError | null;
}

/** What the worker does with a message: nothing, a fixed text, or ask the AI (typing indicator first). */
export type Plan = { kind: 'none' } | { kind: 'fixed'; reply: Reply } | { kind: 'ai' };

/** Answers with a model; null means stay silent (e.g. over the per-minute limit, already notified). */
export interface AiResponder {
  answer(input: { user: User; message: Message; log: Logger }): Promise<Reply | null>;
}

const fixed = (text: string, role: MessageRole): Plan => ({
  kind: 'fixed',
  reply: { text, role, ai: null, failure: null },
});

/**
 * Decides, and applies the command's effect (opt-out, opt-in, reset, handoff) before its
 * confirmation goes out. `stop` and `start` win over a handoff; otherwise a handed-over user gets
 * no answer from the bot (operators answer); an expired handoff is ended here, when it matters.
 */
export async function planAnswer(services: Services, user: User, message: Message): Promise<Plan> {
  const command = message.role === 'command' ? parseCommand(message.text) : null;
  if (user.optedOut && command !== 'start') return { kind: 'none' };
  if (command !== 'stop' && command !== 'start' && user.handoff) {
    if (activeHandoff(user, services.now(), services.config.handoffHours)) return { kind: 'none' };
    await services.data.handoff.expire(user.id, user.handoff);
  }
  if (message.role === 'notice') return fixed(UNREADABLE_ANSWER, 'notice');
  switch (command) {
    case 'human':
    case 'agent': {
      const taken = await services.data.handoff.take(
        user.id,
        HANDOFF_BY_USER,
        services.now(),
        services.config.handoffHours,
      );
      return taken?.started ? fixed(HUMAN_ANSWER, 'command') : { kind: 'none' };
    }
    case 'help':
      return fixed(HELP_TEXT, 'command');
    case 'reset':
      await services.data.users.resetContext(user.id, message.seqAt);
      return fixed(RESET_ANSWER, 'command');
    case 'stop':
      await services.data.users.setOptedOut(user.id, true);
      return fixed(STOP_ANSWER, 'command');
    case 'start':
      await services.data.users.setOptedOut(user.id, false);
      return fixed(START_ANSWER, 'command');
    case null:
      return services.ai ? { kind: 'ai' } : fixed(DEFAULT_ANSWER, 'conversation');
  }
}
