import { closeSync, mkdirSync, readFileSync } from "node:fs";
import { invalidArgument } from "@berth/errdefs";
import { lastErrno, loadLibc } from "./libc.js";
import { SystemError } from "./system-error.js";

/**
 * A mount described as data, the way containerd's snapshotters return them: `type` (`overlay`,
 * `bind`, `tmpfs`, ...), `source`, and fstab-style `options` (`ro`, `rbind`, `lowerdir=...`).
 * Snapshotters produce these; {@link mountAll} performs them.
 */
export interface Mount {
  readonly type: string;
  readonly source: string;
  /** Where to mount, relative to the target given to {@link mountAll}; the target itself if absent. */
  readonly target?: string;
  readonly options: readonly string[];
}

/** Mount flags of `mount(2)` (linux/mount.h). */
export const MountFlag = {
  RDONLY: 1,
  NOSUID: 2,
  NODEV: 4,
  NOEXEC: 8,
  SYNCHRONOUS: 16,
  REMOUNT: 32,
  MANDLOCK: 64,
  DIRSYNC: 128,
  NOSYMFOLLOW: 256,
  NOATIME: 1024,
  NODIRATIME: 2048,
  BIND: 4096,
  MOVE: 8192,
  REC: 16384,
  SILENT: 32768,
  UNBINDABLE: 1 << 17,
  PRIVATE: 1 << 18,
  SLAVE: 1 << 19,
  SHARED: 1 << 20,
  RELATIME: 1 << 21,
  STRICTATIME: 1 << 24,
  LAZYTIME: 1 << 25,
} as const;

const F = MountFlag;

// fstab option → [clear?, flag]. Options not listed here are passed to the filesystem as data.
const flagOptions: Readonly<Record<string, readonly [boolean, number]>> = {
  async: [true, F.SYNCHRONOUS],
  atime: [true, F.NOATIME],
  bind: [false, F.BIND],
  defaults: [false, 0],
  dev: [true, F.NODEV],
  diratime: [true, F.NODIRATIME],
  dirsync: [false, F.DIRSYNC],
  exec: [true, F.NOEXEC],
  mand: [false, F.MANDLOCK],
  noatime: [false, F.NOATIME],
  nodev: [false, F.NODEV],
  nodiratime: [false, F.NODIRATIME],
  noexec: [false, F.NOEXEC],
  nomand: [true, F.MANDLOCK],
  norelatime: [true, F.RELATIME],
  nostrictatime: [true, F.STRICTATIME],
  nosuid: [false, F.NOSUID],
  nosymfollow: [false, F.NOSYMFOLLOW],
  rbind: [false, F.BIND | F.REC],
  relatime: [false, F.RELATIME],
  remount: [false, F.REMOUNT],
  ro: [false, F.RDONLY],
  rw: [true, F.RDONLY],
  silent: [false, F.SILENT],
  strictatime: [false, F.STRICTATIME],
  suid: [true, F.NOSUID],
  sync: [false, F.SYNCHRONOUS],
  lazytime: [false, F.LAZYTIME],
};

/** Mount propagation options (`rslave`, `private`, ...) and the `mount(2)` flags each stands for. */
export const PropagationFlags: Readonly<Record<string, number>> = {
  private: F.PRIVATE,
  rprivate: F.PRIVATE | F.REC,
  shared: F.SHARED,
  rshared: F.SHARED | F.REC,
  slave: F.SLAVE,
  rslave: F.SLAVE | F.REC,
  unbindable: F.UNBINDABLE,
  runbindable: F.UNBINDABLE | F.REC,
};

/** fstab options split into `mount(2)` flags, a propagation change, and filesystem data. */
export interface ParsedMountOptions {
  readonly flags: number;
  /** Propagation flags to apply with a second `mount(2)` call (they cannot be combined). */
  readonly propagation: number;
  /** Filesystem-specific options, comma-joined, e.g. `lowerdir=/a:/b,upperdir=/u`. */
  readonly data: string[];
}

