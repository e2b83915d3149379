import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { createLocalContentStore, Labels } from "@berth/content";
import { isFailedPrecondition, isInvalidArgument } from "@berth/errdefs";
import { getXattr, listXattrs, makedev, mknod, readMountInfo, setXattr, unmountRecursive } from "@berth/sys";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type DiffResult, diffDirectories, diffOverlayUpper, writeDiff } from "./diff.js";

const isRoot = process.getuid?.() === 0;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const OLD = new Date("2023-06-01T12:00:00.250Z");

function sink(): { out: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  return {
    out: new Writable({
      write(chunk: Buffer, _e, cb) {
        chunks.push(chunk);
        cb();
      },
    }),
    bytes: () => Buffer.concat(chunks),
  };
}

async function diffToBuffer(
  fn: (out: Writable) => Promise<DiffResult>,
): Promise<{ tar: Buffer; result: DiffResult }> {
  const { out, bytes } = sink();
  const result = await fn(out);
  return { tar: bytes(), result };
}

function write(root: string, rel: string, content: string, mode = 0o644): void {
  const path = join(root, rel);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content);
  chmodSync(path, mode);
}

/** The lower tree: something of every kind, with fixed times. */
function buildLower(root: string): void {
  write(root, "a/keep.txt", "unchanged\n");
  write(root, "a/change.txt", "old content\n");
  write(root, "a/delete.txt", "to be deleted\n");
  write(root, "a/chmod.txt", "mode changes\n");
  write(root, "a/own.txt", "owner changes\n");
  write(root, "a/xattr.txt", "gets an xattr\n");
  write(root, "replaced/x", "x\n");
  write(root, "replaced/y", "y\n");
  write(root, "filedir", "a file that becomes a directory\n");
  write(root, "gone/deep/z", "z\n");
  write(root, "recreate/old1", "1\n");
  write(root, "recreate/old2", "2\n");
  write(root, "unchanged/deep/file", "deep\n", 0o755);
  symlinkSync("a/keep.txt", join(root, "sym"));
  const dirs: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (lstatSync(path).isDirectory()) {
        walk(path);
        dirs.push(path);
      } else if (!lstatSync(path).isSymbolicLink()) {
        utimesSync(path, OLD, OLD);
      }
    }
  };
  walk(root);
  for (const dir of dirs) utimesSync(dir, OLD, OLD);
}

/** Applies the same changes to a copy of the lower tree (plain directory or an overlay's merged dir). */
function changeTree(root: string): void {
  write(root, "new.txt", "a new file\n");
  write(root, "a/change.txt", "new content!\n");
  rmSync(join(root, "a/delete.txt"));
  chmodSync(join(root, "a/chmod.txt"), 0o600);
  setXattr(join(root, "a/xattr.txt"), "user.berth", "value ☃");
  rmSync(join(root, "replaced"), { recursive: true });
  write(root, "replaced", "now a file\n");
  rmSync(join(root, "filedir"));
  write(root, "filedir/child", "inside the new directory\n");
  rmSync(join(root, "gone"), { recursive: true });
  rmSync(join(root, "recreate"), { recursive: true });
  write(root, "recreate/new1", "fresh\n");
  rmSync(join(root, "sym"));
  symlinkSync("../elsewhere", join(root, "sym"));
  write(root, "links/h1", "hard linked\n");
  linkSync(join(root, "links/h1"), join(root, "links/h2"));
  mknod(join(root, "links/fifo"), S_IFIFO | 0o640);
  write(root, `long/${"d".repeat(120)}/${"f".repeat(110)}`, "a name ustar cannot hold\n");
  if (isRoot) {
    chownSync(join(root, "a/own.txt"), 1000, 1001);
    mknod(join(root, "links/null"), S_IFCHR | 0o666, makedev(1, 3));
    write(root, "big-ids", "owned by a large uid\n");
    chownSync(join(root, "big-ids"), 3_000_000, 3_000_001);
  }
}

interface NodeInfo {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  mtime?: number;
  size?: number;
  sha256?: string;
  target?: string;
  rdev?: number;
  xattrs: Record<string, string>;
  linkGroup?: string;
}

