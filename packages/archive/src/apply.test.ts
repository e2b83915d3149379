import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { isCanceled, isDataLoss, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { getXattr, setXattr } from "@berth/sys";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyLayer } from "./apply.js";
import { encodeTar, type TarWriteEntry } from "./tar-writer.js";

let dir: string;
let root: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-apply-"));
  root = join(dir, "root");
  mkdirSync(root);
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function apply(entries: TarWriteEntry[] | Buffer, options: Parameters<typeof applyLayer>[2] = {}) {
  const data = Buffer.isBuffer(entries) ? entries : encodeTar(entries);
  return applyLayer(root, Readable.from([data]), options);
}

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

function ls(rel = ""): string[] {
  const out: string[] = [];
  const walk = (abs: string, prefix: string) => {
    for (const name of readdirSync(abs).sort()) {
      const path = prefix === "" ? name : `${prefix}/${name}`;
      out.push(path);
      if (lstatSync(join(abs, name)).isDirectory()) walk(join(abs, name), path);
    }
  };
  walk(join(root, rel), "");
  return out;
}

describe("applyLayer", () => {
  it("writes files, directories, symlinks, hard links and fifos with modes and times, and reports the diffID", async () => {
    const data = encodeTar([
      { name: "etc/", type: "directory", mode: 0o750, mtime: 1000 },
      { name: "etc/conf", type: "file", content: "conf\n", mode: 0o640, mtime: 2000 },
      { name: "./bin/", type: "directory", mtime: 1000 },
      { name: "bin/tool", type: "file", content: "#!/bin/sh\n", mode: 0o4755 },
      { name: "bin/sh", type: "symlink", linkname: "tool", mtime: 3000 },
      { name: "bin/hard", type: "link", linkname: "bin/tool" },
      { name: "/abs/fifo", type: "fifo", mode: 0o620 },
      { name: "empty", type: "file" },
    ]);
    const result = await apply(Buffer.concat([data, Buffer.alloc(2048)]));
    expect(result).toEqual({
      diffId: sha256(Buffer.concat([data, Buffer.alloc(2048)])),
      size: data.length + 2048,
      entries: 8,
    });
    expect(ls()).toEqual([
      "abs",
      "abs/fifo",
      "bin",
      "bin/hard",
      "bin/sh",
      "bin/tool",
      "empty",
      "etc",
      "etc/conf",
    ]);
    expect(lstatSync(join(root, "etc")).mode & 0o7777).toBe(0o750);
    // Directory times are set after the children were written.
    expect(lstatSync(join(root, "etc")).mtimeMs).toBe(1000_000);
    expect(lstatSync(join(root, "etc/conf")).mtimeMs).toBe(2000_000);
    expect(readFileSync(join(root, "etc/conf"), "utf8")).toBe("conf\n");
    expect(lstatSync(join(root, "bin/tool")).mode & 0o7777).toBe(0o4755);
    expect(readlinkSync(join(root, "bin/sh"))).toBe("tool");
    expect(lstatSync(join(root, "bin/sh")).mtimeMs).toBe(3000_000);
    expect(lstatSync(join(root, "bin/hard")).ino).toBe(lstatSync(join(root, "bin/tool")).ino);
    expect(lstatSync(join(root, "abs/fifo")).isFIFO()).toBe(true);
    expect(lstatSync(join(root, "abs/fifo")).mode & 0o7777).toBe(0o620);
    expect(lstatSync(join(root, "empty")).size).toBe(0);
  });

  it("replaces what is at a path, merging directory onto directory", async () => {
    await apply([
      { name: "a", type: "directory" },
      { name: "a/old", type: "file" },
      { name: "b", type: "file", content: "b\n" },
      { name: "c", type: "directory" },
      { name: "c/child", type: "file" },
      { name: "d", type: "symlink", linkname: "a" },
      { name: "m", type: "directory", mode: 0o755 },
      { name: "m/lower", type: "file" },
    ]);
    await apply([
      { name: "a", type: "file", content: "now a file\n" },
      { name: "b", type: "directory" },
      { name: "c", type: "symlink", linkname: "/b" },
      { name: "d", type: "directory", mode: 0o700 },
      { name: "m", type: "directory", mode: 0o711 },
      { name: "m/upper", type: "file" },
    ]);
    expect(readFileSync(join(root, "a"), "utf8")).toBe("now a file\n");
    expect(lstatSync(join(root, "b")).isDirectory()).toBe(true);
    expect(readlinkSync(join(root, "c"))).toBe("/b");
    expect(lstatSync(join(root, "d")).isDirectory()).toBe(true);
    expect(ls("m")).toEqual(["lower", "upper"]);
    expect(lstatSync(join(root, "m")).mode & 0o7777).toBe(0o711);
  });

  it("applies OCI whiteouts and opaque directories to lower layers only, in any order", async () => {
    await apply([
      { name: "app", type: "directory" },
      { name: "app/gone.txt", type: "file" },
      { name: "app/kept.txt", type: "file" },
      { name: "app/gonedir", type: "directory" },
      { name: "app/gonedir/x", type: "file" },
      { name: "opq", type: "directory" },
      { name: "opq/lower.txt", type: "file" },
      { name: "opq/sub", type: "directory" },
      { name: "opq/sub/lower.txt", type: "file" },
      { name: "late", type: "directory" },
      { name: "late/lower.txt", type: "file" },
    ]);
    await apply([
      { name: "app/.wh.gone.txt", type: "file" },
      { name: "app/.wh.gonedir", type: "file" },
      { name: "app/.wh.never-existed", type: "file" },
      { name: "nodir/.wh.x", type: "file" },
      { name: "opq/.wh..wh..opq", type: "file" },
      { name: "opq/new.txt", type: "file" },
      // The opaque marker after this layer's own entries: they stay, lower ones go, also below a
      // subdirectory this layer merged into.
      { name: "late/sub", type: "directory" },
      { name: "late/sub/new.txt", type: "file" },
      { name: "late/.wh..wh..opq", type: "file" },
      // A whiteout after this layer's own file of that name does not delete it.
      { name: "app/fresh.txt", type: "file", content: "fresh\n" },
      { name: "app/.wh.fresh.txt", type: "file" },
      // Reserved AUFS names are ignored.
      { name: ".wh..wh.plnk", type: "directory" },
    ]);
    expect(ls()).toEqual([
      "app",
      "app/fresh.txt",
      "app/kept.txt",
      "late",
      "late/sub",
      "late/sub/new.txt",
      "opq",
      "opq/new.txt",
    ]);
  });

  it("decompresses gzip and (auto-detected) zstd, and checks the expected diffID", async () => {
    const tar = encodeTar([{ name: "f", type: "file", content: "compressed\n" }]);
    const diffId = sha256(tar);
    expect((await apply(gzipSync(tar), { compression: "gzip", expectedDiffId: diffId })).diffId).toBe(diffId);
    expect((await apply(gzipSync(tar))).size).toBe(tar.length);
    if (requiresCommand("zstd", "zstd layer apply")) {
      const zst = spawnSync("zstd", ["-q", "-c"], { input: tar }).stdout;
      rmSync(join(root, "f"));
      expect((await apply(zst, { expectedDiffId: diffId })).entries).toBe(1);
      expect(readFileSync(join(root, "f"), "utf8")).toBe("compressed\n");
    }
    const err = await apply(tar, { expectedDiffId: `sha256:${"0".repeat(64)}` }).catch((e: unknown) => e);
    expect(isDataLoss(err), String(err)).toBe(true);
    const corrupt = gzipSync(tar);
    corrupt[corrupt.length - 5] = (corrupt[corrupt.length - 5] as number) ^ 0xff;
    const gzErr = await apply(corrupt).catch((e: unknown) => e);
    expect(isDataLoss(gzErr) || isInvalidArgument(gzErr), String(gzErr)).toBe(true);
  });

  it("stops with canceled when the signal fires, and not-found for a missing root", async () => {
    const controller = new AbortController();
    async function* slow() {
      yield encodeTar([{ name: "a", type: "file", content: "a" }]).subarray(0, 1024);
      controller.abort(new Error("stop"));
      await new Promise((resolve) => setTimeout(resolve, 10));
      yield Buffer.alloc(1024);
    }
    const err = await applyLayer(root, Readable.from(slow()), { signal: controller.signal }).catch(
      (e: unknown) => e,
    );
    expect(isCanceled(err), String(err)).toBe(true);
    const missing = await applyLayer(join(dir, "nope"), Readable.from([Buffer.alloc(1024)])).catch(
      (e: unknown) => e,
    );
    expect(isNotFound(missing), String(missing)).toBe(true);
  });

  it("keeps user xattrs and the process's owner with noSameOwner", async () => {
    await apply(
      [
        { name: "x", type: "file", uid: 4242, gid: 4242, xattrs: { "user.note": Buffer.from([0, 1, 255]) } },
        { name: "s", type: "symlink", linkname: "x", xattrs: { "user.note": "ignored on symlinks" } },
      ],
      { noSameOwner: true },
    );
    expect(lstatSync(join(root, "x")).uid).toBe(process.getuid?.());
    expect(getXattr(join(root, "x"), "user.note")?.equals(Buffer.from([0, 1, 255]))).toBe(true);
  });
});

