// The management API as the dashboard uses it: the JSON shapes it reads and one fetch wrapper that
// adds the bearer token and turns error answers into ApiError.

export interface Handoff {
  since: string;
  by: string;
  expiresAt: string;
}

export interface User {
  id: string;
  waId: string | null;
  bsuid: string | null;
  name: string | null;
  createdAt: string;
  lastMessageAt: string | null;
  lastMessagePreview: string | null;
  messageCount: number;
  optedOut: boolean;
  handoff: Handoff | null;
}

export interface Message {
  id: string;
  userId: string;
  waMessageId: string | null;
  direction: 'inbound' | 'outbound';
  type: string;
  text: string;
  status: string;
  createdAt: string;
  /** An inbound message: when it reached us; null otherwise. */
  receivedAt: string | null;
  role: 'conversation' | 'command' | 'notice' | 'operator';
  by: string | null;
  /** Why it failed, or why the bot answered it as it did (unanswered, an apology); else null. */
  error: { code: number | string | null; title: string; detail: string | null } | null;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export interface Chat {
  user: User;
  lastMessage: Message | null;
}

export interface Stats {
  users: { total: number; optedOut: number; active24h: number };
  messages: { total: number; inbound: number; outbound: number; failed: number };
  ai: { requests: number; tokens: number; models?: { model: string; requests: number; tokens: number }[] };
  daily: { date: string; inbound: number; outbound: number; newUsers: number }[];
}

export interface Template {
  name: string;
  language: string;
  parameters: string[];
}

const TOKEN_KEY = 'manageToken';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds after which a retry may succeed (Retry-After), when the server said. */
    readonly retryAfter: number | null = null,
  ) {
    super(message);
  }
}

export const token = (): string | null => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (value: string): void => sessionStorage.setItem(TOKEN_KEY, value);
export const clearToken = (): void => sessionStorage.removeItem(TOKEN_KEY);

interface ErrorBody {
  error?: { code?: string; message?: string };
}

/** Calls /api/manage/<path>; resolves with the JSON answer (null for 204). */
export async function api<T>(
  path: string,
  init: { method?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<T> {
  const headers: Record<string, string> = { ...init.headers, Authorization: `Bearer ${token() ?? ''}` };
  const request: RequestInit = { method: init.method ?? 'GET', headers };
  if (init.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    request.body = JSON.stringify(init.body);
  }
  let response: Response;
  try {
    response = await fetch(`/api/manage/${path}`, request);
  } catch {
    // No answer at all (network down, server gone): say so instead of the browser's "Failed to fetch".
    throw new ApiError(0, 'UNREACHABLE', 'The server cannot be reached. The page keeps trying.');
  }
  if (response.status === 204) return null as T;
  const body = (await response.json().catch(() => ({}))) as unknown;
  if (!response.ok) {
    const error = (body as ErrorBody).error;
    const retryAfter = Number(response.headers.get('Retry-After') ?? '');
    throw new ApiError(
      response.status,
      error?.code ?? 'HTTP',
      error?.message ?? `HTTP ${response.status}`,
      retryAfter > 0 ? retryAfter : null,
    );
  }
  return body as T;
}

/** A new Idempotency-Key (a UUID where the page is a secure context, else 128 random bits). */
export function newIdempotencyKey(): string {
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID();
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join(
    '',
  );
}

export const userPath = (id: string, rest = ''): string => `users/${encodeURIComponent(id)}${rest}`;
