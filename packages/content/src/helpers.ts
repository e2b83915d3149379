import { isAlreadyExists, isFailedPrecondition, resourceExhausted } from "@berth/errdefs";
import { parseDigest } from "./digest.js";
import type { ContentStore, ContentWriter, Digest } from "./types.js";

/** Largest piece written to a writer at once when the source is one big buffer. */
const writeChunk = 1 << 20;

/** Options of {@link copyStream}. */
export interface CopyOptions {
  /** Expected size; 0 or absent leaves the check to the writer's recorded total. */
  readonly size?: number;
  /** Expected digest; absent means whatever was written is committed under its own digest. */
  readonly digest?: Digest;
  /** Labels set on the committed blob. */
  readonly labels?: Readonly<Record<string, string>>;
}

/** Options of {@link writeBlob}. */
export type WriteBlobOptions = CopyOptions;

/** Options of {@link readBlob}. */
export interface ReadBlobOptions {
  /** Refuse blobs larger than this many bytes with `resource-exhausted`. */
  readonly maxSize?: number;
}

/** Something {@link writeBlob} and {@link copyStream} can read bytes from. A Node `Readable` is an `AsyncIterable`. */
export type BlobSource = Uint8Array | AsyncIterable<Uint8Array | string>;

function toBytes(chunk: Uint8Array | string): Uint8Array {
  return typeof chunk === "string" ? Buffer.from(chunk) : chunk;
}

async function writeAll(writer: ContentWriter, bytes: Uint8Array): Promise<void> {
  for (let pos = 0; pos < bytes.byteLength; pos += writeChunk) {
    await writer.write(bytes.subarray(pos, Math.min(pos + writeChunk, bytes.byteLength)));
  }
}

/**
 * Writes everything `source` yields to `writer`, then commits with `options.size` and
 * `options.digest` (containerd's `content.Copy`). The caller positions the source at the writer's
 * offset. Returns the committed digest; a digest that is already committed counts as success and
 * returns `options.digest` (or the writer's digest). Errors of the writer and the source propagate
 * (`failed-precondition` for a size or digest mismatch); the writer then stays open, and the
 * caller owns it. On success the writer is closed.
 */
export async function copyStream(
  writer: ContentWriter,
  source: BlobSource,
  options: CopyOptions = {},
): Promise<Digest> {
  if (source instanceof Uint8Array) await writeAll(writer, source);
  else for await (const chunk of source) await writeAll(writer, toBytes(chunk));
  return commitTolerant(writer, options);
}

async function commitTolerant(writer: ContentWriter, options: CopyOptions): Promise<Digest> {
  try {
    return await writer.commit(
      options.size ?? 0,
      options.digest,
      options.labels ? { labels: options.labels } : undefined,
    );
  } catch (err) {
    if (isAlreadyExists(err)) return options.digest ?? writer.digest();
    throw err;
  }
}

/**
 * Stores `source` under ingest `ref`, resuming an earlier attempt (containerd's
 * `content.WriteBlob`). When the ingest already holds bytes, a `Uint8Array` source skips them
 * (and, should the resumed data turn out not to match, starts over once); any other source cannot
 * be rewound, so the ingest is truncated and written from the start. Already-committed content is
 * success. Returns the committed digest.
 *
 * Throws `invalid-argument` for a malformed digest, `unavailable` when another writer holds
 * `ref`, `failed-precondition` when the bytes do not match `size` or `digest` (the ingest is kept
 * for a later retry; nothing is stored under `digest`). The writer is always closed on return.
 */
export async function writeBlob(
  store: ContentStore,
  ref: string,
  source: BlobSource,
  options: WriteBlobOptions = {},
): Promise<Digest> {
  if (options.digest !== undefined) parseDigest(options.digest);
  let writer: ContentWriter;
  try {
    writer = await store.writer({
      ref,
      ...(options.size ? { total: options.size } : {}),
      ...(options.digest ? { expected: options.digest } : {}),
    });
  } catch (err) {
    if (isAlreadyExists(err) && options.digest !== undefined) return options.digest;
    throw err;
  }
  let committed = false;
  try {
    const { offset } = await writer.status();
    if (source instanceof Uint8Array) {
      if (offset > 0 && offset <= source.byteLength) {
        try {
          const digest = await copyStream(writer, source.subarray(offset), options);
          committed = true;
          return digest;
        } catch (err) {
          if (!isFailedPrecondition(err)) throw err;
          // The bytes already in the ingest were not a prefix of this source: start over.
        }
      }
      await writer.truncate(0);
      const digest = await copyStream(writer, source, options);
      committed = true;
      return digest;
    }
    if (offset > 0) await writer.truncate(0);
    const digest = await copyStream(writer, source, options);
    committed = true;
    return digest;
  } finally {
    if (!committed) await writer.close().catch(() => {});
  }
}

/**
 * Reads a whole committed blob into memory. Throws `not-found` when absent and
 * `resource-exhausted` when it is larger than `options.maxSize` (checked before reading).
 */
export async function readBlob(
  store: ContentStore,
  digest: Digest,
  options: ReadBlobOptions = {},
): Promise<Uint8Array> {
  const reader = await store.readerAt(digest);
  try {
    if (options.maxSize !== undefined && reader.size > options.maxSize) {
      throw resourceExhausted(
        `content ${digest} is ${reader.size} bytes, more than the limit of ${options.maxSize}`,
      );
    }
    const out = new Uint8Array(reader.size);
    let pos = 0;
    while (pos < out.length) {
      const n = await reader.readAt(out.subarray(pos), pos);
      if (n === 0) break;
      pos += n;
    }
    return pos === out.length ? out : out.subarray(0, pos);
  } finally {
    await reader.close();
  }
}
