import { isFailedPrecondition } from "@berth/errdefs";
import { afterEach, describe, expect, it } from "vitest";
import { NetlinkProtocol, NetlinkSocket } from "./netlink-socket.js";
import { SystemError } from "./system-error.js";

// These cases send only control messages the kernel answers without looking at any network state
// (NLMSG_NOOP with an ACK request), so they need neither root nor a test namespace.
const NLMSG_NOOP = 1;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;

function noop(seq: number, pid: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(16, 0);
  b.writeUInt16LE(NLMSG_NOOP, 4);
  b.writeUInt16LE(NLM_F_REQUEST | NLM_F_ACK, 6);
  b.writeUInt32LE(seq, 8);
  b.writeUInt32LE(pid, 12);
  return b;
}

const open: NetlinkSocket[] = [];
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

function socket(options: Parameters<typeof NetlinkSocket.open>[1] = {}): NetlinkSocket {
  const s = NetlinkSocket.open(NetlinkProtocol.ROUTE, options);
  open.push(s);
  return s;
}

describe("NetlinkSocket", () => {
  it("binds to a kernel-assigned port and gets an acknowledgement back", () => {
    const s = socket();
    expect(s.portId).toBeGreaterThan(0);
    s.send(noop(41, s.portId));
    const buf = Buffer.alloc(64 * 1024);
    const n = s.receive(buf);
    // NLMSG_ERROR with error 0 is an ACK; it echoes our header (capped: NETLINK_CAP_ACK is on).
    expect(n).toBeGreaterThanOrEqual(16 + 4 + 16);
    expect(buf.readUInt16LE(4)).toBe(NLMSG_ERROR);
    expect(buf.readUInt32LE(8)).toBe(41);
    expect(buf.readUInt32LE(12)).toBe(s.portId);
    expect(buf.readInt32LE(16)).toBe(0);
  });

  it("gives two sockets distinct ports", () => {
    expect(socket().portId).not.toBe(socket().portId);
  });

  it("fails a receive with EAGAIN when nothing arrives before the timeout", () => {
    const s = socket({ receiveTimeoutMs: 20 });
    let err: unknown;
    try {
      s.receive(Buffer.alloc(4096));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(SystemError);
    expect((err as SystemError).errnoName).toMatch(/EAGAIN|EWOULDBLOCK/);
    expect((err as SystemError).code).toBe("unavailable");
  });

  it("reports a datagram larger than the buffer as data-loss", () => {
    const s = socket();
    s.send(noop(7, s.portId));
    expect(() => s.receive(Buffer.alloc(8))).toThrow(expect.objectContaining({ code: "data-loss" }));
  });

  it("refuses use after close, and closes once", () => {
    const s = socket();
    s.close();
    expect(s.closed).toBe(true);
    s.close();
    let err: unknown;
    try {
      s.send(noop(1, 0));
    } catch (e) {
      err = e;
    }
    expect(isFailedPrecondition(err)).toBe(true);
  });

  it("refuses a bad protocol and a negative timeout", () => {
    expect(() => NetlinkSocket.open(31)).toThrow(SystemError);
    expect(() => NetlinkSocket.open(NetlinkProtocol.ROUTE, { receiveTimeoutMs: -1 })).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
  });
});
