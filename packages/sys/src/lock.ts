import { closeSync, openSync } from "node:fs";
import { lastErrno, loadLibc } from "./libc.js";
import { errnoName, SystemError } from "./system-error.js";

const LOCK_SH = 1;
const LOCK_EX = 2;
const LOCK_NB = 4;
const LOCK_UN = 8;

/** How a lock is taken: shared (many readers) or exclusive (one writer). */
export type LockMode = "shared" | "exclusive";

/**
 * An open file holding a `flock(2)` lock. The lock belongs to the open file description, so it is
 * released when {@link FileLock.release} closes the fd, or when the process dies: a crashed writer
 * never leaves a stale lock behind, which is why berth prefers flock to lock files.
 */
export interface FileLock {
  /** The path of the locked file. */
  readonly path: string;
  /** The file descriptor that holds the lock. */
  readonly fd: number;
  /** Releases the lock and closes the fd. Safe to call more than once. */
  release(): void;
}

function makeLock(path: string, fd: number): FileLock {
  let held = true;
  return {
    path,
    fd,
    release() {
      if (!held) return;
      held = false;
      const { flock } = loadLibc();
      flock(fd, LOCK_UN);
      closeSync(fd);
    },
  };
}

/**
 * Tries to lock `path` (created with mode 0600 if missing) without waiting. Returns the lock, or
 * `undefined` when another open file description holds a conflicting lock — in this process or in
 * another one. Other failures throw a {@link SystemError}.
 */
export function tryLockFile(path: string, mode: LockMode = "exclusive"): FileLock | undefined {
  const { flock } = loadLibc();
  const fd = openSync(path, "a+", 0o600);
  const rc = flock(fd, (mode === "shared" ? LOCK_SH : LOCK_EX) | LOCK_NB) as number;
  if (rc === 0) return makeLock(path, fd);
  const errno = lastErrno();
  closeSync(fd);
  if (errnoName(errno) === "EWOULDBLOCK" || errnoName(errno) === "EAGAIN") return undefined;
  throw new SystemError({ syscall: "flock", errno, path });
}

/**
 * Locks `path`, waiting for a conflicting holder to let go. The wait runs on a libuv worker thread
 * (koffi's async call), so the event loop keeps turning while it blocks.
 */
export async function lockFile(path: string, mode: LockMode = "exclusive"): Promise<FileLock> {
  const { flock, koffi } = loadLibc();
  const fd = openSync(path, "a+", 0o600);
  const op = mode === "shared" ? LOCK_SH : LOCK_EX;
  try {
    for (;;) {
      const { rc, errno } = await new Promise<{ rc: number; errno: number }>((resolve, reject) => {
        flock.async(fd, op, (err: unknown, result: number) => {
          if (err) reject(err);
          // errno is per thread; koffi copies the worker thread's errno back before the callback.
          else resolve({ rc: result, errno: result === 0 ? 0 : koffi.errno() });
        });
      });
      if (rc === 0) return makeLock(path, fd);
      if (errnoName(errno) !== "EINTR") throw new SystemError({ syscall: "flock", errno, path });
    }
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}
