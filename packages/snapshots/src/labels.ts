/**
 * Snapshot label keys and the label rules shared with containerd, declared once.
 */
export const SnapshotLabels = {
  /**
   * Labels under this prefix are inherited: the backend snapshotter sees them, and a commit
   * carries them from the active snapshot to the committed one (containerd's
   * `snapshots.FilterInheritedLabels`).
   */
  InheritedPrefix: "containerd.io/snapshot/",
  /** The chain ID an unpacked layer was committed under. */
  UncompressedRef: "containerd.io/snapshot.ref",
  /** Marks a snapshot as a garbage-collection root. */
  GcRoot: "containerd.io/gc.root",
} as const;

/** Keeps only the labels a backend snapshotter should see (those under the inherited prefix). */
export function filterInheritedLabels(
  labels: Readonly<Record<string, string>> | undefined,
): Record<string, string> | undefined {
  if (labels === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(labels)) {
    if (key.startsWith(SnapshotLabels.InheritedPrefix)) out[key] = value;
  }
  return out;
}
