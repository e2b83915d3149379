import { execFileSync } from "node:child_process";
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLocalContentStore, digestOf, Labels as GcLabels } from "@berth/content";
import { isAlreadyExists, isFailedPrecondition, isNotFound } from "@berth/errdefs";
import { collectGarbage, type Metadata, namespacedContentStore, openMetadata } from "@berth/metadata";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SnapshotLabels } from "./labels.js";
import { namespacedSnapshotter } from "./namespaced.js";
import { openMetaStore } from "./storage/meta-store.js";
import { snapshotterSuite } from "./testsuite/index.js";
import { type Info, Kind, type Mount, type Snapshotter, type Usage } from "./types.js";

/**
 * A real, minimal copying backend for these tests: `@berth/snapshots/storage` for the records and
 * `cp -a` for the trees, bind mounts like the native snapshotter's. The native snapshotter itself
 * cannot be used here: `@berth/snapshotter-native` depends on this package, and importing it back
 * would be a package cycle (tools/check-boundaries.mjs rejects it).
 */
async function createCopyBackend(root: string): Promise<Snapshotter> {
  const store = openMetaStore(join(root, "metadata.db"));
  const fsDir = (id: string) => join(root, "snapshots", id);
  const mountsOf = (id: string, kind: Kind): Mount[] => [
    { type: "bind", source: fsDir(id), options: ["rbind", kind === Kind.View ? "ro" : "rw"] },
  ];
  const measure = (dir: string): Usage => {
    let inodes = 0;
    let size = 0;
    const visit = (path: string) => {
      const st = lstatSync(path);
      inodes++;
      size += st.blocks * 512;
      if (st.isDirectory()) for (const entry of readdirSync(path)) visit(join(path, entry));
    };
    visit(dir);
    return { inodes, size };
  };
  const create = async (
    kind: "active" | "view",
    key: string,
    parent?: string,
    labels?: Record<string, string>,
  ) => {
    const { rec, from } = store.transaction((tx) => ({
      rec: tx.createSnapshot(kind, key, parent, labels),
      from: parent === undefined ? undefined : tx.lookup(parent).id,
    }));
    try {
      mkdirSync(fsDir(rec.id), { recursive: true, mode: 0o755 });
      if (from !== undefined) execFileSync("cp", ["-a", "--reflink=auto", `${fsDir(from)}/.`, fsDir(rec.id)]);
    } catch (err) {
      store.transaction((tx) => tx.remove(key));
      rmSync(fsDir(rec.id), { recursive: true, force: true });
      throw err;
    }
    return mountsOf(rec.id, kind);
  };
  return {
    async stat(key) {
      return store.transaction((tx) => tx.getInfo(key));
    },
    async update(info, fieldpaths) {
      return store.transaction((tx) => tx.updateInfo(info, fieldpaths));
    },
    async usage(key) {
      const { id, kind } = store.transaction((tx) => tx.lookup(key));
      return kind === Kind.Committed ? store.transaction((tx) => tx.usage(key)) : measure(fsDir(id));
    },
    async mounts(key) {
      const rec = store.transaction((tx) => tx.getSnapshot(key));
      return mountsOf(rec.id, rec.kind);
    },
    prepare: (key, parent, opts) => create("active", key, parent, opts?.labels),
    view: (key, parent, opts) => create("view", key, parent, opts?.labels),
    async commit(name, key, opts) {
      const { id } = store.transaction((tx) => tx.lookup(key));
      const usage = measure(fsDir(id));
      store.transaction((tx) => tx.commitActive(key, name, usage, opts?.labels));
    },
    async remove(key) {
      const { id } = store.transaction((tx) => tx.remove(key));
      rmSync(fsDir(id), { recursive: true, force: true });
    },
    async walk(fn, filters) {
      const infos: Info[] = [];
      store.transaction((tx) => tx.walk((info) => infos.push(info), filters));
      for (const info of infos) await fn(info);
    },
    async close() {
      store.close();
    },
  };
}

snapshotterSuite("namespaced over a copying backend", async (root) => {
  const meta = openMetadata(join(root, "metadata.db"));
  const backend = await createCopyBackend(join(root, "backend"));
  return {
    snapshotter: namespacedSnapshotter(meta, backend, "copy", "suite"),
    async cleanup() {
      await backend.close();
      meta.close();
    },
  };
});

