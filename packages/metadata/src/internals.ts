import type { ContentStore } from "@berth/content";
import { errorMessage, failedPrecondition, invalidArgument, unavailable } from "@berth/errdefs";
import type BetterSqlite3 from "better-sqlite3";
import type { Labels, Metadata, OpenMetadataOptions } from "./types.js";

/**
 * What the stores of one handle share: the connection, a statement cache and the options.
 * Reached through {@link internals}, never exported from the package.
 *
 * @internal
 */
export interface MetadataInternals {
  readonly db: BetterSqlite3.Database;
  readonly path: string;
  readonly root: string;
  readonly gcLockPath: string;
  readonly options: OpenMetadataOptions;
  closed: boolean;
  /** A cached prepared statement. */
  stmt(sql: string): BetterSqlite3.Statement;
  /**
   * Runs `fn` in one `BEGIN IMMEDIATE` transaction (a savepoint when nested): the write lock is
   * taken up front, so a read-then-write cannot fail half-way with SQLITE_BUSY on lock upgrade.
   */
  write<T>(fn: () => T): T;
  /** Runs `fn` in one read transaction: a consistent snapshot across several statements. */
  read<T>(fn: () => T): T;
  /** Creates the namespace if it is missing; throws `invalid-argument` for a malformed name. */
  ensureNamespace(namespace: string, now: number): void;
}

const registry = new WeakMap<Metadata, MetadataInternals>();

/** The shared state of a handle; `failed-precondition` once it is closed. @internal */
export function internals(meta: Metadata): MetadataInternals {
  const state = registry.get(meta);
  if (state === undefined) throw invalidArgument("not a metadata handle returned by openMetadata");
  if (state.closed) throw failedPrecondition(`metadata database ${state.path} is closed`);
  return state;
}

/** Registers a handle's internals; used by {@link openMetadata} only. @internal */
export function registerInternals(meta: Metadata, state: MetadataInternals): void {
  registry.set(meta, state);
}

/** Parses a JSON label column. @internal */
export function parseLabels(text: string): Record<string, string> {
  return JSON.parse(text) as Record<string, string>;
}

/** Serializes labels with sorted keys, so equal maps are equal strings. @internal */
export function stringifyLabels(labels: Labels): string {
  const sorted: Record<string, string> = {};
  for (const key of Object.keys(labels).sort()) {
    const value = labels[key];
    if (value !== undefined && value !== "") sorted[key] = value;
  }
  return JSON.stringify(sorted);
}

/** True for SQLite's "database is locked/busy" after the busy timeout ran out. */
function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"));
}

/** Maps SQLite's busy errors to `unavailable`, so callers can retry on the code. @internal */
export function translateSqliteError(err: unknown, path: string): unknown {
  if (isBusy(err)) {
    return unavailable(`metadata database ${path}: locked by another writer: ${errorMessage(err)}`, {
      cause: err,
    });
  }
  return err;
}

/** The backing store for `sync` deletes, or `failed-precondition` before anything is deleted. @internal */
export function syncContentStore(state: MetadataInternals, what: string): ContentStore {
  const store = state.options.contentStore;
  if (store === undefined) {
    throw failedPrecondition(
      `${what} with sync: metadata database ${state.path} was opened without a contentStore to collect garbage in`,
    );
  }
  return store;
}
