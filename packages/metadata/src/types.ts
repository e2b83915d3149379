import type { ContentStore, Descriptor } from "@berth/content";

/** Labels of a metadata object: string keys and values; key plus value at most 4096 bytes. */
export type Labels = Readonly<Record<string, string>>;

/** An image record: a name in a namespace pointing at a target descriptor (index or manifest). */
export interface ImageRecord {
  /** The image name, usually a reference such as `docker.io/library/busybox:latest`. Never empty. */
  readonly name: string;
  /** What the name points at; digest, mediaType and a positive size are required. */
  readonly target: Descriptor;
  readonly labels: Labels;
  /** Set by the store on create; ignored on input. */
  readonly createdAt: Date;
  /** Set by the store on create and update; ignored on input. */
  readonly updatedAt: Date;
}

/** What {@link ImageStore.create} and {@link ImageStore.update} take: timestamps are optional and ignored. */
export type ImageInput = Omit<ImageRecord, "createdAt" | "updatedAt" | "labels"> & {
  readonly labels?: Labels;
  readonly createdAt?: Date;
  readonly updatedAt?: Date;
};

/** Options for {@link ImageStore.delete}. */
export interface ImageDeleteOptions {
  /**
   * Run garbage collection after the delete commits, and resolve only when it finished
   * (containerd's `SynchronousDelete`). Needs `contentStore` in {@link OpenMetadataOptions}.
   */
  readonly sync?: boolean;
}

/**
 * The image records of one namespace (containerd's `images.Store`). Every method is one SQLite
 * transaction. Errors: `invalid-argument` for an empty name, a malformed target or filter;
 * `not-found`; `already-exists`.
 */
export interface ImageStore {
  /** The record named `name`; `not-found` if absent. */
  get(name: string): Promise<ImageRecord>;
  /**
   * Records matching any of `filters` (fields `name`, `target.digest`, `target.mediatype`,
   * `labels.<key>`), sorted by name; all records without filters.
   */
  list(filters?: readonly string[]): Promise<ImageRecord[]>;
  /** Creates a record (and the namespace, if new); `already-exists` if the name is taken. */
  create(image: ImageInput): Promise<ImageRecord>;
  /**
   * Updates the record named `image.name`; `not-found` if absent. Without `fieldpaths` target and
   * labels are replaced; otherwise only the listed fields change: `target`, `labels`,
   * `labels.<key>` (an empty or missing value deletes that label). Another fieldpath is
   * `invalid-argument`. `createdAt` never changes.
   */
  update(image: ImageInput, fieldpaths?: readonly string[]): Promise<ImageRecord>;
  /** Deletes the record; `not-found` if absent. Content it pointed at goes at the next GC. */
  delete(name: string, options?: ImageDeleteOptions): Promise<void>;
}

