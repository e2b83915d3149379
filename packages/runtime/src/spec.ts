import { invalidArgument } from "@berth/errdefs";
import { Rlimit } from "@berth/sys";
import { CAPABILITIES, type CapabilityName } from "./capabilities.js";

/**
 * The OCI runtime-spec `config.json` (runtime-spec 1.0/1.1, Linux parts), as TypeScript types,
 * its validation, and the default configuration `runc spec` writes.
 */

/** `process.user`. */
export interface User {
  readonly uid: number;
  readonly gid: number;
  readonly umask?: number;
  readonly additionalGids?: readonly number[];
  readonly username?: string;
}

/** `process.capabilities`: the five capability sets, by `CAP_*` name. */
export interface LinuxCapabilities {
  readonly bounding?: readonly string[];
  readonly effective?: readonly string[];
  readonly inheritable?: readonly string[];
  readonly permitted?: readonly string[];
  readonly ambient?: readonly string[];
}

/** One entry of `process.rlimits`. */
export interface POSIXRlimit {
  /** `RLIMIT_NOFILE`, `RLIMIT_NPROC`, ... */
  readonly type: string;
  readonly hard: number;
  readonly soft: number;
}

/** `process.consoleSize`. */
export interface ConsoleSize {
  readonly height: number;
  readonly width: number;
}

/** `process`: what runs in the container (also the body of `runc exec --process`). */
export interface Process {
  readonly terminal?: boolean;
  readonly consoleSize?: ConsoleSize;
  readonly user: User;
  readonly args?: readonly string[];
  readonly commandLine?: string;
  readonly env?: readonly string[];
  readonly cwd: string;
  readonly capabilities?: LinuxCapabilities;
  readonly rlimits?: readonly POSIXRlimit[];
  readonly noNewPrivileges?: boolean;
  readonly apparmorProfile?: string;
  readonly oomScoreAdj?: number;
  readonly selinuxLabel?: string;
}

/** `root`. */
export interface Root {
  /** The rootfs, absolute or relative to the bundle. */
  readonly path: string;
  readonly readonly?: boolean;
}

/** One entry of `mounts`. */
export interface SpecMount {
  readonly destination: string;
  readonly type?: string;
  readonly source?: string;
  readonly options?: readonly string[];
  readonly uidMappings?: readonly LinuxIDMapping[];
  readonly gidMappings?: readonly LinuxIDMapping[];
}

/** One hook. */
export interface Hook {
  readonly path: string;
  readonly args?: readonly string[];
  readonly env?: readonly string[];
  readonly timeout?: number;
}

/** `hooks`. */
export interface Hooks {
  readonly prestart?: readonly Hook[];
  readonly createRuntime?: readonly Hook[];
  readonly createContainer?: readonly Hook[];
  readonly startContainer?: readonly Hook[];
  readonly poststart?: readonly Hook[];
  readonly poststop?: readonly Hook[];
}

/** Namespace types of `linux.namespaces`. */
export const NamespaceType = {
  Pid: "pid",
  Network: "network",
  Mount: "mount",
  Ipc: "ipc",
  Uts: "uts",
  User: "user",
  Cgroup: "cgroup",
  Time: "time",
} as const;
/** A namespace type of `linux.namespaces`. */
export type NamespaceType = (typeof NamespaceType)[keyof typeof NamespaceType];

/** One entry of `linux.namespaces`: a new namespace, or an existing one joined by `path`. */
export interface LinuxNamespace {
  readonly type: NamespaceType;
  readonly path?: string;
}

/** `linux.uidMappings` / `gidMappings` entries. */
export interface LinuxIDMapping {
  readonly containerID: number;
  readonly hostID: number;
  readonly size: number;
}

/** One entry of `linux.devices`: a device node to create in the container. */
export interface LinuxDevice {
  readonly path: string;
  /** `c`, `b`, `u` or `p`. */
  readonly type: string;
  readonly major?: number;
  readonly minor?: number;
  readonly fileMode?: number;
  readonly uid?: number;
  readonly gid?: number;
}

