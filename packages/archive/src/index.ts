/**
 * Tar apply and diff for OCI layers: gzip/zstd, whiteouts, opaque dirs, ownership, xattrs, devices, path safety.
 *
 * @packageDocumentation
 */

export type { ApplyOptions, ApplyResult } from "./apply.js";
export { applyLayer, LayerCompression, WhiteoutMode } from "./apply.js";
export type { CompressOptions, DecompressOptions, GzipEngine } from "./compression.js";
export {
  Compression,
  compressionOfMediaType,
  compressStream,
  decompressStream,
  detectCompression,
} from "./compression.js";
export type { DiffOptions, DiffResult, DiffSide, WriteDiffOptions, WriteDiffResult } from "./diff.js";
export { diffDirectories, diffOverlayUpper, writeDiff } from "./diff.js";
export { cleanLayerPath, resolveInRoot } from "./path-safety.js";
export type { WhiteoutKind } from "./whiteout.js";
export { classifyWhiteout, Whiteout } from "./whiteout.js";