/** Everything the layer format carries about a tree, by path (times in whole seconds). */
function describeTree(root: string): Record<string, NodeInfo> {
  const out: Record<string, NodeInfo> = {};
  const inodes = new Map<number, string>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const path = join(dir, name);
      const key = rel === "" ? name : `${rel}/${name}`;
      const st = lstatSync(path);
      const xattrs: Record<string, string> = {};
      for (const x of listXattrs(path).sort()) {
        if (!x.startsWith("trusted.overlay.")) xattrs[x] = getXattr(path, x)?.toString("hex") ?? "";
      }
      const info: NodeInfo = { type: "", mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, xattrs };
      if (st.isDirectory()) {
        info.type = "dir";
        info.mtime = Math.floor(st.mtimeMs / 1000);
      } else if (st.isSymbolicLink()) {
        info.type = "symlink";
        info.target = readlinkSync(path);
      } else {
        info.type = st.isFile() ? "file" : st.isFIFO() ? "fifo" : st.isCharacterDevice() ? "char" : "other";
        info.mtime = Math.floor(st.mtimeMs / 1000);
        info.rdev = st.rdev;
        if (st.isFile()) {
          info.size = st.size;
          info.sha256 = createHash("sha256").update(readFileSync(path)).digest("hex");
        }
        if (st.nlink > 1) {
          if (!inodes.has(st.ino)) inodes.set(st.ino, key);
          info.linkGroup = inodes.get(st.ino) ?? "";
        }
      }
      out[key] = info;
      if (st.isDirectory()) walk(path, key);
    }
  };
  walk(root, "");
  return out;
}

/**
 * Applies a layer tar onto `root` with GNU tar as an independent reader, handling whiteouts by
 * hand first (image-spec `layer.md`): `.wh..wh..opq` empties its directory, `.wh.x` removes x,
 * and anything the layer replaces with a different kind of entry is removed before extraction.
 */
function applyWithGnuTar(root: string, tarPath: string): void {
  const listing = execFileSync("tar", ["-tvf", tarPath, "--numeric-owner"], { encoding: "utf8" });
  const names = execFileSync("tar", ["-tf", tarPath], { encoding: "utf8" }).split("\n").filter(Boolean);
  const types = listing
    .split("\n")
    .filter(Boolean)
    .map((line) => line[0]);
  names.forEach((raw, i) => {
    const name = raw.replace(/\/$/, "");
    const base = name.split("/").pop() ?? "";
    const dir = dirname(join(root, name));
    if (base === ".wh..wh..opq") {
      for (const child of readdirSync(dir)) rmSync(join(dir, child), { recursive: true, force: true });
    } else if (base.startsWith(".wh.")) {
      rmSync(join(dir, base.slice(4)), { recursive: true, force: true });
    } else {
      let existing: ReturnType<typeof lstatSync> | undefined;
      try {
        existing = lstatSync(join(root, name));
      } catch {
        existing = undefined;
      }
      const isDir = types[i] === "d";
      if (existing && !(existing.isDirectory() && isDir))
        rmSync(join(root, name), { recursive: true, force: true });
    }
  });
  execFileSync("tar", [
    "-x",
    "-f",
    tarPath,
    "-C",
    root,
    "--xattrs",
    "--xattrs-include=*",
    "--numeric-owner",
    "--same-permissions",
    ...(isRoot ? ["--same-owner"] : []),
    "--exclude=.wh.*",
  ]);
}

function entryList(tarPath: string): string[] {
  return execFileSync("tar", ["-tvf", tarPath, "--numeric-owner", "--full-time"], { encoding: "utf8" })
    .split("\n")
    .filter(Boolean);
}

const hasTar = requiresCommand("tar", "GNU tar as the layer reader");

