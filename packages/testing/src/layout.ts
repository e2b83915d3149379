import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Media types the fixtures use, declared once. */
export const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
} as const;

/** The annotation that names a tag in an OCI layout's `index.json` (image-spec `annotations.md`). */
export const REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name";

/** An OCI platform as written into index entries and configs. */
export interface FixturePlatform {
  readonly architecture: string;
  readonly os: string;
  readonly variant?: string;
}

/** An OCI descriptor as the fixtures write it. @internal */
export interface LayoutDescriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: FixturePlatform;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** `sha256:<hex>` of `bytes`. */
export function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Writes one OCI image layout (image-spec `image-layout.md`): blobs under `blobs/sha256/`, then
 * `oci-layout` and `index.json` in {@link LayoutWriter.finish}. JSON is serialized compactly in the
 * insertion order of its keys, so the same input always gives the same digest.
 *
 * @internal
 */
export class LayoutWriter {
  readonly #dir: string;
  readonly #blobs = new Set<string>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Every digest written so far, sorted. */
  get blobs(): string[] {
    return [...this.#blobs].sort();
  }

  /** Stores `bytes` as a blob and returns its descriptor. */
  async blob(bytes: Buffer, mediaType: string): Promise<LayoutDescriptor> {
    const digest = sha256(bytes);
    if (!this.#blobs.has(digest)) {
      const dir = join(this.#dir, "blobs", "sha256");
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, digest.slice("sha256:".length)), bytes);
      this.#blobs.add(digest);
    }
    return { mediaType, digest, size: bytes.length };
  }

  /** Stores `value` as compact JSON and returns its descriptor. */
  json(value: unknown, mediaType: string): Promise<LayoutDescriptor> {
    return this.blob(Buffer.from(JSON.stringify(value)), mediaType);
  }

  /** Writes `oci-layout` and an `index.json` listing `manifest` under the tag `tag`. */
  async finish(manifest: LayoutDescriptor, tag: string): Promise<void> {
    await writeFile(join(this.#dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [{ ...manifest, annotations: { [REF_NAME_ANNOTATION]: tag } }],
    };
    await writeFile(join(this.#dir, "index.json"), JSON.stringify(index));
  }
}
