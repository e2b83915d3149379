import {
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorCode } from "@berth/errdefs";
import type { Mount, Snapshotter } from "@berth/snapshots";
import { snapshotterSuite } from "@berth/snapshots/testsuite";
import { getXattr, mountAll, readMountInfo, unmountRecursive } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkOverlaySupport, supportsDType, supportsIndex } from "./check.js";
import { isOverlayUpperdirMount, overlayLowerdirs, upperdirOf } from "./mounts.js";
import {
  createOverlaySnapshotter,
  type OverlaySnapshotterOptions,
  UPPERDIR_LABEL,
} from "./overlay-snapshotter.js";
import { diskUsage } from "./usage.js";

let dir: string;
let root: string;
const opened: Snapshotter[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-overlay-"));
  root = join(dir, "root");
});

afterEach(async () => {
  // Mounts first (even when the test failed half-way), then the snapshotters, then the files.
  unmountRecursive(dir, { detach: true });
  for (const s of opened.splice(0)) await s.close();
  const leaked = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
  rmSync(dir, { recursive: true, force: true });
  expect(leaked).toEqual([]);
});

async function open(options?: OverlaySnapshotterOptions): Promise<Snapshotter> {
  const s = await createOverlaySnapshotter(root, options);
  opened.push(s);
  return s;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    return errorCode(err);
  }
  return undefined;
}

/** The directory a fresh active snapshot's changes go to, read off its mounts. */
function writableDir(mounts: readonly Mount[]): string {
  const m = mounts[0] as Mount;
  if (m.type === "bind") return m.source;
  const upper = upperdirOf(mounts);
  if (upper === undefined) throw new Error(`no writable directory in ${JSON.stringify(mounts)}`);
  return upper;
}

/**
 * Commits `n` layers on top of each other without mounting (files written straight into each
 * upper directory): layer i holds `layer-i` and overwrites `top`. Returns the committed names.
 */
async function chain(s: Snapshotter, n: number, prefix = "layer"): Promise<string[]> {
  const names: string[] = [];
  let parent: string | undefined;
  for (let i = 0; i < n; i++) {
    const upper = writableDir(await s.prepare(`${prefix}-${i}-active`, parent));
    writeFileSync(join(upper, `${prefix}-${i}`), String(i));
    writeFileSync(join(upper, "top"), String(i));
    await s.commit(`${prefix}-${i}`, `${prefix}-${i}-active`);
    parent = `${prefix}-${i}`;
    names.push(parent);
  }
  return names;
}

// The conformance suite (it skips itself, with a reason, when not root), with the default options
// and with the ones that change how snapshots are removed and mounted. Not with upperdirLabel:
// the suite checks labels exactly, and that option adds one by design (tested below).
snapshotterSuite("overlayfs", async (root) => ({ snapshotter: await createOverlaySnapshotter(root) }));
snapshotterSuite("overlayfs (asyncRemove, volatile)", async (root) => ({
  snapshotter: await createOverlaySnapshotter(root, { asyncRemove: true, volatile: true }),
}));

function mountOrError(mounts: readonly Mount[], target: string): string {
  try {
    mountAll(mounts, target);
    return "mounted";
  } catch (err) {
    return String(err);
  }
}

describe("createOverlaySnapshotter", () => {
  it("lays out metadata.db and snapshots/<id>/{fs,work}", async () => {
    const s = await open();
    const mounts = await s.prepare("a");
    expect(existsSync(join(root, "metadata.db"))).toBe(true);
    const [id] = readdirSync(join(root, "snapshots"));
    expect(id).toMatch(/^\d+$/);
    expect(readdirSync(join(root, "snapshots", id as string)).sort()).toEqual(["fs", "work"]);
    expect(mounts).toEqual([
      { type: "bind", source: join(root, "snapshots", id as string, "fs"), options: ["rw", "rbind"] },
    ]);
    expect(statSync(join(root, "snapshots", id as string, "work")).mode & 0o777).toBe(0o711);
    expect(statSync(root).mode & 0o777).toBe(0o700);
    // Nothing of the support checks stays behind.
    expect(readdirSync(root).sort()).toEqual([
      "metadata.db",
      "metadata.db-shm",
      "metadata.db-wal",
      "snapshots",
    ]);
  });

  it("rejects a relative root and one that would split overlay options", async () => {
    expect(await codeOf(createOverlaySnapshotter("relative/root"))).toBe("invalid-argument");
    expect(await codeOf(createOverlaySnapshotter(join(dir, "a:b")))).toBe("invalid-argument");
    expect(await codeOf(createOverlaySnapshotter(join(dir, "a,b")))).toBe("invalid-argument");
  });

  it("detects d_type support of the backing filesystem", async () => {
    expect(await supportsDType(dir)).toBe(true);
    expect(readdirSync(dir)).toEqual([]);
  });
});

