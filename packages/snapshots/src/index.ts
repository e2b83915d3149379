/**
 * The Snapshotter interface (containerd's `snapshots`), its kinds and labels. Implementations
 * live in their own packages (`@berth/snapshotter-overlay`, `@berth/snapshotter-native`); every
 * implementation runs the conformance suite at `@berth/snapshots/testsuite`.
 *
 * @packageDocumentation
 */

export { filterInheritedLabels, SnapshotLabels } from "./labels.js";
export type { NamespacedSnapshotterOptions } from "./namespaced.js";
export { namespacedSnapshotter } from "./namespaced.js";
export type { Info, Mount, SnapshotOptions, Snapshotter, Usage } from "./types.js";
export { Kind } from "./types.js";
