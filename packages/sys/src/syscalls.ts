import { notImplemented } from "@berth/errdefs";

/**
 * System call numbers for the calls glibc has no wrapper for, per `process.arch`. x86_64 keeps its
 * historical table (arch/x86/entry/syscalls/syscall_64.tbl); aarch64 uses the generic table
 * (include/uapi/asm-generic/unistd.h). Only 64-bit little-endian arches are listed because the
 * struct layouts built in this package (msghdr, sock_fprog, rlimit) assume them.
 */
export const SYSCALL_NUMBERS = {
  x64: { pivot_root: 155, seccomp: 317 },
  arm64: { pivot_root: 41, seccomp: 277 },
} as const;

/** The name of a system call in {@link SYSCALL_NUMBERS}. */
export type SyscallName = keyof (typeof SYSCALL_NUMBERS)["x64"];

/**
 * The number of system call `name` on this machine's architecture. Throws `not-implemented` on an
 * architecture that is not in {@link SYSCALL_NUMBERS}.
 */
export function syscallNumber(name: SyscallName): number {
  const table = (SYSCALL_NUMBERS as Readonly<Record<string, Record<SyscallName, number>>>)[process.arch];
  if (!table) {
    throw notImplemented(
      `system call ${name}: @berth/sys knows syscall numbers for ${Object.keys(SYSCALL_NUMBERS).join(", ")} only, not ${process.arch}`,
    );
  }
  return table[name];
}
