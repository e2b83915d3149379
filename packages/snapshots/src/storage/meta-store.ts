import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { type FieldAdaptor, labelField, matchFilters, parseFilters } from "@berth/content";
import {
  alreadyExists,
  errorMessage,
  failedPrecondition,
  internal,
  invalidArgument,
  notFound,
  unavailable,
} from "@berth/errdefs";
import type BetterSqlite3 from "better-sqlite3";
import Database from "better-sqlite3";
import { type Info, Kind, type Usage } from "../types.js";

/** The kinds {@link MetaTx.createSnapshot} creates. */
export type NewSnapshotKind = typeof Kind.Active | typeof Kind.View;

/** An active or view snapshot as a snapshotter implementation needs it to build mounts. */
export interface SnapshotRecord {
  /** The snapshot's id: a decimal integer, unique for the life of the store, never reused. */
  readonly id: string;
  readonly kind: NewSnapshotKind;
  /** The ids of the committed ancestors, nearest (the parent) first; empty for a base snapshot. */
  readonly parentIds: readonly string[];
}

/**
 * One transaction over a {@link MetaStore}. Every method is synchronous and sees the effects of
 * the earlier calls in the same transaction; if the transaction function throws, all of them are
 * rolled back. A `MetaTx` must not be used after its transaction function returned.
 *
 * Errors common to all methods: `invalid-argument` for an empty key or name, or a malformed label
 * or filter; `not-found` for a key that does not exist.
 */
export interface MetaTx {
  /**
   * Records a new active or view snapshot named `key` on top of the committed snapshot `parent`
   * (none for a base snapshot), with `labels` (default none). It gets a fresh id.
   *
   * Throws `already-exists` if `key` is taken (by a snapshot of any kind), `not-found` if
   * `parent` does not exist, `failed-precondition` if `parent` is not committed.
   */
  createSnapshot(
    kind: NewSnapshotKind,
    key: string,
    parent: string | undefined,
    labels?: Readonly<Record<string, string>>,
  ): SnapshotRecord;
  /**
   * The id, kind and ancestors of the active or view snapshot `key` (what building its mounts
   * needs). As in containerd, `failed-precondition` if `key` is committed: committed snapshots
   * have no mounts of their own.
   */
  getSnapshot(key: string): SnapshotRecord;
  /**
   * The id, kind and ancestors of the snapshot `key`, of any kind (e.g. the id of a committed
   * parent whose directory a snapshotter copies from, before creating the child).
   */
  lookup(key: string): { readonly id: string; readonly kind: Kind; readonly parentIds: readonly string[] };
  /** The {@link Info} of the snapshot `key`, of any kind. */
  getInfo(key: string): Info;
  /**
   * Updates the labels of the snapshot `info.name` and its `updated` time; returns the new Info.
   * Without `fieldpaths` (or with an empty list) the labels are replaced by `info.labels`; with
   * them, `labels` replaces all labels and `labels.<key>` sets (or, when absent from
   * `info.labels`, removes) one label. Any other field path is `invalid-argument`: kind, name,
   * parent and times cannot be changed.
   */
  updateInfo(
    info: { readonly name: string; readonly labels: Readonly<Record<string, string>> },
    fieldpaths?: readonly string[],
  ): Info;
  /**
   * Turns the active snapshot `key` into the committed snapshot `name`, recording `usage`. The
   * committed snapshot keeps the active one's id (so its directory need not move) and its labels,
   * merged with `labels` (which win). Returns the id.
   *
   * Throws `not-found` for an unknown `key`, `failed-precondition` if `key` is not active (a
   * view or a committed snapshot), `already-exists` if `name` is taken.
   */
  commitActive(key: string, name: string, usage: Usage, labels?: Readonly<Record<string, string>>): string;
  /**
   * Deletes the record of snapshot `key` and returns its id and kind; the caller removes the
   * snapshot's files (after the transaction committed). Throws `failed-precondition` if other
   * snapshots have it as their parent.
   */
  remove(key: string): { readonly id: string; readonly kind: Kind };
  /**
   * Calls `fn` for each snapshot matching any of `filters` (containerd's filter syntax over
   * `kind`, `name`, `parent` and `labels.<key>`), all of them without filters, in id order.
   * `fn` runs inside the transaction and must not start another one on the same store.
   */
  walk(fn: (info: Info) => void, filters?: readonly string[]): void;
  /** The ids of all snapshots, for removing directories that belong to none (see `cleanup`). */
  ids(): Set<string>;
  /**
   * The usage recorded when the committed snapshot `key` was committed. `failed-precondition`
   * for an active or view snapshot: their usage changes and must be measured on disk.
   */
  usage(key: string): Usage;
}

