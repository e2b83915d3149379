import { resolve } from "node:path";
import { type FileLock, lockFile } from "@berth/sys";

/**
 * The garbage-collection lock of one root: `flock(2)` on `<root>/gc.lock`, shared by every
 * operation that makes a blob reachable (a namespaced commit or writer open), exclusive for the
 * collector. See the README for why this is what keeps a concurrent pull safe.
 *
 * Inside one process the lock is a reader-writer lock in front of the flock: all shared holders of
 * a process share one flock, so at most one libuv worker thread ever blocks in `flock()` for
 * them (many blocked threads would starve the pool that `fs` needs), and the collector of this
 * process waits for this process's commits without holding a thread.
 */
class RootGcLock {
  private readers = 0;
  private writing = false;
  private readonly queue: { exclusive: boolean; resume: () => void }[] = [];
  private sharedFlock: Promise<FileLock> | undefined;

  constructor(private readonly path: string) {}

  private grantable(exclusive: boolean): boolean {
    if (this.writing) return false;
    return exclusive ? this.readers === 0 : true;
  }

  private async enter(exclusive: boolean): Promise<void> {
    // Waiters are served in order, so a stream of commits cannot starve the collector.
    if (this.queue.length === 0 && this.grantable(exclusive)) {
      if (exclusive) this.writing = true;
      else this.readers++;
      return;
    }
    await new Promise<void>((resume) => this.queue.push({ exclusive, resume }));
  }

  private pump(): void {
    for (;;) {
      const next = this.queue[0];
      if (next === undefined || !this.grantable(next.exclusive)) return;
      this.queue.shift();
      if (next.exclusive) this.writing = true;
      else this.readers++;
      next.resume();
    }
  }

  private leaveShared(): void {
    this.readers--;
    if (this.readers === 0) {
      const held = this.sharedFlock;
      this.sharedFlock = undefined;
      void held?.then((lock) => lock.release()).catch(() => {});
    }
    this.pump();
  }

  async shared(): Promise<() => void> {
    await this.enter(false);
    try {
      this.sharedFlock ??= lockFile(this.path, "shared");
      await this.sharedFlock;
    } catch (err) {
      this.sharedFlock = undefined;
      this.leaveShared();
      throw err;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.leaveShared();
    };
  }

  async exclusive(): Promise<() => void> {
    await this.enter(true);
    let lock: FileLock;
    try {
      lock = await lockFile(this.path, "exclusive");
    } catch (err) {
      this.writing = false;
      this.pump();
      throw err;
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      lock.release();
      this.writing = false;
      this.pump();
    };
  }
}

const locks = new Map<string, RootGcLock>();

function lockFor(path: string): RootGcLock {
  const key = resolve(path);
  let lock = locks.get(key);
  if (lock === undefined) {
    lock = new RootGcLock(key);
    locks.set(key, lock);
  }
  return lock;
}

/** Takes the shared GC lock at `path`; resolves to its release function. @internal */
export function acquireGcShared(path: string): Promise<() => void> {
  return lockFor(path).shared();
}

/** Takes the exclusive GC lock at `path`; resolves to its release function. @internal */
export function acquireGcExclusive(path: string): Promise<() => void> {
  return lockFor(path).exclusive();
}
