// Shared helpers of the operator scripts: arguments and --help, a progress bar on stderr, the
// summary, exit codes, and opening the database the way `npm run dev` finds it.
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { CLIENT_OPTIONS, closeAllClients, openDataStore, type DataStore } from '../../shared/data';
import { databaseName, type Env } from '../../shared/config';
import { AppError, ErrorCode } from '../../shared/errors';
import { resolveDatabase } from './database';
import { npmRunner, watchProcess } from './subprocess';

/** Where a script writes: results on stdout, diagnostics and progress on stderr. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  /** Whether stderr is a terminal (a redrawn progress bar) or not (periodic percentage lines). */
  readonly tty: boolean;
}

export const processIo: Io = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
  tty: Boolean(process.stderr.isTTY),
};

/** An expected failure: its message is printed without a stack trace and the exit code is 1. */
export class ScriptError extends Error {
  override readonly name = 'ScriptError';
}

/** Bad arguments: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export type { Env };
export type Main = (argv: readonly string[], env: Env, io: Io) => Promise<number>;

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses arguments (adding --help); unknown options are a UsageError. */
export function parseCli<O extends Options>(
  argv: readonly string[],
  options: O,
  opts: { positionals?: number } = {},
) {
  // A negative number after an option that takes a value (`--days -3`) is that value, so that the
  // option's own check names its range; parseArgs would take it for an option and ask, over three
  // lines, whether a value was forgotten.
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    const name = /^--([^=]+)$/.exec(arg)?.[1];
    const next = argv[i + 1];
    if (arg === '--') {
      args.push(...argv.slice(i));
      break;
    }
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && /^-\d/.test(next)) {
      args.push(`--${name}=${next}`);
      i++;
    } else args.push(arg);
  }
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...options, help: { type: 'boolean', short: 'h' } },
      allowPositionals: (opts.positionals ?? 0) > 0,
      strict: true,
      tokens: true,
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  // parseArgs keeps the last of an option given twice: which one was meant is unknown.
  const seen = new Set<string>();
  for (const token of parsed.tokens) {
    if (token.kind !== 'option' || options[token.name]?.multiple) continue;
    if (seen.has(token.name)) throw new UsageError(`option --${token.name} given twice`);
    seen.add(token.name);
  }
  if (parsed.positionals.length > (opts.positionals ?? 0)) {
    throw new UsageError(`unexpected argument: ${parsed.positionals[opts.positionals ?? 0] ?? ''}`);
  }
  return parsed;
}

/**
 * A file named on the command line, where the person who typed it means it: npm runs a script in
 * the project's folder, whichever folder `npm run` was typed in (it passes that one as INIT_CWD),
 * so a relative path is resolved against INIT_CWD.
 */
export function givenPath(file: string, env: Env): string {
  return path.resolve(env['INIT_CWD'] || process.cwd(), file);
}

/** A positive integer option, or the default. */
export function intOption(
  value: unknown,
  name: string,
  fallback: number,
  min = 1,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (typeof value !== 'string' || !/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(
      `--${name} must be an integer of at least ${min}${max < Number.MAX_SAFE_INTEGER ? ` and at most ${max}` : ''}`,
    );
  }
  return n;
}

export interface Progress {
  /** Sets the amount done so far. */
  update(done: number): void;
  /** Ends the bar (prints the final state). */
  done(): void;
}

/** Longest a script stays silent on stderr while it works (a line at least this often). */
export const PROGRESS_INTERVAL_MS = 5_000;

/**
 * A progress bar on stderr: redrawn in place on a terminal; elsewhere (CI, logs) a line at every
 * 10 %, and at least every `PROGRESS_INTERVAL_MS` while it runs (also while one database call
 * takes long: a million messages are minutes between two deciles), so output stays readable and
 * a run is never silent for long.
 */
export function progress(io: Io, label: string, total: number): Progress {
  let current = 0;
  let lastDecile = -1;
  let lastDraw = 0;
  let lastLine = Date.now();
  let finished = false;
  const started = Date.now();
  const draw = (final: boolean) => {
    const ratio = total > 0 ? Math.min(1, current / total) : 1;
    const pct = Math.floor(ratio * 100);
    if (io.tty) {
      const now = Date.now();
      if (!final && now - lastDraw < 100) return;
      lastDraw = now;
      const width = 30;
      const filled = Math.round(ratio * width);
      process.stderr.write(
        `\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${pct}% ${current}/${total}${final ? '\n' : ''}`,
      );
    } else {
      const decile = Math.floor(pct / 10);
      const due = Date.now() - lastLine >= PROGRESS_INTERVAL_MS;
      if (decile === lastDecile && !final && !due) return;
      if (final && decile === lastDecile) return;
      lastDecile = decile;
      lastLine = Date.now();
      io.err(
        `${label}: ${pct}% (${current}/${total}${due ? `, ${Math.round((lastLine - started) / 1000)} s` : ''})`,
      );
    }
  };
  // While nothing moves (one long database call), still a line now and then.
  const timer = io.tty ? null : setInterval(() => draw(false), PROGRESS_INTERVAL_MS);
  timer?.unref();
  return {
    update(done) {
      current = done;
      draw(false);
    },
    done() {
      if (finished) return;
      finished = true;
      if (timer) clearInterval(timer);
      draw(true);
    },
  };
}

