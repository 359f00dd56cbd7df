// Pure parts of the management API: cursors, query validation, bearer parsing, token states, the
// dashboard assets (no inline code, no markup from data) and the OpenAPI document.
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { isAppError } from '../../shared/errors';
import type { DataStore } from '../../shared/data';
import {
  authenticate,
  bearerToken,
  clientOf,
  FailureLimiter,
  hashToken,
  MAX_FAILURES_PER_MINUTE,
  MAX_LIMITER_CLIENTS,
  newToken,
  tokenState,
} from '../../shared/manage/auth';
import { cursorCodec } from '../../shared/manage/cursor';
import { DASHBOARD_CSP, DASHBOARD_CSS, DASHBOARD_HTML, dashboardScript } from '../../shared/manage/dashboard';
import { openApiDocument } from '../../shared/manage/openapi';
import { MANAGE_ROUTES } from '../../shared/manage/routes';
import { SearchQuerySchema, UsersQuerySchema } from '../../shared/manage/schemas';
import { cursorScope, parseQuery } from '../../shared/manage/service';
import { formatToken } from '../../shared/manage/tokens';
import { thrown } from '../helpers/thrown';

describe('cursors', () => {
  const codec = cursorCodec('the app secret');
  const scope = cursorScope.userMessages('u_1');

  it('round-trip an opaque position, encrypted: the id (a wamid holds a number) is not readable', () => {
    const position = { t: new Date('2026-01-02T03:04:05.678Z'), id: 'wamid.HBgLMTU1NTAxMDAwMDEVAgASGA' };
    const cursor = codec.encode(position, scope);
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(Buffer.from(cursor ?? '', 'base64url').toString('latin1')).not.toContain('wamid');
    expect(Buffer.from(cursor ?? '', 'base64url').toString('latin1')).not.toContain('HBgL');
    expect(codec.decode(cursor ?? undefined, scope)).toEqual(position);
    expect(codec.encode(null, scope)).toBeNull();
    expect(codec.decode(undefined, scope)).toBeNull();
  });

  it('reject anything else naming the parameter: forged, altered, truncated, of another deployment or of another list', () => {
    const good = codec.encode({ t: new Date(), id: 'u_1' }, scope) ?? '';
    const altered = Buffer.from(good, 'base64url');
    altered.writeUInt8((altered.at(-1) ?? 0) ^ 1, altered.length - 1);
    const raw = Buffer.from(good, 'base64url');
    for (const bad of [
      'x',
      Buffer.from('{"t":"2026-01-02T03:04:05.678Z","id":"a"}').toString('base64url'),
      Buffer.from('[]').toString('base64url'),
      altered.toString('base64url'),
      good.slice(0, -4),
      // The tag cut short (GCM would accept a 4-byte tag unless its length is fixed).
      Buffer.concat([raw.subarray(0, 12), raw.subarray(12, 16), raw.subarray(28)]).toString('base64url'),
      cursorCodec('another secret').encode({ t: new Date(), id: 'u_1' }, scope) ?? '',
      codec.encode({ t: new Date(), id: 'u_1' }, cursorScope.userMessages('u_2')) ?? '',
      codec.encode({ t: new Date(), id: 'u_1' }, cursorScope.users(null)) ?? '',
      codec.encode({ t: new Date(), id: 'u_1' }, cursorScope.waiting()) ?? '',
    ]) {
      const error = thrown(() => codec.decode(bad, scope, 'body field'));
      expect(isAppError(error, 'INVALID_INPUT')).toBe(true);
      expect((error as Error).message).toBe(
        'invalid body field "cursor": not a cursor of this list (give the nextCursor of its previous page)',
      );
    }
  });

  it('bind a search to its words: the cursor of one search does not page another', () => {
    const position = { t: new Date(), id: 'm_1' };
    const cursor = codec.encode(position, cursorScope.search('cafe')) ?? undefined;
    expect(codec.decode(cursor, cursorScope.search('cafe'))).toEqual(position);
    expect(
      isAppError(
        thrown(() => codec.decode(cursor, cursorScope.search('tea'))),
        'INVALID_INPUT',
      ),
    ).toBe(true);
    // The same list asked otherwise (case, accents, order of the words) is the same list.
    const search = codec.encode(position, cursorScope.search('Café au lait')) ?? undefined;
    expect(codec.decode(search, cursorScope.search('lait  CAFE au'))).toEqual(position);
    const users = codec.encode(position, cursorScope.users('ana')) ?? undefined;
    expect(codec.decode(users, cursorScope.users('ANA'))).toEqual(position);
    const number = codec.encode(position, cursorScope.users('+49 170')) ?? undefined;
    expect(codec.decode(number, cursorScope.users('49170'))).toEqual(position);
    expect(
      isAppError(
        thrown(() => codec.decode(users, cursorScope.users('bob'))),
        'INVALID_INPUT',
      ),
    ).toBe(true);
    expect(
      isAppError(
        thrown(() => codec.decode(users, cursorScope.search('ana'))),
        'INVALID_INPUT',
      ),
    ).toBe(true);
    // A q with no words (punctuation only) lists no one: the cursor of the list of all users does
    // not page it, nor does its own (empty) list's page the list of all users.
    const everyone = codec.encode(position, cursorScope.users(null)) ?? undefined;
    expect(
      isAppError(
        thrown(() => codec.decode(everyone, cursorScope.users('!!!'))),
        'INVALID_INPUT',
      ),
    ).toBe(true);
    const none = codec.encode(position, cursorScope.users('!!!')) ?? undefined;
    expect(
      isAppError(
        thrown(() => codec.decode(none, cursorScope.users(null))),
        'INVALID_INPUT',
      ),
    ).toBe(true);
  });
});

