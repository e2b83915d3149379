import { createHash } from "node:crypto";
import { existsSync, statSync, writeFileSync } from "node:fs";
import {
  alreadyExists,
  ErrorCode,
  failedPrecondition,
  internal,
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  notFound,
  permissionDenied,
} from "@berth/errdefs";
import { type NftablesContext, openNftables } from "@berth/sys";
import { formatIp, type IpFamily, type IpPrefix, parseCidr, tryParseIp } from "../ipam/ip.js";
import { CURRENT_NETNS, type NotPromise, withNetns } from "../netns/netns.js";

/** The nftables table berth uses when none is named: `table inet berth`. */
export const NAT_DEFAULT_TABLE = "berth";

/** The transport protocols a published port can use. */
export const PortProtocol = { TCP: "tcp", UDP: "udp" } as const;
/** `"tcp"` or `"udp"`. */
export type PortProtocol = (typeof PortProtocol)[keyof typeof PortProtocol];

/** One published port: traffic to `hostIP:hostPort` on the host goes to the container's `containerPort`. */
export interface PortMapping {
  readonly protocol: PortProtocol;
  /** 1–65535. */
  readonly hostPort: number;
  /** 1–65535. */
  readonly containerPort: number;
  /**
   * Only traffic to this local address is forwarded. Absent, `0.0.0.0` or `::` mean every local
   * address of the family (for both families when absent and the container has both).
   */
  readonly hostIP?: string;
}

/** A berth network as NAT sees it: a bridge and the subnets behind it. */
export interface NatNetwork {
  /** Network name: letters, digits, `_`, `.`, `-`; at most 64 characters. */
  readonly name: string;
  /** The Linux bridge the network's containers hang off (an interface name, at most 15 bytes). */
  readonly bridge: string;
  /** The network's subnets in CIDR form (`10.88.0.0/16`, `fd00:88::/64`); at least one. */
  readonly subnets: readonly string[];
  /**
   * Whether published ports of this network's containers answer on the host's 127.0.0.1 (default
   * true). It sets the bridge's `net.ipv4.conf.<bridge>.route_localnet` sysctl, so the bridge must
   * exist when {@link Nat.addNetwork} runs.
   */
  readonly hostLoopback?: boolean;
}

/** A container whose ports are published. */
export interface NatContainer {
  /** Container ID: letters, digits, `_`, `.`, `-`; at most 64 characters (nft comments are short). */
  readonly id: string;
  /** The container's addresses (one per family at most is used: the first of each). */
  readonly addresses: readonly string[];
  readonly ports: readonly PortMapping[];
}

/** A published port as found in the table, with the address it forwards to. */
export interface PublishedPort {
  readonly containerId: string;
  readonly protocol: PortProtocol;
  readonly hostPort: number;
  /** Undefined when every local address of {@link family} is forwarded. */
  readonly hostIP?: string;
  readonly family: IpFamily;
  readonly containerIP: string;
  readonly containerPort: number;
}

/** A network found in the table. */
export interface NatNetworkInfo {
  readonly name: string;
  readonly bridge: string;
}

/** Options of {@link createNat}. */
export interface NatOptions {
  /** The `inet` table berth owns (default {@link NAT_DEFAULT_TABLE}); letters, digits, `_`. */
  readonly table?: string;
  /**
   * A network namespace file (`/proc/PID/ns/net` or a bind mount of one): every operation moves
   * the calling thread into it and back. Default: the namespace of the calling thread.
   */
  readonly netns?: string;
}

