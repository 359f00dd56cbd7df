// The route table of the management API is the single source of the function registrations and
// the OpenAPI document: every route is registered and documented, and nothing else is.
import { describe, expect, it } from 'vitest';
import { definitions } from '../../functions/definitions';
import type { HttpDefinition } from '../../functions/definition-types';
import { MANAGE_ROUTES } from '../../shared/manage/routes';
import { openApiDocument } from '../../shared/manage/openapi';

const registered = definitions.filter(
  (d): d is HttpDefinition =>
    d.kind === 'http' && d.route.startsWith('manage/') && !/\.(js|css)$|\{name\}$/.test(d.route),
);

describe('management route table', () => {
  it('registers one function per path with exactly the methods of its routes', () => {
    const fromTable = new Map<string, Set<string>>();
    for (const r of MANAGE_ROUTES) fromTable.set(r.path, (fromTable.get(r.path) ?? new Set()).add(r.method));
    expect(registered.map((d) => d.route).sort()).toEqual([...fromTable.keys()].sort());
    for (const d of registered) {
      expect(new Set(d.methods), d.route).toEqual(fromTable.get(d.route));
      expect(d.authLevel).toBe('anonymous');
    }
    expect(new Set(registered.map((d) => d.name)).size).toBe(registered.length);
  });

  it('documents exactly the routes of the table, each with bearer security', () => {
    const doc = openApiDocument() as { paths: Record<string, Record<string, { security?: unknown[] }>> };
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`),
    );
    expect(documented.sort()).toEqual(MANAGE_ROUTES.map((r) => `${r.method} /${r.path}`).sort());
    for (const ops of Object.values(doc.paths))
      for (const op of Object.values(ops)) expect(op.security).toEqual([{ bearer: [] }]);
  });

  it('includes the handoff, operator message and waiting routes', () => {
    const names = MANAGE_ROUTES.map((r) => `${r.method} ${r.path}`);
    expect(names).toEqual(
      expect.arrayContaining([
        'POST manage/users/{id}/handoff',
        'DELETE manage/users/{id}/handoff',
        'POST manage/users/{id}/messages',
        'GET manage/chats',
      ]),
    );
    const send = MANAGE_ROUTES.find((r) => r.method === 'POST' && r.path === 'manage/users/{id}/messages');
    expect(send?.status).toBe(201);
  });
});
