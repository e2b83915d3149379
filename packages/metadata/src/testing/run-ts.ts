import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";

/**
 * Spawns `node` on a TypeScript file of this repository, run from source: the `@berth/source`
 * export condition resolves workspace packages to their `src/`, and ts-hooks.mjs transpiles.
 */
export function spawnTs(file: string, args: readonly string[]): ChildProcessWithoutNullStreams {
  const hooks = new URL("./ts-hooks.mjs", import.meta.url).href;
  const register = `data:text/javascript,import{register}from"node:module";register(${JSON.stringify(hooks)});`;
  return spawn(process.execPath, ["--conditions=@berth/source", "--import", register, file, ...args], {
    stdio: "pipe",
  });
}
