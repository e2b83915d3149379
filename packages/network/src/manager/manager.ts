import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { alreadyExists, dataLoss, invalidArgument, isDataLoss, isNotFound, notFound } from "@berth/errdefs";
import { type BridgeDriver, createBridgeDriver, DEFAULT_BRIDGE_NETWORK } from "../bridge/bridge-driver.js";
import { containerResolvConf, hostsFile, readHostResolvConf } from "../bridge/hosts.js";
import { parseConflist } from "../cni/conflist.js";
import { type CniRunner, createCniRunner } from "../cni/runner.js";
import { type CniNetworkConfigList, type CniPortMapping, DEFAULT_CNI_PLUGIN_PATHS } from "../cni/types.js";
import type { PortMapping } from "../nat/nat.js";
import { Rtnetlink } from "../netlink/rtnetlink.js";
import { deleteNetns, pinNetns } from "../netns/netns.js";
import { formatPortMapping } from "./ports.js";

/** The ways a container can be networked, as `--network` names them. */
export const NetworkModeKind = {
  /** A veth on a berth bridge network (the default, network `berth`). */
  Bridge: "bridge",
  /** The host's (the runtime's) own network namespace: no isolation. */
  Host: "host",
  /** A namespace of its own with only `lo`. */
  None: "none",
  /** Another container's namespace (`container:<id>`). */
  Container: "container",
  /** An existing namespace file (`ns:<path>`). */
  Netns: "netns",
  /** A CNI conflist run with the standard plugins (`cni:<name or path>`). */
  Cni: "cni",
} as const;

/** How a container is networked. */
export type NetworkMode =
  | { readonly kind: typeof NetworkModeKind.Bridge; readonly network: string }
  | { readonly kind: typeof NetworkModeKind.Host }
  | { readonly kind: typeof NetworkModeKind.None }
  | { readonly kind: typeof NetworkModeKind.Container; readonly container: string }
  | { readonly kind: typeof NetworkModeKind.Netns; readonly path: string }
  | { readonly kind: typeof NetworkModeKind.Cni; readonly network: string };

/**
 * Parses a `--network` value like nerdctl and podman: `bridge` (the default network), `host`,
 * `none`, `container:<id>`, `ns:<path>`, `cni:<name or conflist path>`, or the name of a berth
 * bridge network. Throws `invalid-argument` for an empty value or an empty id/path/name.
 */
export function parseNetworkMode(text: string): NetworkMode {
  const colon = text.indexOf(":");
  const [head, rest] = colon < 0 ? [text, undefined] : [text.slice(0, colon), text.slice(colon + 1)];
  if (rest !== undefined && rest === "")
    throw invalidArgument(`network mode ${JSON.stringify(text)}: nothing after ":"`);
  switch (rest === undefined ? "" : head) {
    case "container":
      return { kind: NetworkModeKind.Container, container: rest as string };
    case "ns":
    case "netns":
      return { kind: NetworkModeKind.Netns, path: rest as string };
    case "cni":
      return { kind: NetworkModeKind.Cni, network: rest as string };
    case "":
      break;
    default:
      throw invalidArgument(
        `network mode ${JSON.stringify(text)}: unknown kind ${JSON.stringify(head)} (container:, ns:, cni:)`,
      );
  }
  if (text === "") throw invalidArgument("network mode is empty");
  if (text === "host") return { kind: NetworkModeKind.Host };
  if (text === "none") return { kind: NetworkModeKind.None };
  if (text === "bridge") return { kind: NetworkModeKind.Bridge, network: DEFAULT_BRIDGE_NETWORK };
  return { kind: NetworkModeKind.Bridge, network: text };
}

/** The text form of a mode, as {@link parseNetworkMode} reads it. */
export function formatNetworkMode(mode: NetworkMode): string {
  switch (mode.kind) {
    case NetworkModeKind.Bridge:
      return mode.network === DEFAULT_BRIDGE_NETWORK ? "bridge" : mode.network;
    case NetworkModeKind.Container:
      return `container:${mode.container}`;
    case NetworkModeKind.Netns:
      return `ns:${mode.path}`;
    case NetworkModeKind.Cni:
      return `cni:${mode.network}`;
    default:
      return mode.kind;
  }
}

