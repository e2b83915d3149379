/**
 * The error codes berth uses across every package. They mirror containerd's errdefs, so that a
 * code survives the trip through gRPC and back unchanged.
 */
export const ErrorCode = {
  Unknown: "unknown",
  InvalidArgument: "invalid-argument",
  NotFound: "not-found",
  AlreadyExists: "already-exists",
  FailedPrecondition: "failed-precondition",
  Unavailable: "unavailable",
  NotImplemented: "not-implemented",
  Aborted: "aborted",
  ResourceExhausted: "resource-exhausted",
  PermissionDenied: "permission-denied",
  Canceled: "canceled",
  DeadlineExceeded: "deadline-exceeded",
  DataLoss: "data-loss",
  OutOfRange: "out-of-range",
  Unauthenticated: "unauthenticated",
  Internal: "internal",
} as const;

/** One of the string values of {@link ErrorCode}. */
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

const knownCodes: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/** Options accepted by {@link BerthError}: the underlying error, if any, is kept as `cause`. */
export interface BerthErrorOptions {
  readonly cause?: unknown;
}

/**
 * The base class of every error berth throws on purpose. Callers branch on {@link BerthError.code}
 * through the guards ({@link isNotFound} and friends), never on the class or the message, so that
 * errors keep their meaning after crossing a process or a package boundary.
 */
export class BerthError extends Error {
  /** The machine-readable category of the failure. */
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: BerthErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = "BerthError";
    this.code = code;
  }
}

function make(code: ErrorCode) {
  return (message: string, options?: BerthErrorOptions): BerthError => new BerthError(code, message, options);
}

/** Creates an `invalid-argument` error: the caller passed something malformed. */
export const invalidArgument = make(ErrorCode.InvalidArgument);
/** Creates a `not-found` error: the named object does not exist. */
export const notFound = make(ErrorCode.NotFound);
/** Creates an `already-exists` error: the object to create is there already. */
export const alreadyExists = make(ErrorCode.AlreadyExists);
/** Creates a `failed-precondition` error: the system is not in a state that allows the operation. */
export const failedPrecondition = make(ErrorCode.FailedPrecondition);
/** Creates an `unavailable` error: the resource is busy or unreachable; retrying later may work. */
export const unavailable = make(ErrorCode.Unavailable);
/** Creates a `not-implemented` error. */
export const notImplemented = make(ErrorCode.NotImplemented);
/** Creates an `aborted` error: the operation was cut short by a conflict. */
export const aborted = make(ErrorCode.Aborted);
/** Creates a `resource-exhausted` error: a size or count limit was hit. */
export const resourceExhausted = make(ErrorCode.ResourceExhausted);
/** Creates a `permission-denied` error. */
export const permissionDenied = make(ErrorCode.PermissionDenied);
/** Creates an `unauthenticated` error: credentials were missing or refused. */
export const unauthenticated = make(ErrorCode.Unauthenticated);
/** Creates a `canceled` error: the caller gave up (an AbortSignal fired). */
export const canceled = make(ErrorCode.Canceled);
/** Creates a `data-loss` error: stored or received bytes are not what they claim to be. */
export const dataLoss = make(ErrorCode.DataLoss);
/** Creates an `internal` error: a bug or an unexpected state. */
export const internal = make(ErrorCode.Internal);

/**
 * Returns the berth error code of any thrown value: the `code` of a {@link BerthError} (or of any
 * object carrying a known code string), otherwise `unknown`.
 */
export function errorCode(err: unknown): ErrorCode {
  if (typeof err === "object" && err !== null && "code" in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === "string" && knownCodes.has(code)) return code as ErrorCode;
  }
  return ErrorCode.Unknown;
}

function guard(code: ErrorCode) {
  return (err: unknown): boolean => errorCode(err) === code;
}

/** True when `err` carries the `invalid-argument` code. */
export const isInvalidArgument = guard(ErrorCode.InvalidArgument);
/** True when `err` carries the `not-found` code. */
export const isNotFound = guard(ErrorCode.NotFound);
/** True when `err` carries the `already-exists` code. */
export const isAlreadyExists = guard(ErrorCode.AlreadyExists);
/** True when `err` carries the `failed-precondition` code. */
export const isFailedPrecondition = guard(ErrorCode.FailedPrecondition);
/** True when `err` carries the `unavailable` code. */
export const isUnavailable = guard(ErrorCode.Unavailable);
/** True when `err` carries the `not-implemented` code. */
export const isNotImplemented = guard(ErrorCode.NotImplemented);
/** True when `err` carries the `aborted` code. */
export const isAborted = guard(ErrorCode.Aborted);
/** True when `err` carries the `resource-exhausted` code. */
export const isResourceExhausted = guard(ErrorCode.ResourceExhausted);
/** True when `err` carries the `permission-denied` code. */
export const isPermissionDenied = guard(ErrorCode.PermissionDenied);
/** True when `err` carries the `unauthenticated` code. */
export const isUnauthenticated = guard(ErrorCode.Unauthenticated);
/** True when `err` carries the `canceled` code. */
export const isCanceled = guard(ErrorCode.Canceled);
/** True when `err` carries the `data-loss` code. */
export const isDataLoss = guard(ErrorCode.DataLoss);

/** Returns the message of any thrown value, for logs and CLI output. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
