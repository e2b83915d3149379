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
  };
  return libc;
}

/** Returns the calling thread's errno right after a failed call. */
export function lastErrno(): number {
  return loadLibc().koffi.errno();
}
