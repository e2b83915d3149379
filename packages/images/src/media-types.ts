/**
 * Media types of the OCI image spec and of Docker's image manifest v2 schema 2, declared once.
 */
export const MediaType = {
  OciIndex: "application/vnd.oci.image.index.v1+json",
  OciManifest: "application/vnd.oci.image.manifest.v1+json",
  OciConfig: "application/vnd.oci.image.config.v1+json",
  OciLayer: "application/vnd.oci.image.layer.v1.tar",
  OciLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  OciLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  OciLayerNonDistributable: "application/vnd.oci.image.layer.nondistributable.v1.tar",
  OciLayerNonDistributableGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  OciLayerNonDistributableZstd: "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  OciEmpty: "application/vnd.oci.empty.v1+json",
  OciLayoutHeader: "application/vnd.oci.layout.header.v1+json",
  DockerManifestList: "application/vnd.docker.distribution.manifest.list.v2+json",
  DockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  DockerManifestSchema1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
  DockerConfig: "application/vnd.docker.container.image.v1+json",
  DockerLayer: "application/vnd.docker.image.rootfs.diff.tar",
  DockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  DockerLayerZstd: "application/vnd.docker.image.rootfs.diff.tar.zstd",
  DockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  InTotoJson: "application/vnd.in-toto+json",
} as const;

/** One of the string values of {@link MediaType}. */
export type KnownMediaType = (typeof MediaType)[keyof typeof MediaType];

const knownMediaTypes: ReadonlySet<string> = new Set(Object.values(MediaType));

/**
 * Strips media-type parameters (`; charset=utf-8`) and surrounding space, and lowercases, so that
 * a Content-Type header value can be compared with the constants.
 */
function bare(mediaType: string): string {
  const semicolon = mediaType.indexOf(";");
  return (semicolon === -1 ? mediaType : mediaType.slice(0, semicolon)).trim().toLowerCase();
}

/** True for an OCI image index or a Docker manifest list. */
export function isIndexMediaType(mediaType: string): boolean {
  const mt = bare(mediaType);
  return mt === MediaType.OciIndex || mt === MediaType.DockerManifestList;
}

/**
 * True for an OCI image manifest or a Docker schema 2 manifest. Docker schema 1 is not included:
 * berth does not read it.
 */
export function isManifestMediaType(mediaType: string): boolean {
  const mt = bare(mediaType);
  return mt === MediaType.OciManifest || mt === MediaType.DockerManifest;
}

/** True for an OCI or Docker image configuration. */
export function isConfigMediaType(mediaType: string): boolean {
  const mt = bare(mediaType);
  return mt === MediaType.OciConfig || mt === MediaType.DockerConfig;
}

const ociLayerPrefixes = [
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
];
const dockerLayerPrefixes = [
  "application/vnd.docker.image.rootfs.diff.tar",
  "application/vnd.docker.image.rootfs.foreign.diff.tar",
];

/** Splits a layer media type into its tar base and compression suffix, or undefined if not a layer. */
function splitLayer(mediaType: string): { base: string; suffix: string } | undefined {
  const mt = bare(mediaType);
  for (const base of ociLayerPrefixes) {
    // OCI spells compression as a structured-syntax suffix (+gzip, +zstd).
    if (mt === base || mt.startsWith(`${base}+`)) return { base, suffix: mt.slice(base.length + 1) };
  }
  for (const base of dockerLayerPrefixes) {
    // Docker spells it as a dotted extension (.gzip, .zstd).
    if (mt === base || mt.startsWith(`${base}.`)) return { base, suffix: mt.slice(base.length + 1) };
  }
  return undefined;
}

/**
 * True for a filesystem layer: OCI (plain, gzip, zstd, non-distributable) and Docker (plain, gzip,
 * zstd, foreign). Unknown compression suffixes still count as layers, so that {@link layerCompression}
 * can report them as unsupported rather than the layer being mistaken for something else.
 */
export function isLayerMediaType(mediaType: string): boolean {
  return splitLayer(mediaType) !== undefined;
}

/**
 * True for a layer that registries may refuse to serve or store (OCI non-distributable, Docker
 * foreign): export can skip them and import tolerates their absence.
 */
export function isNonDistributableMediaType(mediaType: string): boolean {
  const mt = bare(mediaType);
  return mt.includes(".nondistributable.") || mt.includes(".foreign.");
}

/** True when `mediaType` is one of the {@link MediaType} constants. */
export function isKnownMediaType(mediaType: string): mediaType is KnownMediaType {
  return knownMediaTypes.has(bare(mediaType));
}

/** The compression of a layer, as named by its media type. */
export type LayerCompression = "none" | "gzip" | "zstd";

/**
 * The compression a layer media type declares: `none`, `gzip` or `zstd`; `undefined` when
 * `mediaType` is not a layer or names a compression berth does not know (e.g. `+encrypted`).
 */
export function layerCompression(mediaType: string): LayerCompression | undefined {
  const split = splitLayer(mediaType);
  if (split === undefined) return undefined;
  switch (split.suffix) {
    case "":
      return "none";
    case "gzip":
      return "gzip";
    case "zstd":
      return "zstd";
    default:
      return undefined;
  }
}

/**
 * Annotation keys that name images inside OCI layouts, declared once.
 */
export const Annotations = {
  /** OCI: the reference (usually only the tag) of a manifest in an image layout's index.json. */
  RefName: "org.opencontainers.image.ref.name",
  /** containerd: the full image name, since the OCI tag alone does not say which repository. */
  ImageName: "io.containerd.image.name",
} as const;
