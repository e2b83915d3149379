import { endianness } from "node:os";
import { dataLoss, notImplemented, unavailable } from "@berth/errdefs";
import { NetlinkSocket, type NetlinkSocketOptions, SystemError } from "@berth/sys";
import { NlmFlag, NlmsgerrAttr, NlmsgType } from "./constants.js";
import { Attributes, decodeAttributes, decodeMessages, encodeMessage, NLMSG_HDRLEN } from "./message.js";

// 32 KiB is the most the kernel puts in one dump datagram; twice that leaves room to spare.
const RECEIVE_BUFFER = 64 * 1024;
// A dump interrupted by a concurrent change (NLM_F_DUMP_INTR) is retried this many times.
const DUMP_ATTEMPTS = 5;

/**
 * What a request is about, for error messages: `operation` names the request (`RTM_NEWLINK`) and
 * `object` what it acts on (`bridge berth0`), so a failure reads
 * `netlink RTM_NEWLINK bridge berth0: EEXIST (File exists)`.
 */
export interface RequestContext {
  readonly operation: string;
  readonly object?: string;
}

/**
 * A netlink request/reply channel over one {@link NetlinkSocket}: it numbers requests, reads
 * multipart replies, and turns `NLMSG_ERROR` into a `SystemError` whose `errno` is the kernel's
 * and whose message carries the extended-ack text when the kernel sent one. Synchronous: each call
 * blocks the calling thread until the kernel has answered (see {@link NetlinkSocket}).
 *
 * Owns its socket; {@link NetlinkConnection.close} closes it.
 */
export class NetlinkConnection {
  readonly socket: NetlinkSocket;
  #seq: number;
  readonly #buffer = Buffer.allocUnsafe(RECEIVE_BUFFER);

  /** Wraps an open socket; the connection takes ownership of it. */
  constructor(socket: NetlinkSocket) {
    this.socket = socket;
    // Distinct starting points make a stray reply to an earlier socket easy to tell apart.
    this.#seq = (Date.now() & 0x7fffffff) >>> 0;
  }

  /**
   * Opens a socket of `protocol` in the calling thread's network namespace and wraps it. Throws
   * `not-implemented` on a big-endian host (netlink speaks host order and this codec assumes
   * little-endian) and a `SystemError` when the socket cannot be opened.
   */
  static open(protocol: number, options: NetlinkSocketOptions = {}): NetlinkConnection {
    if (endianness() !== "LE")
      throw notImplemented(`@berth/network's netlink codec supports little-endian hosts only`);
    return new NetlinkConnection(NetlinkSocket.open(protocol, options));
  }

  /**
   * Sends one request with `NLM_F_REQUEST | NLM_F_ACK | flags` and waits for its acknowledgement.
   * Returns the reply messages that came before the acknowledgement (a GET by name answers with
   * one). Throws a `SystemError` carrying the kernel's errno (its `code` follows the errno table:
   * `EEXIST` → `already-exists`, `ENODEV`/`ENOENT` → `not-found`, …), and `data-loss` for a
   * malformed reply.
   */
  request(type: number, flags: number, parts: readonly Uint8Array[], context: RequestContext): Buffer[] {
    const seq = this.#send(type, NlmFlag.REQUEST | NlmFlag.ACK | flags, parts);
    const replies: Buffer[] = [];
    for (;;) {
      for (const m of this.#receive(seq)) {
        if (m.type === NlmsgType.ERROR) {
          this.#throwIfError(m.payload, m.flags, context);
          return replies;
        }
        if (m.type === NlmsgType.NOOP) continue;
        if (m.type === NlmsgType.DONE) return replies;
        replies.push(Buffer.from(m.payload));
      }
    }
  }

  /**
   * Sends a dump request (`NLM_F_REQUEST | NLM_F_DUMP`) and reads the multipart reply until
   * `NLMSG_DONE`, returning the payload of every message of `replyType`. A dump the kernel marks
   * inconsistent (`NLM_F_DUMP_INTR`, the table changed under it) is retried a few times, then
   * fails with `unavailable`. Errors as for {@link NetlinkConnection.request}.
   */
  dump(type: number, replyType: number, parts: readonly Uint8Array[], context: RequestContext): Buffer[] {
    for (let attempt = 1; ; attempt++) {
      const seq = this.#send(type, NlmFlag.REQUEST | NlmFlag.DUMP, parts);
      const replies: Buffer[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.#receive(seq)) {
          if (m.flags & NlmFlag.DUMP_INTR) interrupted = true;
          if (m.type === NlmsgType.DONE) {
            // NLMSG_DONE carries an int: 0, or a negative errno when the dump failed midway.
            if (m.payload.length >= 4 && m.payload.readInt32LE(0) < 0)
              this.#throwIfError(m.payload, m.flags, context, true);
            done = true;
            break;
          }
          if (m.type === NlmsgType.ERROR) {
            this.#throwIfError(m.payload, m.flags, context);
            done = true;
            break;
          }
          if (m.type === replyType) replies.push(Buffer.from(m.payload));
        }
      }
      if (!interrupted) return replies;
      if (attempt >= DUMP_ATTEMPTS)
        throw unavailable(
          `netlink ${context.operation} dump${context.object ? ` of ${context.object}` : ""} was interrupted by concurrent changes ${attempt} times`,
        );
    }
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.socket.close();
  }

  #send(type: number, flags: number, parts: readonly Uint8Array[]): number {
    this.#seq = (this.#seq + 1) >>> 0;
    const seq = this.#seq;
    this.socket.send(encodeMessage({ type, flags, seq, pid: this.socket.portId }, parts));
    return seq;
  }

  /** Receives datagrams until one holds messages for `seq`, and returns those messages. */
  #receive(seq: number) {
    for (;;) {
      const n = this.socket.receive(this.#buffer);
      if (n === 0) throw dataLoss(`netlink socket fd ${this.socket.fd}: empty datagram from the kernel`);
      const mine = decodeMessages(this.#buffer, n).filter((m) => m.seq === seq);
      if (mine.length > 0) return mine;
      // Replies to an earlier request that was abandoned by an exception: skip them.
    }
  }

  #throwIfError(payload: Buffer, flags: number, context: RequestContext, done = false): void {
    if (payload.length < 4) throw dataLoss(`netlink ${context.operation}: truncated error message`);
    const error = payload.readInt32LE(0);
    if (error === 0) return;
    let tlvStart: number;
    if (done) {
      tlvStart = 4;
    } else if (flags & NlmFlag.CAPPED) {
      tlvStart = 4 + NLMSG_HDRLEN;
    } else {
      // Without NETLINK_CAP_ACK the whole request is echoed; its header says how long it was.
      const echoed = payload.length >= 4 + NLMSG_HDRLEN ? payload.readUInt32LE(4) : NLMSG_HDRLEN;
      tlvStart = 4 + ((echoed + 3) & ~3);
    }
    let hint: string | undefined;
    if (flags & NlmFlag.ACK_TLVS && tlvStart < payload.length) {
      try {
        hint = new Attributes(decodeAttributes(payload, tlvStart)).string(NlmsgerrAttr.MSG);
      } catch {
        // A malformed extended ack must not hide the errno itself.
      }
    }
    throw new SystemError({
      syscall: `netlink ${context.operation}`,
      errno: -error,
      ...(context.object === undefined ? {} : { path: context.object }),
      ...(hint ? { hint } : {}),
    });
  }
}
