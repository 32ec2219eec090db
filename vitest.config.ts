import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Media tests measure timing on a shared 2-core box: keep files from fighting over the CPU.
    fileParallelism: false,
    pool: 'forks',
  },
});
