import { createHash, randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import type { ContentStore, ContentWriter, Digest, WriterOptions } from "@berth/content";
import { digestAlgorithm } from "@berth/content";
import { dataLoss, isAlreadyExists, isUnavailable } from "@berth/errdefs";

/** What was stored: digest, size and the first bytes (for compression sniffing). @internal */
export interface IngestedBlob {
  readonly digest: Digest;
  readonly size: number;
  /** Up to the first 8 bytes of the blob; empty when the blob was already stored and not read. */
  readonly head: Uint8Array;
}

/** Chunks of a blob: a tar entry, a file stream, or an array of buffers. @internal */
export type BlobChunks = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/** Options of {@link ingestBlob}. @internal */
export interface IngestOptions {
  /** The digest and size the bytes must have; without it, the computed digest is used. */
  readonly expected?: { readonly digest: Digest; readonly size: number };
  /** Where the bytes come from, for error messages (`blobs/sha256/…` in archive.tar). */
  readonly what: string;
  readonly labels?: Readonly<Record<string, string>>;
}

async function drain(source: BlobChunks): Promise<void> {
  for await (const _ of source) {
    // Discard: the blob is stored already, but the tar stream must still be read past it.
  }
}

/**
 * Streams `source` into the store through a writer, hashing the bytes independently of the store
 * so that a blob whose content does not match `expected` is never committed: the ingest is
 * aborted and `data-loss` thrown. A digest already in the store is success (the source is drained
 * unread when `expected` is known). Labels are applied on commit, or merged when the blob existed.
 * @internal
 */
export async function ingestBlob(
  store: ContentStore,
  source: BlobChunks,
  options: IngestOptions,
): Promise<IngestedBlob> {
  const { expected, what } = options;
  const ref = expected === undefined ? `import-${randomUUID()}` : `import-${expected.digest}`;
  let writer: ContentWriter;
  try {
    writer = await openWriter(
      store,
      expected === undefined ? { ref } : { ref, total: expected.size, expected: expected.digest },
    );
  } catch (err) {
    if (expected !== undefined && isAlreadyExists(err)) {
      await drain(source);
      await applyLabels(store, expected.digest, options.labels);
      return { digest: expected.digest, size: expected.size, head: new Uint8Array(0) };
    }
    throw err;
  }
  let committed = false;
  try {
    // A resumable ingest left by an earlier, interrupted import holds bytes we cannot trust to be
    // a prefix of this source; start over.
    if ((await writer.status()).offset > 0) await writer.truncate(0);
    const algorithm = expected === undefined ? "sha256" : digestAlgorithm(expected.digest);
    const hash = createHash(algorithm);
    const head = new Uint8Array(8);
    let size = 0;
    for await (const chunk of source) {
      if (size < head.length) head.set(chunk.subarray(0, head.length - size), size);
      size += chunk.byteLength;
      if (expected !== undefined && size > expected.size) {
        throw dataLoss(`${what}: more than the ${expected.size} bytes its descriptor declares`);
      }
      hash.update(chunk);
      await writer.write(chunk);
    }
    const digest = `${algorithm}:${hash.digest("hex")}`;
    if (expected !== undefined && (size !== expected.size || digest !== expected.digest)) {
      throw dataLoss(
        `${what}: content is ${size} bytes with digest ${digest}, expected ${expected.size} bytes with ${expected.digest}`,
      );
    }
    try {
      await writer.commit(
        size,
        digest,
        options.labels === undefined ? undefined : { labels: options.labels },
      );
    } catch (err) {
      if (!isAlreadyExists(err)) throw err;
      await applyLabels(store, digest, options.labels);
    }
    committed = true;
    return { digest, size, head: head.subarray(0, Math.min(size, head.length)) };
  } finally {
    if (!committed) {
      await writer.close().catch(() => {});
      // Best effort: the original error is what the caller needs to see.
      await store.abort(ref).catch(() => {});
    }
  }
}

/** How long to wait for another process's ingest of the same blob before giving up. */
const busyRetries = 100;
const busyDelayMs = 100;

/**
 * Opens a writer, waiting while another writer (maybe another process importing the same image)
 * holds the ref, as containerd's `content.OpenWriter` does; once that one commits, this call
 * gets `already-exists` and the caller skips the copy.
 */
async function openWriter(store: ContentStore, options: WriterOptions): Promise<ContentWriter> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await store.writer(options);
    } catch (err) {
      if (!isUnavailable(err) || attempt >= busyRetries) throw err;
      await delay(busyDelayMs);
    }
  }
}

async function applyLabels(
  store: ContentStore,
  digest: Digest,
  labels?: Readonly<Record<string, string>>,
): Promise<void> {
  if (labels === undefined || Object.keys(labels).length === 0) return;
  await store.update(
    { digest, labels },
    Object.keys(labels).map((k) => `labels.${k}`),
  );
}

/** Stores a small in-memory blob (a manifest berth generated) and labels it. @internal */
export async function storeBytes(
  store: ContentStore,
  bytes: Uint8Array,
  what: string,
  labels?: Readonly<Record<string, string>>,
): Promise<IngestedBlob> {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  return ingestBlob(store, [bytes], {
    expected: { digest, size: bytes.byteLength },
    what,
    ...(labels === undefined ? {} : { labels }),
  });
}

/** Sets labels on a committed blob, changing only those keys. @internal */
export const setLabels = applyLabels;
