/**
 * The conformance suite of {@link Snapshotter}, modelled on containerd's `snapshots/testsuite`:
 * every implementation (overlay, native, the namespaced view, remote proxies, third-party
 * snapshotters) runs it before its own cases.
 *
 * ```ts
 * snapshotterSuite("native", async (root) => ({ snapshotter: await createNativeSnapshotter(root) }));
 * ```
 *
 * The suite mounts what the snapshotter returns with `mountAll` from `@berth/sys`, writes and reads
 * files through those mounts, and unmounts everything after each test, even on failure. Mounting
 * needs root, so the whole suite is skipped, with a printed reason, when the process is not root.
 *
 * @packageDocumentation
 */
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  errorCode,
  isAlreadyExists,
  isFailedPrecondition,
  isInvalidArgument,
  isNotFound,
} from "@berth/errdefs";
import { type Mount, mountAll, readMountInfo, unmount, unmountRecursive } from "@berth/sys";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SnapshotLabels } from "../labels.js";
import { type Info, Kind, type Snapshotter } from "../types.js";

/** What a suite factory returns: the snapshotter under test and how to dispose of it. */
export interface SnapshotterSuiteInstance {
  readonly snapshotter: Snapshotter;
  /**
   * Called after each test, even when it failed, after every mount was undone and
   * `snapshotter.close()` was called. The suite removes `root` itself afterwards.
   */
  readonly cleanup?: () => Promise<void>;
}

/**
 * Creates a snapshotter over the directory `root` (empty the first time). The suite calls it
 * once per test, and a second time with the same root in the "reopen" case (after closing the
 * first instance): snapshots must survive a restart.
 */
export type SnapshotterSuiteFactory = (root: string) => Promise<SnapshotterSuiteInstance>;

/** Options of {@link snapshotterSuite}. */
export interface SnapshotterSuiteOptions {
  /** How many layers the "many layers" case stacks and mounts at once. Default 128. */
  readonly layers?: number;
  /**
   * The directory the suite makes its temporary directories in (default `os.tmpdir()`). It must
   * be on a filesystem the snapshotter works on (overlayfs cannot use an overlayfs upper layer).
   */
  readonly tmpDir?: string;
}

function rootReason(): string | undefined {
  const uid = process.getuid?.() ?? -1;
  return uid === 0 ? undefined : `needs root (running as uid ${uid})`;
}

/** Asserts that `promise` rejects with an error `guard` accepts; returns the error. */
async function rejects(
  promise: Promise<unknown>,
  guard: (err: unknown) => boolean,
  what: string,
): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    if (!guard(err))
      throw new Error(`${what}: rejected with the wrong code ${errorCode(err)}: ${String(err)}`);
    return err;
  }
  throw new Error(`${what}: resolved, but should have rejected`);
}

function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
  return undefined;
}

/**
 * Registers the conformance cases for the snapshotter made by `factory` in a vitest
 * `describe("snapshotter <name>")` block. Call it at the top level of a test file.
 */
