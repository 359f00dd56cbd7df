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
  const DOCS = ['README.md', 'docs/contract.md', 'docs/architecture.md', 'docs/deployment.md'];
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };

  it('every `npm run X` a newcomer reads in them is a script of package.json', () => {
    const named = DOCS.flatMap((doc) =>
      [...readFileSync(path.join(ROOT, doc), 'utf8').matchAll(/npm run ([\w:.-]*[\w])/g)].map(
        (m) => `${doc}: npm run ${m[1] ?? ''}`,
      ),
    );
    expect(new Set(named.map((n) => n.split(': ')[1])).size).toBeGreaterThan(20);
    expect(named.filter((n) => !((n.split('npm run ')[1] ?? '') in pkg.scripts))).toEqual([]);
  });

  it('every scripts/*.ts file they name exists', () => {
    const missing = DOCS.flatMap((doc) =>
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
