// Decides the answer to one inbound message (docs/contract.md, "What the bot does with each
// notification"): commands, the polite "cannot read" answer, AI when configured, else built-in.
import type { Message, MessageRole, User } from '../data';
import { parseCommand } from './commands';
import type { ReplyPorts, Reply } from './ports';
import {
  DEFAULT_ANSWER,
  HELP_TEXT,
  RESET_ANSWER,
  START_ANSWER,
  STOP_ANSWER,
  UNREADABLE_ANSWER,
} from './texts';

/** What the worker does with a message: nothing, a fixed text, or ask the AI (typing indicator first). */
export type Decision = { kind: 'none' } | { kind: 'fixed'; reply: Reply } | { kind: 'ai' };

const fixed = (text: string, role: MessageRole): Decision => ({
  kind: 'fixed',
  reply: { text, role, ai: null, failure: null },
});

/**
 * Decides, and applies the command's effect (opt-out, opt-in, reset) before its confirmation goes
 * out. Returns the user as it is after the effect (the next message of the same drain sees it).
 */
export async function decideAnswer(
  ports: Pick<ReplyPorts, 'data' | 'ai'>,
  user: User,
  message: Message,
): Promise<{ decision: Decision; user: User }> {
  const command = message.role === 'command' ? parseCommand(message.text) : null;
  if (user.optedOut && command !== 'start') return { decision: { kind: 'none' }, user };
  if (message.role === 'notice') return { decision: fixed(UNREADABLE_ANSWER, 'notice'), user };
  switch (command) {
    case 'help':
      return { decision: fixed(HELP_TEXT, 'command'), user };
    case 'reset':
      await ports.data.users.resetContext(user.id, message.seqAt);
      return { decision: fixed(RESET_ANSWER, 'command'), user: { ...user, contextResetAt: message.seqAt } };
    case 'stop':
      await ports.data.users.setOptedOut(user.id, true);
      return { decision: fixed(STOP_ANSWER, 'command'), user: { ...user, optedOut: true } };
    case 'start':
      await ports.data.users.setOptedOut(user.id, false);
      return { decision: fixed(START_ANSWER, 'command'), user: { ...user, optedOut: false } };
    case null:
      return { decision: ports.ai ? { kind: 'ai' } : fixed(DEFAULT_ANSWER, 'conversation'), user };
  }
}
