import {
  type CommitOptions,
  type ContentStore,
  type ContentWriter,
  type Digest,
  type Info,
  infoFieldAdaptor,
  matchFilters,
  parseFilters,
  type ReaderAt,
  type Status,
  statusFieldAdaptor,
  type WriterOptions,
} from "@berth/content";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isAlreadyExists,
  isNotFound,
  notFound,
} from "@berth/errdefs";
import { acquireGcShared } from "./gc-lock.js";
import { internals, type MetadataInternals, parseLabels, stringifyLabels } from "./internals.js";
import { addLeaseResource } from "./leases.js";
import type { Metadata } from "./types.js";
import { applyLabelUpdate, validateDigest, validateLabels, validateNamespace } from "./validate.js";

/** Options for {@link namespacedContentStore}. */
export interface NamespacedContentOptions {
  /**
   * A lease of this namespace (created beforehand) that every ingest opened and every blob
   * committed through this store is added to, in the same transaction as the record itself.
   * Writer opens and commits throw `not-found` if the lease does not exist.
   */
  readonly lease?: string;
  /**
   * How long an ingest not held by a lease protects itself (and the blob it expects) from garbage
   * collection, counted from when its writer was opened; default 24 hours.
   */
  readonly ingestExpiryMs?: number;
}

const defaultIngestExpiryMs = 24 * 60 * 60 * 1000;

interface ContentRow {
  digest: string;
  size: number;
  labels: string;
  created_at: number;
  updated_at: number;
}

interface IngestRow {
  ref: string;
  backing_ref: string;
  expected: string | null;
  shared_size: number | null;
  expires_at: number | null;
  created_at: number;
  updated_at: number;
}

