import { constants } from "node:fs";
import { lstat, open, readFile, realpath } from "node:fs/promises";
import { basename, dirname, join, sep } from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import type { ContentStore, Descriptor, Platform } from "@berth/content";
import { invalidArgument, isNotFound, notFound, notImplemented, resourceExhausted } from "@berth/errdefs";
import { extract as tarExtract } from "tar-stream";
import { gcChildLabels } from "../labels.js";
import {
  Annotations,
  isIndexMediaType,
  isManifestMediaType,
  isNonDistributableMediaType,
  MediaType,
} from "../media-types.js";
import { parseConfig, parseIndex } from "../parse.js";
import { allPlatforms, type PlatformMatcher, platformMatcher } from "../platforms.js";
import { isTag, parseReference } from "../reference.js";
import { childrenOf, filterPlatforms, MaxConfigSize, MaxManifestSize, readJsonBlob } from "../walk.js";
import { type IngestedBlob, ingestBlob, setLabels, storeBytes } from "./ingest.js";
import { blobPath, cleanArchivePath, digestFromBlobPath, resolveLinkTarget } from "./paths.js";

/** Where {@link importImages} reads from: a tar stream (optionally gzip-compressed) or a directory. */
export type ImportSource = Readable | AsyncIterable<Uint8Array> | { readonly dir: string };

/** Options of {@link importImages}. */
export interface ImportImagesOptions {
  /**
   * Which platforms of multi-platform images to check and label for garbage collection. Blobs of
   * other platforms in a tar are stored too, but left unreferenced. Default: the host platform
   * and what it can run ({@link platformMatcher}).
   */
  readonly platform?: PlatformMatcher;
  /** Check and label every platform (overrides `platform`). */
  readonly allPlatforms?: boolean;
  /**
   * Repository for entries whose `org.opencontainers.image.ref.name` is only a tag, like
   * `ctr import --base-name`: `127.0.0.1:5000/app` + `v1` → `127.0.0.1:5000/app:v1`. Without it
   * such entries are imported but not named.
   */
  readonly baseName?: string;
  /** Largest index.json, manifest.json, index or manifest accepted (default 4 MiB). */
  readonly maxJsonSize?: number;
}

/** An image found in the archive: a normalized name and the descriptor it points to. */
export interface ImportedImage {
  readonly name: string;
  readonly target: Descriptor;
}

/** Files of an archive's top level that berth reads as JSON rather than storing as blobs. */
const metadataFiles: ReadonlySet<string> = new Set([
  "index.json",
  "manifest.json",
  "oci-layout",
  "repositories",
]);
/** Symlink hops followed when resolving a path in a docker archive. */
const maxLinkHops = 16;

/** Access to the files of an archive, however it is stored. */
interface ArchiveReader {
  /** A small top-level JSON file, or undefined when absent. */
  metadata(name: string): Promise<Uint8Array | undefined>;
  /**
   * Makes sure the file at `path` is in the store (verified against `expected` when given) and
   * returns what was stored; undefined when the archive has no such file.
   */
  blob(path: string, expected?: Descriptor): Promise<IngestedBlob | undefined>;
}

function sizeCap(size: number, cap: number, what: string): void {
  if (size > cap) throw resourceExhausted(`${what} is ${size} bytes, more than the limit of ${cap}`);
}

/**
 * A tar archive, read in one pass: every regular file is stored as it streams by (blobs under
 * `blobs/` verified against the digest their name claims), links are recorded, metadata files
 * buffered. Layout decisions are made afterwards, from the recorded paths.
 */
class TarArchive implements ArchiveReader {
  private readonly files = new Map<string, IngestedBlob>();
  private readonly links = new Map<string, string>();
  private readonly meta = new Map<string, Uint8Array>();

  constructor(
    private readonly store: ContentStore,
    private readonly maxJson: number,
  ) {}

  async read(source: Readable | AsyncIterable<Uint8Array>): Promise<void> {
    const extract = tarExtract();
    const input = Readable.from(await maybeGunzip(source), { objectMode: false });
    input.on("error", (err) => extract.destroy(err));
    input.pipe(extract as unknown as NodeJS.WritableStream);
    try {
      for await (const entry of extract) {
        await this.entry(entry.header, entry as AsyncIterable<Uint8Array>);
      }
    } catch (err) {
      input.destroy();
      extract.destroy();
      throw err;
    }
  }

