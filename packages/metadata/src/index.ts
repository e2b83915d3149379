/**
 * The namespaced metadata database (SQLite): namespaces, images, per-namespace content records and
 * labels, snapshot records, leases, and garbage collection over a shared content store. Modelled on containerd's
 * `metadata` package; see the README for the schema and the crash-safety argument.
 *
 * @packageDocumentation
 */

export type { NamespacedContentOptions } from "./content-store.js";
export { namespacedContentStore } from "./content-store.js";
export type { GcOptions, GcResult } from "./gc.js";
export { collectGarbage } from "./gc.js";
export { openMetadata } from "./open-metadata.js";
export type {
  GcSnapshotter,
  ImageDeleteOptions,
  ImageInput,
  ImageRecord,
  ImageStore,
  Labels,
  Lease,
  LeaseManager,
  LeaseOptions,
  LeaseResource,
  LeaseResourceType,
  Metadata,
  NamespaceInfo,
  NamespaceStore,
  OpenMetadataOptions,
  SnapshotAllocation,
  SnapshotRecord,
  SnapshotRecordInput,
  SnapshotRecordKind,
  SnapshotRecordStore,
  SnapshotWriteOptions,
  WithLeaseOptions,
} from "./types.js";
export { validateNamespace } from "./validate.js";
