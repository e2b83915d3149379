import { Labels } from "@berth/content";
import { failedPrecondition, notFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { namespacedContentStore } from "./content-store.js";
import { collectGarbage } from "./gc.js";
import { internals } from "./internals.js";
import { createFixture, type Fixture, put } from "./testing/fixtures.js";
import type { GcSnapshotter, SnapshotRecordStore } from "./types.js";

/**
 * A minimal backend for GC to remove from: a parent map with the backend rules that matter here
 * (a parent with children cannot go, a missing key is not-found). The snapshot records under test
 * are the real SQLite ones; the snapshots package runs the same GC against real snapshotters.
 */
class Backend {
  readonly snapshots = new Map<string, string | undefined>();
  readonly removed: string[] = [];
  /** What collectGarbage is given: remove, and walk when asked for. */
  readonly gc: GcSnapshotter;
  constructor(withWalk: boolean) {
    const remove = async (key: string) => {
      if (!this.snapshots.has(key)) throw notFound(`backend snapshot ${key} not found`);
      for (const parent of this.snapshots.values())
        if (parent === key) throw failedPrecondition(`backend snapshot ${key} has children`);
      this.snapshots.delete(key);
      this.removed.push(key);
    };
    const walk = async (fn: (info: { name: string; parent?: string }) => void | Promise<void>) => {
      for (const [name, parent] of this.snapshots)
        await fn(parent === undefined ? { name } : { name, parent });
    };
    this.gc = withWalk ? { remove, walk } : { remove };
  }
  add(key: string, parent?: string) {
    this.snapshots.set(key, parent);
  }
}

/** Prepares and commits `names` as a chain, mirroring each step in `backend`; returns backend keys. */
async function chain(store: SnapshotRecordStore, backend: Backend, names: string[], from?: string) {
  const keys: string[] = [];
  let parent = from;
  for (const name of names) {
    const input = {
      key: `${name}-active`,
      kind: "active" as const,
      ...(parent === undefined ? {} : { parent }),
    };
    const alloc = await store.allocate(input);
    backend.add(alloc.backendKey, alloc.backendParent);
    await store.create({ ...input, backendKey: alloc.backendKey });
    const { backendKey } = await store.allocateCommit(name, input.key);
    backend.snapshots.delete(alloc.backendKey);
    backend.add(backendKey, alloc.backendParent);
    await store.commit({ name, key: input.key, backendKey });
    keys.push(backendKey);
    parent = name;
  }
  return keys;
}

const manifest = "application/vnd.oci.image.manifest.v1+json";

describe.each([
  ["with walk", true],
  ["without walk", false],
])("garbage collection of snapshots (%s)", (_, withWalk) => {
  let fx: Fixture;
  let backend: Backend;
  let store: SnapshotRecordStore;
  const gc = () => collectGarbage(fx.meta, fx.backing, { snapshotters: { native: backend.gc } });
  beforeEach(async () => {
    fx = await createFixture();
    backend = new Backend(withWalk);
    store = fx.meta.snapshots("default", "native");
  });
  afterEach(() => fx.cleanup());

  it("removes an unreferenced chain children first, and keeps one an image's config label references", async () => {
    const kept = await chain(store, backend, ["k1", "k2", "k3"]);
    const dropped = await chain(store, backend, ["d1", "d2", "d3"]);
    const content = namespacedContentStore(fx.meta, fx.backing, "default");
    const config = await put(content, "config", { [`${Labels.GcRefSnapshot}.native`]: "k3" });
    const mf = await put(content, "manifest", { [`${Labels.GcRefContent}.config`]: config });
    await fx.meta
      .images("default")
      .create({ name: "img", target: { mediaType: manifest, digest: mf, size: 8 } });

    const result = await gc();
    expect(result.removedSnapshotRecords.map((r) => r.key).sort()).toEqual(["d1", "d2", "d3"]);
    expect(result.removedSnapshots).toEqual(
      [...dropped].reverse().map((backendKey) => ({ snapshotter: "native", backendKey })),
    );
    expect(backend.removed).toEqual([...dropped].reverse());
    expect([...backend.snapshots.keys()].sort()).toEqual([...kept].sort());
    expect((await store.list()).map((r) => r.key)).toEqual(["k1", "k2", "k3"]);

    await fx.meta.images("default").delete("img");
    await gc();
    expect(backend.snapshots.size).toBe(0);
    expect(internals(fx.meta).db.prepare("SELECT count(*) FROM snapshot_removals").pluck().get()).toBe(0);
  });

  it("keeps snapshots held by a lease until it goes, and gc.root snapshots with their parents", async () => {
    const leases = fx.meta.leases("default");
    await leases.create({ id: "pull" });
    const leased = await chain(store, backend, ["l1", "l2"]);
    await leases.addResource("pull", { type: "snapshots/native", id: "l2" });
    const [rootBase] = await chain(store, backend, ["r1"]);
    const input = {
      key: "container",
      kind: "active" as const,
      parent: "r1",
      labels: { [Labels.GcRoot]: "x" },
    };
    const alloc = await store.allocate(input);
    backend.add(alloc.backendKey, alloc.backendParent);
    await store.create({ ...input, backendKey: alloc.backendKey });

    expect((await gc()).removedSnapshots).toEqual([]);
    expect(backend.snapshots.size).toBe(4);
    await leases.delete("pull");
    await gc();
    expect(backend.removed).toEqual([...leased].reverse());
    expect([...backend.snapshots.keys()].sort()).toEqual([rootBase, alloc.backendKey].sort());
  });

  it("a flat lease still keeps the parents of what it holds", async () => {
    const leases = fx.meta.leases("default");
    await leases.create({ id: "flat", flat: true });
    await chain(store, backend, ["p", "c"]);
    await leases.addResource("flat", { type: "snapshots/native", id: "c" });
    expect((await gc()).removedSnapshotRecords).toEqual([]);
    expect((await store.list()).map((r) => r.key)).toEqual(["c", "p"]);
  });

  it("removes explicitly removed snapshots, and keeps a backend snapshot another namespace shares", async () => {
    const other = fx.meta.snapshots("other", "native");
    const root = { [Labels.GcRoot]: "yes" };
    const [base] = await chain(store, backend, ["base"]);
    await store.update("base", root);
    expect((await other.share({ key: "base", labels: root }))?.backendKey).toBe(base);
    await store.remove("base");
    expect((await gc()).removedSnapshots).toEqual([]);
    expect(backend.snapshots.has(base as string)).toBe(true);
    await other.remove("base");
    expect((await gc()).removedSnapshots).toEqual([{ snapshotter: "native", backendKey: base }]);
  });

  it("leaves the queue alone for snapshotters it was not given, and drops records regardless", async () => {
    const [key] = await chain(store, backend, ["alone"]);
    const result = await collectGarbage(fx.meta, fx.backing);
    expect(result.removedSnapshotRecords).toEqual([
      { namespace: "default", snapshotter: "native", key: "alone" },
    ]);
    expect(backend.snapshots.has(key as string)).toBe(true);
    expect((await gc()).removedSnapshots).toEqual([{ snapshotter: "native", backendKey: key }]);
  });
});

describe("garbage collection of backend snapshots without records", () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await createFixture();
  });
  afterEach(() => fx.cleanup());

  it("with walk removes backend leftovers no record uses, but never what a kept snapshot stands on", async () => {
    const backend = new Backend(true);
    const store = fx.meta.snapshots("default", "native");
    const [kept] = await chain(store, backend, ["kept"]);
    await store.update("kept", { [Labels.GcRoot]: "1" });
    backend.add("crash-leftover", kept);
    backend.add("unrecorded-base");
    backend.add("unrecorded-child", "unrecorded-base");
    const result = await collectGarbage(fx.meta, fx.backing, { snapshotters: { native: backend.gc } });
    expect(result.removedSnapshots.map((r) => r.backendKey)).toEqual([
      "unrecorded-child",
      "crash-leftover",
      "unrecorded-base",
    ]);
    expect([...backend.snapshots.keys()]).toEqual([kept]);
  });

  it("sync deletes collect with the snapshotters given to openMetadata", async () => {
    const backend = new Backend(true);
    const meta = fx.reopen({ snapshotters: { native: backend.gc } });
    await chain(meta.snapshots("default", "native"), backend, ["only"]);
    const content = namespacedContentStore(meta, fx.backing, "default");
    const config = await put(content, "config", { [`${Labels.GcRefSnapshot}.native`]: "only" });
    await meta
      .images("default")
      .create({ name: "img", target: { mediaType: manifest, digest: config, size: 6 } });
    await collectGarbage(meta, fx.backing);
    expect(backend.snapshots.size).toBe(1);
    await meta.images("default").delete("img", { sync: true });
    expect(backend.snapshots.size).toBe(0);
    expect(backend.removed).toHaveLength(1);
  });

  it("retries a removal the backend refused and reports unexpected errors after the sweep", async () => {
    const store = fx.meta.snapshots("default", "native");
    const backend = new Backend(false);
    const [a] = await chain(store, backend, ["a"]);
    backend.add("stranger", a);
    await store.remove("a");
    expect(
      (await collectGarbage(fx.meta, fx.backing, { snapshotters: { native: backend.gc } })).removedSnapshots,
    ).toEqual([]);
    backend.snapshots.delete("stranger");
    const failing: GcSnapshotter = {
      remove: async () => {
        throw new Error("disk on fire");
      },
    };
    await expect(collectGarbage(fx.meta, fx.backing, { snapshotters: { native: failing } })).rejects.toThrow(
      "disk on fire",
    );
    expect(
      (await collectGarbage(fx.meta, fx.backing, { snapshotters: { native: backend.gc } })).removedSnapshots,
    ).toEqual([{ snapshotter: "native", backendKey: a }]);
  });
});
