// Starts a server process that cannot outlive this one, and keeps the end of its stderr, scrubbed
// of the document fragments FerretDB quotes in its errors, for messages.
import { spawn, type ChildProcess } from 'node:child_process';

// Runs the real server under `sh`, which keeps our stdin on fd 3: when this process goes away in any
// way (even SIGKILL) the pipe closes and the watcher stops the server. `exec` keeps the pid the same.
const WATCHDOG =
  'exec 3<&0; (read -r _ <&3; kill -TERM $$ 2>/dev/null) >/dev/null 2>&1 & exec "$@" 3<&- </dev/null';

export interface WatchedProcess {
  readonly child: ChildProcess;
  /** The last few kB of the server's stderr, scrubbed (see scrubServerLog). */
  stderr(): string;
}

export function spawnWatched(
  binary: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): WatchedProcess {
  const child: ChildProcess =
    process.platform === 'win32'
      ? spawn(binary, [...args], { stdio: ['pipe', 'ignore', 'pipe'], windowsHide: true, env })
      : spawn('/bin/sh', ['-c', WATCHDOG, 'server-watchdog', binary, ...args], {
          stdio: ['pipe', 'ignore', 'pipe'],
          env,
          // A process group of its own: a terminal's Ctrl-C, sent to every process of the
          // foreground group, reaches only us, and we stop the server once our work has ended.
          detached: true,
        });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-4_000);
  });
  child.once('error', (error) => {
    stderr += `\n${error.message}`;
  });
  return { child, stderr: () => scrubServerLog(stderr) };
}

/**
 * What of a server's log may reach our console: FerretDB's errors quote the documents and values
 * they failed on (`duplicate key … { _id: "wamid…" }`, a message text, a phone number), so quoted
 * strings, document literals and long digit runs are cut, leaving the level, the message and the
 * error's shape.
 */
export function scrubServerLog(text: string): string {
  return text
    .split('\n')
    .map((line) => scrubLine(line))
    .join('\n');
}

function scrubLine(line: string): string {
  const trimmed = line.trim();
  if (trimmed.startsWith('{')) {
    try {
      const entry = JSON.parse(trimmed) as Record<string, unknown>;
      const kept = ['level', 'msg', 'error', 'err', 'name']
        .filter((key) => typeof entry[key] === 'string')
        .map((key) => `${key}=${scrubText(String(entry[key]))}`);
      return kept.join(' ');
    } catch {
      // not a JSON log line: scrubbed as text
    }
  }
  return scrubText(line);
}

function scrubText(text: string): string {
  let out = text;
  // Document literals, innermost first, then quoted strings and long numbers.
  for (let i = 0; i < 5 && /\{[^{}]*\}/.test(out); i++) out = out.replace(/\{[^{}]*\}/g, '{…}');
  return out
    .replace(/"(?:[^"\\]|\\.)*"/g, '"…"')
    .replace(/'(?:[^'\\]|\\.)*'/g, "'…'")
    .replace(/\d{6,}/g, '…');
}
