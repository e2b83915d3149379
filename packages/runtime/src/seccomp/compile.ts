import { endianness } from "node:os";
import { internal, invalidArgument, notImplemented } from "@berth/errdefs";
import type { LinuxSeccomp, LinuxSyscall } from "../spec.js";
import { BpfAssembler, type Label } from "./assembler.js";
import { AuditArch, SeccompData, SeccompFlag, SeccompRet, X32_SYSCALL_BIT } from "./constants.js";
import { SYSCALLS_AARCH64 } from "./syscalls-aarch64.js";
import { SYSCALLS_I386 } from "./syscalls-i386.js";
import { SYSCALLS_X32 } from "./syscalls-x32.js";
import { SYSCALLS_X86_64 } from "./syscalls-x86_64.js";

/** A syscall ABI berth has a name table for. */
export type SeccompArch = "x86_64" | "x32" | "i386" | "aarch64";

const tables: Record<SeccompArch, ReadonlyMap<string, number>> = {
  x86_64: SYSCALLS_X86_64,
  x32: SYSCALLS_X32,
  i386: SYSCALLS_I386,
  aarch64: SYSCALLS_AARCH64,
};

/**
 * The syscall number of `name` on `arch` (x32 numbers include `__X32_SYSCALL_BIT`), or undefined
 * when the kernel headers berth was generated from do not define it there.
 */
export function syscallNumber(name: string, arch: SeccompArch): number | undefined {
  const nr = tables[arch].get(name);
  if (nr === undefined) return undefined;
  return arch === "x32" ? (nr | X32_SYSCALL_BIT) >>> 0 : nr;
}

// Every SCMP_ARCH_* name the runtime spec defines; only those a process on this kernel can
// actually run as (the native ABI and its compat ABIs) get code, the rest can never appear in
// seccomp_data.arch here.
const ociArches: Record<string, SeccompArch | null> = {
  SCMP_ARCH_X86: "i386",
  SCMP_ARCH_X86_64: "x86_64",
  SCMP_ARCH_X32: "x32",
  SCMP_ARCH_AARCH64: "aarch64",
  SCMP_ARCH_ARM: null,
  SCMP_ARCH_MIPS: null,
  SCMP_ARCH_MIPS64: null,
  SCMP_ARCH_MIPS64N32: null,
  SCMP_ARCH_MIPSEL: null,
  SCMP_ARCH_MIPSEL64: null,
  SCMP_ARCH_MIPSEL64N32: null,
  SCMP_ARCH_PPC: null,
  SCMP_ARCH_PPC64: null,
  SCMP_ARCH_PPC64LE: null,
  SCMP_ARCH_S390: null,
  SCMP_ARCH_S390X: null,
  SCMP_ARCH_PARISC: null,
  SCMP_ARCH_PARISC64: null,
  SCMP_ARCH_RISCV64: null,
  SCMP_ARCH_LOONGARCH64: null,
  SCMP_ARCH_M68K: null,
  SCMP_ARCH_SH: null,
  SCMP_ARCH_SHEB: null,
};

/** Host (`process.arch`) → the native ABI and the compat ABIs its kernel may run. */
const hostArches: Record<string, { native: SeccompArch; compat: readonly SeccompArch[] }> = {
  x64: { native: "x86_64", compat: ["x32", "i386"] },
  arm64: { native: "aarch64", compat: [] },
};

const ERRNO_EPERM = 1;
const ERRNO_ENOSYS = 38;

function errnoOf(value: unknown, field: string): number {
  if (value === undefined) return ERRNO_EPERM;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw invalidArgument(`seccomp ${field} ${JSON.stringify(value)} is not an errno number (0-65535)`);
  }
  return value;
}

/**
 * Maps an OCI action name to its `SECCOMP_RET_*` value the way runc does: `SCMP_ACT_KILL` is
 * KILL_THREAD, ERRNO and TRACE carry `errnoRet` (EPERM when absent).
 */
