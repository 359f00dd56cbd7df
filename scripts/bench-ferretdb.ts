// npm run bench:ferretdb: how fast the embedded FerretDB writes with each SQLite `synchronous`
// setting (sequential inserts and `$inc` on one document, the two writes a turn is made of), in
// interleaved rounds so a busy machine affects every setting alike.
import { MongoClient } from 'mongodb';
import { intOption, parseCli, runMain, type Env, type Io } from './lib/cli';
import { SQLITE_PRAGMAS, startFerretDb } from './lib/ferretdb';
import { ensureFerretDb } from './lib/ferretdb-build';

export const HELP = `
Usage: npm run bench:ferretdb [-- --ops 1000 --rounds 3]

Starts a temporary FerretDB per setting and round, and prints sequential inserts/s and $inc/s
(median of the rounds) for SQLite's default (synchronous FULL), NORMAL, OFF, and what the app uses.

  --ops N       writes of each kind per run (default 1000)
  --rounds N    runs per setting (default 3)
  -h, --help    this help
`;

const SETTINGS: Readonly<Record<string, readonly string[]>> = {
  'default (FULL)': [],
  'synchronous(NORMAL)': ['synchronous(NORMAL)'],
  'synchronous(OFF)': ['synchronous(OFF)'],
};

interface Figures {
  inserts: number;
  incs: number;
}

async function measure(binary: string, pragmas: readonly string[], ops: number): Promise<Figures> {
  const server = await startFerretDb(binary, () => undefined, { pragmas });
  const client = await new MongoClient(server.uri, { retryWrites: false }).connect();
  try {
    const c = client.db('bench').collection<{ _id: string; n?: number; text?: string }>('c');
    await c.insertOne({ _id: 'warm-up' });
    let started = performance.now();
    for (let i = 0; i < ops; i++)
      await c.insertOne({ _id: `m${i}`, text: 'a message of moderate size '.repeat(8) });
    const inserts = ops / ((performance.now() - started) / 1000);
    await c.insertOne({ _id: 'counter', n: 0 });
    started = performance.now();
    for (let i = 0; i < ops; i++) await c.updateOne({ _id: 'counter' }, { $inc: { n: 1 } });
    const incs = ops / ((performance.now() - started) / 1000);
    const counter = await c.findOne({ _id: 'counter' });
    if (counter?.n !== ops) throw new Error(`counter is ${String(counter?.n)}, expected ${ops}`);
    return { inserts, incs };
  } finally {
    await client.close();
    await server.stop();
  }
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
};

export async function main(argv: readonly string[], _env: Env, io: Io): Promise<number> {
  const { values } = parseCli(argv, { ops: { type: 'string' }, rounds: { type: 'string' } });
  const ops = intOption(values['ops'], 'ops', 1000);
  const rounds = intOption(values['rounds'], 'rounds', 3);
  const binary = await ensureFerretDb();
  const results = new Map<string, Figures[]>();
  for (let round = 1; round <= rounds; round++) {
    for (const [name, pragmas] of Object.entries(SETTINGS)) {
      const figures = await measure(binary, pragmas, ops);
      results.set(name, [...(results.get(name) ?? []), figures]);
      io.err(
        `round ${round} ${name}: ${figures.inserts.toFixed(0)} inserts/s, ${figures.incs.toFixed(0)} $inc/s`,
      );
    }
  }
  io.out(`sequential writes, ${ops} of each kind, median of ${rounds} rounds:`);
  for (const [name, list] of results) {
    const used = JSON.stringify(SETTINGS[name]) === JSON.stringify(SQLITE_PRAGMAS) ? '  <- used' : '';
    io.out(
      `  ${name.padEnd(22)} ${median(list.map((f) => f.inserts))
        .toFixed(0)
        .padStart(6)} inserts/s ${median(list.map((f) => f.incs))
        .toFixed(0)
        .padStart(6)} $inc/s${used}`,
    );
  }
  return 0;
}

if (require.main === module) runMain(main, HELP);
