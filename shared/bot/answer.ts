// Decides the answer to one inbound message (docs/contract.md, "What the bot does with each
// notification"): commands, the polite "cannot read" answer, AI when configured, else built-in.
import type { Services } from '../deps';
import type { AiUsage, Message, MessageError, MessageRole, User } from '../data';
import type { Logger } from '../log';
import { parseCommand } from './commands';
import {
  DEFAULT_ANSWER,
  HELP_TEXT,
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

/** Decides, and applies the command's effect (opt-out, opt-in, reset) before its confirmation goes out. */
export async function planAnswer(services: Services, user: User, message: Message): Promise<Plan> {
  const command = message.role === 'command' ? parseCommand(message.text) : null;
  if (user.optedOut && command !== 'start') return { kind: 'none' };
  if (message.role === 'notice') return fixed(UNREADABLE_ANSWER, 'notice');
  switch (command) {
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
