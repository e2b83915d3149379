import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { isFailedPrecondition } from "@berth/errdefs";
import { readMountInfo } from "@berth/sys";
import { collectOutput, requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createRuntime, type Runtime } from "./runtime.js";
import type { Process, Spec } from "./spec.js";
import { makeBusyboxBundle } from "./testing/busybox-bundle.js";

const execFileAsync = promisify(execFile);
const RUNC = "/usr/sbin/runc";
const BERTH_RUNC = new URL("../bin/berth-runc.js", import.meta.url).pathname;
// Ids unique to this file: containers of every test file share the /berth/<id> cgroups.
const PREFIX = `extra-${process.pid}`;
const RUNC_CGROUP = `berth-extra-test-${process.pid}`;
/** A busybox bundle (every applet) from `defaultSpec()`, which equals `runc spec`, terminal off. */
const makeBundle = (dir: string, name: string, args: string[], change?: (s: Spec) => Spec): string =>
  makeBusyboxBundle(join(dir, name), args, change ? { change } : {});

/** The same bundle for runc, in a cgroup of this file's own that cleanup can remove. */
function runcBundle(dir: string, name: string, args: string[], change: (s: Spec) => Spec = (s) => s): string {
  return makeBundle(dir, name, args, (s) => {
    const changed = change(s);
    return { ...changed, linux: { ...changed.linux, cgroupsPath: `/${RUNC_CGROUP}` } };
  });
}

