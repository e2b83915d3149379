import { execFileSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, readlinkSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlreadyExists, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { readMountInfo } from "@berth/sys";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { CURRENT_NETNS, createNetns, deleteNetns, openNetns, withNetns } from "./netns.js";

const hostNs = () => readlinkSync(CURRENT_NETNS);
const inode = (path: string) => statSync(path).ino;

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

describe.runIf(
  requiresRoot("network namespaces") &&
    requiresCommand("nsenter", "netlink oracles") &&
    requiresCommand("ip", "netlink oracles"),
)("network namespace handles", () => {
  let dir = "";
  let hostLinks = "";
  const before = hostNs();

  beforeAll(() => {
    hostLinks = execFileSync("ip", ["-j", "link"], { encoding: "utf8" });
  });

  afterEach(() => {
    if (!dir) return;
    for (const m of readMountInfo().filter((x) => x.mountPoint.startsWith(dir))) deleteNetns(m.mountPoint);
    const left = readMountInfo().filter((x) => x.mountPoint.startsWith(dir));
    rmSync(dir, { recursive: true, force: true });
    dir = "";
    expect(left).toEqual([]);
    // Whatever a case did, the test process must be back in its own namespace.
    expect(hostNs()).toBe(before);
  });

  afterAll(() => {
    expect(execFileSync("ip", ["-j", "link"], { encoding: "utf8" })).toBe(hostLinks);
  });

  const temp = () => {
    dir = mkdtempSync(join(tmpdir(), "berth-netns-"));
    return dir;
  };

  it("creates a pinned, empty namespace without moving the caller, and deletes it", () => {
    const path = join(temp(), "state", "ns1");
    createNetns(path);
    expect(hostNs()).toBe(before);
    expect(statSync(join(dir, "state")).mode & 0o777).toBe(0o700);
    // A new namespace: a different inode than ours, and only a loopback that is down.
    expect(inode(path)).not.toBe(inode(CURRENT_NETNS));
    const links = JSON.parse(
      execFileSync("nsenter", [`--net=${path}`, "ip", "-j", "link"], { encoding: "utf8" }),
    ) as {
      ifname: string;
      flags: string[];
    }[];
    expect(links.map((l) => l.ifname)).toEqual(["lo"]);
    expect(links[0]?.flags).not.toContain("UP");

    const again = caught(() => createNetns(path));
    expect(isAlreadyExists(again)).toBe(true);
    expect(String(again)).toContain(path);

    expect(deleteNetns(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
    expect(readMountInfo().filter((m) => m.mountPoint === path)).toEqual([]);
    expect(deleteNetns(path)).toBe(false);
  });

  it("runs a function inside a namespace and always comes back", () => {
    const path = join(temp(), "ns2");
    createNetns(path);
    const ino = inode(path);
    expect(withNetns(path, () => inode(CURRENT_NETNS))).toBe(ino);
    expect(hostNs()).toBe(before);

    const fd = openNetns(path);
    try {
      expect(withNetns(fd, () => inode(CURRENT_NETNS))).toBe(ino);
      // The fd stays the caller's: still open after withNetns.
      expect(statSync(`/proc/self/fd/${fd}`).ino).toBe(ino);
    } finally {
      closeSync(fd);
    }

    const thrown = caught(() =>
      withNetns(path, () => {
        throw new Error("boom");
      }),
    );
    expect(String(thrown)).toContain("boom");
    expect(hostNs()).toBe(before);

    const asyncFn = caught(() => withNetns(path, (() => Promise.resolve(1)) as () => never));
    expect(isInvalidArgument(asyncFn)).toBe(true);
    expect(hostNs()).toBe(before);
  });

  it("reports a missing namespace path as not-found", () => {
    const missing = join(temp(), "absent");
    const err = caught(() => openNetns(missing));
    expect(isNotFound(err)).toBe(true);
    expect(String(err)).toContain(missing);
    expect(isNotFound(caught(() => withNetns(missing, () => 1)))).toBe(true);
    expect(hostNs()).toBe(before);
  });

  it("refuses a file that is not a network namespace", () => {
    // A mount namespace file is a namespace, but setns(CLONE_NEWNET) must refuse it.
    const err = caught(() => withNetns("/proc/self/ns/mnt", () => 1));
    expect(String(err)).toContain("EINVAL");
    expect(hostNs()).toBe(before);
  });
});