export function snapshotterSuite(
  name: string,
  factory: SnapshotterSuiteFactory,
  options: SnapshotterSuiteOptions = {},
): void {
  const reason = rootReason();
  if (reason !== undefined) process.stderr.write(`skipping snapshotter suite ${name}: ${reason}\n`);
  const layerCount = options.layers ?? 128;

  describe.runIf(reason === undefined)(`snapshotter ${name}`, () => {
    let work = "";
    let root = "";
    let sn: Snapshotter;
    let instances: SnapshotterSuiteInstance[] = [];
    let mountCount = 0;

    beforeEach(async () => {
      work = await mkdtemp(join(options.tmpDir ?? tmpdir(), "berth-snapshotter-suite-"));
      root = join(work, "root");
      mkdirSync(root, { mode: 0o700 });
      instances = [];
      mountCount = 0;
      const instance = await factory(root);
      instances.push(instance);
      sn = instance.snapshotter;
    });

    afterEach(async () => {
      const errors: unknown[] = [];
      const attempt = async (fn: () => unknown): Promise<void> => {
        try {
          await fn();
        } catch (err) {
          errors.push(err);
        }
      };
      await attempt(() => unmountRecursive(work, { detach: true }));
      for (const instance of instances) {
        await attempt(() => instance.snapshotter.close());
        await attempt(() => instance.cleanup?.());
      }
      const prefix = `${work}/`;
      const leaked = readMountInfo()
        .map((m) => m.mountPoint)
        .filter((p) => p === work || p.startsWith(prefix));
      await attempt(() => rm(work, { recursive: true, force: true }));
      if (leaked.length > 0) throw new Error(`mounts left behind under ${work}: ${leaked.join(", ")}`);
      if (errors.length > 0) throw errors[0];
    });

    /** Mounts `mounts` on a fresh directory under the work dir; returns it. */
    function mountHere(mounts: readonly Mount[]): string {
      expect(mounts.length).toBeGreaterThan(0);
      const target = join(work, "mnt", String(mountCount++));
      mkdirSync(target, { recursive: true });
      mountAll(mounts, target);
      return target;
    }

    /** Mounts, runs `fn` on the mounted tree, and unmounts even when `fn` throws. */
    async function withMounted<T>(mounts: readonly Mount[], fn: (dir: string) => T | Promise<T>): Promise<T> {
      const dir = mountHere(mounts);
      try {
        return await fn(dir);
      } finally {
        unmountRecursive(dir, { detach: true });
      }
    }

    /** Prepares `key` on `parent`, lets `fn` write through its mounts, commits it as `name`. */
    async function layer(
      name: string,
      parent: string | undefined,
      fn: (dir: string) => void,
      labels?: Record<string, string>,
    ): Promise<void> {
      const key = `${name}-active`;
      const mounts = await sn.prepare(key, parent);
      await withMounted(mounts, fn);
      await sn.commit(name, key, labels === undefined ? undefined : { labels });
    }

    async function walkAll(filters?: readonly string[]): Promise<Info[]> {
      const out: Info[] = [];
      await sn.walk((info) => {
        out.push(info);
      }, filters);
      return out.sort((a, b) => a.name.localeCompare(b.name));
    }

    it("commits a chain of layers whose files appear in a view of the top", async () => {
      await layer("base", undefined, (dir) => {
        writeFileSync(join(dir, "foo"), "foo from base");
        mkdirSync(join(dir, "a/b"), { recursive: true });
        writeFileSync(join(dir, "a/b/c"), "deep");
        writeFileSync(join(dir, "gone"), "removed in layer 2");
        chmodSync(join(dir, "foo"), 0o640);
        symlinkSync("a/b/c", join(dir, "link"));
      });
      await layer("layer2", "base", (dir) => {
        expect(readFileSync(join(dir, "foo"), "utf8")).toBe("foo from base");
        writeFileSync(join(dir, "foo"), "foo from layer2");
        writeFileSync(join(dir, "bar"), "bar");
        unlinkSync(join(dir, "gone"));
      });
      const top = await sn.stat("layer2");
      expect(top).toMatchObject({ kind: Kind.Committed, name: "layer2", parent: "base" });
      const base = await sn.stat("base");
      expect(base.kind).toBe(Kind.Committed);
      expect(base.parent).toBeUndefined();
      await rejects(sn.stat("layer2-active"), isNotFound, "stat of a committed active key");

      await withMounted(await sn.view("top-view", "layer2"), (dir) => {
        expect(readdirSync(dir).sort()).toEqual(["a", "bar", "foo", "link"]);
        expect(readFileSync(join(dir, "foo"), "utf8")).toBe("foo from layer2");
        expect(readFileSync(join(dir, "a/b/c"), "utf8")).toBe("deep");
        expect(readlinkSync(join(dir, "link"))).toBe("a/b/c");
        expect(lstatSync(join(dir, "foo")).mode & 0o7777).toBe(0o640);
      });
      // The lower layer is unchanged by what the upper one did.
      await withMounted(await sn.view("base-view", "base"), (dir) => {
        expect(readFileSync(join(dir, "foo"), "utf8")).toBe("foo from base");
        expect(existsSync(join(dir, "gone"))).toBe(true);
        expect(existsSync(join(dir, "bar"))).toBe(false);
      });
    });

    it("returns the same mounts from mounts() as from prepare() and view()", async () => {
      const active = await sn.prepare("active", undefined);
      expect(await sn.mounts("active")).toEqual(active);
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "x"));
      const view = await sn.view("view", "base");
      expect(await sn.mounts("view")).toEqual(view);
      await rejects(sn.mounts("base"), isFailedPrecondition, "mounts of a committed snapshot");
      await rejects(sn.mounts("missing"), isNotFound, "mounts of an unknown key");
    });

    it("makes views read-only", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "file"), "data"));
      await withMounted(await sn.view("view", "base"), (dir) => {
        expect(readFileSync(join(dir, "file"), "utf8")).toBe("data");
        expect(errnoOf(() => writeFileSync(join(dir, "file"), "changed"))).toBe("EROFS");
        expect(errnoOf(() => writeFileSync(join(dir, "new"), "x"))).toBe("EROFS");
        expect(errnoOf(() => mkdirSync(join(dir, "d")))).toBe("EROFS");
      });
      const info = await sn.stat("view");
      expect(info).toMatchObject({ kind: Kind.View, name: "view", parent: "base" });
      // A view without a parent is an empty read-only tree.
      await withMounted(await sn.view("empty-view"), (dir) => {
        expect(readdirSync(dir)).toEqual([]);
        expect(errnoOf(() => writeFileSync(join(dir, "x"), "x"))).toBe("EROFS");
      });
    });

    it("keeps active snapshots writable and independent of each other", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "shared"), "base"));
      const one = mountHere(await sn.prepare("one", "base"));
      const two = mountHere(await sn.prepare("two", "base"));
      writeFileSync(join(one, "shared"), "one");
      writeFileSync(join(one, "only-one"), "1");
      expect(readFileSync(join(two, "shared"), "utf8")).toBe("base");
      expect(existsSync(join(two, "only-one"))).toBe(false);
      expect((await sn.stat("one")).kind).toBe(Kind.Active);
    });

    it("stats and updates labels", async () => {
      const labels = { "test.berth.io/a": "1", [`${SnapshotLabels.InheritedPrefix}x`]: "y" };
      await sn.prepare("active", undefined, { labels });
      const info = await sn.stat("active");
      expect(info.labels).toEqual(labels);
      expect(info.created).toBeInstanceOf(Date);
      expect(info.updated).toBeInstanceOf(Date);
      expect(info.updated.getTime()).toBeGreaterThanOrEqual(info.created.getTime());

      let updated = await sn.update({ name: "active", labels: { "test.berth.io/b": "2" } }, [
        "labels.test.berth.io/b",
      ]);
      expect(updated.labels).toEqual({ ...labels, "test.berth.io/b": "2" });
      expect(updated.kind).toBe(Kind.Active);
      expect(updated.created.getTime()).toBe(info.created.getTime());
      updated = await sn.update({ name: "active", labels: {} }, ["labels.test.berth.io/a"]);
      expect(updated.labels).toEqual({ [`${SnapshotLabels.InheritedPrefix}x`]: "y", "test.berth.io/b": "2" });
      updated = await sn.update({ name: "active", labels: { only: "this" } });
      expect(updated.labels).toEqual({ only: "this" });
      expect((await sn.stat("active")).labels).toEqual({ only: "this" });
      await rejects(sn.update({ name: "missing", labels: {} }), isNotFound, "update of an unknown key");
      await rejects(
        sn.update({ name: "active", labels: {} }, ["kind"]),
        isInvalidArgument,
        "update of a field other than labels",
      );
    });

    it("carries labels through commit, merged with the commit's own", async () => {
      await sn.prepare("active", undefined, { labels: { a: "from-prepare", b: "from-prepare" } });
      await sn.commit("committed", "active", { labels: { b: "from-commit", c: "from-commit" } });
      expect((await sn.stat("committed")).labels).toEqual({
        a: "from-prepare",
        b: "from-commit",
        c: "from-commit",
      });
    });

    it("walks snapshots, with filters", async () => {
      await layer("base", undefined, () => {}, { tier: "base" });
      await sn.prepare("active", "base", { labels: { tier: "top", extra: "1" } });
      await sn.view("view", "base", { labels: { tier: "top" } });
      const all = await walkAll();
      expect(all.map((i) => [i.name, i.kind, i.parent])).toEqual([
        ["active", Kind.Active, "base"],
        ["base", Kind.Committed, undefined],
        ["view", Kind.View, "base"],
      ]);
      expect(all.find((i) => i.name === "active")?.labels).toEqual({ tier: "top", extra: "1" });
      const names = async (filters: readonly string[]) => (await walkAll(filters)).map((i) => i.name);
      expect(await names(["kind==committed"])).toEqual(["base"]);
      expect(await names(["kind==view", "kind==active"])).toEqual(["active", "view"]);
      expect(await names(["parent==base"])).toEqual(["active", "view"]);
      expect(await names(["labels.tier==top,labels.extra"])).toEqual(["active"]);
      expect(await names(["name~=^b"])).toEqual(["base"]);
      expect(await names(["labels.tier!=top"])).toEqual(["base"]);
      await rejects(walkAll(["kind=="]), isInvalidArgument, "walk with a malformed filter");
      // The callback may be asynchronous, and stat works inside it.
      const seen: string[] = [];
      await sn.walk(async (info) => {
        const again = await sn.stat(info.name);
        seen.push(again.name);
      });
      expect(seen.sort()).toEqual(["active", "base", "view"]);
    });

    it("refuses to remove a parent in use, and removes it once its child is gone", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "x"));
      await layer("layer2", "base", () => {});
      await sn.prepare("active", "layer2");
      await rejects(sn.remove("base"), isFailedPrecondition, "remove of a parent of a committed snapshot");
      await rejects(sn.remove("layer2"), isFailedPrecondition, "remove of a parent of an active snapshot");
      await sn.remove("active");
      await rejects(sn.stat("active"), isNotFound, "stat of a removed snapshot");
      await sn.remove("layer2");
      await sn.remove("base");
      expect(await walkAll()).toEqual([]);
      await rejects(sn.remove("base"), isNotFound, "remove of a removed snapshot");
      // The key is free again, and the new snapshot starts empty.
      await withMounted(await sn.prepare("base", undefined), (dir) => {
        expect(readdirSync(dir)).toEqual([]);
      });
    });

    it("removes views and their parents", async () => {
      await layer("base", undefined, () => {});
      await sn.view("view", "base");
      await rejects(sn.remove("base"), isFailedPrecondition, "remove of the parent of a view");
      await sn.remove("view");
      await sn.remove("base");
      expect(await walkAll()).toEqual([]);
    });

    it("keeps the owner of a file chowned in a layer in its children", async () => {
      await layer("base", undefined, (dir) => {
        mkdirSync(join(dir, "dir"));
        writeFileSync(join(dir, "dir/file"), "x");
        writeFileSync(join(dir, "lower-file"), "y");
        chownSync(join(dir, "dir"), 1001, 1002);
        chownSync(join(dir, "dir/file"), 1003, 1004);
      });
      // Chown a file that came from the lower layer (a copy-up for overlay).
      await layer("layer2", "base", (dir) => {
        chownSync(join(dir, "lower-file"), 2001, 2002);
      });
      await withMounted(await sn.prepare("child", "layer2"), (dir) => {
        const d = lstatSync(join(dir, "dir"));
        expect([d.uid, d.gid]).toEqual([1001, 1002]);
        const f = lstatSync(join(dir, "dir/file"));
        expect([f.uid, f.gid]).toEqual([1003, 1004]);
        const l = lstatSync(join(dir, "lower-file"));
        expect([l.uid, l.gid]).toEqual([2001, 2002]);
        expect(readFileSync(join(dir, "lower-file"), "utf8")).toBe("y");
      });
    });

    it("measures usage that grows by what was written", async () => {
      const mounts = await sn.prepare("active", undefined);
      const before = await sn.usage("active");
      const size = 1 << 20;
      await withMounted(mounts, (dir) => {
        mkdirSync(join(dir, "d"));
        writeFileSync(join(dir, "d/big"), Buffer.alloc(size, 0xab));
      });
      const after = await sn.usage("active");
      expect(after.size - before.size).toBeGreaterThanOrEqual(size);
      expect(after.inodes - before.inodes).toBeGreaterThanOrEqual(2);
      await sn.commit("committed", "active");
      const committed = await sn.usage("committed");
      expect(committed.size).toBeGreaterThanOrEqual(size);
      expect(committed.inodes).toBeGreaterThanOrEqual(2);
      // A child's usage counts its own layer only, not the parent's megabyte.
      await withMounted(await sn.prepare("child", "committed"), (dir) => {
        writeFileSync(join(dir, "small"), "1234");
      });
      const child = await sn.usage("child");
      expect(child.inodes).toBeGreaterThanOrEqual(1);
      await rejects(sn.usage("missing"), isNotFound, "usage of an unknown key");
    });

    it("hides a directory removed in a lower layer from its children", async () => {
      await layer("base", undefined, (dir) => {
        mkdirSync(join(dir, "lib/sub"), { recursive: true });
        writeFileSync(join(dir, "lib/sub/file"), "x");
        writeFileSync(join(dir, "lib/top"), "y");
        mkdirSync(join(dir, "etc"));
        writeFileSync(join(dir, "etc/old"), "old");
      });
      await layer("layer2", "base", (dir) => {
        rmSync(join(dir, "lib"), { recursive: true });
        // Removed and made again: the new directory must not show the old one's entries.
        rmSync(join(dir, "etc"), { recursive: true });
        mkdirSync(join(dir, "etc"));
        writeFileSync(join(dir, "etc/new"), "new");
      });
      await withMounted(await sn.prepare("child", "layer2"), (dir) => {
        expect(existsSync(join(dir, "lib"))).toBe(false);
        expect(readdirSync(join(dir, "etc"))).toEqual(["new"]);
        // Making the directory again in the child still shows nothing of the base layer.
        mkdirSync(join(dir, "lib"));
        expect(readdirSync(join(dir, "lib"))).toEqual([]);
      });
      await withMounted(await sn.view("base-view", "base"), (dir) => {
        expect(readdirSync(join(dir, "lib")).sort()).toEqual(["sub", "top"]);
      });
    });

    it(`stacks ${layerCount} layers and mounts them all at once`, async () => {
      let parent: string | undefined;
      for (let i = 0; i < layerCount; i++) {
        const name = `layer-${i}`;
        await layer(name, parent, (dir) => {
          writeFileSync(join(dir, `file-${i}`), String(i));
          writeFileSync(join(dir, "latest"), String(i));
          if (i > 0) rmSync(join(dir, `file-${i - 1}`));
        });
        parent = name;
      }
      await withMounted(await sn.view("top", parent), (dir) => {
        expect(readdirSync(dir).sort()).toEqual([`file-${layerCount - 1}`, "latest"].sort());
        expect(readFileSync(join(dir, "latest"), "utf8")).toBe(String(layerCount - 1));
      });
      await withMounted(await sn.prepare("active-top", parent), (dir) => {
        writeFileSync(join(dir, "latest"), "written");
        expect(readFileSync(join(dir, "latest"), "utf8")).toBe("written");
      });
    });

    it("prepares 10 snapshots of one parent at once", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "from-base"), "base"));
      const keys = Array.from({ length: 10 }, (_, i) => `concurrent-${i}`);
      const all = await Promise.all(keys.map((key) => sn.prepare(key, "base")));
      const dirs = all.map((mounts) => mountHere(mounts));
      dirs.forEach((dir, i) => {
        expect(readFileSync(join(dir, "from-base"), "utf8")).toBe("base");
        writeFileSync(join(dir, "mine"), String(i));
      });
      dirs.forEach((dir, i) => {
        expect(readFileSync(join(dir, "mine"), "utf8")).toBe(String(i));
      });
      for (const dir of dirs) unmount(dir);
      const names = (await walkAll(["kind==active"])).map((i) => i.name).sort();
      expect(names).toEqual([...keys].sort());
      await Promise.all(keys.map((key, i) => sn.commit(`committed-${i}`, key)));
      expect((await walkAll(["parent==base"])).length).toBe(10);
    });

    it("refuses to commit a view or a committed snapshot", async () => {
      await layer("base", undefined, () => {});
      await sn.view("view", "base");
      await rejects(sn.commit("from-view", "view"), isFailedPrecondition, "commit of a view");
      await rejects(
        sn.commit("from-committed", "base"),
        isFailedPrecondition,
        "commit of a committed snapshot",
      );
      await rejects(sn.commit("from-missing", "missing"), isNotFound, "commit of an unknown key");
      expect((await sn.stat("view")).kind).toBe(Kind.View);
      await rejects(sn.stat("from-view"), isNotFound, "stat of a failed commit's name");
    });

    it("refuses duplicate keys and names", async () => {
      await layer("base", undefined, () => {});
      await sn.prepare("active", "base");
      await rejects(sn.prepare("active", "base"), isAlreadyExists, "prepare of a taken key");
      await rejects(sn.view("active", "base"), isAlreadyExists, "view under a taken key");
      await rejects(sn.prepare("base", undefined), isAlreadyExists, "prepare under a committed name");
      await rejects(sn.commit("base", "active"), isAlreadyExists, "commit under a taken name");
      // The failed commit left the active snapshot as it was.
      expect((await sn.stat("active")).kind).toBe(Kind.Active);
      await sn.prepare("other", undefined);
      await rejects(sn.commit("other", "active"), isAlreadyExists, "commit onto an active key");
    });

    it("reports errors with their codes", async () => {
      await rejects(sn.stat("missing"), isNotFound, "stat of an unknown key");
      await rejects(sn.prepare("a", "missing"), isNotFound, "prepare on an unknown parent");
      await rejects(sn.view("v", "missing"), isNotFound, "view of an unknown parent");
      await sn.prepare("active", undefined);
      await rejects(sn.prepare("b", "active"), isFailedPrecondition, "prepare on an active parent");
      await sn.view("view", undefined);
      await rejects(sn.prepare("c", "view"), isFailedPrecondition, "prepare on a view");
      await rejects(sn.prepare("", undefined), isInvalidArgument, "prepare with an empty key");
      await rejects(sn.remove("missing"), isNotFound, "remove of an unknown key");
      // Failed prepares leave nothing behind.
      expect((await walkAll()).map((i) => i.name)).toEqual(["active", "view"]);
    });

    it("keeps snapshots across a restart on the same root", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "persisted"));
      await sn.prepare("active", "base", { labels: { k: "v" } });
      await sn.close();
      await sn.close();
      const second = await factory(root);
      instances.push(second);
      sn = second.snapshotter;
      expect(await sn.stat("active")).toMatchObject({
        kind: Kind.Active,
        parent: "base",
        labels: { k: "v" },
      });
      await sn.cleanup?.();
      await withMounted(await sn.mounts("active"), (dir) => {
        expect(readFileSync(join(dir, "f"), "utf8")).toBe("persisted");
      });
    });

    it("keeps every snapshot usable after cleanup", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "kept"));
      await sn.prepare("active", "base");
      await layer("removed", "base", () => {});
      await sn.remove("removed");
      await sn.cleanup?.();
      expect((await walkAll()).map((i) => i.name)).toEqual(["active", "base"]);
      await withMounted(await sn.mounts("active"), (dir) => {
        expect(readFileSync(join(dir, "f"), "utf8")).toBe("kept");
      });
    });
  });
}
