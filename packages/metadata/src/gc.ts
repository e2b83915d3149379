import { type ContentStore, type Digest, Labels as GcLabels } from "@berth/content";
import { isNotFound, isUnavailable } from "@berth/errdefs";
import { acquireGcExclusive } from "./gc-lock.js";
import { internals, parseLabels } from "./internals.js";
import { expiryOf } from "./leases.js";
import type { Metadata } from "./types.js";

/** Options for {@link collectGarbage}. */
export interface GcOptions {
  /** The time leases and ingests are judged expired against; defaults to now. */
  readonly now?: Date;
}

/** What one {@link collectGarbage} run removed. */
export interface GcResult {
  /** Blobs deleted from the backing store (no namespace recorded them any more). */
  readonly removed: Digest[];
  /** Per-namespace content records dropped because nothing reachable referenced them. */
  readonly removedRecords: { readonly namespace: string; readonly digest: Digest }[];
  /** Leases removed because they had expired. */
  readonly removedLeases: { readonly namespace: string; readonly id: string }[];
  /** Ingest records dropped (expired, or their lease is gone). */
  readonly removedIngests: { readonly namespace: string; readonly ref: string }[];
  /** Backing-store ingests aborted because no ingest record owns them. */
  readonly abortedIngests: string[];
}

interface ContentRow {
  namespace: string;
  digest: string;
  labels: string;
}
interface IngestRow {
  namespace: string;
  ref: string;
  backing_ref: string;
  expected: string | null;
  expires_at: number | null;
}
interface LeaseRow {
  namespace: string;
  id: string;
  labels: string;
}
interface ResourceRow {
  namespace: string;
  lease: string;
  type: string;
  id: string;
}
interface ImageRow {
  namespace: string;
  target_digest: string;
  labels: string;
}

// Graph node keys. Snapshot nodes are marked already so that `containerd.io/gc.ref.snapshot.<name>`
// labels are honoured the day snapshot records land; for now nothing sweeps them.
const contentNode = (ns: string, digest: string) => `content\0${ns}\0${digest}`;
const ingestNode = (ns: string, ref: string) => `ingest\0${ns}\0${ref}`;
const snapshotNode = (ns: string, snapshotter: string, key: string) =>
  `snapshot\0${ns}\0${snapshotter}\0${key}`;

/** True for `containerd.io/gc.ref.content`, `….content.<x>` and `….content/<x>`, as containerd reads them. */
function isContentRef(key: string): boolean {
  if (!key.startsWith(GcLabels.GcRefContent)) return false;
  const sep = key.charAt(GcLabels.GcRefContent.length);
  return sep === "" || sep === "." || sep === "/";
}

/** The nodes an object's labels point at, in the same namespace. */
function labelRefs(ns: string, labels: Readonly<Record<string, string>>): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(labels)) {
    if (isContentRef(key)) out.push(contentNode(ns, value));
    else if (key.startsWith(`${GcLabels.GcRefSnapshot}.`)) {
      out.push(snapshotNode(ns, key.slice(GcLabels.GcRefSnapshot.length + 1), value));
    }
  }
  return out;
}

/**
 * Collects garbage across every namespace of `meta` and then in `backing` (the shared blob store
 * under the namespaced views), containerd style: mark from the roots, sweep what was not marked.
 *
 * Roots: every image (its target and its `containerd.io/gc.ref.*` labels); content records
 * labelled `containerd.io/gc.root`; the resources of every lease that has not expired (a lease
 * labelled `containerd.io/gc.flat` protects its resources but not what they reference); ingest
 * records that have not expired (their expected digest included). Marking follows
 * `containerd.io/gc.ref.content*` labels of content records within a namespace.
 *
 * Swept, in one SQLite transaction: unmarked content records, unmarked ingest records and expired
 * leases. Then, still under the exclusive GC lock: blobs of `backing` that no namespace records
 * (and no live ingest expects) are deleted, and backing ingests no ingest record owns are aborted
 * (one with an active writer is skipped). Anything written to `backing` directly, bypassing the
 * namespaced stores, is therefore garbage — as in containerd.
 *
 * Not collected yet: snapshots (their records arrive with the snapshots issue; the mark phase
 * already follows `containerd.io/gc.ref.snapshot.<snapshotter>` labels), containers, empty
 * namespaces. Concurrency: takes the exclusive lock on `<root>/gc.lock`, so it waits for commits
 * in flight in any process and holds new ones off until it is done.
 */
