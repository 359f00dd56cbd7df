// `npm run db:install-ferretdb`: builds the FerretDB fallback server ahead of time (e.g. in CI)
// and prints the binary's path on stdout.
import { noArguments } from './lib/cli';
import { ensureFerretDb } from './lib/ferretdb-build';

const HELP = `
Usage: npm run db:install-ferretdb

Builds the embedded database (FerretDB, SQLite backend) once with Go from the Go module proxy, into
~/.cache/whatsapp-cosmos-bot/ (or under $XDG_CACHE_HOME), and prints the binary's path; when it is
already built, prints the path at once. Exits 1 when it cannot be built.
`;

if (noArguments(process.argv.slice(2), HELP))
  ensureFerretDb()
    .then((binary) => process.stdout.write(`${binary}\n`))
    .catch((error: unknown) => {
      process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
      process.exitCode = 1;
    });
