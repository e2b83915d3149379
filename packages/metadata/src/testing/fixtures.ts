import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ContentStore, createLocalContentStore, digestOf } from "@berth/content";
import { openMetadata } from "../open-metadata.js";
import type { Metadata, OpenMetadataOptions } from "../types.js";

/** A temporary root with a metadata database and a real local content store under it. */
export interface Fixture {
  readonly root: string;
  readonly meta: Metadata;
  readonly backing: ContentStore;
  /** Opens another handle on the same database (as a second process would); closed by cleanup. */
  reopen(options?: OpenMetadataOptions): Metadata;
  cleanup(): void;
}

/** Creates a {@link Fixture}; the caller must call `cleanup` (in afterEach). */
export async function createFixture(options: OpenMetadataOptions = {}): Promise<Fixture> {
  const root = mkdtempSync(join(tmpdir(), "berth-metadata-"));
  const backing = await createLocalContentStore(join(root, "content"));
  const handles: Metadata[] = [];
  const open = (o: OpenMetadataOptions = {}) => {
    const m = openMetadata(join(root, "metadata.db"), { contentStore: backing, ...options, ...o });
    handles.push(m);
    return m;
  };
  return {
    root,
    meta: open(),
    backing,
    reopen: open,
    cleanup() {
      for (const h of handles) h.close();
      rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Writes `text` through `store` under `ref` and commits it; returns the digest. */
export async function put(
  store: ContentStore,
  text: string,
  labels: Record<string, string> = {},
  ref = `put-${digestOf(text)}`,
): Promise<string> {
  const data = Buffer.from(text);
  const w = await store.writer({ ref, total: data.length });
  await w.write(data);
  return w.commit(data.length, digestOf(data), { labels });
}

/** Reads a whole blob from `store` as text. */
export async function read(store: ContentStore, digest: string): Promise<string> {
  const r = await store.readerAt(digest);
  try {
    const buf = Buffer.alloc(r.size);
    let off = 0;
    while (off < r.size) {
      const n = await r.readAt(buf.subarray(off), off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString();
  } finally {
    await r.close();
  }
}
