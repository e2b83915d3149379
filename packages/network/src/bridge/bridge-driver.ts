import { createHash } from "node:crypto";
import { linkSync, mkdirSync, readdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  alreadyExists,
  dataLoss,
  failedPrecondition,
  invalidArgument,
  isDataLoss,
  isNotFound,
  notFound,
} from "@berth/errdefs";
import { formatIp, formatNetwork, type IpNetwork, networksOverlap, parseCidr } from "../ipam/ip.js";
import { createIpam, type Ipam, type IpamNetwork, type IpamRange, resolveIpamRange } from "../ipam/ipam.js";
import { createNat, type Nat, type PortMapping } from "../nat/nat.js";
import { Rtnetlink } from "../netlink/rtnetlink.js";
import { type NotPromise, withNetns } from "../netns/netns.js";

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

/** The link-local address of every dual-stack bridge (Docker uses the same). */
const BRIDGE_LINK_LOCAL = "fe80::1/64";

/** A bridge network as persisted in `<stateDir>/networks/<name>.json`. */
export interface BridgeNetwork {
  readonly name: string;
  /** The Linux bridge: `berth0` for the default network, `br-<12 hex of sha256(name)>` otherwise. */
  readonly bridge: string;
  /** IPv4 subnet in CIDR form. */
  readonly subnet: string;
  /** The bridge's address, the containers' default route. */
  readonly gateway: string;
  /** IPv6 subnet in CIDR form, for a dual-stack network; absent on an IPv4-only one. */
  readonly subnet6?: string;
  /** The bridge's IPv6 address, the containers' IPv6 default route; present with {@link subnet6}. */
  readonly gateway6?: string;
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
  /**
   * IPv4 CIDR; default the next /24 from {@link DEFAULT_BRIDGE_SUBNET} not used by another network.
   * An IPv6 prefix here is refused: it goes in {@link subnet6}.
   */
  readonly subnet?: string;
  /** Default: the subnet's first host address. */
  readonly gateway?: string;
  /**
   * IPv6 CIDR (`fd00:b0::/64`) to make the network dual-stack: every container then gets an IPv6
   * address and route as well as its IPv4 ones. No default: without it the network is IPv4-only.
   */
  readonly subnet6?: string;
  /** Default: the first address after {@link subnet6}'s network address. Only with `subnet6`. */
  readonly gateway6?: string;
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
  /** The container's IPv6 address (`fd00:b0::2`) on a dual-stack network; absent otherwise. */
  readonly ip6?: string;
  /** The prefix length of {@link ip6}'s subnet; present with `ip6`. */
  readonly prefixLength6?: number;
  /** The IPv6 default route's next hop (the network's `gateway6`); present with `ip6`. */
  readonly gateway6?: string;
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
   * Records a network, IPv4-only or, with `subnet6`, dual-stack. Throws `invalid-argument` for a
   * bad name, subnet or gateway (an IPv6 `subnet`, an IPv4 `subnet6`, a `gateway6` without
   * `subnet6`), `already-exists` when the name is taken or another network uses an overlapping
   * subnet of either family.
   */
  createNetwork(options: CreateBridgeNetworkOptions): Promise<BridgeNetwork>;
  /** Every recorded network, sorted by name. */
  listNetworks(): Promise<BridgeNetwork[]>;
  /** The record of `name`; throws `not-found`. */
  inspectNetwork(name: string): Promise<BridgeNetwork>;
  /**
   * Removes a network: its NAT rules (and berth's nftables table with the last network), its
   * bridge and its record. Throws `not-found` for an unknown network and `failed-precondition`
   * while containers are connected.
   */
  removeNetwork(name: string): Promise<void>;
  /**
   * Connects a container's namespace to `network` (the default network is created on first use):
   * an address from the IPAM, a veth whose peer is created directly inside the container
   * namespace as `ifname`, lo and the interface up, a default route via the gateway, forwarding
   * on in the host namespace, NAT and published ports. The network's NAT rules are added (or
   * found in place) by a driver's first connect to it and trusted afterwards, like Docker's
   * bridge driver: an owner that flushes berth's nftables table must use a new driver. Connecting
   * again replaces the previous veth and keeps the address. On failure, what was set up is removed again. Throws `not-found`
   * for an unknown network (other than the default) or namespace, `invalid-argument` for bad
   * options, `already-exists` when a published port is taken, `resource-exhausted` when the
   * subnet is full.
   *
   * On a dual-stack network the container also gets an IPv6 address (allocated together with the
   * IPv4 one: both or neither), an IPv6 default route via `gateway6`, and published ports answer
   * on the host's IPv6 addresses too (not on `[::1]`: IPv6 has no route_localnet). Both the
   * bridge's and the container's IPv6 addresses skip duplicate address detection, so they are
   * usable when this returns (the bridge also gets `fe80::1/64`, for the same reason). It turns
   * `net.ipv6.conf.all.forwarding` on in the host namespace, which also makes the kernel ignore
   * router advertisements on interfaces whose `accept_ra` is 1 (a host configured by SLAAC wants
   * `accept_ra=2` on its uplink, as with Docker's IPv6).
   * Throws `failed-precondition` when IPv6 is disabled in the host namespace.
   */
  connect(network: string, options: ConnectOptions): Promise<BridgeAttachment>;
  /**
   * Disconnects a container: deletes the host-side veth (which takes the peer with it), removes
   * its published ports and releases its address. Idempotent. Throws `not-found` for an unknown network.
   */
  disconnect(network: string, containerId: string): Promise<void>;
  /**
   * Releases what the driver holds open: the libnftables context(s) of its NAT (see
   * {@link Nat.close}), a netlink socket that otherwise stays open, with the host namespace it
   * lives in, until the process exits. Idempotent; never throws. The driver stays usable and
   * opens what it needs again. Optional, so that other implementations need not hold anything.
   */
  close?(): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function checkName(what: string, name: string): void {
  if (!NAME.test(name)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} is not valid: letters, digits, "_", ".", "-", at most 64 characters`,
    );
  }
}

/**
 * Throws `already-exists` when `subnet` overlaps the subnet `of` picks from one of `networks`
 * (networks without one, e.g. IPv4-only ones for an IPv6 subnet, are skipped).
 */
function checkOverlap(
  where: string,
  subnet: IpNetwork,
  networks: readonly BridgeNetwork[],
  of: (n: BridgeNetwork) => string | undefined,
): void {
  for (const n of networks) {
    const other = of(n);
    if (other !== undefined && networksOverlap(parseCidr(other).network, subnet)) {
      throw alreadyExists(`${where}: subnet ${formatNetwork(subnet)} overlaps ${other} of network ${n.name}`);
    }
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
 * Turns IPv6 forwarding on in the calling thread's network namespace. Writing `all` also sets
 * `default` (for links created later) and every existing link, which is what the kernel's IPv6
 * forwarding checks. Throws `failed-precondition` when the namespace has no IPv6 (booted with
 * `ipv6.disable=1`).
 */
function enableIpv6Forwarding(network: string): void {
  const path = "/proc/sys/net/ipv6/conf/all/forwarding";
  try {
    writeFileSync(path, "1");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw failedPrecondition(
        `network ${network} is dual-stack but IPv6 is disabled in the host network namespace (${path} is missing)`,
        { cause: err },
      );
    }
    throw err;
  }
}

/**
 * Reads the network record at `file` (named `name`). Throws the fs error (ENOENT) when it is
 * missing and `data-loss` naming the file when it is not a record of that network (not JSON, a
 * field missing or malformed), so that a damaged file is reported rather than used.
 */
function readRecord(file: string, name: string): BridgeNetwork {
  const text = readFileSync(file, "utf8");
  let value: Partial<Record<keyof BridgeNetwork, unknown>>;
  try {
    value = JSON.parse(text) as typeof value;
  } catch (err) {
    throw dataLoss(
      `network record ${file} is not valid JSON (${(err as Error).message}); repair or remove it`,
      {
        cause: err,
      },
    );
  }
  const fail = (why: string) => {
    throw dataLoss(`network record ${file} is damaged: ${why}; repair or remove it`);
  };
  if (typeof value !== "object" || value === null) fail("not an object");
  if (value.name !== name) fail(`it names network ${JSON.stringify(value.name)}, not ${name}`);
  if (value.bridge !== bridgeNameOf(name))
    fail(`bridge ${JSON.stringify(value.bridge)} is not ${bridgeNameOf(name)}`);
  for (const key of ["subnet", "gateway"] as const) {
    if (typeof value[key] !== "string") fail(`${key} is missing`);
  }
  try {
    if (parseCidr(value.subnet as string).network.family !== 4) fail("subnet is not IPv4");
    if (value.subnet6 !== undefined && parseCidr(String(value.subnet6)).network.family !== 6) {
      fail("subnet6 is not IPv6");
    }
  } catch (err) {
    if (isDataLoss(err)) throw err;
    fail((err as Error).message);
  }
  return value as BridgeNetwork;
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
  /** Networks whose NAT rules this driver has added or found in place (see connect). */
  readonly #natNetworks = new Set<string>();

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
    const where = `network ${options.name}`;
    // Checked before anything else is parsed: an IPv6 prefix given as `subnet` would otherwise
    // fail on its (IPv4) default range or gateway with a message that hides the real mistake.
    if (options.subnet !== undefined && parseCidr(options.subnet).network.family !== 4) {
      throw invalidArgument(
        `${where}: subnet ${options.subnet} is IPv6; subnet is the IPv4 subnet, give an IPv6 subnet as subnet6`,
      );
    }
    if (options.subnet6 !== undefined && parseCidr(options.subnet6).network.family !== 6) {
      throw invalidArgument(
        `${where}: subnet6 ${options.subnet6} is IPv4; subnet6 is the IPv6 subnet, give an IPv4 subnet as subnet`,
      );
    }
    if (options.gateway6 !== undefined && options.subnet6 === undefined) {
      throw invalidArgument(`${where}: gateway6 ${options.gateway6} is given without subnet6`);
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
      `${where} subnet`,
    );
    checkOverlap(where, range.subnet, existing, (n) => n.subnet);
    const range6 =
      options.subnet6 === undefined
        ? undefined
        : resolveIpamRange(
            {
              subnet: options.subnet6,
              ...(options.gateway6 === undefined ? {} : { gateway: options.gateway6 }),
            },
            `${where} subnet6`,
          );
    if (range6 !== undefined) checkOverlap(where, range6.subnet, existing, (n) => n.subnet6);
    const record: BridgeNetwork = {
      name: options.name,
      bridge: bridgeNameOf(options.name),
      subnet: formatNetwork(range.subnet),
      gateway: formatIp(range.gateway),
      ...(range6 === undefined
        ? {}
        : { subnet6: formatNetwork(range6.subnet), gateway6: formatIp(range6.gateway) }),
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
      .map((n) => readRecord(join(this.#networks, n), n.slice(0, -".json".length)));
  }

  async inspectNetwork(name: string): Promise<BridgeNetwork> {
    checkName("network name", name);
    try {
      return readRecord(this.#file(name), name);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw notFound(`network ${name} not found`, { cause: err });
      }
      throw err;
    }
  }

  async removeNetwork(name: string): Promise<void> {
    const record = await this.inspectNetwork(name);
    // A container on a dual-stack network holds two leases: count containers, not addresses.
    const connected = [...new Set((await this.#ipam.list(name)).map((l) => l.containerId))];
    if (connected.length > 0) {
      throw failedPrecondition(
        `network ${name} has ${connected.length} connected container(s): ${connected.join(", ")}`,
      );
    }
    this.#nat.removeNetwork(name);
    // The last network gone: berth's table goes too, so that removing every network leaves the
    // host's nftables as they were before berth (forwarding stays on, as with Docker).
    // Records are checked too: another process writes its network's record before its rules.
    const others = (await this.listNetworks()).filter((n) => n.name !== name);
    if (others.length === 0 && this.#nat.listNetworks().length === 0) this.#nat.deleteTable();
    for (const key of this.#natNetworks) if (key.startsWith(`${name}\0`)) this.#natNetworks.delete(key);
    this.#inHost((rt) => rt.deleteLink(record.bridge, { ignoreMissing: true }));
    await this.#ipam.releaseAll(name);
    rmSync(this.#file(name), { force: true });
  }

  /** Runs `fn` with an rtnetlink socket in the host namespace. */
  #inHost<T>(fn: (rt: Rtnetlink) => NotPromise<T>): NotPromise<T> {
    return Rtnetlink.use(this.#host === undefined ? {} : { netns: this.#host }, fn);
  }

  #ipamNetwork(n: BridgeNetwork): IpamNetwork {
    const ranges: IpamRange[] = [{ subnet: n.subnet, gateway: n.gateway }];
    if (n.subnet6 !== undefined) {
      ranges.push({ subnet: n.subnet6, ...(n.gateway6 === undefined ? {} : { gateway: n.gateway6 }) });
    }
    return { name: n.name, ranges };
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
    // One call for both families: the IPAM hands out one address per range, all or nothing.
    const addresses = await this.#ipam.allocate(this.#ipamNetwork(record), options.containerId);
    const address = addresses.find((a) => a.family === 4);
    const address6 = addresses.find((a) => a.family === 6);
    try {
      if (address === undefined) throw invalidArgument(`network ${record.name} has no IPv4 range`);
      if (record.subnet6 !== undefined && address6 === undefined) {
        throw invalidArgument(`network ${record.name} has no IPv6 range for subnet6 ${record.subnet6}`);
      }
      this.#inHost((rt) => {
        if (rt.findLink(record.bridge) === undefined) {
          try {
            rt.createBridge(record.bridge, { up: true });
          } catch (err) {
            // A concurrent connect created it first.
            if (rt.findLink(record.bridge) === undefined) throw err;
          }
        }
        rt.addAddress(record.bridge, `${record.gateway}/${address.prefixLength}`, { replace: true });
        if (address6 !== undefined) {
          // Without NODAD the gateway stays "tentative" (unusable) for a second or two of duplicate
          // address detection, longer while the bridge has no carrier: no port up yet.
          rt.addAddress(record.bridge, `${address6.gateway}/${address6.prefixLength}`, {
            replace: true,
            noDad: true,
          });
          // The kernel solicits a neighbour for a forwarded packet (one arriving on another link,
          // DNATed to a published port) from a link-local address of the bridge, and sends
          // nothing while the only one is still tentative: the first seconds of traffic from
          // outside would be lost. A link-local of our own without DAD is usable at once.
          rt.addAddress(record.bridge, BRIDGE_LINK_LOCAL, { replace: true, noDad: true });
        }
        // A retried connect replaces the previous pair (deleting one end removes both).
        rt.deleteLink(hostVeth, { ignoreMissing: true });
        rt.createVeth(hostVeth, ifname, {
          peerNetns: options.netnsPath,
          master: record.bridge,
          up: true,
        });
        // Hairpin: a container reaching its own published port goes out and back in this port.
        rt.setHairpin(hostVeth, true);
      });
      // /proc/sys/net shows the namespace of the thread that opens it.
      const enableForwarding = () => {
        writeFileSync("/proc/sys/net/ipv4/ip_forward", "1");
        if (address6 !== undefined) enableIpv6Forwarding(record.name);
      };
      if (this.#host === undefined) enableForwarding();
      else withNetns(this.#host, enableForwarding);

      const mac = Rtnetlink.use({ netns: options.netnsPath }, (ctr) => {
        ctr.setLinkUp("lo");
        ctr.addAddress(ifname, address.cidr, { replace: true });
        ctr.setLinkUp(ifname);
        // NODAD for the same reason as the gateway: the address must work when connect returns.
        if (address6 !== undefined) ctr.addAddress(ifname, address6.cidr, { replace: true, noDad: true });
        ctr.addRoute({ gateway: address.gateway, link: ifname });
        if (address6 !== undefined) ctr.addRoute({ gateway: address6.gateway, link: ifname });
        return ctr.getLink(ifname).mac ?? "";
      });

      // Once per driver and network: addNetwork creates the table when missing and writes nothing
      // when the rules are there already, but even that check is a few listings (~1.5 ms).
      const natKey = `${record.name}\0${record.bridge}\0${record.subnet}\0${record.subnet6 ?? ""}`;
      if (!this.#natNetworks.has(natKey)) {
        this.#nat.addNetwork({
          name: record.name,
          bridge: record.bridge,
          subnets: record.subnet6 === undefined ? [record.subnet] : [record.subnet, record.subnet6],
        });
        this.#natNetworks.add(natKey);
      }
      if (options.ports !== undefined && options.ports.length > 0) {
        this.#nat.addContainer({
          id: options.containerId,
          addresses: addresses.map((a) => a.address),
          ports: options.ports,
        });
      }
      return {
        ip: address.address,
        prefixLength: address.prefixLength,
        gateway: address.gateway,
        mac,
        hostVeth,
        ...(address6 === undefined
          ? {}
          : { ip6: address6.address, prefixLength6: address6.prefixLength, gateway6: address6.gateway }),
      };
    } catch (err) {
      await this.disconnect(record.name, options.containerId).catch(() => undefined);
      throw err;
    }
  }

  async disconnect(network: string, containerId: string): Promise<void> {
    checkName("container id", containerId);
    const record = await this.inspectNetwork(network);
    this.#inHost((rt) => rt.deleteLink(hostVethOf(record.name, containerId), { ignoreMissing: true }));
    this.#nat.removeContainer(containerId);
    await this.#ipam.release(record.name, containerId);
  }

  close(): void {
    this.#nat.close();
  }
}
