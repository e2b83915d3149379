import { dirname } from "node:path";
import { invalidArgument, unavailable } from "@berth/errdefs";
import type { LinuxResources, LinuxThrottleDevice } from "../spec.js";
import { checkPageSize, deviceLine, deviceRuleLine } from "./convert.js";
import { cgroupFileExists, errnoOf, readCgroupFile, readCgroupNumber, writeCgroupFile } from "./fs.js";

/**
 * @internal cpuset.cpus and cpuset.mems start empty in a new v1 cpuset cgroup, and the kernel
 * refuses tasks there (ENOSPC). Like runc's ensureParent, fill every empty level from `top` (the
 * hierarchy mount) down to `path` with its parent's values before a pid is written.
 */
export function ensureCpusetParents(top: string, path: string): void {
  const chain: string[] = [];
  for (let p = path; p.length > top.length && p.startsWith(top); p = dirname(p)) chain.unshift(p);
  let parent = top;
  for (const dir of chain) {
    for (const file of ["cpuset.cpus", "cpuset.mems"]) {
      if ((readCgroupFile(dir, file) ?? "") === "") {
        writeCgroupFile(dir, file, readCgroupFile(parent, file) ?? "");
      }
    }
    parent = dir;
  }
}

function setCpuset(path: string, r: LinuxResources): void {
  if (r.cpu?.cpus) writeCgroupFile(path, "cpuset.cpus", r.cpu.cpus);
  if (r.cpu?.mems) writeCgroupFile(path, "cpuset.mems", r.cpu.mems);
}

function setDevices(path: string, r: LinuxResources): void {
  for (const rule of r.devices ?? []) {
    writeCgroupFile(path, rule.allow ? "devices.allow" : "devices.deny", deviceRuleLine(rule));
  }
}

function setMemoryLimit(path: string, limit: number): void {
  try {
    writeCgroupFile(path, "memory.limit_in_bytes", String(limit));
  } catch (err) {
    // EBUSY: the cgroup already uses more than the new limit and the kernel could not reclaim it.
    if (errnoOf(err) !== "EBUSY") throw err;
    const usage = readCgroupFile(path, "memory.usage_in_bytes");
    const peak = readCgroupFile(path, "memory.max_usage_in_bytes");
    throw unavailable(
      `unable to set memory limit to ${limit} in ${path}: current usage ${usage}, peak ${peak}`,
      { cause: err },
    );
  }
}

function setMemory(path: string, r: LinuxResources): void {
  const m = r.memory;
  if (!m) return;
  const limit = m.limit ?? 0;
  let swap = m.swap ?? 0;
  // Unlimited memory with swap unset means both unlimited (when swap accounting exists).
  if (limit === -1 && swap === 0 && cgroupFileExists(path, "memory.memsw.limit_in_bytes")) swap = -1;
  // The kernel requires memory.limit <= memsw.limit at every step, so the order of the two writes
  // depends on whether the limits go up or down.
  let swapFirst = false;
  if (limit !== 0 && swap !== 0) {
    const current = readCgroupNumber(path, "memory.limit_in_bytes") ?? 0;
    swapFirst = swap === -1 || current < swap;
  }
  const writeSwap = () => {
    if (swap !== 0) writeCgroupFile(path, "memory.memsw.limit_in_bytes", String(swap));
  };
  if (swapFirst) writeSwap();
  if (limit !== 0) setMemoryLimit(path, limit);
  if (!swapFirst) writeSwap();
  if (m.reservation) writeCgroupFile(path, "memory.soft_limit_in_bytes", String(m.reservation));
  // memory.kernel is deprecated by the runtime spec and the kernel (5.16+ rejects kmem limits): ignored.
  if (m.kernelTCP) writeCgroupFile(path, "memory.kmem.tcp.limit_in_bytes", String(m.kernelTCP));
  if (m.disableOOMKiller) writeCgroupFile(path, "memory.oom_control", "1");
  if (m.swappiness !== undefined && m.swappiness >= 0 && m.swappiness <= 100) {
    writeCgroupFile(path, "memory.swappiness", String(m.swappiness));
  }
}

function setCpu(path: string, r: LinuxResources): void {
  const c = r.cpu;
  if (!c) return;
  if (c.shares) {
    writeCgroupFile(path, "cpu.shares", String(c.shares));
    // The kernel clamps shares silently (2..262144); report rather than run with another value.
    const actual = readCgroupNumber(path, "cpu.shares");
    if (actual !== c.shares) {
      throw invalidArgument(`cpu.shares: wrote ${c.shares} to ${path} but the kernel kept ${actual}`);
    }
  }
  const quota = c.quota ?? 0;
  let pendingPeriod: string | undefined;
  if (c.period) {
    try {
      writeCgroupFile(path, "cpu.cfs_period_us", String(c.period));
    } catch (err) {
      // A period below the current one can be refused (EINVAL) as the old quota over the new period
      // exceeds the parent's; retry after the quota is written.
      if (errnoOf(err) !== "EINVAL" || quota === 0) throw err;
      pendingPeriod = String(c.period);
    }
  }
  if (quota !== 0) {
    writeCgroupFile(path, "cpu.cfs_quota_us", String(quota));
    if (pendingPeriod) writeCgroupFile(path, "cpu.cfs_period_us", pendingPeriod);
  }
  if (c.burst !== undefined) writeCgroupFile(path, "cpu.cfs_burst_us", String(c.burst));
  if (c.realtimePeriod) writeCgroupFile(path, "cpu.rt_period_us", String(c.realtimePeriod));
  if (c.realtimeRuntime) writeCgroupFile(path, "cpu.rt_runtime_us", String(c.realtimeRuntime));
  if (c.idle !== undefined && c.idle !== 0) writeCgroupFile(path, "cpu.idle", String(c.idle));
}

