// docs/deployment.md's shell steps, run as a newcomer would run them: in order, in one bash, where
// each command after "Check the deployment" is a child process (curl, npm) that sees only exported
// variables. `azd` is a stand-in that prints what `azd env get-values` prints: the environment's
// values as godotenv writes them, `KEY="value"` lines without `export` (azure-dev,
// pkg/output/envvars.go), so `eval` alone leaves them in the shell and out of every child process.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SETTING_NAMES } from '../../shared/config';

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

// The guide's "Parameters and settings" table, its outputs and its roles, read against infra/: each
// is set by hand and drifts when a parameter, a default, an output or a role changes.
const MAIN_BICEP = readFileSync(path.join(ROOT, 'infra', 'main.bicep'), 'utf8');
const AZD_PARAMETERS = JSON.parse(readFileSync(path.join(ROOT, 'infra', 'main.parameters.json'), 'utf8')) as {
  parameters: Record<string, { value: unknown }>;
};
/** Parameters azd fills itself or that no operator sets: not in the table. */
const UNLISTED_PARAMETERS = ['environmentName', 'location', 'tags'];
/** Settings only `npm run dev` reads. */
const LOCAL_ONLY_SETTINGS = ['PORT'];

interface BicepParam {
  readonly name: string;
  /** The default as the guide writes it: `required` without one, `unset` for an empty string. */
  readonly shown: string;
}

function bicepParams(bicep: string): BicepParam[] {
  return [...bicep.matchAll(/^param (\w+) \w+(?: = (.+))?$/gm)].map(([, name = '', value]) => {
    const literal = value?.trim();
    const shown =
      literal === undefined ? 'required' : literal === "''" ? 'unset' : literal.replace(/^'(.*)'$/, '$1');
    return { name, shown };
  });
}

const bicepOutputs = (bicep: string): string[] =>
  [...bicep.matchAll(/^output (\w+) /gm)].map((m) => m[1] ?? '');

interface TableRow {
  readonly params: string[];
  readonly azd: string[];
  readonly settings: string[];
  readonly defaults: string[];
}

