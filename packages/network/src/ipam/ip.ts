import { invalidArgument } from "@berth/errdefs";

/** The address family of an IP address: 4 or 6. */
export type IpFamily = 4 | 6;

/**
 * An IP address as a number: `value` is the address as an unsigned big integer (32 bits for IPv4,
 * 128 for IPv6). Arithmetic on addresses (ranges, round-robin, CIDR masks) is then plain bigint
 * arithmetic, which is why berth does not use a byte-array representation.
 */
export interface IpAddress {
  readonly family: IpFamily;
  readonly value: bigint;
}

/** An IP network (a CIDR prefix): `address` is the first address, with every host bit zero. */
export interface IpNetwork {
  readonly family: IpFamily;
  readonly address: bigint;
  readonly prefixLength: number;
}

/** An address with the prefix length it was written with, as in `10.88.0.1/16`. */
export interface IpPrefix {
  readonly ip: IpAddress;
  readonly network: IpNetwork;
}

/** Returns the number of bits of an address of `family`: 32 or 128. */
export function familyBits(family: IpFamily): number {
  return family === 4 ? 32 : 128;
}

function parseV4(text: string): bigint | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0n;
  for (const part of parts) {
    // Leading zeros are refused, as Go's net.ParseIP and Node's net.isIPv4 do: "010" would be
    // octal to inet_aton and decimal to others, an ambiguity attackers have used.
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const n = Number(part);
    if (n > 255) return undefined;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseGroups(text: string): bigint[] | undefined {
  if (text === "") return [];
  const groups: bigint[] = [];
  const parts = text.split(":");
  for (let i = 0; i < parts.length; i++) {
    const part = parts[i] as string;
    if (i === parts.length - 1 && part.includes(".")) {
      const v4 = parseV4(part);
      if (v4 === undefined) return undefined;
      groups.push(v4 >> 16n, v4 & 0xffffn);
    } else {
      if (!/^[0-9a-fA-F]{1,4}$/.test(part)) return undefined;
      groups.push(BigInt(`0x${part}`));
    }
  }
  return groups;
}

function parseV6(text: string): bigint | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = parseGroups(halves[0] as string);
  if (head === undefined) return undefined;
  let groups: bigint[];
  if (halves.length === 2) {
    const tail = parseGroups(halves[1] as string);
    if (tail === undefined) return undefined;
    // "::" stands for at least one group of zeros (RFC 4291 section 2.2).
    const missing = 8 - head.length - tail.length;
    if (missing < 1) return undefined;
    groups = [...head, ...new Array<bigint>(missing).fill(0n), ...tail];
  } else {
    groups = head;
  }
  if (groups.length !== 8) return undefined;
  // An embedded IPv4 address is only allowed as the last 32 bits.
  if (text.lastIndexOf(".") !== -1 && text.lastIndexOf(":") > text.lastIndexOf(".")) return undefined;
  return groups.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/**
 * Parses an IPv4 (dotted quad, no leading zeros) or IPv6 (RFC 4291 text, with `::` and an
 * optional trailing dotted quad; no zone index) address, or returns `undefined` when `text` is
 * not one.
 */
export function tryParseIp(text: string): IpAddress | undefined {
  if (text.includes(":")) {
    const value = parseV6(text);
    return value === undefined ? undefined : { family: 6, value };
  }
  const value = parseV4(text);
  return value === undefined ? undefined : { family: 4, value };
}

/**
 * Parses an IPv4 or IPv6 address (see {@link tryParseIp}).
 *
 * @throws `invalid-argument` when `text` is not an IP address.
 */
export function parseIp(text: string): IpAddress {
  const ip = tryParseIp(text);
  if (ip === undefined) throw invalidArgument(`${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return ip;
}

function formatV4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((shift) => String((value >> shift) & 0xffn)).join(".");
}

/**
 * Formats an address in its canonical text form: dotted quad for IPv4; for IPv6 the RFC 5952
 * form (lowercase hex, no leading zeros, the longest run of two or more zero groups — the first
 * one on a tie — written `::`, and IPv4-mapped addresses as `::ffff:a.b.c.d`).
 */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return formatV4(ip.value);
  if (ip.value >> 32n === 0xffffn) return `::ffff:${formatV4(ip.value & 0xffffffffn)}`;
  const groups: number[] = [];
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(Number((ip.value >> shift) & 0xffffn));
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) {
      bestStart = i;
      bestLength = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart === -1) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLength).join(":")}`;
}

/** Returns the mask of the host bits of a prefix of `prefixLength` bits in `family`. */
function hostMask(family: IpFamily, prefixLength: number): bigint {
  return (1n << BigInt(familyBits(family) - prefixLength)) - 1n;
}

/**
 * Returns the network of `prefixLength` bits that contains `ip`.
 *
 * @throws `invalid-argument` when `prefixLength` is not an integer between 0 and the family's
 *   bit count.
 */
export function networkOf(ip: IpAddress, prefixLength: number): IpNetwork {
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > familyBits(ip.family)) {
    throw invalidArgument(`prefix length ${prefixLength} is out of range for an IPv${ip.family} address`);
  }
  return { family: ip.family, address: ip.value & ~hostMask(ip.family, prefixLength), prefixLength };
}

/**
 * Parses `address/prefix` (`10.88.0.1/16`, `fd00::1/64`), keeping both the address as written
 * and the network it belongs to.
 *
 * @throws `invalid-argument` when `text` is not an address followed by `/` and a decimal prefix
 *   length valid for its family.
 */
export function parseCidr(text: string): IpPrefix {
  const slash = text.indexOf("/");
  const ip = slash === -1 ? undefined : tryParseIp(text.slice(0, slash));
  const lengthText = slash === -1 ? "" : text.slice(slash + 1);
  if (ip === undefined || !/^(0|[1-9][0-9]{0,2})$/.test(lengthText)) {
    throw invalidArgument(`${JSON.stringify(text)} is not a CIDR prefix (address/length)`);
  }
  const prefixLength = Number(lengthText);
  if (prefixLength > familyBits(ip.family)) {
    throw invalidArgument(
      `${JSON.stringify(text)}: prefix length ${prefixLength} is too long for IPv${ip.family}`,
    );
  }
  return { ip, network: networkOf(ip, prefixLength) };
}

/** Formats a network as `address/length` with the canonical address text. */
export function formatNetwork(network: IpNetwork): string {
  return `${formatIp({ family: network.family, value: network.address })}/${network.prefixLength}`;
}

/** Formats an address with a prefix length, as in `10.88.0.2/16`. */
export function formatPrefix(ip: IpAddress, prefixLength: number): string {
  return `${formatIp(ip)}/${prefixLength}`;
}

/** Returns the last address of `network` (all host bits set: the IPv4 broadcast address). */
export function lastAddress(network: IpNetwork): IpAddress {
  return { family: network.family, value: network.address | hostMask(network.family, network.prefixLength) };
}

/** Returns the first address of `network` (all host bits zero). */
export function firstAddress(network: IpNetwork): IpAddress {
  return { family: network.family, value: network.address };
}

/** Returns the number of addresses in `network`, as a bigint (an IPv6 /64 holds 2^64). */
export function networkSize(network: IpNetwork): bigint {
  return hostMask(network.family, network.prefixLength) + 1n;
}

/** True when `ip` is of the same family as `network` and lies inside it. */
export function networkContains(network: IpNetwork, ip: IpAddress): boolean {
  return (
    ip.family === network.family &&
    (ip.value & ~hostMask(ip.family, network.prefixLength)) === network.address
  );
}

/** True when two networks share at least one address (one then contains the other). */
export function networksOverlap(a: IpNetwork, b: IpNetwork): boolean {
  if (a.family !== b.family) return false;
  const shorter = a.prefixLength <= b.prefixLength ? a : b;
  const longer = shorter === a ? b : a;
  return networkContains(shorter, { family: longer.family, value: longer.address });
}

/**
 * Returns `ip + delta`.
 *
 * @throws `invalid-argument` when the result falls outside the family's address space.
 */
export function addToIp(ip: IpAddress, delta: bigint): IpAddress {
  const value = ip.value + delta;
  if (value < 0n || value >> BigInt(familyBits(ip.family)) !== 0n) {
    throw invalidArgument(`${formatIp(ip)} + ${delta} is outside the IPv${ip.family} address space`);
  }
  return { family: ip.family, value };
}

/** Orders addresses: IPv4 before IPv6, then numerically. Returns a negative, zero or positive number. */
export function compareIp(a: IpAddress, b: IpAddress): number {
  if (a.family !== b.family) return a.family - b.family;
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** True when `a` and `b` are the same address (same family and value). */
export function ipEquals(a: IpAddress, b: IpAddress): boolean {
  return a.family === b.family && a.value === b.value;
}

/** The address as netlink and the kernel carry it: 4 or 16 bytes in network order. */
export function ipToBytes(ip: IpAddress): Buffer {
  const length = familyBits(ip.family) / 8;
  const bytes = Buffer.alloc(length);
  let value = ip.value;
  for (let i = length - 1; i >= 0; i--) {
    bytes[i] = Number(value & 0xffn);
    value >>= 8n;
  }
  return bytes;
}

/**
 * The address of 4 (IPv4) or 16 (IPv6) network-order bytes.
 *
 * @throws `invalid-argument` for any other length.
 */
export function ipFromBytes(bytes: Uint8Array): IpAddress {
  if (bytes.length !== 4 && bytes.length !== 16) {
    throw invalidArgument(`an IP address has 4 or 16 bytes, not ${bytes.length}`);
  }
  let value = 0n;
  for (const b of bytes) value = (value << 8n) | BigInt(b);
  return { family: bytes.length === 4 ? 4 : 6, value };
}
