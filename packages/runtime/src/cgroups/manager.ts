import { type Dirent, readdirSync, rmdirSync, statSync } from "node:fs";
import { dirname, join, posix } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { failedPrecondition, invalidArgument, unavailable } from "@berth/errdefs";
import type { LinuxResources } from "../spec.js";
import { type CgroupWrite, planV2Writes } from "./convert.js";
import {
  errnoOf,
  mkdirCgroup,
  readCgroupFile,
  readCgroupNumber,
  readKeyedFile,
  toSystemError,
  writeCgroupFile,
} from "./fs.js";
import {
  CGROUP_ROOT,
  type CgroupMode,
  type CgroupMount,
  cgroupVersion,
  cleanCgroupPath,
  readCgroupMounts,
  readOwnCgroups,
  V1_CONTROLLERS,
} from "./mounts.js";
import { ensureCpusetParents, v1Setters } from "./v1.js";

/** The parent berth puts containers under when the spec has no `linux.cgroupsPath`. */
export const DEFAULT_CGROUP_PARENT = "/berth";

/** Options of {@link createCgroupManager}. */
export interface CgroupManagerOptions {
  /** The layout to drive; `auto` (the default) detects it with {@link cgroupVersion}. */
  readonly mode?: CgroupMode | "auto";
  /**
   * Where the cgroup2 hierarchy used in `v2` mode is mounted (default: the cgroup2 mount at
   * /sys/fs/cgroup). Any mount of the unified hierarchy works; tests use a private one.
   */
  readonly unifiedMount?: string;
  /**
   * The controller → directory map saved from an earlier manager's {@link CgroupManager.paths}
   * (runc keeps it in state.json): path resolution is skipped, so `delete` run from another
   * cgroup finds the same directories.
   */
  readonly paths?: Readonly<Record<string, string>>;
}

/** What {@link CgroupManager.stats} reports; a part is absent when its controller is not available. */
export interface CgroupStats {
  readonly memory?: {
    /** Bytes in use now (memory.usage_in_bytes / memory.current). */
    readonly usage: number;
    /** Peak usage (memory.max_usage_in_bytes / memory.peak), when the kernel tracks it. */
    readonly maxUsage?: number;
    /** The limit in bytes; absent when unlimited. */
    readonly limit?: number;
    /** How many times usage hit the limit (memory.failcnt / memory.events `max`). */
    readonly failcnt: number;
  };
  readonly cpu?: {
    /** Total CPU time in nanoseconds. */
    readonly usageNanos: number;
    readonly userNanos?: number;
    readonly systemNanos?: number;
    /** Periods in which the quota throttled the cgroup. */
    readonly throttledPeriods?: number;
  };
  readonly pids?: {
    readonly current: number;
    /** pids.max; absent when `max`. */
    readonly limit?: number;
  };
}

/**
 * One container's cgroups, with runc's cgroupfs semantics. Created by {@link createCgroupManager};
 * it owns the leaf directories in {@link CgroupManager.paths} and removes them in `destroy`, never
 * their parents (other containers share those).
 */
