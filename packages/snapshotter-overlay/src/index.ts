/**
 * The overlayfs snapshotter (containerd's `overlayfs`): snapshots are directories under one root,
 * active snapshots mount as overlays of their committed parents with an upper and a work
 * directory, and mounts are returned as data for `mountAll` of `@berth/sys`. Also the helpers
 * the diff fast path uses to find a snapshot's upper directory in its mounts.
 *
 * @packageDocumentation
 */

export { checkOverlaySupport, supportsDType } from "./check.js";
export { isOverlayUpperdirMount, overlayLowerdirs, upperdirOf } from "./mounts.js";
export type { OverlaySnapshotterOptions } from "./overlay-snapshotter.js";
export { createOverlaySnapshotter, UPPERDIR_LABEL } from "./overlay-snapshotter.js";
export { diskUsage } from "./usage.js";
