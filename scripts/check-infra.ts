// `npm run check:infra`: validates infra/ where the Bicep CLI cannot run. Every .bicep file must
// parse with tree-sitter-bicep (no ERROR or MISSING node), and checkov (installed into a private
// venv) must report no failed check, at least MIN_PASSED passed checks and at most MAX_SKIPPED
// skipped ones, each skip justified in the source (`// #checkov:skip=ID: why`).
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Language, Parser, type Node } from 'web-tree-sitter';
import { listFiles } from './lib/paths';
import { noArguments } from './lib/cli';

const ROOT = path.resolve(__dirname, '..');
const INFRA_DIR = 'infra';
const CHECKOV_VERSION = '3.3.30';
const VENV = path.join(ROOT, '.cache', 'checkov-venv');
const MIN_PASSED = 30;
const MAX_SKIPPED = 11;

class CheckError extends Error {}

function out(line: string): void {
  process.stdout.write(`${line}\n`);
}

/** Every .bicep file under dir, sorted, as paths relative to the repository root. */
function bicepFiles(dir: string): string[] {
  return listFiles(dir)
    .filter((name) => name.endsWith('.bicep'))
    .map((name) => path.relative(ROOT, path.join(dir, name)));
}

/** ERROR and MISSING nodes of one tree, as `line:col message` (1-based). */
function syntaxProblems(root: Node): string[] {
  const problems: string[] = [];
  const visit = (node: Node): void => {
    const where = `${node.startPosition.row + 1}:${node.startPosition.column + 1}`;
    if (node.isMissing) problems.push(`${where} missing ${node.type}`);
    else if (node.isError)
      problems.push(`${where} syntax error near ${JSON.stringify(node.text.slice(0, 40))}`);
    if (node.hasError) for (const child of node.children) visit(child);
  };
  visit(root);
  return problems;
}

async function parseAll(files: readonly string[]): Promise<string[]> {
  await Parser.init();
  const language = await Language.load(require.resolve('tree-sitter-bicep/tree-sitter-bicep.wasm'));
  const parser = new Parser();
  parser.setLanguage(language);
  const problems: string[] = [];
  for (const file of files) {
    const tree = parser.parse(readFileSync(path.join(ROOT, file), 'utf8'));
    if (!tree) {
      problems.push(`${file}: could not be parsed`);
      continue;
    }
    for (const problem of syntaxProblems(tree.rootNode)) problems.push(`${file}:${problem}`);
    tree.delete();
  }
  parser.delete();
  return problems;
}

/** Every `checkov:skip` annotation must name a check and say why. */
function skipAnnotations(files: readonly string[]): { count: number; problems: string[] } {
  let count = 0;
  const problems: string[] = [];
  for (const file of files) {
    readFileSync(path.join(ROOT, file), 'utf8')
      .split('\n')
      .forEach((line, index) => {
        const match = /checkov:skip=([A-Za-z0-9_,-]*)(?::(.*))?/.exec(line);
        if (!match) return;
        count += 1;
        if (!match[1] || (match[2] ?? '').trim().length < 10) {
          problems.push(`${file}:${index + 1}: checkov skip without a check id and a one-line justification`);
        }
      });
  }
  return { count, problems };
}

