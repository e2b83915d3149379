import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import {
  CAP_LAST_KNOWN,
  CAPABILITIES,
  capabilityMask,
  capabilityNames,
  formatCapabilityMask,
  lastCapability,
  parseCapabilities,
} from "./capabilities.js";

const statusMask = (field: string): bigint => {
  const m = new RegExp(`^${field}:\\s*([0-9a-f]+)$`, "m").exec(readFileSync("/proc/self/status", "utf8"));
  if (!m?.[1]) throw new Error(`no ${field} in /proc/self/status`);
  return BigInt(`0x${m[1]}`);
};

describe("capability names and masks", () => {
  it("numbers all 41 capabilities as linux/capability.h does", () => {
    expect(Object.keys(CAPABILITIES)).toHaveLength(41);
    expect(new Set(Object.values(CAPABILITIES)).size).toBe(41);
    expect(CAPABILITIES.CAP_CHOWN).toBe(0);
    expect(CAPABILITIES.CAP_SYS_ADMIN).toBe(21);
    expect(CAPABILITIES.CAP_AUDIT_READ).toBe(37);
    expect(CAPABILITIES.CAP_CHECKPOINT_RESTORE).toBe(CAP_LAST_KNOWN);
    // Cross-check against the UAPI header on this machine when it is installed.
    let header = "";
    try {
      header = readFileSync("/usr/include/linux/capability.h", "utf8");
    } catch {
      return;
    }
    for (const [name, bit] of Object.entries(CAPABILITIES)) {
      expect(header).toMatch(new RegExp(`#define ${name}\\s+${bit}\\b`));
    }
  });

  it("builds the mask of runc's default set and formats it as /proc shows it", () => {
    const mask = capabilityMask(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    expect(mask).toBe((1n << 29n) | (1n << 5n) | (1n << 10n));
    expect(formatCapabilityMask(mask)).toBe("0000000020000420");
    expect(capabilityNames(mask)).toEqual(["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]);
    expect(capabilityMask([])).toBe(0n);
    expect(capabilityNames(0n)).toEqual([]);
    expect(capabilityNames(1n << 45n)).toEqual(["CAP_45"]);
  });

  it("reads this process's bounding set back into names and the same mask", () => {
    const bounding = statusMask("CapBnd");
    const names = capabilityNames(bounding);
    expect(capabilityMask(names)).toBe(bounding);
    // The running kernel never has a capability above cap_last_cap in any set.
    expect(bounding >> BigInt(lastCapability() + 1)).toBe(0n);
    expect(lastCapability()).toBe(Number(readFileSync("/proc/sys/kernel/cap_last_cap", "utf8")));
  });

  it("is strict in capabilityMask: unknown and unavailable names are invalid-argument", () => {
    expect(() => capabilityMask(["CAP_NOPE"])).toThrow(expect.objectContaining({ code: "invalid-argument" }));
    expect(() => capabilityMask(["cap_chown"])).toThrow(/unknown capability "cap_chown"/);
    expect(() => capabilityMask(["CAP_BPF"], 38)).toThrow(/not supported by this kernel \(cap_last_cap 38\)/);
    expect(() => capabilityMask(["constructor"])).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
    expect(() => capabilityNames(-1n)).toThrow(expect.objectContaining({ code: "invalid-argument" }));
  });
});

describe("parseCapabilities", () => {
  it("converts the five OCI sets", () => {
    const caps = parseCapabilities({
      bounding: ["CAP_CHOWN", "CAP_KILL", "CAP_SYS_ADMIN"],
      effective: ["CAP_CHOWN"],
      permitted: ["CAP_CHOWN", "CAP_KILL"],
      inheritable: [],
      ambient: ["CAP_KILL"],
    });
    expect(caps).toEqual({
      bounding: 1n | (1n << 5n) | (1n << 21n),
      effective: 1n,
      inheritable: 0n,
      permitted: 1n | (1n << 5n),
      ambient: 1n << 5n,
      ignored: [],
    });
    expect(parseCapabilities(undefined)).toEqual({
      bounding: 0n,
      effective: 0n,
      inheritable: 0n,
      permitted: 0n,
      ambient: 0n,
      ignored: [],
    });
  });

  it("ignores unknown and unavailable names like runc and reports them once, sorted", () => {
    const caps = parseCapabilities(
      {
        bounding: ["CAP_UNKNOWN", "UNKNOWN_CAP", "CAP_CHOWN", "CAP_CHECKPOINT_RESTORE"],
        effective: ["CAP_UNKNOWN", "CAP_BPF"],
      },
      38,
    );
    expect(caps.bounding).toBe(1n);
    expect(caps.effective).toBe(0n);
    expect(caps.ignored).toEqual(["CAP_BPF", "CAP_CHECKPOINT_RESTORE", "CAP_UNKNOWN", "UNKNOWN_CAP"]);
  });

  it("rejects sets that are not arrays of strings", () => {
    expect(() => parseCapabilities({ bounding: "CAP_CHOWN" as unknown as string[] })).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
    expect(() => parseCapabilities({ bounding: [7 as unknown as string] })).toThrow(/non-string entry 7/);
  });
});
