import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isAlreadyExists, isFailedPrecondition, isNotFound } from "@berth/errdefs";
import { readMountInfo } from "@berth/sys";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "./runtime.js";
import { defaultSpec, type Process, type Spec } from "./spec.js";
import { makeBusyboxBundle } from "./testing/busybox-bundle.js";

const APPLETS = [
  "sh",
  "ls",
  "cat",
  "id",
  "hostname",
  "echo",
  "true",
  "sleep",
  "pwd",
  "grep",
  "wc",
  "readlink",
];

/** A bundle from busybox-static and `defaultSpec()` with terminal off and `args`. */
const makeBundle = (dir: string, args: string[], change?: (s: Spec) => Spec): string =>
  makeBusyboxBundle(join(dir, "bundle"), args, { applets: APPLETS, ...(change ? { change } : {}) });

describe.runIf(requiresRoot("container runtime"))("runtime", () => {
  let dir: string;
  let root: string;
  let rt: Runtime;
  let out: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-runtime-"));
    root = join(dir, "state");
    out = join(dir, "out");
    rt = createRuntime({ root });
  });

  afterEach(async () => {
    // Remove whatever a failed test left: containers (processes, cgroups), then the files.
    for (const c of existsSync(root) ? rt.list() : [])
      await rt.delete(c.id, { force: true }).catch(() => undefined);
    const leftover = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    rmSync(dir, { recursive: true, force: true });
    expect(leftover).toEqual([]);
  });

  /** Runs `args` in a fresh container; resolves to the exit code and what it printed. */
  async function run(args: string[], change?: (s: Spec) => Spec): Promise<{ code: number; stdout: string }> {
    const bundle = makeBundle(dir, args, change);
    const stdin = openSync("/dev/null", "r");
    const stdout = openSync(out, "w");
    try {
      const code = await rt.run("c1", bundle, { stdio: [stdin, stdout, stdout] });
      return { code, stdout: readFileSync(out, "utf8") };
    } finally {
      closeSync(stdin);
      closeSync(stdout);
    }
  }

  async function waitStatus(id: string, status: string): Promise<void> {
    for (let i = 0; i < 500 && rt.state(id).status !== status; i++) await sleep(10);
    expect(rt.state(id).status).toBe(status);
  }

  it("runs as PID 1 with its own hostname, only lo, a fresh /proc and only fds 0-2", async () => {
    const { code, stdout } = await run([
      "sh",
      "-c",
      "echo pid=$$; hostname; grep -c : /proc/net/dev; ls /proc | grep -c '^[0-9]'; ls /proc/1/fd; exit 0",
    ]);
    expect(code).toBe(0);
    const [pid, host, ifaces, procs, ...fds] = stdout.trim().split("\n");
    expect(pid).toBe("pid=1");
    expect(host).toBe("runc");
    expect(ifaces).toBe("1"); // lo only
    expect(Number(procs)).toBeLessThanOrEqual(4); // sh, ls, grep (and a pipe partner)
    // ls runs as a child of sh (PID 1), so this lists sh's fds without ls's own.
    expect(fds).toEqual(["0", "1", "2"]);
  });

  it("shows only the container's mounts, with masked paths unreadable", async () => {
    const { code, stdout } = await run([
      "sh",
      "-c",
      "cat /proc/self/mountinfo; echo ---; wc -c < /proc/keys; ls /sys/firmware | wc -l; (echo x > /proc/sys/kernel/hostname) 2>/dev/null || echo rofail",
    ]);
    expect(code).toBe(0);
    const [mountinfo, rest] = stdout.split("---\n");
    const points = (mountinfo ?? "")
      .trim()
      .split("\n")
      .map((l) => l.split(" ")[4]);
    expect(points[0]).toBe("/");
    expect(points).toContain("/proc");
    expect(points).toContain("/dev/pts");
    expect(points.some((p) => p?.startsWith(dir))).toBe(false);
    const [keys, firmware, ro] = (rest ?? "").trim().split("\n");
    expect(keys).toBe("0"); // /dev/null bound over it
    expect(firmware).toBe("0"); // empty read-only tmpfs
    expect(ro).toBe("rofail");
  });

  it("applies uid, gid, additional gids, capabilities and cwd", async () => {
    const caps = ["CAP_KILL", "CAP_CHOWN"];
    const { code, stdout } = await run(
      ["sh", "-c", "pwd; grep -E '^(Uid|Gid|Groups|Cap)' /proc/self/status"],
      (s) => ({
        ...s,
        process: {
          ...(s.process as Process),
          cwd: "/tmp",
          user: { uid: 1000, gid: 1001, additionalGids: [10, 20] },
          capabilities: {
            bounding: caps,
            effective: caps,
            permitted: caps,
            inheritable: caps,
            ambient: caps,
          },
        },
      }),
    );
    expect(code).toBe(0);
    const lines = stdout.trim().split("\n");
    expect(lines[0]).toBe("/tmp");
    const field = (name: string) =>
      lines
        .find((l) => l.startsWith(`${name}:`))
        ?.split(/\s+/)
        .slice(1)
        .join(" ")
        .trim();
    expect(field("Uid")).toBe("1000 1000 1000 1000");
    expect(field("Gid")).toBe("1001 1001 1001 1001");
    expect(field("Groups")).toBe("10 20");
    // CAP_CHOWN (0) and CAP_KILL (5): 0x21 in every set, ambient included (it is in inheritable).
    for (const set of ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
      expect(field(set)).toBe("0000000000000021");
  });

  it("loads the spec's seccomp filter last", async () => {
    const { code, stdout } = await run(["sh", "-c", "grep ^Seccomp: /proc/self/status; hostname"], (s) => ({
      ...s,
      linux: {
        ...s.linux,
        seccomp: {
          defaultAction: "SCMP_ACT_ALLOW",
          syscalls: [{ names: ["uname"], action: "SCMP_ACT_ERRNO" }],
        },
      },
    }));
    expect(code).toBe(0);
    const [mode, host] = stdout.trim().split("\n");
    expect(mode?.split(/\s+/)[1]).toBe("2"); // SECCOMP_MODE_FILTER
    expect(host).not.toBe("runc"); // uname(2) failed with EPERM, busybox prints "?"
  });

  it("propagates exit codes and signals", async () => {
    expect((await run(["sh", "-c", "exit 7"])).code).toBe(7);
    const bundle = join(dir, "bundle");
    rmSync(bundle, { recursive: true });
    makeBundle(dir, ["sleep", "100"]);
    await rt.create("c2", bundle, { stdio: "inherit" });
    await rt.start("c2");
    await rt.kill("c2", "SIGKILL");
    await waitStatus("c2", "stopped");
    await rt.delete("c2");
  });

  it("follows runc's lifecycle rules and leaves nothing behind", async () => {
    const bundle = makeBundle(dir, ["sleep", "100"]);
    const created = await rt.create("c1", bundle, { pidFile: join(dir, "pid") });
    expect(created.status).toBe("created");
    expect(Number(readFileSync(join(dir, "pid"), "utf8"))).toBe(created.pid);
    await expect(rt.create("c1", bundle)).rejects.toSatisfy(isAlreadyExists);
    expect(rt.list().map((c) => c.id)).toEqual(["c1"]);
    await rt.start("c1");
    expect(rt.state("c1").status).toBe("running");
    expect(rt.ps("c1")).toEqual([created.pid]);
    await expect(rt.start("c1")).rejects.toSatisfy(isFailedPrecondition);
    await expect(rt.delete("c1")).rejects.toSatisfy(isFailedPrecondition);
    await rt.delete("c1", { force: true });
    expect(() => rt.state("c1")).toThrow(expect.objectContaining({ code: "not-found" }));
    expect(existsSync(join(root, "c1"))).toBe(false);
    expect(existsSync(`/sys/fs/cgroup/memory/berth/c1`)).toBe(false);
    await expect(rt.start("nope")).rejects.toSatisfy(isNotFound);
  });

  it("a failed create reports the init's error and removes everything", async () => {
    const bundle = makeBundle(dir, ["/no/such/program"]);
    await expect(rt.create("bad", bundle)).rejects.toThrow(/no\/such\/program/);
    expect(existsSync(join(root, "bad"))).toBe(false);
    expect(existsSync("/sys/fs/cgroup/memory/berth/bad")).toBe(false);
    expect(rt.list()).toEqual([]);
  });

  it("execs a process inside a running container", async () => {
    const bundle = makeBundle(dir, ["sleep", "100"]);
    await rt.create("c1", bundle);
    await rt.start("c1");
    const stdout = openSync(out, "w");
    try {
      const code = await rt.exec(
        "c1",
        {
          user: { uid: 0, gid: 0 },
          args: ["sh", "-c", "echo $$; hostname; cat /proc/1/cmdline"],
          cwd: "/",
          env: ["PATH=/bin"],
        },
        { stdio: ["inherit", stdout, stdout] },
      );
      expect(code).toBe(0);
    } finally {
      closeSync(stdout);
    }
    const [pid, host, cmdline] = readFileSync(out, "utf8").trim().split("\n");
    expect(Number(pid)).toBeGreaterThan(1);
    expect(host).toBe("runc");
    expect(cmdline?.replaceAll("\0", " ").trim()).toBe("sleep 100");
  });
});

describe.runIf(requiresCommand("runc", "defaultSpec against runc spec"))("defaultSpec", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-spec-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it.each([false, true])("equals `runc spec` (rootless %s)", (rootless) => {
    execFileSync("runc", ["spec", ...(rootless ? ["--rootless"] : [])], { cwd: dir });
    const fromRunc: unknown = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    expect(defaultSpec({ rootless })).toEqual(fromRunc);
  });
});
