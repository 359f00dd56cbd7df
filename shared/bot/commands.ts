// Commands: the whole message, trimmed, case-insensitive, trailing punctuation ignored.

export const COMMANDS = ['help', 'reset', 'stop', 'start'] as const;
export type Command = (typeof COMMANDS)[number];

export function parseCommand(text: string): Command | null {
  const word = text
    .trim()
    .replace(/[\s\p{P}]+$/u, '')
    .toLowerCase();
  return (COMMANDS as readonly string[]).includes(word) ? (word as Command) : null;
}
