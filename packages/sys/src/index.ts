/**
 * Typed libc bindings through koffi — the only package in berth that touches FFI — and the one
 * {@link SystemError} shape for syscall failures. Bindings load lazily on first use.
 *
 * @packageDocumentation
 */

export type { CapabilitySets } from "./capabilities.js";
export {
  capget,
  capset,
  dropBoundingSet,
  lastCap,
  readAmbient,
  readBoundingSet,
  setAmbient,
} from "./capabilities.js";
export {
  getegid,
  geteuid,
  getgid,
  getuid,
  setgroups,
  setresgid,
  setresuid,
  UNCHANGED_ID,
} from "./credentials.js";
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
  PropagationFlags,
  parseMountOptions,
  readMountInfo,
  unmount,
  unmountRecursive,
} from "./mount.js";
export type { NamespaceType } from "./namespaces.js";
export {
  chroot,
  joinNamespace,
  NamespaceFlag,
  namespaceFlag,
  namespacePath,
  pivotRoot,
  setdomainname,
  sethostname,
  setns,
  umask,
  unshare,
} from "./namespaces.js";
export type { StreamCodec, StreamCodecOptions } from "./native-codec.js";
export type { NetlinkSocketOptions } from "./netlink-socket.js";
export { NetlinkProtocol, NetlinkSocket, NetlinkSocketOption, SOL_NETLINK } from "./netlink-socket.js";
export type { NftablesContext, NftablesRunOptions } from "./nftables.js";
export { NftOutputFlag, nftablesAvailable, openNftables, runNftables } from "./nftables.js";
export type { PrctlArg } from "./prctl.js";
export { getChildSubreaper, getProcessName, Prctl, prctl, setProcessName } from "./prctl.js";
export {
  CloseRangeFlag,
  closeRange,
  dup2,
  execve,
  getpid,
  kill,
  resetSignalsForExec,
  setBlocking,
  setCloexec,
} from "./process.js";
export type { Pty, Winsize } from "./pty.js";
export { getWinsize, openpty, setControllingTerminal, setsid, setWinsize } from "./pty.js";
export type { RlimitName, RlimitValue } from "./rlimit.js";
export { getrlimit, RLIM_INFINITY, Rlimit, rlimitResource, setrlimit } from "./rlimit.js";
export { SeccompFilterFlag, seccompSetFilter } from "./seccomp.js";
export type { SyscallName } from "./syscalls.js";
export { SYSCALL_NUMBERS, syscallNumber } from "./syscalls.js";
export type { SystemErrorDetails } from "./system-error.js";
export { errnoName, SystemError } from "./system-error.js";
export type { ReceivedFd } from "./unix-socket.js";
export {
  acceptUnix,
  acceptUnixAsync,
  connectUnix,
  listenUnix,
  recvFd,
  sendFd,
  unixSocketPair,
} from "./unix-socket.js";
export { getXattr, listXattrs, makedev, mknod, removeXattr, setTimesNs, setXattr } from "./xattr.js";
export type { ZstdEncoderOptions } from "./zstd.js";
export { createZstdDecoder, createZstdEncoder, zstdAvailable } from "./zstd.js";