function actionValue(action: unknown, errnoRet: unknown, field: string): number {
  switch (action) {
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return SeccompRet.KILL_THREAD;
    case "SCMP_ACT_KILL_PROCESS":
      return SeccompRet.KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return SeccompRet.TRAP;
    case "SCMP_ACT_ERRNO":
      return (SeccompRet.ERRNO | errnoOf(errnoRet, `${field} errnoRet`)) >>> 0;
    case "SCMP_ACT_TRACE":
      return (SeccompRet.TRACE | errnoOf(errnoRet, `${field} errnoRet`)) >>> 0;
    case "SCMP_ACT_ALLOW":
      return SeccompRet.ALLOW;
    case "SCMP_ACT_LOG":
      return SeccompRet.LOG;
    case "SCMP_ACT_NOTIFY":
      throw invalidArgument(
        `seccomp ${field}: SCMP_ACT_NOTIFY (user notification via listenerPath) is not supported`,
      );
    default:
      throw invalidArgument(`seccomp ${field}: unknown action ${JSON.stringify(action)}`);
  }
}

const compareOps = [
  "SCMP_CMP_NE",
  "SCMP_CMP_LT",
  "SCMP_CMP_LE",
  "SCMP_CMP_EQ",
  "SCMP_CMP_GE",
  "SCMP_CMP_GT",
  "SCMP_CMP_MASKED_EQ",
] as const;
type CompareOp = (typeof compareOps)[number];

interface Condition {
  readonly index: number;
  readonly op: CompareOp;
  /** The operand; the mask for MASKED_EQ. */
  readonly value: bigint;
  /** The datum for MASKED_EQ; unused otherwise. */
  readonly valueTwo: bigint;
}

interface Rule {
  readonly action: number;
  /** All must hold; empty = unconditional. */
  readonly conditions: readonly Condition[];
}

const U64_MAX = (1n << 64n) - 1n;

function u64(value: unknown, field: string): bigint {
  let v: bigint | undefined;
  if (typeof value === "bigint") v = value;
  else if (typeof value === "number" && Number.isInteger(value)) v = BigInt(value);
  if (v === undefined || v < 0n || v > U64_MAX) {
    throw invalidArgument(`seccomp ${field} ${String(value)} is not an unsigned 64-bit integer`);
  }
  return v;
}

function parseConditions(call: LinuxSyscall, field: string): Condition[] {
  const args: unknown = call.args;
  if (args === undefined || args === null) return [];
  if (!Array.isArray(args)) throw invalidArgument(`seccomp ${field}.args must be an array`);
  return args.map((raw: unknown, i): Condition => {
    const f = `${field}.args[${i}]`;
    if (typeof raw !== "object" || raw === null) throw invalidArgument(`seccomp ${f} must be an object`);
    const arg = raw as Record<string, unknown>;
    const index = arg.index;
    if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index > 5) {
      throw invalidArgument(
        `seccomp ${f}.index ${JSON.stringify(index)} is not a syscall argument index (0-5)`,
      );
    }
    const op = arg.op;
    if (!compareOps.includes(op as CompareOp)) {
      throw invalidArgument(`seccomp ${f}.op: unknown operator ${JSON.stringify(op)}`);
    }
    return {
      index,
      op: op as CompareOp,
      value: u64(arg.value, `${f}.value`),
      valueTwo: arg.valueTwo === undefined ? 0n : u64(arg.valueTwo, `${f}.valueTwo`),
    };
  });
}

/**
 * runc's grouping (libcontainer/seccomp): all conditions of an entry form one rule (AND), unless
 * two of them test the same argument; then each condition becomes a rule of its own (OR). Docker's
 * profile relies on the latter, e.g. `personality` with several allowed values of arg 0.
 */
function rulesOf(action: number, conditions: readonly Condition[]): Rule[] {
  if (conditions.length === 0) return [{ action, conditions }];
  const seen = new Set<number>();
  const repeated = conditions.some((c) => seen.size === seen.add(c.index).size);
  return repeated ? conditions.map((c) => ({ action, conditions: [c] })) : [{ action, conditions }];
}

