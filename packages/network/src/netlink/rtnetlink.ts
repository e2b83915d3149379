import { closeSync } from "node:fs";
import { dataLoss, invalidArgument, isNotFound } from "@berth/errdefs";
import { NetlinkProtocol, type NetlinkSocketOptions } from "@berth/sys";
import { type NetnsRef, type NotPromise, openNetns, withNetns } from "../netns/netns.js";
import { NetlinkConnection, type RequestContext } from "./connection.js";
import {
  AddressFamily,
  Ifa,
  IfaFlag,
  Iff,
  Ifla,
  IflaInfo,
  NlmFlag,
  OPER_STATES,
  RTEXT_FILTER_SKIP_STATS,
  Rta,
  RtmType,
  RtnType,
  RtProtocol,
  RtScope,
  RtTable,
  VETH_INFO_PEER,
} from "./constants.js";
import { formatIpBytes, formatMac, ipBytes, networkBytes, parseMac, prefixBytes } from "./ip.js";
import {
  type AttributeSpec,
  Attributes,
  attr,
  decodeAttributes,
  encodeAttributes,
  NLA_F_NESTED,
} from "./message.js";

/** A link named by its interface name (`berth0`) or its interface index. */
export type LinkRef = string | number;

/** A network interface as the kernel reports it. */
export interface Link {
  readonly index: number;
  readonly name: string;
  /** The `IFLA_INFO_KIND` of virtual links (`bridge`, `veth`); undefined for physical ones and `lo`. */
  readonly kind: string | undefined;
  readonly mtu: number;
  /** The link-layer address, lowercase `aa:bb:…`; undefined for links without one. */
  readonly mac: string | undefined;
  /** Whether the link is administratively up (`IFF_UP`). */
  readonly up: boolean;
  /** The `IFF_*` flags. */
  readonly flags: number;
  /** The RFC 2863 operational state (`up`, `down`, `lowerlayerdown`, `unknown`, …). */
  readonly operState: string;
  /** The index of the bridge (or other master) it is enslaved to, if any. */
  readonly masterIndex: number | undefined;
  /** `IFLA_LINK`: for a veth the peer's index (in the peer's namespace when `linkNetnsId` is set). */
  readonly linkIndex: number | undefined;
  /** `IFLA_LINK_NETNSID`: set when the peer lives in another network namespace. */
  readonly linkNetnsId: number | undefined;
}

/** An IPv4 or IPv6 address assigned to a link. */
export interface InterfaceAddress {
  /** The index of the link it is on. */
  readonly linkIndex: number;
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefixLength: number;
  /** `RT_SCOPE_*`: 0 global, 253 link, 254 host. */
  readonly scope: number;
  /** The `IFA_F_*` flags (`IFA_F_PERMANENT`, `IFA_F_TENTATIVE`, …). */
  readonly flags: number;
  readonly label: string | undefined;
}

/** A route as the kernel reports it. */
export interface Route {
  readonly family: 4 | 6;
  /** `default` or `address/prefix`. */
  readonly destination: string;
  readonly gateway: string | undefined;
  /** The output link's index (`RTA_OIF`). */
  readonly linkIndex: number | undefined;
  readonly table: number;
  /** `RTPROT_*`: 2 kernel, 3 boot, 4 static. */
  readonly protocol: number;
  readonly scope: number;
  /** `RTN_*`: 1 unicast, 2 local, … */
  readonly type: number;
  readonly metric: number | undefined;
  readonly preferredSource: string | undefined;
}

/** A route to add or delete. */
export interface RouteSpec {
  /** `default` (the default) or `address/prefix`; host bits must be zero. */
  readonly destination?: string;
  /** The next hop; without one the route is on-link (scope link) and needs `link`. */
  readonly gateway?: string;
  /** The output link. */
  readonly link?: LinkRef;
  /** The routing table (default main, 254). */
  readonly table?: number;
  /** The metric (`RTA_PRIORITY`). */
  readonly metric?: number;
  /** The preferred source address (`RTA_PREFSRC`). */
  readonly source?: string;
  /** For a gateway-less `default` route: 4 or 6 (default 4). */
  readonly family?: 4 | 6;
}

/** Options of {@link Rtnetlink.createBridge}. */
export interface BridgeOptions {
  readonly mtu?: number;
  readonly mac?: string;
  /** Bring the bridge up as part of the creation (saves a request). */
  readonly up?: boolean;
}

