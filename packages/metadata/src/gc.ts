import { type ContentStore, type Digest, Labels as GcLabels } from "@berth/content";
import { isFailedPrecondition, isNotFound, isUnavailable } from "@berth/errdefs";
import { acquireGcExclusive } from "./gc-lock.js";
import { internals, parseLabels } from "./internals.js";
import { expiryOf } from "./leases.js";
import { queueBackendRemoval } from "./snapshots.js";
import type { GcSnapshotter, Metadata } from "./types.js";

/** Options for {@link collectGarbage}. */
export interface GcOptions {
  /** The time leases and ingests are judged expired against; defaults to now. */
  readonly now?: Date;
  /**
   * The backend snapshotters by name (the name snapshot records and lease resources use, e.g.
   * `overlayfs`). For each one given, backend snapshots that no snapshot record of any namespace
   * uses any more are removed, children before parents. A snapshotter not given keeps its
   * backend snapshots (their removal stays queued) while its records are still collected.
   * Defaults to the `snapshotters` given to `openMetadata`.
   */
  readonly snapshotters?: Readonly<Record<string, GcSnapshotter>>;
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
  /** Snapshot records dropped because nothing reachable referenced them. */
  readonly removedSnapshotRecords: {
    readonly namespace: string;
    readonly snapshotter: string;
    readonly key: string;
  }[];
  /** Backend snapshots removed, in removal order (children before parents). */
  readonly removedSnapshots: { readonly snapshotter: string; readonly backendKey: string }[];
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
interface SnapshotRow {
  namespace: string;
  snapshotter: string;
  key: string;
  parent: string | null;
  backend_key: string;
  labels: string;
}
interface RemovalRow {
  snapshotter: string;
  backend_key: string;
  backend_parent: string | null;
}
interface ImageRow {
  namespace: string;
  target_digest: string;
  labels: string;
}

// Graph node keys; NUL cannot occur in namespaces, digests, refs or snapshot keys.
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
      // `containerd.io/gc.ref.snapshot.<snapshotter>` or `….<snapshotter>/<anything>`.
      const snapshotter = key.slice(GcLabels.GcRefSnapshot.length + 1).split("/")[0] ?? "";
      if (snapshotter !== "") out.push(snapshotNode(ns, snapshotter, value));
    }
  }
  return out;
}

/**
 * Collects garbage across every namespace of `meta` and then in `backing` (the shared blob store
 * under the namespaced views), containerd style: mark from the roots, sweep what was not marked.
 *
 * Roots: every image (its target and its `containerd.io/gc.ref.*` labels); content and snapshot
 * records labelled `containerd.io/gc.root`; the resources of every lease that has not expired (a
 * lease labelled `containerd.io/gc.flat` protects its resources but not what they reference);
 * ingest records that have not expired (their expected digest included). Marking follows, within
 * a namespace, `containerd.io/gc.ref.content*` and `containerd.io/gc.ref.snapshot.<snapshotter>`
 * labels of content and snapshot records, and the parent of every marked snapshot (always, flat
 * lease or not: a snapshot cannot exist without its parent).
 *
 * Swept, in one SQLite transaction: unmarked content, ingest and snapshot records, and expired
 * leases; the backend snapshots of swept snapshot records are queued for removal. Then, still
 * under the exclusive GC lock: blobs of `backing` that no namespace records (and no live ingest
 * expects) are deleted, backing ingests no ingest record owns are aborted (one with an active
 * writer is skipped), and for every snapshotter in `options.snapshotters` the backend snapshots
 * no snapshot record uses are removed, children first (see `GcSnapshotter`). Anything
 * written to `backing` directly, bypassing the namespaced stores, is therefore garbage — as in
 * containerd. So is a snapshot record nothing references: an active snapshot that should survive
 * needs a lease, a `containerd.io/gc.root` label, or (later) a container.
 *
 * Not collected yet: containers, empty namespaces. Concurrency: takes the exclusive lock on
 * `<root>/gc.lock`, so it waits for commits and snapshot creations in flight in any process and
 * holds new ones off until it is done. Backend removal errors other than `not-found` and
 * `failed-precondition` are thrown once the whole sweep is done.
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
      const snapshots = state
        .stmt("SELECT namespace, snapshotter, key, parent, backend_key, labels FROM snapshots")
        .all() as SnapshotRow[];

      // Out-edges of every node that has any.
      const edges = new Map<string, string[]>();
      // A snapshot's parent, marked together with it even when references are not followed.
      const parents = new Map<string, string>();
      for (const row of snapshots) {
        const node = snapshotNode(row.namespace, row.snapshotter, row.key);
        const out = labelRefs(row.namespace, parseLabels(row.labels));
        if (row.parent !== null) {
          const parent = snapshotNode(row.namespace, row.snapshotter, row.parent);
          parents.set(node, parent);
          out.push(parent);
        }
        edges.set(node, out);
      }
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
        if (!follow) {
          // Still keep the parent chain: a child in the backend pins its parents there anyway.
          for (let n: string | undefined = node; n !== undefined && !marked.has(n); n = parents.get(n))
            marked.add(n);
          return;
        }
        marked.add(node);
        if (!followed.has(node)) {
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
      for (const row of snapshots) {
        if (parseLabels(row.labels)[GcLabels.GcRoot] !== undefined)
          mark(snapshotNode(row.namespace, row.snapshotter, row.key), true);
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

      // Snapshot records: a marked snapshot's parent is marked too, so deleting every unmarked
      // record never leaves a dangling parent (the foreign key is checked at commit).
      const removedSnapshotRecords: { namespace: string; snapshotter: string; key: string }[] = [];
      const deleteSnapshot = state.stmt(
        "DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
      );
      const backendKeyOf = new Map<string, string>();
      for (const row of snapshots)
        backendKeyOf.set(snapshotNode(row.namespace, row.snapshotter, row.key), row.backend_key);
      const keepSnapshots = new Map<string, Set<string>>();
      for (const row of snapshots) {
        const node = snapshotNode(row.namespace, row.snapshotter, row.key);
        if (marked.has(node)) {
          const keep = keepSnapshots.get(row.snapshotter) ?? new Set<string>();
          keepSnapshots.set(row.snapshotter, keep);
          keep.add(row.backend_key);
          continue;
        }
        deleteSnapshot.run(row.namespace, row.snapshotter, row.key);
        const parent = parents.get(node);
        queueBackendRemoval(
          state,
          row.snapshotter,
          row.backend_key,
          (parent === undefined ? undefined : backendKeyOf.get(parent)) ?? null,
          now,
        );
        removedSnapshotRecords.push({ namespace: row.namespace, snapshotter: row.snapshotter, key: row.key });
      }
      const removals = state
        .stmt("SELECT snapshotter, backend_key, backend_parent FROM snapshot_removals")
        .all() as RemovalRow[];

      return {
        removedRecords,
        removedIngests,
        removedLeases: expiredLeases.map((l) => ({ namespace: l.namespace, id: l.id })),
        removedSnapshotRecords,
        keepBlobs,
        keepIngests,
        keepSnapshots,
        removals,
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
    const removedSnapshots: { snapshotter: string; backendKey: string }[] = [];
    let failure: unknown;
    const snapshotters = options.snapshotters ?? state.options.snapshotters ?? {};
    for (const [name, snapshotter] of Object.entries(snapshotters)) {
      const outcome = await sweepSnapshotter(
        snapshotter,
        swept.keepSnapshots.get(name) ?? new Set(),
        swept.removals.filter((r) => r.snapshotter === name),
      );
      for (const backendKey of outcome.removed) removedSnapshots.push({ snapshotter: name, backendKey });
      failure ??= outcome.failure;
      if (outcome.settled.length > 0) {
        const settle = state.stmt("DELETE FROM snapshot_removals WHERE snapshotter = ? AND backend_key = ?");
        state.write(() => {
          for (const key of outcome.settled) settle.run(name, key);
        });
      }
    }
    if (failure !== undefined) throw failure;
    return {
      removed,
      removedRecords: swept.removedRecords,
      removedLeases: swept.removedLeases,
      removedIngests: swept.removedIngests,
      abortedIngests,
      removedSnapshotRecords: swept.removedSnapshotRecords,
      removedSnapshots,
    };
  } finally {
    release();
  }
}

/**
 * Removes the backend snapshots of one snapshotter that no record uses (`keep`): with `walk`, all
 * of them; without, the queued `removals`. Children go before parents; `settled` lists the queued
 * removals that need no further attempt (done, already gone, or in use again).
 */