/**
 * For a step that reports no progress of its own (counting documents, say): a line when it starts
 * and, off a terminal, one every `PROGRESS_INTERVAL_MS` until the returned function is called.
 */
export function working(io: Io, what: string): () => void {
  const started = Date.now();
  io.err(`${what}…`);
  const timer = setInterval(
    () => io.err(`${what}… (${Math.round((Date.now() - started) / 1000)} s)`),
    PROGRESS_INTERVAL_MS,
  );
  timer.unref();
  return () => clearInterval(timer);
}

/** Prints a titled summary table on stdout: one `name: value` line per row, aligned. */
export function printSummary(
  io: Io,
  title: string,
  rows: readonly (readonly [string, string | number])[],
): void {
  const width = Math.max(0, ...rows.map(([k]) => k.length));
  io.out(title);
  for (const [key, value] of rows) io.out(`  ${`${key}:`.padEnd(width + 1)} ${value}`);
}

export const seconds = (startedMs: number): string => `${((Date.now() - startedMs) / 1000).toFixed(2)} s`;

/**
 * Opens the data store (same resolution as `npm run dev`; MONGODB_DATABASE, default
 * whatsapp_chatbot), runs `work`, then closes the client and any server it started.
 */
export async function withDataStore<T>(env: Env, io: Io, work: (store: DataStore) => Promise<T>): Promise<T> {
  const name = databaseName(env);
  const server = await resolveDatabase({ purpose: 'script', env, log: (line) => io.err(line) });
  try {
    return await work(await openDataStore(server.uri, name));
  } catch (error) {
    throw unreachable(error, server.description) ?? error;
  } finally {
    await closeAllClients();
    await server.stop();
  }
}

/** DNS answers that mean the host name in the connection string is wrong or cannot be looked up. */
const DNS_FAILURES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'ENODATA', 'ESERVFAIL', 'ECONNREFUSED', 'ETIMEOUT']);

/**
 * The database could not be reached: one line that says which server (its description names the
 * setting, masked) and what to check, instead of a bare "database unreachable" or a stack trace.
 */
function unreachable(error: unknown, description: string): ScriptError | null {
  const check = description.startsWith('MONGODB_URI')
    ? 'check MONGODB_URI, and that this machine may reach that server (firewall, network rules)'
    : 'check that the server is still running';
  const dns = hostNotFound(error);
  if (dns) {
    return new ScriptError(
      `the database could not be reached: the host name of ${description} was not found (${dns}); ${check}`,
    );
  }
  if (error instanceof AppError && error.code === ErrorCode.UNAVAILABLE) {
    return new ScriptError(
      `the database could not be reached: no server answered at ${description} within ${CLIENT_OPTIONS.serverSelectionTimeoutMS / 1000} s; ${check}`,
    );
  }
  return null;
}

/**
 * The DNS failure (`querySrv ENOTFOUND`, say) when the host name of a connection string could not
 * be looked up, else null. `npm run dev` says it the same way. A `mongodb://` host name is looked
 * up by each server's monitor: the driver then reports server selection timing out (the data
 * module's "database unreachable"), and each server's own failure is in the topology it describes;
 * when every server's is a DNS failure, the host name is what to correct, not a server to start.
 */
export function hostNotFound(error: unknown): string | null {
  const direct = dnsFailure(error);
  if (direct) return direct;
  const selection = error instanceof AppError ? error.cause : error;
  const servers = (selection as { reason?: { servers?: unknown } } | null | undefined)?.reason?.servers;
  if (!(servers instanceof Map) || servers.size === 0) return null;
  const failures = [...servers.values()].map((server) =>
    dnsFailure((server as { error?: { cause?: unknown } } | undefined)?.error?.cause),
  );
  return failures.every((failure) => failure !== null) ? failures[0]! : null;
}

function dnsFailure(error: unknown): string | null {
  const dns = error as { code?: unknown; syscall?: unknown };
  if (
    error instanceof Error &&
    typeof dns.code === 'string' &&
    DNS_FAILURES.has(dns.code) &&
    typeof dns.syscall === 'string' &&
    /^(query|getaddrinfo)/.test(dns.syscall)
  )
    return `${dns.syscall} ${dns.code}`;
  return null;
}

/** A connection string the driver cannot read (its message names the problem, not the secret). */
export function badConnectionString(error: unknown): error is Error {
  const name = error instanceof Error ? error.name : '';
  return (
    name === 'MongoParseError' ||
    name === 'MongoInvalidArgumentError' ||
    (name === 'MongoRuntimeError' && /^Unable to parse /.test((error as Error).message))
  );
}