/** Options of {@link compileSeccomp}. */
export interface CompileSeccompOptions {
  /**
   * Prepend runc's `-ENOSYS` stub (default true): a syscall numbered above the highest syscall the
   * profile names for that ABI gets ENOSYS instead of the default action, so that programs
   * probing newer syscalls (clone3, faccessat2, ...) fall back as they do on older kernels. Like
   * runc, the stub is left out when the default action allows (ALLOW, LOG, TRACE).
   */
  readonly enosysStub?: boolean;
}

interface ArchCode {
  readonly arch: SeccompArch;
  /** nr → the rules for it, in profile order. */
  readonly rules: Map<number, Rule[]>;
  /** The highest syscall number the profile names on this ABI (0 if none). */
  maxNr: number;
}

/**
 * Compiles OCI `linux.seccomp` into a classic BPF seccomp program: the bytes of a
 * `struct sock_filter[]` (8 bytes each, host byte order) ready for
 * `seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog)`; take the flags from {@link seccompFilterFlags}.
 *
 * Semantics follow runc with libseccomp:
 * - the native ABI of `arch` (Node's `process.arch`: `x64` or `arm64`) is always filtered;
 *   `SCMP_ARCH_X86` and `SCMP_ARCH_X32` add i386 and x32 on x86_64. Any other ABI, and x32 calls
 *   (`nr & 0x40000000`) when x32 is not listed, get libseccomp's bad-arch action, KILL_THREAD.
 *   Architectures a process cannot have on this host are accepted and ignored (they could never
 *   match); `SCMP_ARCH_ARM` on arm64 has no table here and so takes the bad-arch action;
 * - syscall names unknown on an ABI are skipped for that ABI, like runc does;
 * - an entry whose action equals the default action is skipped (runc does the same);
 * - conditions are ANDed, except that several conditions on the same argument make separate
 *   rules (OR), as runc groups them; an unconditional rule for a syscall overrides conditional
 *   ones (libseccomp), otherwise the first matching rule in profile order wins;
 * - 64-bit argument comparisons test the high then the low 32-bit half; on i386 only the low
 *   half, as libseccomp does for 32-bit ABIs. MASKED_EQ takes the mask in `value` and the datum
 *   in `valueTwo`;
 * - `SCMP_ACT_KILL` = KILL_THREAD, ERRNO/TRACE default to EPERM, and runc's `-ENOSYS` stub is
 *   prepended (see {@link CompileSeccompOptions.enosysStub}).
 *
 * Argument values may be numbers or bigints; values above 2^53 must be bigints, since a JSON
 * number that large has already lost precision. Throws `invalid-argument` for an unknown
 * action, operator or architecture name, an empty syscall name, a malformed argument, or
 * `SCMP_ACT_NOTIFY` (not supported); `not-implemented` for a host architecture other than x64
 * and arm64 or a big-endian host.
 */