/** One entry of `linux.resources.devices` (the device cgroup allow list). */
export interface LinuxDeviceCgroup {
  readonly allow: boolean;
  readonly type?: string;
  readonly major?: number;
  readonly minor?: number;
  readonly access?: string;
}

/** `linux.resources.memory`. */
export interface LinuxMemory {
  readonly limit?: number;
  readonly reservation?: number;
  readonly swap?: number;
  readonly kernel?: number;
  readonly kernelTCP?: number;
  readonly swappiness?: number;
  readonly disableOOMKiller?: boolean;
  readonly useHierarchy?: boolean;
  readonly checkBeforeUpdate?: boolean;
}

/** `linux.resources.cpu`. */
export interface LinuxCPU {
  readonly shares?: number;
  readonly quota?: number;
  readonly burst?: number;
  readonly period?: number;
  readonly realtimeRuntime?: number;
  readonly realtimePeriod?: number;
  readonly cpus?: string;
  readonly mems?: string;
  readonly idle?: number;
}

/** `linux.resources.pids`. */
export interface LinuxPids {
  readonly limit: number;
}

/** A per-device weight of `linux.resources.blockIO`. */
export interface LinuxWeightDevice {
  readonly major: number;
  readonly minor: number;
  readonly weight?: number;
  readonly leafWeight?: number;
}

/** A per-device throttle of `linux.resources.blockIO`. */
export interface LinuxThrottleDevice {
  readonly major: number;
  readonly minor: number;
  readonly rate: number;
}

/** `linux.resources.blockIO`. */
export interface LinuxBlockIO {
  readonly weight?: number;
  readonly leafWeight?: number;
  readonly weightDevice?: readonly LinuxWeightDevice[];
  readonly throttleReadBpsDevice?: readonly LinuxThrottleDevice[];
  readonly throttleWriteBpsDevice?: readonly LinuxThrottleDevice[];
  readonly throttleReadIOPSDevice?: readonly LinuxThrottleDevice[];
  readonly throttleWriteIOPSDevice?: readonly LinuxThrottleDevice[];
}

/** One entry of `linux.resources.hugepageLimits`. */
export interface LinuxHugepageLimit {
  readonly pageSize: string;
  readonly limit: number;
}

/** `linux.resources.network`. */
export interface LinuxNetwork {
  readonly classID?: number;
  readonly priorities?: readonly { readonly name: string; readonly priority: number }[];
}

/** `linux.resources`. */
export interface LinuxResources {
  readonly devices?: readonly LinuxDeviceCgroup[];
  readonly memory?: LinuxMemory;
  readonly cpu?: LinuxCPU;
  readonly pids?: LinuxPids;
  readonly blockIO?: LinuxBlockIO;
  readonly hugepageLimits?: readonly LinuxHugepageLimit[];
  readonly network?: LinuxNetwork;
  readonly rdma?: Readonly<Record<string, { readonly hcaHandles?: number; readonly hcaObjects?: number }>>;
  readonly unified?: Readonly<Record<string, string>>;
}

/** One syscall rule of `linux.seccomp`. */
export interface LinuxSyscall {
  readonly names: readonly string[];
  readonly action: string;
  readonly errnoRet?: number;
  readonly args?: readonly {
    readonly index: number;
    readonly value: number;
    readonly valueTwo?: number;
    readonly op: string;
  }[];
}

/** `linux.seccomp`. */
export interface LinuxSeccomp {
  readonly defaultAction: string;
  readonly defaultErrnoRet?: number;
  readonly architectures?: readonly string[];
  readonly flags?: readonly string[];
  readonly listenerPath?: string;
  readonly listenerMetadata?: string;
  readonly syscalls?: readonly LinuxSyscall[];
}

