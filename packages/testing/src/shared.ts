import { inject } from "vitest";
import type { Fixtures } from "./fixtures.js";
import type { FixtureRefs } from "./push.js";

/**
 * What the test run's global setup (`tools/test/global-setup.ts`) provides: one no-auth loopback
 * registry holding every fixture. Plain JSON, as vitest's `provide` requires.
 */
export interface SharedRegistry {
  /** `127.0.0.1:PORT`. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Where each fixture was pushed: `<host>/fixtures/<repo>:latest`. */
  readonly refs: FixtureRefs;
  /** The fixtures themselves (their OCI layouts on disk and all their digests). */
  readonly fixtures: Fixtures;
}

/** The `provide`/`inject` key of the {@link SharedRegistry}. */
export const SHARED_REGISTRY_KEY = "berthSharedRegistry";

declare module "vitest" {
  export interface ProvidedContext {
    /** Set by tools/test/global-setup.ts; see `sharedRegistry()` in @berth/testing. */
    [SHARED_REGISTRY_KEY]: SharedRegistry;
  }
}

/**
 * The registry shared by the whole test run, started by the global setup with every fixture
 * pushed. Tests may pull from it and push to repositories of their own, but must not delete or
 * overwrite the fixture repositories, which other test files read at the same time.
 *
 * Call it inside a test or hook (vitest's `inject` needs a running test file). Throws an `Error`
 * when the global setup did not provide the registry (vitest run without it).
 */
export function sharedRegistry(): SharedRegistry {
  const shared = inject(SHARED_REGISTRY_KEY);
  if (shared === undefined) {
    throw new Error(
      `no shared registry: vitest's globalSetup (tools/test/global-setup.ts) did not provide ${SHARED_REGISTRY_KEY}`,
    );
  }
  return shared;
}
