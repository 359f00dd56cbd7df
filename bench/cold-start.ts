// `npm run bench:cold`: how long a fresh Node.js process takes to load the deployed entry, against
// the floor of loading just `mongodb` and `@azure/functions`. Whole-process wall time of
// `node -e "require(...)"`, the cases alternated run by run so that machine load hits both alike;
// prints the medians and their ratio. Options: --runs N (default 21), --entry <file> (default the
// bundle of `npm run package`, built first when missing), --max-ratio R (exit 1 above it).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BUNDLE, DEFAULT_OUT_DIR, buildPackage } from '../scripts/package';
import {
  givenPath,
  helpAsked,
  intOption,
  parseCli,
  processIo,
  reportError,
  UsageError,
} from '../scripts/lib/cli';

const ROOT = path.resolve(__dirname, '..');

/**
 * Stands in for the Functions worker's built-in `@azure/functions-core` (not on npm), so that the
 * entry registers its functions as it does in Azure instead of printing "test mode" warnings.
 */
export function writeWorkerStub(dir: string, recordTo?: string): void {
  const moduleDir = path.join(dir, '@azure', 'functions-core');
  mkdirSync(moduleDir, { recursive: true });
  const record = recordTo
    ? `require('node:fs').appendFileSync(${JSON.stringify(recordTo)}, JSON.stringify(metadata) + '\\n');`
    : '';
  writeFileSync(
    path.join(moduleDir, 'index.js'),
    [
      "'use strict';",
      'const disposable = { dispose() {} };',
      'let model;',
      'module.exports = {',
      `  registerFunction(metadata) { ${record} return disposable; },`,
      '  setProgrammingModel(value) { model = value; },',
      '  getProgrammingModel() { return model; },',
      '  registerHook() { return disposable; },',
      '  log() {},',
      '};',
      '',
    ].join('\n'),
  );
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

interface Sample {
  /** Wall time of the whole process, spawn to exit. */
  readonly wallMs: number;
  /** CPU time (user + system) the process used up to the end of its script: steadier under load. */
  readonly cpuMs: number;
}

/** One `node -e <code>` process. */
function timeProcess(code: string, env: NodeJS.ProcessEnv): Sample {
  const report = ';const u = process.cpuUsage(); process.stdout.write(String((u.user + u.system) / 1000));';
  const started = process.hrtime.bigint();
  const result = spawnSync(process.execPath, ['-e', code + report], { cwd: ROOT, env, encoding: 'utf8' });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  if (result.status !== 0) throw new Error(`node -e ${code} failed:\n${result.stderr}`);
  return { wallMs, cpuMs: Number(result.stdout.trim().split('\n').at(-1)) };
}

const HELP = `
Usage: npm run bench:cold [-- options]

  --runs N          runs of each case, alternated (default 21, at least 3)
  --entry FILE      the entry to load (default: the bundle of npm run package, built when missing)
  --max-ratio R     exit 1 when the entry's median wall time is over R times the floor's
  -h, --help        this help

Times fresh \`node\` processes loading the entry against the floor of loading only mongodb and
@azure/functions, and prints the medians and their ratio.

Exit code: 0 when done (and within --max-ratio), 1 when above --max-ratio or on failure, 2 on bad
arguments (nothing run).
`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (helpAsked(argv, HELP)) return;
  // Bad arguments exit 2 before anything runs: exit 1 is the ratio's verdict, and a --max-ratio
  // that is not a number would otherwise pass every run (no ratio is above NaN).
  const { values } = parseCli(argv, {
    runs: { type: 'string' },
    entry: { type: 'string' },
    'max-ratio': { type: 'string' },
  });
  const runs = intOption(values.runs, 'runs', 21, 3);
  const given = values['max-ratio'];
  const maxRatio = given === undefined ? undefined : Number(given);
  if (maxRatio !== undefined && (!/^\d+(\.\d+)?$/.test(given ?? '') || !(maxRatio > 0)))
    throw new UsageError('--max-ratio must be a number above 0, such as 1.3');
  let entry = values.entry ? givenPath(values.entry, process.env) : path.join(DEFAULT_OUT_DIR, 'app', BUNDLE);
  if (!values.entry && !existsSync(entry)) entry = path.join((await buildPackage()).dir, BUNDLE);
  if (!existsSync(entry)) throw new Error(`${entry} does not exist (npm run build / npm run package)`);

  const stubs = mkdtempSync(path.join(os.tmpdir(), 'bench-cold-'));
  try {
    writeWorkerStub(stubs);
    // NODE_PATH is searched last: it only supplies the worker's module, in both cases alike.
    const env = { ...process.env, NODE_PATH: stubs, NODE_OPTIONS: '' };
    const cases = {
      floor: "require('mongodb'); require('@azure/functions');",
      entry: `require(${JSON.stringify(entry)});`,
    };
    // One unmeasured round warms the file cache.
    for (const code of Object.values(cases)) timeProcess(code, env);
    const samples: Record<keyof typeof cases, Sample[]> = { floor: [], entry: [] };
    for (let run = 0; run < runs; run += 1) {
      const order = run % 2 ? (['entry', 'floor'] as const) : (['floor', 'entry'] as const);
      for (const name of order) samples[name].push(timeProcess(cases[name], env));
    }
    const stat = (name: keyof typeof cases, key: keyof Sample): number =>
      median(samples[name].map((sample) => sample[key]));
    const ratio = stat('entry', 'wallMs') / stat('floor', 'wallMs');
    const cpuRatio = stat('entry', 'cpuMs') / stat('floor', 'cpuMs');
    const row = (label: string, name: keyof typeof cases): string =>
      `  ${label}: wall ${stat(name, 'wallMs').toFixed(0)} ms, cpu ${stat(name, 'cpuMs').toFixed(0)} ms\n`;
    process.stdout.write(
      `bench:cold: ${runs} runs each, alternated, whole-process medians\n` +
        row('floor (mongodb + @azure/functions)', 'floor') +
        row(`entry ${path.relative(ROOT, entry)}`, 'entry') +
        `  ratio: ${ratio.toFixed(2)}x wall, ${cpuRatio.toFixed(2)}x cpu\n`,
    );
    if (maxRatio !== undefined && ratio > maxRatio) {
      process.stdout.write(`bench:cold: ratio above ${maxRatio}\n`);
      process.exitCode = 1;
    }
  } finally {
    rmSync(stubs, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((error: unknown) => {
    if (error instanceof UsageError) {
      process.exitCode = reportError(processIo, error);
      return;
    }
    process.stderr.write(`bench:cold: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
