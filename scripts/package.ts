// `npm run package`: the deployable artifact, production code only. esbuild bundles
// functions/index.ts with its production dependencies into one file; the artifact folder holds it
// with host.json, a package.json whose `main` is the bundle, and the dashboard's browser scripts
// (compiled from web/dashboard/ into dist/web/dashboard/; the chat simulator's stay out).
// azure.yaml deploys the folder; the zip is for `az functionapp deployment source config-zip`
// (docs/deployment.md).
import { build, type BuildOptions, type Metafile, type Plugin } from 'esbuild';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { crc32, deflateRawSync } from 'node:zlib';
import { listFiles } from './lib/paths';
import { noArguments } from './lib/cli';

const ROOT = path.resolve(__dirname, '..');
export const DEFAULT_OUT_DIR = path.join(ROOT, 'dist', 'package');
/** Inside the artifact, relative to its root (its package.json `main`). */
export const BUNDLE = 'dist/index.js';

/**
 * Not bundled. `@azure/functions-core` is the Functions worker's built-in module (it is not on
 * npm). The others are the mongodb driver's optional peers, each `require`d inside a try/catch in
 * node_modules/mongodb/lib/deps.js and absent here: without them the driver reports the feature
 * (Kerberos, compression, AWS/GCP auth, SOCKS, client-side encryption) as unavailable.
 */
export const EXTERNALS: readonly string[] = [
  '@azure/functions-core',
  'kerberos',
  '@mongodb-js/zstd',
  '@aws-sdk/credential-providers',
  'gcp-metadata',
  'snappy',
  'socks',
  'mongodb-client-encryption',
];

/**
 * Dependencies that only one path needs, each bundled into its own file under dist/vendor/ so that
 * a cold start neither parses nor runs them: the AI client imports @azure/identity (with MSAL)
 * dynamically, and only for Entra ID; axios serves the Graph and AI clients, and sets up Node's
 * built-in fetch (undici) as it loads.
 */
export const VENDOR_MODULES: readonly string[] = ['axios', '@azure/identity'];
/**
 * Vendor modules imported statically (shared/whatsapp/graph.ts is imported by the reply path for
 * its error class): the import yields a stand-in that loads the module when a property is read or
 * it is called. Only a default import is possible: a named import fails the build.
 */
export const LAZY_MODULES: readonly string[] = ['axios'];

const vendorFile = (name: string): string => `vendor/${name.replace(/^@/, '').replace(/\//g, '-')}.js`;

const vendorModules: Plugin = {
  name: 'vendor-modules',
  setup(esbuild) {
    const names = VENDOR_MODULES.map((name) => name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&'));
    const filter = new RegExp(`^(${names.join('|')})$`);
    esbuild.onResolve({ filter }, (args) =>
      LAZY_MODULES.includes(args.path) && args.namespace !== 'lazy-module'
        ? { path: args.path, namespace: 'lazy-module' }
        : // Relative to the bundle (dist/index.js), which require() resolves it against.
          { path: `./${vendorFile(args.path)}`, external: true },
    );
    esbuild.onLoad({ filter: /.*/, namespace: 'lazy-module' }, (args) => ({
      resolveDir: ROOT,
      loader: 'js',
      contents: [
        'let loaded;',
        `const load = () => (loaded ??= require(${JSON.stringify(args.path)}));`,
        'export default new Proxy(function lazyModule() {}, {',
        '  get: (_, key) => load()[key],',
        '  has: (_, key) => key in load(),',
        '  apply: (_, self, args) => load().apply(self, args),',
        '});',
      ].join('\n'),
    }));
  },
};

const common = {
  absWorkingDir: ROOT,
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  // Whitespace and syntax only: stack traces keep their function and class names.
  minifyWhitespace: true,
  minifySyntax: true,
  keepNames: true,
  legalComments: 'none',
  external: [...EXTERNALS],
  metafile: true as const,
  logLevel: 'warning',
  define: { 'process.env.NODE_ENV': '"production"' },
} satisfies BuildOptions;

export interface PackageResult {
  /** The artifact folder (azure.yaml `dist`). */
  readonly dir: string;
  readonly zip: string;
  /** Bytes of every file in the folder, and of the zip. */
  readonly dirBytes: number;
  readonly zipBytes: number;
  readonly files: readonly string[];
  /** The bare module names the bundle still requires at run time (node: built-ins excluded). */
  readonly externalImports: readonly string[];
}

export interface PackageOptions {
  readonly outDir?: string;
}

export async function buildPackage(options: PackageOptions = {}): Promise<PackageResult> {
  const outDir = options.outDir ?? DEFAULT_OUT_DIR;
  const dir = path.join(outDir, 'app');
  const zip = path.join(outDir, 'app.zip');
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });

  const main = await build({
    ...common,
    entryPoints: [path.join(ROOT, 'functions', 'index.ts')],
    outfile: path.join(dir, BUNDLE),
    plugins: [vendorModules],
  });
  const metafiles = [main.metafile];
  for (const name of VENDOR_MODULES) {
    const vendor = await build({
      ...common,
      stdin: {
        contents: `module.exports = require(${JSON.stringify(name)});`,
        resolveDir: ROOT,
        loader: 'js',
      },
      outfile: path.join(dir, path.dirname(BUNDLE), vendorFile(name)),
    });
    metafiles.push(vendor.metafile);
  }
  writeFileSync(path.join(dir, 'dist', 'THIRD-PARTY-NOTICES.txt'), notices(metafiles));

  cpSync(path.join(ROOT, 'host.json'), path.join(dir, 'host.json'));
  const own = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    name: string;
    version: string;
    engines?: Record<string, string>;
  };
  // No dependencies and no scripts: a remote build has nothing to install or run.
  const manifest = {
    name: own.name,
    version: own.version,
    private: true,
    main: BUNDLE,
    ...(own.engines ? { engines: own.engines } : {}),
  };
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);

  // The app reads dist/web/dashboard/<name>.js relative to its package root. Compiled here, from
  // web/, so that neither a fresh clone (no dist/web/) nor an old build ships other scripts; only
  // the dashboard's: the chat simulator belongs to `npm run dev`.
  const web = path.join(outDir, 'web');
  const tsc = spawnSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.web.json', '--outDir', web],
    { cwd: ROOT, encoding: 'utf8', windowsHide: true },
  );
  if (tsc.status !== 0)
    throw new Error(
      `the browser scripts did not build (tsc -p tsconfig.web.json):\n${tsc.stdout}${tsc.stderr}`,
    );
  cpSync(path.join(web, 'dashboard'), path.join(dir, 'dist', 'web', 'dashboard'), { recursive: true });
  rmSync(web, { recursive: true, force: true });

  const files = listFiles(dir);
  writeZip(zip, dir, files);
  return {
    dir,
    zip,
    dirBytes: files.reduce((sum, file) => sum + statSync(path.join(dir, file)).size, 0),
    zipBytes: statSync(zip).size,
    files,
    externalImports: externalImports(metafiles),
  };
}

