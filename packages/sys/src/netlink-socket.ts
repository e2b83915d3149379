import { closeSync } from "node:fs";
import { dataLoss, failedPrecondition, invalidArgument } from "@berth/errdefs";
import { checked, interrupted } from "./checked.js";
import { loadNetlinkLibc, loadProcLibc } from "./libc.js";
import { SystemError } from "./system-error.js";

const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const SO_RCVTIMEO = 20;
const MSG_TRUNC = 0x20;
const ENOPROTOOPT = 92;
// struct sockaddr_nl: nl_family u16, nl_pad u16, nl_pid u32, nl_groups u32.
const SOCKADDR_NL_SIZE = 12;

/** Netlink protocol families (linux/netlink.h), the third argument of `socket(AF_NETLINK, …)`. */
export const NetlinkProtocol = {
  ROUTE: 0,
  NETFILTER: 12,
  GENERIC: 16,
} as const;

/** `SOL_NETLINK`, the socket-option level of the {@link NetlinkSocketOption} values. */
export const SOL_NETLINK = 270;

/** Netlink socket options at level {@link SOL_NETLINK} (linux/netlink.h). */
export const NetlinkSocketOption = {
  ADD_MEMBERSHIP: 1,
  DROP_MEMBERSHIP: 2,
  NO_ENOBUFS: 5,
  /** Errors echo only the request's header, not its payload. */
  CAP_ACK: 10,
  /** Errors carry extended-ack attributes: a message and the offset of the offending attribute. */
  EXT_ACK: 11,
  /** Dump requests are checked strictly and their header fields act as filters (Linux ≥ 4.20). */
  GET_STRICT_CHK: 12,
} as const;

/** How {@link NetlinkSocket.open} sets up the socket. */
export interface NetlinkSocketOptions {
  /** Multicast groups to bind to (`nl_groups`); 0, the default, for request/reply use only. */
  readonly groups?: number;
  /**
   * How long one {@link NetlinkSocket.receive} may block before it fails with `EAGAIN`
   * (`SO_RCVTIMEO`), in milliseconds; 0 waits forever. Default 10 000: a kernel reply never takes
   * that long, so hitting it means a lost reply, and the caller gets an error instead of a hung
   * event loop.
   */
  readonly receiveTimeoutMs?: number;
  /** `SO_RCVBUF` in bytes; the kernel default when absent. */
  readonly receiveBufferSize?: number;
  /** `SO_SNDBUF` in bytes; the kernel default when absent. */
  readonly sendBufferSize?: number;
  /**
   * Turns on `NETLINK_EXT_ACK`, `NETLINK_CAP_ACK` and `NETLINK_GET_STRICT_CHK` (default true).
   * A kernel that lacks one of them (`ENOPROTOOPT`) is accepted silently: they only improve errors
   * and filtering.
   */
  readonly modernAcks?: boolean;
}

/**
 * A raw `AF_NETLINK` datagram socket bound to the kernel, close-on-exec. It operates in the network
 * namespace the calling thread was in when it was opened, for its whole life, whatever namespace
 * the thread moves to afterwards: that is how `@berth/network` talks to other namespaces.
 *
 * All calls are synchronous and block the calling thread. That is deliberate: a request and its
 * acknowledgement, or a dump of a container's few links, complete in microseconds, far less than a
 * hop to a worker thread would cost; the receive timeout bounds the worst case. Not meant for
 * listening to multicast events on the main thread.
 *
 * The owner closes it with {@link NetlinkSocket.close}; it is not closed by garbage collection.
 */
export class NetlinkSocket {
  /** The socket's file descriptor, owned by this object. */
  readonly fd: number;
  /** The netlink protocol it was opened with ({@link NetlinkProtocol}). */
  readonly protocol: number;
  /** The port id (`nl_pid`) the kernel assigned at bind; the kernel addresses replies to it. */
  readonly portId: number;
  #closed = false;
  readonly #from = Buffer.alloc(SOCKADDR_NL_SIZE);
  readonly #fromLen = new Uint32Array(1);
  readonly #kernel: Buffer;

  private constructor(fd: number, protocol: number, portId: number) {
    this.fd = fd;
    this.protocol = protocol;
    this.portId = portId;
    this.#kernel = Buffer.alloc(SOCKADDR_NL_SIZE);
    this.#kernel.writeUInt16LE(AF_NETLINK, 0);
  }

