import { alreadyExists, invalidArgument, notFound, notImplemented } from "@berth/errdefs";
import { cacheEntry, cachePath, readCache, removeCache, writeCache } from "./cache.js";
import { CniPluginError } from "./errors.js";
import { execPlugin, findPlugin } from "./exec.js";
import {
  CniCommand,
  type CniNetworkConfigList,
  type CniPluginConfig,
  type CniResult,
  type CniRuntimeConfig,
  type CniVersionInfo,
  DEFAULT_CNI_PLUGIN_PATHS,
} from "./types.js";

/** Options of {@link createCniRunner}. */
export interface CniRunnerOptions {
  /**
   * The directory of the result cache (libcni's `/var/lib/cni`); entries go under `results/`.
   * The runner owns what it writes there and removes each entry on a successful DEL.
   */
  readonly cacheDir: string;
  /** Directories searched for plugin binaries, in order; also passed as `CNI_PATH`. */
  readonly pluginPaths?: readonly string[];
  /**
   * The network namespace the plugins run in: the runtime's side of the network, where the
   * bridge plugin creates its bridge and portmap its NAT rules. Undefined means this process's
   * current namespace. Tests point it at a namespace of their own.
   */
  readonly netns?: string;
}

/** Per-call options of the {@link CniRunner} methods. */
export interface CniCallOptions {
  /** Aborting kills the running plugin and rejects with `canceled`. */
  readonly signal?: AbortSignal;
}

/** Runs CNI network configuration lists for containers, the way libcni's `CNIConfig` does. */
export interface CniRunner {
  /**
   * Attaches a container to `list`: runs ADD on each plugin in order, handing each the previous
   * plugin's result as `prevResult`, and caches the final result. When a plugin fails, DEL runs
   * over the whole list in reverse (errors of that cleanup are ignored, the cache is removed) and
   * the plugin's {@link CniPluginError} is rethrown. Throws `already-exists` when the attachment
   * (network, container ID, interface) is cached already, `not-found` when a plugin binary is
   * missing (before anything runs), `invalid-argument` for a malformed runtime config.
   */
  addNetworkList(
    list: CniNetworkConfigList,
    rt: CniRuntimeConfig,
    options?: CniCallOptions,
  ): Promise<CniResult>;
  /**
   * Runs CHECK on each plugin in order with the cached result as `prevResult`. Resolves when all
   * agree; does nothing when the list sets `disableCheck`. Throws `not-found` when there is no
   * cached result, `not-implemented` for lists older than 0.4.0, a {@link CniPluginError} when a
   * plugin reports a problem.
   */
  checkNetworkList(list: CniNetworkConfigList, rt: CniRuntimeConfig, options?: CniCallOptions): Promise<void>;
  /**
   * Detaches a container: runs DEL on each plugin in reverse order with the cached result (if any)
   * as `prevResult`, then removes the cache entry. `rt.netns` may be empty when the namespace is
   * gone. When `rt` carries no `args` or `capabilityArgs`, the cached ones are used, so portmap
   * finds the mappings it has to remove. Safe to repeat: plugins treat DEL of something absent as
   * success. Throws the first plugin's {@link CniPluginError} (the cache entry is then kept, so a
   * retry has the result again).
   */
  delNetworkList(list: CniNetworkConfigList, rt: CniRuntimeConfig, options?: CniCallOptions): Promise<void>;
  /** The cached ADD result of an attachment, or undefined. Throws `data-loss` for a corrupt entry. */
  getCachedResult(list: CniNetworkConfigList, rt: CniRuntimeConfig): Promise<CniResult | undefined>;
  /** Asks plugin `type` which spec versions it supports (`CNI_COMMAND=VERSION`). */
  pluginVersion(type: string, options?: CniCallOptions): Promise<CniVersionInfo>;
}

// CNI spec 1.0.0 "Parameters": container IDs are alphanumeric plus "_", "." and "-".
const CONTAINER_ID = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function validateRuntime(rt: CniRuntimeConfig, command: CniCommand): void {
  if (!CONTAINER_ID.test(rt.containerId)) {
    throw invalidArgument(
      `CNI container ID ${JSON.stringify(rt.containerId)} must be letters, digits, "_", "." and "-"`,
    );
  }
  // IFNAMSIZ is 16 with the terminating NUL; the kernel refuses "/" and whitespace, and ":" marks
  // an alias in the old ioctl API.
  if (
    rt.ifName === "" ||
    Buffer.byteLength(rt.ifName) > 15 ||
    rt.ifName === "." ||
    rt.ifName === ".." ||
    /[/:\s]/.test(rt.ifName)
  ) {
    throw invalidArgument(
      `CNI interface name ${JSON.stringify(rt.ifName)} is not a valid Linux interface name`,
    );
  }
  if (rt.netns === "" && command !== CniCommand.Del) {
    throw invalidArgument(
      `CNI ${command} for container ${rt.containerId}: the network namespace path is empty`,
    );
  }
  for (const [key, value] of rt.args ?? []) {
    if (key === "" || /[;=]/.test(key) || value.includes(";")) {
      throw invalidArgument(
        `CNI_ARGS entry ${JSON.stringify(`${key}=${value}`)} cannot be encoded as K=V;K=V`,
      );
    }
  }
}