describe.runIf(requiresRoot("container runtime paths"))(
  "runtime: no-pivot, preserved fds, joined namespaces, kill/ps/pause",
  () => {
    let dir: string;
    let rt: Runtime;
    const children: ChildProcess[] = [];

    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "berth-rt-extra-"));
      rt = createRuntime({ root: join(dir, "berth") });
    });

    afterEach(async () => {
      for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      for (const c of existsSync(join(dir, "berth")) ? rt.list() : [])
        await rt.delete(c.id, { force: true }).catch(() => undefined);
      if (existsSync(join(dir, "runc"))) {
        for (const id of readdirSync(join(dir, "runc")))
          await execFileAsync(RUNC, ["--root", join(dir, "runc"), "delete", "--force", id]).catch(
            () => undefined,
          );
      }
      const leftover = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
      rmSync(dir, { recursive: true, force: true });
      for (const c of readdirSync("/sys/fs/cgroup")) {
        const cg = join("/sys/fs/cgroup", c, RUNC_CGROUP);
        if (existsSync(cg)) rmdirSync(cg);
      }
      expect(leftover).toEqual([]);
    });

    /** `<runtime> --root ROOT run ...` with extra fds; resolves to the exit code and stdout. */
    function cliRun(
      runtime: "runc" | "berth-runc",
      args: string[],
      extraFds: number[] = [],
    ): Promise<{ code: number | null; stdout: string; stderr: string }> {
      const [cmd, pre] = runtime === "runc" ? [RUNC, [] as string[]] : [process.execPath, [BERTH_RUNC]];
      const child = spawn(
        cmd,
        [...pre, "--root", join(dir, runtime === "runc" ? "runc" : "berth"), ...args],
        {
          stdio: ["ignore", "pipe", "pipe", ...extraFds],
          env: runtime === "runc" ? { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" } : {},
        },
      );
      children.push(child);
      return collectOutput(child);
    }

    async function waitFor(what: string, check: () => boolean): Promise<void> {
      for (let i = 0; i < 500 && !check(); i++) await sleep(10);
      expect(check(), what).toBe(true);
    }

    it("--no-pivot: MS_MOVE + chroot hides the host root, like runc --no-pivot", async () => {
      writeFileSync(join(dir, "host-marker"), "host");
      const script =
        `ls /; [ -e ${dir}/host-marker ] && echo host-visible; ` +
        "cat /proc/self/mountinfo | cut -d' ' -f5; ls /proc/1/root/ | wc -l; echo done";
      const runc = await cliRun("runc", [
        "run",
        "--no-pivot",
        "-b",
        runcBundle(dir, "runc-bundle", ["sh", "-c", script]),
        `${PREFIX}-np`,
      ]);
      expect(runc.stderr).toBe("");
      const bundle = makeBundle(dir, "bundle", ["sh", "-c", script]);
      const berth = await cliRun("berth-runc", ["run", "--no-pivot", "-b", bundle, `${PREFIX}-np`]);
      expect(berth.code).toBe(0);
      expect(berth.stdout).not.toContain("host-visible");
      expect(berth.stdout.split("\n").slice(0, 5)).toEqual(["bin", "dev", "proc", "sys", "tmp"]);
      expect(berth.stdout).toBe(runc.stdout);

      // An exec into a no-pivot container enters the same chroot.
      await rt.create(`${PREFIX}-np2`, bundle, { noPivot: true, stdio: "inherit" });
      const out = join(dir, "out");
      const fd = openSync(out, "w");
      try {
        const code = await rt.exec(
          `${PREFIX}-np2`,
          {
            user: { uid: 0, gid: 0 },
            args: ["sh", "-c", `ls /; [ -e ${dir}/host-marker ] && echo host-visible; true`],
            cwd: "/",
            env: ["PATH=/bin"],
          },
          { stdio: ["inherit", fd, fd] },
        );
        expect(`${code}: ${readFileSync(out, "utf8")}`).toBe("0: bin\ndev\nproc\nsys\ntmp\n");
      } finally {
        closeSync(fd);
      }
    });

    it("--preserve-fds 1: fd 3 is readable in the container and nothing beyond it leaks, like runc", async () => {
      const file = join(dir, "passed");
      writeFileSync(file, "passed-in\n");
      const script = "cat <&3; ls /proc/1/fd; echo done";
      const results: string[] = [];
      for (const runtime of ["runc", "berth-runc"] as const) {
        const fd3 = openSync(file, "r");
        // A second extra fd that is not preserved must not reach the container.
        const fd4 = openSync(file, "r");
        try {
          const bundle =
            runtime === "runc"
              ? runcBundle(dir, "runc-bundle", ["sh", "-c", script])
              : makeBundle(dir, "bundle", ["sh", "-c", script]);
          const r = await cliRun(
            runtime,
            ["run", "--preserve-fds", "1", "-b", bundle, `${PREFIX}-pf`],
            [fd3, fd4],
          );
          expect(r.stderr).toBe("");
          expect(r.code).toBe(0);
          results.push(r.stdout);
        } finally {
          closeSync(fd3);
          closeSync(fd4);
        }
      }
      expect(results[1]).toBe("passed-in\n0\n1\n2\n3\ndone\n");
      expect(results[1]).toBe(results[0]);
    });

    it("joins the network and uts namespaces of another container by path", async () => {
      const first = `${PREFIX}-ns1`;
      const b1 = makeBundle(dir, "b1", ["sh", "-c", "ip link set lo up && touch /tmp/up; sleep 100"], (s) => {
        const caps = [...(s.process?.capabilities?.bounding ?? []), "CAP_NET_ADMIN"];
        return {
          ...s,
          hostname: "first",
          root: { path: "rootfs", readonly: false },
          process: {
            ...(s.process as Process),
            capabilities: { bounding: caps, effective: caps, permitted: caps },
          },
        };
      });
      const c1 = await rt.create(first, b1, { stdio: "inherit" });
      await rt.start(first);
      await waitFor("lo is up in the first container", () => existsSync(join(b1, "rootfs", "tmp", "up")));
      const b2 = makeBundle(
        dir,
        "b2",
        [
          "sh",
          "-c",
          "hostname; cat /sys/class/net/lo/operstate; for n in net uts ipc; do readlink /proc/self/ns/$n; done",
        ],
        (s) => {
          const { hostname: _drop, ...rest } = s;
          return {
            ...rest,
            linux: {
              ...s.linux,
              namespaces: (s.linux?.namespaces ?? []).map((ns) =>
                ns.type === "network" || ns.type === "uts"
                  ? { type: ns.type, path: `/proc/${c1.pid}/ns/${ns.type === "network" ? "net" : "uts"}` }
                  : ns,
              ),
            },
          };
        },
      );
      const out = join(dir, "out");
      const fd = openSync(out, "w");
      let code: number;
      try {
        code = await rt.run(`${PREFIX}-ns2`, b2, { stdio: ["inherit", fd, fd] });
      } finally {
        closeSync(fd);
      }
      expect(`${code}: ${readFileSync(out, "utf8")}`).toMatch(/^0: /);
      const [host, operstate, net, uts, ipc] = readFileSync(out, "utf8").trim().split("\n");
      expect(host).toBe("first");
      expect(operstate).toBe("unknown"); // lo is up (down reads "down")
      expect(net).toBe(readlinkSync(`/proc/${c1.pid}/ns/net`));
      expect(uts).toBe(readlinkSync(`/proc/${c1.pid}/ns/uts`));
      // The ipc namespace was not joined: the second container has its own.
      expect(ipc).not.toBe(readlinkSync(`/proc/${c1.pid}/ns/ipc`));
      expect(rt.state(first).status).toBe("running");
    });

    it("ps lists the cgroup's processes; pause/resume freeze and thaw; kill --all stops them all", async () => {
      const id = `${PREFIX}-ps`;
      const bundle = makeBundle(dir, "bundle", ["sh", "-c", "sleep 100 & sleep 100 & wait"]);
      const c = await rt.create(id, bundle, { stdio: "inherit" });
      await rt.start(id);
      await waitFor("three processes", () => rt.ps(id).length === 3);
      const pids = rt.ps(id);
      expect(pids).toContain(c.pid);
      const comms = pids.map((p) => readFileSync(`/proc/${p}/comm`, "utf8").trim()).sort();
      expect(comms).toEqual(["sh", "sleep", "sleep"]);

      const freezer = `/sys/fs/cgroup/freezer/berth/${id}/freezer.state`;
      await expect(rt.resume(id)).rejects.toSatisfy(isFailedPrecondition);
      await rt.pause(id);
      expect(rt.state(id).status).toBe("paused");
      if (existsSync(freezer)) expect(readFileSync(freezer, "utf8").trim()).toBe("FROZEN");
      await expect(rt.pause(id)).rejects.toSatisfy(isFailedPrecondition);
      await expect(rt.delete(id)).rejects.toSatisfy(isFailedPrecondition);
      await rt.resume(id);
      expect(rt.state(id).status).toBe("running");
      if (existsSync(freezer)) expect(readFileSync(freezer, "utf8").trim()).toBe("THAWED");

      await rt.kill(id, "KILL", { all: true });
      await waitFor("the container stopped", () => rt.state(id).status === "stopped");
      expect(rt.ps(id)).toEqual([]);
      await expect(rt.kill(id, "KILL")).rejects.toSatisfy(isFailedPrecondition);
      await rt.delete(id);
      expect(existsSync(`/sys/fs/cgroup/freezer/berth/${id}`)).toBe(false);
    });
  },
);

describe.runIf(requiresCommand(RUNC, "runc oracle"))("runc oracle present", () => {
  it("is the runc the comparisons use", () => {
    expect(execFileSync(RUNC, ["--version"], { encoding: "utf8" })).toMatch(/^runc version/);
  });
});
