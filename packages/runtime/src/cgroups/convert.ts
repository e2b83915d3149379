import { invalidArgument } from "@berth/errdefs";
import type { LinuxDeviceCgroup, LinuxResources, LinuxThrottleDevice } from "../spec.js";

/**
 * One file write into a cgroup directory: `controller` names what must be enabled for `file` to
 * exist (`""` for core cgroup files such as `cgroup.freeze`).
 */
export interface CgroupWrite {
  readonly controller: string;
  readonly file: string;
  readonly value: string;
}

/**
 * cpu.shares (v1, 2..262144) → cpu.weight (v2, 1..10000), runc's linear mapping: 2 → 1, 1024 → 39,
 * 262144 → 10000. 0 means unset and stays 0.
 */
export function convertCpuSharesToWeight(shares: number): number {
  if (shares === 0) return 0;
  return 1 + Math.floor(((shares - 2) * 9999) / 262142);
}

/** blkio.weight (v1, 10..1000) → io.weight (v2, 1..10000), runc's mapping. 0 stays 0 (unset). */
export function convertBlkioWeightToIoWeight(weight: number): number {
  if (weight === 0) return 0;
  return 1 + Math.floor(((weight - 10) * 9999) / 990);
}

/**
 * The OCI `memory.swap` is memory+swap (v1 memsw semantics); cgroup v2's memory.swap.max is swap
 * alone. Returns the memory.swap.max value as runc computes it: 0 = leave unset, -1 = `max`.
 * Throws `invalid-argument` when swap is set without a memory limit or is below it.
 */
export function convertMemorySwapToV2(swap: number, memory: number): number {
  // For v1 compatibility, unlimited memory with swap unset means "both unlimited".
  if (memory === -1 && swap === 0) return -1;
  if (swap === -1 || swap === 0) return swap;
  if (memory === 0 || memory === -1) {
    throw invalidArgument(`memory.swap ${swap} needs a memory limit (memory.limit is ${memory})`);
  }
  if (memory < 0) throw invalidArgument(`invalid memory.limit ${memory}`);
  if (swap < memory)
    throw invalidArgument(`memory.swap ${swap} (memory+swap) is below memory.limit ${memory}`);
  return swap - memory;
}

/** The v2 spelling of a limit: 0 = unset (`""`), negative = `max`. */
function v2Limit(value: number): string {
  if (value === 0) return "";
  return value < 0 ? "max" : String(value);
}

/** `a *:* rwm` style line of the v1 devices.allow / devices.deny files for one spec rule. */
export function deviceRuleLine(rule: LinuxDeviceCgroup): string {
  const type = rule.type ?? "a";
  if (!["a", "b", "c"].includes(type)) throw invalidArgument(`device cgroup rule: invalid type "${type}"`);
  const access = rule.access ?? "rwm";
  if (!/^[rwm]{1,3}$/.test(access)) throw invalidArgument(`device cgroup rule: invalid access "${access}"`);
  const num = (n: number | undefined) => (n === undefined || n < 0 ? "*" : String(n));
  return `${type} ${num(rule.major)}:${num(rule.minor)} ${access}`;
}

/** `major:minor value`, the line format of the per-device blkio/io files. */
export function deviceLine(d: { readonly major: number; readonly minor: number }, value: string): string {
  return `${d.major}:${d.minor} ${value}`;
}

const pageSizePattern = /^[0-9]+[KMGT]?B$/;

/** @internal Checks a hugetlb page size (`2MB`, `1GB`) before it becomes part of a file name. */
export function checkPageSize(pageSize: string): string {
  if (!pageSizePattern.test(pageSize))
    throw invalidArgument(`hugepage limit: invalid page size "${pageSize}"`);
  return pageSize;
}

/**
 * The writes that apply `resources` to a cgroup v2 directory, in runc's order (memory with swap
 * first, then cpu, cpuset, pids, io, hugetlb, and the free-form `unified` map last so it can
 * override). Pure: no I/O. Device rules are not part of it — on v2 they need an eBPF program,
 * which berth does not load yet. Throws `invalid-argument` for malformed values.
 */
