// Decides the reply to one inbound message and applies a command's effect (docs/contract.md, "What
// the bot does with each notification"): commands, the polite "cannot read" reply, AI when
// configured, else built-in.
import { activeHandoff, HANDOFF_BY_USER, type Message, type MessageRole, type User } from '../data';
import { parseCommand } from './commands';
import type { ReplyContent, ReplyPorts } from './ports';
import {
  DEFAULT_ANSWER,
  HELP_TEXT,
  HUMAN_ANSWER,
  RESET_ANSWER,
  START_ANSWER,
  STOP_ANSWER,
  UNREADABLE_ANSWER,
} from './texts';

/**
 * What the worker does with a message: nothing, a fixed text, or ask the AI (typing indicator
 * first). `overHandoff`: the answer goes out even when an operator took the conversation since
 * the worker read the user (the confirmations of `stop` and `start`, which win over a handoff, and
 * of `human`, whose own take found no handoff); every other answer is dropped then.
 */
export type Decision =
  { kind: 'none' } | { kind: 'fixed'; reply: ReplyContent; overHandoff: boolean } | { kind: 'ai' };

const fixed = (text: string, role: MessageRole, overHandoff = false): Decision => ({
  kind: 'fixed',
  reply: { text, role, ai: null, failure: null },
  overHandoff,
});

/**
 * Decides, and applies the command's effect (opt-out, opt-in, reset, handoff) before its
 * confirmation goes out. `stop` and `start` win over a handoff; otherwise a handed-over user gets
 * no answer from the bot (operators answer); an expired handoff is ended here, when it matters.
 * Returns the user as it is after the effect (the next message of the same drain sees it).
 */
export async function decideAndApply(
  ports: Pick<ReplyPorts, 'data' | 'ai' | 'now' | 'config'>,
  user: User,
  message: Message,
): Promise<{ decision: Decision; user: User }> {
  const none = { decision: { kind: 'none' } as const, user };
  const command = message.role === 'command' ? parseCommand(message.text) : null;
  if (user.optedOut && command !== 'start') return none;
  if (command !== 'stop' && command !== 'start' && user.handoff) {
    if (activeHandoff(user, ports.now(), ports.config.handoffHours)) return none;
    // The copy read may be stale: an operator's reply since then restarted the clock.
    const expired = await ports.data.handoff.expire(user.id, user.handoff);
    if (!expired.ended) {
      const current = expired.user;
      if (!current || activeHandoff(current, ports.now(), ports.config.handoffHours)) return none;
      return decideAndApply(ports, current, message);
    }
  }
  if (message.role === 'notice') return { decision: fixed(UNREADABLE_ANSWER, 'notice'), user };
  switch (command) {
    case 'human':
    case 'agent': {
      const taken = await ports.data.handoff.take(
        user.id,
        HANDOFF_BY_USER,
        ports.now(),
        ports.config.handoffHours,
      );
      return taken?.started ? { decision: fixed(HUMAN_ANSWER, 'command', true), user: taken.user } : none;
    }
    case 'help':
      return { decision: fixed(HELP_TEXT, 'command'), user };
    case 'reset':
      await ports.data.users.resetContext(user.id, message.seqAt);
      return { decision: fixed(RESET_ANSWER, 'command'), user: { ...user, contextResetAt: message.seqAt } };
    case 'stop':
      await ports.data.users.setOptedOut(user.id, true);
      return { decision: fixed(STOP_ANSWER, 'command', true), user: { ...user, optedOut: true } };
    case 'start':
      await ports.data.users.setOptedOut(user.id, false);
      return { decision: fixed(START_ANSWER, 'command', true), user: { ...user, optedOut: false } };
    case null:
      return { decision: ports.ai ? { kind: 'ai' } : fixed(DEFAULT_ANSWER, 'conversation'), user };
  }
}
