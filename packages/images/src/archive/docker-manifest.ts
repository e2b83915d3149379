import type { ContentStore, Descriptor } from "@berth/content";
import { isIndexMediaType, isManifestMediaType } from "../media-types.js";
import { parseIndex, parseManifest } from "../parse.js";
import type { PlatformMatcher } from "../platforms.js";
import { familiarString, parseReference } from "../reference.js";
import { filterPlatforms, readJsonBlob } from "../walk.js";
import { blobPath } from "./paths.js";

/**
 * One entry of Docker's `manifest.json`, the file `docker save` writes and `docker load` reads:
 * the archive path of the image config, the names to tag the image with, and the archive paths of
 * its layers in manifest order. Field names and order are Docker's.
 * @internal
 */
export interface DockerManifestEntry {
  readonly Config: string;
  readonly RepoTags: readonly string[];
  readonly Layers: readonly string[];
}

/** An image name and the descriptor it points to (the shape of an export target). */
interface NamedTarget {
  readonly name: string;
  readonly target: Descriptor;
}

/**
 * The name `docker save` would put in `RepoTags` for the image name `name`, or undefined when
 * Docker would leave it out. Docker writes the familiar form (`docker.io/library/busybox:latest` →
 * `busybox:latest`, `docker.io/foo/bar:1` → `foo/bar:1`, other registries keep their host) and
 * skips every reference that carries a digest (`busybox@sha256:…`, `busybox:1@sha256:…`), because
 * `docker load` refuses to create a tag from one and would fail the whole load. Throws
 * `invalid-argument` when `name` is not a valid reference.
 * @internal
 */
export function dockerRepoTag(name: string): string | undefined {
  const ref = parseReference(name);
  if (ref.digest !== undefined) return undefined;
  // parseReference gives a reference without tag or digest the tag `latest`, as Docker's
  // TagNameOnly does, so the result is always name:tag.
  return familiarString(ref);
}

/**
 * The platform manifest an index stands for in `manifest.json`: among its children that are
 * image manifests and either match `matcher` or have no platform, the one `matcher` prefers
 * (children without a platform last, index order breaking ties). Undefined when none qualifies.
 */
async function platformManifest(
  store: ContentStore,
  index: Descriptor,
  matcher: PlatformMatcher,
): Promise<Descriptor | undefined> {
  const parsed = parseIndex(await readJsonBlob(store, index), index);
  // Nested indexes are passed over: Docker's format has no way to name one, and containerd, which
  // does not filter them, fails the whole export when one sorts first.
  return filterPlatforms(parsed.manifests, matcher).find((d) => isManifestMediaType(d.mediaType));
}

/**
 * Builds the Docker-compatible `manifest.json` of an export, the way containerd's archive
 * exporter (`ctr images export`) does, so that `docker load` can read the same archive as
 * `ctr import`:
 *
 * - An image whose target is a manifest gets an entry whatever its platform.
 * - An image whose target is an index is resolved to one platform manifest with `matcher` (the
 *   export's platform choice; containerd uses the strict host platform when none is given, also
 *   when every platform is exported). With several matching platforms the preferred one wins, so
 *   one index always gives at most one entry. An index with no matching manifest gets no entry
 *   (containerd fails the export instead; berth keeps the rest of the archive usable).
 * - Images that resolve to the same manifest share one entry, their tags merged in export order
 *   (containerd drops the tags gathered before an index resolves to an already-listed manifest).
 * - `RepoTags` are {@link dockerRepoTag}s, each listed once: containerd copies digest references
 *   verbatim, which makes `docker load` fail, so berth follows `docker save` there.
 * - `Config` and `Layers` are `blobs/<alg>/<hex>` paths of the blobs the OCI layout already holds:
 *   layers as stored (gzip, zstd or uncompressed), nothing written twice. Non-distributable
 *   layers are listed even when the export leaves their blobs out, as containerd does.
 *
 * Entries come in the order their first image was given (containerd's order is that of a Go map,
 * so undefined). Reads the indexes and manifests from `store`: errors as {@link readJsonBlob},
 * `invalid-argument` for malformed documents or names.
 * @internal
 */
export async function dockerManifest(
  store: ContentStore,
  images: readonly NamedTarget[],
  matcher: PlatformMatcher,
): Promise<DockerManifestEntry[]> {
  const entries = new Map<string, { manifest: Descriptor; tags: string[] }>();
  const resolved = new Map<string, Descriptor | undefined>();
  for (const image of images) {
    const target = image.target;
    let manifest: Descriptor | undefined;
    if (isManifestMediaType(target.mediaType)) manifest = target;
    else if (isIndexMediaType(target.mediaType)) {
      if (!resolved.has(target.digest)) {
        resolved.set(target.digest, await platformManifest(store, target, matcher));
      }
      manifest = resolved.get(target.digest);
    }
    if (manifest === undefined) continue;
    let entry = entries.get(manifest.digest);
    if (entry === undefined) {
      entry = { manifest, tags: [] };
      entries.set(manifest.digest, entry);
    }
    const tag = dockerRepoTag(image.name);
    if (tag !== undefined && !entry.tags.includes(tag)) entry.tags.push(tag);
  }
  const out: DockerManifestEntry[] = [];
  for (const { manifest, tags } of entries.values()) {
    const parsed = parseManifest(await readJsonBlob(store, manifest), manifest);
    out.push({
      Config: blobPath(parsed.config.digest),
      RepoTags: tags,
      Layers: parsed.layers.map((l) => blobPath(l.digest)),
    });
  }
  return out;
}
