import { closeSync } from "node:fs";
import { dataLoss, invalidArgument } from "@berth/errdefs";
import { checked, interrupted } from "./checked.js";
import { lastErrno, loadProcLibc } from "./libc.js";
import { SystemError } from "./system-error.js";

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const EISCONN = 106;
// Room for this many fds in one received SCM_RIGHTS message; extra ones are closed.
const MAX_FDS = 16;

// The layouts below are those of every 64-bit Linux ABI (x86_64, aarch64): pointers and size_t are
// 8 bytes. struct msghdr: name@0 namelen@8 iov@16 iovlen@24 control@32 controllen@40 flags@48.
// struct cmsghdr: len(size_t)@0 level@8 type@12 data@16. struct iovec: base@0 len@8.
const MSGHDR_SIZE = 56;
const CMSG_HEADER = 16;
const cmsgSpace = (bytes: number): number => CMSG_HEADER + ((bytes + 7) & ~7);

function sockaddrUn(path: string): Buffer {
  const bytes = Buffer.from(path, "utf8");
  // sun_path is 108 bytes including the terminating NUL.
  if (bytes.length === 0 || bytes.length > 107 || bytes.includes(0)) {
    throw invalidArgument(`unix socket path ${path} is empty, has a NUL byte or is longer than 107 bytes`);
  }
  const addr = Buffer.alloc(2 + bytes.length + 1);
  addr.writeUInt16LE(AF_UNIX, 0);
  bytes.copy(addr, 2);
  return addr;
}

function newSocket(): number {
  return checked(loadProcLibc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number, "socket");
}

/**
 * A connected pair of unix stream sockets (`socketpair(2)`), both close-on-exec. The caller owns
 * and closes both. Throws a `SystemError` (`EMFILE`).
 */
export function unixSocketPair(): [number, number] {
  const sv = new Int32Array(2);
  checked(loadProcLibc().socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) as number, "socketpair");
  return [sv[0] ?? -1, sv[1] ?? -1];
}

/**
 * Connects a new close-on-exec unix stream socket to `path` and returns its fd (the caller
 * closes it). Throws `invalid-argument` for a path that does not fit `sun_path` and a
 * `SystemError` (`ENOENT`, `ECONNREFUSED`).
 */
