import { mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { failedPrecondition } from "@berth/errdefs";
import type BetterSqlite3 from "better-sqlite3";
import Database from "better-sqlite3";
import { createImageStore } from "./images.js";
import { internals, type MetadataInternals, registerInternals, translateSqliteError } from "./internals.js";
import { createLeaseManager } from "./leases.js";
import { createNamespaceStore } from "./namespaces.js";
import { migrations, runMigrations } from "./schema.js";
import { createSnapshotRecordStore } from "./snapshots.js";
import type { Metadata, OpenMetadataOptions } from "./types.js";
import { validateNamespace } from "./validate.js";

/**
 * Opens (creating if needed) the metadata database at `path` (conventionally
 * `<root>/metadata.db`; the directory is created with mode 0700 if missing) and brings its schema
 * up to date.
 *
 * Settings: WAL journal, so readers never block the writer and several processes can share the
 * file; `synchronous=FULL`, so a transaction that returned is on disk even after a power cut (see
 * the README for why NORMAL is not enough here); `foreign_keys=ON`; a busy timeout so a second
 * process waits for the write lock instead of failing.
 *
 * Throws `failed-precondition` if the database was written by a newer berth (its schema version
 * is higher than this code knows), `unavailable` if another process held the write lock past the
 * busy timeout. The caller owns the handle and must {@link Metadata.close} it.
 */
export function openMetadata(path: string, options: OpenMetadataOptions = {}): Metadata {
  const file = resolve(path);
  const root = dirname(file);
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const db = new Database(file, { timeout: options.busyTimeoutMs ?? 10_000 });
  try {
    const mode = db.pragma("journal_mode = WAL", { simple: true });
    if (mode !== "wal")
      throw failedPrecondition(`metadata database ${file}: cannot enable WAL (got ${mode})`);
    db.pragma("synchronous = FULL");
    db.pragma("foreign_keys = ON");
    const version = runMigrations(db, migrations, file);
    return createHandle(db, file, root, version, options);
  } catch (err) {
    db.close();
    throw translateSqliteError(err, file);
  }
}

function createHandle(
  db: BetterSqlite3.Database,
  path: string,
  root: string,
  schemaVersion: number,
  options: OpenMetadataOptions,
): Metadata {
  const statements = new Map<string, BetterSqlite3.Statement>();
  const runner = db.transaction((fn: () => unknown) => fn());
  const state: MetadataInternals = {
    db,
    path,
    root,
    gcLockPath: join(root, "gc.lock"),
    options,
    closed: false,
    stmt(sql) {
      let s = statements.get(sql);
      if (s === undefined) {
        s = db.prepare(sql);
        statements.set(sql, s);
      }
      return s;
    },
    write<T>(fn: () => T): T {
      try {
        return runner.immediate(fn) as T;
      } catch (err) {
        throw translateSqliteError(err, path);
      }
    },
    read<T>(fn: () => T): T {
      try {
        return runner.deferred(fn) as T;
      } catch (err) {
        throw translateSqliteError(err, path);
      }
    },
    ensureNamespace(namespace, now) {
      validateNamespace(namespace);
      state
        .stmt(
          "INSERT INTO namespaces (name, labels, created_at, updated_at) VALUES (?, '{}', ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .run(namespace, now, now);
    },
  };
  const meta: Metadata = {
    path,
    root,
    schemaVersion,
    namespaces: createNamespaceStore(() => internals(meta)),
    images(namespace) {
      validateNamespace(namespace);
      return createImageStore(() => internals(meta), meta, namespace);
    },
    leases(namespace) {
      validateNamespace(namespace);
      return createLeaseManager(() => internals(meta), meta, namespace);
    },
    snapshots(namespace, snapshotter) {
      validateNamespace(namespace);
      return createSnapshotRecordStore(() => internals(meta), namespace, snapshotter);
    },
    close() {
      if (state.closed) return;
      state.closed = true;
      statements.clear();
      db.close();
    },
  };
  registerInternals(meta, state);
  return meta;
}
