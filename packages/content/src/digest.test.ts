import { createHash } from "node:crypto";
import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import { Digester, digestAlgorithm, digestOf, isDigest, parseDigest } from "./digest.js";

const hex64 = "a".repeat(64);

describe("digests", () => {
  it("parses sha256 and sha512 strictly", () => {
    expect(parseDigest(`sha256:${hex64}`)).toEqual({ algorithm: "sha256", hex: hex64 });
    expect(parseDigest(`sha512:${"0".repeat(128)}`).algorithm).toBe("sha512");
    expect(digestAlgorithm(`sha512:${"0".repeat(128)}`)).toBe("sha512");
    for (const bad of [
      hex64,
      `sha256:${"a".repeat(63)}`,
      `sha256:${"A".repeat(64)}`,
      `sha256:${hex64} `,
      `sha512:${hex64}`,
      `sha384:${"a".repeat(96)}`,
      `SHA256:${hex64}`,
      `sha256:${"g".repeat(64)}`,
    ]) {
      expect(isDigest(bad)).toBe(false);
      let err: unknown;
      try {
        parseDigest(bad);
      } catch (e) {
        err = e;
      }
      expect(isInvalidArgument(err)).toBe(true);
      expect((err as Error).message).toContain(JSON.stringify(bad));
    }
    expect(isDigest(42)).toBe(false);
  });

  it("computes digests in one go and in pieces", () => {
    const want = `sha256:${createHash("sha256").update("hello world").digest("hex")}`;
    expect(digestOf("hello world")).toBe(want);
    expect(digestOf(new TextEncoder().encode("hello world"))).toBe(want);
    const d = new Digester();
    d.update(new TextEncoder().encode("hello "));
    expect(d.digest()).toBe(digestOf("hello "));
    d.update(new TextEncoder().encode("world"));
    expect(d.digest()).toBe(want);
    expect(d.length).toBe(11);
    d.reset();
    expect(d.digest()).toBe(digestOf(""));
    expect(new Digester("sha512").update(new Uint8Array([1])).digest()).toBe(
      digestOf(new Uint8Array([1]), "sha512"),
    );
    expect(() => new Digester("md5" as "sha256")).toThrow(/unsupported digest algorithm/);
  });
});
