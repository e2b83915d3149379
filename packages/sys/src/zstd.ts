/**
 * Streaming zstd through libzstd's stable API (`ZSTD_decompressStream`, `ZSTD_compressStream2` with
 * `ZSTD_inBuffer`/`ZSTD_outBuffer` structs), loaded lazily. Node 20's zlib has no zstd.
 */
import { BerthError, dataLoss } from "@berth/errdefs";
import { optionalLibrary } from "./libc.js";
import {
  CodecGuard,
  callNative,
  copyOut,
  DEFAULT_BUFFER_SIZE,
  NativeBlock,
  type NativeFunction,
  type StreamCodec,
  type StreamCodecOptions,
} from "./native-codec.js";

const LIBRARY = "libzstd.so.1";

interface Zstd {
  readonly createDCtx: NativeFunction;
  readonly freeDCtx: NativeFunction;
  readonly decompressStream: NativeFunction;
  readonly createCCtx: NativeFunction;
  readonly freeCCtx: NativeFunction;
  readonly setParameter: NativeFunction;
  readonly compressStream2: NativeFunction;
  readonly isError: NativeFunction;
  readonly getErrorName: NativeFunction;
}

/** zstd.h `ZSTD_cParameter` and `ZSTD_EndDirective` values (stable API). */
const ZSTD_c_compressionLevel = 100;
const ZSTD_c_checksumFlag = 201;
const ZSTD_e_continue = 0;
const ZSTD_e_end = 2;

/**
 * Loads libzstd on first call. Throws `not-implemented` naming the library and the Debian package
 * when it is missing.
 *
 * @internal
 */
export const loadZstd: () => Zstd = optionalLibrary(LIBRARY, "libzstd1", (lib) => {
  // Pointers are opaque `void *`; size_t results come back as number, or bigint above 2^53
  // (zstd's error codes are (size_t)-errno, so they are bigints).
  return {
    createDCtx: lib.func("void *ZSTD_createDCtx(void)"),
    freeDCtx: lib.func("size_t ZSTD_freeDCtx(void *dctx)"),
    decompressStream: lib.func("size_t ZSTD_decompressStream(void *dctx, void *output, void *input)"),
    createCCtx: lib.func("void *ZSTD_createCCtx(void)"),
    freeCCtx: lib.func("size_t ZSTD_freeCCtx(void *cctx)"),
    setParameter: lib.func("size_t ZSTD_CCtx_setParameter(void *cctx, int param, int value)"),
    compressStream2: lib.func(
      "size_t ZSTD_compressStream2(void *cctx, void *output, void *input, int endOp)",
    ),
    isError: lib.func("unsigned int ZSTD_isError(size_t code)"),
    getErrorName: lib.func("const char *ZSTD_getErrorName(size_t code)"),
  };
});

/** Whether libzstd can be loaded here. Never throws. */
export function zstdAvailable(): boolean {
  try {
    loadZstd();
    return true;
  } catch {
    return false;
  }
}

function check(lib: Zstd, ret: unknown, what: string, corruptIsDataLoss: boolean): number {
  if ((lib.isError(ret) as number) !== 0) {
    const name = lib.getErrorName(ret) as string;
    throw corruptIsDataLoss ? dataLoss(`${what}: ${name}`) : new BerthError("internal", `${what}: ${name}`);
  }
  return Number(ret);
}

/**
 * The two `ZSTD_inBuffer`/`ZSTD_outBuffer` structs (`{ void *ptr; size_t size; size_t pos; }`)
 * and the native data blocks they point to.
 */
class Buffers {
  readonly inStruct = new NativeBlock(24);
  readonly outStruct = new NativeBlock(24);
  readonly inData: NativeBlock;
  readonly outData: NativeBlock;
  readonly inWords: BigUint64Array;
  readonly outWords: BigUint64Array;

  constructor(size: number) {
    this.inData = new NativeBlock(size);
    this.outData = new NativeBlock(size);
    this.inStruct.setPointer(0, this.inData);
    this.outStruct.setPointer(0, this.outData);
    this.inWords = this.inStruct.words();
    this.outWords = this.outStruct.words();
    this.inWords[1] = 0n;
    this.inWords[2] = 0n;
    this.outWords[1] = BigInt(size);
  }

  /** Copies `chunk` (at most the block size) into the input block. */
  fill(chunk: Uint8Array): void {
    this.inData.bytes.set(chunk);
    this.inWords[1] = BigInt(chunk.length);
    this.inWords[2] = 0n;
  }

  get inputLeft(): boolean {
    return this.inWords[2] < this.inWords[1];
  }

  free(): void {
    for (const block of [this.inStruct, this.outStruct, this.inData, this.outData]) block.free();
  }
}

/**
 * Creates a streaming zstd decompressor. Concatenated frames and skippable frames are decoded as
 * one stream, as `zstd -dc` does. Throws `not-implemented` if libzstd is missing.
 */
