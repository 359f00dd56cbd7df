// `npm run azurite` runs this first: the folder it names (Azurite's files for `func start`, which
// hold queued notifications, every sender's number and text among them) is made readable by its
// owner only, as `npm run dev` makes its own (./lib/paths).
import { privateDir } from './lib/paths';

const dirs = process.argv.slice(2);
if (dirs.length === 0) {
  process.stderr.write('usage: node --import tsx scripts/private-dir.ts FOLDER...\n');
  process.exitCode = 2;
} else {
  Promise.all(dirs.map((dir) => privateDir(dir))).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
}
