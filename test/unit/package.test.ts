// `npm run package` builds an artifact that runs on its own: copied away from the repository (no
// node_modules, so no devDependency and no unbundled dependency can be found), its entry loads and
// registers every function definition with the Functions worker, here a stand-in for the worker's
// built-in `@azure/functions-core` that records each registration.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeWorkerStub } from '../../bench/cold-start';
import { definitions } from '../../functions/definitions';
import { BUNDLE, EXTERNALS, VENDOR_MODULES, buildPackage, type PackageResult } from '../../scripts/package';

const ROOT = path.resolve(__dirname, '..', '..');

interface Binding {
  type: string;
  direction: string;
  route?: string;
  methods?: string[];
  queueName?: string;
  schedule?: string;
}
interface Registration {
  name: string;
  bindings: Record<string, Binding>;
}

let work: string;
let result: PackageResult;
let app: string;
let registrations: Registration[];
let loaded: { undici: boolean; fromNodeModules: string[]; vendor: string[] };

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'package-test-'));
  result = await buildPackage({ outDir: path.join(work, 'out') });

  // Away from the repository: only what the artifact carries, plus the worker's module.
  app = path.join(work, 'deployed');
  cpSync(result.dir, app, { recursive: true });
  const recorded = path.join(work, 'registrations.jsonl');
  writeWorkerStub(path.join(app, 'node_modules'), recorded);
  const run = spawnSync(
    process.execPath,
    [
      '-e',
      `require('./${BUNDLE}');` +
        "const list = process.moduleLoadList.join('\\n');" +
        'process.stdout.write(JSON.stringify({ undici: /undici/.test(list),' +
        " fromNodeModules: Object.keys(require.cache).filter((file) => file.includes('node_modules'))," +
        " vendor: Object.keys(require.cache).filter((file) => file.includes('vendor')) }));",
    ],
    { cwd: app, encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '' } },
  );
  if (run.status !== 0) throw new Error(`the bundle did not load:\n${run.stderr}`);
  loaded = JSON.parse(run.stdout) as typeof loaded;
  registrations = existsSync(recorded)
    ? readFileSync(recorded, 'utf8')
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as Registration)
    : [];
}, 120_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

const trigger = (registration: Registration | undefined): Binding | undefined =>
  Object.values(registration?.bindings ?? {}).find((binding) => /Trigger$/.test(binding.type));

describe('npm run package', () => {
  it('registers every function definition, with its trigger, and nothing else', () => {
    expect(registrations.map((r) => r.name).sort()).toEqual(definitions.map((d) => d.name).sort());
    for (const definition of definitions) {
      const bound = trigger(registrations.find((r) => r.name === definition.name));
      if (definition.kind === 'http') {
        expect(bound, definition.name).toMatchObject({ type: 'httpTrigger', route: definition.route });
        expect(bound?.methods, definition.name).toEqual(definition.methods);
      } else if (definition.kind === 'queue') {
        expect(bound, definition.name).toMatchObject({
          type: 'queueTrigger',
          queueName: definition.queueName,
        });
      } else {
        expect(bound, definition.name).toMatchObject({ type: 'timerTrigger', schedule: definition.schedule });
      }
    }
  });

  it('loads with nothing from node_modules but the worker module, and neither axios (fetch) nor @azure/identity', () => {
    expect(loaded.vendor).toEqual([]);
    expect(loaded.fromNodeModules).toEqual([
      path.join(app, 'node_modules', '@azure', 'functions-core', 'index.js'),
    ]);
    expect(loaded.undici).toBe(false);
    expect(result.externalImports.every((name) => EXTERNALS.includes(name))).toBe(true);
    expect(result.externalImports).toContain('@azure/functions-core');
  });

  it('ships axios and @azure/identity as separate files that load on their own', () => {
    const run = spawnSync(
      process.execPath,
      [
        '-e',
        "const axios = require('./dist/vendor/axios.js');" +
          "const { DefaultAzureCredential } = require('./dist/vendor/azure-identity.js');" +
          "process.stdout.write(typeof axios.create + ' ' + typeof DefaultAzureCredential);",
      ],
      { cwd: app, encoding: 'utf8', env: { PATH: process.env['PATH'] ?? '' } },
    );
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe('function function');
    expect(VENDOR_MODULES).toEqual(['axios', '@azure/identity']);
  });

  it('holds the bundle, host.json, a manifest without dependencies, and the browser scripts', () => {
    // The dashboard's scripts compiled from web/dashboard/ (also from a fresh clone, where
    // dist/web/ has not been built), and not the chat simulator's: it belongs to `npm run dev`.
    const dashboard = readdirSync(path.join(ROOT, 'web', 'dashboard')).map(
      (file) => `dist/web/dashboard/${file.replace(/\.ts$/, '.js')}`,
    );
    expect(result.files).toEqual(expect.arrayContaining([BUNDLE, 'host.json', 'package.json', ...dashboard]));
    expect(result.files.filter((file) => file.startsWith('dist/web/')).sort()).toEqual(dashboard.sort());
    expect(result.files.some((file) => file.startsWith('node_modules/'))).toBe(false);
    const manifest = JSON.parse(readFileSync(path.join(result.dir, 'package.json'), 'utf8')) as Record<
      string,
      unknown
    >;
    expect(manifest['main']).toBe(BUNDLE);
    expect(manifest).not.toHaveProperty('dependencies');
    expect(manifest).not.toHaveProperty('scripts');
    expect(readFileSync(path.join(result.dir, 'host.json'), 'utf8')).toBe(
      readFileSync(path.join(ROOT, 'host.json'), 'utf8'),
    );
  });

  it('writes a zip of the same files that unzips to the same bytes', () => {
    const zip = readFileSync(result.zip);
    const end = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    expect(end).toBeGreaterThan(0);
    expect(zip.readUInt16LE(end + 10)).toBe(result.files.length);
    const unpacked = path.join(work, 'unzipped');
    const unzip = spawnSync('python3', ['-m', 'zipfile', '-e', result.zip, unpacked], { encoding: 'utf8' });
    if (unzip.error) return; // no python3 here: the entry count above still holds
    expect(unzip.status, unzip.stderr).toBe(0);
    for (const file of result.files) {
      expect(
        readFileSync(path.join(unpacked, file)).equals(readFileSync(path.join(result.dir, file))),
        file,
      ).toBe(true);
    }
  });
});