export function createZstdDecoder(options: StreamCodecOptions = {}): StreamCodec {
  const lib = loadZstd();
  const mode = options.mode ?? "async";
  const size = options.bufferSize ?? DEFAULT_BUFFER_SIZE;
  const ctx = lib.createDCtx();
  if (!ctx) throw new BerthError("resource-exhausted", "ZSTD_createDCtx failed");
  const bufs = new Buffers(size);
  const guard = new CodecGuard("zstd decoder", () => {
    lib.freeDCtx(ctx);
    bufs.free();
  });
  // ZSTD_decompressStream returns 0 exactly when a frame is complete and fully flushed; anything
  // else at the end of input means the last frame was cut short.
  let lastHint = -1;
  let total = 0;

  async function pump(chunk: Uint8Array, out: Buffer[]): Promise<void> {
    bufs.fill(chunk);
    for (;;) {
      bufs.outWords[2] = 0n;
      const before = bufs.inWords[2];
      const ret = await callNative(
        lib.decompressStream,
        mode,
        ctx,
        bufs.outStruct.pointer,
        bufs.inStruct.pointer,
      );
      const hint = check(lib, ret, `zstd: corrupted input at compressed offset ~${total}`, true);
      const produced = Number(bufs.outWords[2]);
      if (produced > 0) out.push(copyOut(bufs.outData, produced));
      // A call that neither read nor wrote anything reports on the *next* frame (a header hint
      // after a finished frame), so it must not mark the stream as cut short.
      if (produced > 0 || bufs.inWords[2] !== before) lastHint = hint;
      // 0: the frame is complete and fully flushed, even when the output buffer was filled exactly.
      if (!bufs.inputLeft && (produced < size || hint === 0)) return;
    }
  }

  return {
    update: (input) =>
      guard.run(async () => {
        const out: Buffer[] = [];
        for (let off = 0; off < input.length; off += size) {
          const chunk = input.subarray(off, Math.min(off + size, input.length));
          await pump(chunk, out);
          total += chunk.length;
        }
        return out;
      }),
    finish: async () => {
      try {
        return await guard.run(async () => {
          if (lastHint === -1) throw dataLoss("zstd: unexpected end of input (no data)");
          const out: Buffer[] = [];
          // Flush anything the decoder still holds back for lack of output space.
          if (lastHint !== 0) await pump(new Uint8Array(0), out);
          if (lastHint !== 0)
            throw dataLoss(`zstd: unexpected end of input after ${total} bytes (truncated frame)`);
          return out;
        });
      } finally {
        guard.close();
      }
    },
    close: () => guard.close(),
  };
}

/** Options of {@link createZstdEncoder}. */
export interface ZstdEncoderOptions extends StreamCodecOptions {
  /** Compression level, 1 to 19 (22 with ultra); default 3, zstd's own default. */
  readonly level?: number;
}

/**
 * Creates a streaming zstd compressor writing one frame with a content checksum (as the `zstd`
 * CLI does). Throws `not-implemented` if libzstd is missing, `invalid-argument` for a bad level.
 */
export function createZstdEncoder(options: ZstdEncoderOptions = {}): StreamCodec {
  const lib = loadZstd();
  const mode = options.mode ?? "async";
  const size = options.bufferSize ?? DEFAULT_BUFFER_SIZE;
  const level = options.level ?? 3;
  if (!Number.isInteger(level) || level < -7 || level > 22) {
    throw new BerthError("invalid-argument", `zstd compression level ${level} is not an integer in [-7, 22]`);
  }
  const ctx = lib.createCCtx();
  if (!ctx) throw new BerthError("resource-exhausted", "ZSTD_createCCtx failed");
  check(lib, lib.setParameter(ctx, ZSTD_c_compressionLevel, level), "ZSTD_c_compressionLevel", false);
  check(lib, lib.setParameter(ctx, ZSTD_c_checksumFlag, 1), "ZSTD_c_checksumFlag", false);
  const bufs = new Buffers(size);
  const guard = new CodecGuard("zstd encoder", () => {
    lib.freeCCtx(ctx);
    bufs.free();
  });

  // Returns the hint of the last call: for ZSTD_e_end, the bytes still to flush (0 = frame done).
  async function pump(chunk: Uint8Array, end: number, out: Buffer[]): Promise<number> {
    bufs.fill(chunk);
    for (;;) {
      bufs.outWords[2] = 0n;
      const ret = await callNative(
        lib.compressStream2,
        mode,
        ctx,
        bufs.outStruct.pointer,
        bufs.inStruct.pointer,
        end,
      );
      const left = check(lib, ret, "ZSTD_compressStream2", false);
      const produced = Number(bufs.outWords[2]);
      if (produced > 0) out.push(copyOut(bufs.outData, produced));
      if (end === ZSTD_e_end ? left === 0 : !bufs.inputLeft) return left;
    }
  }

  return {
    update: (input) =>
      guard.run(async () => {
        const out: Buffer[] = [];
        for (let off = 0; off < input.length; off += size) {
          await pump(input.subarray(off, Math.min(off + size, input.length)), ZSTD_e_continue, out);
        }
        return out;
      }),
    finish: async () => {
      try {
        return await guard.run(async () => {
          const out: Buffer[] = [];
          await pump(new Uint8Array(0), ZSTD_e_end, out);
          return out;
        });
      } finally {
        guard.close();
      }
    },
    close: () => guard.close(),
  };
}
