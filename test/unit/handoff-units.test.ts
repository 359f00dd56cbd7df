// Pure parts of human handoff: the command words, when a handoff is in force, and the operator
// message body's validation (400 naming the field).
import { describe, expect, it } from 'vitest';
import { parseCommand } from '../../shared/bot/commands';
import { loadConfig } from '../../shared/config';
import { HELP_TEXT } from '../../shared/bot/texts';
import { activeHandoff } from '../../shared/data';
import { isAppError } from '../../shared/errors';
import { parseBody } from '../../shared/manage/routes';
import { SendBodySchema } from '../../shared/manage/schemas';
import { thrown } from '../helpers/thrown';

describe('the human command', () => {
  it('is recognised as human or agent, whole message only, and listed in help', () => {
    expect(parseCommand('human')).toBe('human');
    expect(parseCommand('  Agent! ')).toBe('human');
    expect(parseCommand('HUMAN?')).toBe('human');
    expect(parseCommand('I want a human')).toBeNull();
    expect(HELP_TEXT).toMatch(/human.*agent/);
  });
});

describe('activeHandoff', () => {
  const since = new Date('2026-01-01T10:00:00Z');
  const handoff = { since, by: 'ops', activeAt: new Date('2026-01-01T12:00:00Z') };
  it('is in force until HANDOFF_HOURS after the last operator activity', () => {
    expect(activeHandoff({ handoff: null }, since, 24)).toBeNull();
    expect(activeHandoff({ handoff }, new Date('2026-01-02T11:59:59Z'), 24)).toBe(handoff);
    expect(activeHandoff({ handoff }, new Date('2026-01-02T12:00:00Z'), 24)).toBeNull();
    expect(activeHandoff({ handoff }, new Date('2026-01-01T12:59:00Z'), 1)).toBe(handoff);
    expect(activeHandoff({ handoff }, new Date('2026-01-01T13:00:00Z'), 1)).toBeNull();
  });
});

describe('operator message body', () => {
  const message = (body: unknown): string => {
    const error = thrown(() => parseBody(SendBodySchema, body));
    expect(isAppError(error, 'INVALID_INPUT')).toBe(true);
    return (error as Error).message;
  };

  it('accepts text up to 4096 characters or a template', () => {
    expect(parseBody(SendBodySchema, { text: 'x'.repeat(4096) })).toEqual({ text: 'x'.repeat(4096) });
    expect(parseBody(SendBodySchema, { template: { name: 'hello_world', language: 'en_US' } })).toEqual({
      template: { name: 'hello_world', language: 'en_US', parameters: [] },
    });
  });

  it('names the bad field', () => {
    expect(message(undefined)).toMatch(/JSON body is required/);
    expect(message({})).toMatch(/"text"/);
    expect(message({ text: 'x'.repeat(4097) })).toMatch(/"text".*4096/);
    expect(message({ text: '' })).toMatch(/"text".*empty/);
    expect(message({ template: { name: 'x' } })).toMatch(/"template\.language"/);
    expect(message({ template: { name: 'x', language: 'en', parameters: 'a' } })).toMatch(
      /"template\.parameters"/,
    );
    expect(message({ template: { name: 'x', language: 'en', parameters: Array(21).fill('p') } })).toMatch(
      /"template\.parameters".*20/,
    );
    expect(message({ text: 'hi', to: '123' })).toMatch(/"to".*unknown/);
    expect(message([])).toMatch(/"body"/);
  });

  it("names an unknown field inside the template by its path, as it names the template's own fields", () => {
    expect(message({ template: { name: 'hello_world', language: 'en_US', lang: 'de' } })).toBe(
      'invalid body field "template.lang": unknown field',
    );
    expect(message({ template: { name: 'hello_world', language: 'en', foo: 1, bar: 2 } })).toBe(
      'invalid body field "template.foo", "template.bar": unknown field',
    );
  });
});

describe('HANDOFF_HOURS', () => {
  const base = { WHATSAPP_VERIFY_TOKEN: 'v', WHATSAPP_APP_SECRET: 's' };
  it('defaults to 24 and accepts whole hours from 1 to 720', () => {
    expect(loadConfig(base).handoffHours).toBe(24);
    expect(loadConfig({ ...base, HANDOFF_HOURS: '48' }).handoffHours).toBe(48);
    expect(loadConfig({ ...base, HANDOFF_HOURS: '' }).handoffHours).toBe(24);
    for (const bad of ['0', '721', '1.5', 'soon']) {
      expect(() => loadConfig({ ...base, HANDOFF_HOURS: bad }), bad).toThrow(/HANDOFF_HOURS/);
    }
  });
});
