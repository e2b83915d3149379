import { isIPv4, isIPv6 } from "node:net";
import { invalidArgument } from "@berth/errdefs";

/** An IP address as text and as the bytes netlink carries (4 or 16, network order). */
export interface IpAddress {
  readonly family: 4 | 6;
  readonly address: string;
  readonly bytes: Buffer;
}

/** An address with a prefix length, as in `10.88.0.2/16` or `fd00::2/64`. */
export interface IpPrefix extends IpAddress {
  readonly prefixLength: number;
}

function v4Bytes(text: string): Buffer {
  return Buffer.from(text.split(".").map(Number));
}

/**
 * Parses an IPv4 or IPv6 address (no zone, no prefix). The text is normalized: `address` is the
 * canonical form (IPv6 per RFC 5952: lowercase, longest zero run as `::`). Throws
 * `invalid-argument` naming the text when it is neither.
 */
export function parseIp(text: string): IpAddress {
  if (isIPv4(text)) return { family: 4, address: text, bytes: v4Bytes(text) };
  if (!isIPv6(text) || text.includes("%"))
    throw invalidArgument(`${JSON.stringify(text)} is not an IP address`);
  const bytes = Buffer.alloc(16);
  let body = text;
  // A trailing dotted quad (::ffff:10.0.0.1) fills the last 4 bytes.
  let tail: Buffer | undefined;
  const lastColon = body.lastIndexOf(":");
  if (body.slice(lastColon + 1).includes(".")) {
    tail = v4Bytes(body.slice(lastColon + 1));
    body = `${body.slice(0, lastColon + 1)}0:0`;
  }
  const [head = "", rest] = body.split("::");
  const left = head === "" ? [] : head.split(":");
  const right = rest === undefined || rest === "" ? [] : rest.split(":");
  const groups =
    rest === undefined
      ? left
      : [...left, ...new Array<string>(8 - left.length - right.length).fill("0"), ...right];
  groups.forEach((g, i) => {
    bytes.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  });
  if (tail) tail.copy(bytes, 12);
  return { family: 6, address: formatIp(bytes), bytes };
}

/**
 * Formats 4 or 16 address bytes (network order) as text; IPv6 in RFC 5952 form. Throws
 * `invalid-argument` for any other length.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  if (bytes.length !== 16) throw invalidArgument(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // RFC 5952 §4.2: the longest run of two or more zero groups (the first on a tie) becomes "::".
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/**
 * Parses `address/prefix` (`10.88.0.2/16`, `fd00::2/64`); a bare address gets the full length
 * (/32 or /128). Throws `invalid-argument` naming the text for a bad address or prefix.
 */
export function parsePrefix(text: string): IpPrefix {
  const slash = text.indexOf("/");
  const ip = parseIp(slash < 0 ? text : text.slice(0, slash));
  const max = ip.family === 4 ? 32 : 128;
  if (slash < 0) return { ...ip, prefixLength: max };
  const p = text.slice(slash + 1);
  const prefixLength = Number(p);
  if (!/^\d{1,3}$/.test(p) || prefixLength > max)
    throw invalidArgument(`${JSON.stringify(text)}: prefix length ${p} is not in 0..${max}`);
  return { ...ip, prefixLength };
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
