/**
 * Error classes with a string `code` shared by every berth package, and guards that test the code
 * rather than the class. gRPC status mapping lives in the `@berth/errdefs/grpc` subpath.
 *
 * @packageDocumentation
 */

export type { BerthErrorOptions } from "./errors.js";
export {
  aborted,
  alreadyExists,
  BerthError,
  canceled,
  dataLoss,
  ErrorCode,
  errorCode,
  errorMessage,
  failedPrecondition,
  internal,
  invalidArgument,
  isAborted,
  isAlreadyExists,
  isCanceled,
  isDataLoss,
  isFailedPrecondition,
  isInvalidArgument,
  isNotFound,
  isNotImplemented,
  isPermissionDenied,
  isResourceExhausted,
  isUnauthenticated,
  isUnavailable,
  notFound,
  notImplemented,
  permissionDenied,
  resourceExhausted,
  unauthenticated,
  unavailable,
} from "./errors.js";