export function compileSeccomp(
  seccomp: LinuxSeccomp,
  arch: string = process.arch,
  options: CompileSeccompOptions = {},
): Uint8Array {
  const host = hostArches[arch];
  if (host === undefined) throw notImplemented(`seccomp: no syscall tables for host architecture ${arch}`);
  if (endianness() !== "LE") throw notImplemented("seccomp: big-endian hosts are not supported");
  if (typeof seccomp !== "object" || seccomp === null)
    throw invalidArgument("linux.seccomp must be an object");

  const defaultAction = actionValue(seccomp.defaultAction, seccomp.defaultErrnoRet, "defaultAction");
  seccompFilterFlags(seccomp);

  // The ABIs to emit code for: native first, then listed compat ones, each once.
  const active = new Set<SeccompArch>([host.native]);
  for (const [i, name] of (seccomp.architectures ?? []).entries()) {
    const mapped = ociArches[name];
    if (mapped === undefined) {
      throw invalidArgument(`seccomp architectures[${i}]: unknown architecture ${JSON.stringify(name)}`);
    }
    if (mapped !== null && (mapped === host.native || host.compat.includes(mapped))) active.add(mapped);
  }

  const codes = new Map<SeccompArch, ArchCode>();
  for (const a of active) codes.set(a, { arch: a, rules: new Map(), maxNr: 0 });
  const raise = (code: ArchCode, nr: number): void => {
    if (nr > code.maxNr) code.maxNr = nr;
  };

  const syscalls: unknown = seccomp.syscalls ?? [];
  if (!Array.isArray(syscalls)) throw invalidArgument("seccomp syscalls must be an array");
  syscalls.forEach((call: LinuxSyscall, i: number) => {
    const field = `syscalls[${i}]`;
    if (typeof call !== "object" || call === null)
      throw invalidArgument(`seccomp ${field} must be an object`);
    const names: unknown = call.names;
    if (!Array.isArray(names) || names.length === 0) {
      throw invalidArgument(`seccomp ${field}.names must be a non-empty array of syscall names`);
    }
    for (const name of names) {
      if (typeof name !== "string" || name === "") {
        throw invalidArgument(`seccomp ${field}.names has an invalid syscall name ${JSON.stringify(name)}`);
      }
    }
    const action = actionValue(call.action, call.errnoRet, `${field}.action`);
    const conditions = parseConditions(call, field);
    const rules = action === defaultAction ? [] : rulesOf(action, conditions);
    for (const name of names as string[]) {
      for (const code of codes.values()) {
        const nr = syscallNumber(name, code.arch);
        if (nr === undefined) continue;
        // runc's stub counts every name the profile resolves, even redundant entries.
        raise(code, nr);
        if (rules.length === 0) continue;
        const list = code.rules.get(nr);
        if (list === undefined) code.rules.set(nr, [...rules]);
        else list.push(...rules);
      }
    }
  });

  const stub =
    options.enosysStub !== false &&
    defaultAction !== SeccompRet.ALLOW &&
    defaultAction !== SeccompRet.LOG &&
    (defaultAction & 0xffff0000) >>> 0 !== SeccompRet.TRACE &&
    defaultAction !== (SeccompRet.ERRNO | ERRNO_ENOSYS) >>> 0;

  return emitProgram(host.native, codes, defaultAction, stub);
}

const ENOSYS_RET = (SeccompRet.ERRNO | ERRNO_ENOSYS) >>> 0;
const BAD_ARCH_RET = SeccompRet.KILL_THREAD;
/** Syscalls per leaf of the dispatch tree: a run of `jeq`s, as libseccomp's binary tree uses 4. */
const LEAF_SIZE = 4;

