import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { unmountRecursive } from "@berth/sys";
import { collectOutput, requiresCommand } from "@berth/testing";
import { afterEach, describe, expect, it } from "vitest";
import type { LinuxSeccomp } from "../spec.js";
import { compileSeccomp, seccompFilterFlags } from "./compile.js";

// The filter is loaded for real, in a child Node process (a filter can never be removed, so not
// in the test worker): testdata/load-filter.mjs sets no_new_privs, loads it through @berth/sys,
// then probes or execs busybox under it. Child Node runs workspace TypeScript through the
// content package's module hooks, like the other packages' cross-process tests.
const helper = fileURLToPath(new URL("./testdata/load-filter.mjs", import.meta.url));
const tsRegister = pathToFileURL(
  createRequire(import.meta.url).resolve("@berth/content/testsuite/ts-register.mjs"),
).href;
const BUSYBOX = "/bin/busybox";

const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const child of children.splice(0)) {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined)
      child.kill("SIGKILL");
  }
  for (const dir of dirs.splice(0)) {
    // Only a broken filter would let the mount test mount something; never leave it behind.
    if (readFileSync("/proc/self/mountinfo", "utf8").includes(` ${dir} `))
      unmountRecursive(dir, { detach: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-seccomp-"));
  dirs.push(dir);
  return dir;
}

/** Compiles `profile`, then runs the helper with it in MODE with ARGS. */
function underFilter(
  profile: LinuxSeccomp,
  mode: "probe" | "exec",
  args: readonly string[],
): Promise<Outcome> {
  const dir = tempDir();
  const filter = join(dir, "filter.bpf");
  writeFileSync(filter, compileSeccomp(profile));
  const child = spawn(
    process.execPath,
    [
      "--conditions=@berth/source",
      "--import",
      tsRegister,
      helper,
      filter,
      String(seccompFilterFlags(profile)),
      mode,
      ...args,
    ],
    // A minimal environment: variables such as NODE_OPTIONS must not reach the child.
    { stdio: ["ignore", "pipe", "pipe"], env: { PATH: "/usr/bin:/bin" } },
  );
  children.push(child);
  return collectOutput(child);
}

const dockerProfile = JSON.parse(
  readFileSync(new URL("./testdata/docker-default-amd64.json", import.meta.url), "utf8"),
) as LinuxSeccomp;

describe.runIf(process.arch === "x64" || process.arch === "arm64")(
  "seccomp filters loaded into a process",
  () => {
    it("denies mkdir with the profile's errnoRet and lets the rest through", async () => {
      const dir = tempDir();
      const target = join(dir, "made");
      const profile: LinuxSeccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1 }],
      };
      const out = await underFilter(profile, "probe", [target]);
      expect(out.stderr).toBe("");
      expect(out.code).toBe(0);
      // Seccomp: 2 is SECCOMP_MODE_FILTER; reading /proc (open, read) stayed allowed.
      expect(JSON.parse(out.stdout)).toEqual({ mkdir: 1, seccomp: "2" });
      expect(existsSync(target)).toBe(false);

      const other = await underFilter(
        { ...profile, syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 122 }] },
        "probe",
        [target],
      );
      expect(JSON.parse(other.stdout)).toEqual({ mkdir: 122, seccomp: "2" });
    });

    it("kills the process on SCMP_ACT_KILL_PROCESS", async () => {
      if (!requiresCommand(BUSYBOX, "seccomp kill test")) return;
      const profile: LinuxSeccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["uname"], action: "SCMP_ACT_KILL_PROCESS" }],
      };
      const out = await underFilter(profile, "exec", [BUSYBOX, "uname", "-s"]);
      expect(out.signal).toBe("SIGSYS");
      expect(out.stdout).toBe("");
    });

    it.runIf(process.arch === "x64")("runs a busybox shell under Docker's default profile", async () => {
      if (!requiresCommand(BUSYBOX, "Docker profile test")) return;
      const ok = await underFilter(dockerProfile, "exec", [BUSYBOX, "sh", "-c", "true && echo ran"]);
      expect(ok.stderr).toBe("");
      expect(ok.code).toBe(0);
      expect(ok.stdout).toBe("ran\n");

      // mount(2) is not in the profile: EPERM whatever the caller's privileges and arguments.
      const dir = tempDir();
      const denied = await underFilter(dockerProfile, "exec", [
        BUSYBOX,
        "mount",
        "-t",
        "tmpfs",
        "tmpfs",
        dir,
      ]);
      expect(denied.code).not.toBe(0);
      expect(denied.stderr).toMatch(/permission denied|not permitted/i);
      expect(readFileSync("/proc/self/mountinfo", "utf8")).not.toContain(dir);
    });
  },
);
