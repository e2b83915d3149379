import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import type { LinuxSeccomp } from "../spec.js";
import { compileSeccomp, seccompFilterFlags, syscallNumber } from "./compile.js";
import { AuditArch, SeccompRet, X32_SYSCALL_BIT } from "./constants.js";

// --- A small classic-BPF interpreter for seccomp programs -------------------------------------
// It checks the program the way the kernel's loader does (known opcodes, jumps in range, ends in
// RET) and then runs it on a synthetic struct seccomp_data.

interface SeccompInput {
  readonly nr: number;
  readonly arch: number;
  readonly args?: readonly bigint[];
}

function decode(prog: Uint8Array): { code: number; jt: number; jf: number; k: number }[] {
  expect(prog.byteLength % 8).toBe(0);
  const view = new DataView(prog.buffer, prog.byteOffset, prog.byteLength);
  const out = [];
  for (let i = 0; i < prog.byteLength / 8; i++) {
    out.push({
      code: view.getUint16(i * 8, true),
      jt: view.getUint8(i * 8 + 2),
      jf: view.getUint8(i * 8 + 3),
      k: view.getUint32(i * 8 + 4, true),
    });
  }
  return out;
}

function verify(prog: Uint8Array): void {
  const insns = decode(prog);
  expect(insns.length).toBeGreaterThan(0);
  expect(insns.length).toBeLessThanOrEqual(4096);
  insns.forEach((ins, pc) => {
    switch (ins.code) {
      case 0x20:
        expect(ins.k % 4).toBe(0);
        expect(ins.k).toBeLessThan(64);
        break;
      case 0x54:
      case 0x06:
        break;
      case 0x05:
        expect(pc + 1 + ins.k).toBeLessThan(insns.length);
        break;
      case 0x15:
      case 0x25:
      case 0x35:
      case 0x45:
        expect(pc + 1 + Math.max(ins.jt, ins.jf)).toBeLessThan(insns.length);
        break;
      default:
        throw new Error(`unexpected opcode 0x${ins.code.toString(16)} at ${pc}`);
    }
  });
  expect(insns.at(-1)?.code).toBe(0x06);
}

function run(prog: Uint8Array, input: SeccompInput): number {
  const data = Buffer.alloc(64);
  data.writeUInt32LE(input.nr >>> 0, 0);
  data.writeUInt32LE(input.arch >>> 0, 4);
  data.writeBigUInt64LE(0x401000n, 8);
  for (const [i, a] of (input.args ?? []).entries()) data.writeBigUInt64LE(BigInt.asUintN(64, a), 16 + 8 * i);
  const insns = decode(prog);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps < 10_000; steps++) {
    const ins = insns[pc];
    if (ins === undefined) throw new Error(`fell off the program at ${pc}`);
    const cond = (ok: boolean): void => {
      pc += 1 + (ok ? ins.jt : ins.jf);
    };
    switch (ins.code) {
      case 0x20:
        a = data.readUInt32LE(ins.k);
        pc++;
        break;
      case 0x54:
        a = (a & ins.k) >>> 0;
        pc++;
        break;
      case 0x05:
        pc += 1 + ins.k;
        break;
      case 0x15:
        cond(a === ins.k);
        break;
      case 0x25:
        cond(a > ins.k);
        break;
      case 0x35:
        cond(a >= ins.k);
        break;
      case 0x45:
        cond((a & ins.k) !== 0);
        break;
      case 0x06:
        return ins.k;
      default:
        throw new Error(`bad opcode ${ins.code}`);
    }
  }
  throw new Error("program did not terminate");
}

// --- A reference model of the profile semantics, independent of the BPF layout -----------------

type Abi = "x86_64" | "x32" | "i386";

function actionOf(action: string, errnoRet: number | undefined): number {
  switch (action) {
    case "SCMP_ACT_ALLOW":
      return SeccompRet.ALLOW;
    case "SCMP_ACT_ERRNO":
      return SeccompRet.ERRNO | (errnoRet ?? 1);
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return 0;
    case "SCMP_ACT_KILL_PROCESS":
      return SeccompRet.KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return SeccompRet.TRAP;
    case "SCMP_ACT_TRACE":
      return SeccompRet.TRACE | (errnoRet ?? 1);
    case "SCMP_ACT_LOG":
      return SeccompRet.LOG;
  }
  throw new Error(action);
}

