// Notifications ingest failed on every attempt, kept in `events` (kind `poisoned`), which has no
// time-to-live: Azure Storage deletes an item of `inbound-poison` 7 days after the host put it
// there. Each piece is one person's part of the notification (shared/whatsapp/notification
// `splitByPerson`), filed under that person's subject (./subjects) so that erase and export find
// it, kept whole as JSON text (never cut: a long one in consecutive parts, written before the
// first, which says how many there are), until `npm run replay-poison` puts it back on `inbound`.
import type { EventDoc } from './events';
import type { Gateway } from './gateway';
import type { SubjectKeys } from './subjects';

export const POISONED_KIND = 'poisoned';
/** JSON text per document: with UTF-8's 3 bytes a character at worst, far below Cosmos DB's 2 MB. */
const PART_CHARS = 256 * 1024;

/** One person's piece of a poisoned notification, to keep. */
export interface PoisonedPiece {
  /** The piece as JSON text (or the item's text when it was not JSON). */
  readonly json: string;
  /** The number or business-scoped id it concerns, if any. */
  readonly identifier: string | null;
  /** Meta's latest time in it (retention goes by it), else null: the time it was kept. */
  readonly at: Date | null;
}

/** A kept piece, whole again. */
export interface KeptPiece {
  readonly id: string;
  readonly json: string;
}

/** Text cut into parts of at most `size` characters, never between the halves of a surrogate pair. */
function partsOf(text: string, size = PART_CHARS): string[] {
  const parts: string[] = [];
  for (let start = 0; start < text.length || parts.length === 0;) {
    let end = Math.min(text.length, start + size);
    const last = text.charCodeAt(end - 1);
    if (end < text.length && last >= 0xd800 && last <= 0xdbff) end--;
    parts.push(text.slice(start, end));
    start = end;
  }
  return parts;
}

/** The id of a piece's `part`-th part after its first (whose id is the piece's own). */
export const partId = (head: string, part: number) => `${head}:${part}`;
/** The piece a part (not its first) belongs to. */
export const pieceOfPart = (id: string) => id.slice(0, id.lastIndexOf(':'));
/** Pieces (their first part: the others carry `part`). */
const HEADS = { kind: POISONED_KIND, part: { $exists: false } } as const;

export class PoisonedRepository {
  constructor(
    private readonly events: Gateway<EventDoc>,
    private readonly keys: SubjectKeys,
  ) {}

  /**
   * Keeps the pieces of one poisoned notification. `source` names the notification (the SHA-256 of
   * its body): a piece's id derives from it and the piece's place, so the same item handed over
   * again keeps nothing twice. Returns how many pieces were kept now (the others were before).
   */
  async keep(source: string, pieces: readonly PoisonedPiece[], keptAt: Date): Promise<number> {
    let kept = 0;
    for (const [index, piece] of pieces.entries()) {
      const head = `${POISONED_KIND}:${source.slice(0, 32)}:${index}`;
      const parts = partsOf(piece.json);
      const subject = piece.identifier ? await this.keys.subjectOf(piece.identifier) : null;
      const doc = (part: number): EventDoc => ({
        _id: part === 0 ? head : partId(head, part),
        kind: POISONED_KIND,
        reason:
          parts.length > 1
            ? `notification ingest failed on every attempt (part ${part + 1} of ${parts.length})`
            : 'notification ingest failed on every attempt',
        createdAt: piece.at ?? keptAt,
        userId: null,
        subject,
        payloadJson: parts[part] as string,
        // A part alone is not JSON: read as text (the export joins a piece's parts into one item).
        truncated: parts.length > 1,
        ...(part === 0 ? (parts.length > 1 ? { parts: parts.length } : {}) : { part }),
      });
      // The first part last: a piece is there only once all its parts are.
      for (let part = parts.length - 1; part >= 1; part--) await this.events.insertOne(doc(part));
      if ((await this.events.insertOne(doc(0))) === 'inserted') kept++;
    }
    return kept;
  }

  /** How many pieces are kept. */
  count(): Promise<number> {
    return this.events.count(HEADS);
  }

  /** The ids of the pieces kept now, oldest first. */
  async ids(): Promise<string[]> {
    const docs = await this.events.find(HEADS, { projection: { _id: 1 }, sort: { kind: 1, createdAt: 1 } });
    return docs.map((d) => d._id);
  }

  /** A piece, whole; null when it is gone, or a removal left part of it (it was put back before). */
  async read(id: string): Promise<KeptPiece | null> {
    const head = await this.events.findOne({ _id: id, kind: POISONED_KIND });
    if (!head || head.payloadJson === undefined) return null;
    const texts = [head.payloadJson];
    for (let part = 1; part < (head.parts ?? 1); part++) {
      const doc = await this.events.findOne({ _id: partId(id, part), kind: POISONED_KIND });
      if (doc?.payloadJson === undefined) return null;
      texts.push(doc.payloadJson);
    }
    return { id, json: texts.join('') };
  }

  /** Deletes a piece (once it is back on the queue): its first part last, which says how many there are. */
  async remove(id: string): Promise<void> {
    const head = await this.events.findOne({ _id: id, kind: POISONED_KIND }, { projection: { parts: 1 } });
    for (let part = (head?.parts ?? 1) - 1; part >= 1; part--)
      await this.events.deleteOne({ _id: partId(id, part), kind: POISONED_KIND });
    await this.events.deleteOne({ _id: id, kind: POISONED_KIND });
  }

  /** How many pieces Meta's times put before `cutoff` (retention). */
  countOlderThan(cutoff: Date): Promise<number> {
    return this.events.count({ ...HEADS, createdAt: { $lt: cutoff } });
  }

  /** Deletes the pieces older than `cutoff`, by Meta's time (retention); returns how many. */
  async deleteOlderThan(cutoff: Date): Promise<number> {
    const pieces = await this.countOlderThan(cutoff);
    await this.events.deleteMany({ kind: POISONED_KIND, createdAt: { $lt: cutoff } });
    return pieces;
  }
}