/** Splits fstab-style options into flags, propagation and data (like containerd's parseMountOptions). */
export function parseMountOptions(options: readonly string[]): ParsedMountOptions {
  let flags = 0;
  let propagation = 0;
  const data: string[] = [];
  for (const option of options) {
    const flag = flagOptions[option];
    if (flag) {
      const [clear, bit] = flag;
      flags = clear ? flags & ~bit : flags | bit;
    } else if (PropagationFlags[option] !== undefined) {
      propagation |= PropagationFlags[option] ?? 0;
    } else {
      data.push(option);
    }
  }
  return { flags, propagation, data };
}

function check(rc: number, syscall: string, path: string, hint?: string): void {
  if (rc < 0) throw new SystemError({ syscall, errno: lastErrno(), path, ...(hint ? { hint } : {}) });
}

/** `mount(2)`. Throws {@link SystemError} naming the target. */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  const { mount: sysMount } = loadLibc();
  check(sysMount(source, target, fstype, flags, data) as number, `mount ${fstype ?? "(none)"} on`, target);
}

/** Flags of {@link unmount}. */
export interface UnmountOptions {
  /** MNT_DETACH: lazily detach even if busy. */
  readonly detach?: boolean;
  /** Ignore EINVAL (not a mount point) and ENOENT. */
  readonly ignoreMissing?: boolean;
}

const MNT_DETACH = 2;
const UMOUNT_NOFOLLOW = 8;

/** `umount2(2)` without following a final symlink. */
export function unmount(target: string, options: UnmountOptions = {}): void {
  const { umount2 } = loadLibc();
  const rc = umount2(target, UMOUNT_NOFOLLOW | (options.detach ? MNT_DETACH : 0)) as number;
  if (rc === 0) return;
  const errno = lastErrno();
  if (options.ignoreMissing && (errno === 22 || errno === 2)) return;
  throw new SystemError({ syscall: "umount2", errno, path: target });
}

/** One line of /proc/self/mountinfo. */
export interface MountInfo {
  readonly id: number;
  readonly parent: number;
  readonly mountPoint: string;
  readonly fstype: string;
  readonly source: string;
  readonly options: string;
  readonly superOptions: string;
}

// mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
const unescapeMountField = (s: string) =>
  s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));

/** Parses /proc/self/mountinfo (or another process's). */
export function readMountInfo(pid: number | "self" = "self"): MountInfo[] {
  const text = readFileSync(`/proc/${pid}/mountinfo`, "utf8");
  const result: MountInfo[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [left, right] = line.split(" - ");
    const a = (left ?? "").split(" ");
    const b = (right ?? "").split(" ");
    result.push({
      id: Number(a[0]),
      parent: Number(a[1]),
      mountPoint: unescapeMountField(a[4] ?? ""),
      options: a[5] ?? "",
      fstype: b[0] ?? "",
      source: unescapeMountField(b[1] ?? ""),
      superOptions: b[2] ?? "",
    });
  }
  return result;
}

/** Unmounts everything mounted at or below `target`, deepest first. */
export function unmountRecursive(target: string, options: UnmountOptions = {}): void {
  const prefix = target.endsWith("/") ? target : `${target}/`;
  const below = readMountInfo()
    .map((m) => m.mountPoint)
    .filter((p) => p === target || p.startsWith(prefix))
    .sort((x, y) => y.length - x.length);
  for (const point of below) unmount(point, { ...options, ignoreMissing: true });
}

// Beyond this, overlay's option string no longer fits the page mount(2) copies from user space.
const MOUNT_DATA_LIMIT = 4095;
const FSCONFIG_SET_FLAG = 0;
const FSCONFIG_SET_STRING = 1;
const FSCONFIG_CMD_CREATE = 6;
const FSOPEN_CLOEXEC = 1;
const FSMOUNT_CLOEXEC = 1;
const MOVE_MOUNT_F_EMPTY_PATH = 4;
const MOUNT_ATTR_RDONLY = 1;
const MOUNT_ATTR_NOSUID = 2;
const MOUNT_ATTR_NODEV = 4;
const MOUNT_ATTR_NOEXEC = 8;

/**
 * Mounts overlayfs with the new mount API: each lower directory is passed on its own
 * (`lowerdir+`, Linux ≥ 6.8), so the number of layers is not limited by the one-page option
 * string of `mount(2)`.
 */
