import { spawn } from "node:child_process";
import { join } from "node:path";
import { type ContentStore, digestOf, Labels } from "@berth/content";
import { isNotFound } from "@berth/errdefs";
import { tryLockFile } from "@berth/sys";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { namespacedContentStore } from "./content-store.js";
import { collectGarbage } from "./gc.js";
import { createFixture, type Fixture, put } from "./testing/fixtures.js";

const manifest = "application/vnd.oci.image.manifest.v1+json";

async function has(store: ContentStore, digest: string): Promise<boolean> {
  try {
    await store.info(digest);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

describe("garbage collection", () => {
  let fx: Fixture;
  let ns: ContentStore;
  beforeEach(async () => {
    fx = await createFixture();
    ns = namespacedContentStore(fx.meta, fx.backing, "default");
  });
  afterEach(() => fx.cleanup());

  it("keeps what images reach through gc.ref.content labels and removes the rest", async () => {
    const layer = await put(ns, "layer");
    const config = await put(ns, "config");
    const mf = await put(ns, "manifest", {
      [`${Labels.GcRefContent}.l.0`]: layer,
      [`${Labels.GcRefContent}.config`]: config,
    });
    const idx = await put(ns, "index", { [`${Labels.GcRefContent}.m.0`]: mf });
    const stray = await put(ns, "stray");
    const rooted = await put(ns, "rooted", { [Labels.GcRoot]: "true" });
    await fx.meta
      .images("default")
      .create({ name: "img", target: { mediaType: manifest, digest: idx, size: 5 } });

    const result = await collectGarbage(fx.meta, fx.backing);
    expect(result.removed).toEqual([stray]);
    expect(result.removedRecords).toEqual([{ namespace: "default", digest: stray }]);
    for (const d of [layer, config, mf, idx, rooted]) expect(await has(ns, d), d).toBe(true);
    expect(await has(ns, stray)).toBe(false);
    expect(await has(fx.backing, stray)).toBe(false);

    await fx.meta.images("default").delete("img");
    const second = await collectGarbage(fx.meta, fx.backing);
    expect(second.removed.sort()).toEqual([layer, config, mf, idx].sort());
    expect(await has(ns, rooted)).toBe(true);
  });

  it("removes a shared blob only once no namespace records it", async () => {
    const other = namespacedContentStore(fx.meta, fx.backing, "other");
    const blob = await put(ns, "shared");
    await (await other.writer({ ref: "r", expected: blob })).commit(0, blob);
    await fx.meta
      .images("other")
      .create({ name: "keep", target: { mediaType: manifest, digest: blob, size: 6 } });
    const first = await collectGarbage(fx.meta, fx.backing);
    expect(first.removedRecords).toEqual([{ namespace: "default", digest: blob }]);
    expect(first.removed).toEqual([]);
    expect(await has(other, blob)).toBe(true);
    await fx.meta.images("other").delete("keep");
    expect((await collectGarbage(fx.meta, fx.backing)).removed).toEqual([blob]);
  });

  it("leases protect their resources until deleted or expired; flat leases do not follow references", async () => {
    const leases = fx.meta.leases("default");
    const child = await put(ns, "child");
    const parent = await put(ns, "parent", { [`${Labels.GcRefContent}.x`]: child });
    await leases.create({ id: "deep" });
    await leases.addResource("deep", { type: "content", id: parent });
    await collectGarbage(fx.meta, fx.backing);
    expect(await has(ns, child)).toBe(true);

    await leases.delete("deep");
    await leases.create({ id: "flat", flat: true });
    await leases.addResource("flat", { type: "content", id: parent });
    const flat = await collectGarbage(fx.meta, fx.backing);
    expect(flat.removed).toEqual([child]);
    expect(await has(ns, parent)).toBe(true);

    await leases.create({ id: "expiring", expiresAt: new Date("2031-01-01T00:00:00Z") });
    await leases.addResource("expiring", { type: "content", id: parent });
    await leases.delete("flat");
    expect(
      (await collectGarbage(fx.meta, fx.backing, { now: new Date("2030-12-31T00:00:00Z") })).removed,
    ).toEqual([]);
    const later = await collectGarbage(fx.meta, fx.backing, { now: new Date("2031-01-02T00:00:00Z") });
    expect(later.removedLeases).toEqual([{ namespace: "default", id: "expiring" }]);
    expect(later.removed).toEqual([parent]);
    expect(await leases.list()).toEqual([]);
  });

  it("withLease protects content written during a pull until the image record takes over", async () => {
    const leases = fx.meta.leases("default");
    let layer = "";
    await leases.withLease(async (lease) => {
      const leased = namespacedContentStore(fx.meta, fx.backing, "default", { lease: lease.id });
      layer = await put(leased, "pulled layer");
      const mf = await put(leased, "pulled manifest", { [`${Labels.GcRefContent}.l.0`]: layer });
      // A collection in the middle of the pull removes nothing.
      expect((await collectGarbage(fx.meta, fx.backing)).removed).toEqual([]);
      await fx.meta
        .images("default")
        .create({ name: "pulled", target: { mediaType: manifest, digest: mf, size: 15 } });
    });
    expect((await collectGarbage(fx.meta, fx.backing)).removed).toEqual([]);
    expect(await has(ns, layer)).toBe(true);
  });

  it("live ingests protect their expected blob; expired ones are dropped and their backing ingest aborted", async () => {
    const other = namespacedContentStore(fx.meta, fx.backing, "other");
    const blob = await put(other, "wanted");
    await other.delete(blob); // only the backing blob is left
    const shortLived = namespacedContentStore(fx.meta, fx.backing, "default", { ingestExpiryMs: 60_000 });
    const shared = await shortLived.writer({ ref: "shared", expected: blob });
    const partial = await shortLived.writer({ ref: "partial" });
    await partial.write(Buffer.from("half"));
    await partial.close();

    const now = Date.now();
    const early = await collectGarbage(fx.meta, fx.backing, { now: new Date(now) });
    expect(early.removed).toEqual([]);
    expect(early.abortedIngests).toEqual([]);
    expect(await shared.commit(0, blob, { labels: { [Labels.GcRoot]: "true" } })).toBe(blob);

    const late = await collectGarbage(fx.meta, fx.backing, { now: new Date(now + 120_000) });
    expect(late.removedIngests).toEqual([{ namespace: "default", ref: "partial" }]);
    expect(late.abortedIngests).toEqual(["default/partial"]);
    expect(await fx.backing.listStatuses()).toEqual([]);
    // The committed blob is a recorded root now, so it survives.
    expect(await has(ns, blob)).toBe(true);
  });

  it("removes blobs and aborts ingests written to the backing store behind the metadata's back", async () => {
    const data = Buffer.from("direct");
    const w = await fx.backing.writer({ ref: "direct" });
    await w.write(data);
    const digest = await w.commit(data.length, digestOf(data));
    const dangling = await fx.backing.writer({ ref: "dangling" });
    await dangling.write(Buffer.from("x"));
    await dangling.close();
    const result = await collectGarbage(fx.meta, fx.backing);
    expect(result.removed).toEqual([digest]);
    expect(result.abortedIngests).toEqual(["dangling"]);
  });

  it("waits for commits in flight in another process (shared GC lock) before sweeping", async () => {
    const lockPath = join(fx.root, "gc.lock");
    const holder = spawn("flock", ["-s", lockPath, "cat"], { stdio: ["pipe", "pipe", "inherit"] });
    const gone = new Promise((resolve) => holder.once("exit", resolve));
    try {
      for (;;) {
        const probe = tryLockFile(lockPath, "exclusive");
        if (probe === undefined) break;
        probe.release();
        await new Promise((r) => setTimeout(r, 10));
      }
      const stray = await put(ns, "stray");
      let done = false;
      const collecting = collectGarbage(fx.meta, fx.backing).then((r) => {
        done = true;
        return r;
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(done).toBe(false); // cannot complete while the shared lock is held
      expect(await has(fx.backing, stray)).toBe(true);
      holder.stdin.end();
      expect((await collecting).removed).toEqual([stray]);
    } finally {
      holder.kill();
      await gone;
    }
  });
});