/**
 * NAT and published ports for berth networks, in one nftables table of family `inet` that berth
 * owns alone; no other table is read or changed. Every method is synchronous: the nft commands
 * and any `setns` happen on the calling thread, which must stay in one namespace for the call.
 *
 * A Nat keeps one libnftables context (a netlink socket) open per network namespace it has
 * worked in, opened lazily by the first method that runs there, so that a method that deletes
 * rules does not wait ~14 ms for the kernel when a per-call context would close (see
 * `openNftables` in `@berth/sys`). Its owner frees them with {@link Nat.close}: a Nat never
 * closed holds its sockets, and with them their network namespaces, until the process exits.
 *
 * Each method applies its changes as one nftables transaction (all or nothing), and each is
 * idempotent: adding again replaces, removing what is not there does nothing. Rules carry a
 * comment naming their owner (`berth net <name> <bridge> <digest>`, `berth ctr <id> <digest>`),
 * which is how removal finds exactly them; the digest identifies the rule set an add wrote, so
 * adding an unchanged network or container again finds it in place and changes nothing.
 */
export interface Nat {
  /** The table name (family `inet`). */
  readonly table: string;
  /** Creates the table with its base chains when it does not exist yet. */
  setup(): void;
  /**
   * Adds (or replaces) a network: masquerade for traffic from its subnets leaving through another
   * interface, masquerade of hairpin traffic (a container reaching a published port on its own
   * bridge), the 127.0.0.1 path, and isolation from every other berth bridge. Throws
   * `invalid-argument` for a malformed network and `already-exists` when another network uses
   * the bridge; `not-found` when `hostLoopback` is on and the bridge does not exist.
   */
  addNetwork(network: NatNetwork): void;
  /** Removes a network's rules, and resets route_localnet on its bridge if the bridge is still there. */
  removeNetwork(name: string): void;
  /** The networks in the table. */
  listNetworks(): NatNetworkInfo[];
  /**
   * Publishes (or re-publishes, replacing the previous set) a container's ports. Throws
   * `invalid-argument` for a malformed mapping or a host IP of a family the container has no
   * address in, and `already-exists` when another container holds the same protocol, host port
   * and host address.
   */
  addContainer(container: NatContainer): void;
  /** Removes every rule of container `id`; does nothing when it has none. */
  removeContainer(id: string): void;
  /** Every published port in the table, in rule order. */
  listPublished(): PublishedPort[];
  /**
   * Deletes the whole table (does nothing when it is absent) and resets route_localnet on the
   * bridges of the networks it held.
   */
  deleteTable(): void;
  /**
   * Closes the libnftables contexts this Nat holds open. Idempotent; never throws. The Nat stays
   * usable: a later method opens a context again (which must be closed again). Closing may block
   * for one RCU grace period (~14 ms) when a deletion was committed just before.
   */
  close(): void;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const TABLE = /^[A-Za-z][A-Za-z0-9_]{0,31}$/;
// IFNAMSIZ is 16 with the NUL; the kernel refuses "/", ":" and whitespace, and berth's rules quote
// the name, so quotes and backslashes are refused as well.
const BRIDGE = /^[A-Za-z0-9_.-]{1,15}$/;

/**
 * How many namespaces' contexts one Nat keeps open at most; the least recently used is closed
 * beyond that. berth uses a Nat in one namespace (the host's); the bound only keeps a caller that
 * moves the thread through many namespaces from pinning all of them.
 */
const MAX_CONTEXTS = 4;

const NET_TAG = "berth net";
const CTR_TAG = "berth ctr";
const BRIDGES_SET = "bridges";
const PUBLISHED = "published";

/**
 * The digest carried in the comments of the rules one add wrote: 12 hex digits of the SHA-256 of
 * the rules' text (without comments), enough to tell "the same rules" from "other rules".
 */
function digestOf(rules: readonly string[]): string {
  return createHash("sha256").update(rules.join("\n")).digest("hex").slice(0, 12);
}

/**
 * Creates the NAT manager for one table. Nothing touches the kernel until a method is called.
 * Throws `invalid-argument` for a malformed table name.
 */
export function createNat(options: NatOptions = {}): Nat {
  const table = options.table ?? NAT_DEFAULT_TABLE;
  if (!TABLE.test(table)) throw invalidArgument(`nftables table name ${JSON.stringify(table)} is not valid`);
  return new NftNat(table, options.netns);
}

/** The parts of a libnftables-json(5) listing that berth reads. */
interface Listing {
  readonly rules: ListedRule[];
  readonly bridges: string[];
}

interface ListedRule {
  readonly chain: string;
  readonly handle: number;
  readonly comment: string;
  readonly expr: readonly unknown[];
}

class NftNat implements Nat {
  readonly table: string;
  readonly #netns: string | undefined;
  readonly #t: string;
  /**
   * Open contexts by network namespace (`dev:ino` of the namespace file), least recently used
   * first. Keyed by the namespace the thread is in when a command runs, not by the `netns`
   * option: without the option the caller may run methods from different namespaces, and a path
   * may name another namespace later (unmounted and created again). A key cannot be reused by a
   * new namespace while its context is open: the context's socket holds the namespace alive.
   */
  readonly #contexts = new Map<string, NftablesContext>();

