import { spawn } from "node:child_process";
import { join } from "node:path";
import { digestOf } from "@berth/content";
import { isAlreadyExists, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { tryLockFile } from "@berth/sys";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { namespacedContentStore } from "./content-store.js";
import { createFixture, type Fixture, put, read } from "./testing/fixtures.js";

async function digests(store: { walk: (fn: (i: { digest: string }) => void) => Promise<void> }) {
  const out: string[] = [];
  await store.walk((i) => {
    out.push(i.digest);
  });
  return out;
}

describe("namespaced content store", () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await createFixture();
  });
  afterEach(() => fx.cleanup());

  it("shows a namespace only the blobs it committed; labels live in the namespace", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const b = namespacedContentStore(fx.meta, fx.backing, "b");
    const digest = await put(a, "shared layer", { "containerd.io/distribution.source.example.com": "repo" });
    expect(await read(a, digest)).toBe("shared layer");
    expect((await a.info(digest)).labels).toEqual({
      "containerd.io/distribution.source.example.com": "repo",
    });
    // The backing blob carries no namespace's labels.
    expect((await fx.backing.info(digest)).labels).toEqual({});

    await expect(b.info(digest)).rejects.toSatisfy(isNotFound);
    await expect(b.readerAt(digest)).rejects.toSatisfy(isNotFound);
    await expect(b.update({ digest, labels: {} })).rejects.toSatisfy(isNotFound);
    await expect(b.delete(digest)).rejects.toSatisfy(isNotFound);
    expect(await digests(b)).toEqual([]);
    expect(await digests(a)).toEqual([digest]);
  });

  it("shared policy: a namespace gets a blob another one has by naming its digest, without the bytes", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const b = namespacedContentStore(fx.meta, fx.backing, "b");
    const digest = await put(a, "0123456789");
    const w = await b.writer({ ref: "pull-layer", expected: digest });
    expect(await w.status()).toMatchObject({ ref: "pull-layer", offset: 10, total: 10, expected: digest });
    expect(w.digest()).toBe(digest);
    expect(await w.commit(0, digest, { labels: { mine: "b" } })).toBe(digest);
    expect(await b.info(digest)).toMatchObject({ size: 10, labels: { mine: "b" } });
    expect(await read(b, digest)).toBe("0123456789");
    await expect(b.status("pull-layer")).rejects.toSatisfy(isNotFound);
    // Now b has it: a writer for it is already-exists right away.
    await expect(b.writer({ ref: "again", expected: digest })).rejects.toSatisfy(isAlreadyExists);
  });

  it("shared policy: writing to a shared writer copies the blob first, as containerd does", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const b = namespacedContentStore(fx.meta, fx.backing, "b");
    const digest = await put(a, "abcdef");
    const w = await b.writer({ ref: "rewrite", expected: digest });
    await w.truncate(3);
    expect((await w.status()).offset).toBe(3);
    await w.write(Buffer.from("def"));
    expect(w.digest()).toBe(digest);
    expect(await w.commit(6, digest)).toBe(digest);
    expect(await read(b, digest)).toBe("abcdef");
  });

  it("isolated policy: a namespace must send the bytes even if another namespace has the blob", async () => {
    const isolated = fx.reopen({ contentSharing: "isolated" });
    const a = namespacedContentStore(isolated, fx.backing, "a");
    const b = namespacedContentStore(isolated, fx.backing, "b");
    const digest = await put(a, "private bytes");
    const w = await b.writer({ ref: "copy", expected: digest, total: 13 });
    expect((await w.status()).offset).toBe(0);
    await w.write(Buffer.from("private bytes"));
    // The backing commit finds the blob there already; the namespace still records it.
    expect(await w.commit(13, digest)).toBe(digest);
    expect((await b.info(digest)).size).toBe(13);
  });

  it("a commit of content the namespace already has consumes the ingest and throws already-exists", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const digest = await put(a, "twice", { first: "1" });
    const w = await a.writer({ ref: "second" });
    await w.write(Buffer.from("twice"));
    await expect(w.commit(5, digest, { labels: { second: "2" } })).rejects.toSatisfy(isAlreadyExists);
    await expect(a.status("second")).rejects.toSatisfy(isNotFound);
    expect((await a.info(digest)).labels).toEqual({ first: "1" });
  });

  it("delete drops only the namespace's record; the blob stays for others until GC", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const b = namespacedContentStore(fx.meta, fx.backing, "b");
    const digest = await put(a, "kept");
    await (await b.writer({ ref: "x", expected: digest })).commit(0, digest);
    await a.delete(digest);
    await expect(a.info(digest)).rejects.toSatisfy(isNotFound);
    expect(await read(b, digest)).toBe("kept");
    await b.delete(digest);
    expect((await fx.backing.info(digest)).size).toBe(4);
  });

  it("namespaces ingest refs in the backing store", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const b = namespacedContentStore(fx.meta, fx.backing, "b");
    const wa = await a.writer({ ref: "layer" });
    const wb = await b.writer({ ref: "layer" }); // no conflict: different backing refs
    await wa.write(Buffer.from("aaa"));
    await wb.write(Buffer.from("b"));
    expect((await fx.backing.listStatuses()).map((s) => s.ref).sort()).toEqual(["a/layer", "b/layer"]);
    expect(await a.listStatuses()).toMatchObject([{ ref: "layer", offset: 3 }]);
    expect(await b.status("layer")).toMatchObject({ ref: "layer", offset: 1 });
    expect(await a.listStatuses(["ref==other"])).toEqual([]);
    await wa.close();
    await a.abort("layer");
    await expect(a.status("layer")).rejects.toSatisfy(isNotFound);
    await expect(a.abort("layer")).rejects.toSatisfy(isNotFound);
    expect((await fx.backing.listStatuses()).map((s) => s.ref)).toEqual(["b/layer"]);
    await wb.close();
  });

  it("updates labels by field path and filters walks on them", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const d1 = await put(a, "one", { keep: "x", drop: "y" });
    const d2 = await put(a, "two");
    const info = await a.update({ digest: d1, labels: { drop: "", added: "z" } }, [
      "labels.drop",
      "labels.added",
    ]);
    expect(info.labels).toEqual({ keep: "x", added: "z" });
    await expect(a.update({ digest: d1, labels: {} }, ["size"])).rejects.toSatisfy(isInvalidArgument);
    const found: string[] = [];
    await a.walk(
      (i) => {
        found.push(i.digest);
      },
      ["labels.added==z", `digest==${d2}`],
    );
    expect(found.sort()).toEqual([d1, d2].sort());
  });

  it("under a lease: ingests and then committed blobs are added to it in the same transaction", async () => {
    const leases = fx.meta.leases("a");
    await leases.create({ id: "pull" });
    const a = namespacedContentStore(fx.meta, fx.backing, "a", { lease: "pull" });
    const w = await a.writer({ ref: "blob" });
    expect(await leases.listResources("pull")).toEqual([{ type: "ingests", id: "blob" }]);
    await w.write(Buffer.from("leased"));
    const digest = await w.commit(6, digestOf("leased"));
    expect(await leases.listResources("pull")).toEqual([{ type: "content", id: digest }]);

    const orphan = namespacedContentStore(fx.meta, fx.backing, "a", { lease: "missing" });
    await expect(orphan.writer({ ref: "x" })).rejects.toSatisfy(isNotFound);
  });

  it("a commit waits while another process holds the GC lock exclusively", async () => {
    const a = namespacedContentStore(fx.meta, fx.backing, "a");
    const w = await a.writer({ ref: "blocked" });
    await w.write(Buffer.from("wait for gc"));
    // flock(1) holds an exclusive lock on gc.lock until its stdin closes (cat exits).
    const holder = spawn("flock", ["-x", join(fx.root, "gc.lock"), "cat"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    const gone = new Promise((resolve) => holder.once("exit", resolve));
    try {
      await new Promise<void>((resolve) => holder.once("spawn", () => resolve()));
      // Wait until flock(1) really holds the lock: our own try would fail.
      for (;;) {
        const probe = tryLockFile(join(fx.root, "gc.lock"), "shared");
        if (probe === undefined) break;
        probe.release();
        await new Promise((r) => setTimeout(r, 10));
      }
      let done = false;
      const committing = w.commit(11, digestOf("wait for gc")).then((d) => {
        done = true;
        return d;
      });
      await new Promise((r) => setTimeout(r, 100));
      expect(done).toBe(false); // cannot complete while the lock is held
      holder.stdin.end();
      expect(await committing).toBe(digestOf("wait for gc"));
    } finally {
      holder.kill();
      await gone;
    }
  });
});
