/**
 * Numbers of the netlink and rtnetlink ABI (linux/netlink.h, linux/rtnetlink.h, linux/if_link.h,
 * linux/if_addr.h, linux/veth.h), declared once. They are stable kernel ABI.
 */

/** Netlink message types every family shares (`NLMSG_*`). */
export const NlmsgType = {
  NOOP: 1,
  ERROR: 2,
  DONE: 3,
  OVERRUN: 4,
} as const;

/** Netlink header flags (`NLM_F_*`). The same bits mean different things for GET and NEW requests. */
export const NlmFlag = {
  REQUEST: 0x1,
  MULTI: 0x2,
  ACK: 0x4,
  ECHO: 0x8,
  DUMP_INTR: 0x10,
  DUMP_FILTERED: 0x20,
  // GET requests
  ROOT: 0x100,
  MATCH: 0x200,
  DUMP: 0x300,
  // NEW requests
  REPLACE: 0x100,
  EXCL: 0x200,
  CREATE: 0x400,
  APPEND: 0x800,
  // ACK (NLMSG_ERROR) messages
  CAPPED: 0x100,
  ACK_TLVS: 0x200,
} as const;

/** Extended-ack attributes in an NLMSG_ERROR or NLMSG_DONE message (`NLMSGERR_ATTR_*`). */
export const NlmsgerrAttr = {
  MSG: 1,
  OFFS: 2,
  COOKIE: 3,
  POLICY: 4,
  MISS_TYPE: 5,
  MISS_NEST: 6,
} as const;

/** rtnetlink message types (`RTM_*`). */
export const RtmType = {
  NEWLINK: 16,
  DELLINK: 17,
  GETLINK: 18,
  SETLINK: 19,
  NEWADDR: 20,
  DELADDR: 21,
  GETADDR: 22,
  NEWROUTE: 24,
  DELROUTE: 25,
  GETROUTE: 26,
} as const;

/** Address families (`AF_*`). */
export const AddressFamily = {
  UNSPEC: 0,
  INET: 2,
  BRIDGE: 7,
  INET6: 10,
} as const;

/** Link attributes (`IFLA_*`). */
export const Ifla = {
  ADDRESS: 1,
  BROADCAST: 2,
  IFNAME: 3,
  MTU: 4,
  LINK: 5,
  MASTER: 10,
  TXQLEN: 13,
  OPERSTATE: 16,
  LINKINFO: 18,
  NET_NS_PID: 19,
  IFALIAS: 20,
  NET_NS_FD: 28,
  EXT_MASK: 29,
  LINK_NETNSID: 37,
} as const;

/** Attributes nested in `IFLA_LINKINFO` (`IFLA_INFO_*`). */
export const IflaInfo = {
  KIND: 1,
  DATA: 2,
  SLAVE_KIND: 4,
  SLAVE_DATA: 5,
} as const;

/** `VETH_INFO_PEER`, the one attribute of a veth's `IFLA_INFO_DATA`: an ifinfomsg plus link attributes. */
export const VETH_INFO_PEER = 1;

/** `RTEXT_FILTER_SKIP_STATS`: leave the (large) statistics out of link replies. */
export const RTEXT_FILTER_SKIP_STATS = 1 << 3;

/** Interface flags (`IFF_*`, linux/if.h). */
export const Iff = {
  UP: 0x1,
  BROADCAST: 0x2,
  LOOPBACK: 0x8,
  POINTOPOINT: 0x10,
  RUNNING: 0x40,
  NOARP: 0x80,
  PROMISC: 0x100,
  MULTICAST: 0x1000,
  LOWER_UP: 0x10000,
} as const;

/** Operational states of `IFLA_OPERSTATE` (RFC 2863), indexed by their number. */
export const OPER_STATES = [
  "unknown",
  "notpresent",
  "down",
  "lowerlayerdown",
  "testing",
  "dormant",
  "up",
] as const;

/** Address attributes (`IFA_*`). */
export const Ifa = {
  ADDRESS: 1,
  LOCAL: 2,
  LABEL: 3,
  BROADCAST: 4,
  CACHEINFO: 6,
  FLAGS: 8,
} as const;

/** Address flags (`IFA_F_*`). */
export const IfaFlag = {
  NODAD: 0x02,
  TENTATIVE: 0x40,
  PERMANENT: 0x80,
  NOPREFIXROUTE: 0x200,
} as const;

/** Route attributes (`RTA_*`). */
export const Rta = {
  DST: 1,
  SRC: 2,
  IIF: 3,
  OIF: 4,
  GATEWAY: 5,
  PRIORITY: 6,
  PREFSRC: 7,
  TABLE: 15,
} as const;

/** Routing tables (`RT_TABLE_*`). */
export const RtTable = {
  UNSPEC: 0,
  DEFAULT: 253,
  MAIN: 254,
  LOCAL: 255,
} as const;

/** Who installed a route (`RTPROT_*`). */
export const RtProtocol = {
  UNSPEC: 0,
  KERNEL: 2,
  BOOT: 3,
  STATIC: 4,
} as const;

/** Route scopes (`RT_SCOPE_*`), also used for addresses. */
export const RtScope = {
  UNIVERSE: 0,
  SITE: 200,
  LINK: 253,
  HOST: 254,
  NOWHERE: 255,
} as const;

/** Route types (`RTN_*`). */
export const RtnType = {
  UNSPEC: 0,
  UNICAST: 1,
  LOCAL: 2,
  BROADCAST: 3,
  ANYCAST: 4,
  MULTICAST: 5,
  BLACKHOLE: 6,
  UNREACHABLE: 7,
  PROHIBIT: 8,
} as const;

/** Names of the `RTM_*` types this package sends, for error messages. @internal */
export const rtmNames: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(RtmType).map(([name, value]) => [value, `RTM_${name}`]),
);
