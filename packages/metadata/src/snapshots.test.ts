import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Labels } from "@berth/content";
import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isNotFound } from "@berth/errdefs";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { internals } from "./internals.js";
import { openMetadata } from "./open-metadata.js";
import { migrations, runMigrations } from "./schema.js";
import { createFixture, type Fixture } from "./testing/fixtures.js";
import type { SnapshotRecordStore } from "./types.js";

/** Creates a record as the namespaced snapshotter does, minus the backend. */
async function create(
  store: SnapshotRecordStore,
  key: string,
  parent?: string,
  kind: "active" | "view" = "active",
  labels: Record<string, string> = {},
  lease?: string,
) {
  const input = { key, kind, labels, ...(parent === undefined ? {} : { parent }) };
  const opts = lease === undefined ? {} : { lease };
  const { backendKey } = await store.allocate(input, opts);
  return store.create({ ...input, backendKey }, opts);
}

async function commit(
  store: SnapshotRecordStore,
  name: string,
  key: string,
  labels?: Record<string, string>,
) {
  const { backendKey } = await store.allocateCommit(name, key);
  return store.commit({ name, key, backendKey, ...(labels === undefined ? {} : { labels }) });
}

/** A committed chain `names[0] ← names[1] ← …`; returns the records' backend keys. */
async function chain(store: SnapshotRecordStore, names: string[]): Promise<string[]> {
  const out: string[] = [];
  let parent: string | undefined;
  for (const name of names) {
    await create(store, `${name}-active`, parent);
    out.push((await commit(store, name, `${name}-active`)).backendKey);
    parent = name;
  }
  return out;
}

function removals(fx: Fixture) {
  return internals(fx.meta)
    .db.prepare("SELECT snapshotter, backend_key, backend_parent FROM snapshot_removals ORDER BY backend_key")
    .all();
}

