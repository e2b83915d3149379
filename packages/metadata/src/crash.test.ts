import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { createLocalContentStore } from "@berth/content";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { namespacedContentStore } from "./content-store.js";
import { openMetadata } from "./open-metadata.js";
import { crashMediaType, roundData } from "./testing/crash-data.js";
import { read } from "./testing/fixtures.js";
import { spawnTs } from "./testing/run-ts.js";
import type { Metadata } from "./types.js";

describe("crash safety", () => {
  let root: string | undefined;
  let child: ChildProcessWithoutNullStreams | undefined;
  let meta: Metadata | undefined;

  afterEach(() => {
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    meta?.close();
    if (root !== undefined) rmSync(root, { recursive: true, force: true });
    child = undefined;
    meta = undefined;
    root = undefined;
  });

  it("a SIGKILLed writer loses nothing committed and leaves nothing half-written", async () => {
    root = mkdtempSync(join(tmpdir(), "berth-metadata-crash-"));
    const dbPath = join(root, "metadata.db");
    const contentRoot = join(root, "content");
    const proc = spawnTs(fileURLToPath(new URL("./testing/crash-child.ts", import.meta.url)), [
      dbPath,
      contentRoot,
    ]);
    child = proc;
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));

    // Rounds the child reported as committed. Kill it once a few dozen are in, in the middle of
    // the loop: the next round is somewhere between writer open and image create.
    const committed: number[] = [];
    for await (const line of createInterface({ input: proc.stdout })) {
      if (line === "ready") continue;
      committed.push(Number(line));
      if (committed.length === 12) {
        proc.kill("SIGKILL");
        break;
      }
    }
    await exited;
    expect(committed.length, `child died early: ${stderr}`).toBe(12);
    expect(proc.signalCode).toBe("SIGKILL");

    const raw = new Database(dbPath, { readonly: true });
    try {
      expect(raw.pragma("integrity_check", { simple: true })).toBe("ok");
      expect(raw.pragma("foreign_key_check")).toEqual([]);
    } finally {
      raw.close();
    }

    meta = openMetadata(dbPath);
    const backing = await createLocalContentStore(contentRoot);
    const content = namespacedContentStore(meta, backing, "crash");
    const images = meta.images("crash");
    for (const i of committed) {
      const { blob, digest, labels, name } = roundData(i);
      const image = await images.get(name);
      expect(image.target).toEqual({ mediaType: crashMediaType, digest, size: blob.length });
      expect(image.labels).toEqual(labels);
      const info = await content.info(digest);
      expect(info).toMatchObject({ digest, size: blob.length, labels: { round: String(i) } });
      expect(await read(content, digest)).toBe(blob.toString());
    }
    // Whatever the killed round got to is whole: every image there is has its full label set.
    for (const image of await images.list()) {
      const i = Number(image.name.split(":").pop());
      expect(image.labels).toEqual(roundData(i).labels);
    }
  });
});
