// A script pointed at a database it cannot reach: one line on stderr that names the setting to
// check (masked), exit 1, no stack trace and never the password.
import { describe, expect, it } from 'vitest';
import { runToExitCode } from '../../scripts/lib/cli';
import { main as token } from '../../scripts/token';
import { main as health } from '../../scripts/health';
import { captureIo } from '../fixtures/scripts';

const SECRET = 'pa55-S3CRET-word';

describe('an unreachable MONGODB_URI', () => {
  it.each([
    [
      'nothing listens on the port',
      `mongodb://ops:${SECRET}@127.0.0.1:1/?authSource=admin`,
      /no server answered/,
    ],
    ['the SRV host name does not exist', `mongodb+srv://ops:${SECRET}@cluster0.nohost.invalid/`, /host name/],
    // Before, a mistyped host said "no server answered … within 5 s", as if a server were down.
    [
      'the host name does not exist',
      `mongodb://ops:${SECRET}@db.nohost.invalid:27017/`,
      /the host name of MONGODB_URI \(\S+\) was not found \(getaddrinfo E[A-Z_]+\)/,
    ],
  ])(
    '%s: the error names MONGODB_URI',
    async (_, uri, why) => {
      for (const [main, argv] of [
        [token, ['list']],
        [health, []],
      ] as const) {
        const io = captureIo();
        const started = Date.now();
        expect(await runToExitCode(main, argv, { MONGODB_URI: uri }, io)).toBe(1);
        expect(Date.now() - started).toBeLessThan(15_000);
        const error = io.stderr.filter((l) => l.startsWith('error:'));
        expect(error).toHaveLength(1);
        expect(error[0]).toMatch(/^error: the database could not be reached/);
        expect(error[0]).toMatch(/MONGODB_URI \(mongodb(\+srv)?:\/\/\*\*\*:\*\*\*@/);
        expect(error[0]).toMatch(why);
        expect(io.text()).not.toContain(SECRET);
        expect(io.text()).not.toMatch(/\n\s+at /);
      }
    },
    60_000,
  );
});
