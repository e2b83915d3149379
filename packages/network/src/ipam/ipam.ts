import { randomBytes } from "node:crypto";
import {
  closeSync,
  linkSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";
import { alreadyExists, invalidArgument, resourceExhausted } from "@berth/errdefs";
import { lockFile } from "@berth/sys";
import {
  addToIp,
  compareIp,
  formatIp,
  formatNetwork,
  formatPrefix,
  type IpAddress,
  type IpFamily,
  type IpNetwork,
  ipEquals,
  lastAddress,
  networkContains,
  networkSize,
  networksOverlap,
  parseCidr,
  parseIp,
  tryParseIp,
} from "./ip.js";

/**
 * One address range of a network, in the terms of the CNI host-local plugin's range (so that a
 * berth network exports to a host-local conflist field for field). One address is handed out from
 * each range of a network per container: an IPv4 range, plus an IPv6 one for dual stack.
 */
export interface IpamRange {
  /** The subnet, as a CIDR prefix (`10.88.0.0/16`, `fd00:88::/64`); host bits are ignored. */
  readonly subnet: string;
  /** The first address handed out; default: the subnet's first address after the network address. */
  readonly rangeStart?: string;
  /** The last address handed out; default: the subnet's last address (IPv4: before the broadcast). */
  readonly rangeEnd?: string;
  /** The gateway, never handed out; default: the subnet's first address after the network address. */
  readonly gateway?: string;
}

/** A network as the IPAM sees it: a name (its directory under the IPAM root) and its ranges. */
export interface IpamNetwork {
  /** The network's name: letters, digits, `_`, `.` and `-`, starting with a letter or digit. */
  readonly name: string;
  /** One or more ranges that do not overlap; a container gets one address from each. */
  readonly ranges: readonly IpamRange[];
}

/** An {@link IpamRange} parsed and completed with its defaults. */
export interface ResolvedIpamRange {
  readonly subnet: IpNetwork;
  readonly rangeStart: IpAddress;
  readonly rangeEnd: IpAddress;
  readonly gateway: IpAddress;
}

/** One address given to a container, with what its interface configuration needs. */
export interface IpamAddress {
  readonly family: IpFamily;
  /** The address, in canonical text form (`10.88.0.2`). */
  readonly address: string;
  /** The subnet's prefix length (`16`). */
  readonly prefixLength: number;
  /** The address with the prefix length, for the interface (`10.88.0.2/16`). */
  readonly cidr: string;
  /** The subnet (`10.88.0.0/16`). */
  readonly subnet: string;
  /** The range's gateway (`10.88.0.1`), the container's default route. */
  readonly gateway: string;
}

/** An allocation as stored: an address of a network and the container holding it. */
export interface IpamLease {
  readonly address: string;
  readonly containerId: string;
}

/** Options of {@link Ipam.allocate}. */
export interface AllocateOptions {
  /**
   * Specific addresses to take instead of the next free ones, at most one per range: each must lie
   * in a range's subnet (it may be outside rangeStart–rangeEnd, for static addresses kept out of
   * the dynamic pool, as Docker allows) and must not be the network, broadcast or gateway address.
   */
  readonly requestedIp?: string | readonly string[];
}

/**
 * IP address management for berth networks, like the CNI host-local plugin: allocations are
 * files `<root>/<network>/<ip>` holding the container id, so they survive restarts of every
 * process, and the next address is chosen round-robin after the last one reserved (persisted in
 * `last_reserved_ip.<range index>`), so a released address is not reused at once.
 *
 * Every change happens under one `flock` on `<root>/lock`, and each allocation file is published
 * with `link(2)` (atomic, fails if the name exists): several processes sharing one root never
 * hand out an address twice, and no reader ever sees a half-written file. A crashed process
 * leaves no stale lock (flock dies with the fd).
 */
export interface Ipam {
  /** The directory holding the allocations. */
  readonly root: string;
  /**
   * Gives `containerId` one address from each range of `network` and records it. Idempotent: a
   * container that already holds an address in a range keeps it (a retried or resumed setup gets
   * the same addresses back).
   *
   * @throws `invalid-argument` for a malformed network, container id or requested address, or a
   *   requested address outside every subnet or reserved; `already-exists` when a requested
   *   address is held by another container (or the container holds a different one in that
   *   range); `resource-exhausted` when a range has no free address (the message names the
   *   network and the range). Nothing is recorded when it throws.
   */
  allocate(network: IpamNetwork, containerId: string, options?: AllocateOptions): Promise<IpamAddress[]>;
  /**
   * Releases every address `containerId` holds in `network` and returns them (none when it held
   * none: teardown is idempotent).
   *
   * @throws `invalid-argument` for a malformed network name or container id.
   */
  release(network: string, containerId: string): Promise<string[]>;
  /**
   * Lists the allocations of `network`, sorted by address; empty for an unknown network.
   *
   * @throws `invalid-argument` for a malformed network name.
   */
  list(network: string): Promise<IpamLease[]>;
  /**
   * Releases every allocation of `network`, forgets its round-robin state and removes its
   * directory; returns what was released. Used when a network is removed.
   *
   * @throws `invalid-argument` for a malformed network name.
   */
  releaseAll(network: string): Promise<IpamLease[]>;
}

const LOCK_FILE = "lock";
const LAST_RESERVED_PREFIX = "last_reserved_ip.";
const TEMP_PREFIX = ".tmp-";

const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function checkNetworkName(name: string): void {
  if (!NETWORK_NAME.test(name)) {
    throw invalidArgument(
      `network name ${JSON.stringify(name)} is invalid: use 1-128 letters, digits, "_", "." or "-", starting with a letter or digit`,
    );
  }
}

function checkContainerId(id: string): void {
  // The id is stored as the file's only line, so it must not contain a line break.
  if (id === "" || id.length > 1024 || /[\r\n\0]/.test(id)) {
    throw invalidArgument(
      `container id ${JSON.stringify(id)} is invalid: it must be 1-1024 characters without line breaks`,
    );
  }
}

function parseAddressIn(field: string, text: string, subnet: IpNetwork, context: string): IpAddress {
  const ip = tryParseIp(text);
  if (ip === undefined)
    throw invalidArgument(`${context}: ${field} ${JSON.stringify(text)} is not an IP address`);
  if (!networkContains(subnet, ip)) {
    throw invalidArgument(
      `${context}: ${field} ${formatIp(ip)} is outside the subnet ${formatNetwork(subnet)}`,
    );
  }
  return ip;
}

/**
 * Parses a range and fills in its defaults (see {@link IpamRange}); `context` prefixes error
 * messages (for example the network's name).
 *
 * @throws `invalid-argument` when a field does not parse, an address lies outside the subnet, the
 *   subnet is too small (fewer than 4 addresses), rangeStart is after rangeEnd, or the range
 *   includes the network address (or, for IPv4, the broadcast address).
 */
export function resolveIpamRange(range: IpamRange, context = "ipam range"): ResolvedIpamRange {
  const subnet = parseCidr(range.subnet).network;
  const where = `${context} ${formatNetwork(subnet)}`;
  if (networkSize(subnet) < 4n) {
    throw invalidArgument(
      `${where}: the subnet is too small to allocate from (it needs at least 4 addresses)`,
    );
  }
  const first = addToIp({ family: subnet.family, value: subnet.address }, 1n);
  const last = lastAddress(subnet);
  // IPv4 reserves the all-ones host address for broadcast; IPv6 has no broadcast (RFC 4291).
  const maxUsable = subnet.family === 4 ? addToIp(last, -1n) : last;
  const rangeStart =
    range.rangeStart === undefined ? first : parseAddressIn("rangeStart", range.rangeStart, subnet, where);
  const rangeEnd =
    range.rangeEnd === undefined ? maxUsable : parseAddressIn("rangeEnd", range.rangeEnd, subnet, where);
  const gateway =
    range.gateway === undefined ? first : parseAddressIn("gateway", range.gateway, subnet, where);
  if (compareIp(rangeStart, first) < 0) {
    throw invalidArgument(`${where}: rangeStart ${formatIp(rangeStart)} is the network address`);
  }
  if (compareIp(rangeEnd, maxUsable) > 0) {
    throw invalidArgument(`${where}: rangeEnd ${formatIp(rangeEnd)} is the broadcast address`);
  }
  if (compareIp(rangeStart, rangeEnd) > 0) {
    throw invalidArgument(
      `${where}: rangeStart ${formatIp(rangeStart)} is after rangeEnd ${formatIp(rangeEnd)}`,
    );
  }
  return { subnet, rangeStart, rangeEnd, gateway };
}

function resolveNetwork(network: IpamNetwork): ResolvedIpamRange[] {
  checkNetworkName(network.name);
  if (network.ranges.length === 0)
    throw invalidArgument(`network ${network.name}: no address range configured`);
  const ranges = network.ranges.map((r) => resolveIpamRange(r, `network ${network.name}`));
  for (let i = 0; i < ranges.length; i++) {
    for (let j = i + 1; j < ranges.length; j++) {
      const a = ranges[i] as ResolvedIpamRange;
      const b = ranges[j] as ResolvedIpamRange;
      if (networksOverlap(a.subnet, b.subnet)) {
        throw invalidArgument(
          `network ${network.name}: subnets ${formatNetwork(a.subnet)} and ${formatNetwork(b.subnet)} overlap`,
        );
      }
    }
  }
  return ranges;
}

function describeRange(network: string, range: ResolvedIpamRange): string {
  return `network ${network} range ${formatIp(range.rangeStart)}-${formatIp(range.rangeEnd)} (subnet ${formatNetwork(range.subnet)})`;
}

function toIpamAddress(ip: IpAddress, range: ResolvedIpamRange): IpamAddress {
  return {
    family: ip.family,
    address: formatIp(ip),
    prefixLength: range.subnet.prefixLength,
    cidr: formatPrefix(ip, range.subnet.prefixLength),
    subnet: formatNetwork(range.subnet),
    gateway: formatIp(range.gateway),
  };
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}

/** Writes `content` to a fresh temp file in `dir` and returns its path. */
function writeTemp(dir: string, content: string): string {
  const path = join(dir, `${TEMP_PREFIX}${process.pid}-${randomBytes(6).toString("hex")}`);
  const fd = openSync(path, "wx", 0o600);
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  return path;
}

interface Lease {
  readonly ip: IpAddress;
  readonly name: string;
  readonly containerId: string;
}

/** Reads the leases of a network directory; with `sweep`, also removes temp files left by a crash. */
function readLeases(dir: string, sweep: boolean): Lease[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return [];
    throw err;
  }
  const leases: Lease[] = [];
  for (const name of names) {
    if (name.startsWith(TEMP_PREFIX)) {
      // Only a process that holds the lock writes temp files, and they never outlive its critical
      // section: one seen by the lock holder was left by a process that died mid-allocation.
      if (sweep) rmSync(join(dir, name), { force: true });
      continue;
    }
    const ip = tryParseIp(name);
    if (ip === undefined) continue;
    let content: string;
    try {
      content = readFileSync(join(dir, name), "utf8");
    } catch (err) {
      // Released between readdir and read: list() reads without the lock.
      if (isErrno(err, "ENOENT")) continue;
      throw err;
    }
    leases.push({ ip, name, containerId: content.split("\n", 1)[0] as string });
  }
  return leases.sort((a, b) => compareIp(a.ip, b.ip));
}