/** `linux`. */
export interface Linux {
  readonly uidMappings?: readonly LinuxIDMapping[];
  readonly gidMappings?: readonly LinuxIDMapping[];
  readonly sysctl?: Readonly<Record<string, string>>;
  readonly resources?: LinuxResources;
  readonly cgroupsPath?: string;
  readonly namespaces?: readonly LinuxNamespace[];
  readonly devices?: readonly LinuxDevice[];
  readonly seccomp?: LinuxSeccomp;
  /** `private`, `rprivate`, `slave`, `rslave`, `shared`, `rshared`, `unbindable`, `runbindable`. */
  readonly rootfsPropagation?: string;
  readonly maskedPaths?: readonly string[];
  readonly readonlyPaths?: readonly string[];
  readonly mountLabel?: string;
  readonly intelRdt?: Readonly<Record<string, unknown>>;
  readonly personality?: { readonly domain: string; readonly flags?: readonly string[] };
  readonly timeOffsets?: Readonly<Record<string, { readonly secs?: number; readonly nanosecs?: number }>>;
}

/** The whole `config.json`. */
export interface Spec {
  readonly ociVersion: string;
  readonly process?: Process;
  readonly root?: Root;
  readonly hostname?: string;
  readonly domainname?: string;
  readonly mounts?: readonly SpecMount[];
  readonly hooks?: Hooks;
  readonly annotations?: Readonly<Record<string, string>>;
  readonly linux?: Linux;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function fail(field: string, message: string): never {
  throw invalidArgument(`config.json: ${field} ${message}`);
}

function checkString(v: unknown, field: string, required = false): void {
  if (v === undefined) {
    if (required) fail(field, "is required");
    return;
  }
  if (typeof v !== "string") fail(field, `must be a string, got ${JSON.stringify(v)}`);
}

function checkInt(v: unknown, field: string, required = false, min = Number.NEGATIVE_INFINITY): void {
  if (v === undefined) {
    if (required) fail(field, "is required");
    return;
  }
  if (typeof v !== "number" || !Number.isInteger(v))
    fail(field, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < min) fail(field, `must be at least ${min}, got ${v}`);
}

function checkBool(v: unknown, field: string): void {
  if (v !== undefined && typeof v !== "boolean") fail(field, `must be a boolean, got ${JSON.stringify(v)}`);
}

function checkStrings(v: unknown, field: string): void {
  if (v === undefined) return;
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string")) fail(field, "must be an array of strings");
}

function checkArray(v: unknown, field: string): readonly unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail(field, "must be an array");
  return v;
}

const namespaceTypes = new Set<string>(Object.values(NamespaceType));
const propagations = new Set([
  "private",
  "rprivate",
  "slave",
  "rslave",
  "shared",
  "rshared",
  "unbindable",
  "runbindable",
]);

/** The capability names berth knows, in bit order (linux/capability.h). */
export const CAPABILITY_NAMES: readonly CapabilityName[] = (
  Object.keys(CAPABILITIES) as CapabilityName[]
).sort((a, b) => CAPABILITIES[a] - CAPABILITIES[b]);

/**
 * Checks a process object (`process` of config.json, or `runc exec --process`). Throws
 * `invalid-argument` naming the first wrong field (`config.json: process.cwd must be absolute`).
 */
