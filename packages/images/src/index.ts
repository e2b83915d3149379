/**
 * The OCI and Docker image model: media types, references, descriptors, platforms, manifests,
 * walking images through a content store, and import/export of OCI layouts and `docker save`
 * archives.
 *
 * @packageDocumentation
 */

export type { Descriptor, Digest, Platform } from "@berth/content";
export type { ExportImagesOptions, ExportTarget } from "./archive/export.js";
export { exportImages } from "./archive/export.js";
export type { ImportedImage, ImportImagesOptions, ImportSource } from "./archive/import.js";
export { importImages } from "./archive/import.js";
export { chainIds } from "./chain-id.js";
export { validateDigest } from "./digest.js";
export { distributionSourceKey, distributionSourceLabel, gcChildLabels } from "./labels.js";
export type { KnownMediaType, LayerCompression } from "./media-types.js";
export {
  Annotations,
  isConfigMediaType,
  isIndexMediaType,
  isKnownMediaType,
  isLayerMediaType,
  isManifestMediaType,
  isNonDistributableMediaType,
  layerCompression,
  MediaType,
} from "./media-types.js";
export { parseConfig, parseImageDocument, parseIndex, parseManifest, validateDescriptor } from "./parse.js";
export type { PlatformMatcher } from "./platforms.js";
export {
  allPlatforms,
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  onlyPlatform,
  parsePlatform,
  platformMatcher,
} from "./platforms.js";
export type { Reference } from "./reference.js";
export {
  DefaultDomain,
  familiarName,
  familiarString,
  isTag,
  NameTotalLengthMax,
  parseReference,
} from "./reference.js";
export type {
  ImageConfig,
  ImageDocument,
  ImageHistory,
  ImageIndex,
  ImageManifest,
  ImageRunConfig,
} from "./types.js";
export type { ResolvedImage, WalkOptions } from "./walk.js";
export {
  children,
  childrenOf,
  filterPlatforms,
  imageSize,
  MaxConfigSize,
  MaxManifestSize,
  readJsonBlob,
  resolveImage,
  walkImage,
} from "./walk.js";
