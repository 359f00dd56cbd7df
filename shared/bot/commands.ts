// Commands: the whole message, trimmed, case-insensitive, trailing punctuation ignored.

export const COMMANDS = ['help', 'reset', 'stop', 'start', 'human', 'agent'] as const;
export type Command = (typeof COMMANDS)[number];

/** Words that mean the same command. */
const ALIASES: Partial<Record<Command, Command>> = { agent: 'human' };

export function parseCommand(text: string): Command | null {
  const word = text
    .trim()
    .replace(/[\s\p{P}]+$/u, '')
    .toLowerCase();
  if (!(COMMANDS as readonly string[]).includes(word)) return null;
  return ALIASES[word as Command] ?? (word as Command);
}
