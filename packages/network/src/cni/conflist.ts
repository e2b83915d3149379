import { readFile } from "node:fs/promises";
import { invalidArgument, notFound } from "@berth/errdefs";
import { CNI_VERSIONS, type CniNetworkConfigList, type CniPluginConfig, type CniVersion } from "./types.js";

// libcni's network name rule (pkg/utils ValidateNetworkName): it becomes part of cache file names
// and of the chain and comment names plugins create, so nothing that could escape a path.
const NETWORK_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
// A plugin type is a file name inside one of the plugin directories, never a path.
const PLUGIN_TYPE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isCniVersion(value: unknown): value is CniVersion {
  return typeof value === "string" && (CNI_VERSIONS as readonly string[]).includes(value);
}

/**
 * Validates a network name the way libcni does: letters, digits, `_`, `.` and `-`, starting with
 * a letter or digit. Throws `invalid-argument` naming the offending name.
 */
export function validateNetworkName(name: string): void {
  if (!NETWORK_NAME.test(name)) {
    throw invalidArgument(
      `CNI network name ${JSON.stringify(name)} is invalid: use letters, digits, "_", "." and "-", starting with a letter or digit`,
    );
  }
}

/**
 * Parses and validates a CNI network configuration list, given as JSON text (or bytes) or as an
 * already-parsed value. Checks that `cniVersion` is one of {@link CNI_VERSIONS}, that `name` is a
 * valid network name, that `plugins` is a non-empty array whose entries have a `type` naming a
 * binary (not a path) and, when present, a `capabilities` object of booleans; every other key is
 * kept as is. `source` (a file name) is only used in messages. Throws `invalid-argument` naming
 * the source and the offending field. The returned object is a fresh deep copy the caller owns.
 */
export function parseConflist(
  input: string | Uint8Array | unknown,
  source = "conflist",
): CniNetworkConfigList {
  let value: unknown = input;
  if (typeof input === "string" || input instanceof Uint8Array) {
    const text = typeof input === "string" ? input : Buffer.from(input).toString("utf8");
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw invalidArgument(`CNI ${source}: not valid JSON: ${(err as Error).message}`, { cause: err });
    }
  } else {
    // Deep copy through JSON so that the caller's object cannot change under the runner and
    // values JSON cannot carry (functions, undefined) are dropped exactly as a file would drop them.
    value = JSON.parse(JSON.stringify(input ?? null)) as unknown;
  }
  if (!isRecord(value)) throw invalidArgument(`CNI ${source}: expected a JSON object`);
  const { cniVersion, name, plugins, disableCheck } = value;
  if (!isCniVersion(cniVersion)) {
    throw invalidArgument(
      `CNI ${source}: cniVersion ${JSON.stringify(cniVersion)} is not one of ${CNI_VERSIONS.join(", ")}`,
    );
  }
  if (typeof name !== "string") throw invalidArgument(`CNI ${source}: "name" must be a string`);
  validateNetworkName(name);
  if (disableCheck !== undefined && typeof disableCheck !== "boolean") {
    throw invalidArgument(`CNI ${source} (network ${name}): "disableCheck" must be a boolean`);
  }
  if (!Array.isArray(plugins) || plugins.length === 0) {
    throw invalidArgument(`CNI ${source} (network ${name}): "plugins" must be a non-empty array`);
  }
  const checkedPlugins: CniPluginConfig[] = plugins.map((plugin: unknown, i) => {
    const where = `CNI ${source} (network ${name}): plugins[${i}]`;
    if (!isRecord(plugin)) throw invalidArgument(`${where} must be an object`);
    const { type, capabilities } = plugin;
    if (typeof type !== "string" || !PLUGIN_TYPE.test(type)) {
      throw invalidArgument(`${where}: "type" ${JSON.stringify(type)} must name a plugin binary`);
    }
    if (capabilities !== undefined) {
      if (!isRecord(capabilities) || !Object.values(capabilities).every((v) => typeof v === "boolean")) {
        throw invalidArgument(`${where} (${type}): "capabilities" must map names to booleans`);
      }
    }
    return plugin as CniPluginConfig;
  });
  return {
    ...value,
    cniVersion,
    name,
    ...(disableCheck === undefined ? {} : { disableCheck }),
    plugins: checkedPlugins,
  };
}

/**
 * Reads and validates a `.conflist` file with {@link parseConflist}. Throws `not-found` when the
 * file does not exist and `invalid-argument` when it is not a valid list.
 */
export async function loadConflist(path: string): Promise<CniNetworkConfigList> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw notFound(`CNI conflist ${path} does not exist`, { cause: err });
    }
    throw err;
  }
  return parseConflist(bytes, path);
}
