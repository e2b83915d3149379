/**
 * Test helpers of `@berth/archive`, for its own tests and for other packages' (unpack, diff, e2e):
 * a tree snapshot and comparison for checking an unpack against an oracle such as `umoci unpack`,
 * a tar encoder that writes whatever names it is given, and the hostile-layer corpus.
 *
 * @packageDocumentation
 */

export type { SnapshotTreeOptions, TreeEntry } from "./apply-tree-compare.js";
export { compareTrees, snapshotTree } from "./apply-tree-compare.js";
export type { HostileLayer } from "./hostile-layers.js";
export { hostileLayers, JAIL_SENTINEL, populateJail } from "./hostile-layers.js";
export type { TarWriteEntry } from "./tar-writer.js";
export { encodeTar } from "./tar-writer.js";
