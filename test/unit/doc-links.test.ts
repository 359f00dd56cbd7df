// Every Markdown file a code comment names exists in the repository: whoever clones the project can
// read the documents its code follows (docs/contract.md, docs/architecture.md).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');
const SOURCE_DIRS = ['functions', 'shared', 'scripts', 'test', 'bench', 'web', 'infra', '.ci'];
const SKIP_DIRS = new Set(['node_modules', 'dist', '.data', 'test-output', 'bench-output', 'fixtures']);
const SCRIPT = /\.(ts|mts|cts|js|mjs|cjs)$/;
const HASH_COMMENTS = /\.(ya?ml|sh)$|^run$/;

/** The comments of a file: scanned as TypeScript for scripts, `//` for Bicep, `#` for YAML and shell. */
function commentsOf(file: string, text: string): string[] {
  if (SCRIPT.test(file)) {
    const scanner = ts.createScanner(ts.ScriptTarget.Latest, false, ts.LanguageVariant.Standard, text);
    const comments: string[] = [];
    for (let token = scanner.scan(); token !== ts.SyntaxKind.EndOfFileToken; token = scanner.scan()) {
      if (token === ts.SyntaxKind.SingleLineCommentTrivia || token === ts.SyntaxKind.MultiLineCommentTrivia)
        comments.push(scanner.getTokenText());
    }
    return comments;
  }
  if (file.endsWith('.bicep')) return text.match(/\/\/.*$/gm) ?? [];
  if (HASH_COMMENTS.test(path.basename(file))) return text.match(/(^|\s)#.*$/gm) ?? [];
  return [];
}

/** `*.md` paths named in comments that do not resolve to a file inside the repository. */
function brokenDocLinks(file: string, text: string, root: string): string[] {
  const broken: string[] = [];
  for (const comment of commentsOf(file, text)) {
    for (const [name] of comment.matchAll(/(?<![\w/:.-])(?:\.{0,2}\/)?[\w.-]+(?:\/[\w.-]+)*\.md\b/g)) {
      // A name is read from the repository root (docs/contract.md) or relative to the file.
      const candidates = [path.resolve(root, name), path.resolve(path.dirname(file), name)];
      const inside = candidates.filter((c) => !path.relative(root, c).startsWith('..'));
      if (!inside.some((c) => existsSync(c))) broken.push(name);
    }
  }
  return broken;
}

function sourceFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return SKIP_DIRS.has(entry.name) ? [] : sourceFiles(full);
    return [full];
  });
}

describe('links from code comments to documents', () => {
  it('finds a missing document, one outside the repository, and accepts one that exists', () => {
    const file = path.join(ROOT, 'shared', 'example.ts');
    // Names built from parts, so that a plain-text search of the tree does not take them for links.
    const [contract, design, guide] = ['CONTRACT', 'DESIGN', 'GUIDE'].map((n) => `${n}${'.md'}`);
    const text = [
      `// Settings (${contract}); see also ../../shared/${design} and docs/contract.md.`,
      "const url = 'https://example.com/README.md'; /* docs/architecture.md */",
      `/** ../docs/deployment.md, https://github.com/o/r/blob/main/${guide} */`,
    ].join('\n');
    expect(brokenDocLinks(file, text, ROOT)).toEqual([contract, `../../shared/${design}`]);
    expect(brokenDocLinks('infra/x.bicep', '// docs/missing.md\nparam a string', ROOT)).toEqual([
      'docs/missing.md',
    ]);
    expect(brokenDocLinks('azure.yaml', '# See docs/deployment.md.\nname: x', ROOT)).toEqual([]);
  });

  it('every *.md a source comment names exists in the repository', () => {
    const files = [
      ...SOURCE_DIRS.flatMap((d) => sourceFiles(path.join(ROOT, d))),
      ...readdirSync(ROOT)
        .filter((name) => SCRIPT.test(name) || HASH_COMMENTS.test(name) || name.endsWith('.bicep'))
        .map((name) => path.join(ROOT, name)),
    ];
    expect(files.length).toBeGreaterThan(50);
    const broken = files.flatMap((file) =>
      brokenDocLinks(file, readFileSync(file, 'utf8'), ROOT).map(
        (name) => `${path.relative(ROOT, file)}: ${name}`,
      ),
    );
    expect(broken).toEqual([]);
  });
});

describe('commands the documents name', () => {
  const COMMAND_DOCS = ['README.md', 'docs/contract.md', 'docs/architecture.md', 'docs/deployment.md'];
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };

  it('every `npm run X` a newcomer reads in them is a script of package.json', () => {
    const named = COMMAND_DOCS.flatMap((doc) =>
      [...readFileSync(path.join(ROOT, doc), 'utf8').matchAll(/npm run ([\w:.-]*[\w])/g)].map(
        (m) => `${doc}: npm run ${m[1] ?? ''}`,
      ),
    );
    expect(new Set(named.map((n) => n.split(': ')[1])).size).toBeGreaterThan(20);
    expect(named.filter((n) => !((n.split('npm run ')[1] ?? '') in pkg.scripts))).toEqual([]);
  });

  it('every scripts/*.ts file they name exists', () => {
    const missing = COMMAND_DOCS.flatMap((doc) =>
      [
        ...readFileSync(path.join(ROOT, doc), 'utf8').matchAll(
          /\b((?:scripts|test|shared|functions|web|bench)\/[\w./-]*\.ts)\b/g,
        ),
      ]
        .map((m) => m[1] ?? '')
        .filter((file) => !existsSync(path.join(ROOT, file)))
        .map((file) => `${doc}: ${file}`),
    );
    expect(missing).toEqual([]);
  });
});

