/**
 * Native (vfs) snapshotter: full copies with reflink where the filesystem supports it.
 *
 * @packageDocumentation
 */

export {};