describe("mounts as data", () => {
  it("binds a base snapshot, rw when active and ro as a view", async () => {
    const s = await open();
    const active = await s.prepare("a");
    expect(active).toHaveLength(1);
    expect(active[0]).toMatchObject({ type: "bind", options: ["rw", "rbind"] });
    const view = await s.view("v");
    expect(view[0]).toMatchObject({ type: "bind", options: ["ro", "rbind"] });
    expect(await s.mounts("a")).toEqual(active);
    expect(await s.mounts("v")).toEqual(view);
  });

  it("overlays an active snapshot on its parents, nearest first, with index=off", async () => {
    const s = await open();
    const [, l1] = await chain(s, 2);
    const mounts = await s.prepare("c", l1);
    expect(mounts).toHaveLength(1);
    const m = mounts[0] as Mount;
    expect(m.type).toBe("overlay");
    expect(m.source).toBe("overlay");
    const id = (name: string) => (m.options.find((o) => o.startsWith(`${name}=`)) ?? "").split("=")[1];
    // containerd's rule: index=off whenever the kernel has the index feature.
    if (supportsIndex()) {
      expect(m.options[0]).toBe("index=off");
      expect(m.options.filter((o) => o === "index=off")).toHaveLength(1);
    }
    const lowers = overlayLowerdirs(m) ?? [];
    expect(lowers).toHaveLength(2);
    // Nearest parent first: layer-1 holds "layer-1", layer-0 holds "layer-0".
    expect(readdirSync(lowers[0] as string)).toContain("layer-1");
    expect(readdirSync(lowers[1] as string)).toContain("layer-0");
    expect(id("upperdir")).toMatch(/\/snapshots\/\d+\/fs$/);
    expect(id("workdir")).toMatch(/\/snapshots\/\d+\/work$/);
    expect(m.options).not.toContain("volatile");
    expect(isOverlayUpperdirMount(m)).toBe(true);
  });

  it("binds a view of one layer read-only and overlays a view of several without upper", async () => {
    const s = await open();
    const [l0, l1] = await chain(s, 2);
    const one = await s.view("v1", l0);
    expect(one).toHaveLength(1);
    expect(one[0]).toMatchObject({ type: "bind", options: ["ro", "rbind"] });
    expect(readdirSync((one[0] as Mount).source)).toContain("layer-0");
    const two = await s.view("v2", l1);
    const m = two[0] as Mount;
    expect(m.type).toBe("overlay");
    expect(m.options.some((o) => o.startsWith("upperdir=") || o.startsWith("workdir="))).toBe(false);
    expect(overlayLowerdirs(m)).toHaveLength(2);
    expect(isOverlayUpperdirMount(m)).toBe(false);
    // A view directory has no work directory.
    expect(upperdirOf(two)).toBeUndefined();
  });

  it("adds volatile only to the overlay mounts of active snapshots when enabled", async () => {
    const s = await open({ volatile: true });
    const [l0, l1] = await chain(s, 2);
    const active = await s.prepare("c", l1);
    expect((active[0] as Mount).options).toContain("volatile");
    expect(await s.mounts("c")).toEqual(active);
    expect((await s.view("v", l1))[0]?.options).not.toContain("volatile");
    expect((await s.view("v0", l0))[0]?.options).not.toContain("volatile");
    expect((await s.prepare("base"))[0]?.options).not.toContain("volatile");
  });

  it.runIf(supportsIndex())(
    "puts configured mount options on overlays only, and honours index=on",
    async () => {
      const s = await open({ mountOptions: ["metacopy=off"], index: "on" });
      const [l0] = await chain(s, 1);
      const m = (await s.prepare("c", l0))[0] as Mount;
      expect(m.options.slice(0, 2)).toEqual(["index=on", "metacopy=off"]);
      expect((await s.prepare("base"))[0]?.options).toEqual(["rw", "rbind"]);
    },
  );

  it("refuses mounts of committed snapshots and unknown keys", async () => {
    const s = await open();
    const [l0] = await chain(s, 1);
    expect(await codeOf(s.mounts(l0 as string))).toBe("failed-precondition");
    expect(await codeOf(s.mounts("nope"))).toBe("not-found");
  });
});