  constructor(table: string, netns: string | undefined) {
    this.table = table;
    this.#netns = netns;
    this.#t = `inet ${table}`;
  }

  /**
   * Runs `fn` in the configured namespace (see {@link withNetns}), or right here without one.
   * Every caller passes a synchronous body returning void or plain data, which is what the cast
   * to NotPromise asserts.
   */
  #in<T>(fn: () => T): T {
    if (this.#netns === undefined) return fn();
    return withNetns(this.#netns, fn as () => NotPromise<T>) as T;
  }

  /**
   * Runs nft `commands` through this Nat's context for the calling thread's current namespace,
   * opened on first use there. The namespace is looked up (one stat, a few microseconds) per
   * command rather than once per method so that no path can use a context of another namespace.
   */
  #run(commands: string): string {
    const ns = statSync(CURRENT_NETNS);
    const key = `${ns.dev}:${ns.ino}`;
    let context = this.#contexts.get(key);
    if (context) {
      this.#contexts.delete(key);
    } else {
      // Opened here, in the namespace it serves: its socket stays bound to it.
      context = openNftables();
      for (const [old, stale] of this.#contexts) {
        if (this.#contexts.size < MAX_CONTEXTS) break;
        this.#contexts.delete(old);
        stale.close();
      }
    }
    this.#contexts.set(key, context);
    try {
      return context.run(commands);
    } catch (err) {
      // An error nft did not attribute to the ruleset (a netlink failure, not "no such rule"):
      // the next command gets a fresh context rather than a socket that may be out of step.
      if ((err as { code?: unknown } | null)?.code === ErrorCode.Internal) {
        this.#contexts.delete(key);
        context.close();
      }
      throw err;
    }
  }

  close(): void {
    const open = [...this.#contexts.values()];
    this.#contexts.clear();
    for (const context of open) context.close();
  }

  setup(): void {
    this.#in(() => this.#ensure());
  }

  addNetwork(network: NatNetwork): void {
    const name = checkName(network.name, "network name");
    const bridge = network.bridge;
    if (!BRIDGE.test(bridge))
      throw invalidArgument(`bridge name ${JSON.stringify(bridge)} of network ${name} is not valid`);
    if (network.subnets.length === 0) throw invalidArgument(`network ${name} has no subnets`);
    const subnets = network.subnets.map((s) => parseSubnet(s, `subnet of network ${name}`));
    const loopback = (network.hostLoopback ?? true) && subnets.some((s) => s.family === 4);
    const t = this.#t;
    const body: string[] = [];
    const add = (chain: string, rule: string) => body.push(`add rule ${t} ${chain} ${rule}`);
    if (loopback) {
      // route_localnet lets packets with a 127.0.0.0/8 source leave through the bridge, which
      // the output DNAT of 127.0.0.1:port needs. It also lets the bridge's neighbours reach
      // services bound to the host's 127.0.0.1 (CVE-2020-8558): drop those before routing.
      add("guard", `iifname "${bridge}" ip daddr 127.0.0.0/8 drop`);
      add("postrouting", `ip saddr 127.0.0.0/8 oifname "${bridge}" masquerade`);
    }
    for (const subnet of subnets) {
      const ip = subnet.family === 4 ? "ip" : "ip6";
      const cidr = subnet.text;
      add("postrouting", `${ip} saddr ${cidr} oifname != "${bridge}" masquerade`);
      // Hairpin: a container reaching a published port on its own bridge. Without the source
      // rewrite the server would answer the client directly over the bridge, bypassing the
      // conntrack entry that undoes the DNAT, and the client would drop the reply.
      add("postrouting", `${ip} saddr ${cidr} oifname "${bridge}" ct status dnat masquerade`);
    }
    add("forward", `iifname "${bridge}" oifname != "${bridge}" oifname @${BRIDGES_SET} drop`);
    const digest = digestOf(body);
    const rules = body.map((rule) => `${rule} comment "${NET_TAG} ${name} ${bridge} ${digest}"`);

    this.#in(() => {
      // Checked first so that a missing bridge leaves no rules behind.
      if (loopback && !existsSync(`/proc/sys/net/ipv4/conf/${bridge}`)) {
        throw notFound(`bridge ${bridge} of network ${name} does not exist in this network namespace`);
      }
      let reset: string[] = [];
      this.#retry(() => {
        const listing = this.#listCreating(() => this.#listNetworkChains());
        const own = listing.rules.filter((r) => netOf(r.comment)?.name === name);
        const other = listing.rules.find((r) => {
          const n = netOf(r.comment);
          return n !== undefined && n.name !== name && n.bridge === bridge;
        });
        if (other) {
          throw alreadyExists(
            `bridge ${bridge} already belongs to berth network ${netOf(other.comment)?.name}`,
          );
        }
        // Unchanged: every rule this add would write is there already. Deleting and re-adding them
        // would be a transaction on every connect of the bridge driver (which adds the network
        // each time), and the deleted rules would leave the kernel work to do after an RCU grace
        // period, which the next close of any nftables socket (ours or another process's) waits for.
        if (
          own.length === rules.length &&
          own.every((r) => netOf(r.comment)?.digest === digest) &&
          listing.bridges.includes(bridge)
        ) {
          return;
        }
        const batch = own.map((r) => `delete rule ${t} ${r.chain} handle ${r.handle}`);
        for (const old of new Set(own.map((r) => netOf(r.comment)?.bridge))) {
          if (old !== undefined && old !== bridge && listing.bridges.includes(old)) {
            batch.push(`delete element ${t} ${BRIDGES_SET} { "${old}" }`);
          }
        }
        batch.push(`add element ${t} ${BRIDGES_SET} { "${bridge}" }`, ...rules);
        this.#run(batch.join("\n"));
        // The host loopback path this network no longer has (turned off, or another bridge).
        reset = own
          .filter((r) => r.chain === "guard")
          .map((r) => netOf(r.comment)?.bridge as string)
          .filter((b) => !(loopback && b === bridge));
      });
      for (const old of reset) writeRouteLocalnet(old, false);
      if (loopback) writeRouteLocalnet(bridge, true);
    });
  }

  removeNetwork(name: string): void {
    checkName(name, "network name");
    this.#in(() => {
      let reset: string[] = [];
      this.#retry(() => {
        const listing = this.#listTableIfPresent();
        if (!listing) return;
        const own = listing.rules.filter((r) => netOf(r.comment)?.name === name);
        if (own.length === 0) return;
        const t = this.#t;
        const batch = own.map((r) => `delete rule ${t} ${r.chain} handle ${r.handle}`);
        const bridges = new Set(own.map((r) => netOf(r.comment)?.bridge as string));
        for (const bridge of bridges) {
          if (listing.bridges.includes(bridge))
            batch.push(`delete element ${t} ${BRIDGES_SET} { "${bridge}" }`);
        }
        this.#run(batch.join("\n"));
        reset = own.filter((r) => r.chain === "guard").map((r) => netOf(r.comment)?.bridge as string);
      });
      for (const bridge of reset) writeRouteLocalnet(bridge, false);
    });
  }

  listNetworks(): NatNetworkInfo[] {
    return this.#in(() => {
      const seen = new Map<string, NatNetworkInfo>();
      for (const rule of this.#listTableIfPresent()?.rules ?? []) {
        const net = netOf(rule.comment);
        if (net && !seen.has(net.name)) seen.set(net.name, { name: net.name, bridge: net.bridge });
      }
      return [...seen.values()];
    });
  }

  addContainer(container: NatContainer): void {
    const id = checkName(container.id, "container id");
    const wanted = planPorts(id, container);
    const t = this.#t;
    const body = wanted.map((p) => {
      const ip = p.family === 4 ? "ip" : "ip6";
      const match = p.hostIP === undefined ? `meta nfproto ipv${p.family}` : `${ip} daddr ${p.hostIP}`;
      const target =
        p.family === 4 ? `${p.containerIP}:${p.containerPort}` : `[${p.containerIP}]:${p.containerPort}`;
      return `add rule ${t} ${PUBLISHED} ${match} ${p.protocol} dport ${p.hostPort} dnat ${ip} to ${target}`;
    });
    const digest = digestOf(body);
    const rules = body.map((rule) => `${rule} comment "${CTR_TAG} ${id} ${digest}"`);
    this.#in(() => {
      this.#retry(() => {
        const published = this.#listPublishedChain();
        const own = published.filter((r) => ctrOf(r.comment)?.id === id);
        for (const held of publishedOf(published)) {
          if (held.containerId === id) continue;
          const clash = wanted.find((p) => conflicts(p, held));
          if (clash) {
            throw alreadyExists(
              `${clash.protocol} port ${clash.hostIP ?? (clash.family === 4 ? "0.0.0.0" : "[::]")}:${clash.hostPort} for container ${id} is already published by container ${held.containerId}`,
            );
          }
        }
        // Unchanged (or nothing published and nothing wanted): no transaction at all.
        if (own.length === rules.length && own.every((r) => ctrOf(r.comment)?.digest === digest)) return;
        const batch = own.map((r) => `delete rule ${t} ${PUBLISHED} handle ${r.handle}`);
        batch.push(...rules);
        this.#run(batch.join("\n"));
      });
    });
  }

  removeContainer(id: string): void {
    checkName(id, "container id");
    this.#in(() => {
      this.#retry(() => {
        const own = (this.#listPublishedChainIfPresent() ?? []).filter((r) => ctrOf(r.comment)?.id === id);
        if (own.length === 0) return;
        this.#run(own.map((r) => `delete rule ${this.#t} ${PUBLISHED} handle ${r.handle}`).join("\n"));
      });
    });
  }

  listPublished(): PublishedPort[] {
    return this.#in(() => publishedOf(this.#listPublishedChainIfPresent() ?? []));
  }

  deleteTable(): void {
    this.#in(() => {
      const listing = this.#listTableIfPresent();
      if (!listing) return;
      try {
        this.#run(`delete table ${this.#t}`);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      for (const rule of listing.rules) {
        if (rule.chain === "guard") {
          const bridge = netOf(rule.comment)?.bridge;
          if (bridge !== undefined) writeRouteLocalnet(bridge, false);
        }
      }
    });
  }

  /**
   * Creates the table and base chains in one transaction unless the table exists. The check
   * lists the `bridges` set, the smallest object of the table (a few names), rather than the
   * table, whose listing grows with every published port.
   */
  #ensure(): void {
    try {
      this.#run(`list set ${this.#t} ${BRIDGES_SET}`);
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.#create();
  }

  #create(): void {
    const t = this.#t;
    try {
      // `create table` fails when the table exists, so of two processes racing here exactly one
      // transaction applies and the base rules are never doubled.
      this.#run(
        [
          `create table ${t} { comment "managed by berth: NAT and published ports"; }`,
          `add set ${t} ${BRIDGES_SET} { type ifname; }`,
          // raw priority: before conntrack and NAT, so the CVE-2020-8558 drop sees the original daddr.
          `add chain ${t} guard { type filter hook prerouting priority raw; }`,
          `add chain ${t} prerouting { type nat hook prerouting priority dstnat; }`,
          // nft 1.0.6 refuses the "dstnat" keyword for the output hook; -100 is its value.
          `add chain ${t} output { type nat hook output priority -100; }`,
          `add chain ${t} postrouting { type nat hook postrouting priority srcnat; }`,
          `add chain ${t} forward { type filter hook forward priority filter; }`,
          `add chain ${t} ${PUBLISHED}`,
          // Published ports answer on every local address (from outside in prerouting, from the
          // host itself in output) and nowhere else, so forwarded traffic keeps its destination.
          `add rule ${t} prerouting fib daddr type local jump ${PUBLISHED}`,
          `add rule ${t} output fib daddr type local jump ${PUBLISHED}`,
          // A published port is meant to be reachable from anywhere, other berth networks
          // included: isolation applies to direct traffic only.
          `add rule ${t} forward ct status dnat accept`,
        ].join("\n"),
      );
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
    }
  }

  /**
   * Runs `list` (a listing of the table or of one chain), creating the table first when the
   * listing finds it absent: one listing on the common path, two plus a creation the first time.
   */
  #listCreating(list: () => Listing | undefined): Listing {
    const first = list();
    if (first) return first;
    this.#create();
    const second = list();
    if (!second) {
      throw failedPrecondition(
        `nftables table ${this.#t} lacks berth's chains or vanished while berth was using it`,
      );
    }
    return second;
  }

  /**
   * The chains that hold network rules (guard, postrouting, forward) and the bridges set, one
   * small listing each: unlike a listing of the table, their cost does not grow with the number
   * of published ports. (libnftables 1.0.6 cannot list several chains in one call: its cache
   * filter then misses all but one.) Undefined when the table is absent.
   */
  #listNetworkChains(): Listing | undefined {
    const t = this.#t;
    const rules: ListedRule[] = [];
    const bridges: string[] = [];
    for (const command of [
      `list set ${t} ${BRIDGES_SET}`,
      `list chain ${t} guard`,
      `list chain ${t} postrouting`,
      `list chain ${t} forward`,
    ]) {
      const part = this.#listIfPresent(command);
      if (!part) return undefined;
      rules.push(...part.rules);
      bridges.push(...part.bridges);
    }
    return { rules, bridges };
  }

  #listTableIfPresent(): Listing | undefined {
    return this.#listIfPresent(`list table ${this.#t}`);
  }

  /**
   * The rules of the `published` chain alone, created first when absent. Container operations
   * read only this chain: the network rules of the other chains are none of their business.
   */
  #listPublishedChain(): ListedRule[] {
    return this.#listCreating(() => this.#listIfPresent(`list chain ${this.#t} ${PUBLISHED}`)).rules;
  }

  #listPublishedChainIfPresent(): ListedRule[] | undefined {
    return this.#listIfPresent(`list chain ${this.#t} ${PUBLISHED}`)?.rules;
  }

  /** Runs one list command; undefined when the table (or the listed object) does not exist. */
  #listIfPresent(command: string): Listing | undefined {
    let text: string;
    try {
      text = this.#run(command);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
    return parseListing(text);
  }

  /**
   * Runs a list-then-change step again when another process changed the table in between (a
   * rule handle it read is gone: `not-found`; a set element already there: `already-exists`).
   */
  #retry(step: () => void): void {
    for (let attempt = 1; ; attempt++) {
      try {
        step();
        return;
      } catch (err) {
        const raced = isNotFound(err) && String((err as Error).message).startsWith("nft:");
        if (!raced || attempt >= 3) throw err;
      }
    }
  }
}

