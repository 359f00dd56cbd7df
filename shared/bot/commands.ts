// Commands: the whole message, trimmed, case-insensitive, trailing punctuation ignored.

export const COMMANDS = ['help', 'reset', 'stop', 'start', 'human', 'agent'] as const;
export type Command = (typeof COMMANDS)[number];

/** Words that mean the same command. */
const ALIASES: Partial<Record<Command, Command>> = { agent: 'human' };

/** One character that may trail a command: whitespace or punctuation. */
const TRAILING = /^[\s\p{P}]$/u;

export function parseCommand(text: string): Command | null {
  // Dropped from the end one character at a time: `[\s\p{P}]+$` backtracks quadratically on a
  // long run of them that does not reach the end (seconds for a text of 64 KiB).
  const chars = Array.from(text.trim());
  while (chars.length > 0 && TRAILING.test(chars[chars.length - 1] ?? '')) chars.pop();
  const word = chars.join('').toLowerCase();
  if (!(COMMANDS as readonly string[]).includes(word)) return null;
  return ALIASES[word as Command] ?? (word as Command);
}
