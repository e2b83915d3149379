import { createHash } from "node:crypto";
import type { ContentStore, Descriptor, Platform } from "@berth/content";
import { digestAlgorithm } from "@berth/content";
import { dataLoss, failedPrecondition, invalidArgument, notFound, resourceExhausted } from "@berth/errdefs";
import { isConfigMediaType, isIndexMediaType, isManifestMediaType } from "./media-types.js";
import { parseConfig, parseIndex, parseManifest } from "./parse.js";
import { allPlatforms, type PlatformMatcher, platformMatcher } from "./platforms.js";
import type { ImageConfig, ImageDocument, ImageManifest } from "./types.js";

/** Largest index or manifest berth reads by default (4 MiB, the limit registries apply too). */
export const MaxManifestSize = 4 << 20;
/** Largest image config berth reads by default (16 MiB; long histories make configs big). */
export const MaxConfigSize = 16 << 20;
/** Deepest nesting of indexes berth follows, so a cycle of indexes cannot loop forever. */
const maxDepth = 16;

/**
 * Reads a whole blob that is to be parsed as JSON (index, manifest, config) and verifies its size
 * and digest against `desc`. Descriptors with embedded `data` are served from it. Throws
 * `resource-exhausted` when `desc.size` exceeds `maxSize`, `not-found` when the store lacks the
 * blob, `data-loss` when what the store returns does not match the descriptor.
 */
export async function readJsonBlob(
  store: ContentStore,
  desc: Descriptor,
  maxSize = MaxManifestSize,
): Promise<Uint8Array> {
  if (desc.size > maxSize) {
    throw resourceExhausted(
      `${desc.mediaType} ${desc.digest}: size ${desc.size} exceeds the limit of ${maxSize} bytes`,
    );
  }
  let bytes: Uint8Array;
  if (desc.data !== undefined) {
    bytes = Buffer.from(desc.data, "base64");
  } else {
    const reader = await store.readerAt(desc.digest);
    try {
      if (reader.size !== desc.size) {
        throw dataLoss(
          `${desc.mediaType} ${desc.digest}: stored size ${reader.size} does not match descriptor size ${desc.size}`,
        );
      }
      bytes = new Uint8Array(desc.size);
      let offset = 0;
      while (offset < bytes.length) {
        const n = await reader.readAt(bytes.subarray(offset), offset);
        if (n === 0) break;
        offset += n;
      }
      if (offset !== desc.size) {
        throw dataLoss(
          `${desc.mediaType} ${desc.digest}: read ${offset} bytes, descriptor says ${desc.size}`,
        );
      }
    } finally {
      await reader.close();
    }
  }
  const algorithm = digestAlgorithm(desc.digest);
  const actual = `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
  if (actual !== desc.digest)
    throw dataLoss(`${desc.mediaType} ${desc.digest}: content has digest ${actual}`);
  return bytes;
}

/**
 * The direct children of an index or manifest: an index's `manifests` (unfiltered; see
 * {@link filterPlatforms}); a manifest's config followed by its layers. Given a descriptor and the
 * blob's bytes, the bytes are parsed according to `desc.mediaType` (throwing `invalid-argument`
 * when they do not parse), and any other media type (config, layer, unknown) has no children.
 * Given an already parsed {@link ImageDocument}, its descriptors are returned directly.
 */
export function childrenOf(desc: Descriptor, bytes: Uint8Array): Descriptor[];
export function childrenOf(doc: ImageDocument): Descriptor[];
export function childrenOf(descOrDoc: Descriptor | ImageDocument, bytes?: Uint8Array): Descriptor[] {
  if ("kind" in descOrDoc) {
    return descOrDoc.kind === "index" ? [...descOrDoc.manifests] : [descOrDoc.config, ...descOrDoc.layers];
  }
  const desc = descOrDoc;
  if (bytes === undefined) throw invalidArgument(`childrenOf ${desc.digest}: the blob's bytes are required`);
  if (isIndexMediaType(desc.mediaType)) return [...parseIndex(bytes, desc).manifests];
  if (isManifestMediaType(desc.mediaType)) {
    const manifest = parseManifest(bytes, desc);
    return [manifest.config, ...manifest.layers];
  }
  return [];
}

/**
 * Reads `desc` from the store when it is an index or manifest and returns its children (see
 * {@link childrenOf}); other media types return `[]` without touching the store. Errors as
 * {@link readJsonBlob}.
 */
export async function children(store: ContentStore, desc: Descriptor): Promise<Descriptor[]> {
  if (!isIndexMediaType(desc.mediaType) && !isManifestMediaType(desc.mediaType)) return [];
  return childrenOf(desc, await readJsonBlob(store, desc));
}

function isImageDocument(desc: Descriptor): boolean {
  return isIndexMediaType(desc.mediaType) || isManifestMediaType(desc.mediaType);
}

/**
 * Filters an index's children by platform, containerd's `FilterPlatforms` + `LimitManifests`
 * ordering: manifests and indexes with a platform are kept when `matcher` matches it; those
 * without a platform and every non-manifest child are kept. Kept entries are stably sorted best
 * first by `matcher.less`, entries without a platform last. `limit` (default unlimited) keeps
 * only that many manifests with a platform.
 */
export function filterPlatforms(
  descs: readonly Descriptor[],
  matcher: PlatformMatcher,
  limit?: number,
): Descriptor[] {
  const kept = descs.filter(
    (d) => !isImageDocument(d) || d.platform === undefined || matcher.match(d.platform),
  );
  const sorted = kept
    .map((d, i) => ({ d, i }))
    .sort((x, y) => {
      const a = x.d.platform;
      const b = y.d.platform;
      if (a !== undefined && b !== undefined) {
        if (matcher.less(a, b)) return -1;
        if (matcher.less(b, a)) return 1;
      } else if (a !== undefined) return -1;
      else if (b !== undefined) return 1;
      return x.i - y.i;
    })
    .map(({ d }) => d);
  if (limit === undefined) return sorted;
  let count = 0;
  return sorted.filter((d) => d.platform === undefined || !isImageDocument(d) || count++ < limit);
}

