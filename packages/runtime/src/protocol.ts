/**
 * The messages the runtime and a container's init exchange over their control socket: one JSON
 * object per line. The init reads with blocking `readSync` (it has nothing else to do), the
 * runtime with stream events.
 *
 * @internal
 */
import { readSync, writeSync } from "node:fs";
import { BerthError, type ErrorCode } from "@berth/errdefs";
import type { Process, Spec } from "./spec.js";

/** What the init is asked to do. */
export const InitMode = {
  /** Become the container: namespaces, rootfs, process, exec fifo, exec. */
  Create: "create",
  /** Join a running container's namespaces and exec a process in it. */
  Exec: "exec",
} as const;
/** What the init is asked to do. */
export type InitMode = (typeof InitMode)[keyof typeof InitMode];

/** Everything the init needs, sent as the first message. */
export interface InitConfig {
  readonly mode: InitMode;
  readonly id: string;
  readonly spec: Spec;
  /** The absolute bundle path, for relative bind sources (create). */
  readonly bundle: string;
  /** The absolute rootfs path (create). */
  readonly rootfs: string;
  /** The absolute path of exec.fifo in the state dir (create). */
  readonly execFifo?: string;
  readonly noPivot: boolean;
  /** How many fds above 2 the container keeps (runc's --preserve-fds). */
  readonly preserveFds: number;
  /** A unix socket to send the pty master to when `process.terminal` is set. */
  readonly consoleSocket?: string;
  /** The process to run: spec.process for create, the exec'd one for exec. */
  readonly process: Process;
  /** exec: the container init's pid (in the runtime's pid namespace) whose namespaces to join. */
  readonly targetPid?: number;
  /** exec: the namespaces of the container, to join by /proc/<targetPid>/ns/<type>. */
  readonly joinNamespaces?: readonly string[];
  /** exec: the container root was set up without pivot_root, so chroot into the init's root. */
  readonly chrootToTarget?: boolean;
}

/** Messages from the runtime to the init. */
export type ToInit = { readonly type: "config"; readonly config: InitConfig } | { readonly type: "continue" };

/** Messages from the init to the runtime. */
export type FromInit =
  | { readonly type: "ready" }
  /**
   * The mounts are done and the root not yet switched: run the prestart and createRuntime hooks,
   * then send `continue` (sent only when the spec has such hooks).
   */
  | { readonly type: "hooks" }
  | { readonly type: "created" }
  | {
      readonly type: "error";
      readonly code: ErrorCode;
      readonly message: string;
      readonly errno?: string;
    };

/** Turns an init's error message back into a {@link BerthError} with the same code. */
export function initError(id: string, msg: Extract<FromInit, { type: "error" }>): BerthError {
  return new BerthError(msg.code, `container ${id}: init failed: ${msg.message}`);
}

/**
 * A blocking line reader over a file descriptor, for the init's side of the control socket.
 *
 * @internal
 */
export class SyncLineReader {
  private buffer = "";
  private readonly chunk = Buffer.alloc(64 * 1024);

  constructor(private readonly fd: number) {}

  /** The next message, or undefined at end of stream (the runtime went away). */
  next(): ToInit | undefined {
    for (;;) {
      const nl = this.buffer.indexOf("\n");
      if (nl >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        return JSON.parse(line) as ToInit;
      }
      const n = readSync(this.fd, this.chunk, 0, this.chunk.length, null);
      if (n === 0) return undefined;
      this.buffer += this.chunk.toString("utf8", 0, n);
    }
  }
}

/** Writes one message on the init's side of the control socket, blocking. */
export function sendSync(fd: number, msg: FromInit): void {
  const data = Buffer.from(`${JSON.stringify(msg)}\n`);
  let off = 0;
  while (off < data.length) off += writeSync(fd, data, off);
}
