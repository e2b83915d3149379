import { alreadyExists, failedPrecondition, isNotFound } from "@berth/errdefs";
import type { Metadata, SnapshotRecord } from "@berth/metadata";
import { filterInheritedLabels, SnapshotLabels } from "./labels.js";
import type { Info, Mount, SnapshotOptions, Snapshotter } from "./types.js";

/** Options of {@link namespacedSnapshotter}. */
export interface NamespacedSnapshotterOptions {
  /**
   * A lease of the namespace (see `Metadata.leases`): every snapshot this snapshotter creates or
   * commits is added to it (resource type `snapshots/<snapshotterName>`) in the same transaction
   * as its record, so garbage collection keeps it until the lease goes. A missing lease makes
   * those calls fail with `not-found`.
   */
  readonly lease?: string;
}

function toInfo(record: SnapshotRecord): Info {
  return {
    kind: record.kind,
    name: record.key,
    ...(record.parent === undefined ? {} : { parent: record.parent }),
    labels: record.labels,
    created: record.createdAt,
    updated: record.updatedAt,
  };
}

function withLabels(labels: Record<string, string> | undefined): SnapshotOptions | undefined {
  return labels === undefined ? undefined : { labels };
}

/** The `labels.<key>` fieldpaths of the inherited labels that differ between `before` and `after`. */
function changedInherited(
  before: Readonly<Record<string, string>>,
  after: Readonly<Record<string, string>>,
): string[] {
  const a = filterInheritedLabels(before) ?? {};
  const b = filterInheritedLabels(after) ?? {};
  const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
  return [...keys].filter((k) => a[k] !== b[k]).map((k) => `labels.${k}`);
}

/**
 * One namespace's view of a shared backend snapshotter (containerd's `metadata/snapshot.go`).
 * Snapshot records live in the metadata database (`meta.snapshots(namespace, snapshotterName)`);
 * each namespace key maps to a backend key unique across namespaces (`<namespace>/<n>/<key>`), so
 * namespaces share one backend without seeing or touching each other's snapshots, and two
 * namespaces committing the same chain ID each get their own record.
 *
 * - `prepare`/`view` check the record store, create the backend snapshot with only the inherited
 *   labels (`containerd.io/snapshot/…`), then write the record; if the record cannot be written,
 *   the backend snapshot is removed again (or, failing that, queued for GC).
 * - `commit` commits in the backend under a fresh backend name and moves the record; labels merge.
 * - `remove` removes the record only; the backend snapshot goes at the next `collectGarbage` of
 *   `@berth/metadata` that is given this backend in `snapshotters`, once no record uses it.
 * - `stat`, `update`, `walk` read and write the records (labels are the namespace's own; a change
 *   to inherited labels is passed on to the backend); `usage`, `mounts` ask the backend.
 * - Sharing (containerd's unpack optimisation): `prepare` with the label
 *   `containerd.io/snapshot.ref` = `<target>` throws `already-exists` when `<target>` already
 *   exists in this namespace, and also when another namespace committed `<target>` on the same
 *   backend parent — then this namespace gets a committed record `<target>` over that same backend
 *   snapshot, and the unpacker skips the layer. Without the label nothing is shared.
 *
 * Snapshot creation and commit hold the shared GC lock of the metadata root, so a collection never
 * sees a backend snapshot whose record is still being written. Remember that GC collects snapshot
 * records nothing references (as containerd does): keep live ones with a lease, a
 * `containerd.io/gc.root` label, or an image whose config labels reference them.
 *
 * Errors are the {@link Snapshotter} ones. The caller owns `meta` and `backend`: `close()` only
 * makes this view unusable (`failed-precondition` afterwards) and closes neither.
 */
