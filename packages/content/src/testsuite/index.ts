/**
 * The conformance suite of {@link ContentStore}: every implementation (the local store, the
 * namespaced metadata view, remote proxies, third-party stores) runs it before its own cases.
 *
 * Import `contentSuite` from this package's `./testsuite` subpath in a test file, then:
 *
 * ```ts
 * contentSuite("local", async (root) => ({ store: await createLocalContentStore(root) }));
 * ```
 *
 * @packageDocumentation
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import {
  errorCode,
  isAlreadyExists,
  isFailedPrecondition,
  isInvalidArgument,
  isNotFound,
  isResourceExhausted,
  isUnavailable,
} from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { digestOf } from "../digest.js";
import { readBlob, writeBlob } from "../helpers.js";
import { Labels } from "../labels.js";
import type { ContentStore, Info } from "../types.js";

/** What a suite factory returns: the store under test and how to dispose of it. */
export interface ContentSuiteInstance {
  readonly store: ContentStore;
  /** Called after each test, even when it failed. The suite removes `root` itself afterwards. */
  readonly cleanup?: () => Promise<void>;
}

/**
 * Creates a store over the empty directory `root`. The suite calls it once per test, and twice
 * with the same root for the "two stores on one root" cases: implementations that share state
 * through the root must see each other's writes and locks.
 */
export type ContentSuiteFactory = (root: string) => Promise<ContentSuiteInstance>;

/** Options of {@link contentSuite}. */
export interface ContentSuiteOptions {
  /**
   * Enables the cases that run a second store in another process. `module` is the file URL of
   * an ES module whose export `exportName` takes a root and returns (a promise of) a
   * `ContentStore` or `{ store }`. A `.ts` module is run from source: the child gets the
   * `@berth/source` condition and a transpiling loader (which needs the `typescript` package).
   */
  readonly peer?: { readonly module: string; readonly exportName: string };
}

const enc = new TextEncoder();
const bytes = (s: string): Uint8Array => enc.encode(s);

/** Asserts that `promise` rejects with a berth error guard `guard` accepts; returns the error. */
async function rejects(
  promise: Promise<unknown>,
  guard: (err: unknown) => boolean,
  what: string,
): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    if (!guard(err))
      throw new Error(`${what}: rejected with the wrong code ${errorCode(err)}: ${String(err)}`);
    return err as Error;
  }
  throw new Error(`${what}: resolved, but should have rejected`);
}

async function collect(store: ContentStore, filters?: readonly string[]): Promise<Info[]> {
  const out: Info[] = [];
  await store.walk((info) => {
    out.push(info);
  }, filters);
  return out;
}

async function* chunks(...parts: string[]): AsyncIterable<Uint8Array> {
  for (const p of parts) yield bytes(p);
}

interface PeerReply {
  readonly ok: boolean;
  readonly code?: string;
  readonly message?: string;
  readonly offset?: number;
  readonly digest?: string;
  readonly size?: number;
}

/**
 * The .mjs helpers are not compiled, so they exist only under src/ (which the package ships):
 * beside this file when it runs from source, at ../../src/testsuite from dist/testsuite.
 */
function helperUrl(name: string): URL {
  return import.meta.url.endsWith(".ts")
    ? new URL(`./${name}`, import.meta.url)
    : new URL(`../../src/testsuite/${name}`, import.meta.url);
}

/** A store in a child process, driven over stdin/stdout (see peer.mjs). */
class Peer {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #waiting: ((reply: PeerReply) => void)[] = [];
  #stderr = "";
  #exited = false;