describe("upperdirOf", () => {
  const overlay = (opts: string[]): Mount => ({ type: "overlay", source: "overlay", options: opts });

  it("finds the upperdir of one overlay mount, checked against the parent's mounts when given", () => {
    const m = overlay(["index=off", "workdir=/w", "upperdir=/u", "lowerdir=/l2:/l1"]);
    expect(upperdirOf([m])).toBe("/u");
    expect(upperdirOf([m], [overlay(["lowerdir=/l2:/l1"])])).toBe("/u");
    expect(upperdirOf([m], [overlay(["workdir=/x", "upperdir=/l2", "lowerdir=/l1"])])).toBe("/u");
    expect(upperdirOf([m], [overlay(["lowerdir=/other:/l1"])])).toBeUndefined();
    expect(
      upperdirOf(
        [overlay(["upperdir=/u", "workdir=/w", "lowerdir=/l1"])],
        [{ type: "bind", source: "/l1", options: ["ro", "rbind"] }],
      ),
    ).toBe("/u");
    expect(upperdirOf([m], [])).toBeUndefined();
  });

  it("treats a writable bind as its own diff only when the parent is known to be empty", () => {
    const bind: Mount = { type: "bind", source: "/s/fs", options: ["rw", "rbind"] };
    expect(upperdirOf([bind])).toBeUndefined();
    expect(upperdirOf([bind], [])).toBe("/s/fs");
    expect(upperdirOf([{ ...bind, options: ["ro", "rbind"] }], [])).toBeUndefined();
    expect(upperdirOf([])).toBeUndefined();
    expect(upperdirOf([overlay(["upperdir=/u"]), bind])).toBeUndefined();
    expect(upperdirOf([{ type: "tmpfs", source: "tmpfs", options: [] }])).toBeUndefined();
  });
});

