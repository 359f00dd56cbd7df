// Keeps a notification ingest failed on every attempt (an item the host moved to `inbound-poison`)
// in the database, which has no time-to-live, split by the person each of its items names and filed
// under them (erase and export cover it), until `npm run replay-poison` puts it back on `inbound`.
// A spilled body is resolved, kept, and only then its spill removed. The same item handed over
// again keeps nothing twice: the pieces' ids derive from the body.
import { createHash } from 'node:crypto';
import { inboundBody } from './jobs';
import { boundedJson, type PoisonedPiece } from '../data';
import type { Logger } from '../log';
import { splitByPerson } from '../whatsapp/notification';
import type { PoisonPorts } from './ports';

export interface KeptSummary {
  readonly pieces: number;
  /** Pieces kept now (the others were kept by an earlier delivery of the same item). */
  readonly kept: number;
  readonly bytes: number;
}

/** JSON text of a value; one nested deeper than JSON.stringify can write is cut at 32 levels. */
function jsonOf(value: unknown): string {
  try {
    return JSON.stringify(value) ?? 'null';
  } catch {
    return boundedJson(value, Number.MAX_SAFE_INTEGER).json;
  }
}

/** The body an item stands for: its text and value, or the spilled body it refers to. */
async function resolve(
  ports: PoisonPorts,
  item: unknown,
): Promise<{ text: string; value: unknown; json: boolean; spill: string | null } | 'gone'> {
  const body = await inboundBody(ports.data.spills, item);
  // Spills are removed only after their pieces were kept: this item was kept before.
  if (body.kind === 'gone') return 'gone';
  if (body.kind === 'item') {
    const text = typeof item === 'string' ? item : jsonOf(body.value);
    return { text, value: body.value, json: body.json, spill: null };
  }
  try {
    return { text: body.text, value: JSON.parse(body.text), json: true, spill: body.spill };
  } catch {
    return { text: body.text, value: body.text, json: false, spill: body.spill };
  }
}

export async function keepPoisoned(
  ports: PoisonPorts,
  item: unknown,
  log: Logger,
): Promise<KeptSummary | null> {
  const body = await resolve(ports, item);
  if (body === 'gone') {
    log.warn('poisoned spilled notification already kept');
    return null;
  }
  const now = ports.now();
  const whole: PoisonedPiece = { json: body.text, identifier: null, at: null };
  const split = body.json ? splitByPerson(body.value, now) : [];
  const [only] = split;
  // A notification that is one person's (or cannot be split) is kept as its body was.
  const pieces: PoisonedPiece[] =
    only && split.length === 1 && only.payload === body.value
      ? [{ ...whole, identifier: only.identifier }]
      : split.length
        ? split.map((p) => ({ json: jsonOf(p.payload), identifier: p.identifier, at: p.at }))
        : [whole];
  const source = body.spill ?? createHash('sha256').update(body.text).digest('hex');
  const kept = await ports.data.poisoned.keep(source, pieces, now);
  if (body.spill) await ports.data.spills.remove(body.spill);
  const summary = { pieces: pieces.length, kept, bytes: Buffer.byteLength(body.text) };
  log.warn('poisoned notification kept for replay', { ...summary });
  return summary;
}
