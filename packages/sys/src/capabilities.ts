import { readFileSync } from "node:fs";
import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";
import { Prctl, prctl } from "./prctl.js";

/**
 * A process's capability sets as 64-bit masks: bit N is capability N (`CAP_CHOWN` = 0,
 * `CAP_SYS_ADMIN` = 21, ...).
 */
export interface CapabilitySets {
  readonly effective: bigint;
  readonly permitted: bigint;
  readonly inheritable: bigint;
}

// _LINUX_CAPABILITY_VERSION_3: 64-bit sets as two 32-bit halves (linux/capability.h).
const CAPABILITY_VERSION_3 = 0x20080522;
const MASK64 = (1n << 64n) - 1n;

function header(pid: number): Buffer {
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(CAPABILITY_VERSION_3, 0);
  hdr.writeInt32LE(pid, 4);
  return hdr;
}

// struct __user_cap_data_struct { __u32 effective, permitted, inheritable; } data[2];
function read(data: Buffer, field: number): bigint {
  return BigInt(data.readUInt32LE(field * 4)) | (BigInt(data.readUInt32LE(12 + field * 4)) << 32n);
}

function write(data: Buffer, field: number, value: bigint): void {
  data.writeUInt32LE(Number(value & 0xffffffffn), field * 4);
  data.writeUInt32LE(Number((value >> 32n) & 0xffffffffn), 12 + field * 4);
}

/**
 * `capget(2)`: the effective, permitted and inheritable sets of process `pid` (0 = the calling
 * thread). Throws a `SystemError` (`ESRCH` for a process that does not exist).
 */
export function capget(pid = 0): CapabilitySets {
  const data = Buffer.alloc(24);
  checked(loadProcLibc().capget(header(pid), data) as number, "capget", { hint: `pid ${pid}` });
  return { effective: read(data, 0), permitted: read(data, 1), inheritable: read(data, 2) };
}

/**
 * `capset(2)`: sets the calling thread's three sets (the kernel call is per thread; call it on
 * the thread that will exec). Effective must be a subset of permitted, permitted may only shrink,
 * inheritable may only gain bits that are in the bounding set and permitted (without
 * CAP_SETPCAP). Throws `invalid-argument` for a mask outside 64 bits and a `SystemError` (`EPERM`)
 * when the kernel refuses.
 */
export function capset(sets: CapabilitySets): void {
  for (const [name, value] of Object.entries(sets)) {
    if (typeof value !== "bigint" || value < 0n || value > MASK64) {
      throw invalidArgument(`capability set ${name} ${String(value)} is not a 64-bit mask`);
    }
  }
  const data = Buffer.alloc(24);
  write(data, 0, sets.effective);
  write(data, 1, sets.permitted);
  write(data, 2, sets.inheritable);
  checked(loadProcLibc().capset(header(0), data) as number, "capset", {
    hint: `effective 0x${sets.effective.toString(16)} permitted 0x${sets.permitted.toString(16)} inheritable 0x${sets.inheritable.toString(16)}`,
  });
}

let cachedLastCap: number | undefined;

/**
 * The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`, e.g.
 * 40 for CAP_CHECKPOINT_RESTORE). Read once per process. Throws a `SystemError`-like Node error
 * when /proc is not mounted.
 */
export function lastCap(): number {
  cachedLastCap ??= Number.parseInt(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8").trim(), 10);
  return cachedLastCap;
}

/** The calling thread's bounding set, read with `PR_CAPBSET_READ` for every known capability. */
export function readBoundingSet(): bigint {
  let set = 0n;
  for (let cap = 0; cap <= lastCap(); cap++) {
    if (prctl(Prctl.PR_CAPBSET_READ, cap) === 1) set |= 1n << BigInt(cap);
  }
  return set;
}

/**
 * Drops every capability not in `keep` from the calling thread's bounding set
 * (`PR_CAPBSET_DROP`), which needs CAP_SETPCAP in the effective set: drop the bounding set before
 * {@link capset} takes CAP_SETPCAP away. Throws a `SystemError` (`EPERM`) when not allowed.
 */
export function dropBoundingSet(keep: bigint): void {
  for (let cap = 0; cap <= lastCap(); cap++) {
    if ((keep >> BigInt(cap)) & 1n) continue;
    prctl(Prctl.PR_CAPBSET_DROP, cap);
  }
}

/**
 * Makes the calling thread's ambient set exactly `caps`: clears it, then raises each bit. A
 * capability can be ambient only if it is both permitted and inheritable, so call this after
 * {@link capset}. Throws a `SystemError` (`EPERM` for a capability that is not both).
 */
export function setAmbient(caps: bigint): void {
  prctl(Prctl.PR_CAP_AMBIENT, Prctl.PR_CAP_AMBIENT_CLEAR_ALL);
  for (let cap = 0; cap <= lastCap(); cap++) {
    if ((caps >> BigInt(cap)) & 1n) prctl(Prctl.PR_CAP_AMBIENT, Prctl.PR_CAP_AMBIENT_RAISE, cap);
  }
}

/** The calling thread's ambient set, read with `PR_CAP_AMBIENT_IS_SET` for every known capability. */
export function readAmbient(): bigint {
  let set = 0n;
  for (let cap = 0; cap <= lastCap(); cap++) {
    if (prctl(Prctl.PR_CAP_AMBIENT, Prctl.PR_CAP_AMBIENT_IS_SET, cap) === 1) set |= 1n << BigInt(cap);
  }
  return set;
}
