import { lastErrno, loadLibc } from "./libc.js";
import { SystemError } from "./system-error.js";

const ENODATA = 61;
const ERANGE = 34;

/** Reads an extended attribute of `path` without following a final symlink; undefined if absent. */
export function getXattr(path: string, name: string): Buffer | undefined {
  const { lgetxattr } = loadLibc();
  for (let size = 256; ; size *= 4) {
    const buf = Buffer.alloc(size);
    const n = Number(lgetxattr(path, name, buf, size));
    if (n >= 0) return buf.subarray(0, n);
    const errno = lastErrno();
    if (errno === ENODATA) return undefined;
    if (errno !== ERANGE || size > 1 << 20)
      throw new SystemError({ syscall: `lgetxattr ${name}`, errno, path });
  }
}

/** Sets an extended attribute of `path` without following a final symlink. */
export function setXattr(path: string, name: string, value: Uint8Array | string): void {
  const { lsetxattr } = loadLibc();
  const buf = typeof value === "string" ? Buffer.from(value) : value;
  if ((lsetxattr(path, name, buf, buf.length, 0) as number) !== 0) {
    throw new SystemError({ syscall: `lsetxattr ${name}`, errno: lastErrno(), path });
  }
}

/** Lists extended attribute names of `path` without following a final symlink. */
export function listXattrs(path: string): string[] {
  const { llistxattr } = loadLibc();
  for (let size = 1024; ; size *= 4) {
    const buf = Buffer.alloc(size);
    const n = Number(llistxattr(path, buf, size));
    if (n >= 0) {
      return buf
        .subarray(0, n)
        .toString("utf8")
        .split("\0")
        .filter((s) => s.length > 0);
    }
    const errno = lastErrno();
    if (errno !== ERANGE || size > 1 << 20) throw new SystemError({ syscall: "llistxattr", errno, path });
  }
}

/** Removes an extended attribute; absent attributes are not an error. */
export function removeXattr(path: string, name: string): void {
  const { lremovexattr } = loadLibc();
  if ((lremovexattr(path, name) as number) !== 0) {
    const errno = lastErrno();
    if (errno !== ENODATA) throw new SystemError({ syscall: `lremovexattr ${name}`, errno, path });
  }
}

/** Builds a device number from major and minor like glibc's `makedev`. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major);
  const mi = BigInt(minor);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

/** `mknod(2)`: creates a device node, fifo or (with S_IFCHR and dev 0) an overlay whiteout. */
export function mknod(path: string, mode: number, dev: bigint = 0n): void {
  const { mknod: sysMknod } = loadLibc();
  if ((sysMknod(path, mode, dev) as number) !== 0) {
    throw new SystemError({ syscall: "mknod", errno: lastErrno(), path });
  }
}

const AT_FDCWD = -100;
const AT_SYMLINK_NOFOLLOW = 0x100;

/**
 * `utimensat(2)` without following a final symlink: sets the access and modification times of
 * `path` to the nanosecond (Node's `lutimes` takes seconds as a double, which keeps about a
 * microsecond). Times are nanoseconds since the epoch, as `fs.lstat(path, { bigint: true })`
 * reports them in `atimeNs`/`mtimeNs`. Throws a `SystemError`.
 */
export function setTimesNs(path: string, atimeNs: bigint, mtimeNs: bigint): void {
  const { utimensat } = loadLibc();
  // struct timespec[2] on 64-bit Linux: { int64 tv_sec; int64 tv_nsec } each.
  const times = Buffer.alloc(32);
  const split = (ns: bigint, at: number) => {
    let sec = ns / 1_000_000_000n;
    let nsec = ns % 1_000_000_000n;
    if (nsec < 0n) {
      sec -= 1n;
      nsec += 1_000_000_000n;
    }
    times.writeBigInt64LE(sec, at);
    times.writeBigInt64LE(nsec, at + 8);
  };
  split(atimeNs, 0);
  split(mtimeNs, 16);
  if ((utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) as number) !== 0) {
    throw new SystemError({ syscall: "utimensat", errno: lastErrno(), path });
  }
}
