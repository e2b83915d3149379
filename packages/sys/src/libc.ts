/**
 * The libc bindings, declared once and loaded lazily on first use. This is the only module in berth
 * that imports koffi.
 *
 * @internal
 */
import { createRequire } from "node:module";
import { BerthError } from "@berth/errdefs";
import type { LibraryHandle } from "koffi";

type Koffi = typeof import("koffi");
/** A bound C function as koffi returns it. */
type KoffiFunction = ReturnType<LibraryHandle["func"]>;

const require = createRequire(import.meta.url);

/** The typed surface of libc that berth uses. Each entry returns -1 and sets errno on failure. */
export interface Libc {
  readonly koffi: Koffi;
  /** `int flock(int fd, int operation)` */
  readonly flock: KoffiFunction;
  /** `int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)` */
  readonly mount: KoffiFunction;
  /** `int umount2(const char *target, int flags)` */
  readonly umount2: KoffiFunction;
  /** `int fsopen(const char *fsname, unsigned int flags)` (new mount API, glibc ≥ 2.36) */
  readonly fsopen: KoffiFunction;
  /** `int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)` */
  readonly fsconfig: KoffiFunction;
  /** `int fsmount(int fd, unsigned int flags, unsigned int attr_flags)` */
  readonly fsmount: KoffiFunction;
  /** `int move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags)` */
  readonly moveMount: KoffiFunction;
  /** `ssize_t lgetxattr(const char *path, const char *name, void *value, size_t size)` */
  readonly lgetxattr: KoffiFunction;
  /** `int lsetxattr(const char *path, const char *name, const void *value, size_t size, int flags)` */
  readonly lsetxattr: KoffiFunction;
  /** `ssize_t llistxattr(const char *path, char *list, size_t size)` */
  readonly llistxattr: KoffiFunction;
  /** `int lremovexattr(const char *path, const char *name)` */
  readonly lremovexattr: KoffiFunction;
  /** `int mknod(const char *path, mode_t mode, dev_t dev)` */
  readonly mknod: KoffiFunction;
  /** `int utimensat(int dirfd, const char *path, const struct timespec times[2], int flags)` */
  readonly utimensat: KoffiFunction;
}

let libc: Libc | undefined;

/**
 * Loads libc through koffi on first call. Throws `not-implemented` with a plain explanation on a
 * platform where berth's system bindings cannot exist.
 */
export function loadLibc(): Libc {
  if (libc) return libc;
  if (process.platform !== "linux") {
    throw new BerthError(
      "not-implemented",
      `@berth/sys supports Linux only; this process runs on ${process.platform}`,
    );
  }
  let koffi: Koffi;
  try {
    koffi = require("koffi") as Koffi;
  } catch (cause) {
    throw new BerthError("not-implemented", "koffi, which @berth/sys needs for libc calls, failed to load", {
      cause,
    });
  }
  const lib = koffi.load("libc.so.6");
  libc = {
    koffi,
    flock: lib.func("int flock(int fd, int operation)"),
    mount: lib.func(
      "int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const char *data)",
    ),
    umount2: lib.func("int umount2(const char *target, int flags)"),
    fsopen: lib.func("int fsopen(const char *fsname, unsigned int flags)"),
    fsconfig: lib.func("int fsconfig(int fd, unsigned int cmd, const char *key, const char *value, int aux)"),
    fsmount: lib.func("int fsmount(int fd, unsigned int flags, unsigned int attr_flags)"),
    moveMount: lib.func(
      "int move_mount(int from_dfd, const char *from_path, int to_dfd, const char *to_path, unsigned int flags)",
    ),
    lgetxattr: lib.func(
      "intptr_t lgetxattr(const char *path, const char *name, _Out_ uint8_t *value, size_t size)",
    ),
    lsetxattr: lib.func(
      "int lsetxattr(const char *path, const char *name, const uint8_t *value, size_t size, int flags)",
    ),
    llistxattr: lib.func("intptr_t llistxattr(const char *path, _Out_ uint8_t *list, size_t size)"),
    lremovexattr: lib.func("int lremovexattr(const char *path, const char *name)"),
    mknod: lib.func("int mknod(const char *path, uint32_t mode, uint64_t dev)"),
    utimensat: lib.func("int utimensat(int dirfd, const char *path, const uint8_t *times, int flags)"),
  };
  return libc;
}

