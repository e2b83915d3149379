// Test support (not built into dist: tsconfig.json excludes src/testing): OCI bundles whose root
// filesystem is Debian's busybox-static, so a container needs no libraries.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultSpec, type Process, type Spec } from "../spec.js";

/** The busybox the bundles run. */
export const BUSYBOX = "/bin/busybox";

let everyApplet: string[] | undefined;

/** Every applet this busybox has (`busybox --list`). */
export function busyboxApplets(): string[] {
  everyApplet ??= execFileSync(BUSYBOX, ["--list"], { encoding: "utf8" })
    .split("\n")
    .filter((a) => a !== "" && a !== "busybox");
  return everyApplet;
}

/** Options of {@link makeBusyboxBundle}. */
export interface BusyboxBundleOptions {
  /** Applets linked in /bin (default: every one). */
  readonly applets?: readonly string[];
  /** `process.terminal` (default false). */
  readonly terminal?: boolean;
  /** Edits the spec after `defaultSpec()` (which equals `runc spec`) got the args. */
  readonly change?: (spec: Spec) => Spec;
}

/**
 * Writes a bundle at `bundle` (created): rootfs/bin/busybox with a symlink per applet, empty
 * proc, sys, dev and tmp, and config.json from `defaultSpec()` running `args`. Returns `bundle`.
 */
export function makeBusyboxBundle(
  bundle: string,
  args: readonly string[],
  options: BusyboxBundleOptions = {},
): string {
  const rootfs = join(bundle, "rootfs");
  mkdirSync(join(rootfs, "bin"), { recursive: true });
  for (const d of ["proc", "sys", "dev", "tmp"]) mkdirSync(join(rootfs, d), { recursive: true });
  writeFileSync(join(rootfs, "bin", "busybox"), readFileSync(BUSYBOX), { mode: 0o755 });
  for (const a of options.applets ?? busyboxApplets()) symlinkSync("busybox", join(rootfs, "bin", a));
  const base = defaultSpec();
  const process: Process = {
    ...(base.process as Process),
    terminal: options.terminal ?? false,
    args: [...args],
  };
  const spec = (options.change ?? ((s: Spec) => s))({ ...base, process });
  writeFileSync(join(bundle, "config.json"), JSON.stringify(spec, null, 2));
  return bundle;
}
