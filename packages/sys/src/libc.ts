/**
 * The libc bindings, declared once and loaded lazily on first use. This is the only module in berth
 * that imports koffi.
 *
 * @internal
 */
import { createRequire } from "node:module";
import { BerthError } from "@berth/errdefs";
import type { LibraryHandle } from "koffi";

type Koffi = typeof import("koffi");
/** A bound C function as koffi returns it. */
type KoffiFunction = ReturnType<LibraryHandle["func"]>;

const require = createRequire(import.meta.url);

/** The typed surface of libc that berth uses. Each entry returns -1 and sets errno on failure. */
export interface Libc {
  readonly koffi: Koffi;
  /** `int flock(int fd, int operation)` */
  readonly flock: KoffiFunction;
}

let libc: Libc | undefined;

/**
 * Loads libc through koffi on first call. Throws `not-implemented` with a plain explanation on a
 * platform where berth's system bindings cannot exist.
 */
export function loadLibc(): Libc {
  if (libc) return libc;
  if (process.platform !== "linux") {
    throw new BerthError(
      "not-implemented",
      `@berth/sys supports Linux only; this process runs on ${process.platform}`,
    );
  }
  let koffi: Koffi;
  try {
    koffi = require("koffi") as Koffi;
  } catch (cause) {
    throw new BerthError("not-implemented", "koffi, which @berth/sys needs for libc calls, failed to load", {
      cause,
    });
  }
  const lib = koffi.load("libc.so.6");
  libc = {
    koffi,
    flock: lib.func("int flock(int fd, int operation)"),
  };
  return libc;
}

/** Returns the calling thread's errno right after a failed call. */
export function lastErrno(): number {
  return loadLibc().koffi.errno();
}
