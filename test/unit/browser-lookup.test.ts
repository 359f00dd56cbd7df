// The browser lookup of the browser tests (test/helpers/browser.ts) against a fake PATH, fake
// system places and a fake Playwright install in a temporary folder.
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chromiumForRun, findChromium, type ChromiumLookup } from '../helpers/browser';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'browser-lookup-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function fakeBinary(relative: string, executable = true): string {
  const file = path.join(tmp, relative);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, '#!/bin/sh\nexit 0\n');
  chmodSync(file, executable ? 0o755 : 0o644);
  return file;
}

const binDir = path.dirname(fakeBinary('bin/chromium-browser'));
const systemChrome = fakeBinary('opt/google/chrome/chrome');
const playwrightChrome = fakeBinary('ms-playwright/chromium-1/chrome-linux64/chrome');
const notExecutable = fakeBinary('plain/chromium', false);
const nowhere: ChromiumLookup = {
  env: { PATH: path.join(tmp, 'empty') },
  systemPaths: [path.join(tmp, 'usr/bin/chromium')],
  playwrightPath: () => path.join(tmp, 'ms-playwright/chromium-2/chrome'),
};

describe('findChromium', () => {
  it('takes CHROMIUM_PATH first, and refuses one that is not an executable', () => {
    expect(findChromium({ ...nowhere, env: { CHROMIUM_PATH: systemChrome, PATH: binDir } })).toEqual({
      path: systemChrome,
      source: 'CHROMIUM_PATH',
    });
    expect(() => findChromium({ ...nowhere, env: { CHROMIUM_PATH: notExecutable } })).toThrow(
      /CHROMIUM_PATH is set but .* is not an executable/,
    );
  });

  it('then a browser on the PATH, then the usual system places, then Playwright’s', () => {
    const all: ChromiumLookup = {
      env: { PATH: [path.join(tmp, 'plain'), binDir].join(path.delimiter) },
      systemPaths: [path.join(tmp, 'missing'), systemChrome],
      playwrightPath: () => playwrightChrome,
    };
    expect(findChromium(all)).toEqual({ path: path.join(binDir, 'chromium-browser'), source: 'PATH' });
    expect(findChromium({ ...all, env: { PATH: '' } })).toEqual({ path: systemChrome, source: 'system' });
    expect(findChromium({ ...all, env: {}, systemPaths: [] })).toEqual({
      path: playwrightChrome,
      source: 'playwright',
    });
  });

  it('finds nothing when no candidate is an executable file', () => {
    expect(findChromium(nowhere)).toBeNull();
    expect(findChromium({ ...nowhere, systemPaths: [notExecutable, tmp] })).toBeNull();
  });

  it('knows the usual places on macOS', () => {
    const found = findChromium({ env: {}, platform: 'darwin', playwrightPath: () => undefined });
    // Only a Mac has them; elsewhere the darwin list must not find a Linux browser.
    if (process.platform !== 'darwin') expect(found).toBeNull();
    else expect(found?.path ?? '').toMatch(/\.app\/Contents\/MacOS\//);
  });
});

describe('chromiumForRun', () => {
  it('without a browser: skips the browser tests with one line that says how to get one', () => {
    const lines: string[] = [];
    expect(chromiumForRun(nowhere, (line) => lines.push(line))).toBe('');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^browser tests skipped: no Chromium found/);
    expect(lines[0]).toContain('CHROMIUM_PATH');
    expect(lines[0]).toContain('npx playwright-core install chromium');
  });

  it('without a browser under CI=true: fails the run', () => {
    const lines: string[] = [];
    expect(() =>
      chromiumForRun({ ...nowhere, env: { ...nowhere.env, CI: 'true' } }, (l) => lines.push(l)),
    ).toThrow(/no Chromium for the browser tests \(CI=true\)/);
    expect(lines).toEqual([]);
  });

  it('with a browser: gives its path, under CI too', () => {
    const lines: string[] = [];
    const lookup = { ...nowhere, env: { CI: 'true', PATH: binDir } };
    expect(chromiumForRun(lookup, (l) => lines.push(l))).toBe(path.join(binDir, 'chromium-browser'));
    expect(lines).toEqual([`browser tests: Chromium at ${path.join(binDir, 'chromium-browser')} (PATH)`]);
  });
});