/**
 * The metadata store of one snapshotter (containerd's `snapshots/storage`): one SQLite file per
 * snapshotter root holding the snapshots' keys, kinds, parents, labels, times and usage, and
 * handing out the ids that name their directories. Safe for several processes sharing the file.
 */
export interface MetaStore {
  /** The absolute path of the database file. */
  readonly path: string;
  /**
   * Runs `fn` in one write transaction (`BEGIN IMMEDIATE`, so two writers never deadlock on a
   * lock upgrade) and returns its result; if `fn` throws, the transaction is rolled back and the
   * error rethrown. `fn` must be synchronous: returning a promise is an `internal` error (and rolls
   * back), because the transaction would end before the promise settles. Nested calls become
   * savepoints. Throws `unavailable` if another process held the write lock past the busy timeout.
   */
  transaction<T>(fn: (tx: MetaTx) => T): T;
  /** Closes the database. Later calls throw `failed-precondition`. Idempotent. */
  close(): void;
}

/** Options of {@link openMetaStore}. */
export interface MetaStoreOptions {
  /** How long to wait for another process's write lock before failing with `unavailable`. Default 10 s. */
  readonly busyTimeoutMs?: number;
}

const SCHEMA_VERSION = 1;

// AUTOINCREMENT, not just INTEGER PRIMARY KEY: an id is a directory name, and reusing the id of a
// removed snapshot whose directory a crash left behind would mix two snapshots' files.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
  parent_id INTEGER REFERENCES snapshots (id),
  labels TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent_id);
`;

// containerd's labels.Validate: a label (key and value together) may not exceed 4 KiB.
const MAX_LABEL_SIZE = 4096;

interface Row {
  id: number;
  key: string;
  kind: Kind;
  parent_id: number | null;
  labels: string;
  created_at: number;
  updated_at: number;
  size: number;
  inodes: number;
  parent_key: string | null;
}

const SELECT_ROW =
  "SELECT s.*, p.key AS parent_key FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id";

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_BUSY" || code === "SQLITE_BUSY_SNAPSHOT" || code === "SQLITE_LOCKED";
}

function translate(err: unknown, path: string): unknown {
  if (isBusy(err)) {
    return unavailable(`snapshot metadata ${path}: locked by another writer: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return err;
}

function validateKey(what: string, key: string): void {
  if (typeof key !== "string" || key === "") throw invalidArgument(`snapshot ${what} must not be empty`);
}

function validateLabels(labels: Readonly<Record<string, string>>): void {
  for (const [k, v] of Object.entries(labels)) {
    if (k === "") throw invalidArgument("snapshot label key must not be empty");
    if (typeof v !== "string")
      throw invalidArgument(`snapshot label ${JSON.stringify(k)}: value is not a string`);
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_SIZE) {
      throw invalidArgument(
        `snapshot label ${JSON.stringify(k.slice(0, 64))}: key and value exceed ${MAX_LABEL_SIZE} bytes`,
      );
    }
  }
}

function toInfo(row: Row): Info {
  const info: Info = {
    kind: row.kind,
    name: row.key,
    labels: JSON.parse(row.labels) as Record<string, string>,
    created: new Date(row.created_at),
    updated: new Date(row.updated_at),
  };
  return row.parent_key === null ? info : { ...info, parent: row.parent_key };
}

/** The field adaptor of snapshot filters: `kind`, `name`, `parent`, `labels.<key>`. */
function infoAdaptor(info: Info): FieldAdaptor {
  return (fieldpath) => {
    const [head, ...rest] = fieldpath;
    switch (head) {
      case "kind":
        return rest.length === 0 ? info.kind : undefined;
      case "name":
        return rest.length === 0 ? info.name : undefined;
      case "parent":
        return rest.length === 0 ? info.parent : undefined;
      case "labels":
        return labelField(info.labels, rest);
      default:
        return undefined;
    }
  };
}