export function validateProcess(p: unknown, field = "process"): asserts p is Process {
  if (!isObject(p)) fail(field, "must be an object");
  checkBool(p.terminal, `${field}.terminal`);
  if (!isObject(p.user)) fail(`${field}.user`, "is required and must be an object");
  checkInt(p.user.uid, `${field}.user.uid`, true, 0);
  checkInt(p.user.gid, `${field}.user.gid`, true, 0);
  checkInt(p.user.umask, `${field}.user.umask`, false, 0);
  for (const [i, g] of checkArray(p.user.additionalGids, `${field}.user.additionalGids`).entries())
    checkInt(g, `${field}.user.additionalGids[${i}]`, true, 0);
  checkStrings(p.args, `${field}.args`);
  if (!Array.isArray(p.args) || p.args.length === 0)
    fail(`${field}.args`, "must name at least the program to run");
  checkStrings(p.env, `${field}.env`);
  checkString(p.cwd, `${field}.cwd`, true);
  if (!(p.cwd as string).startsWith("/"))
    fail(`${field}.cwd`, `must be absolute, got ${JSON.stringify(p.cwd)}`);
  if (p.capabilities !== undefined) {
    if (!isObject(p.capabilities)) fail(`${field}.capabilities`, "must be an object");
    // Unknown names are not an error: like runc, the runtime skips them with a warning.
    for (const set of ["bounding", "effective", "inheritable", "permitted", "ambient"] as const)
      checkStrings(p.capabilities[set], `${field}.capabilities.${set}`);
  }
  const seen = new Set<string>();
  for (const [i, r] of checkArray(p.rlimits, `${field}.rlimits`).entries()) {
    const f = `${field}.rlimits[${i}]`;
    if (!isObject(r)) fail(f, "must be an object");
    checkString(r.type, `${f}.type`, true);
    if (!Object.hasOwn(Rlimit, r.type as string)) fail(`${f}.type`, `is not a known rlimit: ${r.type}`);
    if (seen.has(r.type as string)) fail(`${f}.type`, `repeats ${r.type}`);
    seen.add(r.type as string);
    checkInt(r.hard, `${f}.hard`, true, 0);
    checkInt(r.soft, `${f}.soft`, true, 0);
    if ((r.soft as number) > (r.hard as number)) fail(f, `has soft ${r.soft} above hard ${r.hard}`);
  }
  checkBool(p.noNewPrivileges, `${field}.noNewPrivileges`);
  checkInt(p.oomScoreAdj, `${field}.oomScoreAdj`);
  if (p.oomScoreAdj !== undefined && ((p.oomScoreAdj as number) < -1000 || (p.oomScoreAdj as number) > 1000))
    fail(`${field}.oomScoreAdj`, `must be within -1000..1000, got ${p.oomScoreAdj}`);
  if (p.consoleSize !== undefined) {
    if (!isObject(p.consoleSize)) fail(`${field}.consoleSize`, "must be an object");
    checkInt(p.consoleSize.height, `${field}.consoleSize.height`, true, 0);
    checkInt(p.consoleSize.width, `${field}.consoleSize.width`, true, 0);
  }
}

/**
 * Checks a parsed config.json against the parts of the runtime spec berth executes. Throws
 * `invalid-argument` naming the first wrong field and its value. Returns the same object, typed.
 */
