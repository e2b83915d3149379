import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { dataLoss } from "@berth/errdefs";
import type { CniNetworkConfigList, CniResult } from "./types.js";

/**
 * One cached attachment, in the layout of libcni's result cache (`kind: "cniCacheV1"`, the list
 * as base64 JSON in `config`), so tools that read libcni caches can read berth's too.
 */
export interface CniCacheEntry {
  readonly kind: "cniCacheV1";
  readonly containerId: string;
  readonly ifName: string;
  readonly networkName: string;
  /** The conflist the attachment was made with, JSON in base64. */
  readonly config: string;
  readonly cniArgs?: readonly (readonly [string, string])[];
  readonly capabilityArgs?: Readonly<Record<string, unknown>>;
  readonly result: CniResult;
}

/** The cache file of one attachment: `<cacheDir>/results/<network>-<containerId>-<ifName>`. @internal */
export function cachePath(cacheDir: string, network: string, containerId: string, ifName: string): string {
  return join(cacheDir, "results", `${network}-${containerId}-${ifName}`);
}

/** Builds the entry written after a successful ADD. @internal */
export function cacheEntry(
  list: CniNetworkConfigList,
  containerId: string,
  ifName: string,
  args: readonly (readonly [string, string])[] | undefined,
  capabilityArgs: Readonly<Record<string, unknown>> | undefined,
  result: CniResult,
): CniCacheEntry {
  return {
    kind: "cniCacheV1",
    containerId,
    ifName,
    networkName: list.name,
    config: Buffer.from(JSON.stringify(list)).toString("base64"),
    ...(args === undefined ? {} : { cniArgs: args }),
    ...(capabilityArgs === undefined ? {} : { capabilityArgs }),
    result,
  };
}

/**
 * Writes an entry atomically (temporary file, then rename), so that a crash leaves either the old
 * entry or the new one, never half of one. Directories are created 0700. @internal
 */
export async function writeCache(path: string, entry: CniCacheEntry): Promise<void> {
  const dir = join(path, "..");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Reads an entry; undefined when there is none. Throws `data-loss` naming the file when it exists
 * but is not a cache entry. @internal
 */
export async function readCache(path: string): Promise<CniCacheEntry | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw dataLoss(`CNI result cache ${path} is not valid JSON`, { cause: err });
  }
  const entry = value as Partial<CniCacheEntry> | null;
  if (
    typeof entry !== "object" ||
    entry === null ||
    entry.kind !== "cniCacheV1" ||
    typeof entry.result !== "object" ||
    entry.result === null
  ) {
    throw dataLoss(`CNI result cache ${path} is not a cniCacheV1 entry`);
  }
  return entry as CniCacheEntry;
}

/** Removes an entry; nothing happens when there is none. @internal */
export async function removeCache(path: string): Promise<void> {
  await rm(path, { force: true });
}