/** An OCI `mounts[]` entry (runtime-spec config.md). */
export interface NetworkMount {
  readonly destination: string;
  readonly type: "bind";
  readonly source: string;
  readonly options: readonly string[];
}

/** What the runtime spec needs for a container's network: see {@link NetworkManager.prepare}. */
export interface NetworkPlan {
  /**
   * The `linux.namespaces` entry of type `network`: without `path` a new namespace, with `path`
   * one to join. Undefined for host mode: the spec must then have no network entry.
   */
  readonly namespace: { readonly type: "network"; readonly path?: string } | undefined;
  /** Bind mounts of the container's /etc/hosts and /etc/resolv.conf. */
  readonly mounts: readonly NetworkMount[];
}

/** Options of {@link NetworkManager.prepare}. */
export interface PrepareNetworkOptions {
  /** Default: bridge on the default network `berth`. */
  readonly mode?: NetworkMode;
  /** Published ports; only bridge and CNI modes can publish. */
  readonly ports?: readonly PortMapping[];
  /** The container's hostname, mapped to its addresses in /etc/hosts (default the container id). */
  readonly hostname?: string;
}

/** Where the container's network namespace is, for {@link NetworkManager.setup}. */
export type SetupTarget =
  /** The container's init: its namespace is `/proc/<pid>/ns/net`. */
  | { readonly pid: number }
  /** A namespace file. */
  | { readonly netnsPath: string };

/** The phases of a container's network record. */
export const NetworkPhase = {
  /** {@link NetworkManager.prepare} ran; setup has not finished. */
  Prepared: "prepared",
  /** {@link NetworkManager.setup} finished. */
  Ready: "ready",
} as const;
/** `"prepared"` or `"ready"`. */
export type NetworkPhase = (typeof NetworkPhase)[keyof typeof NetworkPhase];

/** A container's network, as recorded in `<stateDir>/containers/<id>/network.json`. */
export interface ContainerNetwork {
  readonly containerId: string;
  readonly mode: NetworkMode;
  readonly ports: readonly PortMapping[];
  readonly hostname: string;
  readonly phase: NetworkPhase;
  /** The pid of the process that last changed the record (sweeps leave live owners' setups alone). */
  readonly owner: number;
  /** The pinned namespace file (bridge, none and CNI modes, once set up). */
  readonly netns?: string;
  /** The container's addresses, without prefix length. */
  readonly addresses: readonly string[];
  /** The interface inside the container (bridge and CNI modes). */
  readonly interface?: string;
  readonly mac?: string;
  /** The conflist of CNI mode, as it was when prepared (DEL runs with the same one). */
  readonly cniConflist?: CniNetworkConfigList;
}

/** Options of {@link createNetworkManager}. */
export interface NetworkManagerOptions {
  /**
   * Where everything is kept: the bridge driver's `networks/` and `ipam/`, the CNI result cache
   * `cni/`, per-container records, hosts and resolv.conf under `containers/<id>/`, and namespace
   * pins under `netns/<id>`.
   */
  readonly stateDir: string;
  /** The namespace playing "the host" (bridges, NAT, CNI plugins): a namespace file. Default: this thread's. */
  readonly hostNetns?: string;
  /** The nftables table of the bridge driver (default `berth`). */
  readonly natTable?: string;
  /** Where `cni:<name>` looks for conflists (default `/etc/cni/net.d`). */
  readonly cniConfDirs?: readonly string[];
  /** Where CNI plugin binaries are searched (default `/usr/lib/cni`, `/opt/cni/bin`). */
  readonly cniPluginPaths?: readonly string[];
  /** The host's resolv.conf (default `/etc/resolv.conf`). */
  readonly hostResolvConf?: string;
}

/**
 * Networks containers through their lifecycle, in three steps around the runtime's:
 * {@link NetworkManager.prepare} before create (it says how the spec joins a namespace and what
 * to bind-mount on /etc/hosts and /etc/resolv.conf), {@link NetworkManager.setup} after create
 * and before start (veth, address, routes, NAT and ports, or CNI ADD, in the container's new
 * namespace), {@link NetworkManager.teardown} after delete. The record is written before anything
 * is set up and everything setup makes is found again from the container id, so
 * {@link NetworkManager.sweep} after a crash or restart undoes half-finished setups.
 */
