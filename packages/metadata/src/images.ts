import { type Descriptor, labelField, matchFilters, parseFilters } from "@berth/content";
import { alreadyExists, invalidArgument, notFound } from "@berth/errdefs";
import { collectGarbage } from "./gc.js";
import { type MetadataInternals, parseLabels, stringifyLabels, syncContentStore } from "./internals.js";
import type { ImageInput, ImageRecord, ImageStore, Metadata } from "./types.js";
import { applyLabelUpdate, validateDigest, validateLabels } from "./validate.js";

interface ImageRow {
  name: string;
  target: string;
  labels: string;
  created_at: number;
  updated_at: number;
}

function toRecord(row: ImageRow): ImageRecord {
  return {
    name: row.name,
    target: JSON.parse(row.target) as Descriptor,
    labels: parseLabels(row.labels),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
  };
}

function validateTarget(name: string, target: Descriptor | undefined): Descriptor {
  // Only the fields berth relies on are checked, as containerd's validateTarget does.
  if (target === undefined || target === null) throw invalidArgument(`image ${name}: target is missing`);
  if (typeof target.digest !== "string" || target.digest === "") {
    throw invalidArgument(`image ${name}: target digest is missing`);
  }
  validateDigest(`image ${name}: target digest`, target.digest);
  if (typeof target.mediaType !== "string" || target.mediaType === "") {
    throw invalidArgument(`image ${name}: target mediaType is missing`);
  }
  if (!Number.isSafeInteger(target.size) || target.size <= 0) {
    throw invalidArgument(`image ${name}: target size ${target.size} must be a positive integer`);
  }
  return target;
}

function validateImage(image: ImageInput): void {
  if (typeof image.name !== "string" || image.name === "")
    throw invalidArgument("image name must not be empty");
  validateTarget(image.name, image.target);
  validateLabels(`image ${image.name}`, image.labels ?? {});
}

/** The image store of one namespace. @internal */
export function createImageStore(
  state: () => MetadataInternals,
  meta: Metadata,
  namespace: string,
): ImageStore {
  const getRow = (s: MetadataInternals, name: string) =>
    s.stmt("SELECT * FROM images WHERE namespace = ? AND name = ?").get(namespace, name) as
      | ImageRow
      | undefined;
  const where = `in namespace ${namespace}`;

  return {
    async get(name) {
      const row = getRow(state(), name);
      if (row === undefined) throw notFound(`image ${name} ${where} not found`);
      return toRecord(row);
    },

    async list(filters) {
      const parsed = parseFilters(filters);
      const rows = state()
        .stmt("SELECT * FROM images WHERE namespace = ? ORDER BY name")
        .all(namespace) as ImageRow[];
      return rows.map(toRecord).filter((image) =>
        matchFilters(parsed, ([field, ...rest]) => {
          switch (field) {
            case "name":
              return rest.length === 0 ? image.name : undefined;
            case "target":
              if (rest.length !== 1) return undefined;
              if (rest[0] === "digest") return image.target.digest;
              if (rest[0] === "mediatype") return image.target.mediaType;
              return undefined;
            case "labels":
              return labelField(image.labels, rest);
            default:
              return undefined;
          }
        }),
      );
    },

    async create(image) {
      validateImage(image);
      const s = state();
      return s.write(() => {
        const now = Date.now();
        s.ensureNamespace(namespace, now);
        if (getRow(s, image.name) !== undefined)
          throw alreadyExists(`image ${image.name} ${where} already exists`);
        s.stmt(
          `INSERT INTO images (namespace, name, target, target_digest, labels, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          namespace,
          image.name,
          JSON.stringify(image.target),
          image.target.digest,
          stringifyLabels(image.labels ?? {}),
          now,
          now,
        );
        return toRecord(getRow(s, image.name) as ImageRow);
      });
    },

    async update(image, fieldpaths) {
      if (typeof image.name !== "string" || image.name === "")
        throw invalidArgument("image name must not be empty");
      validateLabels(`image ${image.name}`, image.labels ?? {});
      const s = state();
      return s.write(() => {
        const row = getRow(s, image.name);
        if (row === undefined) throw notFound(`image ${image.name} ${where} not found`);
        const current = toRecord(row);
        const { labels, rest } = applyLabelUpdate(current.labels, image.labels ?? {}, fieldpaths);
        let target = current.target;
        const replaceAll = fieldpaths === undefined || fieldpaths.length === 0;
        if (replaceAll) target = validateTarget(image.name, image.target);
        for (const path of rest) {
          if (path === "target") target = validateTarget(image.name, image.target);
          else throw invalidArgument(`image ${image.name}: cannot update field ${JSON.stringify(path)}`);
        }
        s.stmt(
          `UPDATE images SET target = ?, target_digest = ?, labels = ?, updated_at = ?
           WHERE namespace = ? AND name = ?`,
        ).run(
          JSON.stringify(target),
          target.digest,
          stringifyLabels(labels),
          Date.now(),
          namespace,
          image.name,
        );
        return toRecord(getRow(s, image.name) as ImageRow);
      });
    },

    async delete(name, options = {}) {
      const s = state();
      const backing =
        options.sync === true ? syncContentStore(s, `delete image ${name} ${where}`) : undefined;
      s.write(() => {
        const result = s.stmt("DELETE FROM images WHERE namespace = ? AND name = ?").run(namespace, name);
        if (result.changes === 0) throw notFound(`image ${name} ${where} not found`);
      });
      if (backing !== undefined) await collectGarbage(meta, backing);
    },
  };
}
