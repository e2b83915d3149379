import { failedPrecondition } from "@berth/errdefs";
import type BetterSqlite3 from "better-sqlite3";

/** One schema step: takes the database from version `i` to `i + 1` inside the migration transaction. @internal */
export type Migration = (db: BetterSqlite3.Database) => void;

/**
 * The schema, as an ordered list of migrations; `PRAGMA user_version` counts how many have run.
 * Append only: never edit a released step, add a new one (containers and sandboxes come as later
 * steps). STRICT tables make SQLite reject a value of the wrong type
 * instead of storing it. Label maps are JSON objects in TEXT columns: they are always read and
 * written whole, and SQLite's json functions can still query them.
 *
 * @internal
 */
export const migrations: readonly Migration[] = [
  // 1: namespaces, images, per-namespace content records, ingests, leases.
  (db) => {
    db.exec(`
      CREATE TABLE namespaces (
        name       TEXT PRIMARY KEY,
        labels     TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE images (
        namespace     TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        name          TEXT NOT NULL,
        target        TEXT NOT NULL,
        target_digest TEXT NOT NULL,
        labels        TEXT NOT NULL DEFAULT '{}',
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (namespace, name)
      ) STRICT;
      CREATE INDEX images_by_target ON images (namespace, target_digest);

      CREATE TABLE content (
        namespace  TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        digest     TEXT NOT NULL,
        size       INTEGER NOT NULL CHECK (size >= 0),
        labels     TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, digest)
      ) STRICT;
      CREATE INDEX content_by_digest ON content (digest);

      CREATE TABLE ingests (
        namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        ref         TEXT NOT NULL,
        backing_ref TEXT NOT NULL UNIQUE,
        expected    TEXT,
        shared_size INTEGER,
        expires_at  INTEGER,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (namespace, ref)
      ) STRICT;

      CREATE TABLE leases (
        namespace  TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        id         TEXT NOT NULL,
        labels     TEXT NOT NULL DEFAULT '{}',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
      ) STRICT;

      CREATE TABLE lease_resources (
        namespace TEXT NOT NULL,
        lease     TEXT NOT NULL,
        type      TEXT NOT NULL,
        id        TEXT NOT NULL,
        PRIMARY KEY (namespace, lease, type, id),
        FOREIGN KEY (namespace, lease) REFERENCES leases (namespace, id) ON DELETE CASCADE
      ) STRICT;
    `);
  },

  // 2: snapshot records per namespace and snapshotter, the per-snapshotter sequence that makes
  // backend keys unique, and the backend snapshots waiting for GC to remove them.
  (db) => {
    db.exec(`
      CREATE TABLE snapshots (
        namespace   TEXT NOT NULL REFERENCES namespaces(name) ON DELETE RESTRICT,
        snapshotter TEXT NOT NULL,
        key         TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('active', 'view', 'committed')),
        parent      TEXT,
        backend_key TEXT NOT NULL,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (namespace, snapshotter, key),
        -- Checked at commit: GC deletes a whole unreachable chain in one transaction, in any order.
        FOREIGN KEY (namespace, snapshotter, parent) REFERENCES snapshots (namespace, snapshotter, key)
          DEFERRABLE INITIALLY DEFERRED
      ) STRICT;
      CREATE INDEX snapshots_by_parent ON snapshots (namespace, snapshotter, parent);
      CREATE INDEX snapshots_by_backend_key ON snapshots (snapshotter, backend_key);

      CREATE TABLE snapshot_sequences (
        snapshotter TEXT PRIMARY KEY,
        value       INTEGER NOT NULL
      ) STRICT;

      CREATE TABLE snapshot_removals (
        snapshotter    TEXT NOT NULL,
        backend_key    TEXT NOT NULL,
        backend_parent TEXT,
        removed_at     INTEGER NOT NULL,
        PRIMARY KEY (snapshotter, backend_key)
      ) STRICT;
    `);
  },
];

/**
 * Brings `db` to `list.length`, running the missing steps and the version bump in one `BEGIN
 * IMMEDIATE` transaction: either every step lands or none does, and two processes opening the
 * same fresh database cannot both migrate (the second waits on the write lock, then re-reads the
 * version and finds nothing to do). A database newer than `list` throws `failed-precondition`:
 * old code must not write records it does not understand.
 *
 * @internal
 */
export function runMigrations(db: BetterSqlite3.Database, list: readonly Migration[], path: string): number {
  const read = () => db.pragma("user_version", { simple: true }) as number;
  const check = (version: number) => {
    if (version > list.length) {
      throw failedPrecondition(
        `metadata database ${path}: schema version ${version} is newer than this berth understands (${list.length}); upgrade berth`,
      );
    }
  };
  const seen = read();
  check(seen);
  if (seen === list.length) return seen;
  db.transaction(() => {
    const version = read();
    check(version);
    for (let v = version; v < list.length; v++) list[v]?.(db);
    // user_version lives in the database header and is covered by the transaction.
    if (version !== list.length) db.pragma(`user_version = ${list.length}`);
  }).immediate();
  return list.length;
}
