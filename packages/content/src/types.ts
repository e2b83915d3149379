import type { Readable } from "node:stream";

/**
 * A content digest in `algorithm:hex` form, e.g. `sha256:9f86d0...`. berth accepts `sha256` and
 * `sha512`; anything else is rejected with `invalid-argument`.
 */
export type Digest = string;

/**
 * An OCI content descriptor (image-spec `descriptor.md`): what a blob is, how big, and its digest.
 * Every layer of berth that refers to content does so with this shape.
 */
export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly urls?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly platform?: Platform;
  readonly artifactType?: string;
  readonly data?: string;
}

/** An OCI platform (image-spec `image-index.md`). */
export interface Platform {
  readonly architecture: string;
  readonly os: string;
  readonly "os.version"?: string;
  readonly "os.features"?: readonly string[];
  readonly variant?: string;
  readonly features?: readonly string[];
}

/** What the store knows of one committed blob. */
export interface Info {
  readonly digest: Digest;
  readonly size: number;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly labels: Readonly<Record<string, string>>;
}

/** The progress of one active ingest, identified by its ref. */
export interface Status {
  readonly ref: string;
  /** Bytes written so far; a resumed writer continues from here. */
  readonly offset: number;
  /** The expected total size, or 0 when not known. */
  readonly total: number;
  /** The expected digest, when the writer was opened with one. */
  readonly expected?: Digest;
  readonly startedAt: Date;
  readonly updatedAt: Date;
}

/** Options for {@link ContentStore.writer}. */
export interface WriterOptions {
  /**
   * The ingest's name. At most one writer holds a ref at a time, across processes; a second
   * gets `unavailable`. Reopening a ref that was closed without commit resumes at its offset.
   */
  readonly ref: string;
  /** Expected total size, when known: recorded in the status and checked at commit. */
  readonly total?: number;
  /**
   * Expected digest, when known. If that digest is already committed the writer call throws
   * `already-exists`, so callers skip the copy.
   */
  readonly expected?: Digest;
}

/** Options for {@link ContentWriter.commit}. */
export interface CommitOptions {
  /** Labels set on the committed blob. */
  readonly labels?: Readonly<Record<string, string>>;
}

/**
 * An open ingest. Bytes are appended with {@link ContentWriter.write}; {@link ContentWriter.commit}
 * checks size and digest, fsyncs and atomically renames the data into the blob store. The writer
 * owns a cross-process lock on its ref until commit or close.
 */
export interface ContentWriter {
  readonly ref: string;
  /** Appends bytes at the current offset. */
  write(chunk: Uint8Array): Promise<void>;
  /** The digest (sha256 unless the expected digest uses another algorithm) of what was written so far. */
  digest(): Digest;
  /** The current status: offset, total, timestamps. */
  status(): Promise<Status>;
  /**
   * Verifies and commits. `size` 0 skips the size check; `expected` empty skips the digest check
   * (the computed digest is used). Throws `failed-precondition` on a size or digest mismatch (the
   * ingest is kept, so the caller may truncate and retry, or abort), `already-exists` when the
   * digest is committed already (the ingest is removed; the stored blob is untouched). After commit
   * or a thrown `already-exists`, the writer is closed.
   */
  commit(size: number, expected?: Digest, options?: CommitOptions): Promise<Digest>;
  /** Truncates the ingest to `size` bytes (0 to restart), recomputing the running digest. */
  truncate(size: number): Promise<void>;
  /** Releases the ref's lock without committing; the ingest stays and can be resumed. */
  close(): Promise<void>;
}

/** Random access to one committed blob. */
export interface ReaderAt {
  readonly size: number;
  /** Reads up to `buffer.length` bytes at `offset`; returns how many were read (0 at the end). */
  readAt(buffer: Uint8Array, offset: number): Promise<number>;
  /** A stream of the blob from `start` (default 0) to the end. */
  stream(start?: number): Readable;
  close(): Promise<void>;
}

/**
 * A content-addressable blob store (containerd's `content.Store`). Implementations: the local
 * store in this package, the namespaced view in `@berth/metadata`, and remote proxies. Every
 * implementation passes `@berth/content/testsuite`.
 */
export interface ContentStore {
  /** Info of a committed blob. `not-found` if absent. */
  info(digest: Digest): Promise<Info>;
  /**
   * Updates a blob's labels. With `fieldpaths` (`labels`, or `labels.<key>`) only those fields
   * change; without, the labels are replaced. An empty label value deletes the label.
   */
  update(
    info: { readonly digest: Digest; readonly labels: Readonly<Record<string, string>> },
    fieldpaths?: readonly string[],
  ): Promise<Info>;
  /**
   * Calls `fn` for each committed blob matching any of `filters` (containerd filter syntax, e.g.
   * `labels."containerd.io/gc.root"`, `digest==sha256:…`, `size==100`; see `parseFilter`); all blobs if none.
   * Throws `invalid-argument` for a malformed filter before visiting anything.
   */
  walk(fn: (info: Info) => void | Promise<void>, filters?: readonly string[]): Promise<void>;
  /** Deletes a committed blob. `not-found` if absent. */
  delete(digest: Digest): Promise<void>;
  /** Opens a committed blob for reading. `not-found` if absent. */
  readerAt(digest: Digest): Promise<ReaderAt>;
  /** Status of an active ingest. `not-found` if there is none under `ref`. */
  status(ref: string): Promise<Status>;
  /** Statuses of active ingests matching any of `filters` (on `ref`); all if none. */
  listStatuses(filters?: readonly string[]): Promise<Status[]>;
  /** Removes an active ingest. `not-found` if none; `unavailable` if a writer holds it. */
  abort(ref: string): Promise<void>;
  /** Opens (or resumes) the ingest named by `options.ref`. See {@link WriterOptions}. */
  writer(options: WriterOptions): Promise<ContentWriter>;
}