describe.runIf(hasTar)("diffDirectories", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-diff-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("writes a layer that turns a copy of lower into upper, deterministically", async () => {
    const lower = join(dir, "lower");
    const upper = join(dir, "upper");
    const applied = join(dir, "applied");
    mkdirSync(lower);
    buildLower(lower);
    execFileSync("cp", ["-a", lower, upper]);
    changeTree(upper);

    const { tar, result } = await diffToBuffer((out) => diffDirectories(lower, upper, out));
    expect(result.size).toBe(tar.length);
    expect(result.diffId).toBe(`sha256:${createHash("sha256").update(tar).digest("hex")}`);
    const again = await diffToBuffer((out) => diffDirectories(lower, upper, out));
    expect(again.result.diffId).toBe(result.diffId);

    const tarPath = join(dir, "layer.tar");
    writeFileSync(tarPath, tar);
    const names = execFileSync("tar", ["-tf", tarPath], { encoding: "utf8" }).split("\n").filter(Boolean);
    // Sorted, parents first, whiteouts for deletions, opaque for the re-created directory,
    // nothing for what did not change.
    expect(names).toContain("a/.wh.delete.txt");
    expect(names).toContain(".wh.gone");
    expect(names).toContain("recreate/.wh..wh..opq");
    expect(names).not.toContain("recreate/.wh.old1");
    expect(names).not.toContain("a/keep.txt");
    expect(names.some((n) => n.startsWith("unchanged"))).toBe(false);
    expect(names.indexOf("a/")).toBeLessThan(names.indexOf("a/.wh.delete.txt"));
    expect(names.indexOf("recreate/")).toBe(names.indexOf("recreate/.wh..wh..opq") - 1);
    expect(entryList(tarPath).find((l) => l.includes("links/h2"))).toMatch(
      /^h.*links\/h2 link to links\/h1$/,
    );

    execFileSync("cp", ["-a", lower, applied]);
    applyWithGnuTar(applied, tarPath);
    expect(describeTree(applied)).toEqual(describeTree(upper));
  });

  it("writes every entry of a tree when there is no lower", async () => {
    const upper = join(dir, "upper");
    mkdirSync(upper);
    buildLower(upper);
    const { tar } = await diffToBuffer((out) => diffDirectories(undefined, upper, out));
    const tarPath = join(dir, "layer.tar");
    writeFileSync(tarPath, tar);
    const applied = join(dir, "applied");
    mkdirSync(applied);
    applyWithGnuTar(applied, tarPath);
    expect(describeTree(applied)).toEqual(describeTree(upper));
  });

  it("rejects missing roots with invalid-argument", async () => {
    const err = await diffDirectories(join(dir, "nope"), dir, sink().out).catch((e: unknown) => e);
    expect(isInvalidArgument(err)).toBe(true);
  });
});

