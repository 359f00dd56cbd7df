// Finds a Chromium for the browser tests the way people have one: CHROMIUM_PATH, a browser on the
// PATH or in the usual system places (Linux, macOS), then one installed by Playwright. The global
// setup looks once per run and provides the path as `chromiumPath` ('' when there is none: the
// browser tests are skipped, or under CI=true the run fails).
import { accessSync, constants, statSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';

export const HOW_TO_GET_CHROMIUM =
  'set CHROMIUM_PATH to a Chromium or Chrome binary, install one (apt install chromium, brew install --cask chromium), ' +
  'or run `npx playwright-core install chromium`';

const NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];

export const SYSTEM_PATHS: Readonly<Record<string, readonly string[]>> = {
  linux: [
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
    '/usr/bin/google-chrome',
    '/usr/bin/google-chrome-stable',
    '/snap/bin/chromium',
    '/usr/lib/chromium/chromium',
    '/opt/google/chrome/chrome',
  ],
  darwin: [
    '/Applications/Google Chrome.app/Contents/MacOS/Google Chrome',
    '/Applications/Chromium.app/Contents/MacOS/Chromium',
  ],
};

export interface ChromiumLookup {
  readonly env?: NodeJS.ProcessEnv;
  readonly platform?: NodeJS.Platform;
  /** Overrides the usual system places (tests). */
  readonly systemPaths?: readonly string[];
  /** Where Playwright keeps its Chromium (default: playwright-core's registry). */
  readonly playwrightPath?: () => string | undefined;
}

export interface FoundChromium {
  readonly path: string;
  readonly source: 'CHROMIUM_PATH' | 'PATH' | 'system' | 'playwright';
}

const isExecutable = (file: string): boolean => {
  try {
    if (!statSync(file).isFile()) return false;
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
};

const playwrightChromium = (): string | undefined => {
  try {
    return chromium.executablePath();
  } catch {
    return undefined;
  }
};

/** The first Chromium found, or null. A CHROMIUM_PATH that is not an executable is an error. */
export function findChromium(lookup: ChromiumLookup = {}): FoundChromium | null {
  const env = lookup.env ?? process.env;
  const platform = lookup.platform ?? process.platform;
  const configured = env['CHROMIUM_PATH']?.trim();
  if (configured) {
    if (!isExecutable(configured))
      throw new Error(`CHROMIUM_PATH is set but ${configured} is not an executable file`);
    return { path: configured, source: 'CHROMIUM_PATH' };
  }
  for (const dir of (env['PATH'] ?? '').split(path.delimiter).filter(Boolean)) {
    for (const name of NAMES) {
      const candidate = path.join(dir, name);
      if (isExecutable(candidate)) return { path: candidate, source: 'PATH' };
    }
  }
  for (const candidate of lookup.systemPaths ?? SYSTEM_PATHS[platform] ?? []) {
    if (isExecutable(candidate)) return { path: candidate, source: 'system' };
  }
  const installed = (lookup.playwrightPath ?? playwrightChromium)();
  if (installed && isExecutable(installed)) return { path: installed, source: 'playwright' };
  return null;
}

/**
 * What the global setup does with the lookup: the browser's path, or '' (browser tests skipped,
 * one line says how to get one); under CI=true a missing browser fails the run.
 */
export function chromiumForRun(
  lookup: ChromiumLookup = {},
  say: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): string {
  const env = lookup.env ?? process.env;
  const found = findChromium(lookup);
  if (found) {
    say(`browser tests: Chromium at ${found.path} (${found.source})`);
    return found.path;
  }
  if (/^(1|true)$/i.test(env['CI'] ?? ''))
    throw new Error(`no Chromium for the browser tests (CI=true): ${HOW_TO_GET_CHROMIUM}`);
  say(`browser tests skipped: no Chromium found; to run them, ${HOW_TO_GET_CHROMIUM}`);
  return '';
}

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** Headless Chromium at the path the global setup provides (`inject('chromiumPath')`). */
export const launchChromium = (executablePath: string): Promise<Browser> =>
  chromium.launch({ executablePath, headless: true, args: FLAGS });
