/**
 * Typed libc bindings through koffi — the only package in berth that touches FFI — and the one
 * {@link SystemError} shape for syscall failures. Bindings load lazily on first use.
 *
 * @packageDocumentation
 */

export { libdeflateAvailable, libdeflateGunzip, libdeflateGzip } from "./deflate.js";
export { fsyncDir, fsyncDirSync } from "./fs.js";
export { createIsalGunzip, isalAvailable } from "./isal.js";
export type { FileLock, LockMode } from "./lock.js";
export { lockFile, tryLockFile } from "./lock.js";
export type { Mount, MountInfo, ParsedMountOptions, UnmountOptions } from "./mount.js";
export {
  MountFlag,
  mount,
  mountAll,
  mountOne,
  parseMountOptions,
  readMountInfo,
  unmount,
  unmountRecursive,
} from "./mount.js";
export type { StreamCodec, StreamCodecOptions } from "./native-codec.js";
export type { SystemErrorDetails } from "./system-error.js";
export { errnoName, SystemError } from "./system-error.js";
export { getXattr, listXattrs, makedev, mknod, removeXattr, setXattr } from "./xattr.js";
export type { ZstdEncoderOptions } from "./zstd.js";
export { createZstdDecoder, createZstdEncoder, zstdAvailable } from "./zstd.js";
