import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isInvalidArgument } from "@berth/errdefs";
import { readMountInfo } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "./runtime.js";
import { makeBusyboxBundle } from "./testing/busybox-bundle.js";

/** Live (not zombie) init processes this test process spawned (vitest runs each file in a fork). */
function ownInits(): number[] {
  const out: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(ppid) !== process.pid || state === "Z") continue;
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0");
      if (cmdline.some((a) => a.endsWith("/init.js"))) out.push(Number(name));
    } catch {
      // Exited while we looked.
    }
  }
  return out.sort((a, b) => a - b);
}

async function waitInits(n: number): Promise<number[]> {
  let pids = ownInits();
  for (let i = 0; i < 500 && pids.length !== n; i++) {
    await sleep(10);
    pids = ownInits();
  }
  expect(pids).toHaveLength(n);
  return pids;
}

const makeBundle = (dir: string, args: string[]): string =>
  makeBusyboxBundle(join(dir, "bundle"), args, { applets: ["sh", "true", "echo"] });

describe("init pool options", () => {
  it("refuses a size outside 1..64", () => {
    for (const size of [0, -1, 1.5, 65]) {
      let caught: unknown;
      try {
        createRuntime({ root: "/nonexistent-berth-root", pool: { size } });
      } catch (err) {
        caught = err;
      }
      expect(isInvalidArgument(caught), `size ${size}`).toBe(true);
    }
  });
});

describe.runIf(requiresRoot("container runtime"))("runtime with an init pool", () => {
  let dir: string;
  let root: string;
  let rt: Runtime;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-pool-"));
    root = join(dir, "state");
    rt = createRuntime({ root, pool: { size: 2 } });
  });

  afterEach(async () => {
    for (const c of existsSync(root) ? rt.list() : [])
      await rt.delete(c.id, { force: true }).catch(() => undefined);
    await rt.close();
    // Anything still alive here is a leak: kill it (by pid, ours only) and fail.
    const left = ownInits();
    for (const pid of left) process.kill(pid, "SIGKILL");
    const mounts = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    rmSync(dir, { recursive: true, force: true });
    expect(left).toEqual([]);
    expect(mounts).toEqual([]);
  });

  it("creates and starts a container from a pooled init, refills, and close() kills the idle ones", async () => {
    const idle = await waitInits(2);
    const bundle = makeBundle(dir, ["sh", "-c", "exit 7"]);
    const state = await rt.create("p1", bundle);
    // The container's init is one of the pre-spawned ones.
    expect(idle).toContain(state.pid);
    expect(rt.state("p1").status).toBe("created");
    await rt.start("p1");
    for (let i = 0; i < 500 && rt.state("p1").status !== "stopped"; i++) await sleep(10);
    expect(rt.state("p1").status).toBe("stopped");
    await rt.delete("p1");
    expect(existsSync(join(root, "p1"))).toBe(false);

    // Refilled in the background to two idle inits again, one of them new.
    const refilled = await waitInits(2);
    expect(refilled.filter((p) => !idle.includes(p))).toHaveLength(1);

    await rt.close();
    expect(ownInits()).toEqual([]);
    for (const pid of refilled) expect(existsSync(`/proc/${pid}/cmdline`)).toBe(false);
  });

  it("runs a pooled container as PID 1 with its exit code; creates with own stdio bypass the pool", async () => {
    const idle = await waitInits(2);
    const code = await rt.run("p2", makeBundle(dir, ["sh", "-c", "test $$ = 1 && exit 7"]));
    expect(code).toBe(7);
    await waitInits(2);
    const before = ownInits();

    // Given stdio the pooled inits do not have: a fresh init, the pool untouched.
    const out = join(dir, "out");
    const stdout = openSync(out, "w");
    const stdin = openSync("/dev/null", "r");
    try {
      rmSync(join(dir, "bundle"), { recursive: true });
      const bundle = makeBundle(dir, ["sh", "-c", "echo pid=$$"]);
      const code2 = await rt.run("p3", bundle, { stdio: [stdin, stdout, stdout] });
      expect(code2).toBe(0);
    } finally {
      closeSync(stdin);
      closeSync(stdout);
    }
    expect(readFileSync(out, "utf8")).toBe("pid=1\n");
    expect(ownInits()).toEqual(before);
    expect(before.some((p) => idle.includes(p))).toBe(true);
  });
});