export function connectUnix(path: string): number {
  const addr = sockaddrUn(path);
  const fd = newSocket();
  try {
    for (;;) {
      if ((loadProcLibc().connect(fd, addr, addr.length) as number) === 0) return fd;
      // After EINTR the connection goes on in the background; a retry then reports EISCONN.
      if (interrupted()) continue;
      if (lastErrno() === EISCONN) return fd;
      throw new SystemError({ syscall: "connect", errno: lastErrno(), path });
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Creates a close-on-exec unix stream socket listening at `path` (which must not exist) and
 * returns its fd; the caller closes it and unlinks `path`. Throws `invalid-argument` for a path
 * that does not fit and a `SystemError` (`EADDRINUSE` when `path` exists).
 */
export function listenUnix(path: string, backlog = 16): number {
  const addr = sockaddrUn(path);
  const fd = newSocket();
  try {
    checked(loadProcLibc().bind(fd, addr, addr.length) as number, "bind", { path });
    checked(loadProcLibc().listen(fd, backlog) as number, "listen", { path });
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Accepts one connection on the listening socket `fd` and returns the connected socket, close-on-
 * exec (the caller closes it). It blocks the calling thread until a peer connects, so call it
 * when a connection is known to be pending; {@link acceptUnixAsync} waits on a worker thread.
 * Throws a `SystemError`.
 */
export function acceptUnix(fd: number): number {
  for (;;) {
    const rc = loadProcLibc().accept4(fd, null, null, SOCK_CLOEXEC) as number;
    if (rc < 0 && interrupted()) continue;
    return checked(rc, "accept4", { fd });
  }
}

/**
 * Like {@link acceptUnix}, but the wait runs on a libuv worker thread, so the event loop keeps
 * turning. Closing `fd` does not wake the wait: connect to it instead to unblock it.
 */
export async function acceptUnixAsync(fd: number): Promise<number> {
  const { accept4, koffi } = loadProcLibc();
  for (;;) {
    const { rc, errno } = await new Promise<{ rc: number; errno: number }>((resolve, reject) => {
      accept4.async(fd, null, null, SOCK_CLOEXEC, (err: unknown, result: number) => {
        // errno is per thread; koffi copies the worker's errno back before the callback runs.
        if (err) reject(err);
        else resolve({ rc: result, errno: result < 0 ? koffi.errno() : 0 });
      });
    });
    if (rc >= 0) return rc;
    if (errno !== 4) throw new SystemError({ syscall: "accept4", errno, fd });
  }
}

/**
 * Sends the open file `fd` over a unix socket with `SCM_RIGHTS`, the way runc hands the pty
 * master to `--console-socket`: one message whose data is `name` (runc sends `/dev/ptmx`) and
 * whose ancillary data carries the fd. `target` is a socket path to connect to (the connection
 * is closed afterwards) or an already connected socket fd (left open). `fd` stays open in this
 * process. Throws `invalid-argument` for an empty name and a `SystemError` (`ENOENT`,
 * `ECONNREFUSED`, `EPIPE`).
 */
export function sendFd(target: string | number, fd: number, name = "/dev/ptmx"): void {
  const payload = Buffer.from(name, "utf8");
  // A stream socket carries ancillary data only along with at least one byte of data.
  if (payload.length === 0) throw invalidArgument("sendFd: the message name must not be empty");
  const socket = typeof target === "string" ? connectUnix(target) : target;
  try {
    const { sendmsg, koffi } = loadProcLibc();
    const iov = Buffer.alloc(16);
    iov.writeBigUInt64LE(koffi.address(payload), 0);
    iov.writeBigUInt64LE(BigInt(payload.length), 8);
    const control = Buffer.alloc(cmsgSpace(4));
    control.writeBigUInt64LE(BigInt(CMSG_HEADER + 4), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    control.writeInt32LE(fd, 16);
    const msg = Buffer.alloc(MSGHDR_SIZE);
    msg.writeBigUInt64LE(koffi.address(iov), 16);
    msg.writeBigUInt64LE(1n, 24);
    msg.writeBigUInt64LE(koffi.address(control), 32);
    msg.writeBigUInt64LE(BigInt(control.length), 40);
    for (;;) {
      // MSG_NOSIGNAL: a peer that went away is an EPIPE error here, not a SIGPIPE.
      const rc = Number(sendmsg(socket, msg, MSG_NOSIGNAL));
      if (rc < 0 && interrupted()) continue;
      checked(rc, "sendmsg", {
        ...(typeof target === "string" ? { path: target } : { fd: socket }),
        hint: `sending fd ${fd}`,
      });
      break;
    }
  } finally {
    if (typeof target === "string") closeSync(socket);
  }
}

/** What {@link recvFd} received. */
export interface ReceivedFd {
  /** The received file descriptor, close-on-exec; the caller owns it. */
  readonly fd: number;
  /** The message's data, e.g. `/dev/ptmx` from runc. */
  readonly name: string;
}

/**
 * Receives one message carrying a file descriptor (`SCM_RIGHTS`) from the connected unix socket
 * `socket`, the receiving end of {@link sendFd} and of runc's `--console-socket`. Blocks until a
 * message arrives. Any further fds in the same message are closed. Throws `data-loss` when the
 * peer closed the connection or sent no fd, and a `SystemError` when recvmsg fails.
 */
export function recvFd(socket: number, maxNameBytes = 4096): ReceivedFd {
  const { recvmsg, koffi } = loadProcLibc();
  const data = Buffer.alloc(maxNameBytes);
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(koffi.address(data), 0);
  iov.writeBigUInt64LE(BigInt(data.length), 8);
  const control = Buffer.alloc(cmsgSpace(4 * MAX_FDS));
  const msg = Buffer.alloc(MSGHDR_SIZE);
  msg.writeBigUInt64LE(koffi.address(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(koffi.address(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  let n: number;
  for (;;) {
    n = Number(recvmsg(socket, msg, MSG_CMSG_CLOEXEC));
    if (n < 0 && interrupted()) continue;
    checked(n, "recvmsg", { fd: socket });
    break;
  }
  const controlLength = Number(msg.readBigUInt64LE(40));
  const fds: number[] = [];
  for (let off = 0; off + CMSG_HEADER <= controlLength; ) {
    const len = Number(control.readBigUInt64LE(off));
    if (len < CMSG_HEADER) break;
    if (control.readInt32LE(off + 8) === SOL_SOCKET && control.readInt32LE(off + 12) === SCM_RIGHTS) {
      for (let p = off + CMSG_HEADER; p + 4 <= off + len; p += 4) fds.push(control.readInt32LE(p));
    }
    off += (len + 7) & ~7;
  }
  const [fd, ...extra] = fds;
  for (const e of extra) closeSync(e);
  if (fd === undefined) {
    throw dataLoss(
      n === 0
        ? `recvmsg on fd ${socket}: the peer closed the connection before sending a file descriptor`
        : `recvmsg on fd ${socket}: a message of ${n} bytes arrived without a file descriptor`,
    );
  }
  return { fd, name: data.toString("utf8", 0, n) };
}