/** Options of {@link Rtnetlink.createVeth}. */
export interface VethOptions {
  /** MTU of both ends. */
  readonly mtu?: number;
  readonly mac?: string;
  readonly peerMac?: string;
  /**
   * Where the peer is created: it appears there directly under its name, so it never shows (or
   * collides) in this namespace. A path or an fd (the caller's; not closed).
   */
  readonly peerNetns?: NetnsRef;
  /** Bring this end up as part of the creation. */
  readonly up?: boolean;
  /** Bring the peer up as part of the creation. */
  readonly peerUp?: boolean;
  /** Enslave this end to this bridge as part of the creation. */
  readonly master?: LinkRef;
}

/** Options of {@link Rtnetlink.addAddress}. */
export interface AddressOptions {
  /** IPv6: skip duplicate address detection so the address is usable at once (`IFA_F_NODAD`). */
  readonly noDad?: boolean;
  /** Replace an existing equal address instead of failing with `already-exists`. */
  readonly replace?: boolean;
}

/** Options of {@link Rtnetlink.open}. */
export interface RtnetlinkOptions extends NetlinkSocketOptions {
  /** The network namespace to operate in; the caller's own when absent. */
  readonly netns?: NetnsRef;
}

const familyOf = (f: 4 | 6) => (f === 4 ? AddressFamily.INET : AddressFamily.INET6);

/** `IFLA_PROTINFO`: per-family port attributes; for AF_BRIDGE the `IFLA_BRPORT_*` set. */
const IFLA_PROTINFO = 12;
/** `IFLA_BRPORT_MODE`: the bridge port's hairpin mode (u8). */
const IFLA_BRPORT_MODE = 4;

function ifinfomsg(index = 0, flags = 0, change = 0, family: number = AddressFamily.UNSPEC): Buffer {
  // struct ifinfomsg: family u8, pad u8, type u16, index s32, flags u32, change u32.
  const b = Buffer.alloc(16);
  b.writeUInt8(family, 0);
  b.writeInt32LE(index, 4);
  b.writeUInt32LE(flags >>> 0, 8);
  b.writeUInt32LE(change >>> 0, 12);
  return b;
}

function ifaddrmsg(
  family: number,
  prefixLength: number,
  flags: number,
  scope: number,
  index: number,
): Buffer {
  // struct ifaddrmsg: family u8, prefixlen u8, flags u8, scope u8, index u32.
  return Buffer.from([
    family,
    prefixLength,
    flags & 0xff,
    scope,
    index & 0xff,
    (index >> 8) & 0xff,
    (index >> 16) & 0xff,
    index >>> 24,
  ]);
}

function rtmsg(fields: {
  family: number;
  dstLen?: number;
  table?: number;
  protocol?: number;
  scope?: number;
  type?: number;
}): Buffer {
  // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type (u8 each), flags u32.
  const b = Buffer.alloc(12);
  b.writeUInt8(fields.family, 0);
  b.writeUInt8(fields.dstLen ?? 0, 1);
  b.writeUInt8(fields.table ?? 0, 4);
  b.writeUInt8(fields.protocol ?? 0, 5);
  b.writeUInt8(fields.scope ?? 0, 6);
  b.writeUInt8(fields.type ?? 0, 7);
  return b;
}

const describe = (ref: LinkRef) => (typeof ref === "number" ? `link index ${ref}` : `link ${ref}`);

function linkSelector(ref: LinkRef): { index: number; attrs: AttributeSpec[] } {
  if (typeof ref === "number") {
    if (!Number.isInteger(ref) || ref <= 0)
      throw invalidArgument(`link index ${ref} is not a positive integer`);
    return { index: ref, attrs: [] };
  }
  checkName(ref);
  return { index: 0, attrs: [attr.string(Ifla.IFNAME, ref)] };
}

function checkName(name: string): void {
  // IFNAMSIZ is 16 including the NUL; '/' and whitespace are refused by dev_valid_name.
  if (name === "" || Buffer.byteLength(name) > 15 || /[/\s:]/.test(name) || name === "." || name === "..")
    throw invalidArgument(
      `link name ${JSON.stringify(name)} is not valid (1-15 bytes, no '/', ':' or spaces)`,
    );
}

function checkMtu(mtu: number): number {
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535)
    throw invalidArgument(`MTU ${mtu} is not in 68..65535`);
  return mtu;
}