describe.runIf(hasTar && requiresRoot("overlay mounts for the diff fast path"))("diffOverlayUpper", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-diff-ovl-"));
  });
  afterEach(async () => {
    unmountRecursive(dir, { detach: true });
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(dir))).toEqual([]);
    await rm(dir, { recursive: true, force: true });
  });

  function mountOverlay(
    lowers: string[],
    name: string,
  ): { upper: string; merged: string; options: string[] } {
    const upper = join(dir, `${name}-upper`);
    const work = join(dir, `${name}-work`);
    const merged = join(dir, `${name}-merged`);
    for (const d of [upper, work, merged]) mkdirSync(d);
    const options = [`lowerdir=${lowers.join(":")}`, `upperdir=${upper}`, `workdir=${work}`];
    execFileSync("mount", ["-t", "overlay", "overlay", "-o", options.join(","), merged]);
    return { upper, merged, options };
  }

  it("equals the double walk of the merged tree, entry for entry", async () => {
    const lower = join(dir, "lower");
    mkdirSync(lower);
    buildLower(lower);
    const { upper, merged } = mountOverlay([lower], "c1");
    changeTree(merged);

    const fast = await diffToBuffer((out) => diffOverlayUpper([lower], upper, out));
    const walk = await diffToBuffer((out) => diffDirectories(lower, merged, out));
    writeFileSync(join(dir, "fast.tar"), fast.tar);
    writeFileSync(join(dir, "walk.tar"), walk.tar);
    expect(entryList(join(dir, "fast.tar"))).toEqual(entryList(join(dir, "walk.tar")));
    expect(fast.result.diffId).toBe(walk.result.diffId);
    expect(entryList(join(dir, "fast.tar"))).toContainEqual(
      expect.stringMatching(/recreate\/\.wh\.\.wh\.\.opq$/),
    );
    // filedir was a file: the directory overlayfs marked opaque hides nothing, so no marker.
    expect(entryList(join(dir, "fast.tar"))).not.toContainEqual(
      expect.stringMatching(/filedir\/\.wh\.\.wh\.\.opq$/),
    );
  });

  it("looks through several lowers to decide whether an opaque directory hid anything", async () => {
    const bottom = join(dir, "bottom");
    const middle = join(dir, "middle");
    mkdirSync(bottom);
    mkdirSync(middle);
    write(bottom, "d1/old", "hidden by middle's whiteout\n");
    write(bottom, "d2/old", "still visible\n");
    mkdirSync(join(middle, "d1"));
    mknod(join(middle, "d1/old"), S_IFCHR, 0n);
    const { upper, merged } = mountOverlay([middle, bottom], "c2");
    for (const d of ["d1", "d2"]) {
      rmSync(join(merged, d), { recursive: true, force: true });
      write(merged, `${d}/new`, "new\n");
    }
    const fast = await diffToBuffer((out) => diffOverlayUpper([middle, bottom], upper, out));
    writeFileSync(join(dir, "fast.tar"), fast.tar);
    const names = execFileSync("tar", ["-tf", join(dir, "fast.tar")], { encoding: "utf8" }).split("\n");
    expect(names).toContain("d2/.wh..wh..opq");
    expect(names).not.toContain("d1/.wh..wh..opq");
  });

  it("writeDiff takes the fast path for an overlay over the lower's directories, and walks otherwise", async () => {
    const lower = join(dir, "lower");
    mkdirSync(lower);
    buildLower(lower);
    const { upper, merged, options } = mountOverlay([lower], "c3");
    changeTree(merged);
    const store = await createLocalContentStore(join(dir, "content"));
    const lowerMounts = [{ type: "bind", source: lower, options: ["rbind", "ro"] }];
    const upperMounts = [{ type: "overlay", source: "overlay", options }];

    const expected = await diffToBuffer((out) => diffOverlayUpper([lower], upper, out));
    const gz = await writeDiff(store, lowerMounts, upperMounts, { labels: { "berth.test": "yes" } });
    expect(gz.diffId).toBe(expected.result.diffId);
    expect(gz.descriptor.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+gzip");
    const info = await store.info(gz.descriptor.digest);
    expect(info.size).toBe(gz.descriptor.size);
    expect(info.labels).toEqual({ [Labels.Uncompressed]: gz.diffId, "berth.test": "yes" });
    const blob = readFileSync(join(dir, "content", "blobs", "sha256", gz.descriptor.digest.slice(7)));
    expect(execFileSync("gzip", ["-dc"], { input: blob }).equals(expected.tar)).toBe(true);

    // Same layer again: already in the store, not an error.
    const again = await writeDiff(store, lowerMounts, upperMounts);
    expect(again.descriptor).toEqual(gz.descriptor);

    // A lower that does not match the overlay's lowerdir: both sides are mounted and walked.
    const other = join(dir, "other");
    mkdirSync(other);
    const walked = await writeDiff(store, other, upperMounts, { compression: "zstd" });
    const expectedWalk = await diffToBuffer((out) => diffDirectories(other, merged, out));
    expect(walked.diffId).toBe(expectedWalk.result.diffId);
    expect(walked.descriptor.mediaType).toBe("application/vnd.oci.image.layer.v1.tar+zstd");
    expect(
      readMountInfo().filter((m) => m.mountPoint.includes("berth-diff-") && !m.mountPoint.startsWith(dir)),
    ).toEqual([]);
  });

  it("refuses redirect_dir upperdirs with failed-precondition", async () => {
    const upper = join(dir, "upper");
    mkdirSync(join(upper, "moved"), { recursive: true });
    setXattr(join(upper, "moved"), "trusted.overlay.redirect", "/orig");
    const err = await diffOverlayUpper([], upper, sink().out).catch((e: unknown) => e);
    expect(isFailedPrecondition(err)).toBe(true);
  });
});
