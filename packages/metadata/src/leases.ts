import { randomBytes } from "node:crypto";
import { Labels as GcLabels, labelField, matchFilters, parseFilters } from "@berth/content";
import { alreadyExists, invalidArgument, isNotFound, notFound } from "@berth/errdefs";
import { collectGarbage } from "./gc.js";
import { type MetadataInternals, parseLabels, stringifyLabels, syncContentStore } from "./internals.js";
import type { Lease, LeaseManager, LeaseResource, Metadata } from "./types.js";
import { validateDigest, validateIdentifier, validateLabels } from "./validate.js";

interface LeaseRow {
  id: string;
  labels: string;
  created_at: number;
}

/** Default lifetime of {@link LeaseManager.withLease} leases: containerd's client uses 24 hours. */
const defaultWithLeaseMs = 24 * 60 * 60 * 1000;

/** Reads the expiry of a lease (or any object) from its `containerd.io/gc.expire` label. @internal */
export function expiryOf(labels: Readonly<Record<string, string>>): Date | undefined {
  const text = labels[GcLabels.GcExpire];
  if (text === undefined) return undefined;
  const when = new Date(text);
  // An unparsable expiry never expires: dropping protection on a typo would lose data.
  return Number.isNaN(when.getTime()) ? undefined : when;
}

function toLease(row: LeaseRow): Lease {
  const labels = parseLabels(row.labels);
  const expiresAt = expiryOf(labels);
  return {
    id: row.id,
    labels,
    createdAt: new Date(row.created_at),
    ...(expiresAt === undefined ? {} : { expiresAt }),
  };
}

/** Checks a lease resource; `invalid-argument` for an unknown type or a malformed ID. @internal */
export function validateResource(resource: LeaseResource): void {
  const { type, id } = resource;
  if (typeof id !== "string" || id === "") throw invalidArgument(`lease resource of type ${type}: empty id`);
  if (type === "content") validateDigest("lease content resource", id);
  else if (type === "ingests") return;
  else if (typeof type === "string" && type.startsWith("snapshots/") && type.length > "snapshots/".length)
    return;
  else {
    throw invalidArgument(
      `lease resource type ${JSON.stringify(type)}: must be "content", "ingests" or "snapshots/<snapshotter>"`,
    );
  }
}

/** Generates a lease ID that satisfies the identifier rules and sorts by creation time. */
function newLeaseId(): string {
  return `${Date.now().toString(36)}-${randomBytes(6).toString("hex")}`;
}

/** Adds a resource to a lease inside the caller's transaction; `not-found` if the lease is absent. @internal */
export function addLeaseResource(
  s: MetadataInternals,
  namespace: string,
  lease: string,
  resource: LeaseResource,
): void {
  const exists = s.stmt("SELECT 1 FROM leases WHERE namespace = ? AND id = ?").get(namespace, lease);
  if (exists === undefined) throw notFound(`lease ${lease} in namespace ${namespace} not found`);
  s.stmt(
    "INSERT INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
  ).run(namespace, lease, resource.type, resource.id);
}

/** The lease manager of one namespace. @internal */
export function createLeaseManager(
  state: () => MetadataInternals,
  meta: Metadata,
  namespace: string,
): LeaseManager {
  const where = `in namespace ${namespace}`;
  const getRow = (s: MetadataInternals, id: string) =>
    s.stmt("SELECT id, labels, created_at FROM leases WHERE namespace = ? AND id = ?").get(namespace, id) as
      | LeaseRow
      | undefined;
  const requireLease = (s: MetadataInternals, id: string) => {
    const row = getRow(s, id);
    if (row === undefined) throw notFound(`lease ${id} ${where} not found`);
    return row;
  };

  const manager: LeaseManager = {
    async create(options = {}) {
      const id = options.id ?? newLeaseId();
      validateIdentifier("lease id", id);
      const labels: Record<string, string> = { ...(options.labels ?? {}) };
      if (options.expiresAt !== undefined) {
        if (Number.isNaN(options.expiresAt.getTime()))
          throw invalidArgument(`lease ${id}: invalid expiresAt`);
        labels[GcLabels.GcExpire] = options.expiresAt.toISOString();
      }
      if (options.flat === true) labels[GcLabels.GcFlat] = "true";
      validateLabels(`lease ${id}`, labels);
      const s = state();
      return s.write(() => {
        const now = Date.now();
        s.ensureNamespace(namespace, now);
        if (getRow(s, id) !== undefined) throw alreadyExists(`lease ${id} ${where} already exists`);
        s.stmt("INSERT INTO leases (namespace, id, labels, created_at) VALUES (?, ?, ?, ?)").run(
          namespace,
          id,
          stringifyLabels(labels),
          now,
        );
        return toLease(getRow(s, id) as LeaseRow);
      });
    },

    async list(filters) {
      const parsed = parseFilters(filters);
      const rows = state()
        .stmt("SELECT id, labels, created_at FROM leases WHERE namespace = ? ORDER BY id")
        .all(namespace) as LeaseRow[];
      return rows.map(toLease).filter((lease) =>
        matchFilters(parsed, ([field, ...rest]) => {
          if (field === "id") return rest.length === 0 ? lease.id : undefined;
          if (field === "labels") return labelField(lease.labels, rest);
          return undefined;
        }),
      );
    },

    async delete(id, options = {}) {
      const s = state();
      const backing = options.sync === true ? syncContentStore(s, `delete lease ${id} ${where}`) : undefined;
      s.write(() => {
        // lease_resources rows go with it (ON DELETE CASCADE).
        const result = s.stmt("DELETE FROM leases WHERE namespace = ? AND id = ?").run(namespace, id);
        if (result.changes === 0) throw notFound(`lease ${id} ${where} not found`);
      });
      if (backing !== undefined) await collectGarbage(meta, backing);
    },

    async addResource(id, resource) {
      validateResource(resource);
      const s = state();
      s.write(() => addLeaseResource(s, namespace, id, resource));
    },

    async deleteResource(id, resource) {
      validateResource(resource);
      const s = state();
      s.write(() => {
        requireLease(s, id);
        s.stmt("DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?").run(
          namespace,
          id,
          resource.type,
          resource.id,
        );
      });
    },

    async listResources(id) {
      const s = state();
      return s.read(() => {
        requireLease(s, id);
        return s
          .stmt("SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id")
          .all(namespace, id) as LeaseResource[];
      });
    },

    async withLease(fn, options = {}) {
      const { expiresInMs = defaultWithLeaseMs, ...rest } = options;
      const lease = await manager.create({ ...rest, expiresAt: new Date(Date.now() + expiresInMs) });
      let result: Awaited<ReturnType<typeof fn>>;
      try {
        result = await fn(lease);
      } catch (err) {
        // fn's error is the one the caller needs; a failure to clean up must not mask it.
        await manager.delete(lease.id).catch(() => {});
        throw err;
      }
      // The lease may already be gone (fn deleted it, or GC removed it after expiry).
      await manager.delete(lease.id).catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
      return result;
    },
  };
  return manager;
}