export function validateSpec(spec: unknown): Spec {
  if (!isObject(spec)) fail("(top level)", "must be a JSON object");
  checkString(spec.ociVersion, "ociVersion", true);
  if (!/^1\.\d+\.\d+/.test(spec.ociVersion as string))
    fail("ociVersion", `must be a 1.x version, got ${JSON.stringify(spec.ociVersion)}`);
  if (!isObject(spec.root)) fail("root", "is required on Linux");
  checkString(spec.root.path, "root.path", true);
  if (spec.root.path === "") fail("root.path", "must not be empty");
  checkBool(spec.root.readonly, "root.readonly");
  if (spec.process === undefined) fail("process", "is required to create a container");
  validateProcess(spec.process);
  checkString(spec.hostname, "hostname");
  checkString(spec.domainname, "domainname");
  for (const [i, m] of checkArray(spec.mounts, "mounts").entries()) {
    const f = `mounts[${i}]`;
    if (!isObject(m)) fail(f, "must be an object");
    checkString(m.destination, `${f}.destination`, true);
    if (!(m.destination as string).startsWith("/"))
      fail(`${f}.destination`, `must be absolute, got ${JSON.stringify(m.destination)}`);
    checkString(m.type, `${f}.type`);
    checkString(m.source, `${f}.source`);
    checkStrings(m.options, `${f}.options`);
  }
  if (spec.hooks !== undefined) {
    if (!isObject(spec.hooks)) fail("hooks", "must be an object");
    for (const [kind, list] of Object.entries(spec.hooks)) {
      for (const [i, h] of checkArray(list, `hooks.${kind}`).entries()) {
        const f = `hooks.${kind}[${i}]`;
        if (!isObject(h)) fail(f, "must be an object");
        checkString(h.path, `${f}.path`, true);
        if (!(h.path as string).startsWith("/")) fail(`${f}.path`, `must be absolute, got ${h.path}`);
        checkStrings(h.args, `${f}.args`);
        checkStrings(h.env, `${f}.env`);
        checkInt(h.timeout, `${f}.timeout`, false, 1);
      }
    }
  }
  if (spec.annotations !== undefined) {
    if (!isObject(spec.annotations) || Object.values(spec.annotations).some((v) => typeof v !== "string"))
      fail("annotations", "must map strings to strings");
  }
  const linux = spec.linux;
  if (linux !== undefined) {
    if (!isObject(linux)) fail("linux", "must be an object");
    const types = new Set<string>();
    for (const [i, ns] of checkArray(linux.namespaces, "linux.namespaces").entries()) {
      const f = `linux.namespaces[${i}]`;
      if (!isObject(ns)) fail(f, "must be an object");
      if (typeof ns.type !== "string" || !namespaceTypes.has(ns.type))
        fail(`${f}.type`, `is not a namespace type: ${JSON.stringify(ns.type)}`);
      if (types.has(ns.type)) fail(`${f}.type`, `repeats namespace ${ns.type}`);
      types.add(ns.type);
      checkString(ns.path, `${f}.path`);
      if (ns.path !== undefined && !(ns.path as string).startsWith("/"))
        fail(`${f}.path`, `must be absolute, got ${ns.path}`);
    }
    for (const key of ["uidMappings", "gidMappings"] as const) {
      for (const [i, m] of checkArray(linux[key], `linux.${key}`).entries()) {
        const f = `linux.${key}[${i}]`;
        if (!isObject(m)) fail(f, "must be an object");
        checkInt(m.containerID, `${f}.containerID`, true, 0);
        checkInt(m.hostID, `${f}.hostID`, true, 0);
        checkInt(m.size, `${f}.size`, true, 1);
      }
    }
    for (const [i, d] of checkArray(linux.devices, "linux.devices").entries()) {
      const f = `linux.devices[${i}]`;
      if (!isObject(d)) fail(f, "must be an object");
      checkString(d.path, `${f}.path`, true);
      if (!(d.path as string).startsWith("/dev/")) fail(`${f}.path`, `must be under /dev, got ${d.path}`);
      if (!["c", "b", "u", "p"].includes(d.type as string))
        fail(`${f}.type`, `must be one of c, b, u, p, got ${JSON.stringify(d.type)}`);
      if (d.type !== "p") {
        checkInt(d.major, `${f}.major`, true, 0);
        checkInt(d.minor, `${f}.minor`, true, 0);
      }
      checkInt(d.fileMode, `${f}.fileMode`, false, 0);
      checkInt(d.uid, `${f}.uid`, false, 0);
      checkInt(d.gid, `${f}.gid`, false, 0);
    }
    checkString(linux.cgroupsPath, "linux.cgroupsPath");
    if (linux.rootfsPropagation !== undefined && !propagations.has(linux.rootfsPropagation as string))
      fail(
        "linux.rootfsPropagation",
        `is not a propagation mode: ${JSON.stringify(linux.rootfsPropagation)}`,
      );
    checkStrings(linux.maskedPaths, "linux.maskedPaths");
    checkStrings(linux.readonlyPaths, "linux.readonlyPaths");
    for (const key of ["maskedPaths", "readonlyPaths"] as const) {
      for (const p of (linux[key] as string[] | undefined) ?? [])
        if (!p.startsWith("/")) fail(`linux.${key}`, `holds a relative path ${p}`);
    }
    if (linux.sysctl !== undefined) {
      if (!isObject(linux.sysctl) || Object.values(linux.sysctl).some((v) => typeof v !== "string"))
        fail("linux.sysctl", "must map strings to strings");
      for (const key of Object.keys(linux.sysctl))
        if (key.includes("/") || key.includes("..") || key === "")
          fail("linux.sysctl", `has an invalid key ${JSON.stringify(key)}`);
    }
    if (linux.resources !== undefined && !isObject(linux.resources))
      fail("linux.resources", "must be an object");
    if (linux.seccomp !== undefined) {
      if (!isObject(linux.seccomp)) fail("linux.seccomp", "must be an object");
      checkString(linux.seccomp.defaultAction, "linux.seccomp.defaultAction", true);
    }
  }
  // runc refuses a hostname without its own UTS namespace.
  const namespaces = (linux?.namespaces as LinuxNamespace[] | undefined) ?? [];
  const hasUts = namespaces.some((ns) => ns.type === "uts" && ns.path === undefined);
  if (spec.hostname !== undefined && spec.hostname !== "" && !hasUts)
    fail("hostname", "needs a new UTS namespace (linux.namespaces has no uts entry without a path)");
  if (spec.domainname !== undefined && spec.domainname !== "" && !hasUts)
    fail("domainname", "needs a new UTS namespace (linux.namespaces has no uts entry without a path)");
  return spec as unknown as Spec;
}

