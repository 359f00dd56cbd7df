// `npm run bench`: drives the app the way Meta and the Graph API would and prints what it costs.
// The local host of `npm run dev` runs in this process (same code: HTTP, Azurite queues, queue and
// timer functions) over the embedded database (or MONGODB_URI), with a loopback Graph stub.
// Signed POSTs at a given concurrency, then redeliveries, forgeries and delivery statuses.
// With --url it only drives a server started elsewhere (for comparisons with older code).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { startBenchGraph, type BenchGraph } from './graph-stub';
import {
  givenPath,
  helpAsked,
  intOption,
  parseCli,
  processIo,
  reportError,
  UsageError,
} from '../scripts/lib/cli';
import { postAll } from './load';
import { notification, signed, status, textNotification, value } from '../test/helpers/meta';

const HELP = `
Usage: npm run bench [-- options]

  --messages N      text notifications to send (default 300)
  --senders N       distinct senders (default 50)
  --concurrency N   POSTs in flight (default 16)
  --redeliveries N  notifications delivered a second time after the run (default 30)
  --forgeries N     POSTs with a wrong signature (default 100)
  --statuses N      delivery statuses sent for the replies (default 100)
  --warmup N        status notifications for unknown messages sent first, not measured (default 50):
                    a running host is warm
  --json FILE       also write the figures to FILE
  --url URL         drive a server started elsewhere (its WHATSAPP_GRAPH_URL must be
                    http://127.0.0.1:<--graph-port>, its app secret --secret); no database figures
  --graph-port N    port of the Graph stub (default: any free port)
  --ack-only        serve the HTTP functions only (no queue or timer functions): the cost of the
                    acknowledgement alone
  --secret S        app secret of the server given with --url
  -h, --help        this help

Uses MONGODB_URI when set, else the embedded database (temporary files); Azurite in a temporary
folder. Prints ack latency, replies/s, reply latency, database round trips, CPU and memory, and the
database's own floor (sequential reads, inserts and updates by key per second on the same server)
and the replies/s it allows for the run's mix of round trips.

Exit code: 0 when done, 1 on failure, 2 on bad arguments (nothing started).
`;

interface Figures {
  messages: number;
  senders: number;
  concurrency: number;
  database: string;
  ackMs: { p50: number; p95: number; p99: number; max: number };
  postSeconds: number;
  answered: number;
  answeredOnce: number;
  repliesPerSecond: number;
  replyLatencyMs: { p50: number; p95: number };
  redeliveries: { sent: number; acked: number; replies: number };
  forgeries: { sent: number; rejected: number; replies: number };
  roundTripsPerMessageAndReply: number | null;
  roundTripsPerStatus: number | null;
  cpuMsPerTurn: number;
  cpuMsPerTurnByPart: Record<Part, number>;
  peakRssMb: number;
  floor: Floor | null;
  /** Round trips per message+reply by kind, and the replies/s the floor allows for that mix. */
  turnMix: Record<Kind, number> | null;
  floorRepliesPerSecond: number | null;
  repliesShareOfFloor: number | null;
}

const pct = (values: readonly number[], p: number): number => {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
};
const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string) => process.stderr.write(`${line}\n`);

/** Which part of the process tree a process is: the app (this process), the database or Azurite. */
type Part = 'app' | 'database' | 'queues';
const partOf = (pid: number): Part => {
  if (pid === process.pid) return 'app';
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /azurite/i.test(cmdline) ? 'queues' : 'database';
  } catch {
    return 'database';
  }
};

/**
 * CPU time (ms) and RSS (bytes) of this process and all its descendants (the database, Azurite),
 * with the CPU split by part.
 */
