// Management API tokens: only the SHA-256 hash of a token is stored, with expiry, revocation and
// last use.
import { randomBytes } from 'node:crypto';
import type { Gateway } from './gateway';

export interface TokenDoc {
  _id: string;
  name: string;
  /** SHA-256 (hex) of the token; the token itself is never stored. */
  hash: string;
  createdAt: Date;
  expiresAt: Date | null;
  revokedAt: Date | null;
  lastUsedAt: Date | null;
}

export interface ApiToken {
  readonly id: string;
  readonly name: string;
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly lastUsedAt: Date | null;
}

const toToken = (d: TokenDoc): ApiToken => ({
  id: d._id,
  name: d.name,
  createdAt: d.createdAt,
  expiresAt: d.expiresAt,
  revokedAt: d.revokedAt,
  lastUsedAt: d.lastUsedAt,
});

/** Last-use times are written at most this often (a write per request would cost RUs). */
const LAST_USED_GRANULARITY_MS = 60_000;

export class TokensRepository {
  constructor(private readonly tokens: Gateway<TokenDoc>) {}

  async create(input: {
    name: string;
    hash: string;
    createdAt: Date;
    expiresAt: Date | null;
  }): Promise<ApiToken> {
    const doc: TokenDoc = {
      _id: randomBytes(5).toString('hex'),
      name: input.name,
      hash: input.hash,
      createdAt: input.createdAt,
      expiresAt: input.expiresAt,
      revokedAt: null,
      lastUsedAt: null,
    };
    await this.tokens.insertOne(doc);
    return toToken(doc);
  }

  async findByHash(hash: string): Promise<ApiToken | null> {
    const doc = await this.tokens.findOne({ hash });
    return doc ? toToken(doc) : null;
  }

  async list(limit = 1000): Promise<ApiToken[]> {
    const docs = await this.tokens.find({}, { sort: { _id: 1 }, limit });
    return docs.map(toToken);
  }

  /** True when the token exists (revoking twice keeps the first time). */
  async revoke(id: string, at: Date): Promise<boolean> {
    const found = await this.tokens.findOne({ _id: id }, { projection: { _id: 1 } });
    if (!found) return false;
    await this.tokens.updateOne({ _id: id, revokedAt: null }, { $set: { revokedAt: at } });
    return true;
  }

  async touch(id: string, at: Date): Promise<void> {
    await this.tokens.updateOne(
      {
        _id: id,
        $or: [
          { lastUsedAt: null },
          { lastUsedAt: { $lt: new Date(at.getTime() - LAST_USED_GRANULARITY_MS) } },
        ],
      },
      { $set: { lastUsedAt: at } },
    );
  }
}
