import { Transform, type TransformCallback } from "node:stream";
import { createGunzip, createGzip, constants as zlibConstants } from "node:zlib";
import { BerthError, dataLoss, invalidArgument } from "@berth/errdefs";
import {
  createIsalGunzip,
  createZstdDecoder,
  createZstdEncoder,
  isalAvailable,
  type StreamCodec,
} from "@berth/sys";

/** The compressions of OCI layers. */
export const Compression = {
  Gzip: "gzip",
  Zstd: "zstd",
  None: "none",
} as const;

/** One of {@link Compression}. */
export type Compression = (typeof Compression)[keyof typeof Compression];

/**
 * Which gzip decoder {@link decompressStream} uses. `auto` picks ISA-L when libisal2 is
 * installed and usable, node:zlib otherwise (see the measurements in this package's README).
 */
export type GzipEngine = "auto" | "isal" | "zlib";

/** Options of {@link decompressStream}. */
export interface DecompressOptions {
  /** The gzip decoder; default `auto`. Ignored for other compressions. */
  readonly gzipEngine?: GzipEngine;
  /**
   * How native decoders (ISA-L, libzstd) are called: `async` (default) on koffi's worker threads,
   * so decompression overlaps the tar and file work of the main thread; `sync` on the main thread,
   * which is faster in isolation (no thread hop per call) but adds to the main thread's work.
   */
  readonly nativeCalls?: "async" | "sync";
}

/** Options of {@link compressStream}. */
export interface CompressOptions {
  /** gzip: 0 to 9, default 6 (gzip's and Go's default); zstd: 1 to 19, default 3. */
  readonly level?: number;
}

const GZIP_MAGIC = [0x1f, 0x8b];
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
// A skippable zstd frame (0x184D2A5?) may lead a zstd stream; its magic's low nibble varies.
const ZSTD_SKIPPABLE = [0x2a, 0x4d, 0x18];

function startsWith(bytes: Uint8Array, magic: readonly number[], from = 0): boolean {
  if (bytes.length < from + magic.length) return false;
  return magic.every((b, i) => bytes[from + i] === b);
}

/**
 * Detects the compression of a layer from its first bytes (at least 4 for zstd): the gzip magic
 * `1f 8b`, the zstd frame magic `28 b5 2f fd` (or a skippable frame), otherwise `none`. Never
 * throws; too few bytes give `none`.
 */
export function detectCompression(firstBytes: Uint8Array): Compression {
  if (startsWith(firstBytes, GZIP_MAGIC)) return Compression.Gzip;
  if (startsWith(firstBytes, ZSTD_MAGIC)) return Compression.Zstd;
  if (
    firstBytes.length >= 4 &&
    ((firstBytes[0] ?? 0) & 0xf0) === 0x50 &&
    startsWith(firstBytes, ZSTD_SKIPPABLE, 1)
  ) {
    return Compression.Zstd;
  }
  return Compression.None;
}

/**
 * The compression a layer media type declares: `+gzip` / docker `tar.gzip` → gzip, `+zstd` →
 * zstd, plain `tar` (OCI and docker) → none. Throws `invalid-argument` for a media type that is not
 * a layer or whose compression berth does not know.
 */
export function compressionOfMediaType(mediaType: string): Compression {
  const base = mediaType.split(";")[0]?.trim() ?? "";
  if (base.endsWith("+gzip") || base.endsWith(".tar.gzip")) return Compression.Gzip;
  if (base.endsWith("+zstd")) return Compression.Zstd;
  if (base.endsWith(".tar") || base.endsWith(".rootfs.diff.tar")) return Compression.None;
  throw invalidArgument(`media type ${mediaType} is not a layer berth can decompress`);
}

function checkKind(kind: string): asserts kind is Compression {
  if (kind !== Compression.Gzip && kind !== Compression.Zstd && kind !== Compression.None) {
    throw invalidArgument(`unknown compression ${JSON.stringify(kind)} (expected gzip, zstd or none)`);
  }
}

/** A Transform over a native {@link StreamCodec}; the codec's memory is freed on end or destroy. */
class CodecTransform extends Transform {
  readonly #codec: StreamCodec;

