import { createHash, randomUUID } from "node:crypto";
import { once } from "node:events";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ContentStore, Descriptor } from "@berth/content";
import { digestAlgorithm } from "@berth/content";
import { dataLoss, invalidArgument, isNotFound, notFound } from "@berth/errdefs";
import { pack as tarPack } from "tar-stream";
import { Annotations, isNonDistributableMediaType, MediaType } from "../media-types.js";
import { hostPlatform, allPlatforms as matchAll, onlyPlatform, type PlatformMatcher } from "../platforms.js";
import { parseReference } from "../reference.js";
import { walkImage } from "../walk.js";
import { dockerManifest } from "./docker-manifest.js";
import { blobPath } from "./paths.js";

/** One image to export: its name (a full reference) and the descriptor it points to. */
export interface ExportTarget {
  readonly name: string;
  readonly target: Descriptor;
}

/** Options of {@link exportImages}. */
export interface ExportImagesOptions {
  /**
   * Which platforms of multi-platform images to include (the index itself is always written whole,
   * so its digest is kept). Default: exactly the host platform, like `ctr export`.
   */
  readonly platform?: PlatformMatcher;
  /** Include every platform (overrides `platform`). */
  readonly allPlatforms?: boolean;
  /** Leave out non-distributable (foreign) layers, which their licenses may forbid copying. */
  readonly skipNonDistributable?: boolean;
  /**
   * Leave out Docker's `manifest.json` (containerd's `WithSkipDockerManifest`, `ctr images export
   * --skip-manifest-json`). By default it is written beside the OCI layout so that `docker load`
   * accepts the archive too; see {@link exportImages}.
   */
  readonly skipDockerManifest?: boolean;
}

/** The OCI image layout version berth writes and reads. */
const layoutVersion = "1.0.0";
/** Docker's archive index, read by `docker load`. */
const dockerManifestFile = "manifest.json";
/** A fixed modification time so that exporting the same images twice gives the same bytes. */
const fixedMtime = new Date(0);

interface ExportPlan {
  readonly blobs: Descriptor[];
  readonly indexJson: Uint8Array;
  readonly layoutJson: Uint8Array;
  /** Docker's manifest.json; undefined when skipped or when no image resolves to a manifest. */
  readonly dockerManifestJson: Uint8Array | undefined;
}

async function plan(
  store: ContentStore,
  images: readonly ExportTarget[],
  options: ExportImagesOptions,
): Promise<ExportPlan> {
  const matcher = options.allPlatforms ? matchAll : (options.platform ?? onlyPlatform(hostPlatform()));
  const blobs = new Map<string, Descriptor>();
  const manifests: Descriptor[] = [];
  for (const image of images) {
    let tag: string | undefined;
    try {
      tag = parseReference(image.name).tag;
    } catch (err) {
      throw invalidArgument(`export: image name ${JSON.stringify(image.name)} is not a valid reference`, {
        cause: err,
      });
    }
    await walkImage(
      store,
      image.target,
      (desc) => {
        if (options.skipNonDistributable && isNonDistributableMediaType(desc.mediaType)) return false;
        if (!blobs.has(desc.digest)) blobs.set(desc.digest, desc);
        return true;
      },
      matcher,
    );
    const annotations: Record<string, string> = {
      ...(image.target.annotations ?? {}),
      [Annotations.ImageName]: image.name,
    };
    if (tag !== undefined) annotations[Annotations.RefName] = tag;
    manifests.push({ ...image.target, annotations });
  }
  // Fail before writing anything when content is missing (for example layers never pulled).
  for (const desc of blobs.values()) {
    try {
      const info = await store.info(desc.digest);
      if (info.size !== desc.size) {
        throw dataLoss(
          `export: blob ${desc.digest} is ${info.size} bytes in the store, its descriptor says ${desc.size}`,
        );
      }
    } catch (err) {
      if (isNotFound(err))
        throw notFound(`export: blob ${desc.digest} (${desc.mediaType}) is not in the content store`, {
          cause: err,
        });
      throw err;
    }
  }
  const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
  let dockerManifestJson: Uint8Array | undefined;
  if (!options.skipDockerManifest) {
    // Like ctr, one platform per index even when every platform is exported: Docker's format
    // has a single config per entry. The same choice as the walk unless allPlatforms is set.
    const entries = await dockerManifest(store, images, options.platform ?? onlyPlatform(hostPlatform()));
    // containerd writes no manifest.json when no image resolves to a manifest.
    if (entries.length > 0) dockerManifestJson = Buffer.from(JSON.stringify(entries));
  }
  return {
    blobs: [...blobs.values()].sort((a, b) => (blobPath(a.digest) < blobPath(b.digest) ? -1 : 1)),
    indexJson: Buffer.from(JSON.stringify(index)),
    layoutJson: Buffer.from(JSON.stringify({ imageLayoutVersion: layoutVersion })),
    dockerManifestJson,
  };
}

/**
 * Streams a blob out of the store, verifying size and digest on the way: a corrupt store must not
 * produce an archive that looks valid.
 */
async function* blobChunks(store: ContentStore, desc: Descriptor): AsyncGenerator<Uint8Array> {
  const reader = await store.readerAt(desc.digest);
  try {
    const algorithm = digestAlgorithm(desc.digest);
    const hash = createHash(algorithm);
    let size = 0;
    for await (const chunk of reader.stream()) {
      const bytes = chunk as Uint8Array;
      size += bytes.byteLength;
      hash.update(bytes);
      yield bytes;
    }
    const actual = `${algorithm}:${hash.digest("hex")}`;
    if (size !== desc.size || actual !== desc.digest) {
      throw dataLoss(`export: stored blob ${desc.digest} reads back as ${size} bytes with digest ${actual}`);
    }
  } finally {
    await reader.close();
  }
}

