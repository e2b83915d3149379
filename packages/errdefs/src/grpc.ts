/**
 * Mapping between berth error codes and gRPC status codes, kept in its own subpath
 * (`@berth/errdefs/grpc`) so that core packages never depend on a transport. The numeric values are
 * those of the gRPC specification (google.rpc.Code), which is also what containerd's errgrpc uses.
 *
 * @packageDocumentation
 */
import { BerthError, ErrorCode, errorCode } from "./errors.js";

/** gRPC status codes as numbers, per the gRPC specification. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** One of the numeric values of {@link GrpcStatus}. */
export type GrpcStatus = (typeof GrpcStatus)[keyof typeof GrpcStatus];

const toGrpc: Record<ErrorCode, GrpcStatus> = {
  [ErrorCode.Unknown]: GrpcStatus.UNKNOWN,
  [ErrorCode.InvalidArgument]: GrpcStatus.INVALID_ARGUMENT,
  [ErrorCode.NotFound]: GrpcStatus.NOT_FOUND,
  [ErrorCode.AlreadyExists]: GrpcStatus.ALREADY_EXISTS,
  [ErrorCode.FailedPrecondition]: GrpcStatus.FAILED_PRECONDITION,
  [ErrorCode.Unavailable]: GrpcStatus.UNAVAILABLE,
  [ErrorCode.NotImplemented]: GrpcStatus.UNIMPLEMENTED,
  [ErrorCode.Aborted]: GrpcStatus.ABORTED,
  [ErrorCode.ResourceExhausted]: GrpcStatus.RESOURCE_EXHAUSTED,
  [ErrorCode.PermissionDenied]: GrpcStatus.PERMISSION_DENIED,
  [ErrorCode.Canceled]: GrpcStatus.CANCELLED,
  [ErrorCode.DeadlineExceeded]: GrpcStatus.DEADLINE_EXCEEDED,
  [ErrorCode.DataLoss]: GrpcStatus.DATA_LOSS,
  [ErrorCode.OutOfRange]: GrpcStatus.OUT_OF_RANGE,
  [ErrorCode.Unauthenticated]: GrpcStatus.UNAUTHENTICATED,
  [ErrorCode.Internal]: GrpcStatus.INTERNAL,
};

const fromGrpc = new Map<number, ErrorCode>(
  Object.entries(toGrpc).map(([code, status]) => [status, code as ErrorCode]),
);

/** Returns the gRPC status code for any thrown value (UNKNOWN for errors without a berth code). */
export function grpcStatusOf(err: unknown): GrpcStatus {
  return toGrpc[errorCode(err)];
}

/**
 * Rebuilds a {@link BerthError} from a gRPC status code and message received from a peer. Status
 * OK is not an error and is rejected with `invalid-argument`.
 */
export function fromGrpcStatus(status: number, message: string): BerthError {
  if (status === GrpcStatus.OK) {
    return new BerthError(ErrorCode.InvalidArgument, "gRPC status OK is not an error");
  }
  return new BerthError(fromGrpc.get(status) ?? ErrorCode.Unknown, message);
}