  constructor(codec: StreamCodec) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.#codec = codec;
  }

  #emit(out: Buffer[]): void {
    for (const chunk of out) this.push(chunk);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#codec.update(chunk).then(
      (out) => {
        this.#emit(out);
        callback();
      },
      (err: unknown) => callback(err as Error),
    );
  }

  override _flush(callback: TransformCallback): void {
    this.#codec.finish().then(
      (out) => {
        this.#emit(out);
        callback();
      },
      (err: unknown) => callback(err as Error),
    );
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#codec.close();
    callback(err);
  }
}

/**
 * Wraps a node:zlib stream so its errors carry berth codes: corrupt or truncated input is
 * `data-loss`, like the native decoders.
 */
class ZlibTransform extends Transform {
  readonly #inner: Transform;
  #failed: Error | undefined;

  constructor(inner: Transform, what: string) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 });
    this.#inner = inner;
    inner.on("data", (chunk: Buffer) => this.push(chunk));
    inner.on("error", (err: NodeJS.ErrnoException) => {
      this.#failed =
        err.code === "Z_DATA_ERROR" || err.code === "Z_BUF_ERROR"
          ? dataLoss(`${what}: ${err.message}`, { cause: err })
          : new BerthError("internal", `${what}: ${err.message}`, { cause: err });
      this.destroy(this.#failed);
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.#inner.write(chunk, () => callback(this.#failed));
  }

  override _flush(callback: TransformCallback): void {
    if (this.#failed) {
      callback(this.#failed);
      return;
    }
    this.#inner.once("end", () => callback(this.#failed));
    this.#inner.end();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#inner.destroy();
    callback(err);
  }
}

/** A pass-through that still rejects nothing: for uncompressed layers. */
function passThrough(): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      callback(null, chunk);
    },
  });
}

let gzipEngine: "isal" | "zlib" | undefined;

function autoGzipEngine(): "isal" | "zlib" {
  gzipEngine ??= isalAvailable() ? "isal" : "zlib";
  return gzipEngine;
}

/**
 * A Transform that decompresses `kind` (`none` passes bytes through). gzip accepts multi-member
 * streams; zstd accepts concatenated and skippable frames. Corrupt, truncated or empty compressed
 * input makes the stream fail with `data-loss`. Throws `invalid-argument` for an unknown kind and
 * `not-implemented` when zstd is asked for and libzstd is missing. The caller owns the stream;
 * destroying it frees native memory.
 */
export function decompressStream(kind: Compression, options: DecompressOptions = {}): Transform {
  checkKind(kind);
  switch (kind) {
    case Compression.None:
      return passThrough();
    case Compression.Zstd:
      return new CodecTransform(createZstdDecoder());
    case Compression.Gzip: {
      const engine =
        options.gzipEngine === undefined || options.gzipEngine === "auto"
          ? autoGzipEngine()
          : options.gzipEngine;
      if (engine === "isal") return new CodecTransform(createIsalGunzip());
      return new ZlibTransform(createGunzip({ chunkSize: 1 << 17 }), "gzip");
    }
  }
}

/**
 * A Transform that compresses into `kind` (`none` passes bytes through): gzip through node:zlib
 * (one member, deterministic for the same input and level), zstd through libzstd (one frame with a
 * content checksum). Throws `invalid-argument` for an unknown kind or a level out of range, and
 * `not-implemented` for zstd without libzstd.
 */
export function compressStream(kind: Compression, options: CompressOptions = {}): Transform {
  checkKind(kind);
  switch (kind) {
    case Compression.None:
      return passThrough();
    case Compression.Zstd:
      return new CodecTransform(
        createZstdEncoder(options.level === undefined ? {} : { level: options.level }),
      );
    case Compression.Gzip: {
      const level = options.level ?? 6;
      if (!Number.isInteger(level) || level < 0 || level > 9) {
        throw invalidArgument(`gzip compression level ${level} is not an integer in [0, 9]`);
      }
      return new ZlibTransform(
        createGzip({ level, chunkSize: 1 << 17, memLevel: zlibConstants.Z_DEFAULT_MEMLEVEL }),
        "gzip",
      );
    }
  }
}