/** Returns the calling thread's errno right after a failed call. */
export function lastErrno(): number {
  return loadLibc().koffi.errno();
}

/**
 * The process, namespace, credential, signal, tty and socket calls the runtime uses, declared
 * apart from {@link Libc} so that storage code never pays for binding them. Variadic entries
 * (`syscall`, `prctl`, `fcntl`, `ioctl`) take a type name before each variadic value, as koffi
 * requires. Each returns -1 and sets errno on failure unless noted.
 */
export interface ProcLibc {
  readonly koffi: Koffi;
  /** `long syscall(long number, ...)`, for calls glibc has no wrapper for (pivot_root, seccomp). */
  readonly syscall: KoffiFunction;
  /** `int unshare(int flags)` */
  readonly unshare: KoffiFunction;
  /** `int setns(int fd, int nstype)` */
  readonly setns: KoffiFunction;
  /** `int chroot(const char *path)` */
  readonly chroot: KoffiFunction;
  /** `int sethostname(const char *name, size_t len)` */
  readonly sethostname: KoffiFunction;
  /** `int setdomainname(const char *name, size_t len)` */
  readonly setdomainname: KoffiFunction;
  /** `mode_t umask(mode_t mask)`; never fails. */
  readonly umask: KoffiFunction;
  /** `int setresuid(uid_t r, uid_t e, uid_t s)`; glibc applies it to every thread of the process. */
  readonly setresuid: KoffiFunction;
  /** `int setresgid(gid_t r, gid_t e, gid_t s)`; glibc applies it to every thread of the process. */
  readonly setresgid: KoffiFunction;
  /** `int setgroups(size_t size, const gid_t *list)`; glibc applies it to every thread. */
  readonly setgroups: KoffiFunction;
  /** `uid_t getuid(void)` */
  readonly getuid: KoffiFunction;
  /** `uid_t geteuid(void)` */
  readonly geteuid: KoffiFunction;
  /** `gid_t getgid(void)` */
  readonly getgid: KoffiFunction;
  /** `gid_t getegid(void)` */
  readonly getegid: KoffiFunction;
  /** `pid_t getpid(void)` */
  readonly getpid: KoffiFunction;
  /** `int prctl(int option, ...)` */
  readonly prctl: KoffiFunction;
  /** `int capget(cap_user_header_t hdr, cap_user_data_t data)` */
  readonly capget: KoffiFunction;
  /** `int capset(cap_user_header_t hdr, const cap_user_data_t data)` */
  readonly capset: KoffiFunction;
  /** `int prlimit(pid_t pid, int resource, const struct rlimit *new, struct rlimit *old)` */
  readonly prlimit: KoffiFunction;
  /** `int execve(const char *path, char *const argv[], char *const envp[])` */
  readonly execve: KoffiFunction;
  /** `int close_range(unsigned int first, unsigned int last, int flags)` (glibc ≥ 2.34) */
  readonly closeRange: KoffiFunction;
  /** `int fcntl(int fd, int cmd, ...)` */
  readonly fcntl: KoffiFunction;
  /** `int dup2(int oldfd, int newfd)` */
  readonly dup2: KoffiFunction;
  /** `int sigprocmask(int how, const sigset_t *set, sigset_t *old)` */
  readonly sigprocmask: KoffiFunction;
  /** `sighandler_t signal(int sig, sighandler_t handler)`, handler as an integer (SIG_DFL = 0). */
  readonly signal: KoffiFunction;
  /** `int kill(pid_t pid, int sig)` */
  readonly kill: KoffiFunction;
  /** `pid_t setsid(void)` */
  readonly setsid: KoffiFunction;
  /** `int ioctl(int fd, unsigned long request, ...)` */
  readonly ioctl: KoffiFunction;
  /** `int openpty(int *master, int *slave, char *name, const struct termios *, const struct winsize *)` */
  readonly openpty: KoffiFunction;
  /** `int ptsname_r(int fd, char *buf, size_t len)`; returns an errno number, not -1. */
  readonly ptsnameR: KoffiFunction;
  /** `int socket(int domain, int type, int protocol)` */
  readonly socket: KoffiFunction;
  /** `int socketpair(int domain, int type, int protocol, int sv[2])` */
  readonly socketpair: KoffiFunction;
  /** `int connect(int fd, const struct sockaddr *addr, socklen_t len)` */
  readonly connect: KoffiFunction;
  /** `int bind(int fd, const struct sockaddr *addr, socklen_t len)` */
  readonly bind: KoffiFunction;
  /** `int listen(int fd, int backlog)` */
  readonly listen: KoffiFunction;
  /** `int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)` */
  readonly accept4: KoffiFunction;
  /** `ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)` */
  readonly sendmsg: KoffiFunction;
  /** `ssize_t recvmsg(int fd, struct msghdr *msg, int flags)` */
  readonly recvmsg: KoffiFunction;
}