/** Options of {@link defaultSpec}. */
export interface DefaultSpecOptions {
  /** The rootless variant (`runc spec --rootless`): a user namespace mapping the caller. */
  readonly rootless?: boolean;
}

const defaultCaps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/**
 * The configuration `runc spec` writes (and `runc spec --rootless` with `rootless`), as a new
 * object the caller may change. The rootless mapping uses the calling process's uid and gid.
 */
export function defaultSpec(options: DefaultSpecOptions = {}): Spec {
  const rootless = options.rootless === true;
  const sysMount: SpecMount = rootless
    ? {
        destination: "/sys",
        type: "none",
        source: "/sys",
        options: ["rbind", "nosuid", "noexec", "nodev", "ro"],
      }
    : { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] };
  const devpts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"];
  if (!rootless) devpts.push("gid=5");
  const namespaces: LinuxNamespace[] = [{ type: "pid" }];
  if (!rootless) namespaces.push({ type: "network" });
  namespaces.push({ type: "ipc" }, { type: "uts" }, { type: "mount" });
  if (rootless) namespaces.push({ type: "user" });
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const linux: Linux = {
    ...(rootless
      ? {
          uidMappings: [{ containerID: 0, hostID: uid, size: 1 }],
          gidMappings: [{ containerID: 0, hostID: gid, size: 1 }],
        }
      : { resources: { devices: [{ allow: false, access: "rwm" }] } }),
    namespaces,
    maskedPaths: [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/sys/firmware",
      "/proc/scsi",
    ],
    readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
  };
  return {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: true,
      user: { uid: 0, gid: 0 },
      args: ["sh"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
      capabilities: {
        bounding: [...defaultCaps],
        effective: [...defaultCaps],
        permitted: [...defaultCaps],
        ambient: [...defaultCaps],
      },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "runc",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      {
        destination: "/dev",
        type: "tmpfs",
        source: "tmpfs",
        options: ["nosuid", "strictatime", "mode=755", "size=65536k"],
      },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: devpts },
      {
        destination: "/dev/shm",
        type: "tmpfs",
        source: "shm",
        options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
      },
      {
        destination: "/dev/mqueue",
        type: "mqueue",
        source: "mqueue",
        options: ["nosuid", "noexec", "nodev"],
      },
      sysMount,
      {
        destination: "/sys/fs/cgroup",
        type: "cgroup",
        source: "cgroup",
        options: ["nosuid", "noexec", "nodev", "relatime", "ro"],
      },
    ],
    linux,
  };
}
