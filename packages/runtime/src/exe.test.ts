import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  constants,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { capabilityNames } from "./capabilities.js";
import { closeReadOnlyExecutables, readOnlyExecutable } from "./exe.js";
import { createRuntime, type Runtime } from "./runtime.js";
import { defaultSpec, type Process } from "./spec.js";

const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;
// Opens for writing without truncating or creating: nothing is ever written through these fds.
const WRITE_NO_TRUNC = constants.O_WRONLY | constants.O_APPEND;

const sha256 = (file: string) => createHash("sha256").update(readFileSync(file)).digest("hex");

function mountId(fd: number): string {
  return /^mnt_id:\s*(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"))?.[1] ?? "";
}

/** The errno code of opening `path` with `flags`, or "OPENED" (the fd is closed unused). */
function tryOpen(path: string, flags: number): string {
  try {
    closeSync(openSync(path, flags));
    return "OPENED";
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? String(err);
  }
}

// Views of other test processes may exist for a moment (they are detached right after mounting),
// so wait a little for a clean state before concluding anything stayed behind.
async function exeViewsLeft(): Promise<string[]> {
  let left: string[] = [];
  for (let i = 0; i < 50; i++) {
    left = [
      ...readMountInfo()
        .map((m) => m.mountPoint)
        .filter((p) => p.includes("/berth-exe-")),
      ...readdirSync(tmpdir()).filter((n) => n.startsWith("berth-exe-")),
    ];
    if (left.length === 0) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return left;
}

describe.runIf(requiresRoot("read-only executable views"))("readOnlyExecutable", () => {
  let dir: string;
  const pids: number[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-exetest-"));
  });

  afterEach(() => {
    for (const pid of pids.splice(0)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    closeReadOnlyExecutables();
    rmSync(dir, { recursive: true, force: true });
  });

  it("runs a binary whose /proc/PID/exe cannot be reopened for writing, and leaves no mount", async () => {
    // A private copy of busybox, so that nothing else executes it: only the view stops a write.
    const copy = join(dir, "busybox");
    copyFileSync("/bin/busybox", copy);
    const before = sha256(copy);
    const view = readOnlyExecutable(copy);
    expect(view).toMatch(/^\/proc\/self\/fd\/\d+$/);
    expect(await exeViewsLeft()).toEqual([]);

    const child = spawn(view, ["sleep", "30"], { argv0: "busybox", stdio: "ignore" });
    const exited = new Promise((r) => child.once("exit", r));
    pids.push(child.pid as number);
    // Wait until the child has exec'd the view (its exe is no longer this node).
    for (let i = 0; i < 500 && readlinkSync(`/proc/${child.pid}/exe`) !== "/"; i++)
      await new Promise((r) => setTimeout(r, 2));
    expect(readlinkSync(`/proc/${child.pid}/exe`)).toBe("/"); // the root of a detached mount
    const held = openSync(`/proc/${child.pid}/exe`, O_PATH | O_CLOEXEC);
    try {
      process.kill(child.pid as number, "SIGKILL");
      await exited;
      // Nothing executes the copy now: written through its own path it opens (the control) ...
      expect(tryOpen(copy, WRITE_NO_TRUNC)).toBe("OPENED");
      // ... but not through the fd held on the exited process's exe, nor by O_RDWR.
      expect(tryOpen(`/proc/self/fd/${held}`, WRITE_NO_TRUNC)).toBe("EROFS");
      expect(tryOpen(`/proc/self/fd/${held}`, constants.O_RDWR)).toBe("EROFS");
    } finally {
      closeSync(held);
    }
    expect(sha256(copy)).toBe(before);
  });

  it("returns the same view for the same file", () => {
    const copy = join(dir, "busybox");
    copyFileSync("/bin/busybox", copy);
    expect(readOnlyExecutable(copy)).toBe(readOnlyExecutable(copy));
  });
});

describe.runIf(requiresRoot("container runtime"))("container init's /proc/PID/exe", () => {
  let dir: string;
  let rt: Runtime;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-exetest-rt-"));
    rt = createRuntime({ root: join(dir, "state") });
  });

  afterEach(async () => {
    for (const c of existsSync(join(dir, "state")) ? rt.list() : [])
      await rt.delete(c.id, { force: true }).catch(() => undefined);
    await rt.close();
    const leftover = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    rmSync(dir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  it("cannot be opened for writing from inside a created container, directly or by reopening", async () => {
    const bundle = join(dir, "bundle");
    mkdirSync(join(bundle, "rootfs", "bin"), { recursive: true });
    copyFileSync("/bin/busybox", join(bundle, "rootfs", "bin", "busybox"));
    for (const a of ["sh", "true", "echo"]) symlinkSync("busybox", join(bundle, "rootfs", "bin", a));
    const base = defaultSpec();
    const spec = { ...base, process: { ...(base.process as Process), terminal: false, args: ["true"] } };
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
    const node = process.execPath;
    const before = sha256(node);

    const devnull = openSync("/dev/null", "r+");
    const outFile = join(dir, "out");
    const out = openSync(outFile, "w");
    try {
      const state = await rt.create("exe", bundle, { stdio: [devnull, devnull, devnull] });
      // Host side: PID 1 runs node from the detached read-only view, not from node's own mount.
      expect(readlinkSync(`/proc/${state.pid}/exe`)).toBe("/");
      const viaInit = openSync(`/proc/${state.pid}/exe`, O_PATH | O_CLOEXEC);
      const direct = openSync(node, O_PATH | O_CLOEXEC);
      try {
        expect(mountId(viaInit)).not.toBe(mountId(direct));
        expect(tryOpen(`/proc/self/fd/${viaInit}`, WRITE_NO_TRUNC)).toMatch(/^(EROFS|ETXTBSY)$/);
      } finally {
        closeSync(viaInit);
        closeSync(direct);
      }

      // Container side, with every capability (CAP_SYS_PTRACE included) so that /proc/1/exe is
      // reachable at all: keep a read-only fd, then try to write directly and by reopening it.
      // `<>` and `>>` neither truncate nor write; only the open is attempted.
      // Every capability this host allows us (its bounding set may lack some).
      const bounding = /^CapBnd:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
      const allCaps = capabilityNames(BigInt(`0x${bounding}`));
      expect(allCaps).toContain("CAP_SYS_PTRACE");
      const script = [
        "exec 3</proc/1/exe && echo ro:ok",
        "if (exec 4<>/proc/1/exe); then echo rdwr:OPENED; else echo rdwr:refused; fi",
        "if (exec 4>>/proc/1/exe); then echo append:OPENED; else echo append:refused; fi",
        "if (exec 4<>/proc/self/fd/3); then echo reopen:OPENED; else echo reopen:refused; fi",
      ].join("\n");
      const code = await rt.exec(
        "exe",
        {
          terminal: false,
          user: { uid: 0, gid: 0 },
          args: ["sh", "-c", script],
          env: ["PATH=/bin"],
          cwd: "/",
          capabilities: { bounding: allCaps, effective: allCaps, permitted: allCaps },
        },
        { stdio: [devnull, out, out] },
      );
      const output = readFileSync(outFile, "utf8");
      expect(code, output).toBe(0);
      const lines = output.trim().split("\n");
      expect(lines.filter((l) => l.includes(":")).filter((l) => !/can't/.test(l))).toEqual([
        "ro:ok",
        "rdwr:refused",
        "append:refused",
        "reopen:refused",
      ]);
      const errors = lines.filter((l) => /can't/.test(l));
      expect(errors).toHaveLength(3);
      for (const e of errors) expect(e).toMatch(/Read-only file system|Text file busy|Permission denied/);
    } finally {
      closeSync(devnull);
      closeSync(out);
    }
    expect(sha256(node)).toBe(before);
    expect(await exeViewsLeft()).toEqual([]);
  });
});
