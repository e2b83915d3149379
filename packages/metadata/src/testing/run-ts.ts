import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

/**
 * Spawns `node` on a TypeScript file of this repository, run from source: the `@berth/source`
 * export condition resolves workspace packages to their `src/`, and the content test suite's
 * module hooks (`@berth/content/testsuite/ts-register.mjs`) transpile `.ts` files on load.
 */
export function spawnTs(file: string, args: readonly string[]): ChildProcessWithoutNullStreams {
  const register = pathToFileURL(
    createRequire(import.meta.url).resolve("@berth/content/testsuite/ts-register.mjs"),
  ).href;
  return spawn(process.execPath, ["--conditions=@berth/source", "--import", register, file, ...args], {
    stdio: "pipe",
  });
}
