// docs/deployment.md's shell steps, run as a newcomer would run them: in order, in one bash, where
// each command after "Check the deployment" is a child process (curl, npm) that sees only exported
// variables. `azd` is a stand-in that prints what `azd env get-values` prints: the environment's
// values as godotenv writes them, `KEY="value"` lines without `export` (azure-dev,
// pkg/output/envvars.go), so `eval` alone leaves them in the shell and out of every child process.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const DOC = readFileSync(path.join(ROOT, 'docs', 'deployment.md'), 'utf8');

/** The doc's shell code blocks in order, each as its lines (comments kept: bash drops them). */
function shellBlocks(): string[][] {
  return [...DOC.matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((match) => (match[1] ?? '').split('\n'));
}

const lines = (): string[] => shellBlocks().flat();
const loadsAzdValues = (line: string): boolean => /azd env get-values/.test(line) && /\beval\b/.test(line);

const AZD_VALUES: Record<string, string> = {
  AZURE_RESOURCE_GROUP: 'rg-whatsapp-bot',
  FUNCTION_APP_URL: 'https://func-abc.azurewebsites.net',
  HEALTH_URL: 'https://func-abc.azurewebsites.net/api/health',
  WHATSAPP_ACCESS_TOKEN: 'EAAG-token',
  WHATSAPP_VERIFY_TOKEN: 'verify-token-0123456789',
};

const bin = mkdtempSync(path.join(tmpdir(), 'deployment-doc-'));
afterAll(() => rmSync(bin, { recursive: true, force: true }));
const azd = path.join(bin, 'azd');
writeFileSync(
  azd,
  [
    '#!/bin/sh',
    'if [ "$1" = env ] && [ "$2" = get-values ]; then',
    ...Object.entries(AZD_VALUES).map(([key, value]) => `  printf '%s\\n' '${key}="${value}"'`),
    '  exit 0',
    'fi',
    'echo "azd stand-in: unexpected arguments: $*" >&2',
    'exit 2',
  ].join('\n'),
);
chmodSync(azd, 0o755);

/** Runs `script` in bash with the stand-in azd first on PATH and none of AZD_VALUES set. */
function bash(script: string): { status: number | null; stdout: string; stderr: string } {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: `${bin}${path.delimiter}${process.env['PATH'] ?? ''}`,
  };
  for (const key of Object.keys(AZD_VALUES)) delete env[key];
  const result = spawnSync('bash', ['-c', script], { env, encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

const childSees = `node -e 'process.stdout.write(JSON.stringify(Object.fromEntries(${JSON.stringify(
  Object.keys(AZD_VALUES),
)}.map((k) => [k, process.env[k] ?? null]))))'`;

describe('docs/deployment.md loads the azd values where the next commands can read them', () => {
  it('shows how to load them', () => {
    expect(lines().filter(loadsAzdValues).length).toBeGreaterThan(0);
  });

  it('exports them: a child process (curl, npm run setup:whatsapp) sees every value', () => {
    for (const line of lines().filter(loadsAzdValues)) {
      const run = bash(`${line}\n${childSees}`);
      expect(run.stderr, line).toBe('');
      expect(JSON.parse(run.stdout), line).toEqual(AZD_VALUES);
    }
  });

  it('loads them (or, for Path B, reads the deployment output) before the first command that uses one', () => {
    const all = lines();
    for (const name of ['HEALTH_URL', 'FUNCTION_APP_URL']) {
      const firstUse = all.findIndex((line) => line.includes(`"$${name}"`) && !line.startsWith(`${name}=`));
      expect(firstUse, name).toBeGreaterThanOrEqual(0);
      const loaded = all.findIndex(loadsAzdValues);
      expect(loaded, `${name}: azd values loaded before "${all[firstUse]}"`).toBeGreaterThanOrEqual(0);
      expect(loaded, `${name}: azd values loaded before "${all[firstUse]}"`).toBeLessThan(firstUse);
      // Path B has no azd environment: the same value from the deployment's outputs.
      const fromOutputs = all.findIndex(
        (line) =>
          line.startsWith(`${name}=$(az deployment group show`) &&
          line.includes(`properties.outputs.${name}.value`),
      );
      expect(fromOutputs, `${name}: Path B reads properties.outputs.${name}.value`).toBeGreaterThanOrEqual(0);
      expect(fromOutputs, `${name}: Path B reads it before "${all[firstUse]}"`).toBeLessThan(firstUse);
    }
  });

  it('has Path B export the tokens it read, which setup:whatsapp reads from its environment', () => {
    // Path B reads them with `read -rs` / an assignment: shell variables, not exported.
    const all = lines();
    const setup = all.findIndex((line) => line.startsWith('npm run setup:whatsapp'));
    expect(setup).toBeGreaterThanOrEqual(0);
    const exported = all
      .slice(0, setup)
      .filter((line) => /^export\b/.test(line))
      .join(' ');
    expect(exported).toMatch(/\bWHATSAPP_ACCESS_TOKEN\b/);
    expect(exported).toMatch(/\bWHATSAPP_VERIFY_TOKEN\b/);
  });
});

describe('docs/deployment.md publishes the artifact with Core Tools', () => {
  it('names the language: the artifact has no local.settings.json to infer it from', () => {
    // Core Tools takes the worker runtime from a language flag or from FUNCTIONS_WORKER_RUNTIME in
    // local.settings.json, and `func azure functionapp publish` stops with "Worker runtime cannot
    // be 'None'" without either (azure-functions-core-tools, GlobalCoreToolsSettings.cs and
    // PublishFunctionAppAction.cs). dist/package/app holds host.json, package.json and dist/ only.
    const publish = lines().filter((line) => line.includes('func azure functionapp publish'));
    expect(publish.length).toBeGreaterThan(0);
    for (const line of publish) {
      expect(line, line).toMatch(/\s--javascript\b/);
      expect(line, line).toMatch(/\bcd dist\/package\/app\b/);
    }
  });
});