function setPids(path: string, r: LinuxResources): void {
  const limit = r.pids?.limit ?? 0;
  if (limit !== 0) writeCgroupFile(path, "pids.max", limit > 0 ? String(limit) : "max");
}

function setBlkio(path: string, r: LinuxResources): void {
  const b = r.blockIO;
  if (!b) return;
  // With the BFQ scheduler the weight files are blkio.bfq.*; CFQ's blkio.weight otherwise.
  const bfq = cgroupFileExists(path, "blkio.bfq.weight");
  const weightFile = bfq ? "blkio.bfq.weight" : "blkio.weight";
  const weightDeviceFile = bfq ? "blkio.bfq.weight_device" : "blkio.weight_device";
  if (b.weight) writeCgroupFile(path, weightFile, String(b.weight));
  if (b.leafWeight) writeCgroupFile(path, "blkio.leaf_weight", String(b.leafWeight));
  for (const d of b.weightDevice ?? []) {
    if (d.weight) writeCgroupFile(path, weightDeviceFile, deviceLine(d, String(d.weight)));
    if (d.leafWeight) writeCgroupFile(path, "blkio.leaf_weight_device", deviceLine(d, String(d.leafWeight)));
  }
  const throttle = (list: readonly LinuxThrottleDevice[] | undefined, file: string) => {
    for (const d of list ?? []) writeCgroupFile(path, file, deviceLine(d, String(d.rate)));
  };
  throttle(b.throttleReadBpsDevice, "blkio.throttle.read_bps_device");
  throttle(b.throttleWriteBpsDevice, "blkio.throttle.write_bps_device");
  throttle(b.throttleReadIOPSDevice, "blkio.throttle.read_iops_device");
  throttle(b.throttleWriteIOPSDevice, "blkio.throttle.write_iops_device");
}

function setHugetlb(path: string, r: LinuxResources): void {
  for (const h of r.hugepageLimits ?? []) {
    writeCgroupFile(path, `hugetlb.${checkPageSize(h.pageSize)}.limit_in_bytes`, String(h.limit));
  }
}

function setNetCls(path: string, r: LinuxResources): void {
  if (r.network?.classID) writeCgroupFile(path, "net_cls.classid", String(r.network.classID));
}

function setNetPrio(path: string, r: LinuxResources): void {
  for (const p of r.network?.priorities ?? []) {
    writeCgroupFile(path, "net_prio.ifpriomap", `${p.name} ${p.priority}`);
  }
}

/**
 * @internal The v1 setters, keyed by controller, and a predicate telling whether `resources` asks
 * anything of that controller (so a missing hierarchy is an error only when it is needed).
 */
export const v1Setters: ReadonlyArray<{
  readonly controller: string;
  readonly needed: (r: LinuxResources) => boolean;
  readonly set: (path: string, r: LinuxResources) => void;
}> = [
  { controller: "cpuset", needed: (r) => Boolean(r.cpu?.cpus || r.cpu?.mems), set: setCpuset },
  { controller: "devices", needed: (r) => (r.devices?.length ?? 0) > 0, set: setDevices },
  {
    controller: "memory",
    needed: (r) => {
      const m = r.memory;
      return Boolean(m && (m.limit || m.swap || m.reservation || m.kernelTCP || m.disableOOMKiller));
    },
    set: setMemory,
  },
  {
    controller: "cpu",
    needed: (r) => {
      const c = r.cpu;
      return Boolean(
        c && (c.shares || c.quota || c.period || c.realtimePeriod || c.realtimeRuntime || c.idle),
      );
    },
    set: setCpu,
  },
  { controller: "pids", needed: (r) => Boolean(r.pids?.limit), set: setPids },
  {
    controller: "blkio",
    needed: (r) => {
      const b = r.blockIO;
      if (!b) return false;
      return Boolean(
        b.weight ||
          b.leafWeight ||
          b.weightDevice?.length ||
          b.throttleReadBpsDevice?.length ||
          b.throttleWriteBpsDevice?.length ||
          b.throttleReadIOPSDevice?.length ||
          b.throttleWriteIOPSDevice?.length,
      );
    },
    set: setBlkio,
  },
  { controller: "hugetlb", needed: (r) => (r.hugepageLimits?.length ?? 0) > 0, set: setHugetlb },
  { controller: "net_cls", needed: (r) => Boolean(r.network?.classID), set: setNetCls },
  { controller: "net_prio", needed: (r) => (r.network?.priorities?.length ?? 0) > 0, set: setNetPrio },
];
