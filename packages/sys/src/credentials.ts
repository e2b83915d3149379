import { invalidArgument } from "@berth/errdefs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";

/** "Leave unchanged" for an id argument of {@link setresuid} and {@link setresgid} (`(uid_t)-1`). */
export const UNCHANGED_ID = 0xffffffff;

function checkId(what: string, id: number): void {
  if (!Number.isInteger(id) || id < 0 || id > 0xffffffff)
    throw invalidArgument(`${what} ${id} is not a 32-bit id`);
}

/**
 * `setresuid(2)`: sets the real, effective and saved user ids ({@link UNCHANGED_ID} keeps one).
 * glibc's wrapper applies the change to every thread of the process (the kernel call alone is per
 * thread), so Node's worker threads cannot keep root behind the caller's back. Dropping from uid 0
 * clears the capability sets unless `PR_SET_KEEPCAPS` is on. Throws `invalid-argument` for an id
 * outside 0..2^32-1 and a `SystemError` (`EPERM`) when not allowed.
 */
export function setresuid(ruid: number, euid: number, suid: number): void {
  checkId("uid", ruid);
  checkId("uid", euid);
  checkId("uid", suid);
  checked(loadProcLibc().setresuid(ruid, euid, suid) as number, "setresuid", {
    hint: `ruid ${ruid} euid ${euid} suid ${suid}`,
  });
}

/** `setresgid(2)`, like {@link setresuid} for group ids (all threads, `SystemError` on failure). */
export function setresgid(rgid: number, egid: number, sgid: number): void {
  checkId("gid", rgid);
  checkId("gid", egid);
  checkId("gid", sgid);
  checked(loadProcLibc().setresgid(rgid, egid, sgid) as number, "setresgid", {
    hint: `rgid ${rgid} egid ${egid} sgid ${sgid}`,
  });
}

/**
 * `setgroups(2)`: replaces the supplementary group list (an empty list clears it), in every thread.
 * Throws `invalid-argument` for a bad id and a `SystemError` (`EPERM` without CAP_SETGID, `EINVAL`
 * beyond NGROUPS_MAX).
 */
export function setgroups(gids: readonly number[]): void {
  for (const gid of gids) checkId("gid", gid);
  const list = Uint32Array.from(gids);
  checked(loadProcLibc().setgroups(list.length, list) as number, "setgroups", {
    hint: `${gids.length} groups`,
  });
}

/** The real user id of the process (`getuid(2)`); never fails. */
export function getuid(): number {
  return loadProcLibc().getuid() as number;
}

/** The effective user id of the process (`geteuid(2)`); never fails. */
export function geteuid(): number {
  return loadProcLibc().geteuid() as number;
}

/** The real group id of the process (`getgid(2)`); never fails. */
export function getgid(): number {
  return loadProcLibc().getgid() as number;
}

/** The effective group id of the process (`getegid(2)`); never fails. */
export function getegid(): number {
  return loadProcLibc().getegid() as number;
}