export function namespacedSnapshotter(
  meta: Metadata,
  backend: Snapshotter,
  snapshotterName: string,
  namespace: string,
  options: NamespacedSnapshotterOptions = {},
): Snapshotter {
  const records = meta.snapshots(namespace, snapshotterName);
  const lease = options.lease;
  const leaseOpt = lease === undefined ? {} : { lease };
  let closed = false;
  const open = () => {
    if (closed) {
      throw failedPrecondition(`snapshotter ${snapshotterName} of namespace ${namespace} is closed`);
    }
  };

  async function create(
    kind: "active" | "view",
    key: string,
    parent: string | undefined,
    opts: SnapshotOptions | undefined,
  ): Promise<Mount[]> {
    open();
    const labels = opts?.labels ?? {};
    const input = { key, kind, labels, ...(parent === undefined ? {} : { parent }) };
    return records.withGcLock(async () => {
      const target = kind === "active" ? labels[SnapshotLabels.UncompressedRef] : undefined;
      if (target !== undefined && target !== "") await shareTarget(target, parent, labels);
      const alloc = await records.allocate(input, leaseOpt);
      const backendLabels = withLabels(filterInheritedLabels(labels));
      const mounts =
        kind === "active"
          ? await backend.prepare(alloc.backendKey, alloc.backendParent, backendLabels)
          : await backend.view(alloc.backendKey, alloc.backendParent, backendLabels);
      try {
        await records.create({ ...input, backendKey: alloc.backendKey }, leaseOpt);
      } catch (err) {
        // The record lost (a racing create of the same key, the parent or lease removed
        // meanwhile): the backend snapshot must not outlive it.
        await backend
          .remove(alloc.backendKey)
          .catch(() => records.discard(alloc.backendKey, alloc.backendParent).catch(() => {}));
        throw err;
      }
      return mounts;
    });
  }

  /** Throws `already-exists` when the layer `target` is here already or could be shared. */
  async function shareTarget(
    target: string,
    parent: string | undefined,
    labels: Readonly<Record<string, string>>,
  ): Promise<void> {
    let existing: SnapshotRecord | undefined;
    try {
      existing = await records.get(target);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      existing = await records.share(
        { key: target, labels, ...(parent === undefined ? {} : { parent }) },
        leaseOpt,
      );
    }
    if (existing === undefined) return;
    if (lease !== undefined) {
      await meta.leases(namespace).addResource(lease, { type: `snapshots/${snapshotterName}`, id: target });
    }
    throw alreadyExists(`target snapshot ${JSON.stringify(target)} in namespace ${namespace} already exists`);
  }

  return {
    async stat(key) {
      open();
      return toInfo(await records.get(key));
    },

    async update(info, fieldpaths) {
      open();
      const { record, previous } = await records.update(info.name, info.labels, fieldpaths);
      const changed = changedInherited(previous, record.labels);
      if (changed.length > 0) {
        try {
          await backend.update(
            { name: record.backendKey, labels: filterInheritedLabels(record.labels) ?? {} },
            changed,
          );
        } catch (err) {
          await records.restoreLabels(record.key, previous).catch(() => {});
          throw err;
        }
      }
      return toInfo(record);
    },

    async usage(key) {
      open();
      return backend.usage((await records.get(key)).backendKey);
    },

    async mounts(key) {
      open();
      return backend.mounts((await records.get(key)).backendKey);
    },

    prepare(key, parent, opts) {
      return create("active", key, parent, opts);
    },

    view(key, parent, opts) {
      return create("view", key, parent, opts);
    },

    async commit(name, key, opts) {
      open();
      await records.withGcLock(async () => {
        const { backendKey, active } = await records.allocateCommit(name, key, leaseOpt);
        const merged = { ...active.labels, ...(opts?.labels ?? {}) };
        await backend.commit(backendKey, active.backendKey, withLabels(filterInheritedLabels(merged)));
        await records.commit(
          { name, key, backendKey, ...(opts?.labels === undefined ? {} : { labels: opts.labels }) },
          leaseOpt,
        );
      });
    },

    async remove(key) {
      open();
      await records.remove(key);
    },

    async walk(fn, filters) {
      open();
      // Listed first, then called back: `fn` may use this snapshotter (stat, even remove).
      for (const record of await records.list(filters)) await fn(toInfo(record));
    },

    async close() {
      closed = true;
    },
  };
}
