import { execFile, execFileSync } from "node:child_process";
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** The busybox both runtimes run: Debian's busybox-static, so the rootfs needs no libraries. */
export const BUSYBOX = "/bin/busybox";

/** A mutable OCI config.json as `runc spec` writes it; tests edit the fields they need. */
// biome-ignore lint/suspicious/noExplicitAny: config.json is edited field by field in the tests; typing every path would only restate the runtime spec.
export type Config = Record<string, any>;

/** A bundle directory: `config.json` and `rootfs/`; remove with {@link removeBundle}. */
export interface Bundle {
  readonly dir: string;
  readonly config: Config;
  /** Rewrites config.json from `config`. */
  save(): void;
}

let applets: string[] | undefined;

/**
 * Builds a busybox bundle in a fresh temp dir: rootfs with bin/busybox, a symlink per applet in
 * bin/, and empty proc, sys, dev, tmp dirs; config.json from `runc spec` (the oracle's default),
 * with terminal off, `args`, `cgroupsPath` (one of the test's own, so cleanup knows every cgroup
 * either runtime may leave) and the edits `edit` makes. /etc/passwd and /etc/group name root.
 */
export async function makeBundle(
  args: readonly string[],
  cgroupsPath: string,
  edit: (config: Config) => void = () => undefined,
): Promise<Bundle> {
  const dir = mkdtempSync(join(tmpdir(), "berth-runc-cmp-"));
  const rootfs = join(dir, "rootfs");
  for (const d of ["bin", "proc", "sys", "dev", "tmp", "etc"])
    mkdirSync(join(rootfs, d), { recursive: true });
  copyFileSync(BUSYBOX, join(rootfs, "bin", "busybox"));
  applets ??= execFileSync(BUSYBOX, ["--list"], { encoding: "utf8" })
    .split("\n")
    .filter((a) => a !== "" && a !== "busybox");
  for (const a of applets) symlinkSync("busybox", join(rootfs, "bin", a));
  writeFileSync(join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  writeFileSync(join(rootfs, "etc", "group"), "root:x:0:\n");
  await run("runc", ["spec", "-b", dir]);
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Config;
  config.process.terminal = false;
  config.process.args = [...args];
  config.linux.cgroupsPath = cgroupsPath;
  edit(config);
  const bundle: Bundle = {
    dir,
    config,
    save: () => writeFileSync(join(dir, "config.json"), JSON.stringify(config, null, 2)),
  };
  bundle.save();
  return bundle;
}

/** Removes a bundle directory (never mounted: both runtimes mount inside their own namespaces). */
export function removeBundle(bundle: Bundle): void {
  rmSync(bundle.dir, { recursive: true, force: true });
}