describe("labels, usage, commit and remove", () => {
  it("adds the upperdir label to stat, update and walk when enabled", async () => {
    const s = await open({ upperdirLabel: true });
    const [l0] = await chain(s, 1);
    const upper = writableDir(await s.prepare("a", l0, { labels: { x: "1" } }));
    expect((await s.stat("a")).labels).toEqual({ x: "1", [UPPERDIR_LABEL]: upper });
    const committed = await s.stat(l0 as string);
    expect(committed.labels[UPPERDIR_LABEL]).toMatch(/\/snapshots\/\d+\/fs$/);
    expect(existsSync(join(committed.labels[UPPERDIR_LABEL] as string, "layer-0"))).toBe(true);
    expect((await s.update({ name: "a", labels: { y: "2" } })).labels).toEqual({
      y: "2",
      [UPPERDIR_LABEL]: upper,
    });
    const seen: Record<string, string | undefined> = {};
    await s.walk((info) => {
      seen[info.name] = info.labels[UPPERDIR_LABEL];
    });
    expect(seen).toEqual({ [l0 as string]: committed.labels[UPPERDIR_LABEL], a: upper });
    // The id lookup leaves no trace in the store.
    const names: string[] = [];
    await s.walk((info) => {
      names.push(info.name);
    });
    expect(names).toEqual([l0, "a"]);
  });

  it("measures an active snapshot's upper directory and records usage at commit", async () => {
    const s = await open();
    const upper = writableDir(await s.prepare("a"));
    const empty = await s.usage("a");
    expect(empty.inodes).toBe(1);
    writeFileSync(join(upper, "big"), Buffer.alloc(64 * 1024, 1));
    writeFileSync(join(upper, "small"), "x");
    linkSync(join(upper, "small"), join(upper, "small-link"));
    mkdirSync(join(upper, "d"));
    const usage = await s.usage("a");
    expect(usage.inodes).toBe(4);
    expect(usage.size).toBeGreaterThanOrEqual(empty.size + 64 * 1024);
    await s.commit("c", "a", { labels: { k: "v" } });
    expect(await s.usage("c")).toEqual(usage);
    expect((await s.stat("c")).labels).toEqual({ k: "v" });
    expect(await codeOf(s.usage("a"))).toBe("not-found");
    await s.view("v", "c");
    expect(await s.usage("v")).toEqual({ size: 0, inodes: 0 });
    expect(await codeOf(s.commit("x", "v"))).toBe("failed-precondition");
    expect(await codeOf(s.commit("x", "c"))).toBe("failed-precondition");
  });

  it("counts allocated blocks, hard links once, and the root", async () => {
    const tree = join(dir, "tree");
    mkdirSync(join(tree, "a", "b"), { recursive: true });
    writeFileSync(join(tree, "a", "b", "f"), Buffer.alloc(10_000, 2));
    linkSync(join(tree, "a", "b", "f"), join(tree, "g"));
    const usage = await diskUsage(tree);
    expect(usage.inodes).toBe(4);
    const expected = [tree, join(tree, "a"), join(tree, "a", "b"), join(tree, "g")]
      .map((p) => lstatSync(p).blocks * 512)
      .reduce((a, b) => a + b, 0);
    expect(usage.size).toBe(expected);
  });

  it("deletes a removed snapshot's directory, and refuses to remove a parent", async () => {
    const s = await open();
    const [l0] = await chain(s, 1);
    const upper = writableDir(await s.prepare("a", l0));
    const snapshotDir = join(upper, "..");
    expect(await codeOf(s.remove(l0 as string))).toBe("failed-precondition");
    await s.remove("a");
    expect(existsSync(snapshotDir)).toBe(false);
    expect(readdirSync(join(root, "snapshots"))).toHaveLength(1);
    expect(await codeOf(s.remove("a"))).toBe("not-found");
    // The key is free again.
    await s.prepare("a", l0);
  });

  it("defers deletion to cleanup with asyncRemove", async () => {
    const s = await open({ asyncRemove: true });
    const upper = writableDir(await s.prepare("a"));
    writeFileSync(join(upper, "f"), "x");
    await s.remove("a");
    expect(await codeOf(s.stat("a"))).toBe("not-found");
    expect(existsSync(upper)).toBe(true);
    await s.prepare("a");
    await s.cleanup?.();
    expect(existsSync(upper)).toBe(false);
    expect(readdirSync(join(root, "snapshots"))).toHaveLength(1);
    expect(await s.usage("a")).toMatchObject({ inodes: 1 });
  });

  it("cleans up what a crash left behind and keeps every live snapshot", async () => {
    const s = await open();
    const [l0] = await chain(s, 1);
    await s.prepare("live", l0);
    const snapshots = join(root, "snapshots");
    const live = readdirSync(snapshots).sort();
    // A prepare that died before its rename, a remove that died while deleting, and a directory
    // whose record never committed.
    for (const leftover of ["new-abc123", "rm-7", "999"]) {
      mkdirSync(join(snapshots, leftover, "fs", "deep"), { recursive: true });
      writeFileSync(join(snapshots, leftover, "fs", "deep", "file"), "x");
    }
    await s.close();
    const reopened = await open();
    await reopened.cleanup?.();
    expect(readdirSync(snapshots).sort()).toEqual(live);
    expect(readdirSync(writableDir(await reopened.mounts("live")))).toEqual([]);
    expect(await reopened.usage(l0 as string)).toMatchObject({ inodes: 3 });
  });

  it("fails cleanly after close", async () => {
    const s = await open();
    await s.close();
    expect(await codeOf(s.prepare("a"))).toBe("failed-precondition");
    await s.close();
  });
});