function parseResult(stdout: string, plugin: string, network: string): CniResult {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch (err) {
    throw new CniPluginError(
      {
        plugin,
        command: CniCommand.Add,
        network,
        msg: `printed a result that is not JSON: ${stdout.slice(0, 200)}`,
        exit: 0,
      },
      { cause: err },
    );
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new CniPluginError({
      plugin,
      command: CniCommand.Add,
      network,
      msg: "printed a non-object result",
      exit: 0,
    });
  }
  const result = value as CniResult;
  if (typeof result.cniVersion !== "string") {
    throw new CniPluginError({
      plugin,
      command: CniCommand.Add,
      network,
      msg: "result has no cniVersion",
      exit: 0,
    });
  }
  for (const key of ["interfaces", "ips", "routes"] as const) {
    if (result[key] !== undefined && !Array.isArray(result[key])) {
      throw new CniPluginError({
        plugin,
        command: CniCommand.Add,
        network,
        msg: `result ${key} is not an array`,
        exit: 0,
      });
    }
  }
  return result;
}

/**
 * The stdin of one plugin: its own keys, the list's `name` and `cniVersion`, `prevResult` when
 * there is one, and `runtimeConfig` holding each capability argument the plugin declares with
 * `capabilities: { <name>: true }` (CNI spec, "Deriving execution configuration from plugin
 * configuration"). Plugins that declare nothing get no `runtimeConfig`.
 */
export function pluginStdin(
  list: CniNetworkConfigList,
  plugin: CniPluginConfig,
  prevResult: CniResult | undefined,
  capabilityArgs: Readonly<Record<string, unknown>> | undefined,
): Record<string, unknown> {
  const config: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  delete config.prevResult;
  delete config.runtimeConfig;
  if (prevResult !== undefined) config.prevResult = prevResult;
  const runtimeConfig: Record<string, unknown> = {};
  for (const [capability, enabled] of Object.entries(plugin.capabilities ?? {})) {
    if (enabled && capabilityArgs !== undefined && Object.hasOwn(capabilityArgs, capability)) {
      runtimeConfig[capability] = capabilityArgs[capability];
    }
  }
  if (Object.keys(runtimeConfig).length > 0) config.runtimeConfig = runtimeConfig;
  return config;
}

/** `CNI_ARGS`: `K1=V1;K2=V2`, in order. @internal */
export function formatCniArgs(args: readonly (readonly [string, string])[] | undefined): string {
  return (args ?? []).map(([key, value]) => `${key}=${value}`).join(";");
}

/**
 * Creates a CNI runner. Nothing happens on disk until the first ADD; the runner holds no open
 * resources, so there is nothing to close. Concurrent calls for different attachments are safe;
 * calls for the same attachment (network, container ID, interface) must be serialized by the
 * caller, as with libcni.
 */
