import { Dirent, existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { release } from "node:os";
import { join } from "node:path";
import { failedPrecondition, notImplemented } from "@berth/errdefs";
import { mountOne, unmount } from "@berth/sys";

/**
 * Whether the running kernel knows overlayfs: it is listed in `/proc/filesystems` (built in, or
 * its module loaded). A module that is not loaded yet does not show up; the probe mount of
 * {@link checkOverlaySupport} loads it through the kernel's module autoloading, so callers should
 * not treat `false` alone as final.
 */
export async function overlayInProcFilesystems(): Promise<boolean> {
  try {
    const text = await readFile("/proc/filesystems", "utf8");
    return text.split("\n").some((line) => line.split("\t").at(-1)?.trim() === "overlay");
  } catch {
    return false;
  }
}

/**
 * Whether the kernel has overlay's `index` feature, so that `index=off` is a known option.
 * containerd passes `index=off` whenever `/sys/module/overlay/parameters/index` exists: with the
 * index on, a lower layer shared by two overlay mounts (as image layers are) makes the second
 * mount fail with ESTALE when the first one copied up a hard-linked file.
 */
export function supportsIndex(): boolean {
  return existsSync("/sys/module/overlay/parameters/index");
}

/**
 * Whether this process runs in the initial user namespace (uid_map `0 0 4294967295`). Outside
 * it, overlayfs on Linux ≥ 5.11 stores its whiteouts and opaque markers as `user.overlay.*`
 * xattrs and must be mounted with `userxattr`.
 */
export async function inInitialUserNamespace(): Promise<boolean> {
  try {
    const text = await readFile("/proc/self/uid_map", "utf8");
    const fields = text.trim().split(/\s+/);
    return fields.length === 3 && fields[0] === "0" && fields[1] === "0" && fields[2] === "4294967295";
  } catch {
    // No /proc/self/uid_map: a kernel without user namespaces, so this is the initial one.
    return true;
  }
}

/**
 * Whether the filesystem holding `dir` reports file types in directory entries (d_type). overlayfs
 * needs d_type to find whiteouts quickly; without it (xfs formatted with `ftype=0`) merged
 * directories list deleted files. Creates and removes a scratch directory inside `dir`.
 *
 * Node's `readdir({ withFileTypes: true })` hides DT_UNKNOWN by calling lstat for such entries
 * and returning a different Dirent subclass; an entry whose prototype is not `Dirent.prototype`
 * therefore came from a directory entry without a type.
 */
export async function supportsDType(dir: string): Promise<boolean> {
  const scratch = await mkdtemp(join(dir, "d_type-check-"));
  try {
    await writeFile(join(scratch, "file"), "");
    await mkdir(join(scratch, "dir"));
    const entries = await readdir(scratch, { withFileTypes: true });
    return entries.every((entry) => Object.getPrototypeOf(entry) === Dirent.prototype);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Mounts a throwaway overlay (two lowers, an upper and a work directory inside `dir`) and
 * unmounts it again: the one reliable test that overlayfs works on the filesystem holding `dir`
 * with `options` (overlay on overlay, or on some network filesystems, does not). Returns the
 * error the mount failed with, or undefined when it worked.
 */
export async function probeOverlayMount(dir: string, options: readonly string[]): Promise<Error | undefined> {
  const scratch = await mkdtemp(join(dir, "overlay-check-"));
  const merged = join(scratch, "merged");
  try {
    for (const sub of ["lower1", "lower2", "upper", "work", "merged"]) await mkdir(join(scratch, sub));
    mountOne(
      {
        type: "overlay",
        source: "overlay",
        options: [
          ...options,
          `lowerdir=${join(scratch, "lower2")}:${join(scratch, "lower1")}`,
          `upperdir=${join(scratch, "upper")}`,
          `workdir=${join(scratch, "work")}`,
        ],
      },
      merged,
    );
    unmount(merged, { detach: true });
    return undefined;
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  } finally {
    unmount(merged, { detach: true, ignoreMissing: true });
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * Whether the running kernel is at least `major.minor` (from `os.release()`, e.g. `6.8.0-45`).
 * Distribution kernels backport features, so this is only a fast path before a probe.
 */
export function kernelAtLeast(major: number, minor: number): boolean {
  const match = /^(\d+)\.(\d+)/.exec(release());
  if (!match) return false;
  const [haveMajor, haveMinor] = [Number(match[1]), Number(match[2])];
  return haveMajor > major || (haveMajor === major && haveMinor >= minor);
}

// statfs(2) f_type of tmpfs.
const TMPFS_MAGIC = 0x01021994;

/**
 * Whether overlay must be mounted with `userxattr` under `root` (containerd's
 * `NeedsUserXAttr`): never in the initial user namespace, nor on tmpfs (which refuses
 * `user.*` xattrs); inside a user namespace yes on Linux ≥ 5.11, otherwise when a probe mount
 * with `userxattr` works.
 */
export async function needsUserXattr(root: string): Promise<boolean> {
  if (await inInitialUserNamespace()) return false;
  if ((await statfs(root)).type === TMPFS_MAGIC) return false;
  if (kernelAtLeast(5, 11)) return true;
  return (await probeOverlayMount(root, ["ro", "userxattr"])) === undefined;
}

/**
 * Checks that overlay snapshots can live under `root` and that overlayfs mounts there with
 * `options` (as the snapshotter would pass them, e.g. `index=off`), the way containerd's
 * `overlayutils.Supported` does: d_type support of the filesystem, then a probe mount with two
 * lower layers. Needs the privilege to mount. Meant for plugin registration, where a host that
 * cannot run the snapshotter should skip it with a reason.
 *
 * Throws `failed-precondition` naming `root` and the reason when overlay cannot be used there;
 * `not-implemented` when the kernel has no overlayfs at all.
 */
export async function checkOverlaySupport(root: string, options: readonly string[] = []): Promise<void> {
  await mkdir(root, { recursive: true, mode: 0o700 });
  if (!(await supportsDType(root))) throw noDType(root);
  const failure = await probeOverlayMount(root, options);
  if (failure === undefined) return;
  if (!(await overlayInProcFilesystems())) throw noOverlay(failure);
  throw failedPrecondition(`overlayfs cannot be mounted on ${root}: ${failure.message}`, { cause: failure });
}

/** @internal */
export function noDType(root: string): Error {
  return failedPrecondition(
    `${root} does not support d_type, which overlayfs needs; if the backing filesystem is xfs, reformat it with ftype=1`,
  );
}

/** @internal */
export function noOverlay(cause?: Error): Error {
  const why = cause ? `: ${cause.message}` : "";
  return notImplemented(`overlayfs is not available in this kernel (not in /proc/filesystems)${why}`, {
    ...(cause ? { cause } : {}),
  });
}