function createTx(stmt: (sql: string) => BetterSqlite3.Statement): MetaTx {
  const row = (key: string): Row => {
    validateKey("key", key);
    const r = stmt(`${SELECT_ROW} WHERE s.key = ?`).get(key) as Row | undefined;
    if (r === undefined) throw notFound(`snapshot ${JSON.stringify(key)} does not exist`);
    return r;
  };
  const parentIds = (parentId: number | null): string[] => {
    if (parentId === null) return [];
    const rows = stmt(
      `WITH RECURSIVE chain (id, parent_id, depth) AS (
         SELECT id, parent_id, 0 FROM snapshots WHERE id = ?
         UNION ALL
         SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s JOIN chain c ON s.id = c.parent_id
       ) SELECT id FROM chain ORDER BY depth`,
    ).all(parentId) as { id: number }[];
    return rows.map((r) => String(r.id));
  };
  const now = (): number => Date.now();

  return {
    createSnapshot(kind, key, parent, labels = {}) {
      validateKey("key", key);
      if (kind !== Kind.Active && kind !== Kind.View) {
        throw invalidArgument(`snapshot ${JSON.stringify(key)}: cannot create a snapshot of kind ${kind}`);
      }
      validateLabels(labels);
      if (stmt("SELECT 1 FROM snapshots WHERE key = ?").get(key) !== undefined) {
        throw alreadyExists(`snapshot ${JSON.stringify(key)} already exists`);
      }
      let parentId: number | null = null;
      if (parent !== undefined && parent !== "") {
        const p = stmt("SELECT id, kind FROM snapshots WHERE key = ?").get(parent) as
          | { id: number; kind: Kind }
          | undefined;
        if (p === undefined) {
          throw notFound(
            `parent snapshot ${JSON.stringify(parent)} of ${JSON.stringify(key)} does not exist`,
          );
        }
        if (p.kind !== Kind.Committed) {
          throw failedPrecondition(
            `parent snapshot ${JSON.stringify(parent)} of ${JSON.stringify(key)} is ${p.kind}, not committed`,
          );
        }
        parentId = p.id;
      }
      const t = now();
      const result = stmt(
        "INSERT INTO snapshots (key, kind, parent_id, labels, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
      ).run(key, kind, parentId, JSON.stringify(labels), t, t);
      return { id: String(result.lastInsertRowid), kind, parentIds: parentIds(parentId) };
    },

    getSnapshot(key) {
      const r = row(key);
      if (r.kind !== Kind.Active && r.kind !== Kind.View) {
        throw failedPrecondition(`snapshot ${JSON.stringify(key)} is ${r.kind}, not active or a view`);
      }
      return { id: String(r.id), kind: r.kind, parentIds: parentIds(r.parent_id) };
    },

    lookup(key) {
      const r = row(key);
      return { id: String(r.id), kind: r.kind, parentIds: parentIds(r.parent_id) };
    },

    getInfo(key) {
      return toInfo(row(key));
    },

    updateInfo(info, fieldpaths) {
      const r = row(info.name);
      const given = info.labels ?? {};
      let labels: Record<string, string>;
      if (fieldpaths === undefined || fieldpaths.length === 0) {
        labels = { ...given };
      } else {
        labels = JSON.parse(r.labels) as Record<string, string>;
        for (const path of fieldpaths) {
          if (path === "labels") {
            labels = { ...given };
          } else if (path.startsWith("labels.") && path.length > "labels.".length) {
            const k = path.slice("labels.".length);
            if (Object.hasOwn(given, k)) labels[k] = given[k] as string;
            else delete labels[k];
          } else {
            throw invalidArgument(
              `snapshot ${JSON.stringify(info.name)}: cannot update field ${JSON.stringify(path)} (only labels and labels.<key>)`,
            );
          }
        }
      }
      validateLabels(labels);
      stmt("UPDATE snapshots SET labels = ?, updated_at = ? WHERE id = ?").run(
        JSON.stringify(labels),
        now(),
        r.id,
      );
      return toInfo(row(info.name));
    },

    commitActive(key, name, usage, labels = {}) {
      validateKey("name", name);
      const r = row(key);
      if (r.kind !== Kind.Active) {
        throw failedPrecondition(
          `snapshot ${JSON.stringify(key)} is ${r.kind}: only an active snapshot can be committed`,
        );
      }
      if (stmt("SELECT 1 FROM snapshots WHERE key = ?").get(name) !== undefined) {
        throw alreadyExists(
          `cannot commit ${JSON.stringify(key)}: snapshot ${JSON.stringify(name)} already exists`,
        );
      }
      const merged = { ...(JSON.parse(r.labels) as Record<string, string>), ...labels };
      validateLabels(merged);
      const t = now();
      stmt(
        "UPDATE snapshots SET key = ?, kind = 'committed', labels = ?, created_at = ?, updated_at = ?, size = ?, inodes = ? WHERE id = ?",
      ).run(name, JSON.stringify(merged), t, t, Math.max(0, usage.size), Math.max(0, usage.inodes), r.id);
      return String(r.id);
    },

    remove(key) {
      const r = row(key);
      const child = stmt("SELECT key FROM snapshots WHERE parent_id = ? LIMIT 1").get(r.id) as
        | { key: string }
        | undefined;
      if (child !== undefined) {
        throw failedPrecondition(
          `cannot remove snapshot ${JSON.stringify(key)}: it is the parent of ${JSON.stringify(child.key)}`,
        );
      }
      stmt("DELETE FROM snapshots WHERE id = ?").run(r.id);
      return { id: String(r.id), kind: r.kind };
    },

    walk(fn, filters) {
      const parsed = parseFilters(filters);
      for (const r of stmt(`${SELECT_ROW} ORDER BY s.id`).iterate() as IterableIterator<Row>) {
        const info = toInfo(r);
        if (matchFilters(parsed, infoAdaptor(info))) fn(info);
      }
    },

    ids() {
      const rows = stmt("SELECT id FROM snapshots").all() as { id: number }[];
      return new Set(rows.map((r) => String(r.id)));
    },

    usage(key) {
      const r = row(key);
      if (r.kind !== Kind.Committed) {
        throw failedPrecondition(
          `snapshot ${JSON.stringify(key)} is ${r.kind}: only a committed snapshot has recorded usage`,
        );
      }
      return { size: r.size, inodes: r.inodes };
    },
  };
}

