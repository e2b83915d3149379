import { dataLoss, invalidArgument } from "@berth/errdefs";

/** `struct nlmsghdr` is 16 bytes: len u32, type u16, flags u16, seq u32, pid u32. */
export const NLMSG_HDRLEN = 16;
/** `struct nlattr`/`struct rtattr` header: len u16, type u16. */
export const NLA_HDRLEN = 4;
/** The high bits of an attribute type are flags (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`). */
export const NLA_TYPE_MASK = 0x3fff;
/** `NLA_F_NESTED`, which strictly validated families require on nested attributes. */
export const NLA_F_NESTED = 0x8000;

/** Rounds `n` up to netlink's 4-byte alignment (`NLMSG_ALIGN`, `NLA_ALIGN`). */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/**
 * An attribute to encode: a type and either raw bytes or nested attributes. Build them with
 * {@link attr}.
 */
export interface AttributeSpec {
  readonly type: number;
  readonly value: Uint8Array | readonly AttributeSpec[];
}

function u32Bytes(value: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0, 0);
  return b;
}

/** Constructors for {@link AttributeSpec}s of the usual C types. */
export const attr = {
  /** A raw byte string (a MAC or an IP address). */
  bytes: (type: number, value: Uint8Array): AttributeSpec => ({ type, value }),
  /** A `u8`. */
  u8: (type: number, value: number): AttributeSpec => ({ type, value: Uint8Array.of(value & 0xff) }),
  /** A `u16` in host order. */
  u16: (type: number, value: number): AttributeSpec => {
    const b = Buffer.alloc(2);
    b.writeUInt16LE(value & 0xffff, 0);
    return { type, value: b };
  },
  /** A `u32` in host order. */
  u32: (type: number, value: number): AttributeSpec => ({ type, value: u32Bytes(value) }),
  /** An `s32` in host order (file descriptors, for instance). */
  s32: (type: number, value: number): AttributeSpec => {
    const b = Buffer.alloc(4);
    b.writeInt32LE(value, 0);
    return { type, value: b };
  },
  /** A NUL-terminated string (`NLA_NUL_STRING`/`NLA_STRING` both accept it). */
  string: (type: number, value: string): AttributeSpec => {
    if (value.includes("\0"))
      throw invalidArgument(`netlink string attribute ${JSON.stringify(value)} has a NUL`);
    return { type, value: Buffer.from(`${value}\0`, "utf8") };
  },
  /** A flag: an attribute with no payload. */
  flag: (type: number): AttributeSpec => ({ type, value: new Uint8Array(0) }),
  /** Nested attributes (`NLA_NESTED`), without the `NLA_F_NESTED` bit unless given in `type`. */
  nested: (type: number, children: readonly AttributeSpec[]): AttributeSpec => ({ type, value: children }),
} as const;

function attributesLength(attrs: readonly AttributeSpec[]): number {
  let n = 0;
  for (const a of attrs) n += align4(NLA_HDRLEN + valueLength(a.value));
  return n;
}

function valueLength(value: AttributeSpec["value"]): number {
  return value instanceof Uint8Array ? value.length : attributesLength(value);
}

function writeAttributes(attrs: readonly AttributeSpec[], out: Buffer, offset: number): number {
  let at = offset;
  for (const a of attrs) {
    const len = NLA_HDRLEN + valueLength(a.value);
    if (len > 0xffff) throw invalidArgument(`netlink attribute ${a.type} is ${len} bytes, more than 65535`);
    out.writeUInt16LE(len, at);
    out.writeUInt16LE(a.type, at + 2);
    if (a.value instanceof Uint8Array) out.set(a.value, at + NLA_HDRLEN);
    else writeAttributes(a.value, out, at + NLA_HDRLEN);
    // Padding bytes stay zero: the buffer comes from Buffer.alloc.
    at += align4(len);
  }
  return at;
}

/**
 * Encodes attributes (nested ones recursively) with 4-byte alignment and zeroed padding. Throws
 * `invalid-argument` for an attribute longer than a u16 length can say.
 */
export function encodeAttributes(attrs: readonly AttributeSpec[]): Buffer {
  const out = Buffer.alloc(attributesLength(attrs));
  writeAttributes(attrs, out, 0);
  return out;
}

/** A decoded attribute; `data` is a view of the message it came from. */
export interface NetlinkAttribute {
  /** The type without the `NLA_F_*` flag bits. */
  readonly type: number;
  readonly data: Buffer;
}

/**
 * The attributes of one message or nested attribute, indexed by type (the last one wins when a
 * type repeats; {@link Attributes.all} keeps every one).
 */
export class Attributes {
  readonly all: readonly NetlinkAttribute[];
  readonly #byType = new Map<number, Buffer>();

  constructor(all: readonly NetlinkAttribute[]) {
    this.all = all;
    for (const a of all) this.#byType.set(a.type, a.data);
  }

