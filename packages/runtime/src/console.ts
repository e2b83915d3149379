/**
 * The receiving end of `--console-socket`: a unix socket on which a runtime (berth's or runc)
 * connects and sends the pty master of a `process.terminal` container with `SCM_RIGHTS`. What
 * runc's `recvtty` does, as a library for the shim and for tests.
 */
import { closeSync, rmSync } from "node:fs";
import { failedPrecondition } from "@berth/errdefs";
import { acceptUnixAsync, connectUnix, listenUnix, type ReceivedFd, recvFd } from "@berth/sys";

/** A listening console socket from {@link listenConsoleSocket}. */
export interface ConsoleSocket {
  /** The socket's path: pass it as `consoleSocket` / `--console-socket`. */
  readonly path: string;
  /**
   * Waits for the next runtime to connect and resolves to the pty master it sends (close-on-exec;
   * the caller owns and closes it) and the message's name (`/dev/ptmx` from runc and berth).
   * The accept waits on a libuv worker thread; the receive then blocks the calling thread until
   * the runtime sends, which both runtimes do within their `create` (they connect before the
   * root switch and send once the pty exists). Rejects with `data-loss` when the runtime closed
   * the connection without sending (its create failed), `failed-precondition` after
   * {@link ConsoleSocket.close}, or the socket call's `SystemError`.
   */
  receive(): Promise<ReceivedFd>;
  /**
   * Stops listening and removes the socket file. A pending {@link ConsoleSocket.receive} rejects
   * with `failed-precondition`. Idempotent.
   */
  close(): void;
}

/**
 * Listens on a new unix socket at `path` (which must not exist; at most 107 bytes). Throws
 * `invalid-argument` for a path that does not fit and a `SystemError` (`EADDRINUSE` when `path`
 * exists). The caller owns the socket and calls {@link ConsoleSocket.close}.
 */
export function listenConsoleSocket(path: string): ConsoleSocket {
  const listener = listenUnix(path, 4);
  let closed = false;
  let waiting = 0;
  let listenerOpen = true;
  // The listener is closed only once no accept is using it on a worker thread: closing it under
  // a pending accept4 could hand that call a reused fd number.
  const closeListener = () => {
    if (!listenerOpen || waiting > 0) return;
    listenerOpen = false;
    closeSync(listener);
  };
  return {
    path,
    async receive(): Promise<ReceivedFd> {
      if (closed) throw failedPrecondition(`console socket ${path} is closed`);
      waiting++;
      let conn: number;
      try {
        conn = await acceptUnixAsync(listener);
      } finally {
        waiting--;
        if (closed) closeListener();
      }
      try {
        if (closed) throw failedPrecondition(`console socket ${path} was closed while waiting`);
        return recvFd(conn);
      } finally {
        closeSync(conn);
      }
    },
    close(): void {
      if (closed) return;
      closed = true;
      // Closing a listening socket does not wake an accept blocked on a worker thread; a
      // connection of our own does (the waiter then sees `closed` and rejects).
      for (let i = 0; i < waiting; i++) {
        try {
          closeSync(connectUnix(path));
        } catch {
          // Nothing listens any more: no accept to wake.
        }
      }
      closeListener();
      rmSync(path, { force: true });
    },
  };
}
