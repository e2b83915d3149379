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
   * if it still holds images, content, ingests or leases.
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
  /** Closes the connection. Later calls on this handle or its stores throw `failed-precondition`. */
  close(): void;
}