export async function collectGarbage(
  meta: Metadata,
  backing: ContentStore,
  options: GcOptions = {},
): Promise<GcResult> {
  const state = internals(meta);
  const now = (options.now ?? new Date()).getTime();
  const release = await acquireGcExclusive(state.gcLockPath);
  try {
    const swept = state.write(() => {
      const images = state.stmt("SELECT namespace, target_digest, labels FROM images").all() as ImageRow[];
      const content = state.stmt("SELECT namespace, digest, labels FROM content").all() as ContentRow[];
      const ingests = state
        .stmt("SELECT namespace, ref, backing_ref, expected, expires_at FROM ingests")
        .all() as IngestRow[];
      const leases = state.stmt("SELECT namespace, id, labels FROM leases").all() as LeaseRow[];
      const resources = state
        .stmt("SELECT namespace, lease, type, id FROM lease_resources")
        .all() as ResourceRow[];

      // Out-edges of every node that has any.
      const edges = new Map<string, string[]>();
      for (const row of content) {
        edges.set(contentNode(row.namespace, row.digest), labelRefs(row.namespace, parseLabels(row.labels)));
      }
      for (const row of ingests) {
        if (row.expected !== null)
          edges.set(ingestNode(row.namespace, row.ref), [contentNode(row.namespace, row.expected)]);
      }

      const marked = new Set<string>();
      const followed = new Set<string>();
      const stack: string[] = [];
      const mark = (node: string, follow: boolean) => {
        marked.add(node);
        if (follow && !followed.has(node)) {
          followed.add(node);
          stack.push(node);
        }
      };

      for (const row of images) {
        mark(contentNode(row.namespace, row.target_digest), true);
        for (const node of labelRefs(row.namespace, parseLabels(row.labels))) mark(node, true);
      }
      for (const row of content) {
        if (parseLabels(row.labels)[GcLabels.GcRoot] !== undefined)
          mark(contentNode(row.namespace, row.digest), true);
      }
      for (const row of ingests) {
        if (row.expires_at !== null && row.expires_at > now) mark(ingestNode(row.namespace, row.ref), true);
      }
      const expiredLeases: LeaseRow[] = [];
      const liveLeases = new Map<string, boolean>(); // key → flat
      for (const row of leases) {
        const labels = parseLabels(row.labels);
        const expiry = expiryOf(labels);
        if (expiry !== undefined && expiry.getTime() <= now) expiredLeases.push(row);
        else liveLeases.set(`${row.namespace}\0${row.id}`, labels[GcLabels.GcFlat] !== undefined);
      }
      for (const res of resources) {
        const flat = liveLeases.get(`${res.namespace}\0${res.lease}`);
        if (flat === undefined) continue;
        if (res.type === "content") mark(contentNode(res.namespace, res.id), !flat);
        else if (res.type === "ingests") mark(ingestNode(res.namespace, res.id), !flat);
        else if (res.type.startsWith("snapshots/")) {
          mark(snapshotNode(res.namespace, res.type.slice("snapshots/".length), res.id), !flat);
        }
      }
      for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
        for (const next of edges.get(node) ?? []) mark(next, true);
      }

      const removedRecords: { namespace: string; digest: Digest }[] = [];
      const deleteContent = state.stmt("DELETE FROM content WHERE namespace = ? AND digest = ?");
      for (const row of content) {
        if (marked.has(contentNode(row.namespace, row.digest))) continue;
        deleteContent.run(row.namespace, row.digest);
        removedRecords.push({ namespace: row.namespace, digest: row.digest });
      }
      const removedIngests: { namespace: string; ref: string }[] = [];
      const deleteIngest = state.stmt("DELETE FROM ingests WHERE namespace = ? AND ref = ?");
      const keepBlobs = new Set<string>();
      const keepIngests = new Set<string>();
      for (const row of ingests) {
        if (!marked.has(ingestNode(row.namespace, row.ref))) {
          deleteIngest.run(row.namespace, row.ref);
          removedIngests.push({ namespace: row.namespace, ref: row.ref });
          continue;
        }
        keepIngests.add(row.backing_ref);
        // A shared-policy writer has no bytes of its own: the blob it will record must survive.
        if (row.expected !== null) keepBlobs.add(row.expected);
      }
      const deleteLease = state.stmt("DELETE FROM leases WHERE namespace = ? AND id = ?");
      for (const row of expiredLeases) deleteLease.run(row.namespace, row.id);
      for (const row of content) {
        if (marked.has(contentNode(row.namespace, row.digest))) keepBlobs.add(row.digest);
      }
      return {
        removedRecords,
        removedIngests,
        removedLeases: expiredLeases.map((l) => ({ namespace: l.namespace, id: l.id })),
        keepBlobs,
        keepIngests,
      };
    });

    // Backing sweep. Holding the exclusive lock, no process can record a new blob or open a new
    // ingest, so the keep sets computed above cannot miss anything that appears meanwhile.
    const candidates: Digest[] = [];
    await backing.walk((info) => {
      if (!swept.keepBlobs.has(info.digest)) candidates.push(info.digest);
    });
    const removed: Digest[] = [];
    for (const digest of candidates) {
      try {
        await backing.delete(digest);
        removed.push(digest);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    const abortedIngests: string[] = [];
    for (const status of await backing.listStatuses()) {
      if (swept.keepIngests.has(status.ref)) continue;
      try {
        await backing.abort(status.ref);
        abortedIngests.push(status.ref);
      } catch (err) {
        // A writer still holds it (someone using the backing store directly): leave it be.
        if (!isNotFound(err) && !isUnavailable(err)) throw err;
      }
    }
    return {
      removed,
      removedRecords: swept.removedRecords,
      removedLeases: swept.removedLeases,
      removedIngests: swept.removedIngests,
      abortedIngests,
    };
  } finally {
    release();
  }
}
