import type { Readable } from "node:stream";
import { digestOf } from "@berth/content";

/**
 * The digest of `bytes` in the algorithm the (expected, possibly malformed) digest `like` names:
 * sha512 for `sha512:…`, sha256 otherwise, so that a comparison with `like` fails cleanly. @internal
 */
export function digestLike(like: string, bytes: Uint8Array): string {
  return digestOf(bytes, like.startsWith("sha512:") ? "sha512" : "sha256");
}

/** Reads a whole stream, failing with `make()` as soon as it exceeds `limit` bytes. @internal */
export async function readCapped(stream: Readable, limit: number, make: () => Error): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of stream) {
    const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
    n += buf.length;
    if (n > limit) {
      stream.destroy();
      throw make();
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks, n);
}

/**
 * Like `Promise.all`, but waits for every promise to settle before throwing the first error, so
 * no transfer is still writing when the caller returns. @internal
 */
export async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  for (const r of results) if (r.status === "rejected") throw r.reason;
}