function emitProgram(
  native: SeccompArch,
  codes: ReadonlyMap<SeccompArch, ArchCode>,
  defaultAction: number,
  stub: boolean,
): Uint8Array {
  const b = new BpfAssembler();
  const badArch = b.label();
  const enosys = b.label();
  const x86 = native === "x86_64";

  // Dispatch on seccomp_data.arch. x86_64 and x32 share AUDIT_ARCH_X86_64.
  const entries: [number, Label, SeccompArch][] = [];
  if (x86) {
    entries.push([AuditArch.X86_64, b.label(), "x86_64"]);
    if (codes.has("i386")) entries.push([AuditArch.I386, b.label(), "i386"]);
  } else {
    entries.push([AuditArch.AARCH64, b.label(), "aarch64"]);
  }
  b.load(SeccompData.ARCH);
  for (const [audit, label] of entries) {
    const next = b.label();
    b.branch("jeq", audit, label, next);
    b.place(next);
  }
  b.ret(BAD_ARCH_RET);

  for (const [, label, arch] of entries) {
    b.place(label);
    b.load(SeccompData.NR);
    if (arch === "x86_64") {
      const x32 = codes.get("x32");
      const main = codeOf(codes, "x86_64");
      const filter = b.label();
      if (stub) {
        // runc's stub tells the ABIs apart by bit 30 (jset); libseccomp's filter below by
        // nr >= 0x40000000 (jge). Both are kept so each half behaves exactly as in runc.
        const s64 = b.label();
        const s32 = b.label();
        b.branch("jset", X32_SYSCALL_BIT, s32, s64);
        b.place(s64);
        if (main.maxNr > 0) b.branch("jgt", main.maxNr, enosys, filter);
        else b.jump(filter);
        b.place(s32);
        if (x32 !== undefined && x32.maxNr > 0) b.branch("jgt", x32.maxNr, enosys, filter);
        else b.jump(filter);
      }
      b.place(filter);
      const t64 = b.label();
      const t32 = x32 !== undefined ? b.label() : badArch;
      b.branch("jge", X32_SYSCALL_BIT, t32, t64);
      b.place(t64);
      emitDispatch(b, sorted(main), defaultAction, 64);
      if (x32 !== undefined) {
        b.place(t32);
        emitDispatch(b, sorted(x32), defaultAction, 64);
      }
    } else {
      const code = codeOf(codes, arch);
      if (stub && code.maxNr > 0) {
        const filter = b.label();
        b.branch("jgt", code.maxNr, enosys, filter);
        b.place(filter);
      }
      emitDispatch(b, sorted(code), defaultAction, arch === "i386" ? 32 : 64);
    }
  }

  b.place(badArch);
  b.ret(BAD_ARCH_RET);
  b.place(enosys);
  b.ret(ENOSYS_RET);
  return b.assemble();
}

type Target = { readonly nr: number; readonly rules: readonly Rule[] };

function codeOf(codes: ReadonlyMap<SeccompArch, ArchCode>, arch: SeccompArch): ArchCode {
  const code = codes.get(arch);
  if (code === undefined) throw internal(`seccomp: no rules collected for ${arch}`);
  return code;
}

function sorted(code: ArchCode): Target[] {
  return [...code.rules].map(([nr, rules]) => ({ nr, rules })).sort((x, y) => x.nr - y.nr);
}

/**
 * A binary search over the sorted syscall numbers (`jge` splits), ending in short runs of `jeq`
 * with their own `ret` instructions and rule blocks close by, so that nearly every jump is short;
 * the assembler adds trampolines for the few split jumps that are not. A holds the syscall number
 * on entry; every path ends in a `ret`.
 */
function emitDispatch(
  b: BpfAssembler,
  targets: readonly Target[],
  defaultAction: number,
  bits: 32 | 64,
): void {
  if (targets.length <= LEAF_SIZE) {
    const rets = new Map<number, Label>();
    const blocks: [Label, readonly Rule[]][] = [];
    for (const { nr, rules } of targets) {
      // libseccomp: an unconditional rule makes the syscall's conditional ones moot.
      const unconditional = rules.find((r) => r.conditions.length === 0);
      let target: Label;
      if (unconditional !== undefined) {
        target = rets.get(unconditional.action) ?? b.label();
        rets.set(unconditional.action, target);
      } else {
        target = b.label();
        blocks.push([target, rules]);
      }
      const next = b.label();
      b.branch("jeq", nr, target, next);
      b.place(next);
    }
    b.ret(defaultAction);
    for (const [action, label] of rets) {
      b.place(label);
      b.ret(action);
    }
    for (const [label, rules] of blocks) {
      b.place(label);
      emitRules(b, rules, defaultAction, bits);
    }
    return;
  }
  const mid = targets.length >> 1;
  const pivot = targets[mid];
  if (pivot === undefined) throw internal("seccomp: empty dispatch range");
  const left = b.label();
  const right = b.label();
  b.branch("jge", pivot.nr, right, left);
  b.place(left);
  emitDispatch(b, targets.slice(0, mid), defaultAction, bits);
  b.place(right);
  emitDispatch(b, targets.slice(mid), defaultAction, bits);
}

