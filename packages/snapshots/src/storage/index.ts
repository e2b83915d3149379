/**
 * The metadata store for snapshotter implementations (containerd's `snapshots/storage`): keys,
 * kinds, parents, labels, usage and directory ids of snapshots in one SQLite file per snapshotter
 * root. Import it from `@berth/snapshots/storage`.
 *
 * @packageDocumentation
 */

export type { MetaStore, MetaStoreOptions, MetaTx, NewSnapshotKind, SnapshotRecord } from "./meta-store.js";
export { openMetaStore } from "./meta-store.js";
