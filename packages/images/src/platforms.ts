import type { Platform } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

/**
 * Chooses and orders platforms, like containerd's `platforms.MatchComparer`: `match` says whether
 * content for `p` may be used, `less(a, b)` whether `a` is preferred to `b` (both matching).
 */
export type PlatformMatcher = {
  match(p: Platform): boolean;
  less(a: Platform, b: Platform): boolean;
  /** What the matcher selects, for error messages (`linux/arm64/v8`). Optional for custom matchers. */
  readonly description?: string;
};

const knownOS: ReadonlySet<string> = new Set([
  "aix",
  "android",
  "darwin",
  "dragonfly",
  "freebsd",
  "hurd",
  "illumos",
  "ios",
  "js",
  "linux",
  "nacl",
  "netbsd",
  "openbsd",
  "plan9",
  "solaris",
  "wasip1",
  "windows",
  "zos",
]);
const knownArch: ReadonlySet<string> = new Set([
  "386",
  "amd64",
  "amd64p32",
  "arm",
  "armbe",
  "arm64",
  "arm64be",
  "ppc64",
  "ppc64le",
  "loong64",
  "mips",
  "mipsle",
  "mips64",
  "mips64le",
  "mips64p32",
  "mips64p32le",
  "ppc",
  "riscv",
  "riscv64",
  "s390",
  "s390x",
  "sparc",
  "sparc64",
  "wasm",
]);

function normalizeOS(os: string): string {
  const lower = os.toLowerCase();
  return lower === "macos" ? "darwin" : lower;
}

/** The same aliases containerd's platforms package folds together. */
function normalizeArch(architecture: string, variant: string): [string, string] {
  const arch = architecture.toLowerCase();
  const v = variant.toLowerCase();
  switch (arch) {
    case "i386":
      return ["386", ""];
    case "x86_64":
    case "x86-64":
    case "amd64":
      return ["amd64", v === "v1" ? "" : v];
    case "aarch64":
    case "arm64":
      // v8 is the baseline of arm64, so its canonical form leaves the variant out.
      if (v === "8" || v === "v8" || v === "v8.0") return ["arm64", ""];
      if (v === "9" || v === "9.0" || v === "v9.0") return ["arm64", "v9"];
      return ["arm64", v];
    case "armhf":
      return ["arm", "v7"];
    case "armel":
      return ["arm", "v6"];
    case "arm":
      if (v === "" || v === "7") return ["arm", "v7"];
      if (v === "5" || v === "6" || v === "8") return ["arm", `v${v}`];
      return ["arm", v];
    default:
      return [arch, v];
  }
}

function withVariant(p: Platform, architecture: string, variant: string): Platform {
  const { variant: _dropped, ...rest } = p;
  return variant === "" ? { ...rest, architecture } : { ...rest, architecture, variant };
}

/**
 * The canonical form of a platform, as containerd's `platforms.Normalize`: lowercase; `macos` →
 * `darwin`; `x86_64`/`x86-64` → `amd64`; `aarch64` → `arm64`; `i386` → `386`; `armhf` → arm v7,
 * `armel` → arm v6; arm without a variant is v7; arm64 v8 (the baseline) is written without a
 * variant, and `v9.0` as `v9`.
 */
export function normalizePlatform(p: Platform): Platform {
  const [architecture, variant] = normalizeArch(p.architecture, p.variant ?? "");
  return { ...withVariant(p, architecture, variant), os: normalizeOS(p.os) };
}

function armVariantFromProcess(): string {
  const vars = (process.config as { variables?: Record<string, unknown> }).variables;
  const v = vars?.arm_version;
  return typeof v === "string" || typeof v === "number" ? `v${v}` : "v7";
}

/**
 * The platform of this process, in OCI terms: Node's `process.arch` mapped to the OCI
 * architecture (`x64` → `amd64`, `arm64` → `arm64` variant `v8`, `arm` → `arm` with the variant
 * Node was built for, `ia32` → `386`, `ppc64` → `ppc64le`, `s390x`), and `process.platform` to the
 * OS (`win32` → `windows`).
 */
export function hostPlatform(): Platform {
  const os = process.platform === "win32" ? "windows" : process.platform;
  switch (process.arch) {
    case "x64":
      return { os, architecture: "amd64" };
    case "arm64":
      return { os, architecture: "arm64", variant: "v8" };
    case "arm":
      return { os, architecture: "arm", variant: armVariantFromProcess() };
    case "ia32":
      return { os, architecture: "386" };
    case "ppc64":
      // Node only ships ppc64 builds for little-endian Linux.
      return { os, architecture: "ppc64le" };
    default:
      return { os, architecture: process.arch };
  }
}

const componentRe = /^[A-Za-z0-9_-]+$/;

/**
 * Parses a platform specifier `<os>|<arch>|<os>/<arch>[/<variant>]` (containerd's syntax): a lone
 * known OS takes the host's architecture, a lone known architecture takes the host's OS. The
 * result is normalized ({@link normalizePlatform}). Throws `invalid-argument` for empty or
 * malformed components, an unknown lone component or more than three parts.
 */
