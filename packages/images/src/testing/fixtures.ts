/**
 * Test fixtures: real content stores in temporary directories and small real images built from
 * scratch (a busybox layer, or tiny per-platform images). Not part of the build.
 * @internal
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { type ContentStore, createLocalContentStore, type Descriptor, type Platform } from "@berth/content";
import { pack as tarPack } from "tar-stream";
import { storeBytes } from "../archive/ingest.js";
import { gcChildLabels } from "../labels.js";
import { MediaType } from "../media-types.js";

export const sha256 = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** A temporary directory and a local content store inside it; `cleanup` removes both. */
export interface TempStore {
  readonly dir: string;
  readonly store: ContentStore;
  cleanup(): Promise<void>;
}

export async function tempStore(): Promise<TempStore> {
  const dir = await mkdtemp(join(tmpdir(), "berth-images-"));
  const store = await createLocalContentStore(join(dir, "content"));
  return { dir, store, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Packs `files` (path → content; a string starting with "->" is a symlink target) into a tar. */
export async function makeTar(files: ReadonlyArray<readonly [string, Uint8Array | string]>): Promise<Buffer> {
  const pack = tarPack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const [name, content] of files) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (typeof content === "string" && content.startsWith("->")) {
        pack.entry({ name, type: "symlink", linkname: content.slice(2), mtime: new Date(0) }, cb);
      } else {
        pack.entry({ name, mtime: new Date(0), mode: 0o755 }, Buffer.from(content), cb);
      }
    });
  }
  pack.finalize();
  await collected;
  return Buffer.concat(chunks);
}

/** A built image in a store: its manifest descriptor plus the parts. */
export interface BuiltImage {
  readonly manifest: Descriptor;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly diffIds: readonly string[];
}

async function put(
  store: ContentStore,
  bytes: Uint8Array,
  mediaType: string,
  labels?: Record<string, string>,
): Promise<Descriptor> {
  const blob = await storeBytes(store, bytes, mediaType, labels);
  return { mediaType, digest: blob.digest, size: blob.size };
}

/**
 * Builds an OCI image from uncompressed layer tars: gzip layers, a config for `platform`, a
 * manifest with GC labels; all stored in `store`.
 */
export async function buildImage(
  store: ContentStore,
  layerTars: readonly Uint8Array[],
  platform: Platform,
  options: { readonly manifestMediaType?: string; readonly cmd?: readonly string[] } = {},
): Promise<BuiltImage> {
  const docker = options.manifestMediaType === MediaType.DockerManifest;
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const tar of layerTars) {
    diffIds.push(sha256(tar));
    layers.push(await put(store, gzipSync(tar), docker ? MediaType.DockerLayerGzip : MediaType.OciLayerGzip));
  }
  const configJson = {
    created: "2024-01-01T00:00:00Z",
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ["PATH=/bin"], Cmd: options.cmd ?? ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: layerTars.map(() => ({ created: "2024-01-01T00:00:00Z", created_by: "berth test" })),
  };
  const config = await put(
    store,
    Buffer.from(JSON.stringify(configJson)),
    docker ? MediaType.DockerConfig : MediaType.OciConfig,
  );
  const manifestMediaType = options.manifestMediaType ?? MediaType.OciManifest;
  const manifestJson = { schemaVersion: 2, mediaType: manifestMediaType, config, layers };
  const manifest = await put(
    store,
    Buffer.from(JSON.stringify(manifestJson)),
    manifestMediaType,
    gcChildLabels({ mediaType: manifestMediaType, digest: "", size: 0 }, [config, ...layers]),
  );
  return { manifest, config, layers, diffIds };
}

/** An image whose only layer holds /bin/busybox and /bin/sh → busybox, for the host platform. */
export async function buildBusybox(store: ContentStore, platform: Platform): Promise<BuiltImage> {
  busyboxLayer ??= makeTar([
    ["bin/busybox", readFileSync("/bin/busybox")],
    ["bin/sh", "->busybox"],
  ]);
  return buildImage(store, [await busyboxLayer], platform);
}

/** Built once per test file: the tar is a few MB and every test of a file uses the same bytes. */
let busyboxLayer: Promise<Buffer> | undefined;

/** Stores an index over `manifests` (each with its platform) and returns its descriptor. */
export async function buildIndex(
  store: ContentStore,
  manifests: readonly Descriptor[],
  mediaType: string = MediaType.OciIndex,
): Promise<Descriptor> {
  const json = { schemaVersion: 2, mediaType, manifests };
  const desc: Descriptor = { mediaType, digest: "", size: 0 };
  return put(store, Buffer.from(JSON.stringify(json)), mediaType, gcChildLabels(desc, manifests));
}

/** Collects a readable's bytes. */
export async function collect(stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c));
  return Buffer.concat(chunks);
}