describe('query validation', () => {
  it('defaults and bounds limit', () => {
    expect(parseQuery(UsersQuerySchema, new URLSearchParams())).toEqual({ limit: 50 });
    expect(parseQuery(UsersQuerySchema, new URLSearchParams('limit=200&q=%20ana%20'))).toEqual({
      limit: 200,
      q: 'ana',
    });
    for (const limit of ['0', '201', '-1', 'ten', '2.5', '1e2', '0x10', '+5', ' 5']) {
      const error = thrown(() => parseQuery(UsersQuerySchema, new URLSearchParams({ limit })));
      expect(isAppError(error, 'INVALID_INPUT')).toBe(true);
      expect((error as Error).message).toMatch(/"limit"/);
    }
  });

  it('refuses a parameter of the schema given twice, naming it, and ignores others', () => {
    const error = thrown(() => parseQuery(UsersQuerySchema, new URLSearchParams('limit=5&limit=7')));
    expect(isAppError(error, 'INVALID_INPUT')).toBe(true);
    expect((error as Error).message).toMatch(/"limit"/);
    expect(parseQuery(UsersQuerySchema, new URLSearchParams('x=1&x=2&limit=3'))).toEqual({ limit: 3 });
    const inherited = 'constructor=1&constructor=2&toString=1&__proto__=1&__proto__=2';
    expect(parseQuery(UsersQuerySchema, new URLSearchParams(inherited))).toEqual({ limit: 50 });
  });

  it('requires a word in q for search', () => {
    expect((thrown(() => parseQuery(SearchQuerySchema, new URLSearchParams())) as Error).message).toContain(
      '"q"',
    );
    expect(
      (thrown(() => parseQuery(SearchQuerySchema, new URLSearchParams('q=...'))) as Error).message,
    ).toContain('"q"');
    expect(parseQuery(SearchQuerySchema, new URLSearchParams('q=caf%C3%A9')).q).toBe('café');
  });
});

