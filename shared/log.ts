// A small structured logger. Callers log ids, types, lengths and durations; never bodies, names,
// numbers, tokens or prompts. Phone numbers go through `pseudonym` (a keyed hash) first; message
// ids (wamids, which hold the sender's number) are replaced by theirs here, on every line.
import { createHmac } from 'node:crypto';

export type LogFields = Record<string, string | number | boolean | null | undefined>;

export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export interface LogSink {
  log(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
}

/**
 * A WhatsApp message id: base64 after `wamid.` that holds the sender's number, so never logged in
 * clear. Also found inside other ids (`out:<wamid>:<part>`) and error texts. Dots inside it are
 * part of it (Meta bounds ids only to printable ASCII: a pseudonym that stopped at a dot left the
 * rest in clear); a dot that ends it is a sentence's.
 */
const WAMID = /wamid\.(?:[A-Za-z0-9+/=_.-]*[A-Za-z0-9+/=_-])?/gi;

/** Every wamid replaced by its pseudonym (the same id always gives the same one, so lines still correlate). */
const hideWamids = (text: string): string => text.replace(WAMID, (id) => pseudonym(id));

function render(message: string, fields?: LogFields): string {
  const parts = Object.entries(fields ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${String(v)}`);
  return hideWamids(parts.length ? `${message} ${parts.join(' ')}` : message);
}

/** A logger on top of an InvocationContext (or anything with log/warn/error). */
export function createLogger(sink: LogSink): Logger {
  return {
    info: (m, f) => sink.log(render(m, f)),
    warn: (m, f) => sink.warn(render(m, f)),
    error: (m, f) => sink.error(render(m, f)),
  };
}

let pseudonymKey = 'whatsapp-bot';
/** Sets the key of `pseudonym`; the composition root passes a secret so hashes cannot be reversed by brute force. */
export function setPseudonymKey(key: string): void {
  pseudonymKey = key;
}

/** A short keyed hash of a phone number or user id, stable within a deployment, safe for logs. */
export function pseudonym(value: string | null | undefined): string {
  if (!value) return '-';
  return 'p_' + createHmac('sha256', pseudonymKey).update(value).digest('hex').slice(0, 12);
}

/**
 * The message of an error with anything that looks like a phone number or bearer token removed, and
 * each wamid (which holds the sender's number) replaced by its pseudonym.
 */
export function scrub(text: string): string {
  // One pass, so that neither the digits inside a wamid nor those of a pseudonym are taken for a number.
  return text.replace(SCRUBBED, (found) =>
    /^wamid\./i.test(found) ? pseudonym(found) : /^Bearer/i.test(found) ? 'Bearer ***' : '***',
  );
}
const SCRUBBED = new RegExp(`${WAMID.source}|Bearer\\s+[A-Za-z0-9._~+/=-]+|\\+?\\d[\\d\\s-]{6,}\\d`, 'gi');

/**
 * What a function throws to the Functions host, which logs an unhandled error's message and stack
 * as they are: the same error (name, and `code` when it has one) with both scrubbed. A database's
 * error can quote the key it refused, a message id or a number among them.
 */
export function safeError(error: unknown): Error {
  const original = error instanceof Error ? error : new Error(String(error));
  const safe = new Error(scrub(original.message));
  safe.name = original.name;
  if (original.stack !== undefined) safe.stack = scrub(original.stack);
  const code = (original as { code?: unknown }).code;
  if (typeof code === 'string' || typeof code === 'number') Object.assign(safe, { code });
  return safe;
}