export interface NetworkManager {
  /** The bridge driver (network create/ls/inspect/rm). */
  readonly bridge: BridgeDriver;
  /**
   * Records a container's network and writes its hosts and resolv.conf. Throws `invalid-argument`
   * for a bad id or ports in a mode that cannot publish, `not-found` for an unknown network, CNI
   * network, namespace path or container to join, `already-exists` when `containerId` already
   * has a network record.
   */
  prepare(containerId: string, options?: PrepareNetworkOptions): Promise<NetworkPlan>;
  /**
   * Sets up the network of a created container: pins its namespace under the state dir, then
   * connects it (bridge), brings up `lo` (none) or runs CNI ADD. On failure what was set up is
   * undone (the record stays for {@link NetworkManager.teardown}) and the error is rethrown.
   * Throws `not-found` for an unprepared container.
   */
  setup(containerId: string, target: SetupTarget): Promise<ContainerNetwork>;
  /**
   * Undoes everything of a container: disconnect or CNI DEL, the namespace pin, hosts, resolv.conf
   * and the record. Idempotent: an unknown id does nothing.
   */
  teardown(containerId: string): Promise<void>;
  /** A container's record; `not-found` when it has none. */
  inspect(containerId: string): Promise<ContainerNetwork>;
  /** Every record, sorted by container id. */
  list(): Promise<ContainerNetwork[]>;
  /**
   * Tears down the records of containers that no longer exist (`exists(id)` false) unless a live
   * process is still preparing them. Resolves to the ids torn down.
   */
  sweep(exists: (containerId: string) => boolean): Promise<string[]>;
  /**
   * Releases what the manager holds open: closes its bridge driver ({@link BridgeDriver.close}),
   * whose NAT keeps a netlink socket open otherwise until the process exits. Idempotent; never
   * throws. The manager stays usable and opens what it needs again.
   */
  close(): void;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
// What may stand in /etc/hosts as a name: no blanks, no comment sign, no line breaks.
const HOSTNAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}$/;

