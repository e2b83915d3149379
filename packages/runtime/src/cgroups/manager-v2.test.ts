import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isFailedPrecondition } from "@berth/errdefs";
import { mount, unmount } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type CgroupManager, createCgroupManager } from "./manager.js";

// v2 code paths run against a private mount of the unified hierarchy (the same hierarchy as
// /sys/fs/cgroup/unified on a hybrid host, or /sys/fs/cgroup on a v2 host): only controllers that
// no v1 hierarchy holds are available on it, so limits are checked where the kernel has them.
const runnable = requiresRoot("cgroup v2 manager") && existsSync("/bin/busybox");
const parent = `/berth-test-v2-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;

let root = "";
let rootSubtree = "";
const children: ChildProcess[] = [];
const managers: CgroupManager[] = [];

const read = (dir: string | undefined, file: string) => readFileSync(join(dir ?? "", file), "utf8").trim();

function exited(child: ChildProcess): Promise<unknown> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", resolve));
}

function sleeper(): ChildProcess {
  const child = spawn("/bin/busybox", ["sleep", "30"], { stdio: "ignore" });
  child.on("error", () => {});
  children.push(child);
  return child;
}

function manager(name: string): CgroupManager {
  const m = createCgroupManager(`${parent}/${name}`, name, { mode: "v2", unifiedMount: root });
  managers.push(m);
  return m;
}

describe.runIf(runnable)("cgroup manager, v2 paths on a private cgroup2 mount", () => {
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), "berth-cg2-"));
    mount("none", root, "cgroup2", 0, null);
    rootSubtree = read(root, "cgroup.subtree_control");
  });

  afterEach(async () => {
    for (const c of children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      await exited(c);
    }
    for (const m of managers.splice(0)) await m.destroy();
    try {
      rmdirSync(join(root, parent));
    } catch {}
  });

  afterAll(() => {
    if (!root) return;
    const leaked = existsSync(join(root, parent));
    // apply() enabled the root's controllers in its subtree_control, as runc does; put it back.
    const now = read(root, "cgroup.subtree_control").split(" ").filter(Boolean);
    const before = new Set(rootSubtree.split(" ").filter(Boolean));
    for (const c of now) {
      if (!before.has(c)) {
        try {
          writeFileSync(join(root, "cgroup.subtree_control"), `-${c}`);
        } catch {}
      }
    }
    unmount(root);
    rmdirSync(root);
    expect(leaked).toBe(false);
  });

  it("resolves the path under the mount and moves the process into it", () => {
    const child = sleeper();
    const m = manager("apply");
    expect(m.mode).toBe("v2");
    expect(m.paths).toEqual({ "": join(root, parent, "apply") });
    m.apply(child.pid ?? 0);
    expect(readFileSync(`/proc/${child.pid}/cgroup`, "utf8")).toContain(`0::${parent}/apply\n`);
    expect(m.pids()).toEqual([child.pid]);
    expect(m.exists()).toBe(true);
    // Every controller of the root is enabled down to the container's parent.
    const available = read(root, "cgroup.controllers");
    expect(read(join(root, parent), "cgroup.subtree_control")).toBe(available);
  });

  it("freezes and thaws through cgroup.freeze and cgroup.events", async () => {
    const child = sleeper();
    const m = manager("freeze");
    m.apply(child.pid ?? 0);
    await m.freeze();
    expect(m.isFrozen()).toBe(true);
    expect(read(m.paths[""], "cgroup.events")).toContain("frozen 1");
    await m.thaw();
    expect(m.isFrozen()).toBe(false);
    expect(read(m.paths[""], "cgroup.events")).toContain("frozen 0");
    // A frozen cgroup whose task was killed is thawed by destroy so the task can exit.
    await m.freeze();
    child.kill("SIGKILL");
    await m.destroy();
    expect(m.exists()).toBe(false);
  });

  it("writes the limits of the controllers the hierarchy has and names the missing ones", async () => {
    const child = sleeper();
    const m = manager("limits");
    m.apply(child.pid ?? 0);
    const enabled = read(m.paths[""], "cgroup.controllers").split(" ");
    if (enabled.includes("hugetlb") && existsSync("/sys/kernel/mm/hugepages/hugepages-2048kB")) {
      m.set({ hugepageLimits: [{ pageSize: "2MB", limit: 8 << 20 }] });
      expect(read(m.paths[""], "hugetlb.2MB.max")).toBe(String(8 << 20));
    }
    if (enabled.includes("pids")) {
      m.set({ pids: { limit: 5 } });
      expect(read(m.paths[""], "pids.max")).toBe("5");
      expect(m.stats().pids).toEqual({ current: 1, limit: 5 });
    }
    if (!enabled.includes("memory")) {
      let caught: unknown;
      try {
        m.set({ memory: { limit: 64 << 20 } });
      } catch (err) {
        caught = err;
      }
      expect(isFailedPrecondition(caught)).toBe(true);
      expect(String(caught)).toMatch(/controller memory is not enabled/);
      expect(m.stats().memory).toBeUndefined();
      expect(m.oomKillCount()).toBe(0);
    } else {
      m.set({ memory: { limit: 64 << 20 } });
      expect(read(m.paths[""], "memory.max")).toBe(String(64 << 20));
    }
    // Core files need no controller: the unified map can write them.
    m.set({ unified: { "cgroup.max.descendants": "3" } });
    expect(read(m.paths[""], "cgroup.max.descendants")).toBe("3");
  });
});