async function sweepSnapshotter(
  snapshotter: GcSnapshotter,
  keep: ReadonlySet<string>,
  removals: readonly RemovalRow[],
): Promise<{ removed: string[]; settled: string[]; failure: unknown }> {
  const parentOf = new Map<string, string | undefined>();
  for (const r of removals) parentOf.set(r.backend_key, r.backend_parent ?? undefined);
  let candidates: Set<string>;
  const settled: string[] = [];
  if (snapshotter.walk !== undefined) {
    const present = new Map<string, string | undefined>();
    await snapshotter.walk((info) => {
      present.set(info.name, info.parent);
    });
    for (const [key, parent] of present) parentOf.set(key, parent);
    // Whatever a kept snapshot stands on is kept too, even if no record names it.
    const protectedKeys = new Set<string>();
    for (const key of keep) {
      for (let k: string | undefined = key; k !== undefined && !protectedKeys.has(k); k = present.get(k))
        protectedKeys.add(k);
    }
    candidates = new Set([...present.keys()].filter((k) => !protectedKeys.has(k)));
    for (const r of removals) if (!present.has(r.backend_key)) settled.push(r.backend_key);
  } else {
    candidates = new Set(removals.map((r) => r.backend_key).filter((k) => !keep.has(k)));
  }
  for (const r of removals) if (keep.has(r.backend_key)) settled.push(r.backend_key);

  // Depth within the candidate forest: removing deepest first removes children before parents.
  const depth = new Map<string, number>();
  const depthOf = (key: string): number => {
    const chain: string[] = [];
    let k: string | undefined = key;
    let base = 0;
    while (k !== undefined && candidates.has(k) && !chain.includes(k)) {
      const known = depth.get(k);
      if (known !== undefined) {
        base = known + 1;
        break;
      }
      chain.push(k);
      k = parentOf.get(k);
    }
    for (let i = chain.length - 1; i >= 0; i--) depth.set(chain[i] as string, base++);
    return depth.get(key) ?? 0;
  };
  const ordered = [...candidates].sort((a, b) => depthOf(b) - depthOf(a) || (a < b ? -1 : a > b ? 1 : 0));

  const removed: string[] = [];
  let failure: unknown;
  for (const key of ordered) {
    try {
      await snapshotter.remove(key);
      removed.push(key);
      settled.push(key);
    } catch (err) {
      if (isNotFound(err)) settled.push(key);
      // Children this collection does not know of: the next collection tries again.
      else if (isFailedPrecondition(err)) continue;
      else failure ??= err;
    }
  }
  return { removed, settled, failure };
}
