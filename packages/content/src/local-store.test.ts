import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, linkSync, readdirSync, statSync, truncateSync, writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isUnavailable } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { digestOf } from "./digest.js";
import { readBlob, writeBlob } from "./helpers.js";
import { createLocalContentStore, type LocalContentStore } from "./local-store.js";
import { contentSuite } from "./testsuite/index.js";

contentSuite("local", async (root) => ({ store: await createLocalContentStore(root) }), {
  peer: { module: new URL("./local-store.ts", import.meta.url).href, exportName: "createLocalContentStore" },
});

const enc = new TextEncoder();
const ingestDir = (root: string, ref: string) =>
  join(root, "ingest", createHash("sha256").update(ref).digest("hex"));
const mode = (path: string) => statSync(path).mode & 0o777;

/** Every path under `dir`, relative, sorted. */
function tree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).sort();
}

describe("local content store", () => {
  let root: string;
  let store: LocalContentStore;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "berth-local-content-"));
    store = await createLocalContentStore(join(root, "store"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("lays out blobs, ingests and labels with the documented names and modes", async () => {
    const s = store.root;
    for (const dir of [
      s,
      join(s, "blobs", "sha256"),
      join(s, "blobs", "sha512"),
      join(s, "ingest"),
      join(s, "labels"),
    ]) {
      expect(mode(dir)).toBe(0o700);
    }
    const w = await store.writer({ ref: "layout", total: 4, expected: digestOf("data") });
    await w.write(enc.encode("da"));
    const dir = ingestDir(s, "layout");
    expect(readdirSync(dir).sort()).toEqual([
      "data",
      "expected",
      "lock",
      "ref",
      "startedat",
      "total",
      "updatedat",
    ]);
    expect(mode(dir)).toBe(0o700);
    expect(await readFile(join(dir, "ref"), "utf8")).toBe("layout");
    expect(await readFile(join(dir, "total"), "utf8")).toBe("4");
    expect(await readFile(join(dir, "expected"), "utf8")).toBe(digestOf("data"));
    expect(mode(join(dir, "data"))).toBe(0o600);
    await w.write(enc.encode("ta"));
    const digest = await w.commit(4, digestOf("data"), { labels: { k: "v" } });

    const blob = join(s, "blobs", "sha256", digest.slice("sha256:".length));
    expect(mode(blob)).toBe(0o444);
    expect(statSync(blob).nlink).toBe(1);
    expect(await readFile(blob, "utf8")).toBe("data");
    const labels = JSON.parse(await readFile(join(s, "labels", "sha256", `${digest.slice(7)}.json`), "utf8"));
    expect(labels.labels).toEqual({ k: "v" });
  });

  it("leaves no temporary files behind after commits, updates and deletes", async () => {
    const a = await writeBlob(store, "a", enc.encode("aaaa"), { labels: { x: "1" } });
    await writeBlob(store, "b", enc.encode("bbbb"));
    await store.update({ digest: a, labels: { y: "2" } }, ["labels.y"]);
    await writeBlob(store, "dup", enc.encode("aaaa"));
    const w = await store.writer({ ref: "aborted" });
    await w.write(enc.encode("zz"));
    await w.close();
    await store.abort("aborted");
    expect(readdirSync(join(store.root, "ingest"))).toEqual([]);
    expect(tree(join(store.root, "blobs"))).toEqual(
      ["sha256", "sha512", `sha256/${a.slice(7)}`, `sha256/${digestOf("bbbb").slice(7)}`].sort(),
    );
    expect(tree(join(store.root, "labels"))).toEqual(
      ["lock", "sha256", `sha256/${a.slice(7)}.json`, "sha512"].sort(),
    );
    await store.delete(a);
    expect(tree(join(store.root, "labels"))).toEqual(["lock", "sha256", "sha512"]);
  });

  it("honours blobMode 0o644 and rejects other modes", async () => {
    const open = await createLocalContentStore(join(root, "rw"), { blobMode: 0o644 });
    const digest = await writeBlob(open, "m", enc.encode("mode"));
    expect(mode(join(open.root, "blobs", "sha256", digest.slice(7)))).toBe(0o644);
    await expect(createLocalContentStore(join(root, "bad"), { blobMode: 0o600 as 0o644 })).rejects.toSatisfy(
      isInvalidArgument,
    );
  });

  it("resumes after the data file was truncated behind its back, using the real length", async () => {
    const w = await store.writer({ ref: "cut", total: 10 });
    await w.write(enc.encode("0123456789"));
    await w.close();
    // What a crash before fsync can leave: fewer bytes than were written.
    truncateSync(join(ingestDir(store.root, "cut"), "data"), 4);
    expect((await store.status("cut")).offset).toBe(4);
    const again = await store.writer({ ref: "cut", total: 10 });
    expect((await again.status()).offset).toBe(4);
    expect(again.digest()).toBe(digestOf("0123"));
    await again.write(enc.encode("456789"));
    expect(await again.commit(10, digestOf("0123456789"))).toBe(digestOf("0123456789"));
  });

  it("never stores a blob under a digest it does not match", async () => {
    const claimed = digestOf("the real thing");
    const w = await store.writer({ ref: "liar", expected: claimed });
    await w.write(enc.encode("an impostor!!!"));
    await expect(w.commit(14)).rejects.toSatisfy(isFailedPrecondition);
    await w.close();
    // Garbage appended to the ingest behind the writer's back is hashed on resume, not trusted.
    writeFileSync(join(ingestDir(store.root, "liar"), "data"), "the real thing, plus");
    const again = await store.writer({ ref: "liar" });
    await expect(again.commit(0)).rejects.toSatisfy(isFailedPrecondition);
    await again.close();
    expect(tree(join(store.root, "blobs"))).toEqual(["sha256", "sha512"]);
    // With the right bytes it goes through.
    expect(await writeBlob(store, "liar", enc.encode("the real thing"), { digest: claimed })).toBe(claimed);
    for (const name of tree(join(store.root, "blobs", "sha256"))) {
      const bytes = await readFile(join(store.root, "blobs", "sha256", name));
      expect(`sha256:${name}`).toBe(digestOf(bytes));
    }
  });

  it("does not write through an ingest left linked to a committed blob by a crash", async () => {
    const digest = await writeBlob(store, "first", enc.encode("committed"));
    const blob = join(store.root, "blobs", "sha256", digest.slice(7));
    // Recreate the state between link(2) and the ingest's removal: "data" is a second name of the blob.
    const dir = ingestDir(store.root, "crashed");
    const w = await store.writer({ ref: "crashed" });
    await w.close();
    await rm(join(dir, "data"));
    linkSync(blob, join(dir, "data"));
    const again = await store.writer({ ref: "crashed" });
    expect((await again.status()).offset).toBe(0);
    await again.write(enc.encode("other"));
    await again.commit(5);
    expect(await readFile(blob, "utf8")).toBe("committed");
  });

  it("resumes an ingest whose data a crashed commit left read-only", async () => {
    const w = await store.writer({ ref: "ro" });
    await w.write(enc.encode("half"));
    await w.close();
    const data = join(ingestDir(store.root, "ro"), "data");
    chmodSync(data, 0o444);
    const again = await store.writer({ ref: "ro" });
    expect(mode(data)).toBe(0o600);
    expect((await again.status()).offset).toBe(4);
    await again.close();
  });

  it("rejects writers whose total or expected digest contradict the recorded ingest", async () => {
    const w = await store.writer({ ref: "rec", total: 5, expected: digestOf("12345") });
    await w.close();
    await expect(store.writer({ ref: "rec", total: 6 })).rejects.toSatisfy(isFailedPrecondition);
    await expect(store.writer({ ref: "rec", expected: digestOf("other") })).rejects.toSatisfy(
      isFailedPrecondition,
    );
    const ok = await store.writer({ ref: "rec" });
    expect(await ok.status()).toMatchObject({ total: 5, expected: digestOf("12345") });
    await ok.close();
  });

  it("is locked against flock(1) in another process, both ways", async () => {
    const w = await store.writer({ ref: "flock" });
    const lockPath = join(ingestDir(store.root, "flock"), "lock");
    const probe = (path: string) =>
      new Promise<number | null>((resolve) => spawn("flock", ["-n", path, "true"]).on("exit", resolve));
    expect(await probe(lockPath)).toBe(1);
    await w.close();
    expect(await probe(lockPath)).toBe(0);

    // A foreign holder: flock(1) keeps the lock while its child (cat) waits on stdin.
    const holder = spawn("flock", ["-x", lockPath, "sh", "-c", "echo held; cat"], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    try {
      await new Promise((resolve) => holder.stdout.once("data", resolve));
      await expect(store.writer({ ref: "flock" })).rejects.toSatisfy(isUnavailable);
    } finally {
      const gone = new Promise((resolve) => holder.once("exit", resolve));
      holder.stdin.end();
      await gone;
    }
    const again = await store.writer({ ref: "flock" });
    await again.close();
  });

  it("lets exactly one of several concurrent commits of the same content win", async () => {
    const data = enc.encode("raced");
    const writers = await Promise.all(["r1", "r2", "r3"].map((ref) => store.writer({ ref })));
    for (const w of writers) await w.write(data);
    const results = await Promise.allSettled(writers.map((w) => w.commit(5, digestOf(data))));
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(1);
    for (const r of results) if (r.status === "rejected") expect(isAlreadyExists(r.reason)).toBe(true);
    expect(readdirSync(join(store.root, "ingest"))).toEqual([]);
    expect(Buffer.from(await readBlob(store, digestOf(data))).toString()).toBe("raced");
  });

  it("stores and streams the empty blob, and streams from past the end as empty", async () => {
    const empty = await writeBlob(store, "empty", new Uint8Array(0), { size: 0, digest: digestOf("") });
    expect(empty).toBe(digestOf(""));
    expect((await readBlob(store, empty)).length).toBe(0);
    const drain = async (s: AsyncIterable<unknown>) => {
      const out: Buffer[] = [];
      for await (const c of s) out.push(c as Buffer);
      return Buffer.concat(out).toString();
    };
    const r0 = await store.readerAt(empty);
    expect(await drain(r0.stream())).toBe("");
    await r0.close();
    const abc = await writeBlob(store, "abc", enc.encode("abc"));
    const r = await store.readerAt(abc);
    expect(await drain(r.stream(3))).toBe("");
    expect(await drain(r.stream(10))).toBe("");
    expect(await drain(r.stream(2))).toBe("c");
    expect(() => r.stream(-1)).toThrow(/start must be/);
    await r.close();
    await expect(r.readAt(new Uint8Array(1), 0)).rejects.toThrow(/closed/);
  });

  it("keeps reading a blob deleted while a reader is open", async () => {
    const digest = await writeBlob(store, "del", enc.encode("still here"));
    const reader = await store.readerAt(digest);
    await store.delete(digest);
    expect(existsSync(join(store.root, "blobs", "sha256", digest.slice(7)))).toBe(false);
    const chunks: Buffer[] = [];
    for await (const c of reader.stream()) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks).toString()).toBe("still here");
    await reader.close();
  });
});
