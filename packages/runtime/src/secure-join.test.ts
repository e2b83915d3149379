import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isInvalidArgument } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { secureJoin } from "./secure-join.js";

describe("secureJoin", () => {
  let root: string;
  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), "berth-securejoin-"));
    mkdirSync(join(root, "etc"));
    writeFileSync(join(root, "etc", "passwd"), "");
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it("joins plain and missing paths literally", () => {
    expect(secureJoin(root, "/etc/passwd")).toBe(`${root}/etc/passwd`);
    expect(secureJoin(root, "/a/b/c")).toBe(`${root}/a/b/c`);
    expect(secureJoin(root, "/")).toBe(root);
    expect(secureJoin(root, "//etc/./x/")).toBe(`${root}/etc/x`);
  });

  it("never climbs above the root with ..", () => {
    expect(secureJoin(root, "/../../etc")).toBe(`${root}/etc`);
    expect(secureJoin(root, "/etc/../../../x")).toBe(`${root}/x`);
  });

  it("resolves absolute symlinks inside the root", () => {
    symlinkSync("/etc", join(root, "link"));
    expect(secureJoin(root, "/link/passwd")).toBe(`${root}/etc/passwd`);
    symlinkSync("/", join(root, "toroot"));
    expect(secureJoin(root, "/toroot/toroot/etc")).toBe(`${root}/etc`);
  });

  it("resolves relative symlinks that try to escape", () => {
    symlinkSync("../../../../../../../tmp", join(root, "etc", "up"));
    expect(secureJoin(root, "/etc/up/x")).toBe(`${root}/tmp/x`);
    symlinkSync("passwd", join(root, "etc", "pw"));
    expect(secureJoin(root, "/etc/pw")).toBe(`${root}/etc/passwd`);
  });

  it("fails on a symlink loop with invalid-argument", () => {
    symlinkSync("/b", join(root, "a"));
    symlinkSync("/a", join(root, "b"));
    let err: unknown;
    try {
      secureJoin(root, "/a/x");
    } catch (e) {
      err = e;
    }
    expect(isInvalidArgument(err)).toBe(true);
  });
});
