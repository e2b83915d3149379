/**
 * A content-addressable blob store: resumable ingest by ref, verified atomic commit, labels, walk
 * and delete. The conformance suite for any implementation is at `@berth/content/testsuite`.
 *
 * @packageDocumentation
 */

export type { ParsedDigest } from "./digest.js";
export { DigestAlgorithm, Digester, digestAlgorithm, digestOf, isDigest, parseDigest } from "./digest.js";
export type { FieldAdaptor, Filter, FilterSelector } from "./filters.js";
export { FilterOperator, labelField, matchFilters, parseFilter, parseFilters } from "./filters.js";
export type { BlobSource, CopyOptions, ReadBlobOptions, WriteBlobOptions } from "./helpers.js";
export { copyStream, readBlob, writeBlob } from "./helpers.js";
export { Labels } from "./labels.js";
export type { LocalContentStore, LocalContentStoreOptions } from "./local-store.js";
export { createLocalContentStore, infoFieldAdaptor, statusFieldAdaptor } from "./local-store.js";
export type {
  CommitOptions,
  ContentStore,
  ContentWriter,
  Descriptor,
  Digest,
  Info,
  Platform,
  ReaderAt,
  Status,
  WriterOptions,
} from "./types.js";
