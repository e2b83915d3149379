import { constants } from "node:os";
import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { lastErrno, loadProcLibc } from "./libc.js";
import { SystemError } from "./system-error.js";

/** Flags of {@link closeRange} (linux/close_range.h). */
export const CloseRangeFlag = {
  /** Unshare the fd table first (`CLOSE_RANGE_UNSHARE`). */
  UNSHARE: 2,
  /** Mark the fds close-on-exec instead of closing them (`CLOSE_RANGE_CLOEXEC`, Linux ≥ 5.11). */
  CLOEXEC: 4,
} as const;

/** The process id of the caller, as the kernel sees it now (`getpid(2)`). */
export function getpid(): number {
  return loadProcLibc().getpid() as number;
}

/**
 * `execve(2)`: replaces the process image with `path`, run with `argv` (including argv[0]) and
 * `envp` (`NAME=value` strings). Other threads die and the Node runtime is gone. `path` is used
 * as given: no PATH search. Node opens fds 0-2 close-on-exec, so clear that with
 * {@link setCloexec} first or the program starts without stdio. It returns only by throwing a `SystemError` (`ENOENT`, `EACCES`,
 * `ENOEXEC`, ...), after which the process is unchanged. Throws `invalid-argument` for a string
 * with a NUL byte (C would truncate it silently).
 */
export function execve(path: string, argv: readonly string[], envp: readonly string[]): never {
  for (const s of [path, ...argv, ...envp]) {
    if (s.includes("\0")) throw invalidArgument(`execve ${path}: argument or variable contains a NUL byte`);
  }
  loadProcLibc().execve(path, [...argv, null], [...envp, null]);
  throw new SystemError({ syscall: "execve", errno: lastErrno(), path });
}

/**
 * `close_range(2)`: closes every fd from `first` to `last` (inclusive; the default is the
 * largest), or with {@link CloseRangeFlag}.CLOEXEC only marks them close-on-exec, which is the
 * safe choice in a Node process whose libuv and V8 threads still own fds until the exec. Throws a
 * `SystemError` (`ENOSYS` before Linux 5.9, `EINVAL` for bad flags).
 */
export function closeRange(first: number, last = 0xffffffff, flags = 0): void {
  checked(loadProcLibc().closeRange(first, last, flags) as number, "close_range", {
    hint: `fds ${first}..${last} flags ${flags}`,
  });
}

const F_GETFD = 1;
const F_SETFD = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const FD_CLOEXEC = 1;
const O_NONBLOCK = 0o4000;

function fcntl(fd: number, cmd: number, arg = 0): number {
  return checked(loadProcLibc().fcntl(fd, cmd, "int", arg) as number, "fcntl", { fd });
}

/**
 * Sets or clears `FD_CLOEXEC` on `fd`. Node opens its own stdio and most fds close-on-exec, so an
 * fd meant for the exec'd program (including 0-2 after `dup2(fd, fd)`, which changes nothing)
 * needs `setCloexec(fd, false)`. Throws a `SystemError` (`EBADF`).
 */
export function setCloexec(fd: number, on: boolean): void {
  const old = fcntl(fd, F_GETFD);
  const next = on ? old | FD_CLOEXEC : old & ~FD_CLOEXEC;
  if (next !== old) fcntl(fd, F_SETFD, next);
}

/**
 * Clears (`blocking` true, the default) or sets `O_NONBLOCK` on the open file description of
 * `fd`. Node may leave stdio pipes and ttys non-blocking, and most programs misbehave on a
 * non-blocking stdin. The flag is shared by every fd that refers to the same description. Throws
 * a `SystemError` (`EBADF`).
 */
export function setBlocking(fd: number, blocking = true): void {
  const old = fcntl(fd, F_GETFL);
  const next = blocking ? old & ~O_NONBLOCK : old | O_NONBLOCK;
  if (next !== old) fcntl(fd, F_SETFL, next);
}

/**
 * `dup2(2)`: makes `newFd` refer to what `oldFd` refers to (closing `newFd` first) and returns
 * `newFd`; the new fd is not close-on-exec, except when `oldFd === newFd`, where nothing changes.
 * Throws a `SystemError` (`EBADF`).
 */
export function dup2(oldFd: number, newFd: number): number {
  for (;;) {
    const rc = loadProcLibc().dup2(oldFd, newFd) as number;
    // EBUSY and EINTR are transient races with a concurrent open/close in another thread.
    if (rc < 0 && (lastErrno() === 4 || lastErrno() === 16)) continue;
    return checked(rc, "dup2", { fd: oldFd, hint: `onto fd ${newFd}` });
  }
}

function signalNumber(sig: number | string): number {
  if (typeof sig === "number") {
    if (!Number.isInteger(sig) || sig < 0 || sig > 64) throw invalidArgument(`signal ${sig} is not in 0..64`);
    return sig;
  }
  const name = sig.startsWith("SIG") ? sig : `SIG${sig}`;
  const n = (constants.signals as Readonly<Record<string, number>>)[name];
  if (n === undefined) throw invalidArgument(`signal ${sig} is not one this system has`);
  return n;
}

/**
 * `kill(2)`: sends `sig` (a number, 0 to probe, or a name such as `"SIGTERM"` or `"TERM"`) to
 * `pid` (negative: a process group). Throws `invalid-argument` for an unknown signal and a
 * `SystemError` (`not-found` code for `ESRCH`, `EPERM` when not allowed).
 */
export function kill(pid: number, sig: number | string): void {
  const n = signalNumber(sig);
  checked(loadProcLibc().kill(pid, n) as number, "kill", { hint: `pid ${pid} signal ${n}` });
}

const SIG_SETMASK = 2;
// glibc's sigset_t is 1024 bits, whatever the kernel's _NSIG; an all-zero one is the empty set.
const SIGSET_BYTES = 128;
const SIGKILL = 9;
const SIGSTOP = 19;
const EINVAL = 22;

/**
 * Prepares the calling thread's signal state for `execve`: unblocks every signal and resets the
 * disposition of every catchable signal (1..64 but SIGKILL and SIGSTOP) to SIG_DFL. exec resets
 * handled signals by itself but keeps ignored ones and the mask, and Node ignores SIGPIPE, so
 * without this the container's process would inherit an ignored SIGPIPE. glibc reserves two
 * real-time signals (32 and 33) for itself and refuses to change them; those are skipped.
 * Call it right before exec: afterwards Node's own signal handling is gone. Throws a
 * `SystemError` if the mask cannot be set.
 */
export function resetSignalsForExec(): void {
  const { sigprocmask, signal } = loadProcLibc();
  checked(sigprocmask(SIG_SETMASK, Buffer.alloc(SIGSET_BYTES), null) as number, "sigprocmask");
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === SIGKILL || sig === SIGSTOP) continue;
    // SIG_DFL is the null handler; SIG_ERR is -1.
    if (Number(signal(sig, 0)) === -1 && lastErrno() !== EINVAL) {
      throw new SystemError({ syscall: "signal", errno: lastErrno(), hint: `signal ${sig} to SIG_DFL` });
    }
  }
}