function holds(op: string, arg: bigint, value: bigint, valueTwo: bigint): boolean {
  switch (op) {
    case "SCMP_CMP_EQ":
      return arg === value;
    case "SCMP_CMP_NE":
      return arg !== value;
    case "SCMP_CMP_LT":
      return arg < value;
    case "SCMP_CMP_LE":
      return arg <= value;
    case "SCMP_CMP_GT":
      return arg > value;
    case "SCMP_CMP_GE":
      return arg >= value;
    case "SCMP_CMP_MASKED_EQ":
      return (arg & value) === valueTwo;
  }
  throw new Error(op);
}

/** What runc + libseccomp return for a syscall on x86_64-family ABIs (ENOSYS stub included). */
function expected(profile: LinuxSeccomp, abi: Abi, nr: number, args: readonly bigint[] = []): number {
  const def = actionOf(profile.defaultAction, profile.defaultErrnoRet);
  const listed = new Set(profile.architectures ?? []);
  const has = abi === "x86_64" || listed.has(abi === "x32" ? "SCMP_ARCH_X32" : "SCMP_ARCH_X86");
  if (!has) return 0;
  let max = 0;
  const rules: { action: number; conds: { index: number; op: string; v: bigint; v2: bigint }[] }[] = [];
  const fullNr = abi === "x32" ? (nr | X32_SYSCALL_BIT) >>> 0 : nr;
  for (const call of profile.syscalls ?? []) {
    const action = actionOf(call.action, call.errnoRet);
    for (const name of call.names) {
      const n = syscallNumber(name, abi);
      if (n === undefined) continue;
      max = Math.max(max, n);
      if (n !== fullNr || action === def) continue;
      const conds = (call.args ?? []).map((c) => ({
        index: c.index,
        op: c.op,
        v: BigInt(c.value),
        v2: BigInt(c.valueTwo ?? 0),
      }));
      const sameArg = new Set(conds.map((c) => c.index)).size !== conds.length;
      if (sameArg) for (const c of conds) rules.push({ action, conds: [c] });
      else rules.push({ action, conds });
    }
  }
  const allowLike =
    def === SeccompRet.ALLOW || def === SeccompRet.LOG || (def & 0xffff0000) >>> 0 === SeccompRet.TRACE;
  if (!allowLike && max > 0 && fullNr > max) return SeccompRet.ERRNO | 38;
  const mask = abi === "i386" ? 0xffffffffn : (1n << 64n) - 1n;
  const unconditional = rules.find((r) => r.conds.length === 0);
  if (unconditional) return unconditional.action;
  for (const r of rules) {
    if (r.conds.every((c) => holds(c.op, (args[c.index] ?? 0n) & mask, c.v & mask, c.v2 & mask)))
      return r.action;
  }
  return def;
}

const archOf = (abi: Abi): number => (abi === "i386" ? AuditArch.I386 : AuditArch.X86_64);
const nrOf = (abi: Abi, nr: number): number => (abi === "x32" ? (nr | X32_SYSCALL_BIT) >>> 0 : nr);
const nr = (name: string, abi: Abi = "x86_64"): number => {
  const n = syscallNumber(name, abi);
  if (n === undefined) throw new Error(`no ${name} on ${abi}`);
  return n;
};

const ALLOW = SeccompRet.ALLOW;
const EPERM = SeccompRet.ERRNO | 1;
const ENOSYS = SeccompRet.ERRNO | 38;
const KILL_THREAD = SeccompRet.KILL_THREAD;

const dockerProfile = JSON.parse(
  readFileSync(new URL("./testdata/docker-default-amd64.json", import.meta.url), "utf8"),
) as LinuxSeccomp;