/** Conditional rules of one syscall, tried in order; none matching → the default action. */
function emitRules(b: BpfAssembler, rules: readonly Rule[], defaultAction: number, bits: 32 | 64): void {
  for (const rule of rules) {
    const nextRule = b.label();
    for (const cond of rule.conditions) {
      const ok = b.label();
      emitCondition(b, cond, ok, nextRule, bits);
      b.place(ok);
    }
    b.ret(rule.action);
    b.place(nextRule);
  }
  b.ret(defaultAction);
}

/** Emits one argument comparison: jumps to `t` when it holds, to `f` otherwise. */
function emitCondition(b: BpfAssembler, c: Condition, t: Label, f: Label, bits: 32 | 64): void {
  // args[i] is a little-endian u64: low word first.
  const lo = SeccompData.ARGS + 8 * c.index;
  const hi = lo + 4;
  const split = (v: bigint): [number, number] => [Number((v >> 32n) & 0xffffffffn), Number(v & 0xffffffffn)];
  const [vHi, vLo] = split(c.value);
  const wide = bits === 64;

  const eq = (yes: Label, no: Label): void => {
    if (wide) {
      const low = b.label();
      b.load(hi);
      b.branch("jeq", vHi, low, no);
      b.place(low);
    }
    b.load(lo);
    b.branch("jeq", vLo, yes, no);
  };
  // A > value (strict) or A >= value, unsigned, over the full width.
  const greater = (op: "jgt" | "jge", yes: Label, no: Label): void => {
    if (wide) {
      const sameHi = b.label();
      const low = b.label();
      b.load(hi);
      b.branch("jgt", vHi, yes, sameHi);
      b.place(sameHi);
      b.branch("jeq", vHi, low, no);
      b.place(low);
    }
    b.load(lo);
    b.branch(op, vLo, yes, no);
  };

  switch (c.op) {
    case "SCMP_CMP_EQ":
      eq(t, f);
      return;
    case "SCMP_CMP_NE":
      eq(f, t);
      return;
    case "SCMP_CMP_GT":
      greater("jgt", t, f);
      return;
    case "SCMP_CMP_GE":
      greater("jge", t, f);
      return;
    case "SCMP_CMP_LT":
      greater("jge", f, t);
      return;
    case "SCMP_CMP_LE":
      greater("jgt", f, t);
      return;
    case "SCMP_CMP_MASKED_EQ": {
      const [dHi, dLo] = split(c.valueTwo);
      if (wide) {
        const low = b.label();
        b.load(hi);
        b.and(vHi);
        b.branch("jeq", dHi, low, f);
        b.place(low);
      }
      b.load(lo);
      b.and(vLo);
      b.branch("jeq", dLo, t, f);
      return;
    }
  }
}

const ociFlags: Record<string, number> = {
  // runc accepts TSYNC and does not pass it: the filter goes on the thread that execs, and the
  // other threads disappear with the exec.
  SECCOMP_FILTER_FLAG_TSYNC: 0,
  SECCOMP_FILTER_FLAG_LOG: SeccompFlag.LOG,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW: SeccompFlag.SPEC_ALLOW,
};

/**
 * The `SECCOMP_FILTER_FLAG_*` bits to load the compiled program with, from `linux.seccomp.flags`,
 * as runc computes them (TSYNC is accepted and left out). Throws `invalid-argument` for a flag
 * runc does not know either (e.g. `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`, which only matters
 * with user notification).
 */
export function seccompFilterFlags(seccomp: LinuxSeccomp): number {
  let flags = 0;
  const list: unknown = seccomp.flags ?? [];
  if (!Array.isArray(list)) throw invalidArgument("seccomp flags must be an array");
  for (const flag of list) {
    const bit = typeof flag === "string" && Object.hasOwn(ociFlags, flag) ? ociFlags[flag] : undefined;
    if (bit === undefined) throw invalidArgument(`seccomp flag ${JSON.stringify(flag)} is not supported`);
    flags |= bit;
  }
  return flags;
}
