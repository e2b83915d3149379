import type { Mount } from "@berth/sys";

export type { Mount } from "@berth/sys";

/** The kinds of snapshot (containerd's `snapshots.Kind`). */
export const Kind = {
  /** A read-only snapshot whose mounts are handed out for reading (from {@link Snapshotter.view}). */
  View: "view",
  /** A writable snapshot (from {@link Snapshotter.prepare}); it can be committed. */
  Active: "active",
  /** An immutable snapshot (from {@link Snapshotter.commit}); it can be a parent. */
  Committed: "committed",
} as const;

/** One of the values of {@link Kind}. */
export type Kind = (typeof Kind)[keyof typeof Kind];

/** What a snapshotter records about one snapshot. */
export interface Info {
  readonly kind: Kind;
  /** The key (active and view) or name (committed). */
  readonly name: string;
  /** The name of the committed parent; absent for a base snapshot. */
  readonly parent?: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly created: Date;
  readonly updated: Date;
}

/** Disk usage of one snapshot's own layer (not its parents'). */
export interface Usage {
  readonly inodes: number;
  /** Bytes. */
  readonly size: number;
}

/** Options of {@link Snapshotter.prepare}, {@link Snapshotter.view} and {@link Snapshotter.commit}. */
export interface SnapshotOptions {
  readonly labels?: Readonly<Record<string, string>>;
}

/**
 * A snapshotter (containerd's `snapshots.Snapshotter`): it turns chains of committed layers into
 * mountable, copy-on-write directories. Implementations: overlay and native in this repository,
 * the namespaced view over the metadata database, gRPC proxies, and third-party ones. Every
 * implementation passes `@berth/snapshots/testsuite`.
 *
 * Errors: `not-found` for an unknown key or parent; `already-exists` for a taken key or name;
 * `failed-precondition` when removing a snapshot that has children, committing a view or a
 * committed snapshot, or using a non-committed snapshot as a parent; `invalid-argument` for an
 * empty key or a malformed label or filter.
 */
export interface Snapshotter {
  /** Info of the snapshot named `key`. */
  stat(key: string): Promise<Info>;
  /**
   * Updates labels. Without `fieldpaths` the labels are replaced; with them, only `labels` or
   * `labels.<key>` fields change. Kind, parent and name never change.
   */
  update(
    info: { readonly name: string; readonly labels: Readonly<Record<string, string>> },
    fieldpaths?: readonly string[],
  ): Promise<Info>;
  /** Usage of the snapshot's own layer. For active snapshots this walks the upper layer. */
  usage(key: string): Promise<Usage>;
  /** The mounts of an active or view snapshot. */
  mounts(key: string): Promise<Mount[]>;
  /** Creates an active snapshot of `parent` (a committed snapshot, or none) and returns its mounts. */
  prepare(key: string, parent?: string, options?: SnapshotOptions): Promise<Mount[]>;
  /** Creates a read-only view of `parent` and returns its mounts. */
  view(key: string, parent?: string, options?: SnapshotOptions): Promise<Mount[]>;
  /**
   * Commits the active snapshot `key` as `name`. The active snapshot is gone afterwards; its
   * labels carry over (merged with `options.labels`).
   */
  commit(name: string, key: string, options?: SnapshotOptions): Promise<void>;
  /** Removes a snapshot. `failed-precondition` if it has children. */
  remove(key: string): Promise<void>;
  /**
   * Calls `fn` for each snapshot matching any of `filters` (containerd filter syntax over `kind`,
   * `name`, `parent`, `labels.<key>`); all of them without filters.
   */
  walk(fn: (info: Info) => void | Promise<void>, filters?: readonly string[]): Promise<void>;
  /** Removes on-disk leftovers of snapshots that no longer exist (e.g. after a crash). Optional. */
  cleanup?(): Promise<void>;
  /** Releases resources held by the snapshotter. */
  close(): Promise<void>;
}
