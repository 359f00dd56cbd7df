// `npm run azurite` (README, `npm start`) is Azurite for `func start`, run beside `npm run dev`. Two
// Azurites on one folder overwrite each other's state when they save it, and the one of `npm run
// dev` would also hand its queued notifications to the Functions host: it needs a folder of its own.
import { readFileSync } from 'node:fs';
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