async function exportTar(store: ContentStore, p: ExportPlan, out: Writable): Promise<void> {
  const pack = tarPack();
  const done = pipeline(Readable.from(pack), out);
  const entry = async (
    name: string,
    size: number,
    chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  ) => {
    let finished!: (err?: Error | null) => void;
    const written = new Promise<void>((resolve, reject) => {
      finished = (err) => (err ? reject(err) : resolve());
    });
    const sink = pack.entry(
      { name, size, mode: 0o644, mtime: fixedMtime, uid: 0, gid: 0, type: "file" },
      finished,
    );
    for await (const chunk of chunks) {
      if (!sink.write(chunk)) await once(sink as unknown as NodeJS.EventEmitter, "drain");
    }
    // streamx's typings require an argument; undefined ends without writing more.
    sink.end(undefined);
    await written;
  };
  const dir = (name: string) =>
    new Promise<void>((resolve, reject) => {
      pack.entry({ name, mode: 0o755, mtime: fixedMtime, uid: 0, gid: 0, type: "directory" }, (err) =>
        err ? reject(err) : resolve(),
      );
    });
  try {
    await dir("blobs/");
    for (const algorithm of [...new Set(p.blobs.map((b) => digestAlgorithm(b.digest)))].sort()) {
      await dir(`blobs/${algorithm}/`);
    }
    for (const desc of p.blobs) await entry(blobPath(desc.digest), desc.size, blobChunks(store, desc));
    await entry("index.json", p.indexJson.byteLength, [p.indexJson]);
    if (p.dockerManifestJson !== undefined) {
      await entry(dockerManifestFile, p.dockerManifestJson.byteLength, [p.dockerManifestJson]);
    }
    await entry("oci-layout", p.layoutJson.byteLength, [p.layoutJson]);
    pack.finalize();
  } catch (err) {
    pack.destroy(err as Error);
    await done.catch(() => {});
    throw err;
  }
  await done;
}

/** Writes a file atomically (temporary name, then rename), so a crash never leaves half a blob. */
async function writeFileAtomic(
  path: string,
  chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<void> {
  const tmp = `${path}.tmp-${randomUUID()}`;
  const handle = await open(tmp, "wx", 0o644);
  try {
    for await (const chunk of chunks) await handle.write(chunk);
    await handle.sync();
    await handle.close();
    await rename(tmp, path);
  } catch (err) {
    await handle.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
}

async function exportDir(store: ContentStore, p: ExportPlan, dir: string): Promise<void> {
  for (const algorithm of new Set(p.blobs.map((b) => digestAlgorithm(b.digest)))) {
    await mkdir(join(dir, "blobs", algorithm), { recursive: true });
  }
  await mkdir(join(dir, "blobs"), { recursive: true });
  for (const desc of p.blobs)
    await writeFileAtomic(join(dir, blobPath(desc.digest)), blobChunks(store, desc));
  // The layout marker last: a reader only trusts the directory once everything it names exists.
  await writeFileAtomic(join(dir, "index.json"), [p.indexJson]);
  // index.json is replaced whole, so a manifest.json left by an earlier export must not outlive it.
  if (p.dockerManifestJson !== undefined) {
    await writeFileAtomic(join(dir, dockerManifestFile), [p.dockerManifestJson]);
  } else await rm(join(dir, dockerManifestFile), { force: true });
  await writeFileAtomic(join(dir, "oci-layout"), [p.layoutJson]);
}

/**
 * Exports images as an OCI image layout: `oci-layout`, `index.json` with one entry per image
 * (annotated with `io.containerd.image.name` = the name and `org.opencontainers.image.ref.name` =
 * its tag), and `blobs/<alg>/<hex>` for every blob reachable on the selected platforms.
 *
 * Unless `options.skipDockerManifest` is set, a Docker `manifest.json` is written beside the layout
 * too, as containerd's exporter does, so that `docker load` (and `skopeo … docker-archive:`)
 * accept the same archive: one entry per image that is a manifest, or an index resolved to the
 * manifest of the preferred platform (`options.platform`, default the exact host platform; only
 * one per index, also with `allPlatforms`); `Config` and `Layers` name the layout's own blobs,
 * layers as stored; `RepoTags` holds Docker's familiar names (`busybox:latest`), names with a
 * digest left out. The file is absent when no image resolves to a manifest. The full rules, and
 * where they differ from containerd's, are on `dockerManifest` in `docker-manifest.ts`.
 * Berth's `importImages` prefers `index.json`, so the extra file changes nothing it imports.
 *
 * `out` is either a `Writable`, which receives a tar archive (deterministic: entries sorted,
 * mtime 0, uid/gid 0) and is ended on success or destroyed on failure; or `{ dir }`, a directory
 * created if needed, whose blob files are written atomically and whose `index.json` and
 * `manifest.json` are replaced (a stale `manifest.json` is removed when none is written).
 *
 * Everything is checked before the first byte is written: throws `invalid-argument` for a name
 * that is not a valid reference, `not-found` for content missing from the store, `data-loss` when
 * a stored blob does not match its descriptor (also detected while streaming; the archive is then
 * cut short), and stream or file-system errors.
 */
export async function exportImages(
  store: ContentStore,
  images: ReadonlyArray<ExportTarget>,
  out: Writable | { readonly dir: string },
  options: ExportImagesOptions = {},
): Promise<void> {
  const p = await plan(store, images, options);
  if ("dir" in out && typeof out.dir === "string") await exportDir(store, p, out.dir);
  else await exportTar(store, p, out as Writable);
}