  private async entry(
    header: { name: string; type: string; size: number; linkname: string },
    body: AsyncIterable<Uint8Array>,
  ): Promise<void> {
    const what = `archive entry ${JSON.stringify(header.name)}`;
    const name = cleanArchivePath(header.name, "archive");
    const inBlobs = name === "blobs" || name.startsWith("blobs/");
    switch (header.type) {
      case "directory":
        break;
      case "file":
      case "contiguous-file":
        if (metadataFiles.has(name)) {
          if (this.meta.has(name)) throw invalidArgument(`archive has more than one ${name}`);
          sizeCap(header.size, this.maxJson, name);
          const chunks: Uint8Array[] = [];
          for await (const chunk of body) chunks.push(chunk);
          this.meta.set(name, Buffer.concat(chunks));
          return;
        }
        if (inBlobs) {
          const digest = digestFromBlobPath(name, "archive");
          this.files.set(
            name,
            await ingestBlob(this.store, body, { expected: { digest, size: header.size }, what }),
          );
          return;
        }
        this.files.set(name, await ingestBlob(this.store, body, { what }));
        return;
      case "symlink":
      case "link": {
        // Links inside blobs/ could alias one digest's name to another's content.
        if (inBlobs) throw invalidArgument(`${what}: links are not allowed under blobs/`);
        const target =
          header.type === "symlink"
            ? resolveLinkTarget(name, header.linkname, what)
            : cleanArchivePath(header.linkname, `${what} link target`);
        if (target === "blobs" || target.startsWith("blobs/")) {
          throw invalidArgument(`${what}: links into blobs/ are not allowed`);
        }
        this.links.set(name, target);
        break;
      }
      default:
        throw invalidArgument(`${what}: entries of type ${header.type} are not allowed in an image archive`);
    }
    for await (const _ of body) {
      // Links and directories have no body; draining keeps the tar stream moving regardless.
    }
  }

  async metadata(name: string): Promise<Uint8Array | undefined> {
    return this.meta.get(name);
  }

  async blob(path: string, expected?: Descriptor): Promise<IngestedBlob | undefined> {
    let p = path;
    for (let hop = 0; hop <= maxLinkHops; hop++) {
      const file = this.files.get(p);
      if (file !== undefined) {
        if (expected !== undefined && (file.digest !== expected.digest || file.size !== expected.size)) {
          throw invalidArgument(`archive file ${path} is ${file.digest}, expected ${expected.digest}`);
        }
        return file;
      }
      const next = this.links.get(p);
      if (next === undefined) return undefined;
      p = next;
    }
    throw invalidArgument(`archive: more than ${maxLinkHops} links from ${path}`);
  }
}

/** Sniffs the first bytes: gzip is decompressed transparently, zstd is refused (Node 20 lacks it). */
async function maybeGunzip(source: Readable | AsyncIterable<Uint8Array>): Promise<AsyncIterable<Uint8Array>> {
  const iterator = source[Symbol.asyncIterator]();
  const first = await iterator.next();
  const rest: AsyncIterable<Uint8Array> = {
    [Symbol.asyncIterator]: () => iterator as AsyncIterator<Uint8Array>,
  };
  async function* all(): AsyncGenerator<Uint8Array> {
    if (!first.done) yield first.value as Uint8Array;
    yield* rest;
  }
  const head = first.done ? new Uint8Array(0) : (first.value as Uint8Array);
  if (head[0] === 0x1f && head[1] === 0x8b) return Readable.from(all()).pipe(createGunzip());
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) {
    throw notImplemented("zstd-compressed image archives are not supported; decompress the archive first");
  }
  return all();
}

/**
 * An archive unpacked in a directory (an OCI layout, or an extracted `docker save`). Files are
 * stored when first needed. Symlinks are refused under `blobs/` and elsewhere must resolve inside
 * the directory.
 */
class DirArchive implements ArchiveReader {
  private readonly cache = new Map<string, IngestedBlob>();

