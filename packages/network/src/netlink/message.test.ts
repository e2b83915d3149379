import { isDataLoss, isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { formatIpBytes, formatMac, ipBytes, networkBytes, parseMac, prefixBytes } from "./ip.js";
import {
  Attributes,
  align4,
  attr,
  decodeAttributes,
  decodeMessages,
  encodeAttributes,
  encodeMessage,
  NLA_F_NESTED,
} from "./message.js";

describe("attributes", () => {
  it("encodes with 4-byte alignment and zeroed padding", () => {
    const b = encodeAttributes([attr.string(3, "br0"), attr.u8(16, 6), attr.u32(4, 1500)]);
    // "br0\0" fills 4 bytes exactly; the u8 needs 3 bytes of padding.
    expect(b.toString("hex")).toBe(
      ["0800", "0300", "62723000", "0500", "1000", "06000000", "0800", "0400", "dc050000"].join(""),
    );
    expect(b.length % 4).toBe(0);
  });

  it("round-trips nested attributes and masks the type flag bits", () => {
    const encoded = encodeAttributes([
      attr.string(3, "veth0"),
      attr.nested(18 | NLA_F_NESTED, [
        attr.string(1, "veth"),
        attr.nested(2, [attr.bytes(1, Buffer.from([1, 2, 3]))]),
      ]),
      attr.flag(7),
      attr.s32(28, -1),
    ]);
    const a = new Attributes(decodeAttributes(encoded));
    expect(a.all.map((x) => x.type)).toEqual([3, 18, 7, 28]);
    expect(a.string(3)).toBe("veth0");
    const info = a.nested(18);
    expect(info?.string(1)).toBe("veth");
    expect(info?.nested(2)?.get(1)).toEqual(Buffer.from([1, 2, 3]));
    expect(a.get(7)?.length).toBe(0);
    expect(a.s32(28)).toBe(-1);
    expect(a.u32(99)).toBeUndefined();
  });

  it("refuses an attribute that runs past its buffer, and a short integer", () => {
    const b = encodeAttributes([attr.u32(4, 1)]);
    b.writeUInt16LE(12, 0);
    expect(() => decodeAttributes(b)).toThrow(expect.objectContaining({ code: "data-loss" }));
    const short = new Attributes(decodeAttributes(encodeAttributes([attr.u8(4, 1)])));
    let err: unknown;
    try {
      short.u32(4);
    } catch (e) {
      err = e;
    }
    expect(isDataLoss(err)).toBe(true);
  });

  it("refuses a string with a NUL", () => {
    expect(() => attr.string(3, "a\0b")).toThrow(expect.objectContaining({ code: "invalid-argument" }));
  });
});

describe("messages", () => {
  it("encodes the header and aligns each part", () => {
    const m = encodeMessage({ type: 16, flags: 0x405, seq: 7, pid: 42 }, [
      Buffer.from([1, 2]),
      Buffer.from([3]),
    ]);
    expect(m.readUInt32LE(0)).toBe(16 + 4 + 1); // the length excludes the final padding
    expect(m.length).toBe(align4(21));
    expect([m.readUInt16LE(4), m.readUInt16LE(6), m.readUInt32LE(8), m.readUInt32LE(12)]).toEqual([
      16, 0x405, 7, 42,
    ]);
    expect([...m.subarray(16)]).toEqual([1, 2, 0, 0, 3, 0, 0, 0]);
  });

  it("splits a datagram holding several messages", () => {
    const one = encodeMessage({ type: 16, flags: 2, seq: 1 }, [Buffer.from([9, 9, 9])]);
    const two = encodeMessage({ type: 3, flags: 2, seq: 1 }, [Buffer.alloc(4)]);
    const all = Buffer.concat([one, two]);
    const decoded = decodeMessages(all);
    expect(decoded.map((m) => [m.type, m.seq, m.payload.length])).toEqual([
      [16, 1, 3],
      [3, 1, 4],
    ]);
    expect(() => decodeMessages(all, one.length + 8)).toThrow(expect.objectContaining({ code: "data-loss" }));
  });
});

describe("addresses", () => {
  it("parses and formats IPv4 and IPv6", () => {
    expect([...ipBytes("10.88.0.2").bytes]).toEqual([10, 88, 0, 2]);
    expect(ipBytes("FD00:0:0:0:0:0:0:1").address).toBe("fd00::1");
    expect(ipBytes("::").address).toBe("::");
    expect(ipBytes("2001:db8:0:0:1:0:0:1").address).toBe("2001:db8::1:0:0:1");
    expect(ipBytes("::ffff:10.0.0.1").bytes.subarray(10).toString("hex")).toBe("ffff0a000001");
    expect(formatIpBytes(ipBytes("fe80::1:2").bytes)).toBe("fe80::1:2");
    expect(() => ipBytes("10.0.0.256")).toThrow(expect.objectContaining({ code: "invalid-argument" }));
    expect(() => ipBytes("fe80::1%eth0")).toThrow(expect.objectContaining({ code: "invalid-argument" }));
  });

  it("parses prefixes and computes networks", () => {
    expect(prefixBytes("10.88.0.2/16").prefixLength).toBe(16);
    expect(prefixBytes("fd00::2").prefixLength).toBe(128);
    expect([...networkBytes(prefixBytes("10.88.7.2/20").bytes, 20)]).toEqual([10, 88, 0, 0]);
    let err: unknown;
    try {
      prefixBytes("10.0.0.1/33");
    } catch (e) {
      err = e;
    }
    expect(isInvalidArgument(err)).toBe(true);
    expect(String(err)).toContain("10.0.0.1/33");
  });

  it("parses and formats MAC addresses", () => {
    expect(formatMac(parseMac("02:AB:cd:00:11:ff"))).toBe("02:ab:cd:00:11:ff");
    expect(() => parseMac("02:ab:cd")).toThrow(expect.objectContaining({ code: "invalid-argument" }));
  });
});