function run(command: string, args: readonly string[]): SpawnSyncReturns<string> {
  const result = spawnSync(command, args, { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (result.error) throw new CheckError(`cannot run ${command}: ${result.error.message}`);
  return result;
}

function venvBin(name: string): string {
  return process.platform === 'win32'
    ? path.join(VENV, 'Scripts', `${name}.exe`)
    : path.join(VENV, 'bin', name);
}

/** The pinned checkov in .cache/checkov-venv, installed from PyPI on first use. */
function ensureCheckov(): string {
  const checkov = venvBin('checkov');
  if (existsSync(checkov) && run(checkov, ['--version']).stdout.trim() === CHECKOV_VERSION) return checkov;
  out(`check:infra: installing checkov ${CHECKOV_VERSION} into ${path.relative(ROOT, VENV)} ...`);
  rmSync(VENV, { recursive: true, force: true });
  const python = process.env['PYTHON'] ?? (process.platform === 'win32' ? 'python' : 'python3');
  const venv = run(python, ['-m', 'venv', VENV]);
  if (venv.status !== 0) throw new CheckError(`${python} -m venv failed:\n${venv.stderr}`);
  const pip = run(venvBin('python'), [
    '-m',
    'pip',
    'install',
    '--disable-pip-version-check',
    '--quiet',
    `checkov==${CHECKOV_VERSION}`,
  ]);
  if (pip.status !== 0)
    throw new CheckError(`pip install checkov==${CHECKOV_VERSION} failed:\n${pip.stderr}`);
  return checkov;
}

interface Summary {
  passed: number;
  failed: number;
  skipped: number;
  parsing_errors: number;
}

interface FailedCheck {
  check_id?: string;
  resource?: string;
  file_path?: string;
  file_line_range?: number[];
}

interface Report {
  summary?: Summary;
  results?: { failed_checks?: FailedCheck[] };
}

/** checkov prints one report, a list of reports, or a bare summary when nothing was scanned. */
function readCheckovReports(stdout: string): { summary: Summary; failed: FailedCheck[] } {
  // The JSON starts at the beginning of a line; anything before it is a stray log line.
  let parsed: unknown;
  for (const match of stdout.matchAll(/^[[{]/gm)) {
    try {
      parsed = JSON.parse(stdout.slice(match.index));
      break;
    } catch {
      // not the start of the report: try the next line
    }
  }
  if (parsed === undefined) throw new CheckError(`checkov printed no JSON report:\n${stdout.slice(0, 2000)}`);
  const reports = (Array.isArray(parsed) ? parsed : [parsed]) as (Report & Partial<Summary>)[];
  const summary: Summary = { passed: 0, failed: 0, skipped: 0, parsing_errors: 0 };
  const failed: FailedCheck[] = [];
  for (const report of reports) {
    const counts: Partial<Summary> = report.summary ?? report;
    summary.passed += counts.passed ?? 0;
    summary.failed += counts.failed ?? 0;
    summary.skipped += counts.skipped ?? 0;
    summary.parsing_errors += counts.parsing_errors ?? 0;
    failed.push(...(report.results?.failed_checks ?? []));
  }
  return { summary, failed };
}

function runCheckov(): { summary: Summary; failed: FailedCheck[] } {
  const checkov = ensureCheckov();
  const result = run(checkov, [
    '--framework',
    'bicep',
    '-d',
    INFRA_DIR,
    '--compact',
    '--quiet',
    '-o',
    'json',
    '--soft-fail',
    // No calls to the vendor's API (guidelines, severities): offline and deterministic.
    '--skip-download',
  ]);
  if (result.status !== 0)
    throw new CheckError(`checkov exited with ${result.status}:\n${result.stderr.slice(-4000)}`);
  return readCheckovReports(result.stdout);
}

async function main(): Promise<void> {
  const files = bicepFiles(path.join(ROOT, INFRA_DIR));
  if (files.length === 0) throw new CheckError(`no .bicep files under ${INFRA_DIR}/`);
  const problems = await parseAll(files);
  for (const problem of problems) out(problem);
  out(`check:infra: tree-sitter-bicep parsed ${files.length} files, ${problems.length} syntax problems`);

  const skips = skipAnnotations(files);
  for (const problem of skips.problems) out(problem);

  const { summary, failed } = runCheckov();
  for (const check of failed) {
    const [first] = check.file_line_range ?? [];
    out(
      `FAILED ${check.check_id ?? '?'} ${check.resource ?? '?'} (${INFRA_DIR}${check.file_path ?? ''}:${first ?? '?'})`,
    );
  }
  const verdicts = [
    problems.length === 0 || 'syntax problems',
    skips.problems.length === 0 || 'unjustified skips',
    summary.parsing_errors === 0 || 'checkov could not parse some files',
    summary.failed === 0 || 'failed checks',
    summary.passed >= MIN_PASSED || `fewer than ${MIN_PASSED} passed checks`,
    (summary.skipped <= MAX_SKIPPED && skips.count <= MAX_SKIPPED) ||
      `more than ${MAX_SKIPPED} skipped checks`,
  ].filter((v): v is string => v !== true);
  out(
    `check:infra: checkov ${CHECKOV_VERSION}: ${summary.passed} passed, ${summary.failed} failed, ` +
      `${summary.skipped} skipped, ${summary.parsing_errors} parsing errors -> ` +
      (verdicts.length === 0 ? 'OK' : `FAIL (${verdicts.join('; ')})`),
  );
  if (verdicts.length > 0) process.exitCode = 1;
}

const HELP = `
Usage: npm run check:infra

Parses every Bicep file under infra/ (tree-sitter-bicep) and runs checkov on them; exits 1 on a
syntax problem, a failed check, or a skip without a justification.
`;

if (noArguments(process.argv.slice(2), HELP))
  main().catch((error: unknown) => {
    process.stderr.write(`check:infra: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