  private constructor(child: ChildProcessWithoutNullStreams) {
    this.#child = child;
    child.stderr.on("data", (d: Buffer) => {
      this.#stderr += d.toString();
    });
    createInterface({ input: child.stdout }).on("line", (line) => {
      this.#waiting.shift()?.(JSON.parse(line) as PeerReply);
    });
    child.on("exit", (code, signal) => {
      this.#exited = true;
      const failure: PeerReply = {
        ok: false,
        code: "peer-exited",
        message: `peer exited (${signal ?? code}): ${this.#stderr}`,
      };
      for (const w of this.#waiting.splice(0)) w(failure);
    });
  }

  static async start(module: string, exportName: string, root: string): Promise<Peer> {
    const args = [fileURLToPath(helperUrl("peer.mjs")), module, exportName, root];
    const fromSource = module.endsWith(".ts") || import.meta.url.endsWith(".ts");
    const flags = fromSource
      ? ["--conditions=@berth/source", "--import", helperUrl("ts-register.mjs").href]
      : [];
    const peer = new Peer(spawn(process.execPath, [...flags, ...args], { stdio: "pipe" }));
    const ready = await peer.#next();
    if (!("ready" in ready)) throw new Error(`peer did not start: ${ready.message ?? JSON.stringify(ready)}`);
    return peer;
  }

  #next(): Promise<PeerReply> {
    if (this.#exited) return Promise.resolve({ ok: false, code: "peer-exited", message: this.#stderr });
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  request(req: Record<string, unknown>): Promise<PeerReply> {
    const next = this.#next();
    this.#child.stdin.write(`${JSON.stringify(req)}\n`);
    return next;
  }

  /** Kills the child with SIGKILL (a crash: no cleanup runs) and waits for it to be gone. */
  async kill(): Promise<void> {
    if (this.#exited) return;
    const gone = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.kill("SIGKILL");
    await gone;
  }
}

/**
 * Defines, with vitest's `describe`/`it`, the conformance cases of a {@link ContentStore}: write,
 * commit and read; info; resume after close and after truncation; abort; wrong digest and size;
 * commit of existing content; labels and field paths; walk with filters; delete; statuses; one
 * writer per ref, within a process, across two stores on one root, and (with
 * `options.peer`) across processes. Each test gets a fresh temporary root, removed afterwards.
 */
export function contentSuite(
  name: string,
  factory: ContentSuiteFactory,
  options: ContentSuiteOptions = {},
): void {
  describe(`content store conformance: ${name}`, () => {
    let root: string;
    let store: ContentStore;
    let cleanups: (() => Promise<void>)[];
    const peers: Peer[] = [];

    const open = async (): Promise<ContentStore> => {
      const made = await factory(root);
      if (made.cleanup) cleanups.push(made.cleanup);
      return made.store;
    };

    beforeEach(async () => {
      root = await mkdtemp(join(tmpdir(), "berth-content-suite-"));
      cleanups = [];
      store = await open();
    });

    afterEach(async () => {
      for (const p of peers.splice(0)) await p.kill();
      for (const c of cleanups.reverse()) await c();
      await rm(root, { recursive: true, force: true });
    });

    it("writes, commits and reads back a blob", async () => {
      const data = bytes("hello, content store");
      const digest = digestOf(data);
      const w = await store.writer({ ref: "write-commit", total: data.length, expected: digest });
      expect(w.ref).toBe("write-commit");
      await w.write(data.subarray(0, 5));
      await w.write(data.subarray(5));
      expect(w.digest()).toBe(digest);
      const st = await w.status();
      expect(st).toMatchObject({
        ref: "write-commit",
        offset: data.length,
        total: data.length,
        expected: digest,
      });
      expect(await w.commit(data.length, digest)).toBe(digest);

      const reader = await store.readerAt(digest);
      try {
        expect(reader.size).toBe(data.length);
        const buf = new Uint8Array(4);
        expect(await reader.readAt(buf, 7)).toBe(4);
        expect(Buffer.from(buf).toString()).toBe("cont");
        expect(await reader.readAt(buf, data.length - 2)).toBe(2);
        expect(await reader.readAt(buf, data.length)).toBe(0);
        const streamed: Buffer[] = [];
        for await (const chunk of reader.stream(7)) streamed.push(chunk as Buffer);
        expect(Buffer.concat(streamed).toString()).toBe("content store");
      } finally {
        await reader.close();
      }
      expect(Buffer.from(await readBlob(store, digest)).toString()).toBe("hello, content store");
      // A committed ingest is gone.
      await rejects(store.status("write-commit"), isNotFound, "status after commit");
    });

    it("reports info, and not-found / invalid-argument for missing or malformed digests", async () => {
      const data = bytes("info");
      const before = Date.now();
      const digest = await writeBlob(store, "info", data, { size: data.length, digest: digestOf(data) });
      const info = await store.info(digest);
      expect(info.digest).toBe(digest);
      expect(info.size).toBe(4);
      expect(info.labels).toEqual({});
      expect(info.createdAt.getTime()).toBeGreaterThanOrEqual(before - 2000);
      expect(info.updatedAt.getTime()).toBeGreaterThanOrEqual(info.createdAt.getTime());
      const missing = digestOf("missing");
      const err = await rejects(store.info(missing), isNotFound, "info of a missing blob");
      expect(err.message).toContain(missing);
      await rejects(store.readerAt(missing), isNotFound, "readerAt of a missing blob");
      await rejects(store.info("sha256:abc"), isInvalidArgument, "info of a short digest");
      await rejects(store.info(`md5:${"0".repeat(32)}`), isInvalidArgument, "info with an unknown algorithm");
      await rejects(store.info(digest.toUpperCase()), isInvalidArgument, "info of an uppercase digest");
    });

    it("resumes an ingest after close, at its offset and with its digest", async () => {
      const w1 = await store.writer({ ref: "resume", total: 11 });
      await w1.write(bytes("hello "));
      await w1.close();
      const st = await store.status("resume");
      expect(st.offset).toBe(6);
      expect(st.total).toBe(11);
      expect((await store.listStatuses()).map((s) => s.ref)).toEqual(["resume"]);

      const w2 = await store.writer({ ref: "resume", total: 11 });
      expect((await w2.status()).offset).toBe(6);
      expect(w2.digest()).toBe(digestOf("hello "));
      await w2.write(bytes("world"));
      expect(await w2.commit(11, digestOf("hello world"))).toBe(digestOf("hello world"));
    });

    it("truncates an ingest and recomputes the digest", async () => {
      const w = await store.writer({ ref: "truncate" });
      await w.write(bytes("abcdef"));
      await w.truncate(3);
      expect((await w.status()).offset).toBe(3);
      expect(w.digest()).toBe(digestOf("abc"));
      await rejects(w.truncate(10), isInvalidArgument, "truncate beyond the offset");
      await w.close();
      const again = await store.writer({ ref: "truncate" });
      expect((await again.status()).offset).toBe(3);
      await again.truncate(0);
      expect(again.digest()).toBe(digestOf(""));
      await again.write(bytes("xyz"));
      expect(await again.commit(3, digestOf("xyz"))).toBe(digestOf("xyz"));
    });

    it("aborts an ingest; not-found when absent, unavailable while a writer holds it", async () => {
      const w = await store.writer({ ref: "abort" });
      await w.write(bytes("partial"));
      const busy = await rejects(store.abort("abort"), isUnavailable, "abort of a held ref");
      expect(busy.message).toContain("abort");
      await w.close();
      await store.abort("abort");
      await rejects(store.status("abort"), isNotFound, "status after abort");
      await rejects(store.abort("abort"), isNotFound, "second abort");
      // The ref starts from nothing afterwards.
      const fresh = await store.writer({ ref: "abort" });
      expect((await fresh.status()).offset).toBe(0);
      await fresh.close();
    });

    it("refuses a wrong digest with failed-precondition, stores nothing, keeps the ingest", async () => {
      const w = await store.writer({ ref: "wrong-digest" });
      await w.write(bytes("actual bytes"));
      const claimed = digestOf("other bytes");
      const err = await rejects(w.commit(12, claimed), isFailedPrecondition, "commit with a wrong digest");
      expect(err.message).toContain(claimed);
      expect(err.message).toContain(digestOf("actual bytes"));
      await rejects(store.info(claimed), isNotFound, "info of the claimed digest");
      await rejects(store.info(digestOf("actual bytes")), isNotFound, "info of the actual digest");
      expect((await store.status("wrong-digest")).offset).toBe(12);
      // The caller may start over with the same writer.
      await w.truncate(0);
      await w.write(bytes("other bytes"));
      expect(await w.commit(11, claimed)).toBe(claimed);
    });

    it("refuses a wrong size with failed-precondition", async () => {
      const w = await store.writer({ ref: "wrong-size" });
      await w.write(bytes("12345"));
      const err = await rejects(
        w.commit(6, digestOf("12345")),
        isFailedPrecondition,
        "commit with a wrong size",
      );
      expect(err.message).toMatch(/5/);
      await rejects(store.info(digestOf("12345")), isNotFound, "info after a refused commit");
      expect(await w.commit(5, digestOf("12345"))).toBe(digestOf("12345"));
    });

    it("checks the total given to writer() at commit when commit's size is 0", async () => {
      const w = await store.writer({ ref: "total", total: 10 });
      await w.write(bytes("short"));
      await rejects(w.commit(0), isFailedPrecondition, "commit short of the recorded total");
      await w.close();
    });

    it("commits of existing content report already-exists and leave the blob alone", async () => {
      const data = bytes("same content");
      const digest = digestOf(data);
      await writeBlob(store, "first", data, { digest, labels: { keep: "me" } });
      const before = await store.info(digest);

      await rejects(
        store.writer({ ref: "second", expected: digest }),
        isAlreadyExists,
        "writer for existing",
      );
      const w = await store.writer({ ref: "third" });
      await w.write(data);
      await rejects(
        w.commit(data.length, digest, { labels: { other: "x" } }),
        isAlreadyExists,
        "commit of existing",
      );
      await rejects(store.status("third"), isNotFound, "status of the ingest after already-exists");
      await rejects(w.write(data), (e) => errorCode(e) !== "unknown", "write after already-exists");

      const after = await store.info(digest);
      expect(after.labels).toEqual({ keep: "me" });
      expect(after.createdAt.getTime()).toBe(before.createdAt.getTime());
      expect(Buffer.from(await readBlob(store, digest)).toString()).toBe("same content");
      // writeBlob counts it as success.
      expect(await writeBlob(store, "fourth", data, { digest })).toBe(digest);
      expect(await writeBlob(store, "fifth", data)).toBe(digest);
    });

    it("sets labels at commit and updates them by field path", async () => {
      const digest = await writeBlob(store, "labels", bytes("labelled"), {
        labels: { [Labels.GcRoot]: "2024-01-01T00:00:00Z", a: "1" },
      });
      expect((await store.info(digest)).labels).toEqual({ [Labels.GcRoot]: "2024-01-01T00:00:00Z", a: "1" });

      let info = await store.update({ digest, labels: { b: "2", a: "ignored" } }, ["labels.b"]);
      expect(info.labels).toEqual({ [Labels.GcRoot]: "2024-01-01T00:00:00Z", a: "1", b: "2" });
      info = await store.update({ digest, labels: {} }, [`labels.${Labels.GcRoot}`]);
      expect(info.labels).toEqual({ a: "1", b: "2" });
      info = await store.update({ digest, labels: { a: "" } }, ["labels.a"]);
      expect(info.labels).toEqual({ b: "2" });
      info = await store.update({ digest, labels: { c: "3", d: "" } }, ["labels"]);
      expect(info.labels).toEqual({ c: "3" });
      info = await store.update({ digest, labels: { e: "5" } });
      expect(info.labels).toEqual({ e: "5" });
      expect((await store.info(digest)).labels).toEqual({ e: "5" });
      expect(info.updatedAt.getTime()).toBeGreaterThanOrEqual(info.createdAt.getTime());

      await rejects(
        store.update({ digest, labels: {} }, ["size"]),
        isInvalidArgument,
        "update of a non-label field",
      );
      await rejects(
        store.update({ digest, labels: { "": "x" } }),
        isInvalidArgument,
        "update with an empty key",
      );
      await rejects(
        store.update({ digest, labels: { big: "x".repeat(5000) } }),
        isInvalidArgument,
        "update with an oversized label",
      );
      await rejects(
        store.update({ digest: digestOf("nope"), labels: {} }),
        isNotFound,
        "update of a missing blob",
      );
    });

    it("walks blobs, all or those matching containerd filters", async () => {
      const a = await writeBlob(store, "a", bytes("aaa"), {
        labels: { [Labels.GcRoot]: "now", tier: "alpha" },
      });
      const b = await writeBlob(store, "b", bytes("bbbbb"), { labels: { tier: "beta" } });
      const c = await writeBlob(store, "c", bytes("c"));
      const digests = async (filters?: readonly string[]) =>
        (await collect(store, filters)).map((i) => i.digest).sort();

      expect(await digests()).toEqual([a, b, c].sort());
      expect(await digests([`labels."${Labels.GcRoot}"`])).toEqual([a]);
      expect(await digests([`digest==${b}`])).toEqual([b]);
      expect(await digests(["size==1"])).toEqual([c]);
      expect(await digests(["labels.tier"])).toEqual([a, b].sort());
      expect(await digests(["labels.tier!=alpha"])).toEqual([b, c].sort());
      expect(await digests(["labels.tier~=^b"])).toEqual([b]);
      expect(await digests(["labels.tier==alpha,size==3"])).toEqual([a]);
      expect(await digests(["labels.tier==alpha,size==5"])).toEqual([]);
      expect(await digests(["labels.tier==alpha", "size==1"])).toEqual([a, c].sort());
      await rejects(collect(store, ["labels.tier=="]), isInvalidArgument, "walk with a malformed filter");

      // A walk callback may be async; the walk waits for it.
      const seen: string[] = [];
      await store.walk(async (info) => {
        await new Promise((r) => setImmediate(r));
        seen.push(info.digest);
      });
      expect(seen.sort()).toEqual([a, b, c].sort());
    });

    it("deletes blobs", async () => {
      const digest = await writeBlob(store, "delete", bytes("delete me"), { labels: { x: "y" } });
      await store.delete(digest);
      await rejects(store.info(digest), isNotFound, "info after delete");
      await rejects(store.readerAt(digest), isNotFound, "readerAt after delete");
      await rejects(store.delete(digest), isNotFound, "second delete");
      expect(await collect(store)).toEqual([]);
      // The same content can come back, without the old labels.
      await writeBlob(store, "again", bytes("delete me"));
      expect((await store.info(digest)).labels).toEqual({});
    });

    it("lists statuses of active ingests, filtered by ref", async () => {
      const w1 = await store.writer({ ref: "list-one", total: 3 });
      await w1.write(bytes("ab"));
      const w2 = await store.writer({ ref: "list-two" });
      await w2.close();
      const all = await store.listStatuses();
      expect(all.map((s) => s.ref).sort()).toEqual(["list-one", "list-two"]);
      expect(all.find((s) => s.ref === "list-one")).toMatchObject({ offset: 2, total: 3 });
      expect((await store.listStatuses(["ref==list-two"])).map((s) => s.ref)).toEqual(["list-two"]);
      expect((await store.listStatuses(["ref~=one$", "ref==nothing"])).map((s) => s.ref)).toEqual([
        "list-one",
      ]);
      const st = await store.status("list-one");
      expect(st.startedAt.getTime()).toBeLessThanOrEqual(st.updatedAt.getTime());
      await w1.close();
      await rejects(store.status("list-three"), isNotFound, "status of an unknown ref");
    });

    it("allows one writer per ref: a second gets unavailable naming the ref", async () => {
      const w = await store.writer({ ref: "exclusive/ref" });
      const err = await rejects(store.writer({ ref: "exclusive/ref" }), isUnavailable, "second writer");
      expect(err.message).toContain("exclusive/ref");
      // Other refs are unaffected.
      const other = await store.writer({ ref: "exclusive/other" });
      await other.close();
      await w.write(bytes("x"));
      await w.close();
      const again = await store.writer({ ref: "exclusive/ref" });
      expect((await again.status()).offset).toBe(1);
      await again.close();
    });

    it("shares ingests, locks and blobs between two stores on one root", async () => {
      const other = await open();
      const w = await store.writer({ ref: "shared" });
      await w.write(bytes("shared "));
      await rejects(other.writer({ ref: "shared" }), isUnavailable, "writer from the second store");
      await rejects(other.abort("shared"), isUnavailable, "abort from the second store");
      expect((await other.status("shared")).offset).toBe(7);
      await w.close();
      const w2 = await other.writer({ ref: "shared" });
      await w2.write(bytes("bytes"));
      const digest = await w2.commit(12, digestOf("shared bytes"));
      expect((await store.info(digest)).size).toBe(12);
      await store.update({ digest, labels: { from: "first" } });
      expect((await other.info(digest)).labels).toEqual({ from: "first" });
    });

    it("writeBlob resumes a re-readable source and restarts a stream", async () => {
      const data = bytes("0123456789");
      const digest = digestOf(data);
      const w = await store.writer({ ref: "wb", total: 10, expected: digest });
      await w.write(data.subarray(0, 4));
      await w.close();
      expect(await writeBlob(store, "wb", data, { size: 10, digest })).toBe(digest);
      expect(Buffer.from(await readBlob(store, digest)).toString()).toBe("0123456789");

      // Resumed data that is not a prefix of the source: writeBlob starts over once.
      const bad = await store.writer({ ref: "wb-bad" });
      await bad.write(bytes("XX"));
      await bad.close();
      const other = bytes("abcdef");
      expect(await writeBlob(store, "wb-bad", other, { digest: digestOf(other) })).toBe(digestOf(other));

      // A stream cannot be rewound: the ingest is truncated and written from the start.
      const s = await store.writer({ ref: "wb-stream" });
      await s.write(bytes("stale"));
      await s.close();
      const streamed = await writeBlob(store, "wb-stream", chunks("str", "eam"), { size: 6 });
      expect(streamed).toBe(digestOf("stream"));

      // A mismatch keeps the ingest, for a later retry, and stores nothing.
      const wrong = digestOf("something else");
      await rejects(
        writeBlob(store, "wb-wrong", chunks("data"), { digest: wrong }),
        isFailedPrecondition,
        "wrong",
      );
      await rejects(store.info(wrong), isNotFound, "info after a failed writeBlob");
      expect((await store.status("wb-wrong")).offset).toBe(4);
      await store.abort("wb-wrong");

      await rejects(readBlob(store, digest, { maxSize: 9 }), isResourceExhausted, "readBlob over maxSize");
      expect((await readBlob(store, digest, { maxSize: 10 })).length).toBe(10);
    });

    it("supports sha512 digests", async () => {
      const data = bytes("sha512 content");
      const digest = digestOf(data, "sha512");
      const w = await store.writer({ ref: "sha512", expected: digest });
      await w.write(data);
      expect(w.digest()).toBe(digest);
      expect(await w.commit(data.length, digest)).toBe(digest);
      expect((await store.info(digest)).size).toBe(data.length);
      expect((await collect(store, [`digest==${digest}`])).length).toBe(1);
    });

    it("verifies a commit whose expected digest uses another algorithm than the writer", async () => {
      const data = bytes("mixed");
      const w = await store.writer({ ref: "mixed" });
      await w.write(data);
      const want512 = digestOf(data, "sha512");
      expect(await w.commit(data.length, want512)).toBe(want512);
    });

    it("validates arguments with invalid-argument", async () => {
      await rejects(store.writer({ ref: "" }), isInvalidArgument, "writer with an empty ref");
      await rejects(
        store.writer({ ref: "r", expected: "sha256:xyz" }),
        isInvalidArgument,
        "writer, bad digest",
      );
      await rejects(store.writer({ ref: "r", total: -1 }), isInvalidArgument, "writer, negative total");
      await rejects(store.listStatuses(["ref=="]), isInvalidArgument, "listStatuses with a bad filter");
    });

    describe.skipIf(options.peer === undefined)("across processes", () => {
      const startPeer = async (): Promise<Peer> => {
        const spec = options.peer as { module: string; exportName: string };
        const p = await Peer.start(spec.module, spec.exportName, root);
        peers.push(p);
        return p;
      };

      it("excludes writers in another process, and recovers after it crashes", async () => {
        const peer = await startPeer();
        expect(await peer.request({ op: "open", ref: "xproc", total: 10 })).toMatchObject({
          ok: true,
          offset: 0,
        });
        expect(
          await peer.request({ op: "write", ref: "xproc", data: Buffer.from("01234").toString("base64") }),
        ).toMatchObject({ ok: true, offset: 5 });

        const err = await rejects(
          store.writer({ ref: "xproc" }),
          isUnavailable,
          "writer held by another process",
        );
        expect(err.message).toContain("xproc");
        await rejects(store.abort("xproc"), isUnavailable, "abort held by another process");
        expect((await store.status("xproc")).offset).toBe(5);

        // A crash releases the lock (flock belongs to the process); the ingest resumes here.
        await peer.kill();
        const w = await store.writer({ ref: "xproc", total: 10 });
        expect((await w.status()).offset).toBe(5);
        await w.write(bytes("56789"));
        const digest = await w.commit(10, digestOf("0123456789"));
        expect(Buffer.from(await readBlob(store, digest)).toString()).toBe("0123456789");
      });

      it("sees blobs committed by the other process, and refuses a second commit of them", async () => {
        const peer = await startPeer();
        const data = Buffer.from("from the peer");
        const digest = digestOf(data);
        const w = await store.writer({ ref: "mine" });
        await w.write(data);
        await peer.request({ op: "open", ref: "theirs" });
        await peer.request({ op: "write", ref: "theirs", data: data.toString("base64") });
        expect(
          await peer.request({ op: "commit", ref: "theirs", size: data.length, expected: digest }),
        ).toMatchObject({
          ok: true,
          digest,
        });
        expect((await store.info(digest)).size).toBe(data.length);
        await rejects(w.commit(data.length, digest), isAlreadyExists, "commit of what the peer committed");
        expect(await peer.request({ op: "info", digest })).toMatchObject({ ok: true, size: data.length });
        const refusal = await peer.request({ op: "open", ref: "again", expected: digest });
        expect(refusal).toMatchObject({ ok: false, code: "already-exists" });
      });
    });
  });
}
