import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Starts (and on first run installs) the database server once for the whole run.
    globalSetup: ['test/helpers/global-setup.ts'],
    // Checks every command a test file's clients send against Cosmos DB's rules.
    setupFiles: ['test/cosmos/setup.ts'],
    testTimeout: 30_000,
    // Generous for the first run, which may build FerretDB (about a minute).
    hookTimeout: 180_000,
    pool: 'forks',
  },
});
