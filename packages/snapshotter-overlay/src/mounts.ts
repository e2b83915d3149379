import type { Mount } from "@berth/snapshots";
import { MountFlag, parseMountOptions } from "@berth/sys";

function optionValue(m: Mount, key: string): string | undefined {
  const prefix = `${key}=`;
  let value: string | undefined;
  // The last occurrence wins, as in the kernel's option parser.
  for (const option of m.options) if (option.startsWith(prefix)) value = option.slice(prefix.length);
  return value;
}

/**
 * Whether `m` is an overlay mount with a writable upper layer (an `upperdir=` option): the mount
 * of an active overlay snapshot that has a parent. Views and bind mounts are not.
 */
export function isOverlayUpperdirMount(m: Mount): boolean {
  return m.type === "overlay" && optionValue(m, "upperdir") !== undefined;
}

/**
 * The lower layers of an overlay mount, nearest (topmost) first, as given in `lowerdir=` (the
 * option the snapshotter writes; `lowerdir+` is only used inside `@berth/sys` at mount time).
 * Undefined for other mount types or an overlay without `lowerdir=`.
 */
export function overlayLowerdirs(m: Mount): string[] | undefined {
  if (m.type !== "overlay") return undefined;
  const value = optionValue(m, "lowerdir");
  return value === undefined ? undefined : value.split(":");
}

function layersOf(mounts: readonly Mount[]): string[] | undefined {
  if (mounts.length === 0) return [];
  if (mounts.length !== 1) return undefined;
  const m = mounts[0] as Mount;
  if (m.type === "bind" || m.type === "rbind") return [m.source];
  const lowers = overlayLowerdirs(m);
  if (lowers === undefined) return undefined;
  const upper = optionValue(m, "upperdir");
  return upper === undefined ? lowers : [upper, ...lowers];
}

/**
 * The directory that holds exactly the changes of a snapshot relative to its parent, read from
 * the snapshot's mounts, for the diff fast path (walk the upperdir instead of comparing two
 * trees): the `upperdir=` of a single overlay mount.
 *
 * With `parent` (the mounts of the parent snapshot, e.g. from a view of it; `[]` for none) the
 * answer is checked against it: the upper's lower layers must be exactly the parent's layers,
 * else undefined. With `parent` given as `[]`, a single read-write bind mount also qualifies: a
 * snapshot without a parent is its own diff whatever the snapshotter.
 *
 * Undefined when the mounts are not of that shape; callers then fall back to a full double walk.
 * Never throws.
 */
export function upperdirOf(mounts: readonly Mount[], parent?: readonly Mount[]): string | undefined {
  if (mounts.length !== 1) return undefined;
  const m = mounts[0] as Mount;
  if (parent !== undefined && parent.length === 0 && (m.type === "bind" || m.type === "rbind")) {
    return (parseMountOptions(m.options).flags & MountFlag.RDONLY) !== 0 ? undefined : m.source;
  }
  if (!isOverlayUpperdirMount(m)) return undefined;
  const upper = optionValue(m, "upperdir");
  if (parent === undefined) return upper;
  const expected = layersOf(parent);
  const lowers = overlayLowerdirs(m) ?? [];
  if (expected === undefined || expected.length !== lowers.length) return undefined;
  return expected.every((dir, i) => dir === lowers[i]) ? upper : undefined;
}