describe("compileSeccomp on x86_64", () => {
  const basic: LinuxSeccomp = {
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [
      { names: ["read", "write", "exit_group", "no_such_syscall"], action: "SCMP_ACT_ALLOW" },
      { names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 13 },
      { names: ["uname"], action: "SCMP_ACT_KILL_PROCESS" },
      { names: ["getppid"], action: "SCMP_ACT_TRAP" },
      { names: ["gettid"], action: "SCMP_ACT_TRACE", errnoRet: 7 },
      { names: ["getuid"], action: "SCMP_ACT_LOG" },
      { names: ["getgid"], action: "SCMP_ACT_KILL" },
    ],
  };

  it("maps every action to its SECCOMP_RET value and the rest to the default", () => {
    const prog = compileSeccomp(basic, "x64");
    verify(prog);
    const at = (name: string) => run(prog, { nr: nr(name), arch: AuditArch.X86_64 });
    expect(at("read")).toBe(ALLOW);
    expect(at("exit_group")).toBe(ALLOW);
    expect(at("mkdir")).toBe(SeccompRet.ERRNO | 13);
    expect(at("mkdirat")).toBe(SeccompRet.ERRNO | 13);
    expect(at("uname")).toBe(SeccompRet.KILL_PROCESS);
    expect(at("getppid")).toBe(SeccompRet.TRAP);
    expect(at("gettid")).toBe(SeccompRet.TRACE | 7);
    expect(at("getuid")).toBe(SeccompRet.LOG);
    expect(at("getgid")).toBe(KILL_THREAD);
    // Not named: SCMP_ACT_ERRNO without defaultErrnoRet is EPERM, as in runc.
    expect(at("getpid")).toBe(EPERM);
    expect(at("open")).toBe(EPERM);
  });

  it("returns ENOSYS above the highest named syscall (runc's stub), kills other ABIs", () => {
    const prog = compileSeccomp(basic, "x64");
    const highest = Math.max(
      ...[
        "read",
        "write",
        "exit_group",
        "mkdir",
        "mkdirat",
        "uname",
        "getppid",
        "gettid",
        "getuid",
        "getgid",
      ].map((n) => nr(n)),
    );
    expect(run(prog, { nr: highest + 1, arch: AuditArch.X86_64 })).toBe(ENOSYS);
    expect(run(prog, { nr: 0x7fffffff & ~X32_SYSCALL_BIT, arch: AuditArch.X86_64 })).toBe(ENOSYS);
    // x32 is not listed: libseccomp's bad-arch action, even for a syscall x86_64 allows.
    expect(run(prog, { nr: X32_SYSCALL_BIT | nr("read"), arch: AuditArch.X86_64 })).toBe(KILL_THREAD);
    expect(run(prog, { nr: 0xffffffff, arch: AuditArch.X86_64 })).toBe(KILL_THREAD);
    // i386 is not listed, and aarch64 can never be the arch here.
    expect(run(prog, { nr: 3, arch: AuditArch.I386 })).toBe(KILL_THREAD);
    expect(run(prog, { nr: 63, arch: AuditArch.AARCH64 })).toBe(KILL_THREAD);
    expect(run(prog, { nr: 0, arch: 0x12345 })).toBe(KILL_THREAD);
  });

  it("leaves the stub out when asked or when the default action allows", () => {
    const noStub = compileSeccomp(basic, "x64", { enosysStub: false });
    verify(noStub);
    expect(run(noStub, { nr: 440, arch: AuditArch.X86_64 })).toBe(EPERM);
    const allowing = compileSeccomp({ ...basic, defaultAction: "SCMP_ACT_ALLOW" }, "x64");
    expect(run(allowing, { nr: 440, arch: AuditArch.X86_64 })).toBe(ALLOW);
    expect(run(allowing, { nr: nr("mkdir"), arch: AuditArch.X86_64 })).toBe(SeccompRet.ERRNO | 13);
    expect(run(allowing, { nr: nr("open"), arch: AuditArch.X86_64 })).toBe(ALLOW);
  });

  it("filters x32 and i386 with their own tables when listed", () => {
    const profile: LinuxSeccomp = {
      ...basic,
      architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
    };
    const prog = compileSeccomp(profile, "x64");
    verify(prog);
    for (const abi of ["x86_64", "x32", "i386"] as const) {
      const arch = archOf(abi);
      expect(run(prog, { nr: nrOf(abi, nr("read", abi)), arch })).toBe(ALLOW);
      expect(run(prog, { nr: nrOf(abi, nr("mkdir", abi)), arch })).toBe(SeccompRet.ERRNO | 13);
      expect(run(prog, { nr: nrOf(abi, nr("getpid", abi)), arch })).toBe(EPERM);
      expect(run(prog, { nr: nrOf(abi, 1000), arch })).toBe(ENOSYS);
    }
    // i386 numbers differ: 3 is read there, close on x86_64.
    expect(nr("read", "i386")).toBe(3);
    expect(run(prog, { nr: 3, arch: AuditArch.X86_64 })).toBe(EPERM);
  });

  it("compares 64-bit arguments in two halves exactly like the reference model", () => {
    const ops = ["SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT"];
    const values = [
      0n,
      1n,
      0xffffffffn,
      0x100000000n,
      0x1_0000_0001n,
      0x7fff_ffff_ffff_ffffn,
      (1n << 64n) - 1n,
      0xdead_beefn,
    ];
    const probes = [
      ...values,
      ...values.map((v) => v + 1n),
      ...values.map((v) => v - 1n),
      0x1_ffff_ffffn,
      0xffff_ffff_0000_0000n,
    ].map((v) => BigInt.asUintN(64, v));
    const syscalls = ops.flatMap((op, i) =>
      values.map((value, j) => ({
        names: [["read", "write", "open", "close", "stat", "fstat", "lstat", "poll"][j] ?? "read"],
        action: "SCMP_ACT_ALLOW",
        args: [{ index: i % 6, value: value as unknown as number, op }],
      })),
    );
    for (const [i, op] of ops.entries()) {
      const profile: LinuxSeccomp = {
        defaultAction: "SCMP_ACT_ERRNO",
        syscalls: syscalls.filter((s) => s.args[0]?.op === op),
      };
      const prog = compileSeccomp(profile, "x64");
      verify(prog);
      for (const call of profile.syscalls ?? []) {
        for (const probe of probes) {
          const args = [0n, 0n, 0n, 0n, 0n, 0n];
          args[i % 6] = probe;
          const n = nr(call.names[0] ?? "");
          expect(
            run(prog, { nr: n, arch: AuditArch.X86_64, args }),
            `${op} ${call.args?.[0]?.value} vs ${probe}`,
          ).toBe(expected(profile, "x86_64", n, args));
        }
      }
    }
  });

  it("masks, then compares, for SCMP_CMP_MASKED_EQ (value = mask, valueTwo = datum)", () => {
    const profile: LinuxSeccomp = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [
        {
          names: ["clone"],
          action: "SCMP_ACT_ALLOW",
          args: [{ index: 0, value: 0x7e020000, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }],
        },
        {
          names: ["ioctl"],
          action: "SCMP_ACT_ALLOW",
          args: [
            {
              index: 1,
              value: 0xff00_0000_ffffn as unknown as number,
              valueTwo: 0x1200_0000_5401n as unknown as number,
              op: "SCMP_CMP_MASKED_EQ",
            },
          ],
        },
      ],
    };
    const prog = compileSeccomp(profile, "x64");
    const clone = (flags: bigint) => run(prog, { nr: nr("clone"), arch: AuditArch.X86_64, args: [flags] });
    expect(clone(0x01200011n)).toBe(ALLOW); // CLONE_CHILD_SETTID|CLONE_CHILD_CLEARTID|SIGCHLD
    expect(clone(0x10000000n)).toBe(EPERM); // CLONE_NEWUSER
    expect(clone(0x20000n)).toBe(EPERM); // CLONE_NEWNS
    const ioctl = (req: bigint) => run(prog, { nr: nr("ioctl"), arch: AuditArch.X86_64, args: [3n, req] });
    expect(ioctl(0x1234_0000_5401n)).toBe(ALLOW);
    expect(ioctl(0x1299_0000_5401n)).toBe(ALLOW);
    expect(ioctl(0x1300_0000_5401n)).toBe(EPERM);
    expect(ioctl(0x1200_0000_5402n)).toBe(EPERM);
  });

  it("ANDs conditions on different arguments and ORs them on the same one, as runc groups them", () => {
    const profile: LinuxSeccomp = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [
        {
          names: ["socket"],
          action: "SCMP_ACT_ALLOW",
          args: [
            { index: 0, value: 2, op: "SCMP_CMP_EQ" },
            { index: 1, value: 1, op: "SCMP_CMP_EQ" },
          ],
        },
        {
          names: ["personality"],
          action: "SCMP_ACT_ALLOW",
          args: [
            { index: 0, value: 0, op: "SCMP_CMP_EQ" },
            { index: 0, value: 8, op: "SCMP_CMP_EQ" },
          ],
        },
      ],
    };
    const prog = compileSeccomp(profile, "x64");
    const socket = (d: bigint, t: bigint) =>
      run(prog, { nr: nr("socket"), arch: AuditArch.X86_64, args: [d, t] });
    expect(socket(2n, 1n)).toBe(ALLOW);
    expect(socket(2n, 2n)).toBe(EPERM);
    expect(socket(10n, 1n)).toBe(EPERM);
    const personality = (p: bigint) =>
      run(prog, { nr: nr("personality"), arch: AuditArch.X86_64, args: [p] });
    expect(personality(0n)).toBe(ALLOW);
    expect(personality(8n)).toBe(ALLOW);
    expect(personality(1n)).toBe(EPERM);
  });

  it("lets an unconditional rule win and skips rules that repeat the default action", () => {
    const profile: LinuxSeccomp = {
      defaultAction: "SCMP_ACT_ERRNO",
      syscalls: [
        { names: ["kill"], action: "SCMP_ACT_ERRNO", args: [{ index: 1, value: 9, op: "SCMP_CMP_EQ" }] },
        { names: ["kill"], action: "SCMP_ACT_ALLOW", args: [{ index: 1, value: 9, op: "SCMP_CMP_LE" }] },
        { names: ["getpid"], action: "SCMP_ACT_TRAP", args: [{ index: 0, value: 1, op: "SCMP_CMP_EQ" }] },
        { names: ["getpid"], action: "SCMP_ACT_ALLOW" },
      ],
    };
    const prog = compileSeccomp(profile, "x64");
    // The ERRNO rule equals the default action and is dropped (runc), so the LE rule matches 9.
    expect(run(prog, { nr: nr("kill"), arch: AuditArch.X86_64, args: [1n, 9n] })).toBe(ALLOW);
    expect(run(prog, { nr: nr("kill"), arch: AuditArch.X86_64, args: [1n, 10n] })).toBe(EPERM);
    expect(run(prog, { nr: nr("getpid"), arch: AuditArch.X86_64, args: [1n] })).toBe(ALLOW);
  });

  it("stays correct when rule blocks need long jumps", () => {
    // 24 syscalls with 8 conditional rules each: far more than 255 instructions per leaf.
    const names = [...syscallsOf("x86_64")].slice(0, 24);
    const syscalls = names.flatMap((name, i) =>
      Array.from({ length: 8 }, (_, j) => ({
        names: [name],
        action: j % 2 ? "SCMP_ACT_ALLOW" : "SCMP_ACT_TRAP",
        args: [
          { index: j % 6, value: i * 100 + j, op: "SCMP_CMP_EQ" },
          { index: (j + 1) % 6, value: j, op: "SCMP_CMP_GE" },
        ],
      })),
    );
    const profile: LinuxSeccomp = { defaultAction: "SCMP_ACT_KILL_PROCESS", syscalls };
    const prog = compileSeccomp(profile, "x64");
    verify(prog);
    expect(prog.byteLength / 8).toBeGreaterThan(1000);
    expect(decode(prog).some((i) => i.code === 0x05)).toBe(true);
    for (const [i, name] of names.entries()) {
      for (let j = 0; j < 8; j += 3) {
        const args = [0n, 0n, 0n, 0n, 0n, 0n];
        args[j % 6] = BigInt(i * 100 + j);
        args[(j + 1) % 6] = BigInt(j);
        const n = nr(name);
        expect(run(prog, { nr: n, arch: AuditArch.X86_64, args })).toBe(expected(profile, "x86_64", n, args));
        expect(run(prog, { nr: n, arch: AuditArch.X86_64 })).toBe(expected(profile, "x86_64", n));
      }
    }
  });

  it("rejects what runc rejects", () => {
    const bad = (s: Partial<LinuxSeccomp> & Record<string, unknown>) =>
      expect(() => compileSeccomp({ defaultAction: "SCMP_ACT_ERRNO", ...s } as LinuxSeccomp, "x64")).toThrow(
        expect.objectContaining({ code: "invalid-argument" }),
      );
    bad({ defaultAction: "SCMP_ACT_WHATEVER" });
    bad({ defaultAction: "SCMP_ACT_NOTIFY" });
    bad({ syscalls: [{ names: ["read"], action: "SCMP_ACT_NOTIFY" }] });
    bad({ syscalls: [{ names: [""], action: "SCMP_ACT_ALLOW" }] });
    bad({ syscalls: [{ names: [], action: "SCMP_ACT_ALLOW" }] });
    bad({
      syscalls: [
        { names: ["read"], action: "SCMP_ACT_ALLOW", args: [{ index: 6, value: 0, op: "SCMP_CMP_EQ" }] },
      ],
    });
    bad({
      syscalls: [
        { names: ["read"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: -1, op: "SCMP_CMP_EQ" }] },
      ],
    });
    bad({
      syscalls: [
        { names: ["read"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value: 1, op: "SCMP_CMP_XX" }] },
      ],
    });
    bad({ syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", errnoRet: 70000 }] });
    bad({ architectures: ["SCMP_ARCH_Z80"] });
    bad({ flags: ["SECCOMP_FILTER_FLAG_BOGUS"] });
    expect(() => compileSeccomp({ defaultAction: "SCMP_ACT_ALLOW" }, "ia32")).toThrow(
      expect.objectContaining({ code: "not-implemented" }),
    );
  });

  it("derives the load flags like runc (TSYNC accepted and dropped)", () => {
    expect(seccompFilterFlags({ defaultAction: "SCMP_ACT_ALLOW" })).toBe(0);
    expect(
      seccompFilterFlags({
        defaultAction: "SCMP_ACT_ALLOW",
        flags: ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
      }),
    ).toBe(2 | 4);
  });
});

