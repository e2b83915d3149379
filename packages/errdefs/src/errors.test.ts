import { describe, expect, it } from "vitest";
import { fromGrpcStatus, GrpcStatus, grpcStatusOf } from "./grpc.js";
import { BerthError, ErrorCode, errorCode, isNotFound, notFound, unavailable } from "./index.js";

describe("errdefs", () => {
  it("guards check the code, not the class", () => {
    const plain = Object.assign(new Error("x"), { code: "not-found" });
    expect(isNotFound(plain)).toBe(true);
    expect(isNotFound(notFound("blob sha256:abc"))).toBe(true);
    expect(isNotFound(unavailable("busy"))).toBe(false);
    expect(isNotFound(new Error("ENOENT"))).toBe(false);
  });

  it("keeps the cause", () => {
    const cause = new Error("inner");
    const err = notFound("outer", { cause });
    expect(err.cause).toBe(cause);
    expect(err).toBeInstanceOf(BerthError);
    expect(err.message).toBe("outer");
  });

  it("maps unknown values to unknown", () => {
    expect(errorCode("boom")).toBe(ErrorCode.Unknown);
    expect(errorCode({ code: "ENOENT" })).toBe(ErrorCode.Unknown);
  });

  it("round-trips through gRPC status codes", () => {
    for (const code of Object.values(ErrorCode)) {
      const status = grpcStatusOf(new BerthError(code, "m"));
      expect(fromGrpcStatus(status, "m").code).toBe(code);
    }
    expect(grpcStatusOf(notFound("x"))).toBe(GrpcStatus.NOT_FOUND);
    expect(fromGrpcStatus(GrpcStatus.OK, "").code).toBe(ErrorCode.InvalidArgument);
  });
});
