/**
 * The native snapshotter (containerd's `native`, Docker's `vfs`): every snapshot is a full copy
 * of its parent that keeps owners, modes, times, xattrs, hardlinks, symlinks and device nodes,
 * with reflinks where the filesystem supports them.
 *
 * @packageDocumentation
 */

export type { CopyStats } from "./copy-tree.js";
export { copyTree } from "./copy-tree.js";
export { diskUsage } from "./disk-usage.js";
export type { NativeSnapshotterOptions } from "./native-snapshotter.js";
export { createNativeSnapshotter } from "./native-snapshotter.js";
