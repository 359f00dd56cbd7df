// Webhook bodies too large for one queue message (rare): kept whole in `events` (kind
// `inbound_spill`), in chunks under Cosmos DB's document limit, under the SHA-256 of the body,
// until the ingest function has stored what they hold. Written only on that rare path.
import { Binary } from 'mongodb';
import type { EventDoc } from './events';
import type { Gateway } from './gateway';

export const SPILL_KIND = 'inbound_spill';
/** Well under Cosmos DB's 2 MB document limit, with room for the base64 of wire protocols. */
const CHUNK_BYTES = 768 * 1024;

interface SpillPayload {
  part: number;
  parts: number;
  bytes: number;
  data: Binary;
}

const chunkId = (id: string, part: number) => `spill:${id}:${part}`;

export class SpillsRepository {
  constructor(private readonly events: Gateway<EventDoc>) {}

  /** Stores a body under `id` (idempotent: the same id always holds the same bytes). */
  async put(id: string, body: Buffer): Promise<void> {
    const parts = Math.max(1, Math.ceil(body.length / CHUNK_BYTES));
    for (let part = 0; part < parts; part++) {
      const payload: SpillPayload = {
        part,
        parts,
        bytes: body.length,
        data: new Binary(body.subarray(part * CHUNK_BYTES, (part + 1) * CHUNK_BYTES)),
      };
      await this.events.replaceOne(
        { _id: chunkId(id, part) },
        {
          _id: chunkId(id, part),
          kind: SPILL_KIND,
          reason: 'webhook body larger than a queue message',
          createdAt: new Date(),
          userId: null,
          payload,
        },
      );
    }
  }

  /** The body stored under `id`, or null when it is not (or no longer wholly) there. */
  async take(id: string): Promise<Buffer | null> {
    const first = await this.events.findOne({ _id: chunkId(id, 0) });
    const head = first?.payload as SpillPayload | undefined;
    if (!head) return null;
    const chunks: Buffer[] = [Buffer.from(head.data.buffer)];
    for (let part = 1; part < head.parts; part++) {
      const doc = await this.events.findOne({ _id: chunkId(id, part) });
      const payload = doc?.payload as SpillPayload | undefined;
      if (!payload) return null;
      chunks.push(Buffer.from(payload.data.buffer));
    }
    const body = Buffer.concat(chunks);
    return body.length === head.bytes ? body : null;
  }

  /** Deletes a body once what it holds is stored. */
  async remove(id: string): Promise<void> {
    const head = await this.events.findOne({ _id: chunkId(id, 0) });
    const parts = (head?.payload as SpillPayload | undefined)?.parts ?? 0;
    // The head goes last: a half-finished removal still says how many parts to remove.
    for (let part = parts - 1; part >= 0; part--) {
      await this.events.deleteOne({ _id: chunkId(id, part) });
    }
  }
}
