// What the Functions host (non-streaming HTTP, the app's setting) hands a v4 Node function, so that
// the local host and the tests build the same HttpRequest as Azure does (azure-functions-host,
// GrpcMessageConversionExtensions.ToRpcHttp): the query as a dictionary whose keys ignore case and
// whose repeated values are joined with ',' (`q=a&q=b` arrives as one `q`, "a,b"); a header given
// twice as one value joined with ','; and a body only when the request declared a Content-Length
// (a chunked body never reaches the function).
import { HttpRequest } from '@azure/functions';

/** The query as the host's dictionary holds it (ASP.NET Core's, keys compared ignoring case). */
export function hostQuery(search: URLSearchParams): Record<string, string> {
  const byKey = new Map<string, { key: string; values: string[] }>();
  for (const [key, value] of search) {
    const entry = byKey.get(key.toLowerCase());
    if (entry) entry.values.push(value);
    else byKey.set(key.toLowerCase(), { key, values: [value] });
  }
  return Object.fromEntries([...byKey.values()].map((e) => [e.key, e.values.join(',')]));
}

export interface HostRequestInit {
  method: string;
  url: string;
  /** Header values as they came, one entry per line of a header given more than once. */
  headers: Record<string, string | readonly string[]>;
  params?: Record<string, string>;
  body?: Buffer | string;
}

export function hostRequest(init: HostRequestInit): HttpRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(init.headers)) {
    const key = name.toLowerCase();
    const values = typeof value === 'string' ? [value] : [...value];
    headers[key] = headers[key] === undefined ? values.join(',') : [headers[key], ...values].join(',');
  }
  const declared = Number(headers['content-length'] ?? '');
  const bytes = typeof init.body === 'string' ? Buffer.from(init.body, 'utf8') : init.body;
  return new HttpRequest({
    method: init.method,
    url: init.url,
    headers,
    query: hostQuery(new URL(init.url).searchParams),
    params: init.params ?? {},
    ...(bytes?.length && declared > 0 ? { body: { bytes } } : {}),
  });
}
