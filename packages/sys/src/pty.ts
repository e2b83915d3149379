import { closeSync } from "node:fs";
import { checked } from "./checked.js";
import { loadProcLibc } from "./libc.js";
import { setCloexec } from "./process.js";
import { SystemError } from "./system-error.js";

/** A pseudo-terminal pair from {@link openpty}. The caller owns both fds and closes them. */
export interface Pty {
  /** The master side, kept by the runtime or sent to the console socket. */
  readonly master: number;
  /** The slave side, which becomes the container process's stdio and controlling terminal. */
  readonly slave: number;
  /** The slave's device path, e.g. `/dev/pts/3`. */
  readonly slaveName: string;
}

/**
 * Opens a new pseudo-terminal pair with `openpty(3)`, both ends close-on-exec (Node's child
 * processes would otherwise inherit them: libuv closes nothing on spawn). Clear the flag with
 * `setCloexec(fd, false)` on the fd that must survive an exec. Throws a `SystemError` (`ENOENT`
 * when /dev/ptmx or devpts is missing).
 */
export function openpty(): Pty {
  const { openpty: open, ptsnameR } = loadProcLibc();
  const master = new Int32Array(1);
  const slave = new Int32Array(1);
  checked(open(master, slave, null, null, null) as number, "openpty");
  const [m = -1] = master;
  const [s = -1] = slave;
  try {
    setCloexec(m, true);
    setCloexec(s, true);
    const name = Buffer.alloc(128);
    const err = ptsnameR(m, name, name.length) as number;
    if (err !== 0) throw new SystemError({ syscall: "ptsname_r", errno: err, fd: m });
    return { master: m, slave: s, slaveName: name.toString("utf8", 0, name.indexOf(0)) };
  } catch (err) {
    closeSync(m);
    closeSync(s);
    throw err;
  }
}

// Terminal ioctls; the same numbers on x86_64 and aarch64 (asm-generic/ioctls.h).
const TIOCSCTTY = 0x540e;
const TIOCGWINSZ = 0x5413;
const TIOCSWINSZ = 0x5414;

/**
 * `setsid(2)`: makes the caller the leader of a new session and process group, without a
 * controlling terminal, and returns the session id. Throws a `SystemError` (`EPERM` when the
 * caller already leads a process group, as any process started by Node's spawn with
 * `detached: true` does).
 */
export function setsid(): number {
  return checked(loadProcLibc().setsid() as number, "setsid");
}

/**
 * Makes the terminal `fd` the controlling terminal of the caller's session (`ioctl TIOCSCTTY`,
 * without stealing it from another session). The caller must be a session leader without one
 * ({@link setsid} first). Throws a `SystemError` (`EPERM`, `ENOTTY`).
 */
export function setControllingTerminal(fd: number): void {
  checked(loadProcLibc().ioctl(fd, TIOCSCTTY, "int", 0) as number, "ioctl", { fd, hint: "TIOCSCTTY" });
}

/** A terminal's size in character cells. */
export interface Winsize {
  readonly rows: number;
  readonly cols: number;
}

/**
 * Sets the window size of the terminal `fd` (`ioctl TIOCSWINSZ`); the foreground process group
 * gets SIGWINCH. Throws a `SystemError` (`ENOTTY` for an fd that is not a terminal).
 */
export function setWinsize(fd: number, rows: number, cols: number): void {
  // struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(cols, 2);
  checked(loadProcLibc().ioctl(fd, TIOCSWINSZ, "uint8_t *", ws) as number, "ioctl", {
    fd,
    hint: "TIOCSWINSZ",
  });
}

/** Reads the window size of the terminal `fd` (`ioctl TIOCGWINSZ`). Throws like {@link setWinsize}. */
export function getWinsize(fd: number): Winsize {
  const ws = Buffer.alloc(8);
  checked(loadProcLibc().ioctl(fd, TIOCGWINSZ, "uint8_t *", ws) as number, "ioctl", {
    fd,
    hint: "TIOCGWINSZ",
  });
  return { rows: ws.readUInt16LE(0), cols: ws.readUInt16LE(2) };
}