function readLastReserved(dir: string, index: number): IpAddress | undefined {
  try {
    return tryParseIp(readFileSync(join(dir, `${LAST_RESERVED_PREFIX}${index}`), "utf8").trim());
  } catch (err) {
    if (isErrno(err, "ENOENT")) return undefined;
    throw err;
  }
}

function writeLastReserved(dir: string, index: number, ip: IpAddress): void {
  const temp = writeTemp(dir, formatIp(ip));
  renameSync(temp, join(dir, `${LAST_RESERVED_PREFIX}${index}`));
}

/**
 * Publishes `<dir>/<ip>` naming `containerId`. Returns false when the name exists already. The
 * content is written to a temp file first and hard-linked into place, so the file appears
 * atomically with its content, and link's EEXIST gives the same exclusivity as O_EXCL.
 */
function tryReserve(dir: string, ip: IpAddress, containerId: string): boolean {
  const temp = writeTemp(dir, `${containerId}\n`);
  try {
    linkSync(temp, join(dir, formatIp(ip)));
    return true;
  } catch (err) {
    if (isErrno(err, "EEXIST")) return false;
    throw err;
  } finally {
    unlinkSync(temp);
  }
}

// Callers in one process queue here before taking the flock, so that at most one of them waits
// in flock on a libuv worker thread: many blocked waiters could fill the thread pool.
const processQueues = new Map<string, Promise<void>>();

