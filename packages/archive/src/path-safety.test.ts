import { mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isInvalidArgument } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cleanLayerPath, resolveInRoot } from "./path-safety.js";

describe("cleanLayerPath", () => {
  it("drops leading /, ./ and empty components", () => {
    expect(cleanLayerPath("/etc//passwd")).toEqual(["etc", "passwd"]);
    expect(cleanLayerPath("./usr/./bin/")).toEqual(["usr", "bin"]);
    expect(cleanLayerPath("./")).toEqual([]);
    expect(cleanLayerPath("/")).toEqual([]);
  });

  it("rejects .. components and NUL bytes", () => {
    for (const name of ["..", "../x", "a/../b", "/../etc", "a/..", "a\0b"]) {
      let err: unknown;
      try {
        cleanLayerPath(name);
      } catch (e) {
        err = e;
      }
      expect(isInvalidArgument(err), name).toBe(true);
    }
  });
});

describe("resolveInRoot", () => {
  let root: string;
  beforeEach(() => {
    root = realpathSync(mkdtempSync(join(tmpdir(), "berth-resolve-")));
    mkdirSync(join(root, "usr/lib"), { recursive: true });
    symlinkSync("usr/lib", join(root, "lib"));
    symlinkSync("/usr", join(root, "abs"));
    symlinkSync("../../../..", join(root, "up"));
    symlinkSync("loop2", join(root, "loop1"));
    symlinkSync("loop1", join(root, "loop2"));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("follows symlinks inside the root and clamps at it", () => {
    expect(resolveInRoot(root, "lib/x")).toBe(join(root, "usr/lib/x"));
    expect(resolveInRoot(root, "/abs/lib")).toBe(join(root, "usr/lib"));
    expect(resolveInRoot(root, "up/etc/passwd")).toBe(join(root, "etc/passwd"));
    expect(resolveInRoot(root, "../../x/../y")).toBe(join(root, "y"));
    expect(resolveInRoot(root, "lib", { followFinal: false })).toBe(join(root, "lib"));
  });

  it("rejects symlink loops", () => {
    expect(() => resolveInRoot(root, "loop1/x")).toThrow(/too many symlinks/);
  });
});