/** The rows of the table under `heading` (cells split on `|`, names in backticks). */
function parameterTable(doc: string, heading: string): TableRow[] {
  const section = doc.split(`\n## ${heading}\n`)[1]?.split('\n## ')[0] ?? '';
  const names = (cell: string): string[] => [...cell.matchAll(/`([^`]+)`/g)].map((m) => m[1] ?? '');
  return section
    .split('\n')
    .filter((line) => line.startsWith('|'))
    .slice(2)
    .map((line) => {
      const [params = '', azd = '', settings = '', defaults = ''] = line.split('|').slice(1, -1);
      const sameNames = settings.trim() === 'same names';
      return {
        params: names(params).filter((name) => /^[a-z]\w*$/.test(name)),
        azd: names(azd),
        settings: sameNames ? names(azd) : names(settings),
        // "0 (keep)", "`https://graph.facebook.com`": the value without backticks or a gloss.
        defaults: defaults.split(',').map((d) =>
          d
            .trim()
            .replace(/`/g, '')
            .replace(/\s*\(.*\)$/, ''),
        ),
      };
    });
}

/** What the table says that infra/ and shared/config.ts do not. */
function tableProblems(
  doc: string,
  bicep: string,
  azdParameters: Record<string, { value: unknown }>,
): string[] {
  const problems: string[] = [];
  const rows = parameterTable(doc, 'Parameters and settings');
  const params = new Map(bicepParams(bicep).map((p) => [p.name, p]));
  const listed = rows.flatMap((row) => row.params);
  for (const name of listed) if (!params.has(name)) problems.push(`${name}: no such parameter`);
  for (const name of params.keys())
    if (!UNLISTED_PARAMETERS.includes(name) && !listed.includes(name))
      problems.push(`${name}: not in the table`);
  for (const row of rows) {
    if (row.params.length && row.defaults.length === row.params.length) {
      row.params.forEach((name, i) => {
        const shown = params.get(name)?.shown;
        if (shown !== undefined && row.defaults[i] !== shown)
          problems.push(`${name}: default ${row.defaults[i] ?? ''} in the table, ${shown} in main.bicep`);
      });
    } else if (row.params.length && !(row.params.length > 1 && row.defaults.length === 1)) {
      problems.push(
        `${row.params.join(', ')}: ${row.defaults.length} defaults for ${row.params.length} parameters`,
      );
    }
    // An azd value feeds one of the row's parameters through main.parameters.json.
    for (const value of row.azd) {
      const fed = Object.entries(azdParameters)
        .filter(([, p]) => String(p.value).startsWith(`\${${value}`))
        .map(([name]) => name);
      if (!fed.some((name) => row.params.includes(name)))
        problems.push(`${value}: feeds ${fed.join(', ') || 'no parameter'}, not ${row.params.join(', ')}`);
    }
  }
  // Every parameter main.parameters.json fills from azd is in the azd column of its row.
  for (const [name, p] of Object.entries(azdParameters)) {
    const value = /^\$\{(\w+)/.exec(String(p.value))?.[1];
    if (!value || UNLISTED_PARAMETERS.includes(name)) continue;
    const row = rows.find((r) => r.params.includes(name));
    if (row && !row.azd.includes(value)) problems.push(`${name}: azd value ${value} not in its row`);
  }
  const settings = rows.flatMap((row) => row.settings);
  const known: readonly string[] = SETTING_NAMES;
  for (const name of settings) if (!known.includes(name)) problems.push(`${name}: not a setting`);
  for (const name of known)
    if (!LOCAL_ONLY_SETTINGS.includes(name) && !settings.includes(name))
      problems.push(`${name}: setting not in the table`);
  return problems;
}

describe('docs/deployment.md agrees with infra/', () => {
  it('finds a parameter, a default, an azd value and a setting the table gets wrong', () => {
    const bicep = [
      'param environmentName string',
      "param whatsappGraphUrl string = 'https://graph.facebook.com'",
      'param aiHistoryLimit int = 10',
      'param aiTimeoutMs int = 20000',
      'param aiMaxPerMinute int = 10',
      "param aiModel string = ''",
      'param natGateway bool = false',
    ].join('\n');
    const doc = [
      '',
      '## Parameters and settings',
      '',
      '| parameter | azd | app setting | default |',
      '| - | - | - | - |',
      '| `whatsappGraphUrl` | `WHATSAPP_GRAPH_URL` | `WHATSAPP_GRAPH_URL` | `https://graph.facebook.com` |',
      '| `aiHistoryLimit`, `aiTimeoutMs`, `aiMaxPerMinute` | — | `AI_HISTORY_LIMIT`, `AI_TIMEOUT_MS`, `AI_MAX` | 10, 30000, 10 |',
      '| `aiModel` | `AI_MODEL` | same names | unset |',
      '| `natGatway` | — | — | false |',
    ].join('\n');
    const azd = {
      whatsappGraphUrl: { value: '${WHATSAPP_GRAPH_URL=https://graph.facebook.com}' },
      aiModel: { value: '${AI_DEPLOYMENT}' },
      natGateway: { value: '${NAT_GATEWAY=false}' },
    };
    expect(tableProblems(doc, bicep, azd).filter((p) => !p.endsWith('setting not in the table'))).toEqual([
      'natGatway: no such parameter',
      'natGateway: not in the table',
      'aiTimeoutMs: default 30000 in the table, 20000 in main.bicep',
      'AI_MODEL: feeds no parameter, not aiModel',
      'aiModel: azd value AI_DEPLOYMENT not in its row',
      'AI_MAX: not a setting',
    ]);
  });

  it('"Parameters and settings" names every parameter of main.bicep with its default, azd value and setting', () => {
    expect(tableProblems(DOC, MAIN_BICEP, AZD_PARAMETERS.parameters)).toEqual([]);
  });

  it('names only outputs main.bicep has', () => {
    const outputs = bicepOutputs(MAIN_BICEP);
    const printed =
      /It ends by printing the outputs,[^:]*:([^.]*)\./.exec(DOC.replace(/\n/g, ' '))?.[1] ?? '';
    const named = [
      ...printed.matchAll(/`(\w+)`/g),
      ...DOC.matchAll(/`(\w+)` output/g),
      ...DOC.matchAll(/properties\.outputs\.(\w+)\.value/g),
    ].map((m) => m[1] ?? '');
    expect(named.length).toBeGreaterThan(8);
    expect(named.filter((name) => !outputs.includes(name))).toEqual([]);
  });

  it("lists exactly the roles infra/ gives the app's identity", () => {
    // `var storageBlobDataOwner = '<role definition id>'` in infra/modules/*.bicep.
    const infraDir = path.join(ROOT, 'infra', 'modules');
    const roles = readdirSync(infraDir)
      .flatMap((file) => [
        ...readFileSync(path.join(infraDir, file), 'utf8').matchAll(/^var (\w+) = '[0-9a-f-]{36}'$/gm),
      ])
      .map((m) => (m[1] ?? '').toLowerCase())
      .sort();
    const sentence = /which has only the roles it needs: ([^.]*)\./.exec(DOC.replace(/\s+/g, ' '))?.[1] ?? '';
    const listed = sentence
      .replace(/\([^)]*\)/g, '')
      .replace(/—[^—]*—/g, ',')
      .replace(/ on that account$/, '')
      .split(/,| and /)
      .map((role) => role.trim().replace(/\s+/g, '').toLowerCase())
      .filter(Boolean)
      .sort();
    expect(listed).toEqual(roles);
  });
});