function processTree(): { cpuMs: number; rss: number; parts: Record<Part, number> } {
  const ticks = 100; // USER_HZ on Linux
  const stats = new Map<number, { ppid: number; cpu: number; rss: number }>();
  const parts: Record<Part, number> = { app: 0, database: 0, queues: 0 };
  let entries: string[] = [];
  try {
    entries = readdirSync('/proc').filter((e) => /^\d+$/.test(e));
  } catch {
    const usage = process.cpuUsage();
    const cpuMs = (usage.user + usage.system) / 1000;
    return { cpuMs, rss: process.memoryUsage().rss, parts: { ...parts, app: cpuMs } };
  }
  for (const entry of entries) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const ppid = Number(fields[1]);
      const cpu = ((Number(fields[11]) + Number(fields[12])) * 1000) / ticks;
      const rss = Number(fields[21]) * 4096;
      stats.set(Number(entry), { ppid, cpu, rss });
    } catch {
      // gone meanwhile
    }
  }
  let cpuMs = 0;
  let rss = 0;
  const tree: number[] = [];
  for (const [pid, s] of stats) {
    for (let p = pid, depth = 0; p > 1 && depth < 20; p = stats.get(p)?.ppid ?? 0, depth++) {
      if (p === process.pid) {
        cpuMs += s.cpu;
        rss += s.rss;
        parts[partOf(pid)] += s.cpu;
        tree.push(pid);
        break;
      }
    }
  }
  treePids = { pids: tree, at: Date.now() };
  return { cpuMs, rss, parts };
}

/** The tree's processes at the last full scan of /proc. */
let treePids: { pids: number[]; at: number } = { pids: [], at: 0 };

/**
 * The tree's RSS for the peak, sampled every 100 ms: the processes of the last full scan (redone
 * every second, so a process started meanwhile is found), not all of /proc each time. Reading
 * every process's stat ten times a second cost the app's thread ~20 ms/s on a busy machine.
 */
function treeRss(): number {
  if (Date.now() - treePids.at >= 1_000) return processTree().rss;
  let rss = 0;
  for (const pid of treePids.pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      rss += Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[21]) * 4096;
    } catch {
      // gone meanwhile
    }
  }
  return rss;
}

type Kind = 'reads' | 'inserts' | 'updates';
type Floor = Record<`${Kind}PerSecond`, number>;

/** How a command counts against the floor: a read, an insert, or a write to existing documents. */
const KIND_OF: Readonly<Record<string, Kind>> = {
  find: 'reads',
  aggregate: 'reads',
  count: 'reads',
  insert: 'inserts',
  update: 'updates',
  findAndModify: 'updates',
  delete: 'updates',
};

/**
 * The database's floor: sequential single-document inserts, reads by key and updates by key on a
 * scratch collection, with string keys like the app's.
 */
async function databaseFloor(uri: string, dbName: string): Promise<Floor> {
  const client = await new MongoClient(uri).connect();
  try {
    const scratch = client.db(dbName).collection<{ _id: string; n: number }>('bench_floor');
    const n = 300;
    const rate = async (work: (i: number) => Promise<unknown>) => {
      const started = performance.now();
      for (let i = 0; i < n; i++) await work(i);
      return round(n / ((performance.now() - started) / 1000), 0);
    };
    const insertsPerSecond = await rate((i) => scratch.insertOne({ _id: `floor-${i}`, n: 0 }));
    const readsPerSecond = await rate((i) => scratch.findOne({ _id: `floor-${i}` }));
    const updatesPerSecond = await rate((i) => scratch.updateOne({ _id: `floor-${i}` }, { $set: { n: 1 } }));
    await scratch.drop();
    return { readsPerSecond, insertsPerSecond, updatesPerSecond };
  } finally {
    await client.close();
  }
}

/** Replies/s the floor allows when each reply costs `mix` round trips. */
const floorReplies = (floor: Floor, mix: Record<Kind, number>): number =>
  1 /
  (mix.reads / floor.readsPerSecond +
    mix.inserts / floor.insertsPerSecond +
    mix.updates / floor.updatesPerSecond);

