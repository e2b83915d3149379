import { closeSync, constants, mkdirSync, openSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { alreadyExists, invalidArgument, notFound } from "@berth/errdefs";
import { MountFlag, mount, NamespaceFlag, setns, unmount, unshare } from "@berth/sys";

/**
 * A network namespace to act in: the path of a namespace file (a bind mount made by
 * {@link createNetns}, `/proc/PID/ns/net`, `/var/run/netns/NAME`), or an open file descriptor of
 * one, which stays owned by the caller.
 */
export type NetnsRef = string | number;

/**
 * The calling thread's own network namespace file. `/proc/thread-self` rather than `/proc/self`:
 * only the calling thread changes namespace with setns/unshare, and `/proc/self` names the main
 * thread, which differs from the caller inside a worker thread.
 */
export const CURRENT_NETNS = "/proc/thread-self/ns/net";

// libuv opens every file close-on-exec, so no O_CLOEXEC is needed below.
function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && (err as NodeJS.ErrnoException).code === code;
}

/**
 * Opens the network namespace file at `path` and returns its descriptor (close-on-exec; the caller
 * closes it). Throws `not-found` naming the path when it does not exist; a file that is not a
 * network namespace is only detected when it is used (setns then fails with `EINVAL`).
 */
export function openNetns(path: string): number {
  try {
    return openSync(path, "r");
  } catch (err) {
    if (isErrno(err, "ENOENT")) throw notFound(`network namespace ${path} does not exist`, { cause: err });
    throw err;
  }
}

/** Creates the empty file a namespace is bind-mounted onto; `already-exists` when `path` exists. */
function createMountPoint(path: string): void {
  if (path === "") throw invalidArgument("network namespace path is empty");
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  try {
    closeSync(openSync(path, constants.O_RDONLY | constants.O_CREAT | constants.O_EXCL, 0o444));
  } catch (err) {
    if (isErrno(err, "EEXIST")) throw alreadyExists(`network namespace file ${path} exists`, { cause: err });
    throw err;
  }
}

/**
 * Creates a new, empty network namespace (only a down `lo` in it) and pins it by bind-mounting it
 * onto `path`, a new file (its parent directories are created 0700 when missing). The calling
 * thread is moved into the new namespace with `unshare(CLONE_NEWNET)` just long enough for the
 * bind mount, then back with `setns`; the rest of the process never leaves its namespace.
 *
 * The namespace lives until {@link deleteNetns} unmounts and removes `path` and nothing else
 * (a process, an open fd, a socket) holds it. Throws `already-exists` when `path` exists, a
 * `SystemError` from unshare or mount (`EPERM` without CAP_SYS_ADMIN); on failure nothing is left
 * behind.
 */
export function createNetns(path: string): void {
  createMountPoint(path);
  let created = false;
  const original = openSync(CURRENT_NETNS, "r");
  try {
    unshare(NamespaceFlag.CLONE_NEWNET);
    try {
      mount(CURRENT_NETNS, path, null, MountFlag.BIND, null);
      created = true;
    } finally {
      // Back to where the caller was, whatever happened; the new namespace survives only if the
      // bind mount above pins it.
      setns(original, NamespaceFlag.CLONE_NEWNET);
    }
  } finally {
    closeSync(original);
    if (!created) unlinkSync(path);
  }
}

/**
 * Pins an existing network namespace (`source`: `/proc/PID/ns/net`, another pin) by bind-mounting
 * it onto `path`, a new file (parent directories are created 0700), so that it can be named by path
 * and outlives the processes in it until {@link deleteNetns}. Throws `already-exists` when `path`
 * exists, a `SystemError` from mount (code `not-found` when `source` does not exist); on failure nothing is
 * left behind.
 */
export function pinNetns(source: string, path: string): void {
  createMountPoint(path);
  try {
    mount(source, path, null, MountFlag.BIND, null);
  } catch (err) {
    // A SystemError already: ENOENT for a missing source maps to `not-found`.
    unlinkSync(path);
    throw err;
  }
}

/**
 * Removes a namespace made by {@link createNetns}: detaches the bind mount at `path` and unlinks the
 * file. Idempotent: returns false when `path` did not exist, true when it removed it. The namespace
 * itself goes away once nothing else holds it. Throws a `SystemError` for other failures (`EBUSY`
 * never happens: the unmount is lazy).
 */
export function deleteNetns(path: string): boolean {
  // EINVAL (not a mount point, e.g. a half-finished create) and ENOENT are not errors here.
  unmount(path, { detach: true, ignoreMissing: true });
  try {
    unlinkSync(path);
    return true;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return false;
    throw err;
  }
}

/** `T` unless it is a promise: {@link withNetns} must not outlive its synchronous body. */
export type NotPromise<T> = T extends PromiseLike<unknown> ? never : T;

/**
 * Runs `fn` with the calling thread moved into the network namespace `netns` and moves it back
 * before returning or throwing. Everything `fn` creates that binds to a namespace at creation
 * (sockets, netlink sockets, files under /proc/sys/net opened now) stays in `netns` afterwards.
 *
 * `fn` must be synchronous: the event loop does not turn while the thread is away, so no other
 * code of this process ever runs in `netns` by accident. A function that returns a promise is
 * rejected with `invalid-argument` (after the thread is back). Throws `not-found` for a missing
 * path, a `SystemError` from setns (`EINVAL` when `netns` is not a network namespace), or what
 * `fn` throws.
 */
export function withNetns<T>(netns: NetnsRef, fn: () => NotPromise<T>): NotPromise<T> {
  const original = openSync(CURRENT_NETNS, "r");
  let target = -1;
  try {
    target = typeof netns === "number" ? netns : openNetns(netns);
    setns(target, NamespaceFlag.CLONE_NEWNET);
    let result: NotPromise<T>;
    try {
      result = fn();
    } finally {
      setns(original, NamespaceFlag.CLONE_NEWNET);
    }
    if (typeof (result as { then?: unknown } | null)?.then === "function")
      throw invalidArgument(
        `withNetns ${String(netns)}: the function returned a promise; it must be synchronous`,
      );
    return result;
  } finally {
    closeSync(original);
    if (typeof netns === "string" && target >= 0) closeSync(target);
  }
}
