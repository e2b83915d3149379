import { labelField, matchFilters, parseFilters } from "@berth/content";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "@berth/errdefs";
import { acquireGcShared } from "./gc-lock.js";
import { type MetadataInternals, parseLabels, stringifyLabels } from "./internals.js";
import { addLeaseResource } from "./leases.js";
import type {
  SnapshotAllocation,
  SnapshotRecord,
  SnapshotRecordInput,
  SnapshotRecordKind,
  SnapshotRecordStore,
  SnapshotWriteOptions,
} from "./types.js";
import { applyLabelUpdate, validateIdentifier, validateLabels } from "./validate.js";

interface SnapshotRow {
  key: string;
  kind: SnapshotRecordKind;
  parent: string | null;
  backend_key: string;
  labels: string;
  created_at: number;
  updated_at: number;
}

function toRecord(row: SnapshotRow): SnapshotRecord {
  return {
    key: row.key,
    kind: row.kind,
    ...(row.parent === null ? {} : { parent: row.parent }),
    backendKey: row.backend_key,
    labels: parseLabels(row.labels),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

/** Checks a snapshot key or name: a non-empty string without NUL (GC uses NUL as its separator). */
function validateKey(what: string, key: unknown): asserts key is string {
  if (typeof key !== "string" || key === "") throw invalidArgument(`${what} must not be empty`);
  if (key.includes("\0")) throw invalidArgument(`${what} ${JSON.stringify(key)}: must not contain NUL`);
}

/** Queues a backend snapshot for removal by the next GC, inside the caller's transaction. @internal */
export function queueBackendRemoval(
  s: MetadataInternals,
  snapshotter: string,
  backendKey: string,
  backendParent: string | null,
  now: number,
): void {
  s.stmt(
    `INSERT INTO snapshot_removals (snapshotter, backend_key, backend_parent, removed_at)
     VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`,
  ).run(snapshotter, backendKey, backendParent, now);
}

/** The snapshot records of one namespace and snapshotter. @internal */
export function createSnapshotRecordStore(
  state: () => MetadataInternals,
  namespace: string,
  snapshotter: string,
): SnapshotRecordStore {
  validateIdentifier("snapshotter name", snapshotter);
  const where = `in namespace ${namespace} (snapshotter ${snapshotter})`;
  const resourceType = `snapshots/${snapshotter}` as const;

  const getRow = (s: MetadataInternals, key: string) =>
    s
      .stmt("SELECT * FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?")
      .get(namespace, snapshotter, key) as SnapshotRow | undefined;
  const requireRow = (s: MetadataInternals, key: string, what = "snapshot") => {
    const row = getRow(s, key);
    if (row === undefined) throw notFound(`${what} ${JSON.stringify(key)} ${where} not found`);
    return row;
  };
  const backendParentOf = (s: MetadataInternals, row: SnapshotRow): string | null =>
    row.parent === null ? null : (getRow(s, row.parent)?.backend_key ?? null);
  const requireLease = (s: MetadataInternals, lease: string | undefined) => {
    if (lease === undefined) return;
    if (s.stmt("SELECT 1 FROM leases WHERE namespace = ? AND id = ?").get(namespace, lease) === undefined)
      throw notFound(`lease ${lease} in namespace ${namespace} not found`);
  };
  const nextBackendKey = (s: MetadataInternals, key: string) => {
    const n = s
      .stmt(
        `INSERT INTO snapshot_sequences (snapshotter, value) VALUES (?, 1)
         ON CONFLICT (snapshotter) DO UPDATE SET value = value + 1 RETURNING value`,
      )
      .pluck()
      .get(snapshotter) as number;
    return `${namespace}/${n}/${key}`;
  };

  const validateInput = (input: SnapshotRecordInput) => {
    validateKey("snapshot key", input.key);
    if (input.kind !== "active" && input.kind !== "view") {
      throw invalidArgument(
        `snapshot ${JSON.stringify(input.key)}: kind ${JSON.stringify(input.kind)} cannot be created, only "active" or "view"`,
      );
    }
    if (input.parent !== undefined)
      validateKey(`parent of snapshot ${JSON.stringify(input.key)}`, input.parent);
    validateLabels(`snapshot ${JSON.stringify(input.key)}`, input.labels ?? {});
  };
  /** The checks of allocate and create; returns the parent's row. */
  const checkCreate = (s: MetadataInternals, input: SnapshotRecordInput): SnapshotRow | undefined => {
    if (getRow(s, input.key) !== undefined)
      throw alreadyExists(`snapshot ${JSON.stringify(input.key)} ${where} already exists`);
    if (input.parent === undefined) return undefined;
    const parent = requireRow(s, input.parent, `parent snapshot of ${JSON.stringify(input.key)},`);
    if (parent.kind !== "committed") {
      throw failedPrecondition(
        `snapshot ${JSON.stringify(input.key)} ${where}: parent ${JSON.stringify(input.parent)} is ${parent.kind}, not committed`,
      );
    }
    return parent;
  };
  const insert = (
    s: MetadataInternals,
    row: Omit<SnapshotRow, "created_at" | "updated_at">,
    lease: string | undefined,
    now: number,
  ) => {
    s.stmt(
      `INSERT INTO snapshots (namespace, snapshotter, key, kind, parent, backend_key, labels, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(namespace, snapshotter, row.key, row.kind, row.parent, row.backend_key, row.labels, now, now);
    if (lease !== undefined) addLeaseResource(s, namespace, lease, { type: resourceType, id: row.key });
    return toRecord(requireRow(s, row.key));
  };

  return {
    namespace,
    snapshotter,

    async get(key) {
      validateKey("snapshot key", key);
      return toRecord(requireRow(state(), key));
    },

    async list(filters) {
      const parsed = parseFilters(filters);
      const rows = state()
        .stmt("SELECT * FROM snapshots WHERE namespace = ? AND snapshotter = ? ORDER BY key")
        .all(namespace, snapshotter) as SnapshotRow[];
      return rows.map(toRecord).filter((record) =>
        matchFilters(parsed, ([field, ...rest]) => {
          if (field === "labels") return labelField(record.labels, rest);
          if (rest.length !== 0) return undefined;
          if (field === "kind") return record.kind;
          if (field === "name") return record.key;
          if (field === "parent") return record.parent;
          return undefined;
        }),
      );
    },

    async allocate(input, options: SnapshotWriteOptions = {}) {
      validateInput(input);
      const s = state();
      return s.write((): SnapshotAllocation => {
        const parent = checkCreate(s, input);
        requireLease(s, options.lease);
        const backendKey = nextBackendKey(s, input.key);
        return parent === undefined ? { backendKey } : { backendKey, backendParent: parent.backend_key };
      });
    },

    async create(input, options: SnapshotWriteOptions = {}) {
      validateInput(input);
      validateKey(`backend key of snapshot ${JSON.stringify(input.key)}`, input.backendKey);
      const s = state();
      return s.write(() => {
        const now = Date.now();
        s.ensureNamespace(namespace, now);
        checkCreate(s, input);
        return insert(
          s,
          {
            key: input.key,
            kind: input.kind,
            parent: input.parent ?? null,
            backend_key: input.backendKey,
            labels: stringifyLabels(input.labels ?? {}),
          },
          options.lease,
          now,
        );
      });
    },

    async allocateCommit(name, key, options: SnapshotWriteOptions = {}) {
      validateKey("committed snapshot name", name);
      validateKey("snapshot key", key);
      const s = state();
      return s.write(() => {
        const active = requireRow(s, key);
        if (active.kind !== "active") {
          throw failedPrecondition(
            `cannot commit snapshot ${JSON.stringify(key)} ${where}: it is ${active.kind}, only active snapshots can be committed`,
          );
        }
        if (getRow(s, name) !== undefined)
          throw alreadyExists(`snapshot ${JSON.stringify(name)} ${where} already exists`);
        requireLease(s, options.lease);
        return { backendKey: nextBackendKey(s, name), active: toRecord(active) };
      });
    },

    async commit(input, options: SnapshotWriteOptions = {}) {
      const { name, key, backendKey } = input;
      validateKey("committed snapshot name", name);
      validateKey("snapshot key", key);
      validateKey(`backend key of snapshot ${JSON.stringify(name)}`, backendKey);
      validateLabels(`snapshot ${JSON.stringify(name)}`, input.labels ?? {});
      const s = state();
      // The backend commit already happened, so a conflict found here cannot roll it back: the
      // transaction still commits its cleanup, and the error is thrown after it.
      const outcome = s.write((): SnapshotRecord | Error => {
        const now = Date.now();
        const active = getRow(s, key);
        if (active === undefined || active.kind !== "active") {
          queueBackendRemoval(s, snapshotter, backendKey, null, now);
          return notFound(
            `snapshot ${JSON.stringify(key)} ${where} was removed while it was being committed`,
          );
        }
        const backendParent = backendParentOf(s, active);
        if (getRow(s, name) !== undefined) {
          s.stmt("DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?").run(
            namespace,
            snapshotter,
            key,
          );
          queueBackendRemoval(s, snapshotter, active.backend_key, backendParent, now);
          queueBackendRemoval(s, snapshotter, backendKey, backendParent, now);
          return alreadyExists(
            `snapshot ${JSON.stringify(name)} ${where} was created while ${JSON.stringify(key)} was being committed to it; ${JSON.stringify(key)} is gone`,
          );
        }
        const labels = stringifyLabels({ ...parseLabels(active.labels), ...(input.labels ?? {}) });
        s.stmt("DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?").run(
          namespace,
          snapshotter,
          key,
        );
        // A lease deleted meanwhile means the operation it protected is over: the commit still lands.
        const lease =
          options.lease !== undefined &&
          s.stmt("SELECT 1 FROM leases WHERE namespace = ? AND id = ?").get(namespace, options.lease) !==
            undefined
            ? options.lease
            : undefined;
        if (lease !== undefined) {
          s.stmt("DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?").run(
            namespace,
            lease,
            resourceType,
            key,
          );
        }
        return insert(
          s,
          { key: name, kind: "committed", parent: active.parent, backend_key: backendKey, labels },
          lease,
          now,
        );
      });
      if (outcome instanceof Error) throw outcome;
      return outcome;
    },

    async share(input, options: SnapshotWriteOptions = {}) {
      validateKey("snapshot key", input.key);
      if (input.parent !== undefined)
        validateKey(`parent of snapshot ${JSON.stringify(input.key)}`, input.parent);
      validateLabels(`snapshot ${JSON.stringify(input.key)}`, input.labels ?? {});
      const s = state();
      return s.write(() => {
        if (getRow(s, input.key) !== undefined) return undefined;
        requireLease(s, options.lease);
        let backendParent: string | null = null;
        if (input.parent !== undefined) {
          const parent = getRow(s, input.parent);
          if (parent === undefined || parent.kind !== "committed") return undefined;
          backendParent = parent.backend_key;
        }
        const candidates = s
          .stmt(
            `SELECT namespace, parent, backend_key FROM snapshots
             WHERE snapshotter = ? AND key = ? AND kind = 'committed' AND namespace != ?
             ORDER BY created_at`,
          )
          .all(snapshotter, input.key, namespace) as {
          namespace: string;
          parent: string | null;
          backend_key: string;
        }[];
        for (const candidate of candidates) {
          const theirParent =
            candidate.parent === null
              ? null
              : (s
                  .stmt(
                    "SELECT backend_key FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?",
                  )
                  .pluck()
                  .get(candidate.namespace, snapshotter, candidate.parent) as string | undefined);
          // Same name over a different backend parent is a different filesystem: not shareable.
          if (theirParent !== backendParent) continue;
          const now = Date.now();
          s.ensureNamespace(namespace, now);
          return insert(
            s,
            {
              key: input.key,
              kind: "committed",
              parent: input.parent ?? null,
              backend_key: candidate.backend_key,
              labels: stringifyLabels(input.labels ?? {}),
            },
            options.lease,
            now,
          );
        }
        return undefined;
      });
    },

    async update(key, labels, fieldpaths) {
      validateKey("snapshot key", key);
      validateLabels(`snapshot ${JSON.stringify(key)}`, labels);
      const s = state();
      return s.write(() => {
        const row = requireRow(s, key);
        const previous = parseLabels(row.labels);
        const { labels: next, rest } = applyLabelUpdate(previous, labels, fieldpaths);
        if (rest.length > 0) {
          throw invalidArgument(
            `snapshot ${JSON.stringify(key)} ${where}: cannot update field ${JSON.stringify(rest[0])}, only labels`,
          );
        }
        s.stmt(
          "UPDATE snapshots SET labels = ?, updated_at = ? WHERE namespace = ? AND snapshotter = ? AND key = ?",
        ).run(stringifyLabels(next), Date.now(), namespace, snapshotter, key);
        return { record: toRecord(requireRow(s, key)), previous };
      });
    },

    async restoreLabels(key, labels) {
      validateKey("snapshot key", key);
      const s = state();
      s.write(() => {
        requireRow(s, key);
        s.stmt("UPDATE snapshots SET labels = ? WHERE namespace = ? AND snapshotter = ? AND key = ?").run(
          stringifyLabels(labels),
          namespace,
          snapshotter,
          key,
        );
      });
    },

    async remove(key) {
      validateKey("snapshot key", key);
      const s = state();
      return s.write(() => {
        const row = requireRow(s, key);
        const children = s
          .stmt(
            "SELECT key FROM snapshots WHERE namespace = ? AND snapshotter = ? AND parent = ? ORDER BY key",
          )
          .pluck()
          .all(namespace, snapshotter, key) as string[];
        if (children.length > 0) {
          throw failedPrecondition(
            `cannot remove snapshot ${JSON.stringify(key)} ${where}: it is the parent of ${children.map((c) => JSON.stringify(c)).join(", ")}`,
          );
        }
        s.stmt("DELETE FROM snapshots WHERE namespace = ? AND snapshotter = ? AND key = ?").run(
          namespace,
          snapshotter,
          key,
        );
        queueBackendRemoval(s, snapshotter, row.backend_key, backendParentOf(s, row), Date.now());
        return toRecord(row);
      });
    },

    async discard(backendKey, backendParent) {
      validateKey("backend key", backendKey);
      const s = state();
      s.write(() => queueBackendRemoval(s, snapshotter, backendKey, backendParent ?? null, Date.now()));
    },

    async withGcLock(fn) {
      const release = await acquireGcShared(state().gcLockPath);
      try {
        return await fn();
      } finally {
        release();
      }
    },
  };
}