let procLibc: ProcLibc | undefined;

/**
 * Binds the {@link ProcLibc} calls on first use. Throws like {@link loadLibc} on a platform
 * without them.
 */
export function loadProcLibc(): ProcLibc {
  if (procLibc) return procLibc;
  const { koffi } = loadLibc();
  const lib = koffi.load("libc.so.6");
  // openpty moved from libutil into libc in glibc 2.34; older systems still need libutil.so.1.
  let openpty: KoffiFunction;
  const openptyProto = "int openpty(int *master, int *slave, void *name, void *termp, void *winp)";
  try {
    openpty = lib.func(openptyProto);
  } catch {
    openpty = koffi.load("libutil.so.1").func(openptyProto);
  }
  procLibc = {
    koffi,
    syscall: lib.func("long syscall(long number, ...)"),
    unshare: lib.func("int unshare(int flags)"),
    setns: lib.func("int setns(int fd, int nstype)"),
    chroot: lib.func("int chroot(const char *path)"),
    sethostname: lib.func("int sethostname(const uint8_t *name, size_t len)"),
    setdomainname: lib.func("int setdomainname(const uint8_t *name, size_t len)"),
    umask: lib.func("uint32_t umask(uint32_t mask)"),
    setresuid: lib.func("int setresuid(uint32_t r, uint32_t e, uint32_t s)"),
    setresgid: lib.func("int setresgid(uint32_t r, uint32_t e, uint32_t s)"),
    setgroups: lib.func("int setgroups(size_t size, const uint32_t *list)"),
    getuid: lib.func("uint32_t getuid(void)"),
    geteuid: lib.func("uint32_t geteuid(void)"),
    getgid: lib.func("uint32_t getgid(void)"),
    getegid: lib.func("uint32_t getegid(void)"),
    getpid: lib.func("int getpid(void)"),
    prctl: lib.func("int prctl(int option, ...)"),
    capget: lib.func("int capget(uint8_t *hdr, uint8_t *data)"),
    capset: lib.func("int capset(uint8_t *hdr, const uint8_t *data)"),
    prlimit: lib.func("int prlimit(int pid, int resource, const uint8_t *newLimit, uint8_t *oldLimit)"),
    execve: lib.func("int execve(const char *path, const char **argv, const char **envp)"),
    closeRange: lib.func("int close_range(unsigned int first, unsigned int last, int flags)"),
    fcntl: lib.func("int fcntl(int fd, int cmd, ...)"),
    dup2: lib.func("int dup2(int oldfd, int newfd)"),
    sigprocmask: lib.func("int sigprocmask(int how, const uint8_t *set, uint8_t *old)"),
    signal: lib.func("intptr_t signal(int sig, intptr_t handler)"),
    kill: lib.func("int kill(int pid, int sig)"),
    setsid: lib.func("int setsid(void)"),
    ioctl: lib.func("int ioctl(int fd, unsigned long request, ...)"),
    openpty,
    ptsnameR: lib.func("int ptsname_r(int fd, uint8_t *buf, size_t len)"),
    socket: lib.func("int socket(int domain, int type, int protocol)"),
    socketpair: lib.func("int socketpair(int domain, int type, int protocol, int *sv)"),
    connect: lib.func("int connect(int fd, const uint8_t *addr, uint32_t len)"),
    bind: lib.func("int bind(int fd, const uint8_t *addr, uint32_t len)"),
    listen: lib.func("int listen(int fd, int backlog)"),
    accept4: lib.func("int accept4(int fd, void *addr, void *len, int flags)"),
    sendmsg: lib.func("intptr_t sendmsg(int fd, const uint8_t *msg, int flags)"),
    recvmsg: lib.func("intptr_t recvmsg(int fd, uint8_t *msg, int flags)"),
  };
  return procLibc;
}

