import { isDigest } from "@berth/content";
import { invalidArgument } from "@berth/errdefs";

/**
 * Cleans a path found inside an archive (a tar entry name, a link target, a path in
 * manifest.json) into `a/b/c` form. Throws `invalid-argument` for absolute paths, `..` components,
 * NUL bytes and empty paths: an archive must never make berth read or write outside of it
 * (the "tar slip" family of attacks).
 * @internal
 */
export function cleanArchivePath(raw: string, what: string): string {
  if (raw.includes("\0")) throw invalidArgument(`${what}: path ${JSON.stringify(raw)} contains a NUL byte`);
  if (raw.startsWith("/"))
    throw invalidArgument(`${what}: absolute path ${JSON.stringify(raw)} is not allowed`);
  const parts: string[] = [];
  for (const part of raw.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..")
      throw invalidArgument(`${what}: path ${JSON.stringify(raw)} escapes the archive with ".."`);
    parts.push(part);
  }
  if (parts.length === 0) throw invalidArgument(`${what}: empty path ${JSON.stringify(raw)}`);
  return parts.join("/");
}

/**
 * Resolves a symlink target relative to the directory of the link (both archive paths), refusing
 * targets that leave the archive. Throws `invalid-argument`.
 * @internal
 */
export function resolveLinkTarget(linkPath: string, target: string, what: string): string {
  if (target.startsWith("/"))
    throw invalidArgument(`${what}: absolute link target ${JSON.stringify(target)} is not allowed`);
  const parts = linkPath.split("/").slice(0, -1);
  for (const part of target.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (parts.length === 0)
        throw invalidArgument(`${what}: link target ${JSON.stringify(target)} escapes the archive`);
      parts.pop();
    } else parts.push(part);
  }
  if (parts.length === 0)
    throw invalidArgument(`${what}: link target ${JSON.stringify(target)} is the archive root`);
  return parts.join("/");
}

/** The blob path of a digest inside an OCI layout: `blobs/sha256/<hex>`. @internal */
export function blobPath(digest: string): string {
  const colon = digest.indexOf(":");
  return `blobs/${digest.slice(0, colon)}/${digest.slice(colon + 1)}`;
}

/**
 * The digest an OCI layout blob path names (`blobs/sha256/<hex>` → `sha256:<hex>`). Throws
 * `invalid-argument` when the path is not exactly that shape with a valid digest.
 * @internal
 */
export function digestFromBlobPath(path: string, what: string): string {
  const parts = path.split("/");
  const digest = parts.length === 3 ? `${parts[1]}:${parts[2]}` : "";
  if (parts[0] !== "blobs" || !isDigest(digest)) {
    throw invalidArgument(
      `${what}: ${JSON.stringify(path)} is not blobs/<algorithm>/<hex> with a valid digest`,
    );
  }
  return digest;
}