/** Refuses a --json FILE that cannot be written (a folder, or in a folder that does not exist). */
function checkJsonFile(file: string): void {
  const stat = (at: string) => statSync(at, { throwIfNoEntry: false });
  if (stat(file)?.isDirectory()) throw new UsageError(`--json ${file} is a folder; give a file name`);
  if (!stat(path.dirname(file))?.isDirectory())
    throw new UsageError(`--json ${file}: its folder does not exist`);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (helpAsked(argv, HELP)) return;
  // Bad arguments exit 2 in one line before anything starts, as the operator scripts' do.
  const { values } = parseCli(argv, {
    messages: { type: 'string' },
    senders: { type: 'string' },
    concurrency: { type: 'string' },
    redeliveries: { type: 'string' },
    forgeries: { type: 'string' },
    statuses: { type: 'string' },
    warmup: { type: 'string' },
    json: { type: 'string' },
    url: { type: 'string' },
    'graph-port': { type: 'string' },
    secret: { type: 'string' },
    'ack-only': { type: 'boolean' },
  });
  const count = (
    name: 'messages' | 'senders' | 'concurrency' | 'redeliveries' | 'forgeries' | 'statuses' | 'warmup',
    fallback: number,
    min = 0,
  ) => intOption(values[name], name, fallback, min);
  const messages = count('messages', 300, 1);
  const senders = count('senders', 50, 1);
  const concurrency = count('concurrency', 16, 1);
  const redeliveries = count('redeliveries', 30);
  const forgeryCount = count('forgeries', 100);
  const statuses = count('statuses', 100);
  const warmupCount = count('warmup', 50);
  const graphPort = intOption(values['graph-port'], 'graph-port', 0, 1, 65_535);
  const external = values.url;
  const secret = external ? (values.secret ?? '') : randomBytes(18).toString('base64url');
  if (external && !secret) throw new UsageError('--url needs --secret');
  // Written only at the end: a --json that cannot be written is said now, not after the run.
  const jsonFile = values.json === undefined ? undefined : givenPath(values.json, process.env);
  if (jsonFile !== undefined) checkJsonFile(jsonFile);

  const graph: BenchGraph = await startBenchGraph(graphPort);
  const cleanups: (() => Promise<unknown>)[] = [async () => graph.close()];
  let url = external ?? '';
  // Commands sent from this thread (the HTTP functions), by name; the queue functions' thread
  // counts its own (see `sent`).
  const counted: Record<string, number> = {};
  let threadCommands: () => Promise<Record<string, number>> = async () => ({});
  let dbUri = '';
  let dbName = '';
  let description = 'external server';
  let idle: () => Promise<void> = async () => {
    await sleep(1_000);
  };
  /** Commands sent so far by both threads: all, and by how they count against the floor. */
  const sent = async (): Promise<Record<Kind | 'total', number>> => {
    const totals = { total: 0, reads: 0, inserts: 0, updates: 0 };
    for (const counts of [counted, await threadCommands()]) {
      for (const [name, n] of Object.entries(counts)) {
        totals.total += n;
        const kind = KIND_OF[name];
        if (kind) totals[kind] += n;
      }
    }
    return totals;
  };
  /** While the forgeries are sent: the host's warnings for their bad signatures are not printed. */
  let sendingForgeries = false;
  const peak = { rss: 0 };
  const sampler = setInterval(() => {
    peak.rss = Math.max(peak.rss, treeRss());
  }, 100);

  try {
    if (!external) {
      // Loaded here so that --url needs none of the app.
      const { resolveDatabase } = await import('../scripts/lib/database');
      const data = await import('../shared/data');
      const { getServices } = await import('../shared/deps');
      const { definitions } = await import('../functions/definitions');
      const { startDevServer } = await import('../scripts/dev-server');
      const dir = mkdtempSync(path.join(os.tmpdir(), 'wa-bench-'));
      cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
      const database = await resolveDatabase({ purpose: 'test', log: say });
      cleanups.push(() => database.stop());
      description = database.description;
      dbUri = database.uri;
      dbName = `bench_${randomBytes(4).toString('hex')}`;
      Object.assign(process.env, {
        MONGODB_URI: database.uri,
        MONGODB_DATABASE: dbName,
        WHATSAPP_VERIFY_TOKEN: 'bench',
        WHATSAPP_APP_SECRET: secret,
        WHATSAPP_ACCESS_TOKEN: 'EAA-bench-token',
        WHATSAPP_GRAPH_URL: graph.url,
      });
      // Registered before the data store connects: it counts every command the driver sends.
      data.observeCommands((command) => {
        counted[command.commandName] = (counted[command.commandName] ?? 0) + 1;
      });
      // As `npm run dev` does: the local host is its own deployment and creates the indexes.
      await (await getServices()).data.ensureIndexes('create');
      cleanups.push(async () => {
        const client = await new MongoClient(dbUri).connect();
        await client.db(dbName).dropDatabase();
        await client.close();
        await data.closeAllClients();
      });
      const server = await startDevServer({
        definitions: values['ack-only'] ? definitions.filter((d) => d.kind === 'http') : definitions,
        port: 0,
        say,
        // As `npm run dev` runs them: queue and timer functions in a thread of their own.
        ...(values['ack-only'] ? {} : { queueThread: { countCommands: true } }),
        storage: { location: path.join(dir, 'azurite') },
        log: (level, name, message) => {
          // The forgeries' rejections are the bench's own doing, counted in its figures: one
          // warning line each (a hundred by default) would read as trouble.
          if (sendingForgeries && name === 'webhookReceive' && message.includes('code=BAD_SIGNATURE')) return;
          if (level === 'error' || level === 'warning') say(`[${level}] ${name}: ${message}`);
        },
      });
      cleanups.push(() => server.stop());
      const thread = server.queueThread;
      if (thread) threadCommands = () => thread.commands();
      url = server.url;
      idle = () => server.idle({ timeoutMs: 600_000 });
    }

    const floor = external ? null : await databaseFloor(dbUri, `${dbName}_floor`);

    // The run: messages round-robin over the senders, so each sender's order is known.
    const items = Array.from({ length: messages }, (_, i) => {
      const from = `4477009${String(100_000 + (i % senders)).slice(1)}`;
      const { message, payload } = textNotification(from, `bench message ${i}`);
      return { from, id: message.id, ...signed(payload, secret) };
    });
    say(
      `bench: ${messages} messages from ${senders} senders, ${concurrency} concurrent POSTs (${description})`,
    );
    // Warm-up: every step of the path (HTTP, queue, ingest, database) runs before the measure, with
    // statuses for messages that do not exist (kept apart from users and counters).
    const warmup = Array.from({ length: warmupCount }, (_, i) =>
      signed(
        notification(value({ statuses: [status(`wamid.warmup.${i}`, 'delivered', '4477000000')] })),
        secret,
      ),
    );
    await postAll(url, warmup, concurrency);
    await idle();
    const sentAt = new Map<string, number[]>();
    const before = await sent();
    const cpuBefore = processTree();
    const started = performance.now();
    const posted = await postAll(url, items, concurrency);
    const postSeconds = (performance.now() - started) / 1000;
    const acks = posted.filter((p) => p.status === 200).map((p) => p.ms);
    const failedPosts = posted.length - acks.length;
    // Each sender's messages in the order their POSTs started.
    posted
      .map((p, i) => ({ from: (items[i] as (typeof items)[number]).from, at: p.startedAt }))
      .sort((a, b) => a.at - b.at)
      .forEach(({ from, at }) => sentAt.set(from, [...(sentAt.get(from) ?? []), at]));
    say(
      `bench: ${acks.length} acknowledged in ${round(postSeconds)} s (${failedPosts} not), waiting for replies`,
    );
    if (values['ack-only']) {
      const cpu = processTree();
      const perAck = (part: Part) => round((cpu.parts[part] - cpuBefore.parts[part]) / messages, 2);
      process.stdout.write(
        `ack only: p50 ${round(pct(acks, 50))} / p95 ${round(pct(acks, 95))} / p99 ${round(pct(acks, 99))} ms, ` +
          `${acks.length}/${messages} acknowledged in ${round(postSeconds)} s; CPU per POST: ` +
          `app and load ${perAck('app')} ms, queues ${perAck('queues')} ms\n`,
      );
      return;
    }
    const deadline = Date.now() + 600_000;
    while (graph.sends.length < messages && Date.now() < deadline) await sleep(20);
    // When the last expected reply reached the Graph stub (epoch ms, like its records).
    const repliesDone =
      (graph.sends[Math.min(messages, graph.sends.length) - 1]?.at ?? Date.now()) - performance.timeOrigin;
    await idle();
    const replySeconds = (repliesDone - started) / 1000;
    const after = await sent();
    const turnCommands = after.total - before.total;
    const perMessage = (kind: Kind) => round((after[kind] - before[kind]) / messages, 2);
    const turnMix: Record<Kind, number> = {
      reads: perMessage('reads'),
      inserts: perMessage('inserts'),
      updates: perMessage('updates'),
    };
    const cpuAfter = processTree();
    const cpuMs = cpuAfter.cpuMs - cpuBefore.cpuMs;
    const cpuPart = (part: Part) => round((cpuAfter.parts[part] - cpuBefore.parts[part]) / messages);

    // Reply latency: the k-th reply to a sender answers its k-th message (answers keep order).
    const latencies: number[] = [];
    const perSender = new Map<string, number>();
    for (const send of graph.sends) {
      const k = perSender.get(send.to) ?? 0;
      perSender.set(send.to, k + 1);
      const at = sentAt.get(send.to)?.[k];
      if (at !== undefined) latencies.push(send.at - at);
    }
    const expected = new Map<string, number>();
    for (const item of items) expected.set(item.from, (expected.get(item.from) ?? 0) + 1);
    const answeredOnce = [...expected].reduce((n, [from, k]) => n + (perSender.get(from) === k ? k : 0), 0);
    const replies = Math.min(graph.sends.length, messages);

    // Redeliveries and forgeries: no reply for any of them.
    const sendsBefore = graph.sends.length;
    const again = items.slice(0, redeliveries);
    const againAcked = (await postAll(url, again, concurrency)).filter((p) => p.status === 200).length;
    const forgeries = Array.from({ length: forgeryCount }, (_, i) =>
      signed(textNotification(`4477008${String(100_000 + i).slice(1)}`, 'forged').payload, 'not-the-secret'),
    );
    sendingForgeries = true;
    const rejected = (await postAll(url, forgeries, concurrency)).filter((p) => p.status === 401).length;
    sendingForgeries = false;
    await idle();
    await sleep(500);
    const extraReplies = graph.sends.length - sendsBefore;

    // Delivery statuses of the replies: database round trips per status.
    const toStatus = graph.sends.slice(0, statuses);
    const statusCommands = (await sent()).total;
    await postAll(
      url,
      toStatus.map((send) =>
        signed(notification(value({ statuses: [status(send.wamid, 'delivered', send.to)] })), secret),
      ),
      concurrency,
    );
    await idle();
    const perStatus = toStatus.length ? ((await sent()).total - statusCommands) / toStatus.length : null;

    const figures: Figures = {
      messages,
      senders,
      concurrency,
      database: description,
      ackMs: {
        p50: round(pct(acks, 50)),
        p95: round(pct(acks, 95)),
        p99: round(pct(acks, 99)),
        max: round(Math.max(...acks)),
      },
      postSeconds: round(postSeconds),
      answered: replies,
      answeredOnce,
      repliesPerSecond: round(replies / replySeconds),
      replyLatencyMs: { p50: round(pct(latencies, 50), 0), p95: round(pct(latencies, 95), 0) },
      redeliveries: { sent: again.length, acked: againAcked, replies: extraReplies },
      forgeries: { sent: forgeries.length, rejected, replies: 0 },
      roundTripsPerMessageAndReply: external ? null : round(turnCommands / messages),
      roundTripsPerStatus: external || perStatus === null ? null : round(perStatus),
      cpuMsPerTurn: round(cpuMs / messages),
      cpuMsPerTurnByPart: { app: cpuPart('app'), database: cpuPart('database'), queues: cpuPart('queues') },
      peakRssMb: round(peak.rss / 1024 / 1024, 0),
      floor,
      turnMix: external ? null : turnMix,
      floorRepliesPerSecond: floor && !external ? round(floorReplies(floor, turnMix)) : null,
      repliesShareOfFloor:
        floor && !external ? round((100 * (replies / replySeconds)) / floorReplies(floor, turnMix)) : null,
    };
    print(figures);
    if (jsonFile !== undefined) writeFileSync(jsonFile, `${JSON.stringify(figures, null, 2)}\n`);
  } finally {
    clearInterval(sampler);
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  }
}