function toInfo(row: ContentRow): Info {
  return {
    digest: row.digest,
    size: row.size,
    labels: parseLabels(row.labels),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

/**
 * The ingest ref in the backing store. Namespace names cannot contain `/`, so `<namespace>/<ref>`
 * never collides across namespaces.
 */
function backingRefOf(namespace: string, ref: string): string {
  return `${namespace}/${ref}`;
}

/**
 * A namespace's view of a shared blob store, as containerd's metadata content store: blobs live
 * once in `backing`, but this namespace sees only those it recorded (committed through a view of
 * this namespace); labels, sizes and timestamps come from the namespace's records in SQLite, not
 * from `backing`. The view implements the whole {@link ContentStore} contract, with these
 * namespace rules:
 *
 * - `writer`: `already-exists` if this namespace already has `expected`. Under the `shared`
 *   policy (the default), if another namespace committed `expected` (and `total`, when given,
 *   matches), the writer needs no bytes: its status reports the blob's full size and `commit`
 *   records it. Writing to such a writer first copies the existing blob into a real ingest, as
 *   containerd does. Ingest refs are stored in `backing` as `<namespace>/<ref>`.
 * - `commit`: commits in `backing` (a backing `already-exists` is expected and swallowed: another
 *   namespace has the blob), then records it here with the commit's labels. If this namespace
 *   already had the digest, the ingest is still consumed and the lease updated, then
 *   `already-exists` is thrown — exactly containerd's behaviour.
 * - `delete` removes only this namespace's record; the blob goes at the next
 *   {@link collectGarbage} once no namespace records it.
 *
 * Opening a writer and committing take the shared GC lock, so a collector in any process cannot
 * delete a blob between its backing commit and its record. The view does not own `backing`.
 * Throws `invalid-argument` for a malformed namespace.
 */
export function namespacedContentStore(
  meta: Metadata,
  backing: ContentStore,
  namespace: string,
  options: NamespacedContentOptions = {},
): ContentStore {
  // Fail fast on a malformed namespace or a closed handle, not at the first call.
  validateNamespace(namespace);
  internals(meta);
  const state = () => internals(meta);
  const where = `in namespace ${namespace}`;
  const lease = options.lease;
  const ingestExpiryMs = options.ingestExpiryMs ?? defaultIngestExpiryMs;

  const contentRow = (s: MetadataInternals, digest: Digest) =>
    s.stmt("SELECT * FROM content WHERE namespace = ? AND digest = ?").get(namespace, digest) as
      | ContentRow
      | undefined;
  const ingestRow = (s: MetadataInternals, ref: string) =>
    s.stmt("SELECT * FROM ingests WHERE namespace = ? AND ref = ?").get(namespace, ref) as
      | IngestRow
      | undefined;
  const requireContent = (s: MetadataInternals, digest: Digest) => {
    validateDigest("content digest", digest);
    const row = contentRow(s, digest);
    if (row === undefined) throw notFound(`content ${digest} ${where} not found`);
    return row;
  };

  async function statusOf(row: IngestRow): Promise<Status> {
    if (row.shared_size !== null && row.expected !== null) {
      return {
        ref: row.ref,
        offset: row.shared_size,
        total: row.shared_size,
        expected: row.expected,
        startedAt: new Date(row.created_at),
        updatedAt: new Date(row.updated_at),
      };
    }
    let st: Status;
    try {
      st = await backing.status(row.backing_ref);
    } catch (err) {
      if (isNotFound(err)) throw notFound(`ingest ${row.ref} ${where} not found`, { cause: err });
      throw err;
    }
    return { ...st, ref: row.ref, ...(row.expected === null ? {} : { expected: row.expected }) };
  }

  class NamespacedWriter implements ContentWriter {
    private closed = false;

    constructor(
      readonly ref: string,
      private readonly backingRef: string,
      private readonly expected: Digest | undefined,
      private readonly total: number | undefined,
      private sharedSize: number | undefined,
      private w: ContentWriter | undefined,
    ) {}

    private open(): void {
      if (this.closed) throw failedPrecondition(`writer for ingest ${this.ref} ${where} is closed`);
    }

    /**
     * Turns a shared writer (no bytes of its own) into a real ingest holding a copy of the
     * existing blob, before the caller changes it.
     */
    private async unshare(): Promise<ContentWriter> {
      if (this.w !== undefined) return this.w;
      const expected = this.expected as Digest;
      const w = await backing.writer({
        ref: this.backingRef,
        ...(this.total === undefined ? {} : { total: this.total }),
      });
      try {
        await w.truncate(0);
        const reader = await backing.readerAt(expected);
        try {
          for await (const chunk of reader.stream()) await w.write(chunk as Uint8Array);
        } finally {
          await reader.close();
        }
        const s = state();
        s.write(() =>
          s
            .stmt("UPDATE ingests SET shared_size = NULL, updated_at = ? WHERE namespace = ? AND ref = ?")
            .run(Date.now(), namespace, this.ref),
        );
      } catch (err) {
        await w.close();
        throw err;
      }
      this.w = w;
      this.sharedSize = undefined;
      return w;
    }

    async write(chunk: Uint8Array): Promise<void> {
      this.open();
      if (chunk.length === 0) return;
      await (await this.unshare()).write(chunk);
    }

    digest(): Digest {
      if (this.w !== undefined) return this.w.digest();
      return this.expected as Digest;
    }

    async status(): Promise<Status> {
      this.open();
      const row = ingestRow(state(), this.ref);
      if (row === undefined) throw notFound(`ingest ${this.ref} ${where} not found`);
      return statusOf(row);
    }

    async truncate(size: number): Promise<void> {
      this.open();
      if (this.w === undefined && size === this.sharedSize) return;
      await (await this.unshare()).truncate(size);
    }

    async close(): Promise<void> {
      if (this.closed) return;
      this.closed = true;
      await this.w?.close();
    }

    async commit(size: number, expected?: Digest, commitOptions: CommitOptions = {}): Promise<Digest> {
      this.open();
      const labels = commitOptions.labels ?? {};
      validateLabels(`content commit of ${this.ref} ${where}`, labels);
      if (expected !== undefined && expected !== "") validateDigest("expected digest", expected);
      const release = await acquireGcShared(state().gcLockPath);
      try {
        let actual: Digest;
        let actualSize: number;
        if (this.w === undefined) {
          const shared = this.expected as Digest;
          if (size !== 0 && size !== this.sharedSize) {
            throw failedPrecondition(
              `commit of ingest ${this.ref} ${where}: size ${size} does not match ${shared} of size ${this.sharedSize}`,
            );
          }
          if (expected !== undefined && expected !== "" && expected !== shared) {
            throw failedPrecondition(
              `commit of ingest ${this.ref} ${where}: expected ${expected}, have ${shared}`,
            );
          }
          // The blob was protected by this ingest's record, but re-check rather than record a ghost.
          let info: Info;
          try {
            info = await backing.info(shared);
          } catch (err) {
            if (!isNotFound(err)) throw err;
            throw failedPrecondition(
              `commit of ingest ${this.ref} ${where}: shared blob ${shared} is gone from the content store; write it again`,
              { cause: err },
            );
          }
          actual = shared;
          actualSize = info.size;
        } else {
          const w = this.w;
          const st = await w.status();
          actualSize = st.offset;
          // What the backing commit verifies against (and names the blob by), should it answer
          // already-exists instead of returning the digest: the store checks the bytes first.
          actual = expected || st.expected || w.digest();
          try {
            // Labels belong to the namespace's record, not to the shared blob.
            actual = await w.commit(size, expected);
          } catch (err) {
            // Another namespace (or an earlier run) committed these bytes: the blob is there.
            if (!isAlreadyExists(err)) throw err;
          }
        }
        this.closed = true;
        const s = state();
        const had = s.write(() => {
          const now = Date.now();
          s.ensureNamespace(namespace, now);
          const existed = contentRow(s, actual) !== undefined;
          if (!existed) {
            s.stmt(
              "INSERT INTO content (namespace, digest, size, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            ).run(namespace, actual, actualSize, stringifyLabels(labels), now, now);
          }
          s.stmt("DELETE FROM ingests WHERE namespace = ? AND ref = ?").run(namespace, this.ref);
          if (lease !== undefined) {
            s.stmt(
              "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = 'ingests' AND id = ?",
            ).run(namespace, lease, this.ref);
            addLeaseResource(s, namespace, lease, { type: "content", id: actual });
          }
          return existed;
        });
        if (had) throw alreadyExists(`content ${actual} ${where} already exists`);
        return actual;
      } finally {
        release();
      }
    }
  }

  return {
    async info(digest) {
      return toInfo(requireContent(state(), digest));
    },

    async update(info, fieldpaths) {
      validateLabels(`content ${info.digest} ${where}`, info.labels);
      const s = state();
      return s.write(() => {
        const row = requireContent(s, info.digest);
        const { labels, rest } = applyLabelUpdate(parseLabels(row.labels), info.labels, fieldpaths);
        if (rest.length > 0) {
          throw invalidArgument(
            `content ${info.digest} ${where}: cannot update field ${JSON.stringify(rest[0])}`,
          );
        }
        s.stmt("UPDATE content SET labels = ?, updated_at = ? WHERE namespace = ? AND digest = ?").run(
          stringifyLabels(labels),
          Date.now(),
          namespace,
          info.digest,
        );
        return toInfo(contentRow(s, info.digest) as ContentRow);
      });
    },

    async walk(fn, filters) {
      const parsed = parseFilters(filters);
      // Read everything first: fn may await, and a statement must not stay open across awaits.
      const rows = state()
        .stmt("SELECT * FROM content WHERE namespace = ? ORDER BY digest")
        .all(namespace) as ContentRow[];
      for (const row of rows) {
        const info = toInfo(row);
        if (matchFilters(parsed, infoFieldAdaptor(info))) await fn(info);
      }
    },

    async delete(digest) {
      validateDigest("content digest", digest);
      const s = state();
      s.write(() => {
        const result = s
          .stmt("DELETE FROM content WHERE namespace = ? AND digest = ?")
          .run(namespace, digest);
        if (result.changes === 0) throw notFound(`content ${digest} ${where} not found`);
      });
    },

    async readerAt(digest): Promise<ReaderAt> {
      requireContent(state(), digest);
      try {
        return await backing.readerAt(digest);
      } catch (err) {
        if (isNotFound(err)) {
          throw notFound(`content ${digest} ${where} is recorded but missing from the content store`, {
            cause: err,
          });
        }
        throw err;
      }
    },

    async status(ref) {
      const row = ingestRow(state(), ref);
      if (row === undefined) throw notFound(`ingest ${ref} ${where} not found`);
      return statusOf(row);
    },

    async listStatuses(filters) {
      const parsed = parseFilters(filters);
      const rows = state()
        .stmt("SELECT * FROM ingests WHERE namespace = ? ORDER BY ref")
        .all(namespace) as IngestRow[];
      const out: Status[] = [];
      for (const row of rows) {
        try {
          const st = await statusOf(row);
          if (matchFilters(parsed, statusFieldAdaptor(st))) out.push(st);
        } catch (err) {
          // The record outlived its backing ingest (a crash between the two); GC drops it.
          if (!isNotFound(err)) throw err;
        }
      }
      return out;
    },

    async abort(ref) {
      const s = state();
      const row = ingestRow(s, ref);
      if (row === undefined) throw notFound(`ingest ${ref} ${where} not found`);
      if (row.shared_size === null) {
        try {
          await backing.abort(row.backing_ref);
        } catch (err) {
          if (!isNotFound(err)) throw err;
        }
      }
      s.write(() => {
        s.stmt("DELETE FROM ingests WHERE namespace = ? AND ref = ?").run(namespace, ref);
        if (lease !== undefined) {
          s.stmt(
            "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = 'ingests' AND id = ?",
          ).run(namespace, lease, ref);
        }
      });
    },

    async writer(opts: WriterOptions): Promise<ContentWriter> {
      const { ref, total, expected } = opts;
      if (typeof ref !== "string" || ref === "")
        throw invalidArgument(`writer ${where}: ref must not be empty`);
      if (expected !== undefined) validateDigest(`writer ${ref} ${where}: expected digest`, expected);
      if (total !== undefined && (!Number.isSafeInteger(total) || total < 0)) {
        throw invalidArgument(`writer ${ref} ${where}: total ${total} must be a non-negative integer`);
      }
      const s = state();
      const release = await acquireGcShared(s.gcLockPath);
      try {
        if (expected !== undefined && contentRow(s, expected) !== undefined) {
          throw alreadyExists(`content ${expected} ${where} already exists`);
        }
        let sharedSize: number | undefined;
        let inBacking = false;
        if (expected !== undefined) {
          try {
            const info = await backing.info(expected);
            inBacking = true;
            // A size mismatch is likely the caller's error; let commit report it on real bytes.
            const sizeOk = total === undefined || total === 0 || total === info.size;
            if ((s.options.contentSharing ?? "shared") === "shared" && sizeOk) sharedSize = info.size;
          } catch (err) {
            if (!isNotFound(err)) throw err;
          }
        }
        const backingRef = backingRefOf(namespace, ref);
        s.write(() => {
          const now = Date.now();
          s.ensureNamespace(namespace, now);
          if (lease !== undefined) addLeaseResource(s, namespace, lease, { type: "ingests", id: ref });
          s.stmt(
            `INSERT INTO ingests (namespace, ref, backing_ref, expected, shared_size, expires_at, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (namespace, ref) DO UPDATE SET
               expected = excluded.expected, shared_size = excluded.shared_size,
               expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
          ).run(
            namespace,
            ref,
            backingRef,
            expected ?? null,
            sharedSize ?? null,
            // Under a lease the lease protects the ingest; otherwise it protects itself for a while.
            lease === undefined ? now + ingestExpiryMs : null,
            now,
            now,
          );
        });
        let w: ContentWriter | undefined;
        if (sharedSize === undefined) {
          // The expected digest goes down only while the backing store lacks the blob (it also picks
          // the hash algorithm). For a blob another namespace has, the backing store would answer
          // already-exists, yet this namespace must still send the bytes (isolated policy).
          const base = { ref: backingRef, ...(total === undefined ? {} : { total }) };
          try {
            w = await backing.writer(!inBacking && expected !== undefined ? { ...base, expected } : base);
          } catch (err) {
            // Another namespace committed it since the info call above.
            if (!isAlreadyExists(err)) throw err;
            w = await backing.writer(base);
          }
        }
        return new NamespacedWriter(ref, backingRef, expected, total, sharedSize, w);
      } finally {
        release();
      }
    },
  };
}
