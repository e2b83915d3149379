/**
 * `SECCOMP_RET_*` filter return values (linux/seccomp.h). The action sits in the upper 16 bits,
 * the data (errno for `ERRNO`, the tracer's message for `TRACE`) in the lower 16.
 */
export const SeccompRet = {
  KILL_PROCESS: 0x80000000,
  KILL_THREAD: 0x00000000,
  TRAP: 0x00030000,
  ERRNO: 0x00050000,
  USER_NOTIF: 0x7fc00000,
  TRACE: 0x7ff00000,
  LOG: 0x7ffc0000,
  ALLOW: 0x7fff0000,
} as const;

/** Mask of the action part of a filter return value. */
export const SECCOMP_RET_ACTION_FULL = 0xffff0000;
/** Mask of the data part of a filter return value. */
export const SECCOMP_RET_DATA = 0x0000ffff;

/**
 * `SECCOMP_FILTER_FLAG_*` bits for `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`
 * (linux/seccomp.h); {@link seccompFilterFlags} derives them from `linux.seccomp.flags`.
 */
export const SeccompFlag = {
  TSYNC: 1,
  LOG: 2,
  SPEC_ALLOW: 4,
  NEW_LISTENER: 8,
  TSYNC_ESRCH: 16,
  WAIT_KILLABLE_RECV: 32,
} as const;

/** `AUDIT_ARCH_*` values the kernel puts in `seccomp_data.arch` (linux/audit.h). */
export const AuditArch = {
  X86_64: 0xc000003e,
  I386: 0x40000003,
  AARCH64: 0xc00000b7,
  ARM: 0x40000028,
} as const;

/** Bit 30 of the syscall number marks an x32 syscall on x86_64 (asm/unistd.h). */
export const X32_SYSCALL_BIT = 0x40000000;

/** Byte offsets in `struct seccomp_data { int nr; u32 arch; u64 instruction_pointer; u64 args[6]; }`. */
export const SeccompData = {
  NR: 0,
  ARCH: 4,
  INSTRUCTION_POINTER: 8,
  ARGS: 16,
  SIZE: 64,
} as const;

/** Classic BPF opcodes the compiler emits (linux/filter.h, linux/bpf_common.h). */
export const BpfOp = {
  /** `BPF_LD | BPF_W | BPF_ABS`: A = 32-bit word at offset k of seccomp_data. */
  LD_W_ABS: 0x20,
  /** `BPF_ALU | BPF_AND | BPF_K`: A &= k. */
  ALU_AND_K: 0x54,
  /** `BPF_JMP | BPF_JA`: pc += k. */
  JA: 0x05,
  /** `BPF_JMP | BPF_JEQ | BPF_K`. */
  JEQ_K: 0x15,
  /** `BPF_JMP | BPF_JGT | BPF_K` (unsigned). */
  JGT_K: 0x25,
  /** `BPF_JMP | BPF_JGE | BPF_K` (unsigned). */
  JGE_K: 0x35,
  /** `BPF_JMP | BPF_JSET | BPF_K`: jump if A & k. */
  JSET_K: 0x45,
  /** `BPF_RET | BPF_K`. */
  RET_K: 0x06,
} as const;

/** The kernel's limit on a classic BPF program's length (`BPF_MAXINSNS`). */
export const BPF_MAXINSNS = 4096;
