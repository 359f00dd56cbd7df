// Where the database tooling keeps its files: the repository, its .data folder, the user cache.
import { existsSync, promises as fs, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export function repoRoot(): string {
  // From scripts/lib (tsx) or dist/scripts/lib (built): the first folder with a package.json.
  let dir = __dirname;
  while (!existsSync(path.join(dir, 'package.json'))) {
    const parent = path.dirname(dir);
    if (parent === dir) return process.cwd();
    dir = parent;
  }
  return dir;
}

export function defaultDataDir(): string {
  return path.join(repoRoot(), '.data');
}

/**
 * Creates a folder for the local servers' files (every user's number, name and messages, queued
 * notifications) readable by its owner only, and takes that right back from others when an
 * earlier version made it open to them.
 */
export async function privateDir(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await fs.chmod(dir, 0o700);
}

/** The user's home as `env` sees it (so a test can point it elsewhere). */
export function homeDir(env: NodeJS.ProcessEnv): string {
  return env['HOME'] || os.homedir();
}

export function cacheRoot(env: NodeJS.ProcessEnv): string {
  return path.join(env['XDG_CACHE_HOME'] || path.join(homeDir(env), '.cache'), 'whatsapp-cosmos-bot');
}

export function displayPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : file;
}

/** Every file under `dir`, sorted, as '/'-separated paths relative to `dir`. */
export function listFiles(dir: string): string[] {
  const found: string[] = [];
  const walk = (current: string): void => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      const full = path.join(current, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.isFile()) found.push(path.relative(dir, full).split(path.sep).join('/'));
    }
  };
  walk(dir);
  return found.sort();
}
