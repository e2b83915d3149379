import { createRuntime } from "../runtime.js";
import { defaultSpec } from "../spec.js";
import type { CliRuntime } from "./runtime-api.js";

/**
 * Opens the real runtime at `root` (`createRuntime({ root })`); the assignment checks that the
 * runtime's API still fits what the command line needs. @internal
 */
export function openDefaultRuntime(root: string, warn?: (message: string) => void): CliRuntime {
  const runtime: CliRuntime = createRuntime({ root, ...(warn ? { warn } : {}) });
  return runtime;
}

/** The config.json `berth-runc spec` writes: the runtime's {@link defaultSpec}, equal to `runc spec`'s. @internal */
export function defaultSpecDocument(options: { rootless: boolean }): unknown {
  return defaultSpec({ rootless: options.rootless });
}
