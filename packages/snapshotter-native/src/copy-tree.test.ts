import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getXattr, listXattrs, makedev, mknod, setTimesNs, setXattr } from "@berth/sys";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copyTree } from "./copy-tree.js";

let dir: string;
let src: string;
let dst: string;
const servers: Server[] = [];

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "berth-copy-tree-"));
  src = join(dir, "src");
  dst = join(dir, "dst");
  mkdirSync(src);
});

afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise<void>((res) => s.close(() => res()));
  rmSync(dir, { recursive: true, force: true });
});

const S_IFMT = 0o170000;

function ns(path: string): { atime: bigint; mtime: bigint } {
  const st = lstatSync(path, { bigint: true });
  return { atime: st.atimeNs, mtime: st.mtimeNs };
}

/**
 * Times survive to the nanosecond. `before` are the source's times from before the copy, whose
 * reads may have moved its atime (relatime).
 */
function expectSameTimes(before: { atime: bigint; mtime: bigint }, b: string): void {
  expect(ns(b), `times of ${b}`).toEqual(before);
}

describe("copyTree", () => {
  it("copies files, directories, symlinks, modes and times", async () => {
    mkdirSync(join(src, "a/b"), { recursive: true });
    writeFileSync(join(src, "a/b/file"), "content");
    writeFileSync(join(src, "empty"), "");
    writeFileSync(join(src, "big"), Buffer.alloc(3 << 20, 7));
    writeFileSync(join(src, "exec"), "#!/bin/sh\n");
    chmodSync(join(src, "exec"), 0o4755);
    chmodSync(join(src, "a"), 0o1777);
    chmodSync(join(src, "a/b"), 0o500);
    symlinkSync("a/b/file", join(src, "rel-link"));
    symlinkSync("/nonexistent/target", join(src, "dangling"));
    utimesSync(
      join(src, "a/b/file"),
      new Date("2001-02-03T04:05:06.789Z"),
      new Date("2002-03-04T05:06:07.891Z"),
    );
    lutimesSync(join(src, "rel-link"), 1_000_000_000.123456, 1_100_000_000.654321);
    utimesSync(join(src, "a/b"), 1_200_000_000.5, 1_300_000_000.25);
    // Nanoseconds that a double of seconds cannot hold.
    setTimesNs(join(src, "big"), 1_500_000_000_123_456_789n, 1_600_000_000_987_654_321n);

    const timed = ["a/b/file", "rel-link", "a/b", "big", "."];
    const times = new Map(timed.map((p) => [p, ns(join(src, p))]));
    const stats = await copyTree(src, dst);
    expect(stats.files).toBe(4);
    expect(stats.skippedSockets).toBe(0);
    // Before anything reads the copies, which moves their atime.
    for (const p of timed) expectSameTimes(times.get(p) ?? { atime: 0n, mtime: 0n }, join(dst, p));

    expect(readFileSync(join(dst, "a/b/file"), "utf8")).toBe("content");
    expect(readFileSync(join(dst, "big")).equals(readFileSync(join(src, "big")))).toBe(true);
    expect(readFileSync(join(dst, "empty")).length).toBe(0);
    expect(readlinkSync(join(dst, "rel-link"))).toBe("a/b/file");
    expect(readlinkSync(join(dst, "dangling"))).toBe("/nonexistent/target");
    for (const p of ["exec", "a", "a/b", "a/b/file", "big"]) {
      expect(lstatSync(join(dst, p)).mode, p).toBe(lstatSync(join(src, p)).mode);
    }
    expect(lstatSync(join(dst, "exec")).mode & 0o7777).toBe(0o4755);
  });

  it("keeps hardlinks as links to one inode", async () => {
    mkdirSync(join(src, "d1"));
    mkdirSync(join(src, "d2"));
    writeFileSync(join(src, "d1/orig"), "shared");
    chmodSync(join(src, "d1/orig"), 0o600);
    for (const name of ["d1/l1", "d2/l2", "l3"]) linkSync(join(src, "d1/orig"), join(src, name));
    writeFileSync(join(src, "single"), "alone");

    const stats = await copyTree(src, dst);
    expect(stats.hardlinks).toBe(3);
    expect(stats.files).toBe(2);
    const ino = lstatSync(join(dst, "d1/orig")).ino;
    for (const name of ["d1/l1", "d2/l2", "l3"]) {
      const st = lstatSync(join(dst, name));
      expect(st.ino, name).toBe(ino);
      expect(st.nlink).toBe(4);
      expect(st.mode & 0o777).toBe(0o600);
    }
    expect(lstatSync(join(src, "d1/orig")).ino).not.toBe(ino);
    expect(readFileSync(join(dst, "l3"), "utf8")).toBe("shared");
  });

  it("skips sockets and refuses an existing destination", async () => {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((res) => server.listen(join(src, "sock"), () => res()));
    writeFileSync(join(src, "file"), "x");
    const stats = await copyTree(src, dst);
    expect(stats.skippedSockets).toBe(1);
    expect(readdirSync(dst)).toEqual(["file"]);
    await expect(copyTree(src, dst)).rejects.toMatchObject({ code: "EEXIST" });
  });

  it("copies user xattrs", async () => {
    writeFileSync(join(src, "file"), "x");
    setXattr(join(src, "file"), "user.berth.test", "value");
    setXattr(join(src, "file"), "user.berth.binary", Uint8Array.from([0, 1, 2, 255]));
    await copyTree(src, dst);
    expect(getXattr(join(dst, "file"), "user.berth.test")?.toString()).toBe("value");
    expect([...(getXattr(join(dst, "file"), "user.berth.binary") ?? [])]).toEqual([0, 1, 2, 255]);
  });
});