function decodeLink(payload: Buffer): Link {
  const flags = payload.readUInt32LE(8);
  const a = new Attributes(decodeAttributes(payload, 16));
  const mac = a.get(Ifla.ADDRESS);
  const operState = a.u8(Ifla.OPERSTATE);
  return {
    index: payload.readInt32LE(4),
    name: a.string(Ifla.IFNAME) ?? "",
    kind: a.nested(Ifla.LINKINFO)?.string(IflaInfo.KIND),
    mtu: a.u32(Ifla.MTU) ?? 0,
    mac: mac && mac.length > 0 ? formatMac(mac) : undefined,
    up: (flags & Iff.UP) !== 0,
    flags,
    operState: (operState === undefined ? undefined : OPER_STATES[operState]) ?? "unknown",
    masterIndex: a.u32(Ifla.MASTER),
    linkIndex: a.u32(Ifla.LINK),
    linkNetnsId: a.s32(Ifla.LINK_NETNSID),
  };
}

function decodeAddress(payload: Buffer): InterfaceAddress {
  const a = new Attributes(decodeAttributes(payload, 8));
  // For IPv4, IFA_LOCAL is the address and IFA_ADDRESS the peer (equal unless point-to-point);
  // IPv6 sends IFA_ADDRESS only.
  const bytes = a.get(Ifa.LOCAL) ?? a.get(Ifa.ADDRESS) ?? Buffer.alloc(0);
  return {
    linkIndex: payload.readUInt32LE(4),
    family: payload.readUInt8(0) === AddressFamily.INET ? 4 : 6,
    address: formatIpBytes(bytes),
    prefixLength: payload.readUInt8(1),
    scope: payload.readUInt8(3),
    flags: a.u32(Ifa.FLAGS) ?? payload.readUInt8(2),
    label: a.string(Ifa.LABEL),
  };
}

function decodeRoute(payload: Buffer): Route {
  const a = new Attributes(decodeAttributes(payload, 12));
  const dstLen = payload.readUInt8(1);
  const dst = a.get(Rta.DST);
  const gateway = a.get(Rta.GATEWAY);
  const source = a.get(Rta.PREFSRC);
  return {
    family: payload.readUInt8(0) === AddressFamily.INET ? 4 : 6,
    destination: dstLen === 0 || !dst ? "default" : `${formatIpBytes(dst)}/${dstLen}`,
    gateway: gateway ? formatIpBytes(gateway) : undefined,
    linkIndex: a.u32(Rta.OIF),
    table: a.u32(Rta.TABLE) ?? payload.readUInt8(4),
    protocol: payload.readUInt8(5),
    scope: payload.readUInt8(6),
    type: payload.readUInt8(7),
    metric: a.u32(Rta.PRIORITY),
    preferredSource: source ? formatIpBytes(source) : undefined,
  };
}

/**
 * rtnetlink (`NETLINK_ROUTE`) over one socket: links, addresses and routes of the network
 * namespace the socket was opened in. Every method is synchronous and blocks for one round trip to
 * the kernel (or two when a link name must first be turned into an index).
 *
 * Errors are `SystemError`s carrying the kernel's errno and naming the object:
 * `netlink RTM_NEWLINK link berth0: EEXIST` has code `already-exists`, a missing link
 * (`ENODEV`) `not-found`; arguments that cannot be valid are refused with `invalid-argument` before
 * anything is sent.
 *
 * The owner calls {@link Rtnetlink.close}.
 */
export class Rtnetlink {
  readonly connection: NetlinkConnection;

  /** Wraps a `NETLINK_ROUTE` connection; takes ownership of it. */
  constructor(connection: NetlinkConnection) {
    this.connection = connection;
  }

  /**
   * Opens a `NETLINK_ROUTE` socket in `options.netns` (moving the calling thread there only for the
   * `socket(2)` call) or in the caller's namespace. Throws what {@link withNetns} and
   * {@link NetlinkConnection.open} throw.
   */
  static open(options: RtnetlinkOptions = {}): Rtnetlink {
    const { netns, ...socketOptions } = options;
    const open = () => new Rtnetlink(NetlinkConnection.open(NetlinkProtocol.ROUTE, socketOptions));
    return netns === undefined ? open() : withNetns(netns, open);
  }