  /** The raw payload of attribute `type`, if present. */
  get(type: number): Buffer | undefined {
    return this.#byType.get(type);
  }

  /** Attribute `type` as a u8, if present. Throws `data-loss` when it is too short. */
  u8(type: number): number | undefined {
    const d = this.#sized(type, 1);
    return d?.readUInt8(0);
  }

  /** Attribute `type` as a u16 in host order, if present. Throws `data-loss` when too short. */
  u16(type: number): number | undefined {
    return this.#sized(type, 2)?.readUInt16LE(0);
  }

  /** Attribute `type` as a u32 in host order, if present. Throws `data-loss` when too short. */
  u32(type: number): number | undefined {
    return this.#sized(type, 4)?.readUInt32LE(0);
  }

  /** Attribute `type` as a s32 in host order, if present. Throws `data-loss` when too short. */
  s32(type: number): number | undefined {
    return this.#sized(type, 4)?.readInt32LE(0);
  }

  /** Attribute `type` as a string up to its first NUL, if present. */
  string(type: number): string | undefined {
    const d = this.#byType.get(type);
    if (d === undefined) return undefined;
    const nul = d.indexOf(0);
    return d.toString("utf8", 0, nul < 0 ? d.length : nul);
  }

  /** The attributes nested in attribute `type`, if present. Throws `data-loss` when malformed. */
  nested(type: number): Attributes | undefined {
    const d = this.#byType.get(type);
    return d === undefined ? undefined : new Attributes(decodeAttributes(d));
  }

  #sized(type: number, size: number): Buffer | undefined {
    const d = this.#byType.get(type);
    if (d !== undefined && d.length < size)
      throw dataLoss(`netlink attribute ${type} has ${d.length} bytes, expected at least ${size}`);
    return d;
  }
}

/**
 * Decodes the attributes in `buf[offset, end)`. Throws `data-loss` when one claims more bytes than
 * there are, or fewer than its own header.
 */
export function decodeAttributes(buf: Buffer, offset = 0, end = buf.length): NetlinkAttribute[] {
  const out: NetlinkAttribute[] = [];
  let at = offset;
  while (at + NLA_HDRLEN <= end) {
    const len = buf.readUInt16LE(at);
    const type = buf.readUInt16LE(at + 2) & NLA_TYPE_MASK;
    if (len < NLA_HDRLEN || at + len > end)
      throw dataLoss(`netlink attribute ${type} at offset ${at} claims ${len} bytes; ${end - at} remain`);
    out.push({ type, data: buf.subarray(at + NLA_HDRLEN, at + len) });
    at += align4(len);
  }
  return out;
}

/** The fields of a netlink header that a sender chooses. */
export interface NetlinkHeader {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  /** The sender's port id; 0 lets the kernel fill it in. */
  readonly pid?: number;
}

/**
 * Encodes one netlink message: the header, then each payload part aligned to 4 bytes (the family
 * header such as `ifinfomsg`, then encoded attributes).
 */
export function encodeMessage(header: NetlinkHeader, parts: readonly Uint8Array[]): Buffer {
  let len = NLMSG_HDRLEN;
  for (const p of parts) len = align4(len) + p.length;
  const out = Buffer.alloc(align4(len));
  out.writeUInt32LE(len, 0);
  out.writeUInt16LE(header.type, 4);
  out.writeUInt16LE(header.flags, 6);
  out.writeUInt32LE(header.seq >>> 0, 8);
  out.writeUInt32LE((header.pid ?? 0) >>> 0, 12);
  let at = NLMSG_HDRLEN;
  for (const p of parts) {
    at = align4(at);
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One decoded netlink message. `payload` is everything after the 16-byte header. */
export interface NetlinkMessage {
  readonly type: number;
  readonly flags: number;
  readonly seq: number;
  readonly pid: number;
  readonly payload: Buffer;
}

/**
 * Splits a received datagram (`buf[0, length)`) into its messages. Payloads are views of `buf`;
 * copy them before reusing the buffer. Throws `data-loss` for a header whose length runs past the
 * datagram or is shorter than a header, and for trailing bytes too few for a header.
 */
export function decodeMessages(buf: Buffer, length = buf.length): NetlinkMessage[] {
  const out: NetlinkMessage[] = [];
  let at = 0;
  while (at + NLMSG_HDRLEN <= length) {
    const len = buf.readUInt32LE(at);
    if (len < NLMSG_HDRLEN || at + len > length)
      throw dataLoss(`netlink message at offset ${at} claims ${len} bytes; ${length - at} remain`);
    out.push({
      type: buf.readUInt16LE(at + 4),
      flags: buf.readUInt16LE(at + 6),
      seq: buf.readUInt32LE(at + 8),
      pid: buf.readUInt32LE(at + 12),
      payload: buf.subarray(at + NLMSG_HDRLEN, at + len),
    });
    at += align4(len);
  }
  if (at < length)
    throw dataLoss(`netlink datagram ends with ${length - at} bytes too short for a message header`);
  return out;
}
