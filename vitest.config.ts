import { defineConfig } from "vitest/config";

// Workspace packages resolve to their TypeScript sources through the "@berth/source" export
// condition, so tests need no build step.
const conditions = ["@berth/source", "node", "import", "default"];

export default defineConfig({
  resolve: { conditions },
  ssr: { resolve: { conditions, externalConditions: conditions } },
  test: {
    include: ["packages/*/src/**/*.test.ts", "e2e/**/*.test.ts", "tools/**/*.test.ts"],
    globalSetup: ["tools/test/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Privileged and registry-backed tests share host resources; files run in forks, in parallel.
    pool: "forks",
    reporters: ["default", "./tools/test/summary-reporter.ts"],
  },
});
