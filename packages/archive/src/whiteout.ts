import { invalidArgument } from "@berth/errdefs";

/**
 * The OCI whiteout names (image-spec `layer.md`, "Whiteouts") and the overlayfs markers they become
 * inside an upperdir, declared once for apply and diff.
 */
export const Whiteout = {
  /** `.wh.<name>` deletes `<name>` of the lower layers. */
  prefix: ".wh.",
  /** `.wh..wh..opq` in a directory hides everything the lower layers have in it. */
  opaque: ".wh..wh..opq",
  /** Names starting with `.wh..wh.` are reserved for such markers (AUFS used `.wh..wh.plnk` etc.). */
  metaPrefix: ".wh..wh.",
  /** The xattr overlayfs reads to treat an upper directory as opaque; its value is `y`. */
  overlayOpaqueXattr: "trusted.overlay.opaque",
  /** The prefix of every xattr overlayfs interprets (whiteouts, redirects, origin, metacopy). */
  overlayXattrPrefix: "trusted.overlay.",
} as const;

/** What a base name means to the layer rules (see {@link classifyWhiteout}). */
export type WhiteoutKind =
  | { readonly kind: "opaque" }
  | { readonly kind: "remove"; readonly target: string }
  | { readonly kind: "meta" };

/**
 * Classifies the last component of a layer entry's name: undefined for an ordinary name,
 * `opaque` for `.wh..wh..opq`, `remove` with the name it deletes for `.wh.<name>`, `meta` for any
 * other reserved `.wh..wh.` name (ignored by appliers, as Docker does with AUFS's hard-link markers).
 *
 * Throws `invalid-argument` (naming `entry`) for a whiteout that names nothing or climbs out of its
 * directory: a bare `.wh.`, `.wh..` and `.wh...` — containerd rejects the same names.
 */
export function classifyWhiteout(base: string, entry: string): WhiteoutKind | undefined {
  if (!base.startsWith(Whiteout.prefix)) return undefined;
  if (base === Whiteout.opaque) return { kind: "opaque" };
  if (base.startsWith(Whiteout.metaPrefix)) return { kind: "meta" };
  const target = base.slice(Whiteout.prefix.length);
  if (target === "" || target === "." || target === "..") {
    throw invalidArgument(
      `layer entry ${JSON.stringify(entry)}: whiteout ${JSON.stringify(base)} names no file`,
    );
  }
  return { kind: "remove", target };
}