describe("snapshot records", () => {
  let fx: Fixture;
  let store: SnapshotRecordStore;
  beforeEach(async () => {
    fx = await createFixture();
    store = fx.meta.snapshots("default", "native");
  });
  afterEach(() => fx.cleanup());

  it("creates, reads and lists records with unique backend keys", async () => {
    const base = await create(store, "base", undefined, "active", { a: "1" });
    expect(base).toMatchObject({ key: "base", kind: "active", labels: { a: "1" } });
    expect(base.parent).toBeUndefined();
    expect(base.backendKey).toMatch(/^default\/\d+\/base$/);
    const committed = await commit(store, "layer", "base", { b: "2" });
    expect(committed).toMatchObject({ key: "layer", kind: "committed", labels: { a: "1", b: "2" } });
    expect(committed.backendKey).not.toBe(base.backendKey);
    await expect(store.get("base")).rejects.toSatisfy(isNotFound);

    const view = await create(store, "v", "layer", "view");
    expect(view).toMatchObject({ key: "v", kind: "view", parent: "layer" });
    await create(store, "work", "layer", "active", { team: "x" });
    expect((await store.list()).map((r) => r.key)).toEqual(["layer", "v", "work"]);
    expect((await store.list(["kind==committed"])).map((r) => r.key)).toEqual(["layer"]);
    expect((await store.list(["parent==layer"])).map((r) => r.key)).toEqual(["v", "work"]);
    expect((await store.list(["labels.team==x", "name==v"])).map((r) => r.key)).toEqual(["v", "work"]);
    const keys = new Set((await store.list()).map((r) => r.backendKey));
    expect(keys.size).toBe(3);
  });

  it("rejects bad input and missing or unusable parents", async () => {
    await expect(store.allocate({ key: "", kind: "active" })).rejects.toSatisfy(isInvalidArgument);
    await expect(store.allocate({ key: "a\0b", kind: "active" })).rejects.toSatisfy(isInvalidArgument);
    await expect(store.allocate({ key: "k", kind: "active", labels: { "": "x" } })).rejects.toSatisfy(
      isInvalidArgument,
    );
    expect(() => fx.meta.snapshots("default", "not/valid")).toThrow(/snapshotter name/);
    await expect(store.allocate({ key: "k", kind: "active", parent: "nope" })).rejects.toSatisfy(isNotFound);
    await create(store, "active");
    await expect(store.allocate({ key: "k", kind: "active", parent: "active" })).rejects.toSatisfy(
      isFailedPrecondition,
    );
    await expect(store.allocate({ key: "active", kind: "view" })).rejects.toSatisfy(isAlreadyExists);
    await expect(store.allocate({ key: "k", kind: "active" }, { lease: "missing" })).rejects.toSatisfy(
      isNotFound,
    );
  });

  it("re-checks at create time: a key taken after allocate is already-exists and nothing is written", async () => {
    const first = await store.allocate({ key: "k", kind: "active" });
    const second = await store.allocate({ key: "k", kind: "active" });
    expect(first.backendKey).not.toBe(second.backendKey);
    await store.create({ key: "k", kind: "active", backendKey: first.backendKey });
    await expect(store.create({ key: "k", kind: "active", backendKey: second.backendKey })).rejects.toSatisfy(
      isAlreadyExists,
    );
    expect((await store.get("k")).backendKey).toBe(first.backendKey);
  });

  it("commits only active snapshots, to a free name", async () => {
    await chain(store, ["base"]);
    await create(store, "view", "base", "view");
    await create(store, "work", "base");
    await expect(store.allocateCommit("x", "view")).rejects.toSatisfy(isFailedPrecondition);
    await expect(store.allocateCommit("x", "base")).rejects.toSatisfy(isFailedPrecondition);
    await expect(store.allocateCommit("base", "work")).rejects.toSatisfy(isAlreadyExists);
    await expect(store.allocateCommit("x", "missing")).rejects.toSatisfy(isNotFound);
    const committed = await commit(store, "top", "work");
    expect(committed.parent).toBe("base");
  });

  it("when the name is taken during a commit, drops the consumed active record and queues both backend keys", async () => {
    const [baseKey] = await chain(store, ["base"]);
    const a = await create(store, "a", "base");
    const b = await create(store, "b", "base");
    const forA = await store.allocateCommit("top", "a");
    const forB = await store.allocateCommit("top", "b");
    await store.commit({ name: "top", key: "a", backendKey: forA.backendKey });
    await expect(store.commit({ name: "top", key: "b", backendKey: forB.backendKey })).rejects.toSatisfy(
      isAlreadyExists,
    );
    await expect(store.get("b")).rejects.toSatisfy(isNotFound);
    expect((await store.get("top")).backendKey).toBe(forA.backendKey);
    expect(a.backendKey).not.toBe(b.backendKey);
    expect(removals(fx)).toEqual(
      [b.backendKey, forB.backendKey]
        .sort()
        .map((k) => ({ snapshotter: "native", backend_key: k, backend_parent: baseKey })),
    );
  });

  it("removes records without children and queues their backend snapshots", async () => {
    const [baseKey, topKey] = await chain(store, ["base", "top"]);
    await expect(store.remove("base")).rejects.toSatisfy(isFailedPrecondition);
    await expect(store.remove("missing")).rejects.toSatisfy(isNotFound);
    await store.remove("top");
    await store.remove("base");
    expect(await store.list()).toEqual([]);
    expect(removals(fx)).toEqual([
      { snapshotter: "native", backend_key: baseKey, backend_parent: null },
      { snapshotter: "native", backend_key: topKey, backend_parent: baseKey },
    ]);
  });

  it("updates labels by fieldpath and refuses other fields", async () => {
    await create(store, "k", undefined, "active", { keep: "1", drop: "2" });
    const { record, previous } = await store.update("k", { add: "3", drop: "" }, [
      "labels.add",
      "labels.drop",
    ]);
    expect(previous).toEqual({ keep: "1", drop: "2" });
    expect(record.labels).toEqual({ keep: "1", add: "3" });
    expect((await store.update("k", { only: "x" })).record.labels).toEqual({ only: "x" });
    await expect(store.update("k", {}, ["kind"])).rejects.toSatisfy(isInvalidArgument);
    await store.restoreLabels("k", { back: "y" });
    expect((await store.get("k")).labels).toEqual({ back: "y" });
    await expect(store.update("nope", {})).rejects.toSatisfy(isNotFound);
  });

  it("keeps namespaces and snapshotters apart", async () => {
    const other = fx.meta.snapshots("other", "native");
    const otherSnapshotter = fx.meta.snapshots("default", "overlayfs");
    const [mine] = await chain(store, ["layer"]);
    await expect(other.get("layer")).rejects.toSatisfy(isNotFound);
    await expect(otherSnapshotter.get("layer")).rejects.toSatisfy(isNotFound);
    await expect(other.allocate({ key: "x", kind: "active", parent: "layer" })).rejects.toSatisfy(isNotFound);
    await expect(other.remove("layer")).rejects.toSatisfy(isNotFound);
    const [theirs] = await chain(other, ["layer"]);
    expect(theirs).toMatch(/^other\//);
    expect(theirs).not.toBe(mine);
    expect((await other.list()).map((r) => r.key)).toEqual(["layer"]);
    await expect(fx.meta.namespaces.delete("other")).rejects.toThrow(/1 snapshots/);
    await other.remove("layer");
    await fx.meta.namespaces.delete("other");
  });

  it("shares another namespace's committed snapshot when the backend parents match", async () => {
    const other = fx.meta.snapshots("other", "native");
    const [, l2] = await chain(store, ["l1", "l2"]);
    // No parent here yet: l2 sits on l1 elsewhere, so it is a different filesystem.
    expect(await other.share({ key: "l2" })).toBeUndefined();
    const shared1 = await other.share({ key: "l1", labels: { mine: "yes" } });
    expect(shared1).toMatchObject({ key: "l1", kind: "committed", labels: { mine: "yes" } });
    const shared2 = await other.share({ key: "l2", parent: "l1" });
    expect(shared2?.backendKey).toBe(l2);
    // Already there: nothing to do.
    expect(await other.share({ key: "l2", parent: "l1" })).toBeUndefined();
    // Removing one namespace's record queues the backend key; GC keeps it while the other uses it.
    await other.remove("l2");
    expect((await store.get("l2")).backendKey).toBe(l2);
  });

  it("adds created and committed snapshots to a lease, swapping the key for the name on commit", async () => {
    const leases = fx.meta.leases("default");
    await leases.create({ id: "l" });
    await create(store, "work", undefined, "active", {}, "l");
    expect(await leases.listResources("l")).toEqual([{ type: "snapshots/native", id: "work" }]);
    const { backendKey } = await store.allocateCommit("done", "work", { lease: "l" });
    await store.commit({ name: "done", key: "work", backendKey }, { lease: "l" });
    expect(await leases.listResources("l")).toEqual([{ type: "snapshots/native", id: "done" }]);
  });
});

describe("schema migration to snapshot records", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-metadata-v1-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("upgrades a version 1 database with its data intact", async () => {
    const path = join(dir, "metadata.db");
    // A version 1 file as the previous release wrote it: the first step of the append-only list.
    const v1 = new Database(path);
    v1.pragma("journal_mode = WAL");
    v1.pragma("foreign_keys = ON");
    expect(runMigrations(v1, migrations.slice(0, 1), path)).toBe(1);
    const digest = `sha256:${"a".repeat(64)}`;
    v1.exec(`
      INSERT INTO namespaces VALUES ('default', '{}', 1, 1);
      INSERT INTO images VALUES ('default', 'img', '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"${digest}","size":3}', '${digest}', '{}', 1, 1);
      INSERT INTO content VALUES ('default', '${digest}', 3, '{"${Labels.GcRefSnapshot}.native":"chain"}', 1, 1);
      INSERT INTO leases VALUES ('default', 'keep', '{}', 1);
      INSERT INTO lease_resources VALUES ('default', 'keep', 'content', '${digest}');
    `);
    v1.close();

    const meta = openMetadata(path);
    try {
      expect(meta.schemaVersion).toBe(2);
      expect((await meta.images("default").get("img")).target.digest).toBe(digest);
      expect(await meta.leases("default").listResources("keep")).toEqual([{ type: "content", id: digest }]);
      const store = meta.snapshots("default", "native");
      const { backendKey } = await store.allocate({ key: "chain-active", kind: "active" });
      await store.create({ key: "chain-active", kind: "active", backendKey });
      expect((await store.list()).map((r) => r.key)).toEqual(["chain-active"]);
      const { db } = internals(meta);
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      expect(db.pragma("foreign_key_check")).toEqual([]);
    } finally {
      meta.close();
    }
    // Reopening finds nothing left to migrate.
    const again = openMetadata(path);
    expect(again.schemaVersion).toBe(2);
    again.close();
  });
});