  /**
   * Opens a socket as {@link Rtnetlink.open} does, runs `fn` with it and closes it, whatever `fn`
   * does. `fn` must be synchronous (every method here is).
   */
  static use<T>(options: RtnetlinkOptions, fn: (rt: Rtnetlink) => NotPromise<T>): NotPromise<T> {
    const rt = Rtnetlink.open(options);
    try {
      return fn(rt);
    } finally {
      rt.close();
    }
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.connection.close();
  }

  #request(type: number, flags: number, parts: readonly Uint8Array[], context: RequestContext): Buffer[] {
    return this.connection.request(type, flags, parts, context);
  }

  // ---- links ----

  /** Every link of the namespace, in index order. */
  listLinks(): Link[] {
    const replies = this.connection.dump(
      RtmType.GETLINK,
      RtmType.NEWLINK,
      [ifinfomsg(), encodeAttributes([attr.u32(Ifla.EXT_MASK, RTEXT_FILTER_SKIP_STATS)])],
      { operation: "RTM_GETLINK" },
    );
    return replies.map(decodeLink).sort((x, y) => x.index - y.index);
  }

  /** The link named or numbered `ref`. Throws `not-found` naming it when there is none. */
  getLink(ref: LinkRef): Link {
    const { index, attrs } = linkSelector(ref);
    const [reply] = this.#request(
      RtmType.GETLINK,
      0,
      [ifinfomsg(index), encodeAttributes([...attrs, attr.u32(Ifla.EXT_MASK, RTEXT_FILTER_SKIP_STATS)])],
      { operation: "RTM_GETLINK", object: describe(ref) },
    );
    if (!reply)
      throw dataLoss(`netlink RTM_GETLINK ${describe(ref)}: the kernel acknowledged but sent no link`);
    return decodeLink(reply);
  }

  /** Like {@link Rtnetlink.getLink}, but undefined instead of `not-found`. */
  findLink(ref: LinkRef): Link | undefined {
    try {
      return this.getLink(ref);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The interface index of `ref` (a number is returned as is). Throws `not-found`. */
  linkIndex(ref: LinkRef): number {
    return typeof ref === "number" ? ref : this.getLink(ref).index;
  }

  #newLink(name: string, kind: string, extra: AttributeSpec[], data: AttributeSpec[], up: boolean): void {
    checkName(name);
    const info: AttributeSpec[] = [attr.string(IflaInfo.KIND, kind)];
    if (data.length > 0) info.push(attr.nested(IflaInfo.DATA, data));
    this.#request(
      RtmType.NEWLINK,
      NlmFlag.CREATE | NlmFlag.EXCL,
      [
        ifinfomsg(0, up ? Iff.UP : 0, up ? Iff.UP : 0),
        encodeAttributes([attr.string(Ifla.IFNAME, name), ...extra, attr.nested(Ifla.LINKINFO, info)]),
      ],
      { operation: "RTM_NEWLINK", object: `${kind} ${name}` },
    );
  }

  /**
   * Creates a bridge named `name`. Throws `already-exists` when a link of that name exists and
   * `invalid-argument` for a bad name, MTU or MAC.
   */
  createBridge(name: string, options: BridgeOptions = {}): void {
    const extra: AttributeSpec[] = [];
    if (options.mtu !== undefined) extra.push(attr.u32(Ifla.MTU, checkMtu(options.mtu)));
    if (options.mac !== undefined) extra.push(attr.bytes(Ifla.ADDRESS, parseMac(options.mac)));
    this.#newLink(name, "bridge", extra, [], options.up ?? false);
  }

  /**
   * Creates a veth pair: `name` here and `peerName` either here too or, with
   * `options.peerNetns`, directly inside that namespace (`IFLA_NET_NS_FD` in `VETH_INFO_PEER`), in
   * one request. Throws `already-exists` when either name is taken where it would go (the message
   * cannot tell which), `not-found` for a missing `peerNetns` path or `master`.
   */
  createVeth(name: string, peerName: string, options: VethOptions = {}): void {
    checkName(peerName);
    const extra: AttributeSpec[] = [];
    const peer: AttributeSpec[] = [attr.string(Ifla.IFNAME, peerName)];
    if (options.mtu !== undefined) {
      extra.push(attr.u32(Ifla.MTU, checkMtu(options.mtu)));
      peer.push(attr.u32(Ifla.MTU, options.mtu));
    }
    if (options.mac !== undefined) extra.push(attr.bytes(Ifla.ADDRESS, parseMac(options.mac)));
    if (options.peerMac !== undefined) peer.push(attr.bytes(Ifla.ADDRESS, parseMac(options.peerMac)));
    if (options.master !== undefined) extra.push(attr.u32(Ifla.MASTER, this.linkIndex(options.master)));
    const netns = options.peerNetns;
    const fd = typeof netns === "string" ? openNetns(netns) : netns;
    try {
      if (fd !== undefined) peer.push(attr.s32(Ifla.NET_NS_FD, fd));
      const peerUp = options.peerUp ?? false;
      // VETH_INFO_PEER is a struct ifinfomsg followed by the peer's link attributes.
      const peerInfo = Buffer.concat([
        ifinfomsg(0, peerUp ? Iff.UP : 0, peerUp ? Iff.UP : 0),
        encodeAttributes(peer),
      ]);
      this.#newLink(name, "veth", extra, [attr.bytes(VETH_INFO_PEER, peerInfo)], options.up ?? false);
    } finally {
      if (typeof netns === "string" && fd !== undefined) closeSync(fd);
    }
  }

  #setLink(ref: LinkRef, attrs: AttributeSpec[], flags = 0, change = 0, what = describe(ref)): void {
    const sel = linkSelector(ref);
    this.#request(
      RtmType.NEWLINK,
      0,
      [ifinfomsg(sel.index, flags, change), encodeAttributes([...sel.attrs, ...attrs])],
      { operation: "RTM_NEWLINK", object: what },
    );
  }

  /** Sets the link administratively up. Throws `not-found` naming it when missing. */
  setLinkUp(ref: LinkRef): void {
    this.#setLink(ref, [], Iff.UP, Iff.UP);
  }

  /** Sets the link administratively down. Throws `not-found` naming it when missing. */
  setLinkDown(ref: LinkRef): void {
    this.#setLink(ref, [], 0, Iff.UP);
  }

  /**
   * Enslaves the link to `master` (a bridge), or frees it with `null`. Throws `not-found` when
   * either is missing.
   */
  setMaster(ref: LinkRef, master: LinkRef | null): void {
    const index = master === null ? 0 : this.linkIndex(master);
    this.#setLink(ref, [attr.u32(Ifla.MASTER, index)]);
  }

  /**
   * Turns hairpin mode on or off for a bridge port (`bridge link set dev X hairpin on`): frames
   * may then leave through the port they came in on, so a container reaches its own published
   * port through the host's DNAT. The link must be enslaved to a bridge (`EOPNOTSUPP` otherwise).
   */
  setHairpin(ref: LinkRef, on: boolean): void {
    // The bridge family's setlink looks the port up by ifindex only (no IFLA_IFNAME lookup).
    const index = this.linkIndex(ref);
    // RTM_SETLINK in the AF_BRIDGE family with IFLA_PROTINFO (nested) { IFLA_BRPORT_MODE u8 },
    // as iproute2's `bridge link` sends it.
    this.#request(
      RtmType.SETLINK,
      0,
      [
        ifinfomsg(index, 0, 0, AddressFamily.BRIDGE),
        encodeAttributes([
          { type: IFLA_PROTINFO | NLA_F_NESTED, value: [attr.u8(IFLA_BRPORT_MODE, on ? 1 : 0)] },
        ]),
      ],
      { operation: "RTM_SETLINK", object: `${describe(ref)} (hairpin ${on ? "on" : "off"})` },
    );
  }

  /** Sets the MTU. Throws `invalid-argument` outside 68..65535 (or what the device accepts). */
  setMtu(ref: LinkRef, mtu: number): void {
    this.#setLink(ref, [attr.u32(Ifla.MTU, checkMtu(mtu))]);
  }

  /** Sets the link-layer address `aa:bb:cc:dd:ee:ff`. */
  setMacAddress(ref: LinkRef, mac: string): void {
    this.#setLink(ref, [attr.bytes(Ifla.ADDRESS, parseMac(mac))]);
  }

  /**
   * Renames the link (the kernel refuses with `EBUSY` while it is up). Throws `already-exists`
   * when `newName` is taken and `not-found` when the link is missing.
   */
  renameLink(ref: LinkRef, newName: string): void {
    checkName(newName);
    const index = this.linkIndex(ref);
    this.#setLink(index, [attr.string(Ifla.IFNAME, newName)], 0, 0, `${describe(ref)} (to ${newName})`);
  }

  /** Moves the link into the network namespace `netns` (a path or an fd the caller keeps). */
  moveLink(ref: LinkRef, netns: NetnsRef): void {
    const fd = typeof netns === "string" ? openNetns(netns) : netns;
    try {
      this.#setLink(ref, [attr.s32(Ifla.NET_NS_FD, fd)]);
    } finally {
      if (typeof netns === "string") closeSync(fd);
    }
  }

  /**
   * Deletes the link (for a veth, both ends). Throws `not-found` naming it when missing, unless
   * `ignoreMissing`, in which case it returns false. Returns true when it deleted something.
   */
  deleteLink(ref: LinkRef, options: { readonly ignoreMissing?: boolean } = {}): boolean {
    const sel = linkSelector(ref);
    try {
      this.#request(RtmType.DELLINK, 0, [ifinfomsg(sel.index), encodeAttributes(sel.attrs)], {
        operation: "RTM_DELLINK",
        object: describe(ref),
      });
      return true;
    } catch (err) {
      if (options.ignoreMissing && isNotFound(err)) return false;
      throw err;
    }
  }

  // ---- addresses ----

  #addressRequest(type: number, flags: number, ref: LinkRef, cidr: string, noDad: boolean): void {
    const p = prefixBytes(cidr);
    const index = this.linkIndex(ref);
    const attrs: AttributeSpec[] = [attr.bytes(Ifa.LOCAL, p.bytes), attr.bytes(Ifa.ADDRESS, p.bytes)];
    if (p.family === 4 && p.prefixLength < 31 && type === RtmType.NEWADDR) {
      // What `ip addr add … brd +` sets: the network's all-ones address.
      const brd = networkBytes(p.bytes, p.prefixLength);
      for (let i = 0; i < 4; i++) {
        const keep = Math.max(0, Math.min(8, p.prefixLength - i * 8));
        brd[i] = (brd[i] ?? 0) | (0xff >> keep);
      }
      attrs.push(attr.bytes(Ifa.BROADCAST, brd));
    }
    const ifaFlags = noDad ? IfaFlag.NODAD : 0;
    if (ifaFlags) attrs.push(attr.u32(Ifa.FLAGS, ifaFlags));
    this.#request(
      type,
      flags,
      [
        ifaddrmsg(familyOf(p.family), p.prefixLength, ifaFlags, RtScope.UNIVERSE, index),
        encodeAttributes(attrs),
      ],
      {
        operation: type === RtmType.NEWADDR ? "RTM_NEWADDR" : "RTM_DELADDR",
        object: `${p.address}/${p.prefixLength} on ${describe(ref)}`,
      },
    );
  }

  /**
   * Adds `cidr` (`10.88.0.2/16`, `fd00::2/64`) to the link; the kernel adds the prefix route.
   * Throws `already-exists` when the address is there (unless `replace`), `not-found` for a missing
   * link, `invalid-argument` for a malformed address.
   */
  addAddress(ref: LinkRef, cidr: string, options: AddressOptions = {}): void {
    const flags = NlmFlag.CREATE | (options.replace ? NlmFlag.REPLACE : NlmFlag.EXCL);
    this.#addressRequest(RtmType.NEWADDR, flags, ref, cidr, options.noDad ?? false);
  }

  /**
   * Removes `cidr` from the link. Throws a `SystemError` with `EADDRNOTAVAIL` when it is not
   * there, `not-found` for a missing link.
   */
  deleteAddress(ref: LinkRef, cidr: string): void {
    this.#addressRequest(RtmType.DELADDR, 0, ref, cidr, false);
  }

  /** The addresses of the namespace, optionally of one link and one family. */
  listAddresses(filter: { readonly link?: LinkRef; readonly family?: 4 | 6 } = {}): InterfaceAddress[] {
    const index = filter.link === undefined ? 0 : this.linkIndex(filter.link);
    const family = filter.family === undefined ? AddressFamily.UNSPEC : familyOf(filter.family);
    // With NETLINK_GET_STRICT_CHK the kernel filters by index already; filtering again here keeps
    // the result right on kernels without it.
    return this.connection
      .dump(RtmType.GETADDR, RtmType.NEWADDR, [ifaddrmsg(family, 0, 0, 0, index)], {
        operation: "RTM_GETADDR",
        ...(filter.link === undefined ? {} : { object: describe(filter.link) }),
      })
      .map(decodeAddress)
      .filter(
        (a) =>
          (index === 0 || a.linkIndex === index) &&
          (filter.family === undefined || a.family === filter.family),
      );
  }

  // ---- routes ----

  #routeMessage(spec: RouteSpec, add: boolean): { parts: Buffer[]; object: string } {
    const destination = spec.destination ?? "default";
    const dst = destination === "default" ? undefined : prefixBytes(destination);
    const gateway = spec.gateway === undefined ? undefined : ipBytes(spec.gateway);
    const family = dst?.family ?? gateway?.family ?? spec.family ?? 4;
    if ((dst && dst.family !== family) || (gateway && gateway.family !== family))
      throw invalidArgument(
        `route ${destination} via ${spec.gateway}: destination and gateway families differ`,
      );
    if (dst && !networkBytes(dst.bytes, dst.prefixLength).equals(dst.bytes))
      throw invalidArgument(`route destination ${destination} has host bits set`);
    if (add && !gateway && spec.link === undefined)
      throw invalidArgument(`route ${destination}: needs a gateway or a link`);
    const table = spec.table ?? RtTable.MAIN;
    const attrs: AttributeSpec[] = [];
    if (dst && dst.prefixLength > 0) attrs.push(attr.bytes(Rta.DST, dst.bytes));
    if (gateway) attrs.push(attr.bytes(Rta.GATEWAY, gateway.bytes));
    if (spec.link !== undefined) attrs.push(attr.u32(Rta.OIF, this.linkIndex(spec.link)));
    if (spec.metric !== undefined) attrs.push(attr.u32(Rta.PRIORITY, spec.metric));
    if (spec.source !== undefined) attrs.push(attr.bytes(Rta.PREFSRC, ipBytes(spec.source).bytes));
    attrs.push(attr.u32(Rta.TABLE, table));
    const header = rtmsg({
      family: familyOf(family),
      dstLen: dst?.prefixLength ?? 0,
      // Tables above 255 only fit RTA_TABLE; the header then says RT_TABLE_UNSPEC.
      table: table < 256 ? table : RtTable.UNSPEC,
      // A delete matches any protocol and type; scope NOWHERE matches any scope (as `ip route del`).
      protocol: add ? RtProtocol.BOOT : RtProtocol.UNSPEC,
      scope: add ? (gateway ? RtScope.UNIVERSE : RtScope.LINK) : RtScope.NOWHERE,
      type: add ? RtnType.UNICAST : RtnType.UNSPEC,
    });
    const object = `${destination}${spec.gateway ? ` via ${spec.gateway}` : ""}${spec.link === undefined ? "" : ` dev ${spec.link}`}`;
    return { parts: [header, encodeAttributes(attrs)], object };
  }

  /**
   * Adds a route, by default to `default` via `gateway`. Throws `already-exists` when an equal route
   * exists, a `SystemError` with `ENETUNREACH` when the gateway is not on a connected network,
   * `invalid-argument` for a malformed spec.
   */
  addRoute(spec: RouteSpec): void {
    const { parts, object } = this.#routeMessage(spec, true);
    this.#request(RtmType.NEWROUTE, NlmFlag.CREATE | NlmFlag.EXCL, parts, {
      operation: "RTM_NEWROUTE",
      object,
    });
  }

  /** Deletes the route matching `spec`. Throws a `SystemError` with `ESRCH` (`not-found`) when none matches. */
  deleteRoute(spec: RouteSpec): void {
    const { parts, object } = this.#routeMessage(spec, false);
    this.#request(RtmType.DELROUTE, 0, parts, { operation: "RTM_DELROUTE", object });
  }

  /** The routes of one family (default 4) in one table (default main). */
  listRoutes(filter: { readonly family?: 4 | 6; readonly table?: number } = {}): Route[] {
    const family = filter.family ?? 4;
    const table = filter.table ?? RtTable.MAIN;
    return this.connection
      .dump(RtmType.GETROUTE, RtmType.NEWROUTE, [rtmsg({ family: familyOf(family) })], {
        operation: "RTM_GETROUTE",
      })
      .map(decodeRoute)
      .filter((r) => r.table === table);
  }
}
