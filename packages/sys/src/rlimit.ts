import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";

/** `RLIMIT_*` resource numbers (the generic Linux table, the same on x86_64 and aarch64). */
export const Rlimit = {
  RLIMIT_CPU: 0,
  RLIMIT_FSIZE: 1,
  RLIMIT_DATA: 2,
  RLIMIT_STACK: 3,
  RLIMIT_CORE: 4,
  RLIMIT_RSS: 5,
  RLIMIT_NPROC: 6,
  RLIMIT_NOFILE: 7,
  RLIMIT_MEMLOCK: 8,
  RLIMIT_AS: 9,
  RLIMIT_LOCKS: 10,
  RLIMIT_SIGPENDING: 11,
  RLIMIT_MSGQUEUE: 12,
  RLIMIT_NICE: 13,
  RLIMIT_RTPRIO: 14,
  RLIMIT_RTTIME: 15,
} as const;

/** A resource name as the OCI spec writes it (`"RLIMIT_NOFILE"`). */
export type RlimitName = keyof typeof Rlimit;

/** `RLIM_INFINITY`: no limit. */
export const RLIM_INFINITY = 0xffff_ffff_ffff_ffffn;

/** A soft and hard limit pair; {@link RLIM_INFINITY} for unlimited. */
export interface RlimitValue {
  readonly soft: bigint;
  readonly hard: bigint;
}

/**
 * The number of a resource given as a number or an OCI name. Throws `invalid-argument` for an
 * unknown name or a number outside the table.
 */
export function rlimitResource(resource: number | string): number {
  if (typeof resource === "number") {
    if (!Object.values(Rlimit).includes(resource as (typeof Rlimit)[RlimitName])) {
      throw invalidArgument(`rlimit resource ${resource} is not one Linux has`);
    }
    return resource;
  }
  if (!Object.hasOwn(Rlimit, resource)) throw invalidArgument(`rlimit type ${resource} is not one Linux has`);
  return Rlimit[resource as RlimitName];
}

/**
 * Sets a resource limit of process `pid` (0 = the calling process) with `prlimit(2)`. Limits are
 * per process, so this is safe in a multithreaded Node. Throws `invalid-argument` for an unknown
 * resource or soft > hard, and a `SystemError` (`EPERM` when raising the hard limit without
 * CAP_SYS_RESOURCE or acting on another user's process, `EINVAL` for NOFILE beyond fs.nr_open,
 * `ESRCH` for a missing pid).
 */
export function setrlimit(resource: number | string, soft: bigint, hard: bigint, pid = 0): void {
  const number = rlimitResource(resource);
  for (const v of [soft, hard]) {
    if (v < 0n || v > RLIM_INFINITY)
      throw invalidArgument(`rlimit ${String(resource)} value ${v} is not a 64-bit count`);
  }
  if (soft > hard)
    throw invalidArgument(`rlimit ${String(resource)}: soft limit ${soft} exceeds hard limit ${hard}`);
  const value = Buffer.alloc(16);
  value.writeBigUInt64LE(soft, 0);
  value.writeBigUInt64LE(hard, 8);
  checked(loadProcLibc().prlimit(pid, number, value, null) as number, "prlimit", {
    hint: `${String(resource)} soft ${soft} hard ${hard} pid ${pid}`,
  });
}

/**
 * Reads a resource limit of process `pid` (0 = the calling process) with `prlimit(2)`. Throws
 * like {@link setrlimit}.
 */
export function getrlimit(resource: number | string, pid = 0): RlimitValue {
  const number = rlimitResource(resource);
  const value = Buffer.alloc(16);
  checked(loadProcLibc().prlimit(pid, number, null, value) as number, "prlimit", {
    hint: `${String(resource)} pid ${pid}`,
  });
  return { soft: value.readBigUInt64LE(0), hard: value.readBigUInt64LE(8) };
}
