import { constants } from "node:os";
import { BerthError, type ErrorCode } from "@berth/errdefs";

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value, name]),
);

/** Returns the symbolic name (`ENOENT`) of a positive errno number, or `E<number>` if unknown. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

// One errno → code table for every syscall failure berth reports.
const errnoToCode: Record<string, ErrorCode> = {
  ENOENT: "not-found",
  ESRCH: "not-found",
  ENODEV: "not-found",
  EEXIST: "already-exists",
  ENOTEMPTY: "failed-precondition",
  EBUSY: "unavailable",
  EAGAIN: "unavailable",
  EWOULDBLOCK: "unavailable",
  EINTR: "aborted",
  EINVAL: "invalid-argument",
  ENAMETOOLONG: "invalid-argument",
  ENOTDIR: "invalid-argument",
  EISDIR: "invalid-argument",
  EBADF: "invalid-argument",
  EPERM: "permission-denied",
  EACCES: "permission-denied",
  EROFS: "permission-denied",
  ENOSPC: "resource-exhausted",
  ENOMEM: "resource-exhausted",
  EMFILE: "resource-exhausted",
  ENFILE: "resource-exhausted",
  ENOSYS: "not-implemented",
  EOPNOTSUPP: "not-implemented",
  ENOTSUP: "not-implemented",
};

/** What {@link SystemError} records about the failed call. */
export interface SystemErrorDetails {
  /** The libc function that failed, e.g. `flock`. */
  readonly syscall: string;
  /** The positive errno number. */
  readonly errno: number;
  /** The path the call acted on, when there was one. */
  readonly path?: string;
  /** The file descriptor the call acted on, when there was one. */
  readonly fd?: number;
  /** A short hint that explains the errno in this context, appended in parentheses. */
  readonly hint?: string;
}

/**
 * A failed system call. `code` is the berth error code derived from the errno, `errnoName` the
 * symbolic errno (`ENOENT`); the message names the call and its object:
 * `flock /var/lib/berth/content/ingest/x/lock: EWOULDBLOCK (held by another writer)`.
 */
export class SystemError extends BerthError {
  /** The libc function that failed. */
  readonly syscall: string;
  /** The symbolic errno, e.g. `ENOENT`. */
  readonly errnoName: string;
  /** The positive errno number. */
  readonly errno: number;
  /** The path the call acted on, if any. */
  readonly path: string | undefined;
  /** The file descriptor the call acted on, if any. */
  readonly fd: number | undefined;

  constructor(details: SystemErrorDetails) {
    const name = errnoName(details.errno);
    const object = details.path ?? (details.fd === undefined ? "" : `fd ${details.fd}`);
    const hint = details.hint ? ` (${details.hint})` : "";
    super(errnoToCode[name] ?? "unknown", `${details.syscall}${object ? ` ${object}` : ""}: ${name}${hint}`);
    this.name = "SystemError";
    this.syscall = details.syscall;
    this.errno = details.errno;
    this.errnoName = name;
    this.path = details.path;
    this.fd = details.fd;
  }
}
