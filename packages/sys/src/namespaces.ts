import { closeSync, openSync } from "node:fs";
import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";
import { syscallNumber } from "./syscalls.js";

/** The `CLONE_NEW*` flags of `unshare(2)` and `setns(2)` (linux/sched.h). */
export const NamespaceFlag = {
  CLONE_NEWTIME: 0x80,
  CLONE_NEWNS: 0x20000,
  CLONE_NEWCGROUP: 0x2000000,
  CLONE_NEWUTS: 0x4000000,
  CLONE_NEWIPC: 0x8000000,
  CLONE_NEWUSER: 0x10000000,
  CLONE_NEWPID: 0x20000000,
  CLONE_NEWNET: 0x40000000,
} as const;

/**
 * A namespace type as the OCI runtime spec names it (`linux.namespaces[].type`), or as
 * `/proc/PID/ns/` names it (`mnt`, `net`); both spellings are accepted everywhere.
 */
export type NamespaceType =
  | "pid"
  | "network"
  | "net"
  | "mount"
  | "mnt"
  | "ipc"
  | "uts"
  | "user"
  | "cgroup"
  | "time";

const procNames: Readonly<Record<NamespaceType, string>> = {
  pid: "pid",
  network: "net",
  net: "net",
  mount: "mnt",
  mnt: "mnt",
  ipc: "ipc",
  uts: "uts",
  user: "user",
  cgroup: "cgroup",
  time: "time",
};

const flags: Readonly<Record<NamespaceType, number>> = {
  pid: NamespaceFlag.CLONE_NEWPID,
  network: NamespaceFlag.CLONE_NEWNET,
  net: NamespaceFlag.CLONE_NEWNET,
  mount: NamespaceFlag.CLONE_NEWNS,
  mnt: NamespaceFlag.CLONE_NEWNS,
  ipc: NamespaceFlag.CLONE_NEWIPC,
  uts: NamespaceFlag.CLONE_NEWUTS,
  user: NamespaceFlag.CLONE_NEWUSER,
  cgroup: NamespaceFlag.CLONE_NEWCGROUP,
  time: NamespaceFlag.CLONE_NEWTIME,
};

function known(type: string): type is NamespaceType {
  return Object.hasOwn(procNames, type);
}

/**
 * The `CLONE_NEW*` flag of a namespace type (`"network"` → `CLONE_NEWNET`). Throws
 * `invalid-argument` for a type that is neither an OCI nor a /proc name.
 */
export function namespaceFlag(type: NamespaceType): number {
  if (!known(type)) throw invalidArgument(`namespace type ${String(type)} is not one Linux has`);
  return flags[type];
}

/**
 * The path of a process's namespace file: `namespacePath(1234, "network")` is `/proc/1234/ns/net`.
 * `pid` may be `"self"`; for `"pid"` this is the namespace the process lives in, not the one its
 * children get after an `unshare(CLONE_NEWPID)` (that one is `pid_for_children`). Throws
 * `invalid-argument` for an unknown type; does not check that the process exists.
 */
export function namespacePath(pid: number | "self", type: NamespaceType): string {
  if (!known(type)) throw invalidArgument(`namespace type ${String(type)} is not one Linux has`);
  return `/proc/${pid}/ns/${procNames[type]}`;
}

/**
 * `unshare(2)`: moves the calling thread (for Node, the main thread) into new namespaces, a bitwise
 * OR of {@link NamespaceFlag} values. `CLONE_NEWPID` and `CLONE_NEWTIME` affect only children
 * started afterwards. Only the calling thread moves: libuv's worker threads, which run Node's
 * asynchronous fs calls, stay in the old mount namespace, so after `CLONE_NEWNS` use the
 * synchronous fs functions (tested in namespaces.test.ts). Throws a `SystemError`: `EINVAL` for `CLONE_NEWUSER` in a multithreaded
 * process (every Node process is one), `EPERM` without CAP_SYS_ADMIN.
 */
export function unshare(flags: number): void {
  checked(loadProcLibc().unshare(flags) as number, "unshare", { hint: `flags 0x${flags.toString(16)}` });
}

/**
 * `setns(2)`: moves the calling thread into the namespace that `fd` (an open `/proc/PID/ns/*`
 * file or a pidfd) refers to. `nstype` is one {@link NamespaceFlag} value the namespace must
 * match, or 0 for any. Throws a `SystemError`; `EINVAL` for a mount or user namespace in a
 * multithreaded process. The caller owns and closes `fd`.
 */
export function setns(fd: number, nstype: number): void {
  checked(loadProcLibc().setns(fd, nstype) as number, "setns", { fd });
}

/**
 * Joins the namespace at `path` (e.g. {@link namespacePath}`(pid, "net")` or a bind-mounted
 * namespace file) with {@link setns}, checking that it is of `type`. Throws `not-found` when the
 * path does not exist and a `SystemError` when setns fails.
 */
export function joinNamespace(path: string, type: NamespaceType): void {
  const nstype = namespaceFlag(type);
  // libuv opens every file close-on-exec.
  const fd = openSync(path, "r");
  try {
    checked(loadProcLibc().setns(fd, nstype) as number, "setns", { path });
  } finally {
    closeSync(fd);
  }
}

/**
 * `pivot_root(2)` through `syscall(2)` (glibc has no wrapper): makes `newRoot` the root of the
 * calling process's mount namespace and moves the old root to `putOld`, which must be at or under
 * `newRoot`. `newRoot` must be a mount point and neither it nor the current root may have shared
 * propagation. The common form is `pivotRoot(".", ".")` after `chdir(newRoot)`, then
 * `umount2(".", MNT_DETACH)`. Throws a `SystemError` (`EINVAL` when the preconditions fail).
 */
export function pivotRoot(newRoot: string, putOld: string): void {
  const { syscall } = loadProcLibc();
  const rc = Number(syscall(syscallNumber("pivot_root"), "const char *", newRoot, "const char *", putOld));
  checked(rc, "pivot_root", {
    path: newRoot,
    hint: `put_old ${putOld}; new root must be a mount point, not shared`,
  });
}

/** `chroot(2)`. Throws a `SystemError`; does not change the working directory (chdir after). */
export function chroot(path: string): void {
  checked(loadProcLibc().chroot(path) as number, "chroot", { path });
}

/**
 * `sethostname(2)` in the calling thread's UTS namespace. Throws `invalid-argument` for a name
 * longer than 64 bytes and a `SystemError` otherwise (`EPERM` without CAP_SYS_ADMIN in the UTS
 * namespace's owner).
 */
export function sethostname(name: string): void {
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length > 64) throw invalidArgument(`hostname ${name} is longer than 64 bytes`);
  checked(loadProcLibc().sethostname(bytes, bytes.length) as number, "sethostname", { path: name });
}

/** `setdomainname(2)`, like {@link sethostname}: at most 64 bytes, `SystemError` on failure. */
export function setdomainname(name: string): void {
  const bytes = Buffer.from(name, "utf8");
  if (bytes.length > 64) throw invalidArgument(`domain name ${name} is longer than 64 bytes`);
  checked(loadProcLibc().setdomainname(bytes, bytes.length) as number, "setdomainname", { path: name });
}

/**
 * `umask(2)`: sets the process's file mode creation mask and returns the previous one. Never
 * fails. (Node's `process.umask(mask)` does the same; this one exists for symmetry with the other
 * pre-exec calls and accepts only a number.)
 */
export function umask(mask: number): number {
  if (!Number.isInteger(mask) || mask < 0 || mask > 0o777)
    throw invalidArgument(`umask ${mask} is not in 0..0o777`);
  return loadProcLibc().umask(mask) as number;
}
