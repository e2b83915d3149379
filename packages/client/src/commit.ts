import { randomBytes } from "node:crypto";
import { writeDiff } from "@berth/archive";
import { type ContentStore, type Descriptor, digestOf, writeBlob } from "@berth/content";
import { failedPrecondition, invalidArgument } from "@berth/errdefs";
import {
  gcChildLabels,
  type ImageConfig,
  type ImageManifest,
  MediaType,
  type PlatformMatcher,
  resolveImage,
} from "@berth/images";
import { Kind, type Snapshotter } from "@berth/snapshots";

/** Options of {@link commitSnapshot}. */
export interface CommitSnapshotOptions {
  /** Layer compression; default gzip. */
  readonly compression?: "gzip" | "zstd" | "none";
  /** The `created_by` of the new history entry; default `berth commit`. */
  readonly createdBy?: string;
  /** A comment for the new history entry. */
  readonly comment?: string;
  /** Overrides of the run configuration (`Cmd`, `Env`, ...), merged over the base image's. */
  readonly config?: Readonly<Record<string, unknown>>;
}

/** The result of {@link commitSnapshot}: the new manifest and what it added. */
export interface CommitSnapshotResult {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  readonly layer: Descriptor;
  readonly diffId: string;
}

function layerMediaType(manifestMediaType: string, compression: "gzip" | "zstd" | "none"): string {
  const docker = manifestMediaType === MediaType.DockerManifest;
  if (compression === "gzip") return docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip;
  if (compression === "zstd") return docker ? MediaType.DockerLayerZstd : MediaType.OciLayerZstd;
  return docker ? MediaType.DockerLayer : MediaType.OciLayer;
}

async function storeJson(
  content: ContentStore,
  mediaType: string,
  value: unknown,
  labels?: Record<string, string>,
): Promise<Descriptor> {
  const bytes = Buffer.from(JSON.stringify(value));
  const digest = digestOf(bytes);
  await writeBlob(content, `commit-${digest}`, bytes, {
    size: bytes.length,
    digest,
    ...(labels ? { labels } : {}),
  });
  return { mediaType, digest, size: bytes.length };
}

/**
 * Turns the changes of the active snapshot `key` into a new image on top of `base` (containerd's
 * and nerdctl's commit): the diff against the snapshot's parent becomes a new layer in `content`
 * (the overlay upperdir is read directly when it can be), the base config gains its diffID and a
 * history entry, and a new manifest references both, stored with garbage-collection labels.
 * The snapshot itself is left as it is. Errors: `failed-precondition` if `key` is not an active
 * snapshot, or its parent is not the base image's top layer.
 */
export async function commitSnapshot(
  content: ContentStore,
  snapshotter: Snapshotter,
  key: string,
  base: Descriptor,
  matcher: PlatformMatcher,
  options: CommitSnapshotOptions = {},
): Promise<CommitSnapshotResult> {
  const info = await snapshotter.stat(key);
  if (info.kind !== Kind.Active) {
    throw failedPrecondition(
      `snapshot ${key} is ${info.kind}; only an active snapshot can be committed to an image`,
    );
  }
  const image = await resolveImage(content, base, matcher);
  const compression = options.compression ?? "gzip";
  const upper = await snapshotter.mounts(key);
  const viewKey = `commit-view-${randomBytes(6).toString("hex")}`;
  const lower = info.parent === undefined ? undefined : await snapshotter.view(viewKey, info.parent);
  let diff: Awaited<ReturnType<typeof writeDiff>>;
  try {
    diff = await writeDiff(content, lower, upper, {
      compression,
      mediaType: layerMediaType(image.manifestDesc.mediaType, compression),
    });
  } finally {
    if (lower !== undefined) await snapshotter.remove(viewKey).catch(() => undefined);
  }
  const now = new Date().toISOString();
  const baseConfig: ImageConfig = image.config;
  if (!Array.isArray(baseConfig.rootfs?.diff_ids)) {
    throw invalidArgument(`base image config ${image.configDesc.digest} has no rootfs.diff_ids`);
  }
  const config = {
    ...baseConfig,
    created: now,
    ...(options.config ? { config: { ...(baseConfig.config ?? {}), ...options.config } } : {}),
    rootfs: { type: "layers", diff_ids: [...baseConfig.rootfs.diff_ids, diff.diffId] },
    history: [
      ...(baseConfig.history ?? []),
      {
        created: now,
        created_by: options.createdBy ?? "berth commit",
        ...(options.comment === undefined ? {} : { comment: options.comment }),
      },
    ],
  };
  const configDesc = await storeJson(content, image.configDesc.mediaType, config);
  const baseManifest: ImageManifest = image.manifest;
  const layers = [...baseManifest.layers, diff.descriptor];
  const manifest = { ...baseManifest, config: configDesc, layers };
  const manifestMediaType = image.manifestDesc.mediaType;
  const children = [configDesc, ...layers];
  const manifestDesc = await storeJson(
    content,
    manifestMediaType,
    manifest,
    gcChildLabels({ mediaType: manifestMediaType, digest: "", size: 0 }, children),
  );
  return { manifest: manifestDesc, config: configDesc, layer: diff.descriptor, diffId: diff.diffId };
}
