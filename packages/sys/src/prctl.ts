import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";

/** `prctl(2)` options berth uses (linux/prctl.h). */
export const Prctl = {
  PR_SET_PDEATHSIG: 1,
  PR_GET_PDEATHSIG: 2,
  PR_GET_DUMPABLE: 3,
  PR_SET_DUMPABLE: 4,
  PR_GET_KEEPCAPS: 7,
  PR_SET_KEEPCAPS: 8,
  PR_SET_NAME: 15,
  PR_GET_NAME: 16,
  PR_CAPBSET_READ: 23,
  PR_CAPBSET_DROP: 24,
  PR_SET_CHILD_SUBREAPER: 36,
  PR_GET_CHILD_SUBREAPER: 37,
  PR_SET_NO_NEW_PRIVS: 38,
  PR_GET_NO_NEW_PRIVS: 39,
  PR_CAP_AMBIENT: 47,
  /** arg2 of `PR_CAP_AMBIENT`. */
  PR_CAP_AMBIENT_IS_SET: 1,
  /** arg2 of `PR_CAP_AMBIENT`. */
  PR_CAP_AMBIENT_RAISE: 2,
  /** arg2 of `PR_CAP_AMBIENT`. */
  PR_CAP_AMBIENT_LOWER: 3,
  /** arg2 of `PR_CAP_AMBIENT`. */
  PR_CAP_AMBIENT_CLEAR_ALL: 4,
} as const;

/** An integer argument of {@link prctl}: a number, or a bigint for values beyond 2^53. */
export type PrctlArg = number | bigint;

/**
 * `prctl(2)` with integer arguments (unused ones default to 0, as the kernel requires for several
 * options). Returns the call's non-negative result (the value for the `PR_GET_*` options that
 * return it, e.g. `PR_GET_NO_NEW_PRIVS`). Throws a `SystemError` on failure. Options that take a
 * pointer have their own wrappers: {@link setProcessName}, {@link getProcessName},
 * {@link getChildSubreaper}. Most options act on the calling thread only.
 */
export function prctl(
  option: number,
  arg2: PrctlArg = 0,
  arg3: PrctlArg = 0,
  arg4: PrctlArg = 0,
  arg5: PrctlArg = 0,
): number {
  const { prctl: call } = loadProcLibc();
  const rc = call(
    option,
    "unsigned long",
    arg2,
    "unsigned long",
    arg3,
    "unsigned long",
    arg4,
    "unsigned long",
    arg5,
  ) as number;
  return checked(rc, "prctl", { hint: `option ${option}` });
}

/** `prctl(option, pointer, 0, 0, 0)` for the options whose second argument is a buffer. */
function prctlPointer(option: number, type: string, pointer: Uint8Array | Int32Array, hint: string): void {
  const rc = loadProcLibc().prctl(
    option,
    type,
    pointer,
    "unsigned long",
    0,
    "unsigned long",
    0,
    "unsigned long",
    0,
  ) as number;
  checked(rc, "prctl", { hint });
}

/**
 * Sets the calling thread's name (`PR_SET_NAME`, `/proc/self/task/TID/comm`; for the main thread
 * also `/proc/self/comm`), truncated by the kernel to 15 bytes. Throws `invalid-argument` for a
 * name with a NUL byte.
 */
export function setProcessName(name: string): void {
  if (name.includes("\0")) throw invalidArgument("process name contains a NUL byte");
  const buf = Buffer.alloc(Buffer.byteLength(name) + 1);
  buf.write(name);
  prctlPointer(Prctl.PR_SET_NAME, "uint8_t *", buf, "PR_SET_NAME");
}

/** The calling thread's name (`PR_GET_NAME`). Never fails in practice; throws a `SystemError` if it does. */
export function getProcessName(): string {
  const buf = Buffer.alloc(16);
  prctlPointer(Prctl.PR_GET_NAME, "uint8_t *", buf, "PR_GET_NAME");
  const end = buf.indexOf(0);
  return buf.toString("utf8", 0, end < 0 ? buf.length : end);
}

/** Whether the process is a child subreaper (`PR_GET_CHILD_SUBREAPER`). */
export function getChildSubreaper(): boolean {
  const out = new Int32Array(1);
  prctlPointer(Prctl.PR_GET_CHILD_SUBREAPER, "int *", out, "PR_GET_CHILD_SUBREAPER");
  return out[0] !== 0;
}
