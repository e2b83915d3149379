/**
 * rtnetlink through koffi: bridge, veth, addresses, routes, network namespaces; IPAM; NAT and published ports in berth's own nftables table; CNI plugin runner.
 *
 * @packageDocumentation
 */

// Bridge driver: named networks persisted under the state dir, a bridge + veth + IPAM address per
// container, NAT and published ports; /etc/hosts and /etc/resolv.conf for containers.
export type {
  BridgeAttachment,
  BridgeDriver,
  BridgeDriverOptions,
  BridgeNetwork,
  ConnectOptions,
  CreateBridgeNetworkOptions,
} from "./bridge/bridge-driver.js";
export {
  bridgeNameOf,
  createBridgeDriver,
  DEFAULT_BRIDGE_NAME,
  DEFAULT_BRIDGE_NETWORK,
  DEFAULT_BRIDGE_SUBNET,
  hostVethOf,
} from "./bridge/bridge-driver.js";
export type { HostsAndResolvOptions } from "./bridge/hosts.js";
export { containerResolvConf, DEFAULT_NAMESERVERS, writeHostsAndResolv } from "./bridge/hosts.js";
// CNI: conflist loading, the plugin runner (ADD/CHECK/DEL with a result cache), conflist export.
export type { CniCacheEntry } from "./cni/cache.js";
export { loadConflist, parseConflist, validateNetworkName } from "./cni/conflist.js";
export type { CniPluginErrorDetails } from "./cni/errors.js";
export { CniPluginError } from "./cni/errors.js";
export type { ExecPluginRequest } from "./cni/exec.js";
export { execPlugin, findPlugin } from "./cni/exec.js";
export type {
  BridgeNetworkDescription,
  BridgeNetworkSubnet,
  ExportBridgeConflistOptions,
} from "./cni/export.js";
export { exportBridgeConflist } from "./cni/export.js";
export type { CniCallOptions, CniRunner, CniRunnerOptions } from "./cni/runner.js";
export { createCniRunner, pluginStdin } from "./cni/runner.js";
export type {
  CniDns,
  CniInterface,
  CniIpConfig,
  CniNetworkConfigList,
  CniPluginConfig,
  CniPortMapping,
  CniResult,
  CniRoute,
  CniRuntimeConfig,
  CniVersion,
  CniVersionInfo,
} from "./cni/types.js";
export {
  CNI_VERSION,
  CNI_VERSIONS,
  CniCommand,
  CniErrorCode,
  DEFAULT_CNI_PLUGIN_PATHS,
} from "./cni/types.js";
// IPAM: host-local style allocations (one file per address, flock + link for cross-process
// safety, round-robin), and the package's one IP module: bigint CIDR math, text and netlink bytes.
export type { IpAddress, IpFamily, IpNetwork, IpPrefix } from "./ipam/ip.js";
export {
  addToIp,
  compareIp,
  familyBits,
  firstAddress,
  formatIp,
  formatNetwork,
  formatPrefix,
  ipEquals,
  ipFromBytes,
  ipToBytes,
  lastAddress,
  networkContains,
  networkOf,
  networkSize,
  networksOverlap,
  parseCidr,
  parseIp,
  tryParseIp,
} from "./ipam/ip.js";
export type {
  AllocateOptions,
  Ipam,
  IpamAddress,
  IpamLease,
  IpamNetwork,
  IpamRange,
  ResolvedIpamRange,
} from "./ipam/ipam.js";
export { createIpam, resolveIpamRange } from "./ipam/ipam.js";
// Container networking through the lifecycle: prepare before create, setup after create, teardown
// after delete, sweep after a restart; modes bridge, host, none, container:, ns:, cni:.
export type {
  ContainerNetwork,
  NetworkManager,
  NetworkManagerOptions,
  NetworkMode,
  NetworkMount,
  NetworkPlan,
  PrepareNetworkOptions,
  SetupTarget,
} from "./manager/manager.js";
export {
  createNetworkManager,
  formatNetworkMode,
  NetworkModeKind,
  NetworkPhase,
  parseNetworkMode,
} from "./manager/manager.js";
export { formatPortMapping, parsePortMapping } from "./manager/ports.js";
// NAT and published ports: berth's own `inet` nftables table, programmed through libnftables.
export type {
  Nat,
  NatContainer,
  NatNetwork,
  NatNetworkInfo,
  NatOptions,
  PortMapping,
  PublishedPort,
} from "./nat/nat.js";
export { createNat, NAT_DEFAULT_TABLE, PortProtocol } from "./nat/nat.js";
// Netlink and network namespaces: the rtnetlink client (links, addresses, routes), its message
// codec, and namespace handles.
export type { RequestContext } from "./netlink/connection.js";
export { NetlinkConnection } from "./netlink/connection.js";
export {
  AddressFamily,
  Iff,
  NlmFlag,
  NlmsgType,
  RtmType,
  RtnType,
  RtProtocol,
  RtScope,
  RtTable,
} from "./netlink/constants.js";
export { formatMac, parseMac } from "./netlink/ip.js";
export type { AttributeSpec, NetlinkAttribute, NetlinkHeader, NetlinkMessage } from "./netlink/message.js";
export {
  Attributes,
  attr,
  decodeAttributes,
  decodeMessages,
  encodeAttributes,
  encodeMessage,
} from "./netlink/message.js";
export type {
  AddressOptions,
  BridgeOptions,
  InterfaceAddress,
  Link,
  LinkRef,
  Route,
  RouteSpec,
  RtnetlinkOptions,
  VethOptions,
} from "./netlink/rtnetlink.js";
export { Rtnetlink } from "./netlink/rtnetlink.js";
export type { NetnsRef, NotPromise } from "./netns/netns.js";
export { CURRENT_NETNS, createNetns, deleteNetns, openNetns, pinNetns, withNetns } from "./netns/netns.js";
