/**
 * Label keys that berth shares with containerd, so that stores and garbage collection interoperate.
 * Declared once here; never repeat them as literals.
 */
export const Labels = {
  /** Marks an object as a garbage-collection root. */
  GcRoot: "containerd.io/gc.root",
  /** Prefix of labels naming content referenced by this object (`…content.m.0`, `…content.config`, `…content.l.3`). */
  GcRefContent: "containerd.io/gc.ref.content",
  /** Prefix of labels naming snapshots referenced by this object (`…snapshot.overlayfs`). */
  GcRefSnapshot: "containerd.io/gc.ref.snapshot",
  /** Expiry time (RFC 3339) of a lease or object. */
  GcExpire: "containerd.io/gc.expire",
  /** Set to mark an object for collection even if referenced. */
  GcFlat: "containerd.io/gc.flat",
  /** Prefix of labels recording a blob's source registry: `containerd.io/distribution.source.<host>` = `<repository>`. */
  DistributionSource: "containerd.io/distribution.source",
  /** The uncompressed digest (diffID) of a compressed layer. */
  Uncompressed: "containerd.io/uncompressed",
} as const;