export interface CgroupManager {
  /** The layout driven: `v1`, `hybrid` (v1 controllers, pid also tracked on cgroup2) or `v2`. */
  readonly mode: CgroupMode;
  /**
   * Controller → absolute directory. v1: one key per controller (`cpu`, `memory`, `name=systemd`
   * ...; co-mounted controllers share a directory); the key `""` is the cgroup2 directory (v2
   * mode, and the tracking directory in hybrid mode), as in runc's state.json.
   */
  readonly paths: Readonly<Record<string, string>>;
  /**
   * Creates the directories in every hierarchy and moves `pid` into them (cgroup.procs). On v1,
   * empty cpuset.cpus/mems are first copied down from the parents; on v2, every available
   * controller is enabled in the ancestors' cgroup.subtree_control (failures there are ignored,
   * as runc does, and surface in `set`). Throws SystemError (`not-found` for a gone pid). On
   * failure, directories already created stay: call `destroy`.
   */
  apply(pid: number): void;
  /**
   * Writes `resources` (OCI `linux.resources`) in runc's order and with its v1/v2 conversions.
   * Throws `failed-precondition` when a requested controller is not mounted or not enabled,
   * `invalid-argument` for values the spec or the kernel refuses (a SystemError naming the file
   * and value otherwise). v2 device rules are ignored: they need an eBPF program berth does not
   * load yet.
   */
  set(resources: LinuxResources): void;
  /** Freezes every task (v1 freezer.state FROZEN, v2 cgroup.freeze) and waits until it settles. */
  freeze(): Promise<void>;
  /** Thaws the cgroup and waits until it settles. */
  thaw(): Promise<void>;
  /** Whether the cgroup is frozen now. */
  isFrozen(): boolean;
  /** Memory, CPU and pids counters. */
  stats(): CgroupStats;
  /** Every pid in the cgroup and its descendants (cgroup.procs). */
  pids(): number[];
  /** How many processes the kernel OOM killer has killed in this cgroup (0 if unknown). */
  oomKillCount(): number;
  /**
   * Thaws (so killed tasks can exit), then removes every directory of `paths` and any
   * sub-cgroups, retrying with back-off while tasks exit. Already-missing directories are fine.
   * Throws `unavailable` naming the directories still busy after about 1.3 s: the caller must have
   * killed the processes first.
   */
  destroy(): Promise<void>;
  /** Whether any of the directories exists. */
  exists(): boolean;
}

const idPattern = /^[\w+.-]+$/;

/**
 * A {@link CgroupManager} for container `id`. `cgroupsPath` follows runc's cgroupfs driver: an
 * absolute path is taken from each hierarchy's root (`/a/b` → /sys/fs/cgroup/memory/a/b); a
 * relative one from this process's own cgroup (v1, and the hybrid tracking dir) or from its
 * parent (v2, whose own cgroup has tasks and cannot enable controllers); `..` never climbs out.
 * Absent or empty, the cgroup is `/berth/<id>` ({@link DEFAULT_CGROUP_PARENT}) — where runc would
 * use `<own cgroup>/<id>`: a shim's own cgroup is a poor parent for its containers. No I/O but
 * reading /proc/self/{mountinfo,cgroup}. Throws `invalid-argument` for a bad id and `not-found`
 * when no cgroup filesystem (or no v2 mount in v2 mode) is mounted.
 */
export function createCgroupManager(
  cgroupsPath: string | undefined,
  id: string,
  options: CgroupManagerOptions = {},
): CgroupManager {
  if (!idPattern.test(id) || id === "." || id === "..") {
    throw invalidArgument(`container id "${id}" is not valid for a cgroup (letters, digits, _ + - . only)`);
  }
  const mode = !options.mode || options.mode === "auto" ? cgroupVersion() : options.mode;
  const paths = options.paths ? { ...options.paths } : resolvePaths(cgroupsPath, id, mode, options);
  return new FsManager(mode, paths, options.unifiedMount);
}

function resolvePaths(
  cgroupsPath: string | undefined,
  id: string,
  mode: CgroupMode,
  options: CgroupManagerOptions,
): Record<string, string> {
  const inner = cleanCgroupPath(cgroupsPath ?? "") || `${DEFAULT_CGROUP_PARENT}/${id}`;
  const mounts = readCgroupMounts();
  const own = readOwnCgroups();
  const under = (m: CgroupMount, key: string, parentOfOwn: boolean) => {
    if (posix.isAbsolute(inner)) return join(m.mountPoint, inner);
    let ownPath = own.get(key) ?? "/";
    if (parentOfOwn) ownPath = posix.dirname(ownPath);
    const rel = posix.relative(m.root, ownPath);
    return join(m.mountPoint, rel.startsWith("..") ? "" : rel, inner);
  };
  const unified = (): CgroupMount => {
    if (options.unifiedMount)
      return { mountPoint: options.unifiedMount, root: "/", fstype: "cgroup2", controllers: [] };
    const where = mode === "v2" ? CGROUP_ROOT : `${CGROUP_ROOT}/unified`;
    const m =
      mounts.find((x) => x.fstype === "cgroup2" && x.mountPoint === where) ??
      mounts.find((x) => x.fstype === "cgroup2");
    if (!m) throw failedPrecondition(`cgroup mode ${mode} needs a cgroup2 mount, and none is mounted`);
    return m;
  };
  const paths: Record<string, string> = {};
  if (mode === "v2") {
    paths[""] = under(unified(), "", true);
    return paths;
  }
  for (const controller of V1_CONTROLLERS) {
    // A controller can be mounted more than once; the first mount wins, as in runc.
    const m = mounts.find((x) => x.fstype === "cgroup" && x.controllers.includes(controller));
    if (m && paths[controller] === undefined) paths[controller] = under(m, controller, false);
  }
  if (mode === "hybrid") paths[""] = under(unified(), "", false);
  return paths;
}

