import { lastErrno } from "./libc.js";
import { SystemError, type SystemErrorDetails } from "./system-error.js";

/**
 * Throws a {@link SystemError} for the current errno when `rc` is negative; returns `rc` otherwise.
 * Must be called right after the failed call, before anything else can overwrite errno.
 *
 * @internal
 */
export function checked(
  rc: number,
  syscall: string,
  details: Omit<SystemErrorDetails, "syscall" | "errno"> = {},
): number {
  if (rc < 0) throw new SystemError({ syscall, errno: lastErrno(), ...details });
  return rc;
}

/** Whether the errno of the call that just failed is `EINTR` (4 on every Linux arch). @internal */
export function interrupted(): boolean {
  return lastErrno() === 4;
}