interface Address {
  readonly family: IpFamily;
  /** Canonical text: dotted quad, or RFC 5952 IPv6. */
  readonly text: string;
}

/** Parses an IP address (no zone index). Throws `invalid-argument` naming `what`. */
function parseAddress(text: string, what: string): Address {
  const ip = tryParseIp(text);
  if (ip === undefined)
    throw invalidArgument(`${what} ${JSON.stringify(text)} is not an IPv4 or IPv6 address`);
  return { family: ip.family, text: formatIp(ip) };
}

/**
 * Parses `address/length`. Host bits may be set: nftables masks them itself when it compiles
 * the prefix match. Throws `invalid-argument` naming `what`.
 */
function parseSubnet(text: string, what: string): Address {
  let prefix: IpPrefix;
  try {
    prefix = parseCidr(text);
  } catch (err) {
    throw invalidArgument(`${what} ${JSON.stringify(text)} is not a CIDR prefix (address/length)`, {
      cause: err,
    });
  }
  return { family: prefix.ip.family, text: `${formatIp(prefix.ip)}/${prefix.network.prefixLength}` };
}

function checkName(name: string, what: string): string {
  if (!NAME.test(name)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} is not valid (letters, digits, "_", ".", "-", at most 64 characters)`,
    );
  }
  return name;
}

/** The owner of a network rule: `berth net <name> <bridge> [<digest>]` (older rules lack the digest). */
function netOf(comment: string): (NatNetworkInfo & { readonly digest?: string }) | undefined {
  if (!comment.startsWith(`${NET_TAG} `)) return undefined;
  const [name, bridge, digest] = comment.slice(NET_TAG.length + 1).split(" ");
  if (!name || !bridge) return undefined;
  return digest === undefined ? { name, bridge } : { name, bridge, digest };
}

/** The owner of a published-port rule: `berth ctr <id> [<digest>]` (older rules lack the digest). */
function ctrOf(comment: string): { readonly id: string; readonly digest?: string } | undefined {
  if (!comment.startsWith(`${CTR_TAG} `)) return undefined;
  const [id, digest] = comment.slice(CTR_TAG.length + 1).split(" ");
  if (!id) return undefined;
  return digest === undefined ? { id } : { id, digest };
}

interface PlannedPort {
  readonly protocol: PortProtocol;
  readonly hostPort: number;
  readonly hostIP: string | undefined;
  readonly family: IpFamily;
  readonly containerIP: string;
  readonly containerPort: number;
}

function checkPort(port: number, what: string, id: string): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalidArgument(`${what} ${port} of container ${id} is not a port number (1-65535)`);
  }
}

/** Validates a container's mappings and expands them to one rule per address family. */
function planPorts(id: string, container: NatContainer): PlannedPort[] {
  const byFamily = new Map<IpFamily, Address>();
  for (const text of container.addresses) {
    const ip = parseAddress(text, `address of container ${id}`);
    if (!byFamily.has(ip.family)) byFamily.set(ip.family, ip);
  }
  if (byFamily.size === 0 && container.ports.length > 0) {
    throw invalidArgument(`container ${id} publishes ports but has no address`);
  }
  const planned: PlannedPort[] = [];
  for (const port of container.ports) {
    if (port.protocol !== "tcp" && port.protocol !== "udp") {
      throw invalidArgument(`protocol ${JSON.stringify(port.protocol)} of container ${id} is not tcp or udp`);
    }
    checkPort(port.hostPort, "host port", id);
    checkPort(port.containerPort, "container port", id);
    const host =
      port.hostIP === undefined ? undefined : parseAddress(port.hostIP, `host IP of container ${id}`);
    const families: IpFamily[] = host ? [host.family] : [...byFamily.keys()];
    for (const family of families) {
      const target = byFamily.get(family);
      if (!target) {
        throw invalidArgument(
          `host IP ${port.hostIP} of container ${id} is IPv${family} but the container has no IPv${family} address`,
        );
      }
      // 0.0.0.0 and :: mean "every address", as in Docker's -p.
      const hostIP =
        host === undefined || host.text === "0.0.0.0" || host.text === "::" ? undefined : host.text;
      const next: PlannedPort = {
        protocol: port.protocol,
        hostPort: port.hostPort,
        hostIP,
        family,
        containerIP: target.text,
        containerPort: port.containerPort,
      };
      if (planned.some((p) => conflicts(p, next))) {
        throw invalidArgument(`container ${id} publishes ${port.protocol} host port ${port.hostPort} twice`);
      }
      planned.push(next);
    }
  }
  return planned;
}

interface PortKey {
  readonly protocol: PortProtocol;
  readonly hostPort: number;
  readonly hostIP?: string | undefined;
  readonly family: IpFamily;
}

/** Whether two mappings would catch the same packets. */
function conflicts(a: PortKey, b: PortKey): boolean {
  return (
    a.protocol === b.protocol &&
    a.hostPort === b.hostPort &&
    a.family === b.family &&
    (a.hostIP === undefined || b.hostIP === undefined || a.hostIP === b.hostIP)
  );
}

function record(value: unknown): Record<string, unknown> | undefined {
  return typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : undefined;
}

function parseListing(text: string): Listing {
  const rules: ListedRule[] = [];
  const bridges: string[] = [];
  const doc = record(JSON.parse(text));
  const items = Array.isArray(doc?.nftables) ? (doc.nftables as unknown[]) : [];
  for (const item of items) {
    const obj = record(item);
    const rule = record(obj?.rule);
    if (rule) {
      rules.push({
        chain: String(rule.chain),
        handle: Number(rule.handle),
        comment: typeof rule.comment === "string" ? rule.comment : "",
        expr: Array.isArray(rule.expr) ? rule.expr : [],
      });
      continue;
    }
    const set = record(obj?.set);
    if (set && set.name === BRIDGES_SET && Array.isArray(set.elem)) {
      for (const e of set.elem) if (typeof e === "string") bridges.push(e);
    }
  }
  return { rules, bridges };
}

/** Reads the published ports back from the rules' match and dnat expressions. */
function publishedOf(rules: readonly ListedRule[]): PublishedPort[] {
  const out: PublishedPort[] = [];
  for (const rule of rules) {
    const owner = ctrOf(rule.comment);
    if (rule.chain !== PUBLISHED || owner === undefined) continue;
    let protocol: PortProtocol | undefined;
    let hostPort: number | undefined;
    let hostIP: string | undefined;
    let family: IpFamily | undefined;
    let containerIP: string | undefined;
    let containerPort: number | undefined;
    for (const e of rule.expr) {
      const ex = record(e);
      const match = record(ex?.match);
      const left = record(match?.left);
      const payload = record(left?.payload);
      if (payload?.field === "dport" && (payload.protocol === "tcp" || payload.protocol === "udp")) {
        protocol = payload.protocol;
        hostPort = Number(match?.right);
      } else if (payload?.field === "daddr") {
        hostIP = String(match?.right);
      }
      const dnat = record(ex?.dnat);
      if (dnat) {
        family = dnat.family === "ip6" ? 6 : 4;
        containerIP = String(dnat.addr);
        containerPort = Number(dnat.port);
      }
    }
    if (protocol === undefined || hostPort === undefined || family === undefined) continue;
    if (containerIP === undefined || containerPort === undefined) continue;
    out.push({
      containerId: owner.id,
      protocol,
      hostPort,
      ...(hostIP === undefined ? {} : { hostIP }),
      family,
      containerIP,
      containerPort,
    });
  }
  return out;
}

/**
 * Sets `net.ipv4.conf.<bridge>.route_localnet`. /proc/sys/net shows the network namespace of the
 * thread that opens it, and the synchronous fs call runs on this (possibly setns-moved) thread.
 * Turning it off tolerates a bridge that is already gone.
 */
function writeRouteLocalnet(bridge: string, on: boolean): void {
  const path = `/proc/sys/net/ipv4/conf/${bridge}/route_localnet`;
  try {
    writeFileSync(path, on ? "1" : "0");
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      if (!on) return;
      throw notFound(`bridge ${bridge} does not exist in this network namespace: cannot set ${path}`, {
        cause,
      });
    }
    const message = `writing ${on ? 1 : 0} to ${path}: ${code ?? String(cause)}`;
    if (code === "EACCES" || code === "EPERM" || code === "EROFS") throw permissionDenied(message, { cause });
    throw internal(message, { cause });
  }
}
