import { createHash } from "node:crypto";
import { linkSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { alreadyExists, failedPrecondition, invalidArgument, isNotFound, notFound } from "@berth/errdefs";
import { formatIp, formatNetwork, networksOverlap, parseCidr } from "../ipam/ip.js";
import { createIpam, type Ipam, type IpamNetwork, resolveIpamRange } from "../ipam/ipam.js";
import { createNat, type Nat, type PortMapping } from "../nat/nat.js";
import { Rtnetlink } from "../netlink/rtnetlink.js";
import { withNetns } from "../netns/netns.js";

/** The network containers join when none is named. */
export const DEFAULT_BRIDGE_NETWORK = "berth";
/** The bridge of {@link DEFAULT_BRIDGE_NETWORK}. */
export const DEFAULT_BRIDGE_NAME = "berth0";
/**
 * The default network's subnet. 10.4.0.0/24 rather than Docker's 172.17/16 or nerdctl/CNI's
 * 10.88/16, so that berth can run beside either without two bridges claiming one subnet.
 * Other networks created without a subnet get the next free /24 after it (10.4.1.0/24, …).
 */
export const DEFAULT_BRIDGE_SUBNET = "10.4.0.0/24";

/** A bridge network as persisted in `<stateDir>/networks/<name>.json`. */
export interface BridgeNetwork {
  readonly name: string;
  /** The Linux bridge: `berth0` for the default network, `br-<12 hex of sha256(name)>` otherwise. */
  readonly bridge: string;
  /** IPv4 subnet in CIDR form. */
  readonly subnet: string;
  /** The bridge's address, the containers' default route. */
  readonly gateway: string;
  /** RFC 3339 creation time. */
  readonly created: string;
}

/** Options of {@link createBridgeDriver}. */
export interface BridgeDriverOptions {
  /** Where network records (`networks/`) and IPAM allocations (`ipam/`) are kept. */
  readonly stateDir: string;
  /**
   * The namespace playing "the host" (where bridges, host-side veths and NAT rules go): a
   * namespace file path. Default: the calling thread's namespace. Tests pass a namespace of their own.
   */
  readonly hostNetns?: string;
  /** The nftables table (default `berth`, see {@link createNat}). */
  readonly natTable?: string;
}

/** Options of {@link BridgeDriver.createNetwork}. */
export interface CreateBridgeNetworkOptions {
  /** Letters, digits, `_`, `.`, `-`; at most 64 characters. */
  readonly name: string;
  /** IPv4 CIDR; default the next /24 from {@link DEFAULT_BRIDGE_SUBNET} not used by another network. */
  readonly subnet?: string;
  /** Default: the subnet's first host address. */
  readonly gateway?: string;
}

/** Options of {@link BridgeDriver.connect}. */
export interface ConnectOptions {
  /** Letters, digits, `_`, `.`, `-`; at most 64 characters. */
  readonly containerId: string;
  /** The container's network namespace file. */
  readonly netnsPath: string;
  /** The interface name inside the container (default `eth0`). */
  readonly ifname?: string;
  /** Ports to publish on the host. */
  readonly ports?: readonly PortMapping[];
}

/** What {@link BridgeDriver.connect} set up. */
export interface BridgeAttachment {
  /** The container's address (`10.4.0.2`). */
  readonly ip: string;
  readonly prefixLength: number;
  readonly gateway: string;
  /** The MAC address of the container's interface. */
  readonly mac: string;
  /** The host-side veth, enslaved to the bridge. */
  readonly hostVeth: string;
}

/**
 * berth's bridge network driver: named networks, each a Linux bridge in the host namespace with
 * the gateway address on it, NAT to the outside and published ports (see {@link createNat}), and
 * one veth plus one IPAM address per connected container.
 *
 * Network records and allocations live under the state directory and survive restarts. The
 * bridge itself is created lazily by the first {@link BridgeDriver.connect} and deleted by
 * {@link BridgeDriver.removeNetwork}.
 */
export interface BridgeDriver {
  /**
   * Records a network. Throws `invalid-argument` for a bad name, subnet or gateway (or an IPv6
   * subnet: not supported yet), `already-exists` when the name is taken or another network uses
   * an overlapping subnet.
   */
  createNetwork(options: CreateBridgeNetworkOptions): Promise<BridgeNetwork>;
  /** Every recorded network, sorted by name. */
  listNetworks(): Promise<BridgeNetwork[]>;
  /** The record of `name`; throws `not-found`. */
  inspectNetwork(name: string): Promise<BridgeNetwork>;
  /**
   * Removes a network: its NAT rules, its bridge and its record. Throws `not-found` for an unknown
   * network and `failed-precondition` while containers are connected.
   */
  removeNetwork(name: string): Promise<void>;
  /**
   * Connects a container's namespace to `network` (the default network is created on first use):
   * an address from the IPAM, a veth whose peer is created directly inside the container
   * namespace as `ifname`, lo and the interface up, a default route via the gateway, forwarding
   * on in the host namespace, NAT and published ports. Connecting again replaces the previous
   * veth and keeps the address. On failure, what was set up is removed again. Throws `not-found`
   * for an unknown network (other than the default) or namespace, `invalid-argument` for bad
   * options, `already-exists` when a published port is taken, `resource-exhausted` when the
   * subnet is full.
   */
  connect(network: string, options: ConnectOptions): Promise<BridgeAttachment>;
  /**
   * Disconnects a container: deletes the host-side veth (which takes the peer with it), removes
   * its published ports and releases its address. Idempotent. Throws `not-found` for an unknown network.
   */
  disconnect(network: string, containerId: string): Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function checkName(what: string, name: string): void {
  if (!NAME.test(name)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} is not valid: letters, digits, "_", ".", "-", at most 64 characters`,
    );
  }
}

const hash = (s: string) => createHash("sha256").update(s).digest("hex");

/** The bridge name of a network: fits IFNAMSIZ (15 bytes) whatever the network's name. */
export function bridgeNameOf(network: string): string {
  return network === DEFAULT_BRIDGE_NETWORK ? DEFAULT_BRIDGE_NAME : `br-${hash(network).slice(0, 12)}`;
}

/** The host-side veth of a container on a network (`vb` + 13 hex; 15 bytes). */
export function hostVethOf(network: string, containerId: string): string {
  return `vb${hash(`${network}\0${containerId}`).slice(0, 13)}`;
}

/**
 * Creates the bridge driver. Nothing is touched until a method is called. Throws
 * `invalid-argument` for a malformed NAT table name.
 */
export function createBridgeDriver(options: BridgeDriverOptions): BridgeDriver {
  return new Driver(options);
}

class Driver implements BridgeDriver {
  readonly #networks: string;
  readonly #ipam: Ipam;
  readonly #nat: Nat;
  readonly #host: string | undefined;

  constructor(options: BridgeDriverOptions) {
    this.#networks = join(options.stateDir, "networks");
    this.#ipam = createIpam(join(options.stateDir, "ipam"));
    this.#host = options.hostNetns;
    this.#nat = createNat({
      ...(options.natTable === undefined ? {} : { table: options.natTable }),
      ...(options.hostNetns === undefined ? {} : { netns: options.hostNetns }),
    });
  }

  #file(name: string): string {
    return join(this.#networks, `${name}.json`);
  }

  async createNetwork(options: CreateBridgeNetworkOptions): Promise<BridgeNetwork> {
    checkName("network name", options.name);
    const existing = await this.listNetworks();
    if (existing.some((n) => n.name === options.name)) {
      throw alreadyExists(`network ${options.name} already exists`);
    }
    const taken = existing.map((n) => parseCidr(n.subnet).network);
    let subnet = options.subnet;
    if (subnet === undefined) {
      const base = parseCidr(DEFAULT_BRIDGE_SUBNET).network;
      // 10.4.0.0/24 stays free for the default network, which is created on first use.
      const from = options.name === DEFAULT_BRIDGE_NETWORK ? 0n : 1n;
      for (let i = from; i < 256n && subnet === undefined; i++) {
        const candidate = { ...base, address: base.address + (i << 8n) };
        if (!taken.some((t) => networksOverlap(t, candidate))) subnet = formatNetwork(candidate);
      }
      if (subnet === undefined) throw alreadyExists(`network ${options.name}: no free /24 in 10.4.0.0/16`);
    }
    const range = resolveIpamRange(
      { subnet, ...(options.gateway === undefined ? {} : { gateway: options.gateway }) },
      `network ${options.name} subnet`,
    );
    if (range.subnet.family !== 4) {
      throw invalidArgument(`network ${options.name}: subnet ${subnet} is IPv6; only IPv4 is supported`);
    }
    const clash = existing.find((n) => networksOverlap(parseCidr(n.subnet).network, range.subnet));
    if (clash !== undefined) {
      throw alreadyExists(
        `network ${options.name}: subnet ${formatNetwork(range.subnet)} overlaps ${clash.subnet} of network ${clash.name}`,
      );
    }
    const record: BridgeNetwork = {
      name: options.name,
      bridge: bridgeNameOf(options.name),
      subnet: formatNetwork(range.subnet),
      gateway: formatIp(range.gateway),
      created: new Date().toISOString(),
    };
    mkdirSync(this.#networks, { recursive: true, mode: 0o700 });
    // Written aside then linked into place: link(2) fails if the name exists, so two processes
    // creating the same network cannot both win, and no reader sees a half-written record.
    const temp = join(this.#networks, `.tmp-${process.pid}-${hash(`${Math.random()}`).slice(0, 8)}`);
    writeFileSync(temp, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    try {
      linkSync(temp, this.#file(record.name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        throw alreadyExists(`network ${options.name} already exists`, { cause: err });
      }
      throw err;
    } finally {
      unlinkSync(temp);
    }
    return record;
  }

  async listNetworks(): Promise<BridgeNetwork[]> {
    let names: string[];
    try {
      names = readdirSync(this.#networks);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    return names
      .filter((n) => n.endsWith(".json") && !n.startsWith("."))
      .sort()
      .map((n) => JSON.parse(readFileSync(join(this.#networks, n), "utf8")) as BridgeNetwork);
  }

  async inspectNetwork(name: string): Promise<BridgeNetwork> {
    checkName("network name", name);
    try {
      return JSON.parse(readFileSync(this.#file(name), "utf8")) as BridgeNetwork;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw notFound(`network ${name} not found`, { cause: err });
      }
      throw err;
    }
  }

  async removeNetwork(name: string): Promise<void> {
    const record = await this.inspectNetwork(name);
    const leases = await this.#ipam.list(name);
    if (leases.length > 0) {
      throw failedPrecondition(
        `network ${name} has ${leases.length} connected container(s): ${leases.map((l) => l.containerId).join(", ")}`,
      );
    }
    this.#nat.removeNetwork(name);
    const rt = this.#rtnl();
    try {
      rt.deleteLink(record.bridge, { ignoreMissing: true });
    } finally {
      rt.close();
    }
    await this.#ipam.releaseAll(name);
    rmSync(this.#file(name), { force: true });
  }

  #rtnl(): Rtnetlink {
    return Rtnetlink.open(this.#host === undefined ? {} : { netns: this.#host });
  }

  #ipamNetwork(n: BridgeNetwork): IpamNetwork {
    return { name: n.name, ranges: [{ subnet: n.subnet, gateway: n.gateway }] };
  }

  async #record(network: string): Promise<BridgeNetwork> {
    try {
      return await this.inspectNetwork(network);
    } catch (err) {
      if (!isNotFound(err) || network !== DEFAULT_BRIDGE_NETWORK) throw err;
      try {
        return await this.createNetwork({ name: network, subnet: DEFAULT_BRIDGE_SUBNET });
      } catch {
        // Another process created it meanwhile (or its subnet is taken: then this says why).
        return await this.inspectNetwork(network);
      }
    }
  }

  async connect(network: string, options: ConnectOptions): Promise<BridgeAttachment> {
    checkName("container id", options.containerId);
    const record = await this.#record(network);
    const ifname = options.ifname ?? "eth0";
    const hostVeth = hostVethOf(record.name, options.containerId);
    const [address] = await this.#ipam.allocate(this.#ipamNetwork(record), options.containerId);
    if (address === undefined) throw invalidArgument(`network ${record.name} has no IPv4 range`);
    try {
      const rt = this.#rtnl();
      try {
        if (rt.findLink(record.bridge) === undefined) {
          try {
            rt.createBridge(record.bridge, { up: true });
          } catch (err) {
            // A concurrent connect created it first.
            if (rt.findLink(record.bridge) === undefined) throw err;
          }
        }
        rt.addAddress(record.bridge, `${record.gateway}/${address.prefixLength}`, { replace: true });
        // A retried connect replaces the previous pair (deleting one end removes both).
        rt.deleteLink(hostVeth, { ignoreMissing: true });
        rt.createVeth(hostVeth, ifname, {
          peerNetns: options.netnsPath,
          master: record.bridge,
          up: true,
        });
        // Hairpin: a container reaching its own published port goes out and back in this port.
        rt.setHairpin(hostVeth, true);
      } finally {
        rt.close();
      }
      // /proc/sys/net shows the namespace of the thread that opens it.
      const enableForwarding = () => writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
      if (this.#host === undefined) enableForwarding();
      else withNetns(this.#host, enableForwarding);

      const ctr = Rtnetlink.open({ netns: options.netnsPath });
      let mac: string;
      try {
        ctr.setLinkUp("lo");
        ctr.addAddress(ifname, address.cidr, { replace: true });
        ctr.setLinkUp(ifname);
        ctr.addRoute({ gateway: address.gateway, link: ifname });
        mac = ctr.getLink(ifname).mac ?? "";
      } finally {
        ctr.close();
      }

      this.#nat.setup();
      this.#nat.addNetwork({ name: record.name, bridge: record.bridge, subnets: [record.subnet] });
      if (options.ports !== undefined && options.ports.length > 0) {
        this.#nat.addContainer({
          id: options.containerId,
          addresses: [address.address],
          ports: options.ports,
        });
      }
      return {
        ip: address.address,
        prefixLength: address.prefixLength,
        gateway: address.gateway,
        mac,
        hostVeth,
      };
    } catch (err) {
      await this.disconnect(record.name, options.containerId).catch(() => undefined);
      throw err;
    }
  }

  async disconnect(network: string, containerId: string): Promise<void> {
    checkName("container id", containerId);
    const record = await this.inspectNetwork(network);
    const rt = this.#rtnl();
    try {
      rt.deleteLink(hostVethOf(record.name, containerId), { ignoreMissing: true });
    } finally {
      rt.close();
    }
    this.#nat.removeContainer(containerId);
    await this.#ipam.release(record.name, containerId);
  }
}
