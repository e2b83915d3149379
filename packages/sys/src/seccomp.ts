import { failedPrecondition, invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";
import { syscallNumber } from "./syscalls.js";

/** Flags of `seccomp(SECCOMP_SET_MODE_FILTER, ...)` (linux/seccomp.h). */
export const SeccompFilterFlag = {
  /** Apply the filter to every thread of the process (`SECCOMP_FILTER_FLAG_TSYNC`). */
  TSYNC: 1,
  /** Log every action but ALLOW (`SECCOMP_FILTER_FLAG_LOG`). */
  LOG: 2,
  /** Keep speculative store bypass mitigation off (`SECCOMP_FILTER_FLAG_SPEC_ALLOW`). */
  SPEC_ALLOW: 4,
  /** Return a user-notification fd (`SECCOMP_FILTER_FLAG_NEW_LISTENER`). */
  NEW_LISTENER: 8,
  /** With TSYNC, fail with ESRCH instead of returning a thread id (`SECCOMP_FILTER_FLAG_TSYNC_ESRCH`). */
  TSYNC_ESRCH: 16,
} as const;

const SECCOMP_SET_MODE_FILTER = 1;
// BPF_MAXINSNS: the kernel refuses longer classic BPF programs.
const MAX_INSTRUCTIONS = 4096;

/**
 * Loads a classic BPF seccomp filter: `program` is an array of `struct sock_filter` (8 bytes each:
 * u16 code, u8 jt, u8 jf, u32 k, in host byte order). It needs `no_new_privs` (see
 * `PR_SET_NO_NEW_PRIVS`) or CAP_SYS_ADMIN, and applies to the calling thread and its future
 * children unless {@link SeccompFilterFlag}.TSYNC extends it to every thread. Returns the
 * syscall's result: 0, or the listener fd with NEW_LISTENER (the caller owns it). Throws
 * `invalid-argument` for a program that is empty, too long or not a multiple of 8 bytes, and a
 * `SystemError` when the kernel refuses it (`EACCES` without no_new_privs, `EINVAL` for a bad
 * program, `ESRCH` with TSYNC_ESRCH when a thread cannot be synchronized).
 */
export function seccompSetFilter(program: Uint8Array, flags = 0): number {
  const count = program.byteLength / 8;
  if (!Number.isInteger(count) || count === 0 || count > MAX_INSTRUCTIONS) {
    throw invalidArgument(
      `seccomp program of ${program.byteLength} bytes is not 1..${MAX_INSTRUCTIONS} instructions of 8 bytes`,
    );
  }
  const { syscall, koffi } = loadProcLibc();
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }: the pointer is at
  // offset 8 on every 64-bit arch. `program` stays referenced until the call returns.
  const fprog = Buffer.alloc(16);
  fprog.writeUInt16LE(count, 0);
  fprog.writeBigUInt64LE(koffi.address(program), 8);
  const rc = Number(
    syscall(
      syscallNumber("seccomp"),
      "unsigned int",
      SECCOMP_SET_MODE_FILTER,
      "unsigned int",
      flags,
      "uint8_t *",
      fprog,
    ),
  );
  // With TSYNC (and without TSYNC_ESRCH) a positive result is the id of a thread that could not
  // be synchronized, and the filter was not installed.
  if (rc > 0 && flags & SeccompFilterFlag.TSYNC && !(flags & SeccompFilterFlag.NEW_LISTENER)) {
    throw failedPrecondition(`seccomp filter not installed: thread ${rc} could not be synchronized`);
  }
  return checked(rc, "seccomp", { hint: `${count} instructions, flags ${flags}` });
}
