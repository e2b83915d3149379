/**
 * Whole-buffer gzip through libdeflate (libdeflate.so.0, Debian package libdeflate0), loaded
 * lazily. libdeflate has no streaming API: it needs the whole input and an output buffer large
 * enough for the whole result, so it only fits data that is already complete in memory.
 */
import { BerthError, dataLoss, invalidArgument } from "@berth/errdefs";
import { optionalLibrary } from "./libc.js";
import type { NativeFunction } from "./native-codec.js";

const LIBRARY = "libdeflate.so.0";

interface Libdeflate {
  readonly allocDecompressor: NativeFunction;
  readonly freeDecompressor: NativeFunction;
  readonly gzipDecompressEx: NativeFunction;
  readonly allocCompressor: NativeFunction;
  readonly freeCompressor: NativeFunction;
  readonly gzipCompressBound: NativeFunction;
  readonly gzipCompress: NativeFunction;
}

// enum libdeflate_result
const LIBDEFLATE_SUCCESS = 0;
const LIBDEFLATE_INSUFFICIENT_SPACE = 3;

/**
 * Loads libdeflate on first call. Throws `not-implemented` naming the library and the Debian
 * package when it is missing.
 *
 * @internal
 */
export const loadLibdeflate: () => Libdeflate = optionalLibrary(LIBRARY, "libdeflate0", (lib) => {
  return {
    allocDecompressor: lib.func("void *libdeflate_alloc_decompressor(void)"),
    freeDecompressor: lib.func("void libdeflate_free_decompressor(void *d)"),
    gzipDecompressEx: lib.func(
      "int libdeflate_gzip_decompress_ex(void *d, const uint8_t *in, size_t in_nbytes, void *out, size_t out_nbytes_avail, _Out_ size_t *actual_in, _Out_ size_t *actual_out)",
    ),
    allocCompressor: lib.func("void *libdeflate_alloc_compressor(int level)"),
    freeCompressor: lib.func("void libdeflate_free_compressor(void *c)"),
    gzipCompressBound: lib.func("size_t libdeflate_gzip_compress_bound(void *c, size_t in_nbytes)"),
    gzipCompress: lib.func(
      "size_t libdeflate_gzip_compress(void *c, const uint8_t *in, size_t in_nbytes, void *out, size_t out_nbytes_avail)",
    ),
  };
});

/** Whether libdeflate can be loaded here. Never throws. */
export function libdeflateAvailable(): boolean {
  try {
    loadLibdeflate();
    return true;
  } catch {
    return false;
  }
}

/**
 * Decompresses a complete gzip buffer (all members) with libdeflate, on the calling thread. The
 * output size is taken from each member's ISIZE trailer (the size modulo 2^32), growing the buffer
 * when that is too small. Throws `data-loss` on corrupt or truncated input.
 */
export function libdeflateGunzip(input: Uint8Array): Buffer {
  const lib = loadLibdeflate();
  const d = lib.allocDecompressor();
  if (!d) throw new BerthError("resource-exhausted", "libdeflate_alloc_decompressor failed");
  try {
    const parts: Buffer[] = [];
    let offset = 0;
    while (offset < input.length) {
      const rest = input.subarray(offset);
      if (rest.length < 18) throw dataLoss(`gzip: truncated member at offset ${offset}`);
      // ISIZE of the last member in `rest` bounds the first member's size only when it is the
      // only one; start there and grow on LIBDEFLATE_INSUFFICIENT_SPACE.
      const tail = Buffer.from(rest.buffer, rest.byteOffset + rest.length - 4, 4).readUInt32LE(0);
      let capacity = Math.max(tail, rest.length * 4, 1 << 16);
      for (;;) {
        const out = Buffer.allocUnsafe(capacity);
        const actualIn = [0];
        const actualOut = [0];
        const ret = lib.gzipDecompressEx(d, rest, rest.length, out, capacity, actualIn, actualOut) as number;
        if (ret === LIBDEFLATE_INSUFFICIENT_SPACE) {
          capacity *= 2;
          continue;
        }
        if (ret !== LIBDEFLATE_SUCCESS)
          throw dataLoss(`gzip: corrupted input in the member at offset ${offset}`);
        parts.push(out.subarray(0, Number(actualOut[0])));
        offset += Number(actualIn[0]);
        break;
      }
    }
    if (parts.length === 0) throw dataLoss("gzip: unexpected end of input (no data)");
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  } finally {
    lib.freeDecompressor(d);
  }
}

/**
 * Compresses a complete buffer into one gzip member with libdeflate at `level` (1 to 12, default
 * 6), on the calling thread. Throws `invalid-argument` for a bad level.
 */
export function libdeflateGzip(input: Uint8Array, level = 6): Buffer {
  const lib = loadLibdeflate();
  if (!Number.isInteger(level) || level < 0 || level > 12) {
    throw invalidArgument(`libdeflate compression level ${level} is not an integer in [0, 12]`);
  }
  const c = lib.allocCompressor(level);
  if (!c) throw new BerthError("resource-exhausted", "libdeflate_alloc_compressor failed");
  try {
    const bound = Number(lib.gzipCompressBound(c, input.length));
    const out = Buffer.allocUnsafe(bound);
    const n = Number(lib.gzipCompress(c, input, input.length, out, bound));
    if (n === 0) throw new BerthError("internal", `libdeflate_gzip_compress: ${bound} bytes were not enough`);
    return out.subarray(0, n);
  } finally {
    lib.freeCompressor(c);
  }
}