describe('docs/deployment.md states what npm run check:infra skips and requires', () => {
  /** Skipped checks and how many times: `CKV_AZURE_41 secret expiry (×5)` is five. */
  function skipTable(doc: string): Record<string, number> {
    const section = doc.split('\n## Validation without Azure\n')[1]?.split('\n## ')[0] ?? '';
    const counts: Record<string, number> = {};
    for (const [, id = '', times] of section.matchAll(/^\| (CKV\w+)[^|]*?(?:\(×(\d+)\))?\s*\|/gm))
      counts[id] = (counts[id] ?? 0) + Number(times ?? 1);
    return counts;
  }

  it('reads the skips of the table, with their counts', () => {
    const doc =
      '\n## Validation without Azure\n\n| check | why |\n| - | - |\n| CKV_AZURE_1 x | a |\n| CKV_AZURE_2 y (×3) | b |\n';
    expect(skipTable(doc)).toEqual({ CKV_AZURE_1: 1, CKV_AZURE_2: 3 });
  });

  it('lists every checkov skip annotated in infra/, as many times as it is annotated', () => {
    const annotated: Record<string, number> = {};
    const walk = (dir: string): string[] =>
      readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
      );
    for (const file of walk(path.join(ROOT, 'infra')).filter((f) => f.endsWith('.bicep')))
      for (const [, ids = ''] of readFileSync(file, 'utf8').matchAll(/checkov:skip=([\w,]+)/g))
        for (const id of ids.split(',')) annotated[id] = (annotated[id] ?? 0) + 1;
    expect(skipTable(DOC)).toEqual(annotated);
  });

  it("gives the script's bounds on passed and skipped checks", () => {
    const script = readFileSync(path.join(ROOT, 'scripts', 'check-infra.ts'), 'utf8');
    const bound = (name: string): number => Number(new RegExp(`const ${name} = (\\d+);`).exec(script)?.[1]);
    const stated = /at least (\d+) passed and at most\s+(\d+) skipped/.exec(DOC);
    expect([Number(stated?.[1]), Number(stated?.[2])]).toEqual([bound('MIN_PASSED'), bound('MAX_SKIPPED')]);
  });
});
