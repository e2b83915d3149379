import { type BigIntStats, constants } from "node:fs";
import { chmod, copyFile, lchown, link, lstat, mkdir, readdir, readlink, symlink } from "node:fs/promises";
import { join } from "node:path";
import { getXattr, listXattrs, mknod, setTimesNs, setXattr } from "@berth/sys";

/** What {@link copyTree} copied, for logs and tests. */
export interface CopyStats {
  /** Entries created (directories, files, links, nodes), the root included. */
  entries: number;
  /** Regular files whose data was copied (hardlinks to an already copied file not counted). */
  files: number;
  /** Hardlinks recreated as links to the first copy. */
  hardlinks: number;
  /** Sockets, which cannot be copied and are left out (as containerd's fs.CopyDir does). */
  skippedSockets: number;
}

/** How many entries of one directory are copied at once. libuv's pool has 4 threads by default. */
const PARALLEL = 8;

// File types as bigints, for BigIntStats modes.
const [S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK] = [
  constants.S_IFMT,
  constants.S_IFDIR,
  constants.S_IFREG,
  constants.S_IFLNK,
  constants.S_IFCHR,
  constants.S_IFBLK,
  constants.S_IFIFO,
  constants.S_IFSOCK,
].map(BigInt) as [bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint];

interface CopyState {
  readonly stats: CopyStats;
  /** `dev:ino` of multiply linked source files → the promise of the path of their first copy. */
  readonly links: Map<string, Promise<string>>;
  readonly euid: number;
}

/**
 * Copies the tree at `src` to `dst` (which must not exist), keeping what a container image layer
 * carries: owners, modes (setuid, setgid and sticky bits included), access and modification times,
 * extended attributes (`security.capability`, ACLs, `trusted.*`, `user.*`), hardlinks (as links
 * inside the copy, found by inode), symlinks, device nodes and fifos. Sockets are skipped. File
 * data goes through `copyFile` with `COPYFILE_FICLONE`: a reflink where the filesystem supports it
 * (btrfs, xfs with reflink=1), otherwise libuv's copy (`copy_file_range`, falling back to
 * `sendfile`).
 *
 * Times are copied to the nanosecond (`utimensat` on the entry itself, as containerd's native
 * snapshotter does through its continuity copy). Owners are only changed when they differ from the creating
 * process's, so an unprivileged caller can copy its own files. Throws the `fs` error (or the
 * `SystemError` of an xattr or mknod call) of the first entry that failed; `dst` is then left
 * partly written for the caller to remove.
 */
export async function copyTree(src: string, dst: string): Promise<CopyStats> {
  const state: CopyState = {
    stats: { entries: 0, files: 0, hardlinks: 0, skippedSockets: 0 },
    links: new Map(),
    euid: process.geteuid?.() ?? -1,
  };
  const st = await lstat(src, { bigint: true });
  if ((st.mode & S_IFMT) !== S_IFDIR) throw new Error(`copy ${src}: not a directory`);
  await copyDir(state, src, dst, st);
  return state.stats;
}

async function copyDir(state: CopyState, src: string, dst: string, st: BigIntStats): Promise<void> {
  // Created private and owner-writable, so that the copy works for a non-root caller too; the
  // real mode is set once the children are in.
  await mkdir(dst, { mode: 0o700 });
  state.stats.entries++;
  const names = await readdir(src);
  for (let i = 0; i < names.length; i += PARALLEL) {
    await Promise.all(
      names.slice(i, i + PARALLEL).map((name) => copyEntry(state, join(src, name), join(dst, name))),
    );
  }
  await finish(state, src, dst, st, true);
}

async function copyEntry(state: CopyState, src: string, dst: string): Promise<void> {
  const st = await lstat(src, { bigint: true });
  const type = st.mode & S_IFMT;
  switch (type) {
    case S_IFDIR:
      return copyDir(state, src, dst, st);
    case S_IFREG:
      return copyFileEntry(state, src, dst, st);
    case S_IFLNK:
      await symlink(await readlink(src), dst);
      state.stats.entries++;
      return finish(state, src, dst, st, false);
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
      // mknod with the source's full mode (type and permission bits; umask is undone by the chmod
      // in finish) and, for devices, its device number as the kernel encodes it.
      mknod(dst, Number(st.mode), type === S_IFIFO ? 0n : st.rdev);
      state.stats.entries++;
      return finish(state, src, dst, st, true);
    case S_IFSOCK:
      state.stats.skippedSockets++;
      return;
    default:
      throw new Error(`copy ${src}: unsupported file type 0o${type.toString(8)}`);
  }
}

async function copyFileEntry(state: CopyState, src: string, dst: string, st: BigIntStats): Promise<void> {
  if (st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = state.links.get(key);
    if (first !== undefined) {
      // The first copy is finished (owner, mode, xattrs, times) before its promise resolves, and
      // a link shares the inode, so there is nothing more to set.
      await link(await first, dst);
      state.stats.hardlinks++;
      state.stats.entries++;
      return;
    }
    let resolve: (path: string) => void = () => {};
    let reject: (err: unknown) => void = () => {};
    const done = new Promise<string>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    // Links waiting on a failed first copy fail with it; keep that rejection from being unhandled
    // when no other link is waiting.
    done.catch(() => {});
    state.links.set(key, done);
    try {
      await copyRegular(state, src, dst, st);
      resolve(dst);
    } catch (err) {
      reject(err);
      throw err;
    }
    return;
  }
  await copyRegular(state, src, dst, st);
}

async function copyRegular(state: CopyState, src: string, dst: string, st: BigIntStats): Promise<void> {
  await copyFile(src, dst, constants.COPYFILE_FICLONE | constants.COPYFILE_EXCL);
  state.stats.files++;
  state.stats.entries++;
  await finish(state, src, dst, st, true);
}

/**
 * Sets owner, mode, xattrs and times, in that order: chown clears the setuid and setgid bits and
 * the `security.capability` xattr, so mode and xattrs come after it, and every change touches
 * ctime and possibly mtime, so times come last.
 */
async function finish(
  state: CopyState,
  src: string,
  dst: string,
  st: BigIntStats,
  chmodable: boolean,
): Promise<void> {
  const uid = Number(st.uid);
  const gid = Number(st.gid);
  if (state.euid === 0 || uid !== state.euid) await lchown(dst, uid, gid);
  // Symlinks have no mode of their own on Linux (chmod would follow them).
  if (chmodable) await chmod(dst, Number(st.mode & 0o7777n));
  for (const name of listXattrs(src)) {
    const value = getXattr(src, name);
    if (value !== undefined) setXattr(dst, name, value);
  }
  setTimesNs(dst, st.atimeNs, st.mtimeNs);
}