/**
 * Opens (creating if needed) the snapshot metadata database at `path`, conventionally
 * `<snapshotter root>/metadata.db`; its directory is created with mode 0700 if missing.
 *
 * Settings: WAL (readers never block the writer), `synchronous=FULL` (a committed transaction
 * survives a power cut: a snapshot whose record is lost while its directory survives is only
 * garbage, but the reverse would hand out mounts of a directory that is gone), `foreign_keys=ON`,
 * and a busy timeout so another process's writer is waited for.
 *
 * Throws `failed-precondition` if the file was written by a newer schema, `unavailable` if it
 * stayed locked past the busy timeout. The caller owns the store and must {@link MetaStore.close} it.
 */
export function openMetaStore(path: string, options: MetaStoreOptions = {}): MetaStore {
  const file = resolve(path);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const db = new Database(file, { timeout: options.busyTimeoutMs ?? 10_000 });
  try {
    const mode = db.pragma("journal_mode = WAL", { simple: true });
    if (mode !== "wal")
      throw failedPrecondition(`snapshot metadata ${file}: cannot enable WAL (got ${mode})`);
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    db.transaction(() => {
      const version = db.pragma("user_version", { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw failedPrecondition(
          `snapshot metadata ${file}: schema version ${version} is newer than this berth knows (${SCHEMA_VERSION})`,
        );
      }
      if (version < SCHEMA_VERSION) {
        db.exec(SCHEMA);
        db.pragma(`user_version = ${SCHEMA_VERSION}`);
      }
    }).immediate();
  } catch (err) {
    db.close();
    throw translate(err, file);
  }

  const statements = new Map<string, BetterSqlite3.Statement>();
  const stmt = (sql: string): BetterSqlite3.Statement => {
    let s = statements.get(sql);
    if (s === undefined) {
      s = db.prepare(sql);
      statements.set(sql, s);
    }
    return s;
  };
  const tx = createTx(stmt);
  const runner = db.transaction((fn: (tx: MetaTx) => unknown) => {
    const result = fn(tx);
    if (result instanceof Promise) {
      // Nobody will await it: keep its eventual rejection from becoming an unhandled one.
      result.catch(() => {});
      throw internal(
        `snapshot metadata ${file}: a transaction function returned a promise; it must be synchronous`,
      );
    }
    return result;
  });
  let closed = false;

  return {
    path: file,
    transaction<T>(fn: (tx: MetaTx) => T): T {
      if (closed) throw failedPrecondition(`snapshot metadata ${file} is closed`);
      try {
        return runner.immediate(fn) as T;
      } catch (err) {
        throw translate(err, file);
      }
    },
    close() {
      if (closed) return;
      closed = true;
      statements.clear();
      db.close();
    },
  };
}