async function withLock<T>(root: string, fn: () => T): Promise<T> {
  const lockPath = join(root, LOCK_FILE);
  const previous = processQueues.get(lockPath) ?? Promise.resolve();
  let done!: () => void;
  const current = new Promise<void>((resolve) => {
    done = resolve;
  });
  const tail = previous.then(() => current);
  processQueues.set(lockPath, tail);
  await previous;
  try {
    mkdirSync(root, { recursive: true, mode: 0o700 });
    const lock = await lockFile(lockPath);
    try {
      // Synchronous on purpose: the critical section never needs the thread pool, so waiters
      // blocked in flock elsewhere can never starve the holder.
      return fn();
    } finally {
      lock.release();
    }
  } finally {
    done();
    if (processQueues.get(lockPath) === tail) processQueues.delete(lockPath);
  }
}

function allocateLocked(
  root: string,
  name: string,
  ranges: readonly ResolvedIpamRange[],
  containerId: string,
  requested: readonly IpAddress[],
): IpamAddress[] {
  const dir = join(root, name);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const leases = readLeases(dir, true);
  const taken = new Map(leases.map((l) => [formatIp(l.ip), l.containerId]));

  // Requested addresses: each goes to the range whose subnet holds it.
  const wanted = new Map<number, IpAddress>();
  for (const ip of requested) {
    const index = ranges.findIndex((r) => networkContains(r.subnet, ip));
    const range = ranges[index];
    if (range === undefined) {
      throw invalidArgument(
        `network ${name}: requested address ${formatIp(ip)} is outside every subnet (${ranges.map((r) => formatNetwork(r.subnet)).join(", ")})`,
      );
    }
    if (wanted.has(index)) {
      throw invalidArgument(
        `network ${name}: more than one address requested in subnet ${formatNetwork(range.subnet)}`,
      );
    }
    const last = lastAddress(range.subnet);
    if (ip.value === range.subnet.address || (ip.family === 4 && ipEquals(ip, last))) {
      throw invalidArgument(
        `network ${name}: requested address ${formatIp(ip)} is the network or broadcast address`,
      );
    }
    if (ipEquals(ip, range.gateway)) {
      throw invalidArgument(`network ${name}: requested address ${formatIp(ip)} is the gateway`);
    }
    const holder = taken.get(formatIp(ip));
    if (holder !== undefined && holder !== containerId) {
      throw alreadyExists(
        `network ${name}: requested address ${formatIp(ip)} is already allocated to ${holder}`,
      );
    }
    wanted.set(index, ip);
  }

  const created: string[] = [];
  const lastReserved: Array<[number, IpAddress]> = [];
  try {
    const result = ranges.map((range, index): IpamAddress => {
      const held = leases.find((l) => l.containerId === containerId && networkContains(range.subnet, l.ip));
      const request = wanted.get(index);
      if (held !== undefined) {
        if (request !== undefined && !ipEquals(request, held.ip)) {
          throw alreadyExists(
            `network ${name}: container ${containerId} already holds ${formatIp(held.ip)}, not the requested ${formatIp(request)}`,
          );
        }
        return toIpamAddress(held.ip, range);
      }
      if (request !== undefined) {
        if (!tryReserve(dir, request, containerId)) {
          throw alreadyExists(`network ${name}: requested address ${formatIp(request)} is already allocated`);
        }
        created.push(join(dir, formatIp(request)));
        return toIpamAddress(request, range);
      }
      const ip = nextFree(dir, name, range, readLastReserved(dir, index), taken, containerId);
      created.push(join(dir, formatIp(ip)));
      lastReserved.push([index, ip]);
      return toIpamAddress(ip, range);
    });
    for (const [index, ip] of lastReserved) writeLastReserved(dir, index, ip);
    return result;
  } catch (err) {
    // All or nothing: a failure in a later range must not leave the earlier ranges' addresses.
    for (const path of created) rmSync(path, { force: true });
    throw err;
  }
}

