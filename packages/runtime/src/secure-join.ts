import { lstatSync, readlinkSync } from "node:fs";
import { invalidArgument } from "@berth/errdefs";

const MAX_SYMLINKS = 255;

/**
 * Joins `unsafePath` onto `root` the way the path would resolve if `root` were `/`: `..` never
 * climbs above `root`, and every symlink met on the way is read and resolved again inside `root`
 * (an absolute target starts over at `root`), so the result never names anything outside `root`.
 * Components that do not exist yet are appended as they are, which is what a caller that goes on
 * to create them needs. `root` must be absolute and already resolved; the result is absolute.
 *
 * This is the check that keeps a container image from redirecting a mount destination
 * (`/proc` → symlink to `/etc` on the host) out of its rootfs (CVE-2015-3627 class). The result
 * is still only as good as the moment it was computed: the caller must perform the mount before
 * the container's own processes run, which the runtime guarantees.
 *
 * Throws `invalid-argument` when more than 255 symlinks are met (a loop).
 */
export function secureJoin(root: string, unsafePath: string): string {
  if (!root.startsWith("/")) throw invalidArgument(`secureJoin: root ${root} is not absolute`);
  const base = root === "/" ? "" : root.replace(/\/+$/, "");
  // The components still to walk, first one last (a stack), and the resolved ones so far.
  const pending = unsafePath.split("/").reverse();
  const resolved: string[] = [];
  let links = 0;
  while (pending.length > 0) {
    const part = pending.pop() as string;
    if (part === "" || part === ".") continue;
    if (part === "..") {
      resolved.pop();
      continue;
    }
    const candidate = `${base}/${[...resolved, part].join("/")}`;
    let isLink = false;
    try {
      isLink = lstatSync(candidate).isSymbolicLink();
    } catch {
      // Missing (or unreadable): take the rest literally, the caller will create it.
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    links += 1;
    if (links > MAX_SYMLINKS)
      throw invalidArgument(`secureJoin: too many symlinks resolving ${unsafePath} in ${root}`);
    const target = readlinkSync(candidate);
    if (target.startsWith("/")) resolved.length = 0;
    pending.push(...target.split("/").reverse());
  }
  return resolved.length === 0 ? base || "/" : `${base}/${resolved.join("/")}`;
}