function mountOverlayFsconfig(target: string, data: readonly string[], flags: number): void {
  const { fsopen, fsconfig, fsmount, moveMount } = loadLibc();
  const fs = fsopen("overlay", FSOPEN_CLOEXEC) as number;
  check(fs, "fsopen overlay for", target);
  try {
    for (const option of data) {
      const eq = option.indexOf("=");
      const key = eq < 0 ? option : option.slice(0, eq);
      const value = eq < 0 ? null : option.slice(eq + 1);
      if (key === "lowerdir" && value !== null) {
        // lowerdir+ takes one directory per call; ':' in a path needs no escaping there.
        for (const dir of value.split(":")) {
          check(
            fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir+", dir, 0) as number,
            "fsconfig lowerdir+",
            dir,
            "overlayfs needs Linux 6.8 or newer for lowerdir+",
          );
        }
      } else if (value === null) {
        check(fsconfig(fs, FSCONFIG_SET_FLAG, key, null, 0) as number, `fsconfig ${key} for`, target);
      } else {
        check(fsconfig(fs, FSCONFIG_SET_STRING, key, value, 0) as number, `fsconfig ${key} for`, target);
      }
    }
    check(fsconfig(fs, FSCONFIG_CMD_CREATE, null, null, 0) as number, "fsconfig create overlay for", target);
    let attrs = 0;
    if (flags & F.RDONLY) attrs |= MOUNT_ATTR_RDONLY;
    if (flags & F.NOSUID) attrs |= MOUNT_ATTR_NOSUID;
    if (flags & F.NODEV) attrs |= MOUNT_ATTR_NODEV;
    if (flags & F.NOEXEC) attrs |= MOUNT_ATTR_NOEXEC;
    const mnt = fsmount(fs, FSMOUNT_CLOEXEC, attrs) as number;
    check(mnt, "fsmount overlay for", target);
    try {
      check(
        moveMount(mnt, "", -100, target, MOVE_MOUNT_F_EMPTY_PATH) as number,
        "move_mount overlay to",
        target,
      );
    } finally {
      closeSync(mnt);
    }
  } finally {
    closeSync(fs);
  }
}

/**
 * Performs one {@link Mount} at `target` (created if missing). Bind mounts with `ro` are
 * remounted read-only (the kernel ignores MS_RDONLY on the first bind); propagation options are
 * applied with a second call; overlay mounts whose options exceed one page use the new mount API.
 */
export function mountOne(m: Mount, target: string): void {
  const { flags, propagation, data } = parseMountOptions(m.options);
  mkdirSync(target, { recursive: true });
  const joined = data.join(",");
  if (m.type === "overlay" && joined.length > MOUNT_DATA_LIMIT) {
    mountOverlayFsconfig(target, data, flags);
  } else {
    const isBind = (flags & F.BIND) !== 0 || m.type === "bind" || m.type === "rbind";
    const bindFlags = m.type === "rbind" ? F.BIND | F.REC : F.BIND;
    const effective = isBind ? flags | bindFlags : flags;
    mount(isBind ? m.source : m.source || m.type, target, isBind ? null : m.type, effective, joined || null);
    if (isBind && (effective & (F.RDONLY | F.NOSUID | F.NODEV | F.NOEXEC)) !== 0) {
      mount(null, target, null, (effective & ~F.REC) | F.REMOUNT | F.BIND, null);
    }
  }
  if (propagation !== 0) mount(null, target, null, propagation, null);
}

/**
 * Mounts `mounts` in order at `target` (each at `target/<m.target>` when it names one). On
 * failure, whatever this call mounted is unmounted again before the error is thrown.
 */
export function mountAll(mounts: readonly Mount[], target: string): void {
  const done: string[] = [];
  try {
    for (const m of mounts) {
      if (m.target !== undefined && (m.target.includes("..") || m.target.startsWith("/"))) {
        throw invalidArgument(
          `mount target ${JSON.stringify(m.target)} must be relative and stay inside ${target}`,
        );
      }
      const where = m.target ? `${target}/${m.target}` : target;
      mountOne(m, where);
      done.push(where);
    }
  } catch (err) {
    for (const where of done.reverse()) unmount(where, { detach: true, ignoreMissing: true });
    throw err;
  }
}
