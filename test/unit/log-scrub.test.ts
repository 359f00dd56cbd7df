// What errors say once scrubbed: the Functions host logs what a queue or timer function throws,
// message and stack as they are, so the error it gets must hold no number and no message id.
import { describe, expect, it } from 'vitest';
import { definitions, scrubbedErrors } from '../../functions/definitions';
import { ingestDefinition } from '../../functions/ingest';
import { replyDefinition } from '../../functions/reply';
import { sweeperDefinition } from '../../functions/sweeper';
import { webhookReceiveDefinition } from '../../functions/webhook';
import { pseudonym, safeError, scrub } from '../../shared/log';

const NUMBER = '15551234567';
// A wamid as Meta gives it: base64 of data that holds the sender's number.
const WAMID = `wamid.${Buffer.from(`\u0015${NUMBER}\u0015\u0002\u0000\u0012\u0018 3A7D`).toString('base64')}`;
// MongoDB's duplicate-key error quotes the key it refused.
const duplicate = () => {
  const error = new Error(
    `E11000 duplicate key error collection: bot.messages index: _id_ dup key: { _id: "${WAMID}" } from +${NUMBER}`,
  );
  error.name = 'MongoServerError';
  Object.assign(error, { code: 11000 });
  return error;
};

describe('scrub', () => {
  it('replaces each wamid by its pseudonym, and still removes numbers and bearer tokens', () => {
    const text = scrub(`refused ${WAMID}. for +${NUMBER}, Bearer abc.DEF-123`);
    expect(text).toBe(`refused ${pseudonym(WAMID)}. for ***, Bearer ***`);
    expect(WAMID).toContain(Buffer.from(`\u0015${NUMBER}`).toString('base64').slice(0, 8));
  });
});

describe('safeError', () => {
  it('keeps the name and code, and scrubs the message and the stack', () => {
    const safe = safeError(duplicate());
    expect(safe.name).toBe('MongoServerError');
    expect((safe as { code?: unknown }).code).toBe(11000);
    for (const text of [safe.message, safe.stack ?? '']) {
      expect(text).not.toContain(WAMID);
      expect(text).not.toContain(NUMBER);
      expect(text).toContain(pseudonym(WAMID));
    }
    expect(safe.stack).toMatch(/\n\s+at /);
  });

  it('turns what is not an Error into one', () => {
    expect(safeError(`failed for ${NUMBER}`).message).toBe('failed for ***');
  });
});

describe('the functions the host runs', () => {
  it('a queue or timer handler rethrows what it threw, scrubbed', async () => {
    const handler = scrubbedErrors(async (item: unknown) => {
      if (item) throw duplicate();
    });
    await expect(handler(null)).resolves.toBeUndefined();
    const thrown = (await handler(1).then(
      () => null,
      (error: unknown) => error,
    )) as Error;
    expect(thrown).toBeInstanceOf(Error);
    expect(thrown.name).toBe('MongoServerError');
    expect(`${thrown.message}\n${thrown.stack}`).not.toContain(WAMID);
  });

  it('every queue and timer function is registered with that handler, the HTTP ones as they are', () => {
    for (const raw of [ingestDefinition, replyDefinition, sweeperDefinition]) {
      const registered = definitions.find((d) => d.name === raw.name);
      expect(registered?.handler, raw.name).toBeDefined();
      expect(registered?.handler, raw.name).not.toBe(raw.handler);
    }
    const webhook = definitions.find((d) => d.name === webhookReceiveDefinition.name);
    expect(webhook?.handler).toBe(webhookReceiveDefinition.handler);
  });
});