const interruptCleanups = new Set<() => void>();

/**
 * Registers a synchronous clean-up (a temporary file, say) for when the script is interrupted
 * before the returned function is called.
 */
export function cleanUpIfInterrupted(cleanup: () => void): () => void {
  interruptCleanups.add(cleanup);
  return () => interruptCleanups.delete(cleanup);
}

/**
 * Ctrl-C or a kill: clean up, say on stderr that the run stopped and, when the script gives one,
 * what that left and how to finish, then exit with the shell's code for the signal (130, 143).
 * A server the script started goes with it (./watchdog).
 */
function onInterrupt(note: string | undefined): void {
  let stopping = false;
  const stop = (cause: string, code: number) => {
    if (stopping) return;
    stopping = true;
    for (const cleanup of interruptCleanups) cleanup();
    if (processIo.tty) process.stderr.write('\n'); // after a progress bar's line
    processIo.err(`interrupted${cause}${note ? `: ${note}` : ''}`);
    process.exit(code);
  };
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    process.once(signal, () => stop(` by ${signal}`, code));
  }
  // Run by npm (`npm run seed`): npm passes a SIGTERM or SIGINT sent to it alone (a supervisor, a
  // CI timeout, `kill <npm>`) only to the shell it runs `node --import tsx scripts/…` in, which
  // dies of it without passing it on (dash), and the script would run on unseen. (Not the `tsx`
  // command: it relays a signal to the script and kills it outright when the script, busy, has not
  // answered within 60 ms, so that a Ctrl-C skipped the clean-up below on a loaded machine.) So the script also stops when that
  // shell has gone. (`npm run dev` `exec`s instead; cmd.exe has no `exec`, and the operator scripts
  // run on Windows too, where there is no /proc and nothing is watched.)
  if (process.env['npm_lifecycle_event']) {
    const gone = () => stop(': npm, which ran it, has stopped', 143);
    const runner = npmRunner('tsx');
    if (runner === 'gone') gone();
    else if (runner !== null && runner !== process.ppid) watchProcess(runner, gone);
  }
}

/**
 * Runs a script's main as the process: exit code, and clear messages for expected failures.
 * `interrupted` tells the operator what an interrupted run left and how to finish it.
 */
/** Prints `help` when the arguments ask for it (--help or -h); true then (do not run). */
export function helpAsked(argv: readonly string[], help: string): boolean {
  if (!argv.includes('--help') && !argv.includes('-h')) return false;
  process.stdout.write(`${help.trim()}\n`);
  return true;
}

export function runMain(main: Main, help: string, interrupted?: string): void {
  const argv = process.argv.slice(2);
  if (helpAsked(argv, help)) return;
  onInterrupt(interrupted);
  main(argv, process.env, processIo).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.exitCode = reportError(processIo, error);
    },
  );
}

/**
 * A message as printed: control characters (an argument typed with an escape sequence, quoted back
 * by an error) shown as `\u001b`, so that the terminal does not act on them; line breaks and tabs stay.
 */
export function printable(message: string): string {
  return message.replace(/[^\P{Cc}\n\t]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** Prints an error; returns the exit code. Expected failures print their message only. */
export function reportError(raw: Io, error: unknown): number {
  const io: Io = { out: (line) => raw.out(line), err: (line) => raw.err(printable(line)), tty: raw.tty };
  if (error instanceof UsageError) {
    io.err(`error: ${error.message} (see --help)`);
    return 2;
  }
  if (error instanceof ScriptError || error instanceof AppError) {
    io.err(`error: ${error.message}`);
    return 1;
  }
  if (badConnectionString(error)) {
    io.err(`error: MONGODB_URI is not a valid connection string: ${error.message}`);
    return 1;
  }
  // The storage emulator or account (AzureWebJobsStorage) could not be reached.
  if (error instanceof Error && error.name === 'RestError') {
    const code = (error as { code?: unknown }).code;
    io.err(
      `error: the queue storage (AzureWebJobsStorage) could not be reached or refused the request${typeof code === 'string' ? ` (${code})` : ''}`,
    );
    return 1;
  }
  io.err(`error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  return 1;
}

/** Wraps a main so that thrown errors become an exit code (for tests calling it directly). */
export async function runToExitCode(main: Main, argv: readonly string[], env: Env, io: Io): Promise<number> {
  try {
    return await main(argv, env, io);
  } catch (error) {
    return reportError(io, error);
  }
}

/**
 * For a script that takes no arguments: prints `help` for --help or -h and returns false (do not
 * run); refuses anything else with exit code 2. True when the script should run.
 */
export function noArguments(argv: readonly string[], help: string): boolean {
  if (helpAsked(argv, help)) return false;
  if (argv.length > 0) {
    process.stderr.write(`error: unexpected argument ${JSON.stringify(argv[0])} (see --help)\n`);
    process.exitCode = 2;
    return false;
  }
  return true;
}
