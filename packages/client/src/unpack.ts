import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { applyLayer } from "@berth/archive";
import { type ContentStore, type Descriptor, Labels, readBlob } from "@berth/content";
import { invalidArgument, isAlreadyExists, isNotFound } from "@berth/errdefs";
import {
  chainIds,
  type ImageManifest,
  layerCompression,
  MaxConfigSize,
  type PlatformMatcher,
  parseConfig,
  resolveImage,
} from "@berth/images";
import { type Mount, SnapshotLabels, type Snapshotter } from "@berth/snapshots";
import { mountAll, unmountRecursive } from "@berth/sys";

/** What happened to one layer during {@link unpackImage}. */
export interface UnpackedLayer {
  readonly chainId: string;
  readonly diffId: string;
  readonly descriptor: Descriptor;
  /** True when the layer's snapshot already existed and nothing was applied. */
  readonly existed: boolean;
}

/** Progress of an unpack, one event per layer state change. */
export interface UnpackEvent {
  readonly kind: "applying" | "applied" | "exists";
  readonly layer: number;
  readonly chainId: string;
  readonly descriptor: Descriptor;
}

/** The result of {@link unpackImage}. */
export interface UnpackResult {
  /** The chain ID of the top layer: the snapshot to prepare containers from. */
  readonly chainId: string;
  readonly layers: readonly UnpackedLayer[];
  readonly config: Descriptor;
}

function optionValue(mount: Mount, key: string): string | undefined {
  const prefix = `${key}=`;
  return mount.options.find((o) => o.startsWith(prefix))?.slice(prefix.length);
}

/**
 * Applies a layer stream onto the filesystem that `mounts` describe. Like containerd's applier it
 * avoids mounting when it can: a single bind mount is applied to its source directory, and a
 * single overlay mount straight into its upperdir, writing overlay whiteouts (0/0 character
 * devices, `trusted.overlay.opaque`). Anything else is mounted on a private temporary directory,
 * applied with OCI whiteout semantics, and unmounted, even on failure.
 */
export async function applyToMounts(
  mounts: readonly Mount[],
  layer: Readable,
  options: { readonly compression: "none" | "gzip" | "zstd"; readonly expectedDiffId?: string },
): Promise<{ diffId: string; size: number }> {
  const only = mounts.length === 1 ? mounts[0] : undefined;
  const common = {
    compression: options.compression,
    ...(options.expectedDiffId === undefined ? {} : { expectedDiffId: options.expectedDiffId }),
  };
  if (only && (only.type === "bind" || only.type === "rbind") && !only.options.includes("ro")) {
    return applyLayer(only.source, layer, { ...common, whiteouts: "oci" });
  }
  const upper = only?.type === "overlay" ? optionValue(only, "upperdir") : undefined;
  if (upper !== undefined) return applyLayer(upper, layer, { ...common, whiteouts: "overlay" });
  const target = mkdtempSync(join(tmpdir(), "berth-apply-"));
  try {
    mountAll(mounts, target);
    return await applyLayer(target, layer, { ...common, whiteouts: "oci" });
  } finally {
    unmountRecursive(target, { detach: true });
    rmSync(target, { recursive: true, force: true });
  }
}

/**
 * Unpacks the image `target` (resolved for `matcher`) into `snapshotter`: for each layer, in order,
 * the committed snapshot named by its chain ID is reused when it exists; otherwise an active
 * snapshot is prepared on the previous one, the layer is applied (its diffID checked against the
 * config while it streams), and the snapshot is committed under the chain ID. A failed layer's
 * active snapshot is removed. Records `containerd.io/uncompressed` on each layer blob and
 * `containerd.io/gc.ref.snapshot.<snapshotterName>` on the config, so garbage collection keeps
 * the chain while the image exists.
 */
export async function unpackImage(
  content: ContentStore,
  snapshotter: Snapshotter,
  snapshotterName: string,
  target: Descriptor,
  matcher: PlatformMatcher,
  onEvent?: (event: UnpackEvent) => void,
): Promise<UnpackResult> {
  const image = await resolveImage(content, target, matcher);
  return unpackLayers(content, snapshotter, snapshotterName, image.manifest, {
    ...(onEvent ? { onEvent } : {}),
  });
}

