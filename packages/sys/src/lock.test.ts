import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fsyncDirSync, lockFile, SystemError, tryLockFile } from "./index.js";

describe("file locks", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-sys-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("excludes a second holder in the same process until released", () => {
    const path = join(dir, "lock");
    const first = tryLockFile(path);
    expect(first).toBeDefined();
    expect(tryLockFile(path)).toBeUndefined();
    first?.release();
    const again = tryLockFile(path);
    expect(again).toBeDefined();
    again?.release();
  });

  it("excludes another process", () => {
    const path = join(dir, "lock");
    const lock = tryLockFile(path);
    // flock(1) from util-linux, asked not to wait: exit 1 means the lock was held.
    const child = spawnSync("flock", ["-n", path, "true"]);
    expect(child.status).toBe(1);
    lock?.release();
    expect(spawnSync("flock", ["-n", path, "true"]).status).toBe(0);
  });

  it("waits without blocking the event loop", async () => {
    const path = join(dir, "lock");
    const held = tryLockFile(path);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const waiting = lockFile(path);
    setTimeout(() => held?.release(), 50);
    const lock = await waiting;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    lock.release();
  });

  it("shared locks coexist", () => {
    const path = join(dir, "lock");
    const a = tryLockFile(path, "shared");
    const b = tryLockFile(path, "shared");
    expect(a && b).toBeTruthy();
    expect(tryLockFile(path, "exclusive")).toBeUndefined();
    a?.release();
    b?.release();
  });

  it("fsyncs directories and reports errors as SystemError-like codes", () => {
    fsyncDirSync(dir);
    expect(() => fsyncDirSync(join(dir, "missing"))).toThrow(/ENOENT/);
    const err = new SystemError({ syscall: "mount", errno: 22, path: "/x", hint: "lowerdir too long" });
    expect(err.message).toBe("mount /x: EINVAL (lowerdir too long)");
    expect(err.code).toBe("invalid-argument");
  });
});