/**
 * The socket calls netlink needs beyond {@link ProcLibc}'s `socket` and `bind`: datagram send and
 * receive with an address, socket options, and the bound address. Each returns -1 and sets errno
 * on failure.
 */
export interface NetlinkLibc {
  readonly koffi: Koffi;
  /** `ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t alen)` */
  readonly sendto: KoffiFunction;
  /** `ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *alen)` */
  readonly recvfrom: KoffiFunction;
  /** `int setsockopt(int fd, int level, int name, const void *value, socklen_t len)` */
  readonly setsockopt: KoffiFunction;
  /** `int getsockname(int fd, struct sockaddr *addr, socklen_t *len)` */
  readonly getsockname: KoffiFunction;
}

let netlinkLibc: NetlinkLibc | undefined;

/** Binds the {@link NetlinkLibc} calls on first use; throws like {@link loadLibc}. */
export function loadNetlinkLibc(): NetlinkLibc {
  if (netlinkLibc) return netlinkLibc;
  const { koffi } = loadLibc();
  const lib = koffi.load("libc.so.6");
  netlinkLibc = {
    koffi,
    sendto: lib.func(
      "intptr_t sendto(int fd, const uint8_t *buf, size_t len, int flags, const uint8_t *addr, uint32_t alen)",
    ),
    recvfrom: lib.func(
      "intptr_t recvfrom(int fd, uint8_t *buf, size_t len, int flags, uint8_t *addr, uint32_t *alen)",
    ),
    setsockopt: lib.func("int setsockopt(int fd, int level, int name, const uint8_t *value, uint32_t len)"),
    getsockname: lib.func("int getsockname(int fd, uint8_t *addr, uint32_t *len)"),
  };
  return netlinkLibc;
}

/**
 * A lazy, memoised loader for an optional shared library (libzstd, libdeflate, ISA-L,
 * libnftables): the first call loads `soname` through koffi and binds its functions with `bind`
 * (which may also check the library, e.g. with a known-answer test, by throwing); later calls
 * return the same bindings, or rethrow the same `not-implemented` error naming the library and the
 * Debian package that provides it. Nothing is loaded until the first call.
 *
 * @internal
 */
export function optionalLibrary<T>(
  soname: string,
  debianPackage: string,
  bind: (lib: LibraryHandle) => T,
): () => T {
  let bound: T | undefined;
  let failure: BerthError | undefined;
  return () => {
    if (bound !== undefined) return bound;
    if (failure !== undefined) throw failure;
    const { koffi } = loadLibc();
    try {
      bound = bind(koffi.load(soname));
      return bound;
    } catch (cause) {
      const why = cause instanceof Error ? `: ${cause.message}` : "";
      failure = new BerthError(
        "not-implemented",
        `${soname} could not be loaded (install the Debian package ${debianPackage})${why}`,
        { cause },
      );
      throw failure;
    }
  };
}
