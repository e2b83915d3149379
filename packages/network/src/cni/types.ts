/**
 * The CNI versions the runner accepts in a conflist. 1.0.0 is what berth writes; the 0.3.x and
 * 0.4.0 lists still found on disk are run unchanged (their results differ only in the `version`
 * field of `ips[]`, which the runner passes through), except that CHECK needs 0.4.0 or later.
 */
export const CNI_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"] as const;

/** One of {@link CNI_VERSIONS}. */
export type CniVersion = (typeof CNI_VERSIONS)[number];

/** The version berth writes when it exports a conflist (CNI spec 1.0.0). */
export const CNI_VERSION: CniVersion = "1.0.0";

/** The default directories searched for plugin binaries, in order (Debian's, then upstream's). */
export const DEFAULT_CNI_PLUGIN_PATHS: readonly string[] = ["/usr/lib/cni", "/opt/cni/bin"];

/** The `CNI_COMMAND` values (CNI spec 1.0.0, "Parameters"). GC and STATUS came after 1.0.0. */
export const CniCommand = {
  Add: "ADD",
  Check: "CHECK",
  Del: "DEL",
  Version: "VERSION",
} as const;

/** One of the {@link CniCommand} values. */
export type CniCommand = (typeof CniCommand)[keyof typeof CniCommand];

/**
 * The well-known error codes of the CNI spec ("Error"). Codes 100 and above are plugin-specific.
 */
export const CniErrorCode = {
  IncompatibleVersion: 1,
  UnsupportedField: 2,
  ContainerUnknown: 3,
  InvalidEnvironment: 4,
  IoFailure: 5,
  DecodeFailure: 6,
  InvalidNetworkConfig: 7,
  TryAgainLater: 11,
} as const;

/**
 * One plugin's configuration inside a conflist: `type` names the binary; every other key belongs
 * to the plugin and is passed through untouched. `capabilities` lists the capability arguments
 * (`portMappings`, `bandwidth`, ...) the plugin wants in `runtimeConfig`.
 */
export interface CniPluginConfig {
  readonly type: string;
  readonly capabilities?: Readonly<Record<string, boolean>>;
  readonly [key: string]: unknown;
}

/** A network configuration list (a `.conflist` file), validated by `parseConflist`. */
export interface CniNetworkConfigList {
  readonly cniVersion: CniVersion;
  readonly name: string;
  /** When true, CHECK is a no-op for this network (spec 1.0.0 `disableCheck`). */
  readonly disableCheck?: boolean;
  readonly plugins: readonly CniPluginConfig[];
}

/** One `interfaces[]` entry of a CNI result. */
export interface CniInterface {
  readonly name: string;
  readonly mac?: string;
  readonly mtu?: number;
  /** The network namespace path for interfaces inside a container; absent for host interfaces. */
  readonly sandbox?: string;
  readonly [key: string]: unknown;
}

/** One `ips[]` entry of a CNI result: an address in CIDR form and, optionally, its gateway. */
export interface CniIpConfig {
  readonly address: string;
  readonly gateway?: string;
  /** Index into `interfaces[]`. */
  readonly interface?: number;
  readonly [key: string]: unknown;
}

/** One `routes[]` entry of a CNI result. */
export interface CniRoute {
  readonly dst: string;
  readonly gw?: string;
  readonly [key: string]: unknown;
}

/** The `dns` section of a CNI result. */
export interface CniDns {
  readonly nameservers?: readonly string[];
  readonly domain?: string;
  readonly search?: readonly string[];
  readonly options?: readonly string[];
}

/** The result a plugin prints on ADD, and the runner caches for CHECK and DEL. */
export interface CniResult {
  readonly cniVersion: string;
  readonly interfaces?: readonly CniInterface[];
  readonly ips?: readonly CniIpConfig[];
  readonly routes?: readonly CniRoute[];
  readonly dns?: CniDns;
  readonly [key: string]: unknown;
}

/** The reply to `CNI_COMMAND=VERSION`. */
export interface CniVersionInfo {
  readonly cniVersion: string;
  readonly supportedVersions: readonly string[];
}

/** A `portMappings` capability argument entry, as the portmap plugin reads it. */
export interface CniPortMapping {
  readonly hostPort: number;
  readonly containerPort: number;
  readonly protocol: "tcp" | "udp" | "sctp";
  readonly hostIP?: string;
}

/**
 * What the runtime knows about one attachment of a container to a network: the parameters that
 * become `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME` and `CNI_ARGS`, and the capability
 * arguments that become `runtimeConfig` for the plugins that declare them.
 */
export interface CniRuntimeConfig {
  /** The container ID: letters, digits, `_`, `.` and `-`, starting with a letter or digit. */
  readonly containerId: string;
  /** Path of the container's network namespace (a bind-mounted nsfs file or `/proc/PID/ns/net`). */
  readonly netns: string;
  /** The interface name inside the container (at most 15 bytes, no `/`, `:` or whitespace). */
  readonly ifName: string;
  /** Key/value pairs joined into `CNI_ARGS` as `K1=V1;K2=V2`, in order. */
  readonly args?: readonly (readonly [string, string])[];
  /** Capability arguments (`{ portMappings: [...] }`), given only to plugins declaring them. */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
}