/** Scans `range` round-robin from after `last`, reserving and returning the first free address. */
function nextFree(
  dir: string,
  name: string,
  range: ResolvedIpamRange,
  last: IpAddress | undefined,
  taken: ReadonlyMap<string, string>,
  containerId: string,
): IpAddress {
  const size = range.rangeEnd.value - range.rangeStart.value + 1n;
  let candidate =
    last !== undefined && compareIp(last, range.rangeStart) >= 0 && compareIp(last, range.rangeEnd) < 0
      ? addToIp(last, 1n)
      : range.rangeStart;
  // Every candidate skipped is taken or the gateway, so a free address, if any, turns up within
  // (taken + 2) steps: an IPv6 /64 never needs a scan of 2^64 addresses to prove it is full.
  const bound = size < BigInt(taken.size + 2) ? size : BigInt(taken.size + 2);
  for (let step = 0n; step < bound; step++) {
    const text = formatIp(candidate);
    if (!ipEquals(candidate, range.gateway) && !taken.has(text) && tryReserve(dir, candidate, containerId)) {
      return candidate;
    }
    candidate = ipEquals(candidate, range.rangeEnd) ? range.rangeStart : addToIp(candidate, 1n);
  }
  throw resourceExhausted(
    `${describeRange(name, range)}: no free address, all ${size} are allocated or reserved`,
  );
}

