import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readMountInfo } from "@berth/sys";
import { requiresRoot, sharedRegistry } from "@berth/testing";
import { afterAll, describe, expect, it } from "vitest";
import { berth } from "./berth.js";

describe.runIf(requiresRoot("berth run (namespaces, mounts, cgroups)"))("berth run (CLI, embedded)", () => {
  const root = mkdtempSync(join(tmpdir(), "berth-e2e-run-"));
  afterAll(() => {
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(root))).toEqual([]);
    rmSync(root, { recursive: true, force: true });
  });

  it("pulls an image and runs a container from it: PID 1, its own hostname, the exit code comes back", async () => {
    const { refs } = sharedRegistry();
    const state = join(root, "state");
    const data = join(root, "data");
    expect((await berth(data, "--state", state, "images", "pull", refs.single)).code).toBe(0);
    const result = await berth(
      data,
      "--state",
      state,
      "run",
      "--rm",
      refs.single,
      "e2e-run",
      "sh",
      "-c",
      'echo "pid=$$ host=$(hostname) user=$(id -u)"; ls /proc/self/fd | wc -l; exit 7',
    );
    expect(result.stderr).toBe("");
    expect(result.code).toBe(7);
    const [first, fds] = result.stdout.trim().split("\n");
    expect(first).toBe("pid=1 host=e2e-run user=0");
    // 0, 1, 2 and the fd ls itself opens for the directory.
    expect(Number(fds)).toBe(4);
    // --rm removed the container's snapshot; the image's layers stay.
    const snapshots = (await berth(data, "--state", state, "snapshots", "ls")).stdout;
    expect(snapshots).not.toMatch(/e2e-run/);
    expect(readdirSync(join(state, "default"))).toEqual([]);
  });

  it("runs the image's default command and reports a missing image clearly", async () => {
    const missing = await berth(
      join(root, "data"),
      "--state",
      join(root, "state"),
      "run",
      "no/such:image",
      "x",
    );
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found/);
  });

  it("networks: none by default (only lo), --network host shares the host's, bad --network and -p are named", async () => {
    const data = join(root, "data");
    const state = join(root, "state");
    const { refs } = sharedRegistry();
    expect((await berth(data, "--state", state, "images", "pull", refs.single)).code).toBe(0);
    const none = await berth(
      data,
      "--state",
      state,
      "run",
      "--rm",
      refs.single,
      "e2e-none",
      "ls",
      "/sys/class/net",
    );
    expect(none.stdout).toBe("lo\n");
    const host = await berth(
      data,
      "--state",
      state,
      "run",
      "--rm",
      "--network",
      "host",
      refs.single,
      "e2e-host",
      "readlink",
      "/proc/self/ns/net",
    );
    expect(host.stdout).toBe(`${readlinkSync("/proc/self/ns/net")}\n`);
    const unknown = await berth(
      data,
      "--state",
      state,
      "run",
      "--network",
      "nosuch",
      refs.single,
      "e2e-x",
      "true",
    );
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/network nosuch not found/);
    const badPort = await berth(data, "--state", state, "run", "-p", "80", refs.single, "e2e-x", "true");
    expect(badPort.code).toBe(1);
    expect(badPort.stderr).toMatch(/published port "80": expected \[HOSTIP:\]HOSTPORT:CONTAINERPORT/);
    const hostPorts = await berth(
      data,
      "--state",
      state,
      "run",
      "--network",
      "host",
      "-p",
      "8080:80",
      refs.single,
      "e2e-x",
      "true",
    );
    expect(hostPorts.stderr).toMatch(/cannot publish 8080:80\/tcp with network mode host/);
    // Nothing of the refused runs is left: no network records, no bundles, no snapshot.
    expect(readdirSync(join(data, "network", "containers"))).toEqual([]);
    expect(readdirSync(join(state, "default"))).toEqual([]);
    expect((await berth(data, "--state", state, "snapshots", "ls")).stdout).not.toMatch(/e2e-x/);
  });
});
