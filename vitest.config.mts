import { defineConfig } from 'vitest/config';

// Lab tests share one machine's namespaces and CPU: run files one at a time so timing-sensitive
// checks (binomial bounds, timeouts) are not distorted by a neighbour's load.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['./test/support/global-setup.ts'],
    // A fixed fast-check seed for every property (FC_SEED overrides it).
    setupFiles: ['./test/support/fast-check-seed.ts'],
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    reporters: ['default', './test/support/summary-reporter.ts'],
  },
});
