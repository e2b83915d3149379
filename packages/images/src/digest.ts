import { type Digest, isDigest } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

/**
 * Returns `value` as a {@link Digest} or throws `invalid-argument` naming `what` (e.g. `"layer 2 of
 * manifest sha256:…"`) and the offending value. Only digests berth can verify (sha256, sha512) are
 * accepted: content berth cannot verify is content it must not trust.
 */
export function validateDigest(value: unknown, what: string): Digest {
  if (!isDigest(value)) {
    throw invalidArgument(
      `${what}: invalid digest ${JSON.stringify(value)} (want sha256:<64 hex> or sha512:<128 hex>)`,
    );
  }
  return value;
}