export function createCniRunner(options: CniRunnerOptions): CniRunner {
  const pluginPaths = options.pluginPaths ?? DEFAULT_CNI_PLUGIN_PATHS;
  const { cacheDir, netns } = options;
  if (cacheDir === "") throw invalidArgument("CNI runner: cacheDir is empty");

  function env(command: CniCommand, rt: CniRuntimeConfig): Record<string, string> {
    return {
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt.containerId,
      CNI_NETNS: rt.netns,
      CNI_IFNAME: rt.ifName,
      CNI_ARGS: formatCniArgs(rt.args),
      CNI_PATH: pluginPaths.join(":"),
    };
  }

  async function resolveAll(list: CniNetworkConfigList): Promise<string[]> {
    return Promise.all(list.plugins.map((plugin) => findPlugin(plugin.type, pluginPaths)));
  }

  async function run(
    command: CniCommand,
    list: CniNetworkConfigList,
    plugin: CniPluginConfig,
    path: string,
    rt: CniRuntimeConfig,
    prevResult: CniResult | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    return execPlugin({
      path,
      plugin: plugin.type,
      network: list.name,
      command,
      cniEnv: env(command, rt),
      stdin: JSON.stringify(pluginStdin(list, plugin, prevResult, rt.capabilityArgs)),
      ...(netns === undefined ? {} : { netns }),
      ...(signal === undefined ? {} : { signal }),
    });
  }

  async function del(
    list: CniNetworkConfigList,
    rt: CniRuntimeConfig,
    prevResult: CniResult | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const paths = await resolveAll(list);
    for (let i = list.plugins.length - 1; i >= 0; i--) {
      const plugin = list.plugins[i] as CniPluginConfig;
      await run(CniCommand.Del, list, plugin, paths[i] as string, rt, prevResult, signal);
    }
  }

  return {
    async addNetworkList(list, rt, callOptions) {
      validateRuntime(rt, CniCommand.Add);
      const path = cachePath(cacheDir, list.name, rt.containerId, rt.ifName);
      if ((await readCache(path)) !== undefined) {
        throw alreadyExists(
          `container ${rt.containerId} is already attached to CNI network ${list.name} as ${rt.ifName}`,
        );
      }
      const paths = await resolveAll(list);
      const signal = callOptions?.signal;
      let prevResult: CniResult | undefined;
      try {
        for (const [i, plugin] of list.plugins.entries()) {
          const stdout = await run(CniCommand.Add, list, plugin, paths[i] as string, rt, prevResult, signal);
          prevResult = parseResult(stdout, plugin.type, list.name);
        }
        const result = prevResult as CniResult;
        await writeCache(
          path,
          cacheEntry(list, rt.containerId, rt.ifName, rt.args, rt.capabilityArgs, result),
        );
        return result;
      } catch (err) {
        // The spec asks the runtime to DEL after a failed ADD; doing it here means a failed attach
        // leaves no bridge port, address lease or NAT rule behind. The signal is not passed: an
        // aborted ADD still deserves its cleanup.
        await del(list, rt, prevResult, undefined).catch(() => {});
        await removeCache(path);
        throw err;
      }
    },

    async checkNetworkList(list, rt, callOptions) {
      validateRuntime(rt, CniCommand.Check);
      if (list.cniVersion === "0.3.0" || list.cniVersion === "0.3.1") {
        throw notImplemented(
          `CNI network ${list.name}: CHECK needs cniVersion 0.4.0 or later, not ${list.cniVersion}`,
        );
      }
      if (list.disableCheck === true) return;
      const path = cachePath(cacheDir, list.name, rt.containerId, rt.ifName);
      const cached = await readCache(path);
      if (cached === undefined) {
        throw notFound(
          `no cached CNI result for container ${rt.containerId} on network ${list.name} (${rt.ifName})`,
        );
      }
      const paths = await resolveAll(list);
      for (const [i, plugin] of list.plugins.entries()) {
        await run(CniCommand.Check, list, plugin, paths[i] as string, rt, cached.result, callOptions?.signal);
      }
    },

    async delNetworkList(list, rt, callOptions) {
      validateRuntime(rt, CniCommand.Del);
      const path = cachePath(cacheDir, list.name, rt.containerId, rt.ifName);
      const cached = await readCache(path);
      const effective: CniRuntimeConfig = {
        ...rt,
        ...(rt.args === undefined && cached?.cniArgs !== undefined ? { args: cached.cniArgs } : {}),
        ...(rt.capabilityArgs === undefined && cached?.capabilityArgs !== undefined
          ? { capabilityArgs: cached.capabilityArgs }
          : {}),
      };
      await del(list, effective, cached?.result, callOptions?.signal);
      await removeCache(path);
    },

    async getCachedResult(list, rt) {
      validateRuntime(rt, CniCommand.Del);
      return (await readCache(cachePath(cacheDir, list.name, rt.containerId, rt.ifName)))?.result;
    },

    async pluginVersion(type, callOptions) {
      const path = await findPlugin(type, pluginPaths);
      const stdout = await execPlugin({
        path,
        plugin: type,
        command: CniCommand.Version,
        cniEnv: { CNI_COMMAND: CniCommand.Version, CNI_PATH: pluginPaths.join(":") },
        stdin: JSON.stringify({ cniVersion: "1.0.0" }),
        ...(netns === undefined ? {} : { netns }),
        ...(callOptions?.signal === undefined ? {} : { signal: callOptions.signal }),
      });
      let value: unknown;
      try {
        value = JSON.parse(stdout);
      } catch (err) {
        throw new CniPluginError(
          {
            plugin: type,
            command: CniCommand.Version,
            msg: `printed non-JSON: ${stdout.slice(0, 200)}`,
            exit: 0,
          },
          { cause: err },
        );
      }
      const info = value as Partial<CniVersionInfo> | null;
      if (
        info === null ||
        typeof info !== "object" ||
        typeof info.cniVersion !== "string" ||
        !Array.isArray(info.supportedVersions)
      ) {
        throw new CniPluginError({
          plugin: type,
          command: CniCommand.Version,
          msg: "reply lacks cniVersion or supportedVersions",
          exit: 0,
        });
      }
      return { cniVersion: info.cniVersion, supportedVersions: info.supportedVersions };
    },
  };
}