/** Options of {@link unpackLayers}. */
export interface UnpackLayersOptions {
  /**
   * Resolves when the blob `digest` is committed to the content store. Without it every blob
   * must be there already; with it, a layer is applied as soon as its blob arrives, while later
   * layers still download.
   */
  readonly waitForBlob?: (digest: string) => Promise<void>;
  readonly onEvent?: (event: UnpackEvent) => void;
}

/**
 * Unpacks the layers of `manifest` (see {@link unpackImage}), reading its config from `content`.
 * With `waitForBlob`, the config and each layer are awaited just before they are needed.
 */
export async function unpackLayers(
  content: ContentStore,
  snapshotter: Snapshotter,
  snapshotterName: string,
  manifest: ImageManifest,
  options: UnpackLayersOptions = {},
): Promise<UnpackResult> {
  const { waitForBlob, onEvent } = options;
  await waitForBlob?.(manifest.config.digest);
  const config = parseConfig(await readBlob(content, manifest.config.digest, { maxSize: MaxConfigSize }));
  const diffIds = config.rootfs.diff_ids;
  const layers = manifest.layers;
  if (diffIds.length !== layers.length) {
    throw invalidArgument(
      `image config ${manifest.config.digest} lists ${diffIds.length} diff_ids but its manifest has ${layers.length} layers`,
    );
  }
  const chain = chainIds(diffIds);
  const result: UnpackedLayer[] = [];
  let parent: string | undefined;
  for (const [i, descriptor] of layers.entries()) {
    const chainId = chain[i] as string;
    const diffId = diffIds[i] as string;
    let existed = false;
    try {
      await snapshotter.stat(chainId);
      existed = true;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await waitForBlob?.(descriptor.digest);
    if (existed) {
      onEvent?.({ kind: "exists", layer: i, chainId, descriptor });
    } else {
      onEvent?.({ kind: "applying", layer: i, chainId, descriptor });
      existed = !(await applyOne(content, snapshotter, descriptor, diffId, chainId, parent));
      onEvent?.({ kind: existed ? "exists" : "applied", layer: i, chainId, descriptor });
    }
    const info = await content.info(descriptor.digest);
    if (info.labels[Labels.Uncompressed] !== diffId) {
      await content.update({ digest: descriptor.digest, labels: { [Labels.Uncompressed]: diffId } }, [
        `labels.${Labels.Uncompressed}`,
      ]);
    }
    result.push({ chainId, diffId, descriptor, existed });
    parent = chainId;
  }
  const top = chain.at(-1);
  if (top === undefined)
    throw invalidArgument(`image config ${manifest.config.digest} has no layers to unpack`);
  const gcKey = `${Labels.GcRefSnapshot}.${snapshotterName}`;
  await content.update({ digest: manifest.config.digest, labels: { [gcKey]: top } }, [`labels.${gcKey}`]);
  return { chainId: top, layers: result, config: manifest.config };
}

/** Applies one layer; returns false when another unpack committed the same chain ID first. */
async function applyOne(
  content: ContentStore,
  snapshotter: Snapshotter,
  descriptor: Descriptor,
  diffId: string,
  chainId: string,
  parent: string | undefined,
): Promise<boolean> {
  const key = `extract-${randomBytes(6).toString("hex")} ${chainId}`;
  let mounts: Mount[];
  try {
    mounts = await snapshotter.prepare(key, parent, {
      labels: { [SnapshotLabels.UncompressedRef]: chainId },
    });
  } catch (err) {
    // The namespaced snapshotter answers already-exists when the chain ID is committed already
    // (by a concurrent unpack, or shareable from another namespace): the layer is there.
    if (isAlreadyExists(err)) return false;
    throw err;
  }
  let committed = false;
  try {
    const reader = await content.readerAt(descriptor.digest);
    try {
      const compression = layerCompression(descriptor.mediaType) ?? "none";
      await applyToMounts(mounts, reader.stream(), { compression, expectedDiffId: diffId });
    } finally {
      await reader.close();
    }
    try {
      await snapshotter.commit(chainId, key);
      committed = true;
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      return false;
    }
    return true;
  } finally {
    if (!committed) await snapshotter.remove(key).catch(() => undefined);
  }
}
