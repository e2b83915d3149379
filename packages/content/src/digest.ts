import { createHash, type Hash } from "node:crypto";
import { invalidArgument } from "@berth/errdefs";
import type { Digest } from "./types.js";

/** The digest algorithms berth accepts (OCI image-spec `descriptor.md`, registered algorithms). */
export const DigestAlgorithm = {
  SHA256: "sha256",
  SHA512: "sha512",
} as const;

/** One of the values of {@link DigestAlgorithm}. */
export type DigestAlgorithm = (typeof DigestAlgorithm)[keyof typeof DigestAlgorithm];

/** Length of the lowercase hex encoding of each algorithm's output. */
const hexLength: Readonly<Record<DigestAlgorithm, number>> = { sha256: 64, sha512: 128 };

/** A digest split into its parts. */
export interface ParsedDigest {
  readonly algorithm: DigestAlgorithm;
  /** The lowercase hex encoding, of exactly the algorithm's length. */
  readonly hex: string;
}

const hexRe = /^[0-9a-f]+$/;

function isAlgorithm(s: string): s is DigestAlgorithm {
  return s === DigestAlgorithm.SHA256 || s === DigestAlgorithm.SHA512;
}

/**
 * Splits and validates a digest. The form is strict, as the image spec requires for the registered
 * algorithms: `sha256:` + 64 or `sha512:` + 128 lowercase hex characters, nothing around it.
 * Throws `invalid-argument` naming the digest and what is wrong with it.
 */
export function parseDigest(digest: string): ParsedDigest {
  if (typeof digest !== "string") throw invalidArgument(`digest must be a string, got ${typeof digest}`);
  const colon = digest.indexOf(":");
  if (colon < 0) throw invalidArgument(`invalid digest ${JSON.stringify(digest)}: missing "<algorithm>:"`);
  const algorithm = digest.slice(0, colon);
  const hex = digest.slice(colon + 1);
  if (!isAlgorithm(algorithm)) {
    throw invalidArgument(
      `invalid digest ${JSON.stringify(digest)}: unsupported algorithm ${JSON.stringify(algorithm)} (want sha256 or sha512)`,
    );
  }
  if (hex.length !== hexLength[algorithm] || !hexRe.test(hex)) {
    throw invalidArgument(
      `invalid digest ${JSON.stringify(digest)}: ${algorithm} needs ${hexLength[algorithm]} lowercase hex characters`,
    );
  }
  return { algorithm, hex };
}

/** True when `value` is a digest {@link parseDigest} accepts. Never throws. */
export function isDigest(value: unknown): value is Digest {
  if (typeof value !== "string") return false;
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Returns the algorithm of `digest`, validating it. Throws `invalid-argument` like
 * {@link parseDigest}.
 */
export function digestAlgorithm(digest: Digest): DigestAlgorithm {
  return parseDigest(digest).algorithm;
}

function checkAlgorithm(algorithm: string): DigestAlgorithm {
  if (!isAlgorithm(algorithm)) {
    throw invalidArgument(
      `unsupported digest algorithm ${JSON.stringify(algorithm)} (want sha256 or sha512)`,
    );
  }
  return algorithm;
}

/** The digest of `bytes` (a string is hashed as UTF-8). Throws `invalid-argument` for an unknown algorithm. */
export function digestOf(bytes: Uint8Array | string, algorithm: DigestAlgorithm = "sha256"): Digest {
  const alg = checkAlgorithm(algorithm);
  return `${alg}:${createHash(alg).update(bytes).digest("hex")}`;
}

/**
 * A running digest over bytes fed in pieces. {@link Digester.digest} may be called at any point and
 * does not end the computation, so a writer can report its digest so far and keep going.
 */
export class Digester {
  /** The algorithm this digester computes. */
  readonly algorithm: DigestAlgorithm;
  #hash: Hash;
  #length = 0;

  /** Throws `invalid-argument` for an unknown algorithm. */
  constructor(algorithm: DigestAlgorithm = "sha256") {
    this.algorithm = checkAlgorithm(algorithm);
    this.#hash = createHash(this.algorithm);
  }

  /** Adds `chunk` to the digest. */
  update(chunk: Uint8Array): this {
    this.#hash.update(chunk);
    this.#length += chunk.byteLength;
    return this;
  }

  /** How many bytes were fed so far. */
  get length(): number {
    return this.#length;
  }

  /** The digest of everything fed so far; the digester stays usable. */
  digest(): Digest {
    return `${this.algorithm}:${this.#hash.copy().digest("hex")}`;
  }

  /** Forgets everything fed so far. */
  reset(): void {
    this.#hash = createHash(this.algorithm);
    this.#length = 0;
  }
}
