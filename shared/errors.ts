// The closed set of application error codes and their HTTP status, mapped in one place at the edge.

export const ErrorCode = {
  BAD_SIGNATURE: 'BAD_SIGNATURE',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  /** A body sent without Content-Length (chunked): the Functions host passes the function none. */
  LENGTH_REQUIRED: 'LENGTH_REQUIRED',
  INVALID_INPUT: 'INVALID_INPUT',
  UNAUTHORIZED: 'UNAUTHORIZED',
  FORBIDDEN: 'FORBIDDEN',
  NOT_FOUND: 'NOT_FOUND',
  /** Free text to a user whose last message is more than 24 hours old: only a template may go. */
  OUTSIDE_WINDOW: 'OUTSIDE_WINDOW',
  /** The user opted out with `stop`: operators cannot message them either. */
  OPTED_OUT: 'OPTED_OUT',
  /** The user has neither a number nor a business-scoped id (their number went to someone else). */
  UNREACHABLE: 'UNREACHABLE',
  /** A send whose Idempotency-Key names one still under way, or interrupted before its outcome was stored. */
  IN_PROGRESS: 'IN_PROGRESS',
  /** An Idempotency-Key given again with another request (another body, or another token). */
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  THROTTLED: 'THROTTLED',
  /** Too many failed management authentications from one client this minute. */
  TOO_MANY_REQUESTS: 'TOO_MANY_REQUESTS',
  UNAVAILABLE: 'UNAVAILABLE',
  UPSTREAM_FAILED: 'UPSTREAM_FAILED',
  CONFIG: 'CONFIG',
  INTERNAL: 'INTERNAL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export const httpStatusOf: Record<ErrorCode, number> = {
  BAD_SIGNATURE: 401,
  PAYLOAD_TOO_LARGE: 413,
  LENGTH_REQUIRED: 411,
  INVALID_INPUT: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  OUTSIDE_WINDOW: 409,
  OPTED_OUT: 409,
  UNREACHABLE: 409,
  IN_PROGRESS: 409,
  IDEMPOTENCY_KEY_REUSED: 422,
  THROTTLED: 503,
  TOO_MANY_REQUESTS: 429,
  UNAVAILABLE: 503,
  UPSTREAM_FAILED: 502,
  CONFIG: 500,
  INTERNAL: 500,
};

export class AppError extends Error {
  override readonly name = 'AppError';
  /** Seconds after which a retry may succeed (the `Retry-After` header of a 429 or 503). */
  readonly retryAfterSeconds: number | undefined;
  /** The message is written for the client (nothing internal in it): answered even with a 5xx. */
  readonly exposed: boolean;
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; retryAfterSeconds?: number; exposed?: boolean },
  ) {
    super(message, options);
    this.retryAfterSeconds = options?.retryAfterSeconds;
    this.exposed = options?.exposed ?? false;
  }
}

/** Normalises any throwable into an Error (like @azure/core-util's ensureErrorType). */
export function ensureError(value: unknown): Error {
  if (value instanceof Error) return value;
  try {
    return new Error(typeof value === 'string' ? value : JSON.stringify(value));
  } catch {
    return new Error(String(value));
  }
}

export function isAppError(value: unknown, code?: ErrorCode): value is AppError {
  return value instanceof AppError && (code === undefined || value.code === code);
}