describe('tokens', () => {
  it('parses bearer headers', () => {
    expect(bearerToken('Bearer abc.def')).toBe('abc.def');
    expect(bearerToken('bearer   abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeNull();
    expect(bearerToken('Bearer')).toBeNull();
    expect(bearerToken(null)).toBeNull();
  });

  it('takes the client from the last X-Forwarded-For entry, without its port', () => {
    // The last entry is the one Azure's front end appended; the caller wrote the ones before it.
    expect(clientOf('198.51.100.7, 203.0.113.9:50123')).toBe('203.0.113.9');
    expect(clientOf('203.0.113.9')).toBe('203.0.113.9');
    expect(clientOf('1.1.1.1,2.2.2.2')).toBe('2.2.2.2');
    // An IPv6 address counts by its /64 network, however it is written.
    expect(clientOf('spoofed, [2001:DB8::1]:443')).toBe('2001:db8:0:0::/64');
    expect(clientOf('[2001:db8::1]')).toBe('2001:db8:0:0::/64');
    expect(clientOf('[2001:0db8:0000:0000:ffff:1:2:3%12]:8080')).toBe('2001:db8:0:0::/64');
    expect(clientOf('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(clientOf('::1')).toBe('0:0:0:0::/64');
    expect(clientOf('fe80::')).toBe('fe80:0:0:0::/64');
    // A bare IPv6 address is not read as address:port.
    expect(clientOf('2001:db8:1:2:3:4:5:1')).toBe('2001:db8:1:2::/64');
    expect(clientOf('2001:db8:1:2::1')).toBe(clientOf('2001:db8:1:2:ffff::1'));
    expect(clientOf('2001:db8:1:3::1')).not.toBe(clientOf('2001:db8:1:2::1'));
    // IPv4-mapped: the IPv4 address, in either notation.
    expect(clientOf('[::ffff:203.0.113.9]:1')).toBe('203.0.113.9');
    expect(clientOf('::FFFF:cb00:7109')).toBe('203.0.113.9');
    // Not an address (the front end writes one; anything else is kept as it is, in lower case).
    expect(clientOf('Unknown')).toBe('unknown');
    expect(clientOf(null)).toBe('direct');
    expect(clientOf('')).toBe('direct');
    expect(clientOf('198.51.100.7, ')).toBe('direct');
  });

  it('makes random tokens stored only as SHA-256 hashes', () => {
    const a = newToken();
    const b = newToken();
    expect(a.token).not.toBe(b.token);
    expect(a.hash).toBe(hashToken(a.token));
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.token.length).toBeGreaterThanOrEqual(40);
  });

  it('tells active, expired and revoked apart, and lists without the token', () => {
    const now = new Date('2026-03-01T00:00:00Z');
    const base = { id: 'abc123', name: 'ops', createdAt: new Date('2026-01-01T00:00:00Z'), lastUsedAt: null };
    expect(tokenState({ ...base, expiresAt: null, revokedAt: null }, now)).toBe('active');
    expect(tokenState({ ...base, expiresAt: new Date('2026-02-01T00:00:00Z'), revokedAt: null }, now)).toBe(
      'expired',
    );
    expect(tokenState({ ...base, expiresAt: null, revokedAt: now }, now)).toBe('revoked');
    const line = formatToken({ ...base, expiresAt: null, revokedAt: null }, now);
    expect(line.split('\t').slice(0, 2)).toEqual(['abc123', 'ops']);
    expect(line).toContain('expires=never');
    expect(line.endsWith('active')).toBe(true);
  });
});

describe('failure limiter', () => {
  const GOOD = 'wam_the-one-stored-token';
  /** A tokens port that knows GOOD only, answers after a tick (a database read), and counts lookups. */
  function tokensPort() {
    const port = {
      lookups: 0,
      data: {
        tokens: {
          findByHash: async (hash: string) => {
            port.lookups++;
            await new Promise((resolve) => setTimeout(resolve, 2));
            return hash === hashToken(GOOD)
              ? {
                  id: 't1',
                  name: 'ops',
                  createdAt: new Date(0),
                  expiresAt: null,
                  revokedAt: null,
                  lastUsedAt: null,
                }
              : null;
          },
          touch: async () => undefined,
        },
      } as unknown as Pick<DataStore, 'tokens'>,
    };
    return port;
  }
  const codeOf = (error: unknown) => (isAppError(error) ? error.code : String(error));
  const attempt = (
    limiter: FailureLimiter,
    port: ReturnType<typeof tokensPort>,
    client: string,
    token: string,
    now: Date,
  ) =>
    authenticate(`Bearer ${token}`, {
      data: port.data,
      bootstrapToken: undefined,
      now,
      limiter,
      client,
    }).then((caller) => caller.name, codeOf);

  it('answers 429 to a burst of concurrent guesses from one client after 10 failures (10 lookups, not one per guess)', async () => {
    const limiter = new FailureLimiter();
    const port = tokensPort();
    const now = new Date('2026-03-01T00:00:00Z');
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) => attempt(limiter, port, '203.0.113.5', `guess-${i}`, now)),
    );
    expect(results.filter((r) => r === 'UNAUTHORIZED')).toHaveLength(MAX_FAILURES_PER_MINUTE);
    expect(results.filter((r) => r === 'TOO_MANY_REQUESTS')).toHaveLength(50 - MAX_FAILURES_PER_MINUTE);
    expect(port.lookups).toBe(MAX_FAILURES_PER_MINUTE);
  });

  it('lets many concurrent requests with a good token through (they wait, never answered 429)', async () => {
    const limiter = new FailureLimiter();
    const port = tokensPort();
    const now = new Date('2026-03-01T00:00:00Z');
    const results = await Promise.all(
      Array.from({ length: 30 }, () => attempt(limiter, port, '198.51.100.8', GOOD, now)),
    );
    expect(results).toEqual(Array.from({ length: 30 }, () => 'ops'));
    // A client that never failed leaves nothing behind.
    expect(limiter.size).toBe(0);
  });

  it('counts the time a request waited: a window it begins after the wait starts when the wait ended', async () => {
    const limiter = new FailureLimiter();
    const port = tokensPort();
    const lookup = port.data.tokens.findByHash.bind(port.data.tokens);
    const WAIT_MS = 300;
    // One guess is checked slowly (its lookup takes WAIT_MS).
    port.data.tokens.findByHash = async (hash) => {
      if (hash === hashToken('slow-guess')) await new Promise((resolve) => setTimeout(resolve, WAIT_MS));
      return lookup(hash);
    };
    const at = new Date('2026-03-01T00:00:00Z');
    for (let i = 1; i < MAX_FAILURES_PER_MINUTE; i++)
      expect(await attempt(limiter, port, 'w', `guess-${i}`, at)).toBe('UNAUTHORIZED');
    const slow = attempt(limiter, port, 'w', 'slow-guess', at);
    // 10 ms before the client's minute ends, a guess must wait for the slow one; when that one
    // is decided (the tenth failure), the minute has ended: the waiting guess is checked, in a
    // window of its own that starts when its wait ended.
    const request = at.getTime() + 60_000 - 10;
    const waited = attempt(limiter, port, 'w', 'guess-10', new Date(request));
    expect(await slow).toBe('UNAUTHORIZED');
    expect(await waited).toBe('UNAUTHORIZED');
    for (let i = 11; i < 10 + MAX_FAILURES_PER_MINUTE; i++)
      expect(await attempt(limiter, port, 'w', `guess-${i}`, new Date(request + WAIT_MS))).toBe(
        'UNAUTHORIZED',
      );
    // A minute after the waiting guess came, but not yet a minute after its wait ended: locked.
    expect(await attempt(limiter, port, 'w', GOOD, new Date(request + 60_000 + WAIT_MS / 2))).toBe(
      'TOO_MANY_REQUESTS',
    );
    expect(await attempt(limiter, port, 'w', GOOD, new Date(request + 60_000 + 3 * WAIT_MS))).toBe('ops');
  });

  it('keeps a lockout while more clients than it remembers fail, and forgets clients whose minute ended', async () => {
    const limiter = new FailureLimiter();
    const port = tokensPort();
    port.data.tokens.findByHash = async () => null;
    const start = new Date('2026-03-01T00:00:00Z');
    for (let i = 0; i < MAX_FAILURES_PER_MINUTE; i++)
      expect(await attempt(limiter, port, 'locked', `guess-${i}`, start)).toBe('UNAUTHORIZED');
    // More distinct clients than the limiter remembers, within the locked client's minute.
    const soon = new Date(start.getTime() + 1_000);
    for (let i = 0; i < MAX_LIMITER_CLIENTS + 50; i++) await attempt(limiter, port, `c${i}`, 'nope', soon);
    expect(limiter.size).toBeLessThanOrEqual(MAX_LIMITER_CLIENTS);
    expect(await attempt(limiter, port, 'locked', GOOD, soon)).toBe('TOO_MANY_REQUESTS');
    // A minute later one failure is enough to forget every window that has ended.
    const later = new Date(start.getTime() + 62_000);
    expect(await attempt(limiter, port, 'another', 'nope', later)).toBe('UNAUTHORIZED');
    expect(limiter.size).toBe(1);
  });
});

