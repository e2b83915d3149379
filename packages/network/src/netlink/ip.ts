import { invalidArgument } from "@berth/errdefs";
import { formatIp, ipFromBytes, ipToBytes, parseCidr, parseIp } from "../ipam/ip.js";

// Addresses as netlink carries them (network-order bytes), over the one IP module of the package
// (ipam/ip.ts); only the byte conversions and link-layer addresses live here.

/** An IP address as the bytes netlink carries (4 or 16, network order) and its canonical text. */
export interface IpBytes {
  readonly family: 4 | 6;
  readonly address: string;
  readonly bytes: Buffer;
}

/** An address with a prefix length, as in `10.88.0.2/16` or `fd00::2/64`. */
export interface PrefixBytes extends IpBytes {
  readonly prefixLength: number;
}

/**
 * Parses an IPv4 or IPv6 address (no zone, no prefix) into netlink bytes; `address` is the
 * canonical text. Throws `invalid-argument` naming the text when it is neither.
 */
export function ipBytes(text: string): IpBytes {
  const ip = parseIp(text);
  return { family: ip.family, address: formatIp(ip), bytes: ipToBytes(ip) };
}

/** Formats 4 or 16 address bytes as text (IPv6 per RFC 5952); `invalid-argument` for other lengths. */
export function formatIpBytes(bytes: Uint8Array): string {
  return formatIp(ipFromBytes(bytes));
}

/**
 * Parses `address/prefix` (`10.88.0.2/16`, `fd00::2/64`); a bare address gets the full length
 * (/32 or /128). Throws `invalid-argument` naming the text for a bad address or prefix.
 */
export function prefixBytes(text: string): PrefixBytes {
  if (!text.includes("/")) return { ...ipBytes(text), prefixLength: ipBytes(text).family === 4 ? 32 : 128 };
  const { ip, network } = parseCidr(text);
  return {
    family: ip.family,
    address: formatIp(ip),
    bytes: ipToBytes(ip),
    prefixLength: network.prefixLength,
  };
}

/** The address bytes with every bit past `prefixLength` cleared (the network of a prefix). */
export function networkBytes(bytes: Uint8Array, prefixLength: number): Buffer {
  const out = Buffer.from(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLength - i * 8));
    out[i] = (out[i] ?? 0) & ((0xff << (8 - keep)) & 0xff);
  }
  return out;
}

/** Parses a MAC address `aa:bb:cc:dd:ee:ff` (case-insensitive); throws `invalid-argument`. */
export function parseMac(text: string): Buffer {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(text))
    throw invalidArgument(`${JSON.stringify(text)} is not a MAC address (aa:bb:cc:dd:ee:ff)`);
  return Buffer.from(text.replaceAll(":", ""), "hex");
}

/** Formats link-layer address bytes as lowercase colon-separated hex. */
export function formatMac(bytes: Uint8Array): string {
  return Buffer.from(bytes)
    .toString("hex")
    .replace(/(..)(?!$)/g, "$1:");
}
