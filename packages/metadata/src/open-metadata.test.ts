import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isFailedPrecondition } from "@berth/errdefs";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { internals } from "./internals.js";
import { openMetadata } from "./open-metadata.js";
import { migrations, runMigrations } from "./schema.js";
import type { Metadata } from "./types.js";

describe("openMetadata", () => {
  let dir: string;
  const handles: Metadata[] = [];
  const open = (path = join(dir, "metadata.db")) => {
    const m = openMetadata(path);
    handles.push(m);
    return m;
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-metadata-open-"));
  });
  afterEach(() => {
    for (const h of handles.splice(0)) h.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("creates the database with WAL, synchronous=FULL and foreign keys, at the latest schema", () => {
    const meta = open(join(dir, "nested", "root", "metadata.db"));
    expect(meta.root).toBe(join(dir, "nested", "root"));
    expect(meta.schemaVersion).toBe(migrations.length);
    const { db } = internals(meta);
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("synchronous", { simple: true })).toBe(2); // FULL
    expect(db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(db.pragma("user_version", { simple: true })).toBe(migrations.length);
  });

  it("reopens an existing database without migrating again, and two handles see each other's writes", async () => {
    const a = open();
    await a.namespaces.create("one");
    const b = open();
    expect(b.schemaVersion).toBe(migrations.length);
    expect(await b.namespaces.list()).toEqual(["one"]);
    await b.namespaces.create("two");
    expect(await a.namespaces.list()).toEqual(["one", "two"]);
  });

  it("refuses a database written by a newer schema with failed-precondition", () => {
    const path = join(dir, "metadata.db");
    open(path).close();
    const raw = new Database(path);
    raw.pragma(`user_version = ${migrations.length + 5}`);
    raw.close();
    let caught: unknown;
    try {
      open(path);
    } catch (err) {
      caught = err;
    }
    expect(isFailedPrecondition(caught)).toBe(true);
    expect(String(caught)).toMatch(/schema version \d+ is newer/);
  });

  it("runs migrations in order in one transaction, and rolls all of them back if one fails", () => {
    const raw = new Database(join(dir, "m.db"));
    try {
      const order: number[] = [];
      const good = [
        (db: Database.Database) => {
          order.push(1);
          db.exec("CREATE TABLE a (x INTEGER)");
        },
        (db: Database.Database) => {
          order.push(2);
          db.exec("ALTER TABLE a ADD COLUMN y TEXT");
        },
      ];
      expect(runMigrations(raw, good, "m.db")).toBe(2);
      expect(order).toEqual([1, 2]);
      expect(raw.pragma("user_version", { simple: true })).toBe(2);

      const failing = [
        ...good,
        (db: Database.Database) => db.exec("CREATE TABLE b (x INTEGER)"),
        () => {
          throw new Error("step 4 fails");
        },
      ];
      expect(() => runMigrations(raw, failing, "m.db")).toThrow("step 4 fails");
      expect(raw.pragma("user_version", { simple: true })).toBe(2);
      expect(raw.prepare("SELECT name FROM sqlite_master WHERE name = 'b'").get()).toBeUndefined();
    } finally {
      raw.close();
    }
  });

  it("makes a closed handle throw failed-precondition", async () => {
    const meta = open();
    const images = meta.images("default");
    meta.close();
    meta.close();
    await expect(images.list()).rejects.toSatisfy(isFailedPrecondition);
    await expect(meta.namespaces.list()).rejects.toSatisfy(isFailedPrecondition);
  });
});