function normalizeRequested(requested: AllocateOptions["requestedIp"]): IpAddress[] {
  if (requested === undefined) return [];
  const list: readonly string[] = typeof requested === "string" ? [requested] : requested;
  return list.map((text) => parseIp(text));
}

/**
 * Creates an {@link Ipam} over `root` (created 0700 on first use). Instances are cheap and hold no
 * resources: every state lives on disk, so a new instance (or a new process) sees the allocations
 * of the previous ones.
 */
export function createIpam(root: string): Ipam {
  return {
    root,
    async allocate(network, containerId, options = {}) {
      const ranges = resolveNetwork(network);
      checkContainerId(containerId);
      const requested = normalizeRequested(options.requestedIp);
      return withLock(root, () => allocateLocked(root, network.name, ranges, containerId, requested));
    },
    async release(network, containerId) {
      checkNetworkName(network);
      checkContainerId(containerId);
      return withLock(root, () => {
        const dir = join(root, network);
        const released: string[] = [];
        for (const lease of readLeases(dir, true)) {
          if (lease.containerId !== containerId) continue;
          rmSync(join(dir, lease.name), { force: true });
          released.push(formatIp(lease.ip));
        }
        return released;
      });
    },
    async list(network) {
      checkNetworkName(network);
      // No lock: allocation files appear (link) and disappear (unlink) atomically.
      return readLeases(join(root, network), false).map((l) => ({
        address: formatIp(l.ip),
        containerId: l.containerId,
      }));
    },
    async releaseAll(network) {
      checkNetworkName(network);
      return withLock(root, () => {
        const dir = join(root, network);
        const leases = readLeases(dir, false);
        rmSync(dir, { recursive: true, force: true });
        return leases.map((l) => ({ address: formatIp(l.ip), containerId: l.containerId }));
      });
    },
  };
}