function checkId(id: string): void {
  if (!ID.test(id)) {
    throw invalidArgument(
      `container id ${JSON.stringify(id)} is not valid: letters, digits, "_", ".", "-", at most 64 characters`,
    );
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

const ownsNamespace = (mode: NetworkMode) =>
  mode.kind === NetworkModeKind.Bridge ||
  mode.kind === NetworkModeKind.None ||
  mode.kind === NetworkModeKind.Cni;

/** Creates a network manager over `options.stateDir`. Nothing is touched until a method runs. */
export function createNetworkManager(options: NetworkManagerOptions): NetworkManager {
  return new Manager(options);
}

class Manager implements NetworkManager {
  readonly bridge: BridgeDriver;
  readonly #options: NetworkManagerOptions;
  readonly #containers: string;
  readonly #pins: string;
  #cniRunner: CniRunner | undefined;

  constructor(options: NetworkManagerOptions) {
    this.#options = options;
    this.#containers = join(options.stateDir, "containers");
    this.#pins = join(options.stateDir, "netns");
    this.bridge = createBridgeDriver({
      stateDir: options.stateDir,
      ...(options.hostNetns === undefined ? {} : { hostNetns: options.hostNetns }),
      ...(options.natTable === undefined ? {} : { natTable: options.natTable }),
    });
  }

  #dir(id: string): string {
    return join(this.#containers, id);
  }

  #pin(id: string): string {
    return join(this.#pins, id);
  }

  #cni(): CniRunner {
    this.#cniRunner ??= createCniRunner({
      cacheDir: join(this.#options.stateDir, "cni"),
      pluginPaths: this.#options.cniPluginPaths ?? DEFAULT_CNI_PLUGIN_PATHS,
      ...(this.#options.hostNetns === undefined ? {} : { netns: this.#options.hostNetns }),
    });
    return this.#cniRunner;
  }

  #write(record: ContainerNetwork): void {
    const file = join(this.#dir(record.containerId), "network.json");
    writeFileSync(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`, { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  /**
   * The record of `id`, undefined when there is none; `data-loss` naming the file when it is not
   * a record (not JSON, or without the fields teardown needs).
   */
  #read(id: string): ContainerNetwork | undefined {
    const file = join(this.#dir(id), "network.json");
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    let record: ContainerNetwork;
    try {
      record = JSON.parse(text) as ContainerNetwork;
    } catch (err) {
      throw dataLoss(`network record ${file} is not valid JSON (${(err as Error).message})`, { cause: err });
    }
    const kinds: readonly string[] = Object.values(NetworkModeKind);
    if (
      typeof record !== "object" ||
      record === null ||
      record.containerId !== id ||
      typeof record.mode?.kind !== "string" ||
      !kinds.includes(record.mode.kind) ||
      !Array.isArray(record.ports) ||
      !Array.isArray(record.addresses)
    ) {
      throw dataLoss(`network record ${file} is damaged (containerId, mode, ports or addresses)`);
    }
    return record;
  }

  /** Finds CNI network `name` (a conflist's `name`) in the conf dirs, or reads a conflist path. */
  #findConflist(name: string): CniNetworkConfigList {
    if (name.includes("/")) {
      let text: string;
      try {
        text = readFileSync(name, "utf8");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") {
          throw notFound(`CNI conflist ${name} does not exist`, { cause: err });
        }
        throw err;
      }
      return parseConflist(text, name);
    }
    const dirs = this.#options.cniConfDirs ?? ["/etc/cni/net.d"];
    for (const dir of dirs) {
      let files: string[];
      try {
        files = readdirSync(dir).sort();
      } catch {
        continue;
      }
      for (const file of files) {
        if (!file.endsWith(".conflist") && !file.endsWith(".json")) continue;
        let list: CniNetworkConfigList;
        try {
          list = parseConflist(readFileSync(join(dir, file), "utf8"), join(dir, file));
        } catch {
          // libcni skips files it cannot load the same way; a broken file elsewhere in the
          // directory must not hide a good one.
          continue;
        }
        if (list.name === name) return list;
      }
    }
    throw notFound(`CNI network ${name} not found in ${dirs.join(", ")} (no conflist with that name)`);
  }

  async prepare(containerId: string, options: PrepareNetworkOptions = {}): Promise<NetworkPlan> {
    checkId(containerId);
    const mode: NetworkMode = options.mode ?? {
      kind: NetworkModeKind.Bridge,
      network: DEFAULT_BRIDGE_NETWORK,
    };
    const ports = options.ports ?? [];
    const hostname = options.hostname ?? containerId;
    if (!HOSTNAME.test(hostname)) {
      throw invalidArgument(
        `container ${containerId}: hostname ${JSON.stringify(hostname)} is not valid (letters, digits, "_", ".", "-"; at most 253)`,
      );
    }
    if (ports.length > 0 && mode.kind !== NetworkModeKind.Bridge && mode.kind !== NetworkModeKind.Cni) {
      throw invalidArgument(
        `container ${containerId}: cannot publish ${ports.map(formatPortMapping).join(", ")} with network mode ${formatNetworkMode(mode)}; only bridge and CNI networks publish ports`,
      );
    }
    let namespace: NetworkPlan["namespace"] = { type: "network" };
    let etc = this.#dir(containerId);
    let cniConflist: CniNetworkConfigList | undefined;
    switch (mode.kind) {
      case NetworkModeKind.Bridge:
        if (mode.network !== DEFAULT_BRIDGE_NETWORK) await this.bridge.inspectNetwork(mode.network);
        break;
      case NetworkModeKind.Cni:
        cniConflist = this.#findConflist(mode.network);
        break;
      case NetworkModeKind.Host:
        namespace = undefined;
        break;
      case NetworkModeKind.Container: {
        checkId(mode.container);
        const other = this.#read(mode.container);
        if (other?.netns === undefined) {
          throw notFound(
            `container ${containerId}: container ${mode.container} has no network namespace of its own to join`,
          );
        }
        namespace = { type: "network", path: other.netns };
        etc = this.#dir(mode.container);
        break;
      }
      case NetworkModeKind.Netns:
        try {
          statSync(mode.path);
        } catch (err) {
          throw notFound(`container ${containerId}: network namespace ${mode.path} does not exist`, {
            cause: err,
          });
        }
        namespace = { type: "network", path: mode.path };
        break;
    }

    mkdirSync(this.#containers, { recursive: true, mode: 0o700 });
    try {
      mkdirSync(this.#dir(containerId), { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        throw alreadyExists(`container ${containerId} already has a network; tear it down first`, {
          cause: err,
        });
      }
      throw err;
    }
    try {
      this.#write({
        containerId,
        mode,
        ports,
        hostname,
        phase: NetworkPhase.Prepared,
        owner: process.pid,
        addresses: [],
        ...(cniConflist === undefined ? {} : { cniConflist }),
      });
      if (etc === this.#dir(containerId)) {
        const host = readHostResolvConf(this.#options.hostResolvConf);
        // In the host's namespace its loopback resolvers answer; anywhere else they would not.
        const resolv = mode.kind === NetworkModeKind.Host ? host : containerResolvConf(host);
        writeFileSync(join(etc, "resolv.conf"), resolv, { mode: 0o644 });
        writeFileSync(join(etc, "hosts"), hostsFile(hostname, []), { mode: 0o644 });
      }
    } catch (err) {
      rmSync(this.#dir(containerId), { recursive: true, force: true });
      throw err;
    }
    const bind = (name: string) => ({
      destination: `/etc/${name}`,
      type: "bind" as const,
      source: join(etc, name),
      options: ["rbind", "rprivate"],
    });
    return { namespace, mounts: [bind("hosts"), bind("resolv.conf")] };
  }

  async setup(containerId: string, target: SetupTarget): Promise<ContainerNetwork> {
    checkId(containerId);
    const record = this.#read(containerId);
    if (record === undefined) throw notFound(`container ${containerId} has no prepared network`);
    if (!ownsNamespace(record.mode)) {
      const ready = { ...record, phase: NetworkPhase.Ready, owner: process.pid };
      this.#write(ready);
      return ready;
    }
    const source = "pid" in target ? `/proc/${target.pid}/ns/net` : target.netnsPath;
    const pin = this.#pin(containerId);
    // A retried setup pins again: the previous attempt's pin (if any) may be of an old namespace.
    deleteNetns(pin);
    // No record update before acting: the prepared record already lets sweep() and teardown undo
    // everything from here (the pin path, veth names, NAT rules and addresses all derive from the id).
    const pinned = { ...record, netns: pin, owner: process.pid };
    try {
      pinNetns(source, pin);
      // The bridge driver brings lo up itself.
      if (record.mode.kind !== NetworkModeKind.Bridge)
        Rtnetlink.use({ netns: pin }, (rt) => rt.setLinkUp("lo"));
      let result: Pick<ContainerNetwork, "addresses" | "interface" | "mac"> = { addresses: [] };
      if (record.mode.kind === NetworkModeKind.Bridge) {
        const a = await this.bridge.connect(record.mode.network, {
          containerId,
          netnsPath: pin,
          ...(record.ports.length > 0 ? { ports: record.ports } : {}),
        });
        result = { addresses: a.ip6 === undefined ? [a.ip] : [a.ip, a.ip6], interface: "eth0", mac: a.mac };
      } else if (record.mode.kind === NetworkModeKind.Cni && record.cniConflist !== undefined) {
        const portMappings: CniPortMapping[] = record.ports.map((p) => ({
          hostPort: p.hostPort,
          containerPort: p.containerPort,
          protocol: p.protocol,
          ...(p.hostIP === undefined ? {} : { hostIP: p.hostIP }),
        }));
        const cni = await this.#cni().addNetworkList(record.cniConflist, {
          containerId,
          netns: pin,
          ifName: "eth0",
          ...(portMappings.length > 0 ? { capabilityArgs: { portMappings } } : {}),
        });
        const iface = cni.interfaces?.find((i) => i.sandbox !== undefined && i.sandbox !== "");
        result = {
          addresses: (cni.ips ?? []).map((ip) => ip.address.split("/")[0] ?? ip.address),
          interface: iface?.name ?? "eth0",
          ...(iface?.mac === undefined ? {} : { mac: iface.mac }),
        };
      }
      // In place (same inode): the file is already bind-mounted into the created container.
      writeFileSync(join(this.#dir(containerId), "hosts"), hostsFile(record.hostname, result.addresses));
      const ready: ContainerNetwork = { ...pinned, ...result, phase: NetworkPhase.Ready };
      this.#write(ready);
      return ready;
    } catch (err) {
      await this.#undo(pinned).catch(() => undefined);
      throw err;
    }
  }

  /** Removes what setup made (connection, CNI attachment, pin); keeps the record and files. */
  async #undo(record: ContainerNetwork): Promise<void> {
    const pin = this.#pin(record.containerId);
    if (record.mode.kind === NetworkModeKind.Bridge) {
      try {
        await this.bridge.disconnect(record.mode.network, record.containerId);
      } catch (err) {
        // The network was removed meanwhile: its bridge took the veth with it.
        if (!isNotFound(err)) throw err;
      }
    } else if (record.mode.kind === NetworkModeKind.Cni && record.cniConflist !== undefined) {
      await this.#cni().delNetworkList(record.cniConflist, {
        containerId: record.containerId,
        netns: existsSync(pin) ? pin : "",
        ifName: record.interface ?? "eth0",
      });
    }
    deleteNetns(pin);
  }

  async teardown(containerId: string): Promise<void> {
    checkId(containerId);
    let record: ContainerNetwork | undefined;
    try {
      record = this.#read(containerId);
    } catch (err) {
      if (!isDataLoss(err)) throw err;
      // A damaged record does not say how the container was networked: undo what can be undone
      // by id alone (a bridge connection on any network, the pin). A CNI attachment cannot be.
      for (const network of await this.bridge.listNetworks()) {
        await this.bridge.disconnect(network.name, containerId);
      }
    }
    if (record !== undefined) await this.#undo(record);
    deleteNetns(this.#pin(containerId));
    rmSync(this.#dir(containerId), { recursive: true, force: true });
  }

  async inspect(containerId: string): Promise<ContainerNetwork> {
    checkId(containerId);
    const record = this.#read(containerId);
    if (record === undefined) throw notFound(`container ${containerId} has no network`);
    return record;
  }

  async list(): Promise<ContainerNetwork[]> {
    let ids: string[];
    try {
      ids = readdirSync(this.#containers).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: ContainerNetwork[] = [];
    for (const id of ids) {
      const record = this.#read(id);
      if (record !== undefined) out.push(record);
    }
    return out;
  }

  #ids(dir: string): string[] {
    try {
      return readdirSync(dir).filter((id) => ID.test(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  }

  async sweep(exists: (containerId: string) => boolean): Promise<string[]> {
    const swept: string[] = [];
    for (const id of this.#ids(this.#containers)) {
      if (exists(id)) continue;
      let record: ContainerNetwork | undefined;
      let damaged = false;
      try {
        record = this.#read(id);
      } catch (err) {
        if (!isDataLoss(err)) throw err;
        // Damaged: teardown undoes what it can.
        damaged = true;
      }
      if (record === undefined && !damaged) {
        // A directory without a record: a prepare that died between mkdir and the record write,
        // or one running right now (give it a moment).
        if (Date.now() - statSync(this.#dir(id)).mtimeMs < 10_000) continue;
      } else if (record?.phase === NetworkPhase.Prepared && alive(record.owner)) {
        // Between prepare and create the container does not exist yet: its preparer owns it.
        continue;
      }
      await this.teardown(id);
      swept.push(id);
    }
    // Pins without a record directory (removed by hand).
    for (const id of this.#ids(this.#pins)) {
      if (!existsSync(this.#dir(id))) {
        deleteNetns(this.#pin(id));
        swept.push(id);
      }
    }
    return swept;
  }

  close(): void {
    this.bridge.close?.();
  }
}
