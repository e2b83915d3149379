import { invalidArgument } from "@berth/errdefs";
import { tryParseIp } from "../ipam/ip.js";
import { parseConflist, validateNetworkName } from "./conflist.js";
import { CNI_VERSION, type CniNetworkConfigList, type CniPluginConfig } from "./types.js";

/** One address family of a berth bridge network, as the bridge driver configures it. */
export interface BridgeNetworkSubnet {
  /** The subnet in CIDR form, `10.88.0.0/16` or `fd00:88::/64`. */
  readonly subnet: string;
  /** The gateway address on the bridge; host-local's default (the subnet's first address) if absent. */
  readonly gateway?: string;
  /** First and last address handed to containers, when narrower than the subnet. */
  readonly rangeStart?: string;
  readonly rangeEnd?: string;
}

/**
 * What {@link exportBridgeConflist} needs to know about a berth bridge network. It is a structural
 * subset of the bridge driver's network record, so any record with these fields can be passed.
 */
export interface BridgeNetworkDescription {
  /** The network name; becomes the conflist `name`. */
  readonly name: string;
  /** The bridge interface name (berth's default network uses `berth0`). */
  readonly bridge: string;
  /** The IPv4 subnet (and, optionally, an IPv6 one). At least one is required. */
  readonly ipv4?: BridgeNetworkSubnet;
  readonly ipv6?: BridgeNetworkSubnet;
  readonly mtu?: number;
  /** Masquerade traffic leaving the subnet (berth's default: true). */
  readonly masquerade?: boolean;
  /** Let a container reach its own published ports through the host (berth's default: true). */
  readonly hairpin?: boolean;
}

/** Options of {@link exportBridgeConflist}. */
export interface ExportBridgeConflistOptions {
  /**
   * Add the `firewall` plugin (default true), which admits the container's traffic in the
   * FORWARD chain the way berth's own rules do; false leaves forwarding policy to the host.
   */
  readonly firewall?: boolean;
  /** host-local's `dataDir` (its default is /var/lib/cni/networks). */
  readonly ipamDataDir?: string;
}

function checkSubnet(network: string, family: 4 | 6, s: BridgeNetworkSubnet): void {
  const [address, prefix, ...rest] = s.subnet.split("/");
  const bits = Number(prefix);
  if (
    rest.length > 0 ||
    address === undefined ||
    tryParseIp(address)?.family !== family ||
    !Number.isInteger(bits) ||
    bits < 0 ||
    bits > (family === 4 ? 32 : 128)
  ) {
    throw invalidArgument(`network ${network}: subnet ${s.subnet} is not an IPv${family} CIDR`);
  }
  for (const [field, value] of [
    ["gateway", s.gateway],
    ["rangeStart", s.rangeStart],
    ["rangeEnd", s.rangeEnd],
  ] as const) {
    if (value !== undefined && tryParseIp(value)?.family !== family) {
      throw invalidArgument(`network ${network}: ${field} ${value} is not an IPv${family} address`);
    }
  }
}

function range(s: BridgeNetworkSubnet): Record<string, string> {
  return {
    subnet: s.subnet,
    ...(s.gateway === undefined ? {} : { gateway: s.gateway }),
    ...(s.rangeStart === undefined ? {} : { rangeStart: s.rangeStart }),
    ...(s.rangeEnd === undefined ? {} : { rangeEnd: s.rangeEnd }),
  };
}

/**
 * Describes a berth bridge network as an equivalent CNI 1.0.0 conflist for the standard plugins:
 * `bridge` (same bridge name, gateway on the bridge, default route through it, masquerade and
 * hairpin as configured) with `host-local` IPAM over the same subnets and gateways; `portmap`
 * declaring the `portMappings` capability (published ports arrive as capability arguments); and,
 * unless disabled, `firewall`. The two drivers must not manage the same bridge at the same time:
 * the conflist is for running the network under a CNI runtime instead of berth's driver (or as a
 * benchmark anchor), not alongside it. Throws `invalid-argument` for an invalid name, bridge name,
 * subnet or address, or when neither family is given. The result is validated by `parseConflist`.
 */
export function exportBridgeConflist(
  network: BridgeNetworkDescription,
  options: ExportBridgeConflistOptions = {},
): CniNetworkConfigList {
  validateNetworkName(network.name);
  if (network.bridge === "" || Buffer.byteLength(network.bridge) > 15 || /[/:\s]/.test(network.bridge)) {
    throw invalidArgument(
      `network ${network.name}: bridge name ${JSON.stringify(network.bridge)} is not valid`,
    );
  }
  if (network.ipv4 === undefined && network.ipv6 === undefined) {
    throw invalidArgument(`network ${network.name}: needs an IPv4 or IPv6 subnet`);
  }
  if (
    network.mtu !== undefined &&
    (!Number.isInteger(network.mtu) || network.mtu < 68 || network.mtu > 65535)
  ) {
    throw invalidArgument(`network ${network.name}: mtu ${network.mtu} is not in 68..65535`);
  }
  const ranges: Record<string, string>[][] = [];
  const routes: { dst: string }[] = [];
  if (network.ipv4 !== undefined) {
    checkSubnet(network.name, 4, network.ipv4);
    ranges.push([range(network.ipv4)]);
    routes.push({ dst: "0.0.0.0/0" });
  }
  if (network.ipv6 !== undefined) {
    checkSubnet(network.name, 6, network.ipv6);
    ranges.push([range(network.ipv6)]);
    routes.push({ dst: "::/0" });
  }
  const plugins: CniPluginConfig[] = [
    {
      type: "bridge",
      bridge: network.bridge,
      isGateway: true,
      ipMasq: network.masquerade ?? true,
      hairpinMode: network.hairpin ?? true,
      ...(network.mtu === undefined ? {} : { mtu: network.mtu }),
      ipam: {
        type: "host-local",
        ranges,
        routes,
        ...(options.ipamDataDir === undefined ? {} : { dataDir: options.ipamDataDir }),
      },
    },
    // snat makes connections to a published port from the host itself (127.0.0.1) work, as
    // berth's own NAT does.
    { type: "portmap", capabilities: { portMappings: true }, snat: true },
  ];
  if (options.firewall ?? true) plugins.push({ type: "firewall" });
  return parseConflist(
    { cniVersion: CNI_VERSION, name: network.name, plugins },
    `export of network ${network.name}`,
  );
}
