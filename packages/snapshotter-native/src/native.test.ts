import {
  chmodSync,
  chownSync,
  existsSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorCode } from "@berth/errdefs";
import type { Mount, Snapshotter } from "@berth/snapshots";
import { snapshotterSuite } from "@berth/snapshots/testsuite";
import { getXattr, makedev, mknod, setXattr } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createNativeSnapshotter } from "./native-snapshotter.js";

// The conformance suite gates itself on root (it mounts what the snapshotter returns).
snapshotterSuite("native", async (root) => ({ snapshotter: await createNativeSnapshotter(root) }));

describe("native snapshotter cases", () => {
  let root: string;
  let sn: Snapshotter;

  beforeEach(async () => {
    root = mkdtempSync(join(tmpdir(), "berth-native-"));
    sn = await createNativeSnapshotter(root);
  });

  afterEach(async () => {
    await sn.close();
    rmSync(root, { recursive: true, force: true });
  });

  /** The tree behind a native snapshot's mounts, read without mounting it. */
  function treeOf(mounts: readonly Mount[]): string {
    expect(mounts).toHaveLength(1);
    const [m] = mounts as [Mount];
    expect(m.type).toBe("bind");
    return m.source;
  }

  async function layer(name: string, parent: string | undefined, fn: (dir: string) => void): Promise<void> {
    const key = `${name}-active`;
    fn(treeOf(await sn.prepare(key, parent)));
    await sn.commit(name, key);
  }

  describe("native snapshotter", () => {
    it("keeps each snapshot in snapshots/<id>/fs, with rw mounts for active and ro for views", async () => {
      const active = await sn.prepare("a", undefined);
      expect(active).toEqual([
        { type: "bind", source: join(root, "snapshots", "1", "fs"), options: ["rbind", "rw"] },
      ]);
      expect(lstatSync(treeOf(active)).mode & 0o7777).toBe(0o755);
      await sn.commit("c", "a");
      // The committed snapshot keeps the active one's directory.
      expect(existsSync(join(root, "snapshots", "1", "fs"))).toBe(true);
      const view = await sn.view("v", "c");
      expect(view).toEqual([
        { type: "bind", source: join(root, "snapshots", "2", "fs"), options: ["rbind", "ro"] },
      ]);
      await sn.remove("v");
      expect(readdirSync(join(root, "snapshots"))).toEqual(["1"]);
      expect(lstatSync(join(root, "metadata.db")).isFile()).toBe(true);
    });

    it("preserves hardlinks, times and user xattrs from parent to child", async () => {
      await layer("base", undefined, (dir) => {
        mkdirSync(join(dir, "bin"));
        writeFileSync(join(dir, "bin/busybox"), "multi-call");
        for (const name of ["sh", "ls", "cat"]) linkSync(join(dir, "bin/busybox"), join(dir, "bin", name));
        utimesSync(join(dir, "bin/busybox"), 1_500_000_000, 1_600_000_000);
        utimesSync(join(dir, "bin"), 1_400_000_000, 1_450_000_000);
        setXattr(join(dir, "bin/busybox"), "user.berth.layer", "base");
      });
      const dir = treeOf(await sn.prepare("child", "base"));
      const ino = lstatSync(join(dir, "bin/busybox")).ino;
      for (const name of ["sh", "ls", "cat"]) expect(lstatSync(join(dir, "bin", name)).ino).toBe(ino);
      expect(lstatSync(join(dir, "bin/busybox")).nlink).toBe(4);
      expect(lstatSync(join(dir, "bin/busybox")).mtimeMs).toBe(1_600_000_000_000);
      expect(lstatSync(join(dir, "bin")).mtimeMs).toBe(1_450_000_000_000);
      expect(getXattr(join(dir, "bin/sh"), "user.berth.layer")?.toString()).toBe("base");
    });

    it("records the whole tree's usage at commit, each hardlinked inode once", async () => {
      await layer("base", undefined, (dir) => {
        writeFileSync(join(dir, "data"), Buffer.alloc(256 * 1024, 1));
        linkSync(join(dir, "data"), join(dir, "data-link"));
      });
      const usage = await sn.usage("base");
      expect(usage.inodes).toBe(2);
      expect(usage.size).toBeGreaterThanOrEqual(256 * 1024);
      expect(usage.size).toBeLessThan(2 * 256 * 1024);
      await sn.view("v", "base");
      expect(await sn.usage("v")).toEqual({ size: 0, inodes: 0 });
    });

    it("leaves no record and no directory when copying the parent fails", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "x"));
      // Damage the parent so that the copy fails part way.
      rmSync(join(root, "snapshots", "1", "fs"), { recursive: true });
      let caught: unknown;
      try {
        await sn.prepare("child", "base");
      } catch (err) {
        caught = err;
      }
      expect((caught as NodeJS.ErrnoException | undefined)?.code).toBe("ENOENT");
      const names: string[] = [];
      await sn.walk((info) => {
        names.push(info.name);
      });
      expect(names).toEqual(["base"]);
      expect(readdirSync(join(root, "snapshots"))).toEqual(["1"]);
    });

    it("cleanup removes directories of unknown ids, leftover removals and dead processes' copies", async () => {
      await layer("base", undefined, (dir) => writeFileSync(join(dir, "f"), "x"));
      await sn.prepare("active", "base");
      const snapshots = join(root, "snapshots");
      const orphans = ["99", "rm-7", "tmp-999999999-dead", `tmp-${process.pid}-stale`];
      for (const name of orphans) mkdirSync(join(snapshots, name, "fs"), { recursive: true });
      // A copy in progress in another live process (our parent) must survive.
      const live = `tmp-${process.ppid}-busy`;
      mkdirSync(join(snapshots, live));
      await sn.cleanup?.();
      expect(readdirSync(snapshots).sort()).toEqual(["1", "2", live].sort());
      expect(readdirSync(join(snapshots, "2", "fs"))).toEqual(["f"]);
    });

    it("is unusable after close", async () => {
      await sn.close();
      await sn.close();
      let caught: unknown;
      try {
        await sn.stat("x");
      } catch (err) {
        caught = err;
      }
      expect(errorCode(caught)).toBe("failed-precondition");
      sn = await createNativeSnapshotter(root);
    });
  });

  describe.runIf(requiresRoot("native snapshotter copies of owners and devices"))(
    "native snapshotter as root",
    () => {
      it("copies device nodes, fifos, overlay whiteouts and owners into children", async () => {
        await layer("base", undefined, (dir) => {
          mkdirSync(join(dir, "dev"));
          mknod(join(dir, "dev/null"), 0o020666, makedev(1, 3));
          chmodSync(join(dir, "dev/null"), 0o666); // mknod's mode went through the umask
          mknod(join(dir, "dev/sda"), 0o060660, makedev(8, 0));
          mknod(join(dir, "fifo"), 0o010644);
          mknod(join(dir, "whiteout"), 0o020000, 0n);
          chownSync(join(dir, "dev/sda"), 0, 6);
          writeFileSync(join(dir, "owned"), "x");
          chownSync(join(dir, "owned"), 4242, 4343);
          setXattr(join(dir, "owned"), "trusted.berth.layer", "base");
        });
        const dir = treeOf(await sn.prepare("child", "base"));
        const null_ = lstatSync(join(dir, "dev/null"));
        expect(null_.isCharacterDevice()).toBe(true);
        expect(null_.rdev).toBe(Number(makedev(1, 3)));
        expect(null_.mode & 0o777).toBe(0o666);
        const sda = lstatSync(join(dir, "dev/sda"));
        expect(sda.isBlockDevice()).toBe(true);
        expect(sda.rdev).toBe(Number(makedev(8, 0)));
        expect([sda.uid, sda.gid]).toEqual([0, 6]);
        expect(lstatSync(join(dir, "fifo")).isFIFO()).toBe(true);
        expect(lstatSync(join(dir, "whiteout")).rdev).toBe(0);
        const owned = lstatSync(join(dir, "owned"));
        expect([owned.uid, owned.gid]).toEqual([4242, 4343]);
        expect(getXattr(join(dir, "owned"), "trusted.berth.layer")?.toString()).toBe("base");
      });
    },
  );
});
