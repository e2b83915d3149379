import { readFileSync } from "node:fs";
import { posix } from "node:path";
import { notFound } from "@berth/errdefs";

/**
 * How cgroups are laid out on a host:
 * - `v1`: legacy, one cgroup v1 hierarchy per controller (or group of controllers), no cgroup2;
 * - `hybrid`: controllers on v1 hierarchies and a controller-less cgroup2 at /sys/fs/cgroup/unified
 *   (systemd's "hybrid" layout), used only to track processes;
 * - `v2`: the unified hierarchy mounted at /sys/fs/cgroup, every controller on it.
 */
export type CgroupMode = "v1" | "hybrid" | "v2";

/** The conventional mount point of the cgroup filesystems. */
export const CGROUP_ROOT = "/sys/fs/cgroup";

/**
 * The cgroup v1 controllers berth joins when they are mounted, in runc's subsystem order (the order
 * of `set`). `name=systemd` carries no controller: runc joins it so that tools walking it see the
 * container.
 */
export const V1_CONTROLLERS = [
  "cpuset",
  "devices",
  "memory",
  "cpu",
  "cpuacct",
  "pids",
  "blkio",
  "hugetlb",
  "net_cls",
  "net_prio",
  "perf_event",
  "freezer",
  "name=systemd",
  "rdma",
  "misc",
] as const;

/** @internal One cgroup (v1 or v2) mount from /proc/self/mountinfo. */
export interface CgroupMount {
  /** Where it is mounted. */
  readonly mountPoint: string;
  /** The cgroup path, in this process's cgroup namespace, that the mount point shows. */
  readonly root: string;
  /** `cgroup` or `cgroup2`. */
  readonly fstype: "cgroup" | "cgroup2";
  /** The v1 controllers of the hierarchy (`name=systemd` included); empty for cgroup2. */
  readonly controllers: readonly string[];
}

const knownV1 = new Set<string>(V1_CONTROLLERS);

const unescapeField = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/**
 * @internal Reads the cgroup mounts of this process. The mount `root` field (4th column), which
 * `@berth/sys`'s readMountInfo does not keep, is needed here: inside a cgroup namespace or a
 * bind-mounted hierarchy the mount point shows a subtree, not the hierarchy root.
 */
export function readCgroupMounts(mountinfo = "/proc/self/mountinfo"): CgroupMount[] {
  const result: CgroupMount[] = [];
  for (const line of readFileSync(mountinfo, "utf8").split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(" ");
    const [fstype = "", , superOptions = ""] = line.slice(sep + 3).split(" ");
    if (fstype !== "cgroup" && fstype !== "cgroup2") continue;
    const controllers =
      fstype === "cgroup"
        ? superOptions.split(",").filter((o) => knownV1.has(o) || o.startsWith("name="))
        : [];
    result.push({
      mountPoint: unescapeField(left[4] ?? ""),
      root: unescapeField(left[3] ?? "/"),
      fstype,
      controllers,
    });
  }
  return result;
}

/**
 * @internal Parses /proc/self/cgroup: v1 controller (each of a co-mounted group, and `name=...`)
 * → path, and `""` → the cgroup2 path.
 */
export function readOwnCgroups(file = "/proc/self/cgroup"): Map<string, string> {
  const result = new Map<string, string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === "") result.set("", path);
    else for (const c of controllers.split(",")) result.set(c, path);
  }
  return result;
}

/**
 * @internal Decides the layout from the mounts: cgroup2 at /sys/fs/cgroup is `v2`; otherwise any v1
 * hierarchy makes it `v1`, or `hybrid` when a cgroup2 is also mounted at /sys/fs/cgroup/unified.
 * Undefined when no cgroup filesystem is mounted at all.
 */
export function detectMode(mounts: readonly CgroupMount[]): CgroupMode | undefined {
  if (mounts.some((m) => m.fstype === "cgroup2" && m.mountPoint === CGROUP_ROOT)) return "v2";
  if (!mounts.some((m) => m.fstype === "cgroup")) {
    return mounts.some((m) => m.fstype === "cgroup2") ? "v2" : undefined;
  }
  return mounts.some((m) => m.fstype === "cgroup2" && m.mountPoint === `${CGROUP_ROOT}/unified`)
    ? "hybrid"
    : "v1";
}

let cachedMode: CgroupMode | undefined;

/**
 * The cgroup layout of this host, detected once from /proc/self/mountinfo (like runc's
 * `IsCgroup2UnifiedMode`, which statfs'es /sys/fs/cgroup). `hybrid` means controllers are on v1.
 * Throws a `not-found` BerthError when no cgroup filesystem is mounted.
 */
export function cgroupVersion(): CgroupMode {
  if (cachedMode === undefined) {
    const mode = detectMode(readCgroupMounts());
    if (mode === undefined) throw notFound("no cgroup filesystem is mounted (see /proc/self/mountinfo)");
    cachedMode = mode;
  }
  return cachedMode;
}

/**
 * @internal runc's `CleanPath`: a lexically cleaned path that, when relative, cannot climb above
 * its base with `..` (it is cleaned as if rooted at `/`, then made relative again). `""` stays `""`.
 */
export function cleanCgroupPath(path: string): string {
  if (path === "") return "";
  if (posix.isAbsolute(path)) return posix.normalize(path).replace(/(.)\/$/, "$1");
  const rooted = posix.normalize(`/${path}`);
  return rooted === "/" ? "" : rooted.slice(1).replace(/\/$/, "");
}
