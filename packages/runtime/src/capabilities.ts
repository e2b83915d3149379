import { readFileSync } from "node:fs";
import { invalidArgument } from "@berth/errdefs";
import type { LinuxCapabilities } from "./spec.js";

/**
 * Every Linux capability by its `CAP_*` name (linux/capability.h), mapped to its bit number.
 * Names are exactly as the OCI runtime spec and runc spell them: upper case with the `CAP_` prefix.
 */
export const CAPABILITIES = {
  CAP_CHOWN: 0,
  CAP_DAC_OVERRIDE: 1,
  CAP_DAC_READ_SEARCH: 2,
  CAP_FOWNER: 3,
  CAP_FSETID: 4,
  CAP_KILL: 5,
  CAP_SETGID: 6,
  CAP_SETUID: 7,
  CAP_SETPCAP: 8,
  CAP_LINUX_IMMUTABLE: 9,
  CAP_NET_BIND_SERVICE: 10,
  CAP_NET_BROADCAST: 11,
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_IPC_LOCK: 14,
  CAP_IPC_OWNER: 15,
  CAP_SYS_MODULE: 16,
  CAP_SYS_RAWIO: 17,
  CAP_SYS_CHROOT: 18,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_PACCT: 20,
  CAP_SYS_ADMIN: 21,
  CAP_SYS_BOOT: 22,
  CAP_SYS_NICE: 23,
  CAP_SYS_RESOURCE: 24,
  CAP_SYS_TIME: 25,
  CAP_SYS_TTY_CONFIG: 26,
  CAP_MKNOD: 27,
  CAP_LEASE: 28,
  CAP_AUDIT_WRITE: 29,
  CAP_AUDIT_CONTROL: 30,
  CAP_SETFCAP: 31,
  CAP_MAC_OVERRIDE: 32,
  CAP_MAC_ADMIN: 33,
  CAP_SYSLOG: 34,
  CAP_WAKE_ALARM: 35,
  CAP_BLOCK_SUSPEND: 36,
  CAP_AUDIT_READ: 37,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
  CAP_CHECKPOINT_RESTORE: 40,
} as const;

/** A capability name berth knows, e.g. `CAP_SYS_ADMIN`. */
export type CapabilityName = keyof typeof CAPABILITIES;

/** The highest capability number in {@link CAPABILITIES}. */
export const CAP_LAST_KNOWN = 40;

const byNumber: readonly CapabilityName[] = (() => {
  const out: CapabilityName[] = [];
  for (const [name, bit] of Object.entries(CAPABILITIES)) out[bit] = name as CapabilityName;
  return out;
})();

function isCapabilityName(name: string): name is CapabilityName {
  return Object.hasOwn(CAPABILITIES, name);
}

let lastCapCache: number | undefined;

/**
 * The running kernel's highest capability number (`/proc/sys/kernel/cap_last_cap`), cached after
 * the first read. If the file cannot be read (no procfs), it assumes {@link CAP_LAST_KNOWN}: the
 * kernel then refuses any capability it lacks when the sets are applied.
 */
export function lastCapability(): number {
  if (lastCapCache === undefined) {
    try {
      const n = Number.parseInt(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8").trim(), 10);
      lastCapCache = Number.isInteger(n) && n >= 0 ? n : CAP_LAST_KNOWN;
    } catch {
      lastCapCache = CAP_LAST_KNOWN;
    }
  }
  return lastCapCache;
}

/**
 * The bit mask of a list of capability names (bit N set for capability N). Strict: a name that is
 * not in {@link CAPABILITIES}, or whose number is above `lastCap` (default: the running kernel's
 * {@link lastCapability}), throws `invalid-argument` naming it. For a config.json use
 * {@link parseCapabilities}, which ignores such names the way runc does.
 */
export function capabilityMask(names: Iterable<string>, lastCap: number = lastCapability()): bigint {
  let mask = 0n;
  for (const name of names) {
    if (!isCapabilityName(name)) throw invalidArgument(`unknown capability ${JSON.stringify(name)}`);
    const bit = CAPABILITIES[name];
    if (bit > lastCap) {
      throw invalidArgument(
        `capability ${name} (${bit}) is not supported by this kernel (cap_last_cap ${lastCap})`,
      );
    }
    mask |= 1n << BigInt(bit);
  }
  return mask;
}

/**
 * The names of the capabilities set in `mask`, lowest bit first. Bits without a known name
 * (above {@link CAP_LAST_KNOWN}) come back as `CAP_<number>`, the way `capsh` prints them. Throws
 * `invalid-argument` for a negative mask.
 */
export function capabilityNames(mask: bigint): string[] {
  if (mask < 0n) throw invalidArgument(`capability mask ${mask} is negative`);
  const out: string[] = [];
  for (let bit = 0; mask >> BigInt(bit) !== 0n; bit++) {
    if ((mask >> BigInt(bit)) & 1n) out.push(byNumber[bit] ?? `CAP_${bit}`);
  }
  return out;
}

/**
 * Formats a mask the way `/proc/PID/status` shows `CapEff:` and friends: 16 lower-case hex digits.
 */
export function formatCapabilityMask(mask: bigint): string {
  return mask.toString(16).padStart(16, "0");
}

/** The five OCI capability sets as masks, from {@link parseCapabilities}. */
export interface CapabilityMasks {
  readonly bounding: bigint;
  readonly effective: bigint;
  readonly inheritable: bigint;
  readonly permitted: bigint;
  readonly ambient: bigint;
  /**
   * Names that were skipped because they are unknown or above the kernel's `cap_last_cap`,
   * sorted and without duplicates. runc logs them as a warning ("ignoring unknown or unavailable
   * capabilities: [...]") and carries on; callers should do the same.
   */
  readonly ignored: readonly string[];
}

/**
 * Converts OCI `process.capabilities` into the five masks the kernel takes. Like runc
 * (libcontainer/capabilities), an unknown name or one the running kernel does not have (number
 * above `lastCap`, default {@link lastCapability}) is not an error: it is left out and reported
 * in `ignored` so the caller can warn. A missing set or a missing `capabilities` is empty.
 * Throws `invalid-argument` only when a set is not an array of strings.
 */
export function parseCapabilities(
  caps: LinuxCapabilities | undefined,
  lastCap: number = lastCapability(),
): CapabilityMasks {
  const ignored = new Set<string>();
  const maskOf = (set: keyof LinuxCapabilities): bigint => {
    const names: unknown = caps?.[set];
    if (names === undefined) return 0n;
    if (!Array.isArray(names))
      throw invalidArgument(`process.capabilities.${set} must be an array of strings`);
    let mask = 0n;
    for (const name of names) {
      if (typeof name !== "string") {
        throw invalidArgument(`process.capabilities.${set} has a non-string entry ${JSON.stringify(name)}`);
      }
      if (!isCapabilityName(name) || CAPABILITIES[name] > lastCap) {
        ignored.add(name);
        continue;
      }
      mask |= 1n << BigInt(CAPABILITIES[name]);
    }
    return mask;
  };
  return {
    bounding: maskOf("bounding"),
    effective: maskOf("effective"),
    inheritable: maskOf("inheritable"),
    permitted: maskOf("permitted"),
    ambient: maskOf("ambient"),
    ignored: [...ignored].sort(),
  };
}