describe.runIf(requiresRoot("layer apply with owners, devices and overlay whiteouts"))(
  "applyLayer as root",
  () => {
    it("sets owners, security.capability, and device nodes", async () => {
      const cap = Buffer.from("0100000200200000000000000000000000000000", "hex");
      await apply([
        { name: "owned", type: "file", uid: 1000, gid: 2000, mode: 0o2755, content: "x" },
        { name: "ping", type: "file", xattrs: { "security.capability": cap }, mode: 0o755, uid: 5, gid: 5 },
        { name: "dev", type: "directory", uid: 3, gid: 4 },
        { name: "dev/null", type: "char-device", devmajor: 1, devminor: 3, mode: 0o666 },
        { name: "dev/loop", type: "block-device", devmajor: 7, devminor: 300, mode: 0o660 },
        { name: "lnk", type: "symlink", linkname: "owned", uid: 6, gid: 7 },
      ]);
      const owned = lstatSync(join(root, "owned"));
      expect([owned.uid, owned.gid, owned.mode & 0o7777]).toEqual([1000, 2000, 0o2755]);
      // chown would have cleared the capability had it been set first.
      expect(getXattr(join(root, "ping"), "security.capability")?.equals(cap)).toBe(true);
      expect(lstatSync(join(root, "dev")).uid).toBe(3);
      const nul = lstatSync(join(root, "dev/null"));
      expect(nul.isCharacterDevice() && nul.rdev === Number((1n << 8n) | 3n)).toBe(true);
      expect(nul.mode & 0o7777).toBe(0o666);
      expect(lstatSync(join(root, "dev/loop")).isBlockDevice()).toBe(true);
      expect([lstatSync(join(root, "lnk")).uid, lstatSync(join(root, "lnk")).gid]).toEqual([6, 7]);
    });

    it("writes overlay whiteouts and opaque xattrs into an upperdir", async () => {
      await apply(
        [
          { name: "etc", type: "directory" },
          { name: "etc/.wh.passwd", type: "file", uid: 0, gid: 0 },
          { name: "opt", type: "directory" },
          { name: "opt/.wh..wh..opq", type: "file" },
          { name: "opt/new", type: "file" },
          { name: ".wh.var", type: "file" },
          { name: "var", type: "directory" },
          { name: "keep", type: "file" },
          { name: ".wh.keep", type: "file" },
        ],
        { whiteouts: "overlay" },
      );
      const wh = lstatSync(join(root, "etc/passwd"));
      expect(wh.isCharacterDevice() && wh.rdev === 0).toBe(true);
      expect(getXattr(join(root, "opt"), "trusted.overlay.opaque")?.toString()).toBe("y");
      expect(ls("opt")).toEqual(["new"]);
      // A directory replacing this layer's whiteout hides the lower one entirely.
      expect(getXattr(join(root, "var"), "trusted.overlay.opaque")?.toString()).toBe("y");
      expect(lstatSync(join(root, "keep")).isFile()).toBe(true);
    });

    it("drops trusted.overlay xattrs of the archive in oci mode too", async () => {
      writeFileSync(join(root, "pre"), "");
      setXattr(join(root, "pre"), "user.x", "1");
      await apply([
        { name: "d", type: "directory", xattrs: { "trusted.overlay.opaque": "y", "trusted.other": "1" } },
      ]);
      expect(getXattr(join(root, "d"), "trusted.overlay.opaque")).toBeUndefined();
      expect(getXattr(join(root, "d"), "trusted.other")?.toString()).toBe("1");
    });
  },
);