export function parsePlatform(specifier: string): Platform {
  const parts = specifier.split("/");
  for (const part of parts) {
    if (!componentRe.test(part)) {
      throw invalidArgument(
        `invalid platform ${JSON.stringify(specifier)}: component ${JSON.stringify(part)} must match [A-Za-z0-9_-]+`,
      );
    }
  }
  const host = hostPlatform();
  if (parts.length === 1) {
    const only = parts[0] as string;
    const os = normalizeOS(only);
    if (knownOS.has(os)) {
      // Only the host's architecture (and variant) makes sense alongside a bare OS on this host.
      return normalizePlatform({ ...host, os });
    }
    const [architecture, variant] = normalizeArch(only, "");
    if (knownArch.has(architecture))
      return normalizePlatform({ os: host.os, architecture, ...(variant ? { variant } : {}) });
    throw invalidArgument(
      `invalid platform ${JSON.stringify(specifier)}: unknown operating system or architecture`,
    );
  }
  if (parts.length === 2) {
    return normalizePlatform({ os: parts[0] as string, architecture: parts[1] as string });
  }
  if (parts.length === 3) {
    return normalizePlatform({
      os: parts[0] as string,
      architecture: parts[1] as string,
      variant: parts[2] as string,
    });
  }
  throw invalidArgument(`invalid platform ${JSON.stringify(specifier)}: want <os>/<arch>[/<variant>]`);
}

/** Formats a platform as `os/arch[/variant]` (`unknown` for a missing os or architecture). */
export function formatPlatform(p: Platform): string {
  const base = `${p.os || "unknown"}/${p.architecture || "unknown"}`;
  return p.variant ? `${base}/${p.variant}` : base;
}

function sameNormalized(a: Platform, b: Platform): boolean {
  return a.os === b.os && a.architecture === b.architecture && (a.variant ?? "") === (b.variant ?? "");
}

/** Matches exactly one normalized platform. */
function exactMatcher(target: Platform): (p: Platform) => boolean {
  const want = normalizePlatform(target);
  return (p) => sameNormalized(want, normalizePlatform(p));
}

const arm64Minors: Readonly<Record<string, readonly (readonly [number, number])[]>> = (() => {
  const table: Record<string, (readonly [number, number])[]> = {};
  for (let minor = 0; minor <= 9; minor++) {
    const list: [number, number][] = [[8, minor]];
    table[minor === 0 ? "v8" : `v8.${minor}`] = list;
  }
  table["v8.0"] = [[8, 0]];
  // armv9.x implements armv8.(x+5); containerd's compare.go uses the same correspondence.
  for (let minor = 0; minor <= 7; minor++) {
    const list: [number, number][] = [
      [9, minor],
      [8, Math.min(minor + 5, 9)],
    ];
    table[minor === 0 ? "v9" : `v9.${minor}`] = list;
  }
  table["v9.0"] = table.v9 as [number, number][];
  return table;
})();

/**
 * The platforms that can run on `p`, best first (containerd's `platformVector`): amd64 vN also
 * runs vN-1…v1 and 386; arm vN also runs vN-1…v5; arm64 vX.Y runs every earlier arm64 revision,
 * then 32-bit arm v8…v5.
 */
function compatibleVector(p: Platform): Platform[] {
  const base = normalizePlatform(p);
  const out: Platform[] = [base];
  const variantNumber = Number.parseInt((base.variant ?? "").replace(/^v/, ""), 10);
  if (base.architecture === "amd64") {
    if (Number.isInteger(variantNumber)) {
      for (let v = variantNumber - 1; v >= 1; v--)
        out.push(withVariant(base, "amd64", v === 1 ? "" : `v${v}`));
    }
    out.push(withVariant(base, "386", ""));
  } else if (base.architecture === "arm") {
    if (Number.isInteger(variantNumber)) {
      for (let v = variantNumber - 1; v >= 5; v--) out.push(withVariant(base, "arm", `v${v}`));
    }
  } else if (base.architecture === "arm64") {
    const variant = base.variant ?? "v8";
    const majors = arm64Minors[variant];
    if (majors !== undefined) {
      out.length = 0;
      for (const [major, topMinor] of majors) {
        for (let minor = topMinor; minor >= 0; minor--) {
          out.push(withVariant(base, "arm64", minor === 0 ? `v${major}` : `v${major}.${minor}`));
        }
      }
      out.push(...compatibleVector(withVariant(base, "arm", "v8")));
    }
  }
  return out;
}

function orderedMatcher(candidates: readonly Platform[], description: string): PlatformMatcher {
  const matchers = candidates.map(exactMatcher);
  const rank = (p: Platform): number => {
    const i = matchers.findIndex((m) => m(p));
    return i === -1 ? Number.POSITIVE_INFINITY : i;
  };
  return {
    description,
    match: (p) => rank(p) !== Number.POSITIVE_INFINITY,
    less: (a, b) => rank(a) < rank(b),
  };
}

/**
 * A matcher for content that runs on `p` (default: {@link hostPlatform}), containerd's
 * `platforms.Only`: the platform itself first, then what it can also run — amd64 also matches
 * 386, arm64 matches arm64 with or without `v8` and then 32-bit arm, arm v7 matches v6 and v5.
 */
export function platformMatcher(p: Platform = hostPlatform()): PlatformMatcher {
  return orderedMatcher(compatibleVector(p), formatPlatform(p));
}

/**
 * A matcher for exactly `p` after normalization (containerd's `platforms.OnlyStrict`): no
 * fallbacks to older variants or 32-bit architectures, but `arm64` still equals `arm64/v8`.
 */
export function onlyPlatform(p: Platform): PlatformMatcher {
  return orderedMatcher([p], formatPlatform(p));
}

/** Matches every platform and prefers none (containerd's `platforms.All`). */
export const allPlatforms: PlatformMatcher = {
  description: "all platforms",
  match: () => true,
  less: () => false,
};
