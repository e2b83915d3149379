import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import {
  convertBlkioWeightToIoWeight,
  convertCpuSharesToWeight,
  convertMemorySwapToV2,
  deviceRuleLine,
  planV2Writes,
} from "./convert.js";
import { type CgroupMount, cleanCgroupPath, detectMode } from "./mounts.js";

describe("v1 → v2 conversions (runc's formulas)", () => {
  it("maps cpu shares onto cpu.weight", () => {
    expect(convertCpuSharesToWeight(0)).toBe(0);
    expect(convertCpuSharesToWeight(2)).toBe(1);
    expect(convertCpuSharesToWeight(1024)).toBe(39);
    expect(convertCpuSharesToWeight(262144)).toBe(10000);
  });

  it("maps blkio weight onto io.weight", () => {
    expect(convertBlkioWeightToIoWeight(0)).toBe(0);
    expect(convertBlkioWeightToIoWeight(10)).toBe(1);
    expect(convertBlkioWeightToIoWeight(500)).toBe(4950);
    expect(convertBlkioWeightToIoWeight(1000)).toBe(10000);
  });

  it("turns memory+swap into swap alone, and refuses impossible pairs", () => {
    expect(convertMemorySwapToV2(0, -1)).toBe(-1);
    expect(convertMemorySwapToV2(-1, 100)).toBe(-1);
    expect(convertMemorySwapToV2(0, 100)).toBe(0);
    expect(convertMemorySwapToV2(300, 100)).toBe(200);
    expect(convertMemorySwapToV2(100, 100)).toBe(0);
    expect(() => convertMemorySwapToV2(300, 0)).toThrow(/needs a memory limit/);
    let caught: unknown;
    try {
      convertMemorySwapToV2(50, 100);
    } catch (err) {
      caught = err;
    }
    expect(isInvalidArgument(caught)).toBe(true);
  });
});

describe("planV2Writes", () => {
  it("writes memory, cpu, cpuset, pids, io, hugetlb and unified in runc's order", () => {
    const writes = planV2Writes({
      memory: { limit: 100 << 20, swap: 300 << 20, reservation: 50 << 20 },
      cpu: { shares: 1024, quota: 50000, period: 100000, cpus: "0-1", mems: "0" },
      pids: { limit: 64 },
      blockIO: { weight: 500, throttleReadBpsDevice: [{ major: 8, minor: 0, rate: 1048576 }] },
      hugepageLimits: [{ pageSize: "2MB", limit: 4 << 20 }],
      unified: { "memory.high": "90000000" },
    });
    expect(writes.map((w) => [w.file, w.value])).toEqual([
      ["memory.swap.max", String(200 << 20)],
      ["memory.max", String(100 << 20)],
      ["memory.low", String(50 << 20)],
      ["cpu.weight", "39"],
      ["cpu.max", "50000 100000"],
      ["cpuset.cpus", "0-1"],
      ["cpuset.mems", "0"],
      ["pids.max", "64"],
      ["io.weight", "4950"],
      ["io.max", "8:0 rbps=1048576"],
      ["hugetlb.2MB.max", String(4 << 20)],
      ["memory.high", "90000000"],
    ]);
    expect(writes.find((w) => w.file === "memory.high")?.controller).toBe("memory");
  });

  it("spells unlimited as max and leaves unset values alone", () => {
    const writes = planV2Writes({ memory: { limit: -1 }, cpu: { quota: -1 }, pids: { limit: -1 } });
    expect(writes.map((w) => [w.file, w.value])).toEqual([
      ["memory.swap.max", "max"],
      ["memory.max", "max"],
      ["cpu.max", "max"],
      ["pids.max", "max"],
    ]);
    expect(planV2Writes({ memory: { limit: 1 << 20, swap: 1 << 20 } }).map((w) => w.value)).toEqual([
      "0",
      String(1 << 20),
    ]);
    expect(planV2Writes({})).toEqual([]);
  });

  it("refuses path-like unified keys and bad hugepage sizes", () => {
    expect(() => planV2Writes({ unified: { "../cgroup.procs": "1" } })).toThrow(/not a cgroup file name/);
    expect(() => planV2Writes({ hugepageLimits: [{ pageSize: "2MB/../x", limit: 1 }] })).toThrow(/page size/);
  });
});

describe("device cgroup rules", () => {
  it("formats spec rules as devices.allow/deny lines", () => {
    expect(deviceRuleLine({ allow: false, access: "rwm" })).toBe("a *:* rwm");
    expect(deviceRuleLine({ allow: true, type: "c", major: 1, minor: 3, access: "rw" })).toBe("c 1:3 rw");
    expect(deviceRuleLine({ allow: true, type: "c", major: 136, minor: -1 })).toBe("c 136:* rwm");
    expect(() => deviceRuleLine({ allow: true, type: "x" })).toThrow(/invalid type/);
    expect(() => deviceRuleLine({ allow: true, access: "rwx" })).toThrow(/invalid access/);
  });
});

describe("cgroupsPath cleaning and layout detection", () => {
  it("cleans like runc's CleanPath: relative paths never climb out", () => {
    expect(cleanCgroupPath("")).toBe("");
    expect(cleanCgroupPath("/a/../b/")).toBe("/b");
    expect(cleanCgroupPath("/../../etc")).toBe("/etc");
    expect(cleanCgroupPath("../../x/y")).toBe("x/y");
    expect(cleanCgroupPath("a/./b")).toBe("a/b");
    expect(cleanCgroupPath("..")).toBe("");
  });

  const m = (mountPoint: string, fstype: "cgroup" | "cgroup2", controllers: string[] = []): CgroupMount => ({
    mountPoint,
    fstype,
    controllers,
    root: "/",
  });

  it("tells v1, hybrid and v2 apart", () => {
    expect(detectMode([m("/sys/fs/cgroup", "cgroup2")])).toBe("v2");
    expect(detectMode([m("/sys/fs/cgroup/memory", "cgroup", ["memory"])])).toBe("v1");
    expect(
      detectMode([m("/sys/fs/cgroup/memory", "cgroup", ["memory"]), m("/sys/fs/cgroup/unified", "cgroup2")]),
    ).toBe("hybrid");
    expect(detectMode([])).toBeUndefined();
  });
});