describe.runIf(requiresRoot("overlay mounts"))("overlay mounts", () => {
  it("passes the support check", async () => {
    await checkOverlaySupport(root, ["index=off"]);
    expect(readdirSync(root)).toEqual([]);
  });

  it("mounts a chain, copies up on write and records deletions as whiteouts and opaque dirs", async () => {
    const s = await open();
    const base = writableDir(await s.prepare("base-active"));
    writeFileSync(join(base, "keep"), "k");
    writeFileSync(join(base, "gone"), "g");
    mkdirSync(join(base, "dir"));
    writeFileSync(join(base, "dir", "old"), "o");
    await s.commit("base", "base-active");
    // A child of base with one more layer, so that the active snapshot is a real overlay.
    const mid = writableDir(await s.prepare("mid-active", "base"));
    writeFileSync(join(mid, "mid"), "m");
    await s.commit("mid", "mid-active");

    const mounts = await s.prepare("top", "mid");
    const target = join(dir, "merged");
    mountAll(mounts, target);
    expect(readdirSync(target).sort()).toEqual(["dir", "gone", "keep", "mid"]);
    writeFileSync(join(target, "keep"), "changed");
    unlinkSync(join(target, "gone"));
    rmSync(join(target, "dir"), { recursive: true });
    mkdirSync(join(target, "dir"));
    writeFileSync(join(target, "dir", "new"), "n");
    unmountRecursive(target, { detach: true });

    const upper = upperdirOf(mounts) as string;
    expect(readFileSync(join(upper, "keep"), "utf8")).toBe("changed");
    expect(readFileSync(join(base, "keep"), "utf8")).toBe("k");
    // A deleted lower file is a 0/0 character device in the upper directory.
    const whiteout = lstatSync(join(upper, "gone"));
    expect(whiteout.isCharacterDevice()).toBe(true);
    expect(whiteout.rdev).toBe(0);
    // A directory deleted and made again hides the lower one's entries: opaque.
    expect(getXattr(join(upper, "dir"), "trusted.overlay.opaque")?.toString()).toBe("y");
    expect(readdirSync(join(upper, "dir"))).toEqual(["new"]);

    const usage = await s.usage("top");
    expect(usage.inodes).toBe(5);
    await s.commit("top-c", "top");
    const view = await s.view("look", "top-c");
    mountAll(view, join(dir, "view"));
    expect(readdirSync(join(dir, "view")).sort()).toEqual(["dir", "keep", "mid"]);
    expect(readdirSync(join(dir, "view", "dir"))).toEqual(["new"]);
    expect(() => writeFileSync(join(dir, "view", "x"), "")).toThrow(/EROFS/);
  });

  it("mounts a chain of 128 layers at once", async () => {
    const s = await open();
    const names = await chain(s, 128);
    const mounts = await s.prepare("top", names.at(-1));
    const m = mounts[0] as Mount;
    expect(overlayLowerdirs(m)).toHaveLength(128);
    // Too long for one mount(2) page: @berth/sys switches to fsconfig lowerdir+.
    expect(m.options.join(",").length).toBeGreaterThan(4096);
    const target = join(dir, "merged");
    mountAll(mounts, target);
    const entries = readdirSync(target);
    expect(entries).toHaveLength(129);
    expect(readFileSync(join(target, "layer-0"), "utf8")).toBe("0");
    expect(readFileSync(join(target, "layer-127"), "utf8")).toBe("127");
    expect(readFileSync(join(target, "top"), "utf8")).toBe("127");
    writeFileSync(join(target, "written"), "w");
    unmountRecursive(target, { detach: true });
    expect(readFileSync(join(upperdirOf(mounts) as string, "written"), "utf8")).toBe("w");
    // A view of all 128 layers too.
    mountAll(await s.view("v", names.at(-1)), join(dir, "view"));
    expect(readdirSync(join(dir, "view"))).toHaveLength(129);
  });

  it("mounts active snapshots with volatile", async () => {
    const s = await open({ volatile: true });
    const [l0] = await chain(s, 1);
    const mounts = await s.prepare("a", l0);
    mountAll(mounts, join(dir, "merged"));
    const info = readMountInfo().find((m) => m.mountPoint === join(dir, "merged"));
    expect(info?.fstype).toBe("overlay");
    expect(info?.superOptions).toContain("volatile");
    writeFileSync(join(dir, "merged", "f"), "x");
    // While mounted, the crash marker stays; the kernel refuses a second mount of the same
    // directories anyway.
    await s.mounts("a");
    const workdir = ((mounts[0] as Mount).options.find((o) => o.startsWith("workdir=")) ?? "").slice(
      "workdir=".length,
    );
    expect(existsSync(join(workdir, "work", "incompat", "volatile"))).toBe(true);
    unmountRecursive(join(dir, "merged"), { detach: true });
    // overlayfs left its crash marker; mounts() clears it since the machine has not rebooted.
    expect(mountOrError(mounts, join(dir, "again"))).toMatch(/EINVAL/);
    mountAll(await s.mounts("a"), join(dir, "again"));
    expect(readFileSync(join(dir, "again", "f"), "utf8")).toBe("x");
  });

  it("gives a child's root directory its parent's owner", async () => {
    const s = await open();
    const base = writableDir(await s.prepare("base-active"));
    chownSync(base, 1234, 5678);
    await s.commit("base", "base-active");
    const upper = writableDir(await s.prepare("child", "base"));
    expect(statSync(upper)).toMatchObject({ uid: 1234, gid: 5678 });
    const target = join(dir, "merged");
    mountAll(await s.mounts("child"), target);
    expect(statSync(target)).toMatchObject({ uid: 1234, gid: 5678 });
  });

  it("keeps a base snapshot's bind mount writable and a base view read-only", async () => {
    const s = await open();
    mountAll(await s.prepare("a"), join(dir, "a"));
    writeFileSync(join(dir, "a", "f"), "x");
    mountAll(await s.view("v"), join(dir, "v"));
    expect(() => writeFileSync(join(dir, "v", "f"), "x")).toThrow(/EROFS/);
  });
});