  /**
   * Opens and binds a netlink socket of `protocol` ({@link NetlinkProtocol}) in the calling
   * thread's network namespace. Throws a `SystemError` (`EPROTONOSUPPORT` for a protocol the kernel
   * lacks, `EMFILE`), and `invalid-argument` for a negative timeout or buffer size.
   */
  static open(protocol: number, options: NetlinkSocketOptions = {}): NetlinkSocket {
    const { receiveTimeoutMs = 10_000, modernAcks = true } = options;
    if (!Number.isInteger(receiveTimeoutMs) || receiveTimeoutMs < 0)
      throw invalidArgument(`netlink receive timeout ${receiveTimeoutMs} ms is not a non-negative integer`);
    const proc = loadProcLibc();
    const fd = checked(proc.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol) as number, "socket", {
      hint: `AF_NETLINK protocol ${protocol}`,
    });
    try {
      const nl = loadNetlinkLibc();
      const addr = Buffer.alloc(SOCKADDR_NL_SIZE);
      addr.writeUInt16LE(AF_NETLINK, 0);
      addr.writeUInt32LE((options.groups ?? 0) >>> 0, 8);
      // nl_pid 0 lets the kernel pick a unique port id; getsockname tells which.
      checked(proc.bind(fd, addr, SOCKADDR_NL_SIZE) as number, "bind", { fd, hint: "AF_NETLINK" });
      const len = new Uint32Array([SOCKADDR_NL_SIZE]);
      checked(nl.getsockname(fd, addr, len) as number, "getsockname", { fd });
      const socket = new NetlinkSocket(fd, protocol, addr.readUInt32LE(4));
      if (receiveTimeoutMs > 0) {
        // struct timeval on 64-bit Linux: tv_sec and tv_usec, 8 bytes each.
        const tv = Buffer.alloc(16);
        tv.writeBigInt64LE(BigInt(Math.floor(receiveTimeoutMs / 1000)), 0);
        tv.writeBigInt64LE(BigInt((receiveTimeoutMs % 1000) * 1000), 8);
        socket.#setsockopt(SOL_SOCKET, SO_RCVTIMEO, tv, "SO_RCVTIMEO");
      }
      if (options.receiveBufferSize !== undefined)
        socket.setOption(SOL_SOCKET, SO_RCVBUF, nonNegative(options.receiveBufferSize, "receive buffer"));
      if (options.sendBufferSize !== undefined)
        socket.setOption(SOL_SOCKET, SO_SNDBUF, nonNegative(options.sendBufferSize, "send buffer"));
      if (modernAcks) {
        for (const option of [
          NetlinkSocketOption.EXT_ACK,
          NetlinkSocketOption.CAP_ACK,
          NetlinkSocketOption.GET_STRICT_CHK,
        ]) {
          try {
            socket.setOption(SOL_NETLINK, option, 1);
          } catch (err) {
            if (!(err instanceof SystemError && err.errno === ENOPROTOOPT)) throw err;
          }
        }
      }
      return socket;
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * Sets an integer socket option (`setsockopt(fd, level, name, &value, 4)`). Throws a
   * `SystemError` (`ENOPROTOOPT` for an option the kernel lacks) or `failed-precondition` when
   * the socket is closed.
   */
  setOption(level: number, name: number, value: number): void {
    const v = Buffer.alloc(4);
    v.writeInt32LE(value, 0);
    this.#setsockopt(level, name, v, `option ${name} at level ${level}`);
  }

  #setsockopt(level: number, name: number, value: Buffer, what: string): void {
    this.#open();
    checked(loadNetlinkLibc().setsockopt(this.fd, level, name, value, value.length) as number, "setsockopt", {
      fd: this.fd,
      hint: what,
    });
  }

  /**
   * Sends one datagram (one or more netlink messages) to the kernel. Throws a `SystemError`
   * (`ENOBUFS`, `EMSGSIZE`) or `failed-precondition` when closed; a short send is `data-loss`.
   */
  send(message: Uint8Array): void {
    this.#open();
    const { sendto } = loadNetlinkLibc();
    for (;;) {
      const n = Number(sendto(this.fd, message, message.length, 0, this.#kernel, SOCKADDR_NL_SIZE));
      if (n < 0 && interrupted()) continue;
      checked(n, "sendto", { fd: this.fd, hint: "netlink" });
      if (n !== message.length)
        throw dataLoss(`netlink sendto fd ${this.fd}: sent ${n} of ${message.length} bytes`);
      return;
    }
  }

  /**
   * Blocks until one datagram from the kernel arrives and copies it into `buffer`, returning its
   * length. Datagrams from other senders (another process's port) are dropped. Throws
   * `data-loss` when the datagram was larger than `buffer` (its tail is lost; 32 KiB is the most
   * the kernel puts in one dump datagram, so a 64 KiB buffer always suffices), a `SystemError`
   * with `EAGAIN` when the receive timeout passed, and `failed-precondition` when closed.
   */
  receive(buffer: Buffer): number {
    this.#open();
    const { recvfrom } = loadNetlinkLibc();
    for (;;) {
      this.#fromLen[0] = SOCKADDR_NL_SIZE;
      const n = Number(recvfrom(this.fd, buffer, buffer.length, MSG_TRUNC, this.#from, this.#fromLen));
      if (n < 0 && interrupted()) continue;
      checked(n, "recvfrom", { fd: this.fd, hint: "netlink" });
      if (n > buffer.length)
        throw dataLoss(
          `netlink recvfrom fd ${this.fd}: a ${n}-byte datagram did not fit the ${buffer.length}-byte buffer`,
        );
      // Only the kernel (port 0) may answer; anything else is spoofed or stray.
      if (this.#from.readUInt32LE(4) !== 0) continue;
      return n;
    }
  }

  /** Closes the socket; later calls fail with `failed-precondition`. Closing twice is a no-op. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeSync(this.fd);
  }

  /** Whether {@link NetlinkSocket.close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  #open(): void {
    if (this.#closed) throw failedPrecondition(`netlink socket fd ${this.fd} is closed`);
  }
}

function nonNegative(value: number, what: string): number {
  if (!Number.isInteger(value) || value < 0)
    throw invalidArgument(`netlink ${what} size ${value} is not a non-negative integer`);
  return value;
}
