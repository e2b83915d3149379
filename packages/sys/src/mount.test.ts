import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  getXattr,
  listXattrs,
  makedev,
  mknod,
  mountAll,
  parseMountOptions,
  readMountInfo,
  removeXattr,
  setXattr,
  unmountRecursive,
} from "./index.js";

describe("mount options", () => {
  it("splits flags, propagation and data like fstab", () => {
    const parsed = parseMountOptions(["ro", "nosuid", "rbind", "rprivate", "lowerdir=/a:/b", "index=off"]);
    expect(parsed.flags).toBe(1 | 2 | 4096 | 16384);
    expect(parsed.propagation).toBe((1 << 18) | 16384);
    expect(parsed.data).toEqual(["lowerdir=/a:/b", "index=off"]);
    expect(parseMountOptions(["ro", "rw"]).flags).toBe(0);
  });

  it("builds device numbers like glibc", () => {
    expect(makedev(1, 3)).toBe(0x103n);
    expect(makedev(259, 65536)).toBe(0x10010300n);
    expect(makedev(4096, 0)).toBe(0x100000000000n);
  });
});

describe.runIf(requiresRoot("mount and mknod syscalls"))("mounts, xattrs and device nodes", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-sys-mount-"));
  });
  afterEach(() => {
    unmountRecursive(dir, { detach: true });
    rmSync(dir, { recursive: true, force: true });
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(dir))).toEqual([]);
  });

  it("mounts tmpfs read-only and a bind mount, and unmounts recursively", () => {
    const target = join(dir, "t");
    mountAll([{ type: "tmpfs", source: "tmpfs", options: ["nosuid", "size=1m"] }], target);
    writeFileSync(join(target, "f"), "x");
    mkdirSync(join(target, "sub"));
    mountAll([{ type: "bind", source: target, options: ["rbind", "ro"] }], join(dir, "ro"));
    expect(() => writeFileSync(join(dir, "ro", "g"), "y")).toThrow(/EROFS/);
    expect(readFileSync(join(dir, "ro", "f"), "utf8")).toBe("x");
    expect(readMountInfo().filter((m) => m.mountPoint.startsWith(dir))).toHaveLength(2);
  });

  it("mounts overlay with more lower layers than fit in one mount(2) option page", () => {
    const lowers: string[] = [];
    for (let i = 0; i < 128; i++) {
      const lower = join(dir, `layer-with-a-rather-long-directory-name-${String(i).padStart(3, "0")}`);
      mkdirSync(lower);
      writeFileSync(join(lower, `file-${i}`), String(i));
      lowers.push(lower);
    }
    for (const d of ["upper", "work", "merged"]) mkdirSync(join(dir, d));
    const options = [
      `lowerdir=${lowers.reverse().join(":")}`,
      `upperdir=${join(dir, "upper")}`,
      `workdir=${join(dir, "work")}`,
      "index=off",
    ];
    expect(options.join(",").length).toBeGreaterThan(4096);
    mountAll([{ type: "overlay", source: "overlay", options }], join(dir, "merged"));
    expect(readdirSync(join(dir, "merged"))).toHaveLength(128);
    writeFileSync(join(dir, "merged", "new"), "n");
    expect(readFileSync(join(dir, "upper", "new"), "utf8")).toBe("n");
  });

  it("sets, lists and removes xattrs and makes whiteout device nodes", () => {
    const file = join(dir, "f");
    writeFileSync(file, "");
    setXattr(file, "trusted.overlay.opaque", "y");
    setXattr(file, "user.berth", Buffer.from([0, 1, 2]));
    expect(listXattrs(file).sort()).toEqual(["trusted.overlay.opaque", "user.berth"]);
    expect(getXattr(file, "user.berth")).toEqual(Buffer.from([0, 1, 2]));
    removeXattr(file, "user.berth");
    expect(getXattr(file, "user.berth")).toBeUndefined();
    const whiteout = join(dir, "wh");
    mknod(whiteout, 0o020000 | 0o000, 0n);
    const st = lstatSync(whiteout);
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.rdev).toBe(0);
  });
});
