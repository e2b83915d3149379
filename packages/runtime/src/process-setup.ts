/**
 * The container process's credentials, limits and environment, applied by the init (or the exec
 * helper) just before it execs. Synchronous, main thread only; see rootfs.ts for why.
 *
 * @internal
 */
import { accessSync, constants, statSync, writeFileSync } from "node:fs";
import { invalidArgument, notFound, permissionDenied } from "@berth/errdefs";
import {
  CloseRangeFlag,
  capset,
  closeRange,
  dropBoundingSet,
  execve,
  Prctl,
  prctl,
  resetSignalsForExec,
  seccompSetFilter,
  setAmbient,
  setBlocking,
  setCloexec,
  setgroups,
  setresgid,
  setresuid,
  setrlimit,
  umask,
} from "@berth/sys";
import { type CapabilityMasks, parseCapabilities } from "./capabilities.js";
import { compileSeccomp, seccompFilterFlags } from "./seccomp/compile.js";
import type { LinuxSeccomp, Process } from "./spec.js";

const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * Finds `args[0]` the way runc does: as given when it holds a `/`, else in the directories of
 * the process's own PATH (not the runtime's), resolved in the current root. Throws `not-found`
 * or `permission-denied` naming the program.
 */
export function lookPath(program: string, env: readonly string[]): string {
  const check = (path: string): boolean => {
    try {
      const st = statSync(path);
      if (st.isDirectory()) return false;
      accessSync(path, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (program.includes("/")) {
    try {
      statSync(program);
    } catch {
      throw notFound(`exec: ${program}: no such file or directory`);
    }
    if (!check(program)) throw permissionDenied(`exec: ${program}: permission denied`);
    return program;
  }
  const pathVar = env.find((e) => e.startsWith("PATH="))?.slice(5) ?? DEFAULT_PATH;
  for (const dir of pathVar.split(":")) {
    const candidate = `${dir === "" ? "." : dir}/${program}`;
    if (check(candidate)) return candidate;
  }
  throw notFound(`exec: ${JSON.stringify(program)}: executable file not found in $PATH`);
}

/** What {@link prepareProcess} resolved, for {@link execProcess}. */
export interface PreparedProcess {
  readonly path: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly noNewPrivileges: boolean;
  readonly capabilities: CapabilityMasks;
}

/**
 * Applies rlimits, oom_score_adj, groups, gid, uid (keeping the capabilities through the switch),
 * the five capability sets, umask and cwd (checked as the target user), and resolves the program.
 * Everything that can fail for a reason in the config fails here, before the container counts as
 * created. Throws the failing call's error.
 */
export function prepareProcess(proc: Process): PreparedProcess {
  const env = [...(proc.env ?? [])];
  if (!env.some((e) => e.startsWith("HOME="))) env.push(proc.user.uid === 0 ? "HOME=/root" : "HOME=/");
  const args = proc.args ?? [];
  const program = args[0];
  if (program === undefined) throw invalidArgument("process.args is empty");
  for (const r of proc.rlimits ?? []) setrlimit(r.type, BigInt(r.soft), BigInt(r.hard));
  if (proc.oomScoreAdj !== undefined) writeFileSync("/proc/self/oom_score_adj", String(proc.oomScoreAdj));
  const caps = parseCapabilities(proc.capabilities);
  // The bounding set can only shrink while we still hold CAP_SETPCAP, i.e. before the uid switch.
  dropBoundingSet(caps.bounding);
  // KEEPCAPS keeps the permitted set across setresuid away from 0; capset then sets what the
  // spec asks for exactly (effective is cleared by the switch either way).
  prctl(Prctl.PR_SET_KEEPCAPS, 1);
  setgroups(proc.user.additionalGids ?? []);
  setresgid(proc.user.gid, proc.user.gid, proc.user.gid);
  setresuid(proc.user.uid, proc.user.uid, proc.user.uid);
  prctl(Prctl.PR_SET_KEEPCAPS, 0);
  capset({ effective: caps.effective, permitted: caps.permitted, inheritable: caps.inheritable });
  setAmbient(caps.ambient & caps.permitted & caps.inheritable);
  umask(proc.user.umask ?? 0o022);
  try {
    process.chdir(proc.cwd);
  } catch (cause) {
    throw invalidArgument(
      `process.cwd ${proc.cwd}: cannot enter it as uid ${proc.user.uid}: ${String(cause)}`,
      {
        cause,
      },
    );
  }
  if (process.cwd() !== proc.cwd.replace(/(.)\/+$/, "$1"))
    throw invalidArgument(`process.cwd ${proc.cwd} resolved to ${process.cwd()}`);
  const path = lookPath(program, env);
  return { path, args, env, noNewPrivileges: proc.noNewPrivileges === true, capabilities: caps };
}

/**
 * The last steps, none of which may leave anything of Node behind in the container: no new
 * privileges, the seccomp filter (compiled by the caller), default signal dispositions and an
 * empty mask, close-on-exec on every fd above 2 plus `preserveFds`, blocking stdio that survives
 * exec, then execve. Returns only by throwing.
 */
export function execProcess(
  p: PreparedProcess,
  preserveFds: number,
  seccomp: CompiledSeccomp | undefined,
): never {
  if (p.noNewPrivileges) prctl(Prctl.PR_SET_NO_NEW_PRIVS, 1);
  for (let fd = 0; fd <= 2 + preserveFds; fd++) {
    try {
      setCloexec(fd, false);
      if (fd <= 2) setBlocking(fd, true);
    } catch {
      // A closed stdio fd stays closed, like runc with a missing stream.
    }
  }
  // CLOEXEC rather than close: Node still runs until execve, and its own fds (epoll, signal pipe,
  // koffi) must stay valid until then; the kernel closes them all at exec.
  closeRange(3 + preserveFds, 0xffffffff, CloseRangeFlag.CLOEXEC);
  resetSignalsForExec();
  // Seccomp last: the filter may forbid what Node needs to get here.
  if (seccomp !== undefined) seccompSetFilter(seccomp.program, seccomp.flags);
  return execve(p.path, p.args, p.env);
}

/** A compiled seccomp filter and the flags to load it with. */
export interface CompiledSeccomp {
  readonly program: Uint8Array;
  readonly flags: number;
}

/** Compiles `linux.seccomp` (undefined when the spec has none). Throws the compiler's errors. */
export function compileSeccompFor(seccomp: LinuxSeccomp | undefined): CompiledSeccomp | undefined {
  if (seccomp === undefined) return undefined;
  return { program: compileSeccomp(seccomp), flags: seccompFilterFlags(seccomp) };
}