/** A namespace and its labels. */
export interface NamespaceInfo {
  readonly name: string;
  readonly labels: Labels;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/**
 * The namespaces (containerd's `namespaces.Store`). Names follow containerd's identifier rules
 * (`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`, at most 76 characters); any other name is
 * `invalid-argument`. Writing into a namespace through another store creates it implicitly.
 */
export interface NamespaceStore {
  /** Creates a namespace; `already-exists` if present. */
  create(name: string, labels?: Labels): Promise<NamespaceInfo>;
  /** The namespace's record; `not-found` if absent. */
  get(name: string): Promise<NamespaceInfo>;
  /** All namespace names, sorted. */
  list(): Promise<string[]>;
  /** The namespace's labels; `not-found` if absent. */
  labels(name: string): Promise<Labels>;
  /**
   * Merges `labels` into the namespace's labels (an empty value deletes the key), creating the
   * namespace if needed, like containerd's `SetLabel`.
   */
  setLabels(name: string, labels: Labels): Promise<Labels>;
  /**
   * Deletes an empty namespace. `not-found` if absent; `failed-precondition`, listing what is left,
   * if it still holds images, content, ingests, leases or snapshot records.
   */
  delete(name: string): Promise<void>;
}

/** The resource types a lease can hold. `snapshots/<snapshotter>` names a snapshotter. */
export type LeaseResourceType = "content" | "ingests" | `snapshots/${string}`;

/** A resource held by a lease: a content digest, an ingest ref, or a snapshot key. */
export interface LeaseResource {
  readonly type: LeaseResourceType;
  readonly id: string;
}

/** A lease: while it exists (and has not expired) the resources it holds are garbage-collection roots. */
export interface Lease {
  readonly id: string;
  readonly labels: Labels;
  readonly createdAt: Date;
  /** From the `containerd.io/gc.expire` label, when set. */
  readonly expiresAt?: Date;
}

/** Options for {@link LeaseManager.create}. */
export interface LeaseOptions {
  /** The lease ID (identifier rules as for namespaces); random when omitted. */
  readonly id?: string;
  readonly labels?: Labels;
  /** Stored as the `containerd.io/gc.expire` label (RFC 3339); after it the lease no longer protects anything. */
  readonly expiresAt?: Date;
  /**
   * Mark the lease flat (`containerd.io/gc.flat`): it protects exactly its resources, not what
   * their `containerd.io/gc.ref.*` labels point at.
   */
  readonly flat?: boolean;
}

/** Options for {@link LeaseManager.withLease}. */
export interface WithLeaseOptions extends Omit<LeaseOptions, "expiresAt"> {
  /** Lease lifetime in milliseconds, a safety net should the process die; default 24 hours like containerd's client. */
  readonly expiresInMs?: number;
}

/**
 * The leases of one namespace (containerd's `leases.Manager`). A lease protects resources from
 * garbage collection while a multi-step operation (a pull, an unpack) has not yet linked them
 * to a root such as an image record.
 */
export interface LeaseManager {
  /** Creates a lease (and the namespace, if new); `already-exists` if the ID is taken. */
  create(options?: LeaseOptions): Promise<Lease>;
  /** Leases matching any of `filters` (fields `id`, `labels.<key>`), sorted by ID. */
  list(filters?: readonly string[]): Promise<Lease[]>;
  /** Deletes a lease and its resource list; `not-found` if absent. `sync` runs GC afterwards. */
  delete(id: string, options?: { readonly sync?: boolean }): Promise<void>;
  /**
   * Adds a resource to a lease (idempotent). `not-found` if the lease is absent;
   * `invalid-argument` for an unknown type or a malformed content digest.
   */
  addResource(id: string, resource: LeaseResource): Promise<void>;
  /** Removes a resource from a lease (idempotent); `not-found` if the lease is absent. */
  deleteResource(id: string, resource: LeaseResource): Promise<void>;
  /** The resources of a lease, sorted by type then ID; `not-found` if the lease is absent. */
  listResources(id: string): Promise<LeaseResource[]>;
  /**
   * Creates a lease, runs `fn` with it, and deletes the lease when `fn` settles (whether it
   * resolved or threw). Content written during `fn` through a store opened with `{ lease: lease.id }`
   * is protected until then; create the image record inside `fn` so it takes over protection.
   */
  withLease<T>(fn: (lease: Lease) => Promise<T>, options?: WithLeaseOptions): Promise<T>;
}

/** The kinds of snapshot record, the string values of `@berth/snapshots`' `Kind`. */
export type SnapshotRecordKind = "active" | "view" | "committed";

/**
 * A snapshot as one namespace knows it: the namespace's key (or, once committed, name) mapped onto
 * a key of the backend snapshotter that is unique across namespaces (`<namespace>/<n>/<key>`).
 * Labels are the namespace's own, all of them; the backend only ever sees the inherited ones
 * (`containerd.io/snapshot/…`).
 */
export interface SnapshotRecord {
  /** The key (active, view) or name (committed) in the namespace. */
  readonly key: string;
  readonly kind: SnapshotRecordKind;
  /** The key of the committed parent in the same namespace; absent for a base snapshot. */
  readonly parent?: string;
  /** The snapshot's key in the backend snapshotter. */
  readonly backendKey: string;
  readonly labels: Labels;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** What {@link SnapshotRecordStore.allocate} and {@link SnapshotRecordStore.create} take. */
export interface SnapshotRecordInput {
  readonly key: string;
  readonly kind: "active" | "view";
  /** The key of a committed snapshot of the same namespace and snapshotter. */
  readonly parent?: string;
  readonly labels?: Labels;
}

/** The backend keys {@link SnapshotRecordStore.allocate} hands out for a new snapshot. */
export interface SnapshotAllocation {
  /** A fresh backend key, `<namespace>/<n>/<key>`, never handed out before. */
  readonly backendKey: string;
  /** The backend key of the parent, to pass to the backend's prepare or view. */
  readonly backendParent?: string;
}

/** Options of the record-creating methods of {@link SnapshotRecordStore}. */
export interface SnapshotWriteOptions {
  /**
   * Add the created snapshot (`snapshots/<snapshotter>`, key) to this lease of the namespace, in
   * the same transaction as the record; `not-found` if the lease does not exist.
   */
  readonly lease?: string;
}

/**
 * The snapshot records of one namespace for one snapshotter (containerd's
 * `metadata/snapshot.go` buckets). This is the bookkeeping under `@berth/snapshots`'
 * `namespacedSnapshotter`, which calls the backend between these steps; every method is one SQLite
 * transaction. Records never reach across namespaces, except {@link SnapshotRecordStore.share},
 * which reuses another namespace's committed backend snapshot.
 *
 * Errors: `invalid-argument` for an empty key, a malformed label, a bad fieldpath or filter;
 * `not-found` for a missing key, parent or lease; `already-exists` for a taken key;
 * `failed-precondition` for a parent that is not committed, a key that has children, or a commit
 * of a snapshot that is not active.
 */
export interface SnapshotRecordStore {
  readonly namespace: string;
  readonly snapshotter: string;
  /** The record of `key`; `not-found` if absent. */
  get(key: string): Promise<SnapshotRecord>;
  /**
   * Records matching any of `filters` (fields `kind`, `name`, `parent`, `labels.<key>`; `name`
   * is the key), sorted by key; all of them without filters.
   */
  list(filters?: readonly string[]): Promise<SnapshotRecord[]>;
  /**
   * Checks that `input` could be created now (key free, parent present and committed, labels
   * valid) and hands out a fresh backend key. Writes nothing but the sequence: if the backend
   * step fails, there is nothing to undo here. With `options.lease`, `not-found` if that lease is
   * missing.
   */
  allocate(input: SnapshotRecordInput, options?: SnapshotWriteOptions): Promise<SnapshotAllocation>;
  /**
   * Records a snapshot the backend now holds under `backendKey`, re-checking everything
   * {@link SnapshotRecordStore.allocate} checked (another writer may have raced in between). On
   * any error nothing is written and the caller must undo the backend snapshot.
   */
  create(
    input: SnapshotRecordInput & { readonly backendKey: string },
    options?: SnapshotWriteOptions,
  ): Promise<SnapshotRecord>;
  /**
   * Checks that the active snapshot `key` could be committed as `name` now (`not-found`,
   * `failed-precondition` if it is not active, `already-exists` if `name` is taken) and hands out
   * the backend name to commit it under. Returns the active record too. With `options.lease`,
   * `not-found` if that lease is missing.
   */
  allocateCommit(
    name: string,
    key: string,
    options?: SnapshotWriteOptions,
  ): Promise<{ readonly backendKey: string; readonly active: SnapshotRecord }>;
  /**
   * Moves the record of the active `key` to a committed record `name` whose backend snapshot is
   * now `backendKey` (the backend commit has happened). Labels are the active's merged with
   * `labels`; the parent stays. With a lease, `name` is added to it and `key` removed from it (a
   * lease deleted since {@link SnapshotRecordStore.allocateCommit} is skipped: the commit lands).
   *
   * If `name` was taken in the meantime the active record is dropped (its backend snapshot was
   * consumed by the backend commit), the new backend snapshot is left for GC, and
   * `already-exists` is thrown. `not-found` if `key` vanished (the same cleanup applies).
   */
  commit(
    input: {
      readonly name: string;
      readonly key: string;
      readonly backendKey: string;
      readonly labels?: Labels;
    },
    options?: SnapshotWriteOptions,
  ): Promise<SnapshotRecord>;
  /**
   * containerd's snapshot sharing: if another namespace holds a committed snapshot named `key`
   * (for this snapshotter) whose backend parent is the backend snapshot of `parent` here, records
   * `key` in this namespace as committed, pointing at the same backend snapshot, and returns the
   * record. Returns undefined (writing nothing) when there is nothing to share or `key` already
   * exists here. The caller asserts, through `key` being a chain ID, that the content is the same.
   */
  share(
    input: { readonly key: string; readonly parent?: string; readonly labels?: Labels },
    options?: SnapshotWriteOptions,
  ): Promise<SnapshotRecord | undefined>;
  /**
   * Updates the labels of `key` as containerd does (no fieldpaths or `labels`: replace;
   * `labels.<key>`: that label only; an empty value deletes). Other fieldpaths are
   * `invalid-argument`. Returns the updated record and the labels before the update.
   */
  update(
    key: string,
    labels: Labels,
    fieldpaths?: readonly string[],
  ): Promise<{ readonly record: SnapshotRecord; readonly previous: Labels }>;
  /**
   * Sets the labels of `key` back to `labels` exactly, e.g. to undo an update whose backend step
   * failed; `not-found` if absent.
   */
  restoreLabels(key: string, labels: Labels): Promise<void>;
  /**
   * Deletes the record of `key` (`not-found`; `failed-precondition` if another snapshot of the
   * namespace has it as parent). Its backend snapshot is not touched: it is queued for removal,
   * which `collectGarbage` does once no record of any namespace uses it.
   */
  remove(key: string): Promise<SnapshotRecord>;
  /**
   * Queues a backend snapshot that has no record (a failed create's leftover) for removal by the
   * next garbage collection.
   */
  discard(backendKey: string, backendParent?: string): Promise<void>;
  /**
   * Runs `fn` holding the shared garbage-collection lock of the database root: a collection in
   * any process waits until `fn` settles. Wrap every step sequence that makes a backend snapshot
   * exist before its record does (prepare, view, commit), so GC never sees it half-made.
   */
  withGcLock<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * What garbage collection needs of a backend snapshotter; any `@berth/snapshots` `Snapshotter`
 * fits. Without `walk`, only the backend snapshots the database queued for removal (records
 * removed or collected, failed creates) are removed. With `walk`, every backend snapshot no
 * record uses is removed: also leftovers of a crash between a backend step and its record, and
 * anything created in the backend directly, bypassing the namespaced snapshotter (as in
 * containerd, the backend belongs to the metadata database).
 */
export interface GcSnapshotter {
  /**
   * Removes a backend snapshot. `not-found` counts as removed; `failed-precondition` (it still has
   * children) leaves it for a later collection; any other error is thrown by `collectGarbage`
   * after the rest of the sweep.
   */
  remove(backendKey: string): Promise<void>;
  /** Calls `fn` for every backend snapshot: its backend key (`name`) and backend parent. */
  walk?(
    fn: (info: { readonly name: string; readonly parent?: string }) => void | Promise<void>,
  ): Promise<void>;
}

/** Options for {@link openMetadata}. */
export interface OpenMetadataOptions {
  /** How long a statement waits for another process's write lock before `unavailable`; default 10 s. */
  readonly busyTimeoutMs?: number;
  /**
   * The backing content store, used by deletes with `{ sync: true }` to run garbage collection.
   * Without it such deletes throw `failed-precondition` before deleting anything.
   */
  readonly contentStore?: ContentStore;
  /**
   * containerd's content sharing policy. `shared` (the default, as in containerd): a namespace
   * that opens a writer with an `expected` digest another namespace already committed gets the
   * blob without re-sending the bytes. `isolated`: every namespace must write the bytes itself
   * before the blob becomes visible to it.
   */
  readonly contentSharing?: "shared" | "isolated";
  /**
   * The backend snapshotters by name, for garbage collection (deletes with `{ sync: true }` and
   * `collectGarbage` calls without their own `snapshotters`) to remove unused backend snapshots.
   */
  readonly snapshotters?: Readonly<Record<string, GcSnapshotter>>;
}

/**
 * An open metadata database. Safe to use from several processes on one root at once. The handle
 * owns one SQLite connection; {@link Metadata.close} releases it.
 */
export interface Metadata {
  /** The database file. */
  readonly path: string;
  /** The directory holding the database; `gc.lock` lives here. */
  readonly root: string;
  /** The schema version (`PRAGMA user_version`). */
  readonly schemaVersion: number;
  readonly namespaces: NamespaceStore;
  /** The image store of `namespace`; `invalid-argument` if the name is malformed. */
  images(namespace: string): ImageStore;
  /** The leases of `namespace`; `invalid-argument` if the name is malformed. */
  leases(namespace: string): LeaseManager;
  /**
   * The snapshot records of `namespace` for the snapshotter called `snapshotter` (a plugin name
   * such as `overlayfs`); `invalid-argument` if either name is malformed.
   */
  snapshots(namespace: string, snapshotter: string): SnapshotRecordStore;
  /** Closes the connection. Later calls on this handle or its stores throw `failed-precondition`. */
  close(): void;
}
