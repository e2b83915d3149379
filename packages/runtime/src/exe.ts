/**
 * A read-only view of the host's Node binary for the processes berth starts inside containers.
 *
 * Between `create` and `start` (and while an exec helper sets up), a process the container can
 * see runs the host's `node`: `/proc/<pid>/exe` is that binary. A container process could open it
 * (or an `O_PATH`/`O_RDONLY` fd of it, reopened later through `/proc/self/fd/N`) for writing once
 * nothing executes it any more and overwrite the host's binary: the CVE-2019-5736 class. Executing
 * node through a read-only bind mount makes every such open fail with `EROFS`: the kernel checks
 * the mount the exe link was resolved through, not the file's own mount.
 *
 * @internal
 */
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { MountFlag, mount, unmount } from "@berth/sys";

// Linux open(2) flags Node's typings leave out (same values on x86_64 and aarch64).
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;

// One view per executable per process: the fd keeps the detached mount alive.
const views = new Map<string, number>();

/**
 * A path through which this process (and a child it spawns, up to the child's `execve`) can
 * execute `file` (by default this process's `node`) from a read-only bind mount:
 * `/proc/self/fd/<N>`, an `O_PATH | O_CLOEXEC` fd of the mount. A process started from it has the
 * read-only view as its `/proc/<pid>/exe` (the link reads `/`), so opening that for writing fails
 * with `EROFS` even when nothing else executes the binary.
 *
 * The first call for a file mounts the view in a fresh mode-0700 directory under the temp dir,
 * opens it, detaches the mount (`MNT_DETACH`) and removes the directory: nothing stays mounted or
 * on disk, and later calls cost nothing. The fd lives as long as this process. Throws the
 * `SystemError` of `mount` (e.g. `EPERM` when not root): berth does not fall back to exposing a
 * writable binary.
 */
export function readOnlyExecutable(file: string = process.execPath): string {
  let fd = views.get(file);
  if (fd === undefined) {
    fd = openView(file);
    views.set(file, fd);
  }
  return `/proc/self/fd/${fd}`;
}

function openView(file: string): number {
  const dir = mkdtempSync(join(tmpdir(), "berth-exe-"));
  try {
    const view = join(dir, basename(file));
    writeFileSync(view, "", { mode: 0o500 });
    mount(file, view, null, MountFlag.BIND, null);
    try {
      // A bind mount takes the source's flags; read-only needs a remount of the bind itself.
      mount(
        null,
        view,
        null,
        MountFlag.BIND | MountFlag.REMOUNT | MountFlag.RDONLY | MountFlag.NOSUID | MountFlag.NODEV,
        null,
      );
      return openSync(view, O_PATH | O_CLOEXEC | constants.O_NOFOLLOW);
    } finally {
      unmount(view, { detach: true });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Closes the views this process holds (for tests; a later {@link readOnlyExecutable} remounts). */
export function closeReadOnlyExecutables(): void {
  for (const fd of views.values()) closeSync(fd);
  views.clear();
}