/** Modules the bundles require that the artifact does not hold (built-ins and ./vendor excepted). */
function externalImports(metafiles: readonly Metafile[]): string[] {
  const names = new Set<string>();
  for (const output of metafiles.flatMap((metafile) => Object.values(metafile.outputs))) {
    for (const imported of output.imports) {
      const bare = imported.path.replace(/^node:/, '');
      if (imported.external && !builtinModules.includes(bare) && !bare.startsWith('./vendor/'))
        names.add(imported.path);
    }
  }
  return [...names].sort();
}

/** The licences of the bundled packages, which minification strips from the code. */
function notices(metafiles: readonly Metafile[]): string {
  const packages = new Map<string, string>();
  for (const input of metafiles.flatMap((metafile) => Object.keys(metafile.inputs))) {
    const match = /^(.*node_modules\/((?:@[^/]+\/)?[^/]+))\//.exec(input);
    if (!match?.[1] || !match[2] || packages.has(match[2])) continue;
    packages.set(match[2], path.join(ROOT, match[1]));
  }
  const sections: string[] = [];
  for (const [name, dir] of [...packages].sort(([a], [b]) => a.localeCompare(b))) {
    const licence = readdirSync(dir).find((file) => /^licen[cs]e/i.test(file));
    const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as {
      version?: string;
      license?: string;
    };
    const text = licence
      ? readFileSync(path.join(dir, licence), 'utf8').trim()
      : `License: ${manifest.license}`;
    sections.push(`${name}@${manifest.version ?? '?'}\n\n${text}`);
  }
  return `${sections.join(`\n\n${'-'.repeat(72)}\n\n`)}\n`;
}

/** A plain deflate zip (no zip64: the artifact is a few MB), readable by Kudu and `unzip`. */
function writeZip(file: string, dir: string, names: readonly string[]): void {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  // 1980-01-01 00:00: fixed, so the same code gives the same zip.
  const dosTime = 0;
  const dosDate = (0 << 9) | (1 << 5) | 1;
  for (const name of names) {
    const data = readFileSync(path.join(dir, name));
    const packed = deflateRawSync(data, { level: 9 });
    const nameBytes = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // UTF-8 names
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(dosTime, 10);
    local.writeUInt16LE(dosDate, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE((3 << 8) | 20, 4); // made by Unix, version 2.0
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(8, 10);
    central.writeUInt16LE(dosTime, 12);
    central.writeUInt16LE(dosDate, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(packed.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE((0o100644 << 16) >>> 0, 38); // -rw-r--r--
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, packed);
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + packed.length;
  }
  const centralSize = centrals.reduce((sum, part) => sum + part.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(names.length, 8);
  end.writeUInt16LE(names.length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(file, Buffer.concat([...locals, ...centrals, end]));
}

const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(2)} MB`;

const HELP = `
Usage: npm run package

Builds the deployable artifact (production code only) into a folder and a zip; see
docs/deployment.md.
`;

if (require.main === module && noArguments(process.argv.slice(2), HELP)) {
  buildPackage()
    .then((result) => {
      const rel = (file: string): string => path.relative(ROOT, file);
      process.stdout.write(
        `package: ${rel(result.dir)}/ ${result.files.length} files, ${mb(result.dirBytes)}; ` +
          `${rel(result.zip)} ${mb(result.zipBytes)}\n` +
          `package: external at run time: ${result.externalImports.join(', ') || 'none'}\n`,
      );
    })
    .catch((error: unknown) => {
      process.stderr.write(`package: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
}