function syscallsOf(abi: Abi): string[] {
  const names: string[] = [];
  for (let n = 0; n < 400; n++) {
    // Reverse lookup through the public function keeps the test off the generated tables.
    const name = reverse(abi).get(n);
    if (name !== undefined) names.push(name);
  }
  return names;
}

const reverseCache = new Map<Abi, Map<number, string>>();
function reverse(abi: Abi): Map<number, string> {
  let map = reverseCache.get(abi);
  if (map === undefined) {
    map = new Map();
    for (const name of dockerNames()) {
      const n = syscallNumber(name, abi);
      if (n !== undefined) map.set(abi === "x32" ? n & ~X32_SYSCALL_BIT : n, name);
    }
    reverseCache.set(abi, map);
  }
  return map;
}

function dockerNames(): string[] {
  return [...new Set((dockerProfile.syscalls ?? []).flatMap((s) => s.names))];
}

describe("Docker's default profile", () => {
  const prog = compileSeccomp(dockerProfile, "x64");

  it("compiles within the kernel's limits, using long jumps", () => {
    verify(prog);
    const insns = decode(prog);
    expect(insns.length).toBeGreaterThan(255);
    expect(insns.length).toBeLessThan(4096);
  });

  it("decides every syscall number on every listed ABI as the reference model does", () => {
    for (const abi of ["x86_64", "x32", "i386"] as const) {
      for (let n = 0; n < 600; n++) {
        const got = run(prog, { nr: nrOf(abi, n), arch: archOf(abi) });
        expect(got, `${abi} syscall ${n}`).toBe(expected(dockerProfile, abi, n));
      }
    }
  });

  it("allows what containers need and denies the dangerous calls", () => {
    const at = (name: string, args: bigint[] = [], abi: Abi = "x86_64") =>
      run(prog, { nr: nrOf(abi, nr(name, abi)), arch: archOf(abi), args });
    for (const name of [
      "execve",
      "openat",
      "read",
      "write",
      "mmap",
      "exit_group",
      "wait4",
      "rt_sigaction",
      "arch_prctl",
    ]) {
      expect(at(name), name).toBe(ALLOW);
    }
    for (const name of [
      "mount",
      "umount2",
      "unshare",
      "setns",
      "reboot",
      "kexec_load",
      "init_module",
      "bpf",
      "pivot_root",
      "keyctl",
    ]) {
      expect(at(name), name).toBe(EPERM);
    }
    expect(at("clone3")).toBe(ENOSYS);
    expect(at("clone", [0x01200011n])).toBe(ALLOW);
    expect(at("clone", [0x10000000n | 0x11n])).toBe(EPERM);
    expect(at("socket", [2n, 1n])).toBe(ALLOW);
    expect(at("socket", [40n, 1n])).toBe(EPERM);
    expect(at("personality", [0xffffffffn])).toBe(ALLOW);
    expect(at("personality", [1n])).toBe(EPERM);
    expect(at("socketcall", [], "i386")).toBe(ALLOW);
    expect(at("mount", [], "i386")).toBe(EPERM);
  });

  it("compiles for aarch64 with the generic syscall table", () => {
    const arm = compileSeccomp(
      { ...dockerProfile, architectures: ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"] },
      "arm64",
    );
    verify(arm);
    const at = (name: string) =>
      run(arm, { nr: nr(name as string, "aarch64" as Abi), arch: AuditArch.AARCH64 });
    expect(syscallNumber("read", "aarch64")).toBe(63);
    expect(syscallNumber("openat", "aarch64")).toBe(56);
    expect(syscallNumber("open", "aarch64")).toBeUndefined();
    expect(at("read")).toBe(ALLOW);
    expect(at("openat")).toBe(ALLOW);
    expect(at("mount")).toBe(EPERM);
    expect(run(arm, { nr: 63, arch: AuditArch.X86_64 })).toBe(KILL_THREAD);
    // 32-bit ARM has no table here: libseccomp's bad-arch action.
    expect(run(arm, { nr: 3, arch: AuditArch.ARM })).toBe(KILL_THREAD);
  });
});