// docs/architecture.md and docs/deployment.md name files and what is in them; both drift as the
// code moves. Paths from the repository root must exist; a bare file name (`gateway.ts`) must name
// one source file; "`name` in `file`" and "`file` (`a`, `b`)" must find each name in that file.
const DOCS = ['docs/architecture.md', 'docs/deployment.md'];
const TREE_DIRS = ['functions', 'shared', 'scripts', 'test', 'bench', 'web', 'infra', 'docs'];
/** Made by a build, a run or the operator, never in the repository. */
const GENERATED = /^(dist\/|\.data\/|\.azure\/|\.cache\/|local\.settings\.json$)/;
const FILE_NAME = String.raw`[\w.-]+(?:\/[\w.-]+)*\.(?:ts|mts|js|mjs|json|bicep|ya?ml|md|db)`;

function treeFiles(root: string): string[] {
  return [
    ...TREE_DIRS.flatMap((d) => sourceFiles(path.join(root, d))),
    ...readdirSync(root).map((name) => path.join(root, name)),
  ].map((file) => path.relative(root, file).split(path.sep).join('/'));
}

/** Where a bare file name is looked for, in order: the data module's files are named bare most. */
const BARE_NAME_DIRS = ['shared/data/', 'shared/', 'scripts/lib/', 'scripts/', ''];

/** The repository file a document means by `name`: itself from the root, else the one so named. */
function resolveNamed(name: string, tree: readonly string[]): string | null {
  if (tree.includes(name) || (name.endsWith('/') && tree.some((f) => f.startsWith(name)))) return name;
  if (name.includes('/')) return null;
  for (const dir of BARE_NAME_DIRS) {
    const found = tree.filter((f) => f.startsWith(dir) && path.posix.basename(f) === name);
    if (found.length) return found.length === 1 ? (found[0] ?? null) : null;
  }
  return null;
}

/** Problems with the files and names a document names (`read` gives a repository file's text). */
function docNameProblems(text: string, tree: readonly string[], read: (file: string) => string): string[] {
  const problems: string[] = [];
  const topDirs = new Set(tree.map((f) => f.split('/')[0]));
  for (const [, name = ''] of text.matchAll(
    new RegExp(String.raw`\x60(${FILE_NAME}|[\w-]+(?:\/[\w.-]+)*\/)\x60`, 'g'),
  )) {
    if (GENERATED.test(name) || (name.endsWith('/') && !topDirs.has(name.split('/')[0]))) continue;
    if (resolveNamed(name, tree) === null) problems.push(`no file ${name}`);
  }
  const hasName = (file: string, name: string): boolean =>
    // `Gateway.bulkWriteKeyed`, `MessageEvent.sentAt`: the member is what the file must hold.
    new RegExp(String.raw`\b${(name.split('.').at(-1) ?? name).replace(/\$/g, '\\$')}\b`).test(read(file));
  const claims = [
    ...[
      ...text.matchAll(new RegExp(String.raw`\x60([A-Za-z_$][\w$.]*)\x60 in \x60(${FILE_NAME})\x60`, 'g')),
    ].map(([, name = '', file = '']) => ({ file, names: [name] })),
    ...[
      ...text.matchAll(new RegExp(String.raw`\x60(${FILE_NAME})\x60 \(((?:\x60[\w$.]+\x60(?:, )?)+)\)`, 'g')),
    ].map(([, file = '', list = '']) => ({
      file,
      names: [...list.matchAll(/`([\w$.]+)`/g)].map((m) => m[1] ?? ''),
    })),
  ];
  for (const { file, names } of claims) {
    const found = resolveNamed(file, tree);
    if (found === null) continue; // reported above
    for (const name of names) if (!hasName(found, name)) problems.push(`${name} not in ${found}`);
  }
  return problems;
}

describe('files and names the architecture and deployment documents give', () => {
  const tree = treeFiles(ROOT);
  const read = (file: string): string => readFileSync(path.join(ROOT, file), 'utf8');

  it('finds a missing file, an ambiguous bare name (two schemas.ts in shared/), and a name missing from its file', () => {
    const text = [
      'The one rule: `shared/data/summary.ts`, `gateway.ts` (`Gateway`, `runBulk`, `retryEverything`).',
      '`countedAs` in `message-doc.ts`, `foldEverything` in `shared/data/stats.ts`; `scripts/lib/x.ts`,',
      '`schemas.ts`, `web/simulator/`, `dist/package/app.zip`, `local.settings.json`, `npm run dev`.',
    ].join('\n');
    expect(docNameProblems(text, tree, read)).toEqual([
      'no file scripts/lib/x.ts',
      'no file schemas.ts',
      'foldEverything not in shared/data/stats.ts',
      'retryEverything not in shared/data/gateway.ts',
    ]);
  });

  for (const doc of DOCS) {
    it(`${doc}: every file it names exists, and every name it places in a file is there`, () => {
      expect(docNameProblems(read(doc), tree, read)).toEqual([]);
    });
  }
});
