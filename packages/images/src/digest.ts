import { createHash } from "node:crypto";
import type { Digest } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

/** Hex length of each digest algorithm berth accepts (the same set as the content store). */
const algorithmHexLength: Readonly<Record<string, number>> = { sha256: 64, sha512: 128 };

/**
 * True when `value` is a digest berth can verify: `sha256:` followed by 64 lowercase hex digits, or
 * `sha512:` followed by 128. The image spec's general grammar allows other algorithms, but content
 * berth cannot verify is content it must not trust, so they are rejected everywhere.
 */
export function isDigest(value: unknown): value is Digest {
  if (typeof value !== "string") return false;
  const colon = value.indexOf(":");
  if (colon <= 0) return false;
  const length = algorithmHexLength[value.slice(0, colon)];
  const hex = value.slice(colon + 1);
  return length !== undefined && hex.length === length && /^[0-9a-f]+$/.test(hex);
}

/**
 * Returns `value` as a {@link Digest} or throws `invalid-argument` naming `what` (e.g. `"layer 2 of
 * manifest sha256:…"`) and the offending value.
 */
export function validateDigest(value: unknown, what: string): Digest {
  if (!isDigest(value)) {
    throw invalidArgument(
      `${what}: invalid digest ${JSON.stringify(value)} (want sha256:<64 hex> or sha512:<128 hex>)`,
    );
  }
  return value;
}

/** The algorithm part of a valid digest (`sha256`). */
export function digestAlgorithm(digest: Digest): string {
  return digest.slice(0, digest.indexOf(":"));
}

/** The hex part of a valid digest. */
export function digestHex(digest: Digest): string {
  return digest.slice(digest.indexOf(":") + 1);
}

/** Computes the digest of `bytes` with `algorithm` (default sha256). */
export function digestOf(bytes: Uint8Array, algorithm = "sha256"): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest("hex")}`;
}
