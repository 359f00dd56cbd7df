// Payloads as Meta sent them are kept as JSON text, not as documents: whatever their keys (`$`,
// `.`, NUL) and depth, every supported server accepts a string, and a bound on its length keeps
// every document far below Cosmos DB's 2 MB. Written without recursion past `maxDepth`, so a
// notification nested 20,000 levels deep costs microseconds instead of a stack overflow.

export const MAX_RAW_JSON = 64 * 1024;
export const MAX_DEPTH = 32;

export interface BoundedJson {
  readonly json: string;
  /** True when something was cut (too deep or too long); the text is then not valid JSON. */
  readonly truncated: boolean;
}

export function boundedJson(value: unknown, maxLength = MAX_RAW_JSON, maxDepth = MAX_DEPTH): BoundedJson {
  const parts: string[] = [];
  let length = 0;
  let truncated = false;
  const emit = (text: string): boolean => {
    if (length + text.length > maxLength) {
      parts.push(text.slice(0, Math.max(0, maxLength - length)));
      length = maxLength;
      truncated = true;
      return false;
    }
    parts.push(text);
    length += text.length;
    return true;
  };
  const walk = (v: unknown, depth: number): boolean => {
    if (v === null || typeof v === 'boolean') return emit(String(v));
    if (typeof v === 'number') return emit(Number.isFinite(v) ? String(v) : 'null');
    if (typeof v === 'string') return emit(JSON.stringify(v));
    if (typeof v !== 'object') return emit('null');
    if (depth >= maxDepth) {
      truncated = true;
      return emit('"…"');
    }
    if (Array.isArray(v)) {
      if (!emit('[')) return false;
      for (let i = 0; i < v.length; i++) {
        if (i > 0 && !emit(',')) return false;
        if (!walk(v[i], depth + 1)) return false;
      }
      return emit(']');
    }
    if (!emit('{')) return false;
    let first = true;
    for (const [key, item] of Object.entries(v)) {
      if (item === undefined) continue;
      if (!first && !emit(',')) return false;
      first = false;
      if (!emit(`${JSON.stringify(key)}:`) || !walk(item, depth + 1)) return false;
    }
    return emit('}');
  };
  walk(value, 0);
  return { json: parts.join(''), truncated };
}