function print(f: Figures): void {
  const rows: [string, string][] = [
    ['database', f.database],
    ['messages / senders / concurrent', `${f.messages} / ${f.senders} / ${f.concurrency}`],
    ['ack p50 / p95 / p99 / max', `${f.ackMs.p50} / ${f.ackMs.p95} / ${f.ackMs.p99} / ${f.ackMs.max} ms`],
    ['all POSTs acknowledged in', `${f.postSeconds} s`],
    ['answered exactly once', `${f.answeredOnce} / ${f.messages}`],
    ['replies/s', String(f.repliesPerSecond)],
    ['reply latency p50 / p95', `${f.replyLatencyMs.p50} / ${f.replyLatencyMs.p95} ms`],
    [
      'redeliveries: acked, replies',
      `${f.redeliveries.acked}/${f.redeliveries.sent}, ${f.redeliveries.replies}`,
    ],
    ['forgeries: rejected, replies', `${f.forgeries.rejected}/${f.forgeries.sent}, ${f.forgeries.replies}`],
    ['DB round trips per message+reply', String(f.roundTripsPerMessageAndReply ?? '-')],
    ['DB round trips per status', String(f.roundTripsPerStatus ?? '-')],
    ['CPU per turn (process tree)', `${f.cpuMsPerTurn} ms`],
    [
      '  app / database / queues',
      `${f.cpuMsPerTurnByPart.app} / ${f.cpuMsPerTurnByPart.database} / ${f.cpuMsPerTurnByPart.queues} ms`,
    ],
    ['peak RSS (process tree)', `${f.peakRssMb} MB`],
    [
      'DB floor: reads/s, inserts/s, updates/s',
      f.floor ? `${f.floor.readsPerSecond}, ${f.floor.insertsPerSecond}, ${f.floor.updatesPerSecond}` : '-',
    ],
    [
      'round trips per reply: reads, inserts, updates',
      f.turnMix ? `${f.turnMix.reads}, ${f.turnMix.inserts}, ${f.turnMix.updates}` : '-',
    ],
    [
      'replies/s the floor allows for that mix',
      f.floorRepliesPerSecond === null ? '-' : String(f.floorRepliesPerSecond),
    ],
    ['replies/s as share of the floor', f.repliesShareOfFloor === null ? '-' : `${f.repliesShareOfFloor} %`],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) process.stdout.write(`${k.padEnd(width)}  ${v}\n`);
}

main().catch((error: unknown) => {
  if (error instanceof UsageError) process.exit(reportError(processIo, error));
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