export function planV2Writes(resources: LinuxResources): CgroupWrite[] {
  const writes: CgroupWrite[] = [];
  const add = (controller: string, file: string, value: string) => {
    if (value !== "") writes.push({ controller, file, value });
  };
  const mem = resources.memory;
  if (mem) {
    const limit = mem.limit ?? 0;
    const swap = convertMemorySwapToV2(mem.swap ?? 0, limit);
    let swapValue = v2Limit(swap);
    // memory.swap equal to memory.limit means "no swap at all" (memsw == mem).
    if (swapValue === "" && swap === 0 && (mem.swap ?? 0) > 0) swapValue = "0";
    // swap before memory.max, as runc does: a lowered memory.max with swap unset keeps working.
    add("memory", "memory.swap.max", swapValue);
    add("memory", "memory.max", v2Limit(limit));
    add("memory", "memory.low", v2Limit(mem.reservation ?? 0));
    if (mem.disableOOMKiller) {
      throw invalidArgument("memory.disableOOMKiller is not supported on cgroup v2 (no memory.oom_control)");
    }
  }
  const cpu = resources.cpu;
  if (cpu) {
    if (cpu.idle !== undefined && cpu.idle !== 0) add("cpu", "cpu.idle", String(cpu.idle));
    const weight = convertCpuSharesToWeight(cpu.shares ?? 0);
    if (weight !== 0) add("cpu", "cpu.weight", String(weight));
    const quota = cpu.quota ?? 0;
    const period = cpu.period ?? 0;
    if (quota !== 0 || period !== 0) {
      // "$MAX $PERIOD"; with the period absent the kernel keeps its current period.
      let value = quota > 0 ? String(quota) : "max";
      if (period !== 0) value += ` ${period}`;
      add("cpu", "cpu.max", value);
    }
    if (cpu.burst !== undefined) add("cpu", "cpu.max.burst", String(cpu.burst));
    if (cpu.realtimeRuntime || cpu.realtimePeriod) {
      throw invalidArgument("cpu.realtimeRuntime/realtimePeriod are not supported on cgroup v2");
    }
    add("cpuset", "cpuset.cpus", cpu.cpus ?? "");
    add("cpuset", "cpuset.mems", cpu.mems ?? "");
  }
  if (resources.pids && resources.pids.limit !== 0) add("pids", "pids.max", v2Limit(resources.pids.limit));
  const io = resources.blockIO;
  if (io) {
    const weight = convertBlkioWeightToIoWeight(io.weight ?? 0);
    if (weight !== 0) add("io", "io.weight", String(weight));
    for (const d of io.weightDevice ?? []) {
      if (d.weight) add("io", "io.weight", deviceLine(d, String(convertBlkioWeightToIoWeight(d.weight))));
    }
    const throttle = (list: readonly LinuxThrottleDevice[] | undefined, key: string) => {
      for (const d of list ?? [])
        add("io", "io.max", deviceLine(d, `${key}=${d.rate === 0 ? "max" : d.rate}`));
    };
    throttle(io.throttleReadBpsDevice, "rbps");
    throttle(io.throttleWriteBpsDevice, "wbps");
    throttle(io.throttleReadIOPSDevice, "riops");
    throttle(io.throttleWriteIOPSDevice, "wiops");
  }
  for (const h of resources.hugepageLimits ?? []) {
    add("hugetlb", `hugetlb.${checkPageSize(h.pageSize)}.max`, String(h.limit));
  }
  for (const [file, value] of Object.entries(resources.unified ?? {})) {
    if (file.includes("/") || file === "." || file === ".." || file === "") {
      throw invalidArgument(`unified: "${file}" is not a cgroup file name`);
    }
    const dot = file.indexOf(".");
    add(dot > 0 && !file.startsWith("cgroup.") ? file.slice(0, dot) : "", file, value);
  }
  return writes;
}