describe('dashboard assets', () => {
  it('has no inline script or style and loads its own files', () => {
    expect(DASHBOARD_HTML).toContain('<script type="module" src="/api/manage/js/app.js"></script>');
    expect(DASHBOARD_HTML).toContain('<link rel="stylesheet" href="/api/manage/app.css">');
    expect(DASHBOARD_HTML).not.toMatch(/<script>(?!<)|<style|\sstyle=|\son[a-z]+=/i);
    expect(DASHBOARD_HTML).not.toMatch(/https?:\/\//);
    expect(DASHBOARD_CSS).not.toMatch(/@import|url\(/);
    expect(DASHBOARD_CSP).toContain("script-src 'self'");
    expect(DASHBOARD_CSP).toContain("default-src 'none'");
  });

  it('is built from TypeScript modules that never build markup from strings', () => {
    const dir = path.resolve(__dirname, '../../web/dashboard');
    const sources = readdirSync(dir).filter((f) => f.endsWith('.ts'));
    expect(sources).toEqual(expect.arrayContaining(['app.ts', 'api.ts', 'chart.ts']));
    let imports = 0;
    for (const file of sources) {
      const source = readFileSync(path.join(dir, file), 'utf8');
      expect(source).not.toMatch(
        /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/,
      );
      expect(source).not.toContain('localStorage');
      // The compiled module is what the dashboard serves (built by the test run's global setup).
      const compiled = dashboardScript(file.replace(/\.ts$/, '.js'));
      expect(compiled).not.toBeNull();
      // Browser modules import only each other (no CDN, no bare package names).
      for (const [, spec] of (compiled ?? '').matchAll(/\bfrom\s+'([^']+)'/g)) {
        expect(spec).toMatch(/^\.\/[a-z-]+\.js$/);
        imports++;
      }
    }
    // The entry module imports the others: the import check above saw real imports.
    expect(imports).toBeGreaterThan(0);
    expect(readFileSync(path.join(dir, 'api.ts'), 'utf8')).toContain('sessionStorage');
    expect(dashboardScript('../package.json')).toBeNull();
    expect(dashboardScript('missing.js')).toBeNull();
  });
});

describe('openapi', () => {
  it('is an OpenAPI 3 document with bearer security on every operation', () => {
    const doc = openApiDocument() as {
      openapi: string;
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
      components: { securitySchemes: Record<string, unknown> };
    };
    expect(doc.openapi).toBe('3.0.3');
    expect(doc.components.securitySchemes['bearer']).toEqual({ type: 'http', scheme: 'bearer' });
    const operations = Object.values(doc.paths).flatMap((byMethod) => Object.values(byMethod));
    // Every route of the table, so the checks below cannot pass on an empty document.
    expect(operations).toHaveLength(MANAGE_ROUTES.length);
    for (const op of operations) {
      expect(op.security).toEqual([{ bearer: [] }]);
      expect(op.responses).toHaveProperty('401');
      expect(op.responses['429']).toMatchObject({
        headers: { 'Retry-After': { schema: { type: 'integer' } } },
      });
    }
  });

  it('documents the Retry-After of the erase that answers 503, as the contract does', () => {
    const doc = openApiDocument() as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    expect(doc.paths['/manage/users/{id}']?.['delete']?.responses['503']).toMatchObject({
      headers: { 'Retry-After': { schema: { type: 'integer' } } },
    });
  });

  it('documents 400 exactly on the operations that read a path id, query, header or body: stats has none to refuse', () => {
    const doc = openApiDocument() as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
    };
    for (const r of MANAGE_ROUTES) {
      const op = doc.paths[`/${r.path}`]?.[r.method.toLowerCase()];
      const readsInput = r.hasId || !!r.query || !!r.body || !!r.headers;
      expect(op?.responses['400'] !== undefined, `${r.method} ${r.path}`).toBe(readsInput);
    }
    expect(doc.paths['/manage/stats']?.['get']?.responses).not.toHaveProperty('400');
  });

  it('documents 429 on every operation and 413 on those with a body, with the error shape', () => {
    const doc = openApiDocument() as {
      paths: Record<string, Record<string, { requestBody?: unknown; responses: Record<string, unknown> }>>;
    };
    const errorShape = {
      content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
    };
    const operations = Object.values(doc.paths).flatMap((byMethod) => Object.values(byMethod));
    expect(operations).toHaveLength(MANAGE_ROUTES.length);
    const withBody = operations.filter((op) => op.requestBody !== undefined);
    expect(withBody).toHaveLength(MANAGE_ROUTES.filter((r) => r.body).length);
    expect(withBody.length).toBeGreaterThan(0);
    for (const op of operations) {
      expect(op.responses['429']).toMatchObject(errorShape);
      if (op.requestBody) expect(op.responses['413']).toMatchObject(errorShape);
      else expect(op.responses).not.toHaveProperty('413');
    }
  });
});
