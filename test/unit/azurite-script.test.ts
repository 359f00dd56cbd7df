// `npm run azurite` (README, `npm start`) is Azurite for `func start`, run beside `npm run dev`. Two
// Azurites on one folder overwrite each other's state when they save it, and the one of `npm run
// dev` would also hand its queued notifications to the Functions host: it needs a folder of its own.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

function azuriteLocation(): string {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  const found = /--location\s+(\S+)/.exec(pkg.scripts['azurite'] ?? '');
  if (!found?.[1]) throw new Error('the azurite script names no --location');
  return path.resolve(ROOT, found[1]);
}

describe('npm run azurite', () => {
  it("keeps its files apart from npm run dev's Azurite (.data/azurite), in the git-ignored .data", () => {
    const location = azuriteLocation();
    // scripts/dev.ts: path.join(DEV_DATA_DIR ?? '.data', 'azurite').
    expect(location).not.toBe(path.join(ROOT, '.data', 'azurite'));
    expect(path.relative(path.join(ROOT, '.data', 'azurite'), location).startsWith('..')).toBe(true);
    expect(path.dirname(location)).toBe(path.join(ROOT, '.data'));
  });
});

describe.skipIf(process.platform === 'win32')('npm run azurite: its folder', () => {
  // Azurite creates its --location with the umask's modes (0755): queued notifications, with every
  // sender's number and text, were readable by every account on the machine.
  it('is made readable by its owner only before Azurite starts, also when an earlier run left it open', () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    };
    const [prepare, start] = (pkg.scripts['azurite'] ?? '').split(' && ');
    expect(start).toMatch(/^azurite --location \.data\/azurite-func /);
    const location = /--location\s+(\S+)/.exec(start ?? '')?.[1];
    const root = mkdtempSync(path.join(os.tmpdir(), 'azurite-script-'));
    try {
      mkdirSync(path.join(root, '.data', 'azurite-func'), { recursive: true, mode: 0o755 });
      chmodSync(path.join(root, '.data', 'azurite-func'), 0o755);
      // `node --import tsx <script> <folder>`, run here with the tsx command (the same loader) from
      // a folder that has no node_modules of its own.
      const [node, flag, loader, ...args] = (prepare ?? '').split(' ');
      expect([node, flag, loader]).toEqual(['node', '--import', 'tsx']);
      const tsx = path.join(ROOT, 'node_modules', '.bin', 'tsx');
      const run = spawnSync(tsx, [path.join(ROOT, args[0] ?? ''), ...args.slice(1)], {
        cwd: root,
        encoding: 'utf8',
      });
      expect(run.status, run.stderr).toBe(0);
      expect(statSync(path.join(root, location ?? '')).mode & 0o777).toBe(0o700);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
