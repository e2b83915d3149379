/**
 * What the native compression bindings (libzstd, ISA-L) share: the streaming codec interface and
 * native memory that both JavaScript and koffi's worker threads can touch safely.
 */
import { BerthError } from "@berth/errdefs";
import { loadLibc } from "./libc.js";

/**
 * A streaming compressor or decompressor running in native code. Calls must not overlap: await
 * each {@link StreamCodec.update} before the next. Every returned buffer is owned by the caller
 * (a copy out of native memory). The codec owns native memory until {@link StreamCodec.close}.
 */
export interface StreamCodec {
  /**
   * Feeds `input` and returns the output it produced so far (possibly none). A decoder throws
   * `data-loss` on corrupted input. Throws `failed-precondition` after close or finish.
   */
  update(input: Uint8Array): Promise<Buffer[]>;
  /**
   * Ends the input and returns the remaining output. A decoder throws `data-loss` when the input
   * ended inside a frame (or was empty). The codec is closed afterwards.
   */
  finish(): Promise<Buffer[]>;
  /** Frees the native memory (after an in-flight call, if any). Idempotent; never throws. */
  close(): void;
}

/**
 * The default native buffer size. Measured (bench/compression.mjs): 256 KiB beats 128 KiB (fewer
 * hops to koffi's worker threads) and 1 MiB (buffers that no longer fit the L2 cache).
 */
export const DEFAULT_BUFFER_SIZE = 256 << 10;

/** Options of the native codec factories. */
export interface StreamCodecOptions {
  /**
   * `async` (the default) runs each native call on one of koffi's worker threads, so the event
   * loop keeps running while a chunk is (de)compressed; `sync` runs it on the calling thread.
   */
  readonly mode?: "async" | "sync";
  /** Size of the native input and output buffers; default 256 KiB each. */
  readonly bufferSize?: number;
}

/** A bound C function as koffi returns it: callable, with a callback-style `.async`. */
export interface NativeFunction {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
}

/**
 * A block of native memory with a JavaScript view onto it. Native memory (rather than a Buffer)
 * because a koffi `.async` call reads and writes it from a worker thread after the JS call returned.
 *
 * @internal
 */
export class NativeBlock {
  /** The native pointer, as koffi passes it to C. */
  readonly pointer: unknown;
  /** The same bytes, viewed from JavaScript (no copy). */
  readonly bytes: Buffer;
  #freed = false;

  constructor(readonly size: number) {
    const { koffi } = loadLibc();
    this.pointer = koffi.alloc("uint8_t", size);
    this.bytes = Buffer.from(koffi.view(this.pointer, size));
  }

  /** A 64-bit word view over the block (native byte order), for size_t fields of C structs. */
  words(): BigUint64Array {
    return new BigUint64Array(this.bytes.buffer, this.bytes.byteOffset, Math.floor(this.size / 8));
  }

  /** Stores `target`'s address as a pointer at byte `offset` of this block. */
  setPointer(offset: number, target: NativeBlock): void {
    loadLibc().koffi.encode(this.pointer, offset, "void *", target.pointer);
  }

  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    loadLibc().koffi.free(this.pointer);
  }
}

/**
 * Calls `fn` on koffi's worker thread (`async`) or on this thread (`sync`).
 *
 * @internal
 */
export function callNative(fn: NativeFunction, mode: "async" | "sync", ...args: unknown[]): Promise<unknown> {
  if (mode === "sync") {
    try {
      return Promise.resolve(fn(...args));
    } catch (err) {
      return Promise.reject(err);
    }
  }
  return new Promise((resolve, reject) => {
    fn.async(...args, (err: unknown, result: unknown) => (err ? reject(err) : resolve(result)));
  });
}

/**
 * Serialises a codec's calls and defers freeing native memory until the call in flight is over,
 * so a `close()` from a stream's destroy never frees memory a worker thread is using.
 *
 * @internal
 */
export class CodecGuard {
  #busy = false;
  #closed = false;
  #release: () => void;

  constructor(
    private readonly what: string,
    release: () => void,
  ) {
    this.#release = release;
  }

  get closed(): boolean {
    return this.#closed;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#closed) throw new BerthError("failed-precondition", `${this.what}: used after close`);
    if (this.#busy) throw new BerthError("failed-precondition", `${this.what}: overlapping calls`);
    this.#busy = true;
    try {
      return await fn();
    } finally {
      this.#busy = false;
      if (this.#closed) this.#free();
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#busy) this.#free();
  }

  #free(): void {
    const release = this.#release;
    this.#release = () => {};
    release();
  }
}

/** Copies `length` bytes out of native memory into a Buffer the caller owns. */
export function copyOut(block: NativeBlock, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  block.bytes.copy(out, 0, 0, length);
  return out;
}
