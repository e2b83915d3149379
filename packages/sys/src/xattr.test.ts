import { lstatSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { setTimesNs } from "./xattr.js";

describe("setTimesNs", () => {
  let dir = "";
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-times-"));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("sets access and modification times to the nanosecond, on the link itself", () => {
    const file = join(dir, "f");
    writeFileSync(file, "x");
    const link = join(dir, "l");
    symlinkSync("f", link);
    setTimesNs(file, 1_700_000_000_123_456_789n, 1_600_000_000_987_654_321n);
    setTimesNs(link, 1_500_000_000_000_000_001n, 1_400_000_000_000_000_007n);
    const st = lstatSync(file, { bigint: true });
    expect([st.atimeNs, st.mtimeNs]).toEqual([1_700_000_000_123_456_789n, 1_600_000_000_987_654_321n]);
    const lst = lstatSync(link, { bigint: true });
    expect([lst.atimeNs, lst.mtimeNs]).toEqual([1_500_000_000_000_000_001n, 1_400_000_000_000_000_007n]);
    // Before the epoch: the nanoseconds stay positive, the seconds go down.
    setTimesNs(file, -1n, -1_500_000_000n);
    const old = lstatSync(file, { bigint: true });
    expect([old.atimeNs, old.mtimeNs]).toEqual([-1n, -1_500_000_000n]);
  });

  it("names the path when it fails", () => {
    expect(() => setTimesNs(join(dir, "missing"), 0n, 0n)).toThrow(/utimensat .*missing: ENOENT/);
  });
});