/** Options of {@link walkImage}. */
export interface WalkOptions {
  /** Keep at most this many platform manifests per index (containerd's `LimitManifests`). */
  readonly limitManifests?: number;
}

/**
 * Visits `target` and everything reachable from it, parents before children, each digest once.
 * Index children are filtered and ordered by `matcher` ({@link filterPlatforms}). `visit` may be
 * async (its promise is awaited); returning `false` skips the descriptor's children. Only indexes
 * and manifests are read, so layers need not be in the store. Errors as {@link readJsonBlob},
 * plus `failed-precondition` for indexes nested deeper than 16.
 */
export async function walkImage(
  store: ContentStore,
  target: Descriptor,
  visit: (desc: Descriptor) => unknown,
  matcher: PlatformMatcher = platformMatcher(),
  options: WalkOptions = {},
): Promise<void> {
  const seen = new Set<string>();
  const step = async (desc: Descriptor, depth: number): Promise<void> => {
    if (seen.has(desc.digest)) return;
    seen.add(desc.digest);
    if (depth > maxDepth)
      throw failedPrecondition(`image ${target.digest}: indexes nested deeper than ${maxDepth}`);
    if ((await visit(desc)) === false) return;
    let kids = await children(store, desc);
    if (isIndexMediaType(desc.mediaType)) kids = filterPlatforms(kids, matcher, options.limitManifests);
    for (const child of kids) await step(child, depth + 1);
  };
  await step(target, 0);
}

/**
 * The bytes needed to run `target` on the platform `matcher` selects: the target, the best
 * matching manifest of each index, its config and layers, each digest counted once. With
 * {@link allPlatforms} every manifest counts.
 * Errors as {@link walkImage}.
 */
export async function imageSize(
  store: ContentStore,
  target: Descriptor,
  matcher: PlatformMatcher = platformMatcher(),
): Promise<number> {
  let size = 0;
  const limit = matcher === allPlatforms ? undefined : 1;
  await walkImage(
    store,
    target,
    (desc) => {
      size += desc.size;
    },
    matcher,
    limit === undefined ? {} : { limitManifests: limit },
  );
  return size;
}

/** What {@link resolveImage} finds for one platform. */
export interface ResolvedImage {
  readonly manifestDesc: Descriptor;
  readonly manifest: ImageManifest;
  readonly configDesc: Descriptor;
  readonly config: ImageConfig;
}

function configPlatform(config: ImageConfig): Platform {
  const p: { os: string; architecture: string; variant?: string; "os.version"?: string } = {
    os: config.os,
    architecture: config.architecture,
  };
  if (config.variant !== undefined) p.variant = config.variant;
  if (config["os.version"] !== undefined) p["os.version"] = config["os.version"];
  return p;
}

/**
 * Finds the manifest of `target` for the platform `matcher` prefers (containerd's
 * `images.Manifest`): through indexes (best match first), or `target` itself when it is a
 * manifest; a manifest without a platform in its descriptor is checked against its config's
 * platform. Returns the manifest and the parsed config. Throws `not-found` ("no manifest for
 * platform linux/arm64 in sha256:…") when nothing matches or `target` is a manifest of an artifact
 * (its config is not an image config), `invalid-argument` when `target` is neither an index nor a
 * manifest or a document is malformed, and the errors of
 * {@link readJsonBlob}.
 */
export async function resolveImage(
  store: ContentStore,
  target: Descriptor,
  matcher: PlatformMatcher = platformMatcher(),
): Promise<ResolvedImage> {
  const visit = async (desc: Descriptor, depth: number): Promise<ResolvedImage | undefined> => {
    if (depth > maxDepth)
      throw failedPrecondition(`image ${target.digest}: indexes nested deeper than ${maxDepth}`);
    if (isManifestMediaType(desc.mediaType)) {
      if (desc.platform !== undefined && !matcher.match(desc.platform)) return undefined;
      const manifest = parseManifest(await readJsonBlob(store, desc), desc);
      if (!isConfigMediaType(manifest.config.mediaType)) {
        // An artifact (signature, SBOM, attestation) rather than a runnable image.
        if (depth > 0) return undefined;
        throw notFound(
          `manifest ${desc.digest} is not an image: config media type ${manifest.config.mediaType}`,
        );
      }
      const config = parseConfig(await readJsonBlob(store, manifest.config, MaxConfigSize));
      if (desc.platform === undefined && !matcher.match(configPlatform(config))) return undefined;
      return { manifestDesc: desc, manifest, configDesc: manifest.config, config };
    }
    if (isIndexMediaType(desc.mediaType)) {
      const index = parseIndex(await readJsonBlob(store, desc), desc);
      for (const child of filterPlatforms(index.manifests, matcher)) {
        if (!isImageDocument(child)) continue;
        const found = await visit(child, depth + 1);
        if (found !== undefined) return found;
      }
      return undefined;
    }
    if (depth > 0) return undefined;
    throw invalidArgument(
      `${target.digest} has media type ${target.mediaType}, which is not an image index or manifest`,
    );
  };
  const found = await visit(target, 0);
  if (found === undefined) {
    throw notFound(`no manifest for platform ${matcher.description ?? "requested"} in ${target.digest}`);
  }
  return found;
}
