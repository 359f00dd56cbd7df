// `npm start` runs this first: without Azure Functions Core Tools v4 on the PATH, one line that says
// what is missing and what to do, before the build (a minute on a slow machine) ends in the shell's
// bare `func: not found`.
import { spawnSync } from 'node:child_process';

const INSTALL = 'https://learn.microsoft.com/azure/azure-functions/functions-run-local';

function fail(line: string): never {
  process.stderr.write(`npm start: ${line}\n`);
  process.exit(1);
}

// On Windows `func` is func.cmd (npm) or func.exe, which only a shell finds.
const run = spawnSync('func', ['--version'], {
  encoding: 'utf8',
  shell: process.platform === 'win32',
  timeout: 60_000,
});
if (run.error || (run.status !== 0 && process.platform === 'win32')) {
  fail(
    `Azure Functions Core Tools v4 (\`func\`) is not on the PATH: install it (${INSTALL}), ` +
      'or run the app with `npm run dev`, which needs nothing else',
  );
}
// The version is a line of its own (a first run may print a telemetry notice around it).
const version = /^\d+\.\d+\S*$/m.exec(run.stdout)?.[0] ?? run.stdout.trim();
const major = /^(\d+)\./.exec(version)?.[1];
if (major !== '4') {
  fail(
    `\`func --version\` says ${JSON.stringify(version.slice(0, 40))}: Azure Functions Core Tools v4 is needed ` +
      `(${INSTALL}), or run the app with \`npm run dev\``,
  );
}
