// `npm run db:install-ferretdb`: builds the FerretDB fallback server ahead of time (e.g. in CI)
// and prints the binary's path on stdout.
import { ensureFerretDb } from './lib/ferretdb-build';

ensureFerretDb()
  .then((binary) => process.stdout.write(`${binary}\n`))
  .catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
  });
