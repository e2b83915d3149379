/**
 * overlayfs snapshotter: upper/work/lower directories, mounts returned as data.
 *
 * @packageDocumentation
 */

export {};
