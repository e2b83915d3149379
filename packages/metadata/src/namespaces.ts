import { alreadyExists, failedPrecondition, notFound } from "@berth/errdefs";
import { type MetadataInternals, parseLabels, stringifyLabels } from "./internals.js";
import type { Labels, NamespaceInfo, NamespaceStore } from "./types.js";
import { validateLabels, validateNamespace } from "./validate.js";

interface NamespaceRow {
  name: string;
  labels: string;
  created_at: number;
  updated_at: number;
}

function toInfo(row: NamespaceRow): NamespaceInfo {
  return {
    name: row.name,
    labels: parseLabels(row.labels),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

// What a namespace may still hold, in the order the failed-precondition message lists it.
const holdings = [
  ["images", "SELECT count(*) FROM images WHERE namespace = ?"],
  ["content", "SELECT count(*) FROM content WHERE namespace = ?"],
  ["ingests", "SELECT count(*) FROM ingests WHERE namespace = ?"],
  ["leases", "SELECT count(*) FROM leases WHERE namespace = ?"],
  ["snapshots", "SELECT count(*) FROM snapshots WHERE namespace = ?"],
] as const;

/** The namespace store over one handle. @internal */
export function createNamespaceStore(state: () => MetadataInternals): NamespaceStore {
  const getRow = (s: MetadataInternals, name: string) =>
    s.stmt("SELECT * FROM namespaces WHERE name = ?").get(name) as NamespaceRow | undefined;

  return {
    async create(name, labels = {}) {
      validateNamespace(name);
      validateLabels(`namespace ${name}`, labels);
      const s = state();
      return s.write(() => {
        if (getRow(s, name) !== undefined) throw alreadyExists(`namespace ${name} already exists`);
        const now = Date.now();
        s.stmt("INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, ?, ?, ?)").run(
          name,
          stringifyLabels(labels),
          now,
          now,
        );
        return toInfo(getRow(s, name) as NamespaceRow);
      });
    },

    async get(name) {
      validateNamespace(name);
      const row = getRow(state(), name);
      if (row === undefined) throw notFound(`namespace ${name} not found`);
      return toInfo(row);
    },

    async list() {
      const rows = state().stmt("SELECT name FROM namespaces ORDER BY name").all() as { name: string }[];
      return rows.map((r) => r.name);
    },

    async labels(name) {
      return (await this.get(name)).labels;
    },

    async setLabels(name, labels) {
      validateNamespace(name);
      validateLabels(`namespace ${name}`, labels);
      const s = state();
      return s.write((): Labels => {
        const now = Date.now();
        s.ensureNamespace(name, now);
        const merged = { ...parseLabels((getRow(s, name) as NamespaceRow).labels), ...labels };
        const text = stringifyLabels(merged);
        s.stmt("UPDATE namespaces SET labels = ?, updated_at = ? WHERE name = ?").run(text, now, name);
        return parseLabels(text);
      });
    },

    async delete(name) {
      validateNamespace(name);
      const s = state();
      s.write(() => {
        if (getRow(s, name) === undefined) throw notFound(`namespace ${name} not found`);
        const left: string[] = [];
        for (const [what, sql] of holdings) {
          const count = s.stmt(sql).pluck().get(name) as number;
          if (count > 0) left.push(`${count} ${what}`);
        }
        if (left.length > 0) {
          throw failedPrecondition(
            `namespace ${name} must be empty to be deleted, but it still has ${left.join(", ")}`,
          );
        }
        s.stmt("DELETE FROM namespaces WHERE name = ?").run(name);
      });
    },
  };
}