// v1 controller name → its cgroup v2 name, for hybrid hosts whose unified hierarchy carries a
// controller that no v1 hierarchy has (hugetlb on this machine's kernel).
const v2Name: Readonly<Record<string, string>> = { blkio: "io" };

class FsManager implements CgroupManager {
  readonly paths: Readonly<Record<string, string>>;

  constructor(
    readonly mode: CgroupMode,
    paths: Record<string, string>,
    private readonly unifiedMount: string | undefined,
  ) {
    this.paths = Object.freeze(paths);
  }

  /** The distinct directories, co-mounted controllers counted once. */
  private dirs(): string[] {
    return [...new Set(Object.values(this.paths))];
  }

  /** The cgroup2 hierarchy root above `paths[""]`, found from the mounts. */
  private unifiedRoot(): string {
    if (this.unifiedMount) return this.unifiedMount;
    const dir = this.paths[""] ?? "";
    const mounts = readCgroupMounts().filter(
      (m) => m.fstype === "cgroup2" && dir.startsWith(`${m.mountPoint}/`),
    );
    const best = mounts.sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0];
    if (!best) throw failedPrecondition(`${dir} is not inside a mounted cgroup2 hierarchy`);
    return best.mountPoint;
  }

  /**
   * Creates `dir` level by level below the cgroup2 root and enables `controllers` in the
   * cgroup.subtree_control of every level above it (runc's CreateCgroupPath). Enabling fails
   * with EBUSY in a cgroup that has tasks (the no-internal-process rule) or when a controller is
   * not available; such failures are ignored here and reported by the write that needed it.
   */
  private createV2(dir: string, controllers: readonly string[]): void {
    const root = this.unifiedRoot();
    const levels = posix.relative(root, dir).split("/").filter(Boolean);
    let current = root;
    for (const level of levels) {
      if (controllers.length > 0) {
        const enable = controllers.map((c) => `+${c}`).join(" ");
        try {
          writeCgroupFile(current, "cgroup.subtree_control", enable);
        } catch {
          for (const c of controllers) {
            try {
              writeCgroupFile(current, "cgroup.subtree_control", `+${c}`);
            } catch {
              // See above: reported later by the write that needs the controller.
            }
          }
        }
      }
      current = join(current, level);
      mkdirCgroup(current);
    }
  }

  private rootControllers(): string[] {
    return (readCgroupFile(this.unifiedRoot(), "cgroup.controllers") ?? "").split(/\s+/).filter(Boolean);
  }

  apply(pid: number): void {
    if (!Number.isInteger(pid) || pid <= 0) throw invalidArgument(`cannot add pid ${pid} to a cgroup`);
    const done = new Set<string>();
    if (this.mode !== "v2") {
      const mounts = readCgroupMounts();
      for (const [controller, dir] of Object.entries(this.paths)) {
        if (controller === "" || done.has(dir)) continue;
        done.add(dir);
        mkdirCgroup(dir);
        if (controller === "cpuset") {
          const m = mounts.find((x) => x.fstype === "cgroup" && dir.startsWith(`${x.mountPoint}/`));
          ensureCpusetParents(m?.mountPoint ?? dirname(dir), dir);
        }
        writeCgroupFile(dir, "cgroup.procs", String(pid));
      }
    }
    const unified = this.paths[""];
    if (unified !== undefined) {
      // v2: all controllers, like runc; hybrid: the unified tree only tracks, enable nothing now.
      this.createV2(unified, this.mode === "v2" ? this.rootControllers() : []);
      writeCgroupFile(unified, "cgroup.procs", String(pid));
    }
  }

  set(resources: LinuxResources): void {
    if (this.mode === "v2") {
      this.writeV2(this.paths[""] ?? "", planV2Writes(resources));
      return;
    }
    for (const setter of v1Setters) {
      if (!setter.needed(resources)) continue;
      const dir = this.paths[setter.controller];
      if (dir !== undefined) {
        setter.set(dir, resources);
        continue;
      }
      // Hybrid: a controller no v1 hierarchy has may be on the unified one.
      const name = v2Name[setter.controller] ?? setter.controller;
      const unified = this.paths[""];
      if (this.mode === "hybrid" && unified !== undefined && this.rootControllers().includes(name)) {
        this.createV2(unified, [name]);
        this.writeV2(
          unified,
          planV2Writes(resources).filter((w) => w.controller === name),
        );
        continue;
      }
      throw failedPrecondition(
        `cannot set ${setter.controller} limits: no ${setter.controller} cgroup hierarchy is mounted`,
      );
    }
    const unifiedEntries = Object.entries(resources.unified ?? {});
    if (unifiedEntries.length > 0) {
      const unified = this.paths[""];
      if (this.mode !== "hybrid" || unified === undefined) {
        throw invalidArgument("linux.resources.unified needs cgroup v2 (this host runs cgroup v1)");
      }
      this.writeV2(unified, planV2Writes({ unified: Object.fromEntries(unifiedEntries) }));
    }
  }

  private writeV2(dir: string, writes: readonly CgroupWrite[]): void {
    for (const w of writes) {
      try {
        writeCgroupFile(dir, w.file, w.value);
      } catch (err) {
        if (errnoOf(err) === "ENOENT" && w.controller !== "") {
          const enabled = readCgroupFile(dir, "cgroup.controllers");
          if (enabled !== undefined && !enabled.split(/\s+/).includes(w.controller)) {
            throw failedPrecondition(
              `cannot write ${w.file}: cgroup v2 controller ${w.controller} is not enabled for ${dir} (available: ${enabled || "none"})`,
              { cause: err },
            );
          }
        }
        throw err;
      }
    }
  }

  private freezerDir(): { dir: string; v1: boolean } {
    const v1 = this.paths.freezer;
    if (this.mode !== "v2" && v1 !== undefined) return { dir: v1, v1: true };
    const v2 = this.paths[""];
    if (v2 !== undefined) return { dir: v2, v1: false };
    throw failedPrecondition("cannot freeze: no freezer cgroup hierarchy is mounted");
  }

  async freeze(): Promise<void> {
    const { dir, v1 } = this.freezerDir();
    if (!v1) return this.freezeV2(dir, true);
    // v1 can stay FREEZING while tasks fork or join; like runc, keep rewriting FROZEN, thaw now and
    // then to let stragglers settle, and give up (thawed, never half-frozen) after many attempts.
    for (let i = 0; i < 1000; i++) {
      if (i % 50 === 49) {
        writeCgroupFile(dir, "freezer.state", "THAWED");
        await sleep(10);
      }
      writeCgroupFile(dir, "freezer.state", "FROZEN");
      const state = readCgroupFile(dir, "freezer.state");
      if (state === "FROZEN") return;
      if (state !== "FREEZING") throw unavailable(`freezer.state of ${dir} is ${state} after writing FROZEN`);
      await sleep(i < 10 ? 0 : 1);
    }
    writeCgroupFile(dir, "freezer.state", "THAWED");
    throw unavailable(`unable to freeze ${dir}: it stayed FREEZING`);
  }

  async thaw(): Promise<void> {
    const { dir, v1 } = this.freezerDir();
    if (!v1) return this.freezeV2(dir, false);
    for (let i = 0; i < 1000; i++) {
      writeCgroupFile(dir, "freezer.state", "THAWED");
      if (readCgroupFile(dir, "freezer.state") === "THAWED") return;
      await sleep(1);
    }
    throw unavailable(`unable to thaw ${dir}`);
  }

  private async freezeV2(dir: string, frozen: boolean): Promise<void> {
    writeCgroupFile(dir, "cgroup.freeze", frozen ? "1" : "0");
    // cgroup.events "frozen" turns 1 once every task has stopped; poll rather than inotify: it
    // settles within milliseconds.
    const want = frozen ? 1 : 0;
    for (let i = 0; i < 5000; i++) {
      if (readKeyedFile(dir, "cgroup.events").get("frozen") === want) return;
      await sleep(1);
    }
    throw unavailable(`${dir} did not become ${frozen ? "frozen" : "thawed"} (cgroup.events)`);
  }

  isFrozen(): boolean {
    const { dir, v1 } = this.freezerDir();
    if (v1) return readCgroupFile(dir, "freezer.state") === "FROZEN";
    return readKeyedFile(dir, "cgroup.events").get("frozen") === 1;
  }

  stats(): CgroupStats {
    const v2 = this.mode === "v2";
    const memDir = v2 ? this.paths[""] : this.paths.memory;
    const cpuDir = v2 ? this.paths[""] : this.paths.cpuacct;
    const pidsDir = v2 ? this.paths[""] : this.paths.pids;
    const stats: {
      memory?: NonNullable<CgroupStats["memory"]>;
      cpu?: NonNullable<CgroupStats["cpu"]>;
      pids?: NonNullable<CgroupStats["pids"]>;
    } = {};
    // v1 reports "unlimited" as PAGE_COUNTER_MAX pages, about 2^63.
    const limitOf = (n: number | undefined) => (n === undefined || n >= 2 ** 62 ? undefined : n);
    if (memDir !== undefined) {
      const usage = readCgroupNumber(memDir, v2 ? "memory.current" : "memory.usage_in_bytes");
      if (usage !== undefined) {
        const maxUsage = readCgroupNumber(memDir, v2 ? "memory.peak" : "memory.max_usage_in_bytes");
        const limit = limitOf(readCgroupNumber(memDir, v2 ? "memory.max" : "memory.limit_in_bytes"));
        const failcnt = v2
          ? (readKeyedFile(memDir, "memory.events").get("max") ?? 0)
          : (readCgroupNumber(memDir, "memory.failcnt") ?? 0);
        stats.memory = {
          usage,
          failcnt,
          ...(maxUsage === undefined ? {} : { maxUsage }),
          ...(limit === undefined ? {} : { limit }),
        };
      }
    }
    if (cpuDir !== undefined) {
      if (v2) {
        const s = readKeyedFile(cpuDir, "cpu.stat");
        const usage = s.get("usage_usec");
        if (usage !== undefined) {
          stats.cpu = {
            usageNanos: usage * 1000,
            userNanos: (s.get("user_usec") ?? 0) * 1000,
            systemNanos: (s.get("system_usec") ?? 0) * 1000,
            ...(s.has("nr_throttled") ? { throttledPeriods: s.get("nr_throttled") ?? 0 } : {}),
          };
        }
      } else {
        const usage = readCgroupNumber(cpuDir, "cpuacct.usage");
        if (usage !== undefined) {
          // cpuacct.stat counts USER_HZ (100 Hz on Linux) ticks.
          const ticks = readKeyedFile(cpuDir, "cpuacct.stat");
          const throttled = this.paths.cpu
            ? readKeyedFile(this.paths.cpu, "cpu.stat").get("nr_throttled")
            : undefined;
          stats.cpu = {
            usageNanos: usage,
            userNanos: (ticks.get("user") ?? 0) * 10_000_000,
            systemNanos: (ticks.get("system") ?? 0) * 10_000_000,
            ...(throttled === undefined ? {} : { throttledPeriods: throttled }),
          };
        }
      }
    }
    if (pidsDir !== undefined) {
      const current = readCgroupNumber(pidsDir, "pids.current");
      if (current !== undefined) {
        const limit = readCgroupNumber(pidsDir, "pids.max");
        stats.pids = { current, ...(limit === undefined ? {} : { limit }) };
      }
    }
    return stats;
  }

  pids(): number[] {
    const dir =
      this.paths[""] ?? this.paths.pids ?? this.paths.memory ?? this.paths.devices ?? this.dirs()[0] ?? "";
    const result: number[] = [];
    const walk = (d: string) => {
      const procs = readCgroupFile(d, "cgroup.procs");
      if (procs === undefined) return;
      for (const line of procs.split("\n")) if (line) result.push(Number(line));
      for (const entry of readdirSync(d, { withFileTypes: true })) {
        if (entry.isDirectory()) walk(join(d, entry.name));
      }
    };
    walk(dir);
    return result;
  }

  oomKillCount(): number {
    if (this.mode === "v2") {
      const dir = this.paths[""];
      return dir === undefined ? 0 : (readKeyedFile(dir, "memory.events").get("oom_kill") ?? 0);
    }
    const dir = this.paths.memory;
    // oom_kill in memory.oom_control exists since Linux 4.13.
    return dir === undefined ? 0 : (readKeyedFile(dir, "memory.oom_control").get("oom_kill") ?? 0);
  }

  async destroy(): Promise<void> {
    try {
      if (this.exists() && this.isFrozen()) await this.thaw();
    } catch {
      // Best effort: a missing freezer must not keep the directories from being removed.
    }
    let remaining = this.dirs();
    let delay = 10;
    let lastError: unknown;
    for (let attempt = 0; attempt < 8; attempt++) {
      const busy: string[] = [];
      for (const dir of remaining) {
        try {
          removeCgroupTree(dir);
        } catch (err) {
          // EBUSY: tasks still exiting (their exit is asynchronous to kill(2)); retry.
          if (errnoOf(err) !== "EBUSY") throw err;
          lastError = err;
          busy.push(dir);
        }
      }
      remaining = busy;
      if (remaining.length === 0) {
        this.#removeDefaultParents();
        return;
      }
      await sleep(delay);
      delay *= 2;
    }
    throw unavailable(`cgroups still busy (tasks left?): ${remaining.join(", ")}`, { cause: lastError });
  }

  /**
   * Removes the default parent (`/berth`) once no container uses it, so a host where every
   * container was deleted is left as it was. A parent with other children stays (rmdir fails
   * with EBUSY or ENOTEMPTY, which is ignored); a parent named by a spec's cgroupsPath is never
   * touched, like runc.
   */
  #removeDefaultParents(): void {
    for (const dir of this.dirs()) {
      const parent = dirname(dir);
      if (!parent.endsWith(DEFAULT_CGROUP_PARENT)) continue;
      try {
        rmdirSync(parent);
      } catch {
        // In use by another container, or already gone.
      }
    }
  }

  exists(): boolean {
    return this.dirs().some((d) => {
      try {
        return statSync(d).isDirectory();
      } catch {
        return false;
      }
    });
  }
}

/** rmdir of a cgroup and its sub-cgroups, deepest first; a missing directory is not an error. */
function removeCgroupTree(dir: string): void {
  let entries: Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return;
    throw toSystemError(err, "readdir", dir);
  }
  // Only sub-cgroups are directories; the control files cannot (and need not) be unlinked.
  for (const entry of entries) if (entry.isDirectory()) removeCgroupTree(join(dir, entry.name));
  try {
    rmdirSync(dir);
  } catch (err) {
    if (errnoOf(err) === "ENOENT") return;
    throw toSystemError(err, "rmdir", dir);
  }
}