async function backendInfos(backend: Snapshotter): Promise<Info[]> {
  const out: Info[] = [];
  await backend.walk((info) => {
    out.push(info);
  });
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

async function names(sn: Snapshotter): Promise<string[]> {
  const out: string[] = [];
  await sn.walk((info) => {
    out.push(info.name);
  });
  return out.sort();
}

/** Prepares and commits `layers` in order (each on the previous), optionally with snapshot.ref labels. */
async function unpack(sn: Snapshotter, layers: string[], withRef = false): Promise<void> {
  let parent: string | undefined;
  for (const name of layers) {
    const key = `extract-${name}`;
    const labels = withRef ? { [SnapshotLabels.UncompressedRef]: name } : undefined;
    try {
      await sn.prepare(key, parent, labels === undefined ? undefined : { labels });
      await sn.commit(name, key);
    } catch (err) {
      if (!withRef || !isAlreadyExists(err)) throw err;
    }
    parent = name;
  }
}

describe("namespaced snapshotter", () => {
  let dir: string;
  let meta: Metadata;
  let backend: Snapshotter;
  const views: Snapshotter[] = [];
  const ns = (namespace: string, lease?: string) => {
    const sn = namespacedSnapshotter(meta, backend, "copy", namespace, lease === undefined ? {} : { lease });
    views.push(sn);
    return sn;
  };

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), "berth-namespaced-"));
    meta = openMetadata(join(dir, "metadata.db"));
    backend = await createCopyBackend(join(dir, "backend"));
  });
  afterEach(async () => {
    for (const sn of views.splice(0)) await sn.close();
    await backend.close();
    meta.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("keeps namespaces apart over one backend, each with its own record of the same chain", async () => {
    const a = ns("a");
    const b = ns("b");
    await unpack(a, ["l1", "l2"]);
    await a.prepare("work", "l2");
    await expect(b.stat("l1")).rejects.toSatisfy(isNotFound);
    await expect(b.prepare("x", "l2")).rejects.toSatisfy(isNotFound);
    await expect(b.remove("work")).rejects.toSatisfy(isNotFound);
    await expect(b.mounts("work")).rejects.toSatisfy(isNotFound);
    expect(await names(b)).toEqual([]);

    await unpack(b, ["l1", "l2"]);
    await b.prepare("work", "l1");
    expect(await names(a)).toEqual(["l1", "l2", "work"]);
    expect(await names(b)).toEqual(["l1", "l2", "work"]);
    expect((await b.stat("work")).parent).toBe("l1");
    expect((await a.stat("work")).parent).toBe("l2");
    // Six backend snapshots, under keys that name their namespace.
    const keys = (await backendInfos(backend)).map((i) => i.name);
    expect(keys).toHaveLength(6);
    expect(keys.filter((k) => k.startsWith("a/"))).toHaveLength(3);
    expect(keys.filter((k) => k.startsWith("b/"))).toHaveLength(3);
    // Removing in one namespace leaves the other's snapshot of the same name alone.
    await b.remove("work");
    await expect(a.remove("l2")).rejects.toSatisfy(isFailedPrecondition);
    expect((await a.stat("work")).kind).toBe(Kind.Active);
  });

  it("passes only inherited labels to the backend, on prepare, commit and update", async () => {
    const sn = ns("default");
    const inherited = `${SnapshotLabels.InheritedPrefix}remote`;
    await sn.prepare("work", undefined, { labels: { [inherited]: "1", private: "x" } });
    const [active] = await backendInfos(backend);
    expect(active?.labels).toEqual({ [inherited]: "1" });
    await sn.update({ name: "work", labels: { [inherited]: "2", private: "y" } });
    expect((await backendInfos(backend))[0]?.labels).toEqual({ [inherited]: "2" });
    expect((await sn.stat("work")).labels).toEqual({ [inherited]: "2", private: "y" });
    await sn.commit("done", "work", { labels: { other: "z" } });
    const [committed] = await backendInfos(backend);
    expect(committed).toMatchObject({ kind: Kind.Committed, labels: { [inherited]: "2" } });
    expect((await sn.stat("done")).labels).toEqual({ [inherited]: "2", private: "y", other: "z" });
  });

  it("leaves exactly one backend snapshot when two prepares of one key race", async () => {
    const sn = ns("default");
    const results = await Promise.allSettled([sn.prepare("k"), sn.prepare("k"), sn.prepare("k")]);
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect(isAlreadyExists(r.reason)).toBe(true);
    expect(await backendInfos(backend)).toHaveLength(1);
    expect((await backendInfos(backend))[0]?.name).toBe(
      (await meta.snapshots("default", "copy").get("k")).backendKey,
    );
  });

  it("shares a chain another namespace committed when unpacking with snapshot.ref labels", async () => {
    const a = ns("a");
    const b = ns("b");
    await unpack(a, ["l1"], true);
    const [l1] = await backendInfos(backend);
    // Put a file in l2 through a's active snapshot, to see it through b's view later.
    const mounts = await a.prepare("extract-l2", "l1", {
      labels: { [SnapshotLabels.UncompressedRef]: "l2" },
    });
    writeFileSync(join(mounts[0]?.source as string, "from-a"), "a wrote this");
    await a.commit("l2", "extract-l2");
    const before = (await backendInfos(backend)).length;

    await expect(
      b.prepare("extract-l1", undefined, { labels: { [SnapshotLabels.UncompressedRef]: "l1" } }),
    ).rejects.toSatisfy(isAlreadyExists);
    await unpack(b, ["l1", "l2"], true);
    expect(await names(b)).toEqual(["l1", "l2"]);
    expect((await b.stat("l2")).parent).toBe("l1");
    expect((await backendInfos(backend)).length).toBe(before);
    const view = await b.view("look", "l2");
    expect(readFileSync(join(view[0]?.source as string, "from-a"), "utf8")).toBe("a wrote this");
    // Already present in b: already-exists again, and no new record.
    await expect(
      b.prepare("again", undefined, { labels: { [SnapshotLabels.UncompressedRef]: "l1" } }),
    ).rejects.toSatisfy(isAlreadyExists);
    expect(l1?.name.startsWith("a/")).toBe(true);
  });

  it("GC removes an unreferenced chain from the backend and keeps one an image's config references", async () => {
    const backing = await createLocalContentStore(join(dir, "content"));
    const content = namespacedContentStore(meta, backing, "default");
    const sn = ns("default");
    await unpack(sn, ["keep1", "keep2"]);
    await unpack(sn, ["drop1", "drop2"]);
    await sn.remove("drop2");
    const put = async (text: string, labels: Record<string, string>) => {
      const w = await content.writer({ ref: text, total: text.length });
      await w.write(Buffer.from(text));
      return w.commit(text.length, digestOf(text), { labels });
    };
    const config = await put("config", { [`${GcLabels.GcRefSnapshot}.copy`]: "keep2" });
    const manifest = await put("manifest", { [`${GcLabels.GcRefContent}.config`]: config });
    await meta.images("default").create({
      name: "img",
      target: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifest, size: 8 },
    });

    const result = await collectGarbage(meta, backing, { snapshotters: { copy: backend } });
    expect(result.removedSnapshotRecords.map((r) => r.key)).toEqual(["drop1"]);
    expect(result.removedSnapshots).toHaveLength(2);
    expect(await names(sn)).toEqual(["keep1", "keep2"]);
    const left = await backendInfos(backend);
    expect(left.map((i) => i.kind)).toEqual([Kind.Committed, Kind.Committed]);
    // The kept chain still works.
    await sn.prepare("container", "keep2");
    await sn.update({ name: "container", labels: { [GcLabels.GcRoot]: "yes" } });
    await meta.images("default").delete("img");
    await collectGarbage(meta, backing, { snapshotters: { copy: backend } });
    expect(await names(sn)).toEqual(["container", "keep1", "keep2"]);
    expect(await backendInfos(backend)).toHaveLength(3);
  });

  it("protects what a leased snapshotter creates until the lease is deleted", async () => {
    const backing = await createLocalContentStore(join(dir, "content"));
    const leases = meta.leases("default");
    await leases.create({ id: "unpack" });
    const sn = ns("default", "unpack");
    await unpack(sn, ["l1", "l2"]);
    await sn.prepare("work", "l2");
    expect(await leases.listResources("unpack")).toEqual([
      { type: "snapshots/copy", id: "l1" },
      { type: "snapshots/copy", id: "l2" },
      { type: "snapshots/copy", id: "work" },
    ]);
    expect(
      (await collectGarbage(meta, backing, { snapshotters: { copy: backend } })).removedSnapshots,
    ).toEqual([]);
    await leases.delete("unpack");
    await collectGarbage(meta, backing, { snapshotters: { copy: backend } });
    expect(await names(ns("default"))).toEqual([]);
    expect(await backendInfos(backend)).toEqual([]);
    await expect(sn.prepare("x")).rejects.toSatisfy(isNotFound);
    expect(await backendInfos(backend)).toEqual([]);
  });

  it("refuses calls after close, without closing the backend", async () => {
    const sn = ns("default");
    await sn.prepare("k");
    await sn.close();
    await expect(sn.stat("k")).rejects.toSatisfy(isFailedPrecondition);
    expect(await backendInfos(backend)).toHaveLength(1);
  });
});
