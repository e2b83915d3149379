import { createHash } from "node:crypto";
import type { Digest } from "@berth/content";
import { validateDigest } from "./digest.js";

/**
 * Computes the chain IDs of a stack of layers from their diffIDs (image-spec `config.md`,
 * "Layer ChainID"): `ChainID(L0) = DiffID(L0)` and `ChainID(L0|…|Ln) = SHA256(ChainID(L0|…|Ln-1) +
 * " " + DiffID(Ln))`. Snapshotters key committed layers by chain ID, so an image that shares its
 * first layers with another shares their snapshots. Throws `invalid-argument` for a malformed diffID.
 */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const [i, diffId] of diffIds.entries()) {
    validateDigest(diffId, `diff_ids[${i}]`);
    const previous = out[i - 1];
    out.push(
      previous === undefined
        ? diffId
        : `sha256:${createHash("sha256").update(`${previous} ${diffId}`).digest("hex")}`,
    );
  }
  return out;
}