describe.runIf(requiresRoot("copyTree of owners, devices and privileged xattrs"))("copyTree as root", () => {
  it("keeps owners, including of symlinks, and setuid bits after chown", async () => {
    mkdirSync(join(src, "dir"));
    writeFileSync(join(src, "dir/suid"), "x");
    chownSync(join(src, "dir"), 100, 200);
    chownSync(join(src, "dir/suid"), 300, 400);
    chmodSync(join(src, "dir/suid"), 0o6755);
    symlinkSync("dir", join(src, "link"));
    const { lchownSync } = await import("node:fs");
    lchownSync(join(src, "link"), 500, 600);
    chownSync(src, 700, 800);
    await copyTree(src, dst);
    const owner = (p: string) => {
      const st = lstatSync(join(dst, p));
      return [st.uid, st.gid];
    };
    expect(owner("dir")).toEqual([100, 200]);
    expect(owner("dir/suid")).toEqual([300, 400]);
    expect(owner("link")).toEqual([500, 600]);
    expect(owner(".")).toEqual([700, 800]);
    expect(lstatSync(join(dst, "dir/suid")).mode & 0o7777).toBe(0o6755);
  });

  it("recreates device nodes and fifos", async () => {
    mknod(join(src, "null"), 0o020666, makedev(1, 3));
    mknod(join(src, "loop"), 0o060640, makedev(7, 200));
    mknod(join(src, "fifo"), 0o010620);
    mknod(join(src, "whiteout"), 0o020000, 0n);
    chownSync(join(src, "loop"), 0, 6);
    const names = ["null", "loop", "fifo", "whiteout"];
    const times = new Map(names.map((name) => [name, ns(join(src, name))]));
    await copyTree(src, dst);
    for (const name of names) {
      const a = lstatSync(join(src, name));
      const b = lstatSync(join(dst, name));
      expect(b.mode, name).toBe(a.mode);
      expect(b.rdev, name).toBe(a.rdev);
      expect([b.uid, b.gid], name).toEqual([a.uid, a.gid]);
      expectSameTimes(times.get(name) ?? { atime: 0n, mtime: 0n }, join(dst, name));
    }
    expect(lstatSync(join(dst, "null")).mode & S_IFMT).toBe(0o020000);
    expect(lstatSync(join(dst, "loop")).mode & S_IFMT).toBe(0o060000);
    expect(lstatSync(join(dst, "fifo")).isFIFO()).toBe(true);
  });

  it("copies trusted and security xattrs, file capabilities included, and ACLs", async () => {
    writeFileSync(join(src, "ping"), "binary");
    chownSync(join(src, "ping"), 0, 0);
    mkdirSync(join(src, "opaque"));
    setXattr(join(src, "opaque"), "trusted.overlay.opaque", "y");
    // VFS_CAP_REVISION_2 with CAP_NET_RAW (bit 13) permitted and effective: what
    // `setcap cap_net_raw+ep` writes. chown drops it, so it must be set after the owner.
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000001, 0);
    cap.writeUInt32LE(1 << 13, 4);
    setXattr(join(src, "ping"), "security.capability", cap);
    symlinkSync("ping", join(src, "link"));
    setXattr(join(src, "link"), "trusted.berth.on-link", "l");
    // A POSIX ACL in its xattr encoding (what `setfacl -m u:1234:rw` stores): version 2, then
    // (tag u16, perm u16, id u32) for USER_OBJ, USER 1234, GROUP_OBJ, MASK, OTHER.
    const entries: [number, number, number][] = [
      [0x01, 6, 0xffffffff],
      [0x02, 6, 1234],
      [0x04, 4, 0xffffffff],
      [0x10, 6, 0xffffffff],
      [0x20, 4, 0xffffffff],
    ];
    const acl = Buffer.alloc(4 + entries.length * 8);
    acl.writeUInt32LE(2, 0);
    entries.forEach(([tag, perm, id], i) => {
      acl.writeUInt16LE(tag, 4 + i * 8);
      acl.writeUInt16LE(perm, 6 + i * 8);
      acl.writeUInt32LE(id, 8 + i * 8);
    });
    setXattr(join(src, "ping"), "system.posix_acl_access", acl);

    await copyTree(src, dst);
    expect(getXattr(join(dst, "opaque"), "trusted.overlay.opaque")?.toString()).toBe("y");
    expect(getXattr(join(dst, "ping"), "security.capability")?.equals(cap)).toBe(true);
    expect(getXattr(join(dst, "link"), "trusted.berth.on-link")?.toString()).toBe("l");
    expect(listXattrs(join(dst, "ping"))).toContain("system.posix_acl_access");
    expect(getXattr(join(dst, "ping"), "system.posix_acl_access")?.equals(acl)).toBe(true);
    expect(lstatSync(join(dst, "ping")).mode & 0o777).toBe(lstatSync(join(src, "ping")).mode & 0o777);
  });
});
