import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { compareTrees, snapshotTree } from "@berth/archive/testing";
import { readMountInfo } from "@berth/sys";
import { requiresCommand, requiresRoot, sharedRegistry } from "@berth/testing";
import { afterAll, describe, expect, it } from "vitest";
import { berth } from "./berth.js";

const run = promisify(execFile);

/** Exports `ref` from `root`, unpacks it with umoci, and returns the rootfs path. */
async function umociUnpack(root: string, ref: string, work: string): Promise<string> {
  const archive = join(work, "image.tar");
  const exported = await berth(root, "images", "export", archive, ref);
  expect(exported.stderr).toBe("");
  const layout = join(work, "layout");
  mkdirSync(layout);
  await run("tar", ["-xf", archive, "-C", layout]);
  const tag = ref.slice(ref.lastIndexOf(":") + 1);
  await run("umoci", ["unpack", "--image", `${layout}:${tag}`, join(work, "bundle")]);
  return join(work, "bundle", "rootfs");
}

describe.runIf(
  requiresRoot("unpack, mount and commit (overlay mounts)") && requiresCommand("umoci", "umoci oracle"),
)("berth images unpack, mount and commit (CLI, overlayfs)", () => {
  const dirs: string[] = [];
  const temp = (prefix: string) => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => {
    for (const dir of dirs) {
      for (const m of readMountInfo().filter((i) => i.mountPoint.startsWith(dir))) {
        void run("umount", ["-l", m.mountPoint]).catch(() => undefined);
      }
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("mounts an unpacked image whose tree equals umoci's, and commits changes into an image umoci agrees with", async () => {
    const { refs } = sharedRegistry();
    const root = temp("berth-e2e-snap-");
    const work = temp("berth-e2e-snap-work-");
    const pulled = await berth(root, "images", "pull", refs.multiLayer);
    expect(pulled.stderr).toMatch(/unpacked .* into overlayfs/);
    expect(pulled.code).toBe(0);

    // The read-only view of the image equals what umoci unpacks from the same image.
    const view = join(work, "view");
    expect((await berth(root, "images", "mount", refs.multiLayer, view)).code).toBe(0);
    const expected = await umociUnpack(root, refs.multiLayer, join(work));
    expect(compareTrees(snapshotTree(expected), snapshotTree(view))).toEqual([]);
    expect(() => writeFileSync(join(view, "nope"), "x")).toThrow(/EROFS/);
    expect((await berth(root, "images", "unmount", "--rm", view)).code).toBe(0);

    // A writable container root: add, change, delete, replace a directory by a file.
    const rw = join(work, "rw");
    expect((await berth(root, "images", "mount", "--rw", refs.multiLayer, rw)).code).toBe(0);
    writeFileSync(join(rw, "added"), "new file\n");
    writeFileSync(join(rw, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nchanged:x:1:1::/:/bin/false\n");
    rmSync(join(rw, "root"), { recursive: true });
    rmSync(join(rw, "tmp"), { recursive: true });
    writeFileSync(join(rw, "tmp"), "a file where a directory was\n");
    mkdirSync(join(rw, "srv", "deep"), { recursive: true });
    const committed = await berth(root, "commit", rw, "example.test/committed:1", "-m", "e2e");
    expect(committed.stderr).toBe("");
    expect(committed.code).toBe(0);

    const commitWork = temp("berth-e2e-commit-");
    const rootfs = await umociUnpack(root, "example.test/committed:1", commitWork);
    expect(compareTrees(snapshotTree(rw), snapshotTree(rootfs))).toEqual([]);
    expect((await berth(root, "images", "unmount", "--rm", rw)).code).toBe(0);
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(work))).toEqual([]);

    // Removing the images leaves no snapshots, no records and no blobs behind.
    expect((await berth(root, "images", "rm", refs.multiLayer, "example.test/committed:1")).code).toBe(0);
    expect((await berth(root, "snapshots", "ls")).stdout.trim().split("\n")).toHaveLength(1);
    expect((await berth(root, "content", "ls", "-q")).stdout.trim()).toBe("");
    expect(readdirSync(join(root, "snapshots", "overlayfs", "snapshots"))).toEqual([]);
  });
});