  constructor(
    private readonly store: ContentStore,
    private readonly root: string,
    private readonly maxJson: number,
  ) {}

  async metadata(name: string): Promise<Uint8Array | undefined> {
    const path = join(this.root, name);
    let st: Awaited<ReturnType<typeof lstat>>;
    try {
      st = await lstat(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    if (!st.isFile()) throw invalidArgument(`${path} is not a regular file`);
    sizeCap(st.size, this.maxJson, path);
    return readFile(path);
  }

  async blob(path: string, expected?: Descriptor): Promise<IngestedBlob | undefined> {
    const cached = this.cache.get(path);
    if (cached !== undefined) return cached;
    const inBlobs = path.startsWith("blobs/");
    const root = await realpath(this.root);
    let full: string;
    try {
      // Resolve symlinks (docker archives use them between layers) and make sure the result, or
      // for blobs/ the directory holding the blob, stays inside the layout.
      full = inBlobs
        ? join(await realpath(dirname(join(root, path))), basename(path))
        : await realpath(join(root, path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    if (!full.startsWith(root + sep))
      throw invalidArgument(`archive file ${path} resolves outside ${this.root}`);
    let handle: Awaited<ReturnType<typeof open>>;
    try {
      // O_NOFOLLOW: a symlink planted under blobs/ must not make berth read an arbitrary file.
      handle = await open(full, constants.O_RDONLY | (inBlobs ? constants.O_NOFOLLOW : 0));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return undefined;
      if (code === "ELOOP")
        throw invalidArgument(`archive file ${path} is a symlink; not allowed under blobs/`);
      throw err;
    }
    try {
      const st = await handle.stat();
      if (!st.isFile()) throw invalidArgument(`archive file ${path} is not a regular file`);
      const stream = handle.createReadStream({ autoClose: false }) as AsyncIterable<Uint8Array>;
      const digest = inBlobs ? digestFromBlobPath(path, "archive") : undefined;
      const result = await ingestBlob(this.store, stream, {
        what: `archive file ${path}`,
        ...(digest === undefined ? {} : { expected: { digest, size: st.size } }),
      });
      if (expected !== undefined && (result.digest !== expected.digest || result.size !== expected.size)) {
        throw invalidArgument(`archive file ${path} is ${result.digest}, expected ${expected.digest}`);
      }
      this.cache.set(path, result);
      return result;
    } finally {
      await handle.close();
    }
  }
}

function parseJsonFile(bytes: Uint8Array, name: string): unknown {
  try {
    return JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw invalidArgument(`${name}: not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

function normalizeName(raw: string, what: string): string {
  try {
    return parseReference(raw).toString();
  } catch (err) {
    throw invalidArgument(`${what}: image name ${JSON.stringify(raw)} is not a valid reference`, {
      cause: err,
    });
  }
}

/** Walks the OCI layout's images: stores what a directory holds, checks presence, sets GC labels. */
class OciImporter {
  private readonly done = new Set<string>();

  constructor(
    private readonly store: ContentStore,
    private readonly reader: ArchiveReader,
    private readonly matcher: PlatformMatcher,
    private readonly maxJson: number,
  ) {}

  async ensure(desc: Descriptor, depth: number): Promise<void> {
    if (this.done.has(desc.digest)) return;
    if (depth > 16) throw invalidArgument(`archive: indexes nested deeper than 16 at ${desc.digest}`);
    const present = await this.reader.blob(blobPath(desc.digest), desc);
    if (present === undefined) {
      try {
        await this.store.info(desc.digest);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        // Registries need not serve non-distributable layers, so layouts often lack them.
        if (isNonDistributableMediaType(desc.mediaType)) return;
        throw notFound(
          `archive: blob ${desc.digest} (${desc.mediaType}) is neither in the archive nor in the content store`,
        );
      }
    }
    this.done.add(desc.digest);
    if (!isIndexMediaType(desc.mediaType) && !isManifestMediaType(desc.mediaType)) return;
    let kids = childrenOf(desc, await readJsonBlob(this.store, desc, this.maxJson));
    if (isIndexMediaType(desc.mediaType)) kids = filterPlatforms(kids, this.matcher);
    for (const child of kids) await this.ensure(child, depth + 1);
    await setLabels(this.store, desc.digest, gcChildLabels(desc, kids));
  }
}

async function importOci(
  store: ContentStore,
  reader: ArchiveReader,
  indexBytes: Uint8Array,
  options: ImportImagesOptions,
  matcher: PlatformMatcher,
  maxJson: number,
): Promise<ImportedImage[]> {
  const layout = await reader.metadata("oci-layout");
  if (layout !== undefined) {
    const parsed = parseJsonFile(layout, "oci-layout") as { imageLayoutVersion?: unknown } | null;
    if (parsed?.imageLayoutVersion !== "1.0.0") {
      throw invalidArgument(
        `oci-layout: unsupported imageLayoutVersion ${JSON.stringify(parsed?.imageLayoutVersion)} (want 1.0.0)`,
      );
    }
  }
  const index = parseIndex(indexBytes);
  const importer = new OciImporter(store, reader, matcher, maxJson);
  const images: ImportedImage[] = [];
  for (const [i, m] of index.manifests.entries()) {
    await importer.ensure(m, 0);
    const annotations = m.annotations ?? {};
    const full = annotations[Annotations.ImageName];
    const ref = annotations[Annotations.RefName];
    let name: string | undefined;
    if (full !== undefined) name = normalizeName(full, `index.json manifest ${i}`);
    else if (ref !== undefined && isTag(ref)) {
      if (options.baseName !== undefined)
        name = normalizeName(`${options.baseName}:${ref}`, `index.json manifest ${i}`);
    } else if (ref !== undefined) name = normalizeName(ref, `index.json manifest ${i}`);
    if (name !== undefined) images.push({ name, target: m });
  }
  return images;
}

interface DockerManifestEntry {
  readonly Config: string;
  readonly RepoTags: readonly string[];
  readonly Layers: readonly string[];
}

function parseDockerManifest(bytes: Uint8Array): DockerManifestEntry[] {
  const value = parseJsonFile(bytes, "manifest.json");
  if (!Array.isArray(value)) throw invalidArgument("manifest.json: not a JSON array");
  return value.map((e: unknown, i) => {
    const entry = e as Record<string, unknown> | null;
    const what = `manifest.json entry ${i}`;
    if (typeof entry !== "object" || entry === null) throw invalidArgument(`${what}: not an object`);
    if (typeof entry.Config !== "string") throw invalidArgument(`${what}: "Config" must be a string`);
    const tags = entry.RepoTags ?? [];
    if (!Array.isArray(tags) || tags.some((t) => typeof t !== "string")) {
      throw invalidArgument(`${what}: "RepoTags" must be an array of strings`);
    }
    if (!Array.isArray(entry.Layers) || entry.Layers.some((l) => typeof l !== "string")) {
      throw invalidArgument(`${what}: "Layers" must be an array of strings`);
    }
    return { Config: entry.Config, RepoTags: tags as string[], Layers: entry.Layers as string[] };
  });
}

function layerMediaType(head: Uint8Array): string {
  if (head[0] === 0x1f && head[1] === 0x8b) return MediaType.DockerLayerGzip;
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd)
    return MediaType.DockerLayerZstd;
  return MediaType.DockerLayer;
}

/**
 * Turns `docker save` entries into Docker schema 2 manifests in the store. The manifest is
 * serialized exactly as containerd's importer does (compact JSON, fields in schemaVersion,
 * mediaType, config, layers order), so the same archive gives the same image digest in both.
 */
async function importDocker(
  store: ContentStore,
  reader: ArchiveReader,
  manifestBytes: Uint8Array,
): Promise<ImportedImage[]> {
  const images: ImportedImage[] = [];
  for (const [i, entry] of parseDockerManifest(manifestBytes).entries()) {
    const what = `manifest.json entry ${i}`;
    const configPath = cleanArchivePath(entry.Config, what);
    const configBlob = await reader.blob(configPath);
    if (configBlob === undefined) throw notFound(`${what}: config ${configPath} is not in the archive`);
    const configDesc: Descriptor = {
      mediaType: MediaType.DockerConfig,
      digest: configBlob.digest,
      size: configBlob.size,
    };
    const config = parseConfig(await readJsonBlob(store, configDesc, MaxConfigSize));
    if (config.rootfs.diff_ids.length !== entry.Layers.length) {
      throw invalidArgument(
        `${what}: ${entry.Layers.length} layers, but the config lists ${config.rootfs.diff_ids.length} diff IDs`,
      );
    }
    const layers: Descriptor[] = [];
    for (const layer of entry.Layers) {
      const path = cleanArchivePath(layer, what);
      const blob = await reader.blob(path);
      if (blob === undefined) throw notFound(`${what}: layer ${path} is not in the archive`);
      const head = blob.head.length > 0 ? blob.head : await readHead(store, blob.digest);
      layers.push({ mediaType: layerMediaType(head), digest: blob.digest, size: blob.size });
    }
    const manifest = { schemaVersion: 2, mediaType: MediaType.DockerManifest, config: configDesc, layers };
    const children = [configDesc, ...layers];
    const bytes = Buffer.from(JSON.stringify(manifest));
    const stored = await storeBytes(
      store,
      bytes,
      `${what}: generated manifest`,
      gcChildLabels({ mediaType: MediaType.DockerManifest, digest: "", size: 0 }, children),
    );
    const platform: { os: string; architecture: string; variant?: string } = {
      os: config.os,
      architecture: config.architecture,
    };
    if (config.variant !== undefined) platform.variant = config.variant;
    const target: Descriptor = {
      mediaType: MediaType.DockerManifest,
      digest: stored.digest,
      size: stored.size,
      platform: platform as Platform,
    };
    for (const tag of entry.RepoTags) images.push({ name: normalizeName(tag, what), target });
  }
  return images;
}

async function readHead(store: ContentStore, digest: string): Promise<Uint8Array> {
  const reader = await store.readerAt(digest);
  try {
    const head = new Uint8Array(8);
    const n = await reader.readAt(head, 0);
    return head.subarray(0, n);
  } finally {
    await reader.close();
  }
}

/**
 * Imports images from an OCI image layout or a `docker save` archive (both the legacy
 * `<id>/layer.tar` form and newer ones), given as a tar stream (gzip-compressed or not) or as a
 * directory. Every blob is stored through the store's writer API and verified against its digest
 * while it streams (`data-loss` on a mismatch; nothing is committed under a wrong digest); content
 * already in the store is kept. Manifests and indexes get containerd's GC labels for their
 * children (for indexes, the children on the selected platforms).
 *
 * OCI layouts (index.json present) are named from `io.containerd.image.name`, else from
 * `org.opencontainers.image.ref.name` (a bare tag is combined with `options.baseName`); docker
 * archives from `RepoTags`, with a Docker schema 2 manifest generated for each entry. Entries
 * without a name are stored but not returned. Names are normalized (`busybox:1` →
 * `docker.io/library/busybox:1`).
 *
 * Hostile archives are refused with `invalid-argument`: absolute paths or `..`, links under or
 * into `blobs/`, blob names that are not digests, device or FIFO entries, duplicate metadata
 * files; `resource-exhausted` for index.json, manifest.json or manifests larger than
 * `maxJsonSize`. `not-found` when a referenced blob is neither in the archive nor the store,
 * `not-implemented` for zstd-compressed archives.
 */
export async function importImages(
  store: ContentStore,
  source: ImportSource,
  options: ImportImagesOptions = {},
): Promise<ImportedImage[]> {
  const maxJson = options.maxJsonSize ?? MaxManifestSize;
  const matcher = options.allPlatforms ? allPlatforms : (options.platform ?? platformMatcher());
  let reader: ArchiveReader;
  if ("dir" in source && typeof source.dir === "string") {
    reader = new DirArchive(store, source.dir, maxJson);
  } else {
    const tar = new TarArchive(store, maxJson);
    await tar.read(source as Readable | AsyncIterable<Uint8Array>);
    reader = tar;
  }
  const index = await reader.metadata("index.json");
  if (index !== undefined) return importOci(store, reader, index, options, matcher, maxJson);
  const manifest = await reader.metadata("manifest.json");
  if (manifest !== undefined) return importDocker(store, reader, manifest);
  throw invalidArgument(
    "archive is neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
  );
}
