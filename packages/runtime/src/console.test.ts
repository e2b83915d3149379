import { type ChildProcess, execFile } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  read,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { isDataLoss, isFailedPrecondition } from "@berth/errdefs";
import { readMountInfo, sendFd } from "@berth/sys";
import { requiresCommand, requiresRoot } from "@berth/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type ConsoleSocket, listenConsoleSocket } from "./console.js";
import { createRuntime, type Runtime } from "./runtime.js";
import type { Process, Spec } from "./spec.js";
import { makeBusyboxBundle } from "./testing/busybox-bundle.js";

const execFileAsync = promisify(execFile);
const RUNC = "/usr/sbin/runc";
const BERTH_RUNC = new URL("../bin/berth-runc.js", import.meta.url).pathname;
// Ids unique to this file: containers of every test file share the /berth/<id> cgroups.
const ID = `console-${process.pid}`;

/** Reads the pty master `fd` until the slave side is gone (EIO) or EOF; resolves to the text. */
function readMaster(fd: number): Promise<string> {
  return new Promise((resolveRead, reject) => {
    const chunks: Buffer[] = [];
    const next = () => {
      const buf = Buffer.alloc(4096);
      read(fd, buf, 0, buf.length, null, (err, n) => {
        // A pty master reads EIO once every slave fd is closed: the container has exited.
        if (err && (err as NodeJS.ErrnoException).code === "EIO") n = 0;
        else if (err) return reject(err);
        if (n === 0) return resolveRead(Buffer.concat(chunks).toString("utf8"));
        chunks.push(buf.subarray(0, n));
        next();
      });
    };
    next();
  });
}

/** A busybox bundle from `defaultSpec()` (which equals `runc spec`) with a terminal. */
const makeBundle = (dir: string, args: string[], change: (s: Spec) => Spec = (s) => s): string =>
  makeBusyboxBundle(join(dir, "bundle"), args, {
    applets: ["sh", "tty", "stty", "echo", "ls", "stat", "readlink", "cat"],
    terminal: true,
    change: (s) =>
      change({ ...s, process: { ...(s.process as Process), consoleSize: { height: 24, width: 80 } } }),
  });

// What the terminal container prints: its tty, the size the spec asked for, whether /dev/console
// is the same terminal, and that it is the controlling terminal (the session has one).
const TERMINAL_SCRIPT =
  "tty; stty size; [ /dev/console -ef /proc/self/fd/0 ] && echo console-is-tty; " +
  "readlink /proc/self/fd/1; (: </dev/tty) 2>/dev/null && echo ctty; echo done";

describe("listenConsoleSocket", () => {
  let dir: string;
  let socket: ConsoleSocket | undefined;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-console-"));
  });
  afterEach(() => {
    socket?.close();
    socket = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it("receives an fd sent with SCM_RIGHTS, named like runc's message", async () => {
    socket = listenConsoleSocket(join(dir, "sock"));
    const file = join(dir, "f");
    writeFileSync(file, "through the socket");
    const received = socket.receive();
    const fd = openSync(file, "r");
    try {
      sendFd(socket.path, fd);
    } finally {
      closeSync(fd);
    }
    const got = await received;
    try {
      expect(got.name).toBe("/dev/ptmx");
      expect(readFileSync(got.fd, "utf8")).toBe("through the socket");
    } finally {
      closeSync(got.fd);
    }
  });

  it("rejects a pending receive on close and removes the socket file", async () => {
    socket = listenConsoleSocket(join(dir, "sock"));
    const pending = socket.receive();
    socket.close();
    await expect(pending).rejects.toSatisfy(isFailedPrecondition);
    expect(existsSync(join(dir, "sock"))).toBe(false);
    await expect(socket.receive()).rejects.toSatisfy(isFailedPrecondition);
  });

  it("rejects with data-loss when the peer closes without sending", async () => {
    socket = listenConsoleSocket(join(dir, "sock"));
    const pending = socket.receive();
    const { connectUnix } = await import("@berth/sys");
    closeSync(connectUnix(socket.path));
    await expect(pending).rejects.toSatisfy(isDataLoss);
  });
});

describe.runIf(requiresRoot("terminal containers") && requiresCommand(RUNC, "runc console oracle"))(
  "process.terminal with a console socket",
  () => {
    let dir: string;
    let socket: ConsoleSocket | undefined;
    let rt: Runtime;
    const masters: number[] = [];
    const children: ChildProcess[] = [];
    const runcCgroup = `berth-console-test-${process.pid}`;

    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "berth-console-"));
      rt = createRuntime({ root: join(dir, "berth") });
    });

    afterEach(async () => {
      for (const c of children.splice(0))
        if (c.pid !== undefined && c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      for (const c of existsSync(join(dir, "berth")) ? rt.list() : [])
        await rt.delete(c.id, { force: true }).catch(() => undefined);
      if (existsSync(join(dir, "runc")))
        await execFileAsync(RUNC, ["--root", join(dir, "runc"), "delete", "--force", ID]).catch(
          () => undefined,
        );
      for (const fd of masters.splice(0)) closeSync(fd);
      socket?.close();
      socket = undefined;
      const leftover = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
      rmSync(dir, { recursive: true, force: true });
      // runc removes its leaf cgroup on delete; remove any a failed runc left.
      for (const c of readdirSync("/sys/fs/cgroup")) {
        const cg = join("/sys/fs/cgroup", c, runcCgroup);
        if (existsSync(cg)) rmdirSync(cg);
      }
      expect(leftover).toEqual([]);
    });

    /** Creates with `create`, takes the master off the socket, starts, reads until exit. */
    async function terminalRun(create: () => Promise<void>, start: () => Promise<void>): Promise<string> {
      socket = listenConsoleSocket(join(dir, "console.sock"));
      const received = socket.receive();
      await create();
      const master = await received;
      masters.push(master.fd);
      expect(master.name).toBe("/dev/ptmx");
      const output = readMaster(master.fd);
      await start();
      return (await output).replaceAll("\r\n", "\n");
    }

    async function runcTerminal(args: string[]): Promise<string> {
      const bundle = makeBundle(dir, args, (s) => ({
        ...s,
        linux: { ...s.linux, cgroupsPath: `/${runcCgroup}` },
      }));
      const root = join(dir, "runc");
      return terminalRun(
        async () => {
          await execFileAsync(RUNC, [
            "--root",
            root,
            "create",
            "-b",
            bundle,
            "--console-socket",
            join(dir, "console.sock"),
            ID,
          ]);
        },
        async () => {
          await execFileAsync(RUNC, ["--root", root, "start", ID]);
        },
      );
    }

    it("sends the pty master; the process has the slave as stdio and controlling tty, like runc", async () => {
      const expected = "/dev/pts/0\n24 80\nconsole-is-tty\n/dev/pts/0\nctty\ndone\n";
      const runc = await runcTerminal(["sh", "-c", TERMINAL_SCRIPT]);
      expect(runc).toBe(expected);
      await execFileAsync(RUNC, ["--root", join(dir, "runc"), "delete", "--force", ID]);
      rmSync(join(dir, "bundle"), { recursive: true });
      socket?.close();
      socket = undefined;

      const bundle = makeBundle(dir, ["sh", "-c", TERMINAL_SCRIPT]);
      const berth = await terminalRun(
        async () => {
          const state = await rt.create(ID, bundle, { consoleSocket: join(dir, "console.sock") });
          expect(state.status).toBe("created");
        },
        () => rt.start(ID),
      );
      expect(berth).toBe(expected);
    });

    it("works through berth-runc create --console-socket and start", async () => {
      const bundle = makeBundle(dir, ["sh", "-c", "tty; echo $TERM; echo done"]);
      const cli = (...args: string[]) =>
        execFileAsync(process.execPath, [BERTH_RUNC, "--root", join(dir, "berth"), ...args], { env: {} });
      const out = await terminalRun(
        async () => {
          await cli("create", "-b", bundle, "--console-socket", join(dir, "console.sock"), ID);
        },
        async () => {
          await cli("start", ID);
        },
      );
      expect(out).toBe("/dev/pts/0\nxterm\ndone\n");
    });

    it("gives an exec'd process its own terminal through the console socket", async () => {
      const bundle = makeBundle(dir, ["sleep", "100"], (s) => ({
        ...s,
        process: { ...(s.process as Process), terminal: false },
      }));
      symlinkSync("busybox", join(bundle, "rootfs", "bin", "sleep"));
      await rt.create(ID, bundle, { stdio: "inherit" });
      await rt.start(ID);
      socket = listenConsoleSocket(join(dir, "console.sock"));
      const received = socket.receive();
      const exited = rt.exec(
        ID,
        {
          terminal: true,
          consoleSize: { height: 10, width: 33 },
          user: { uid: 0, gid: 0 },
          args: ["sh", "-c", "tty; stty size; echo done"],
          cwd: "/",
          env: ["PATH=/bin"],
        },
        { consoleSocket: socket.path },
      );
      // A failed exec never connects: let its error end the wait instead of the test's timeout.
      const master = await Promise.race([
        received,
        exited.then((code) => Promise.reject(new Error(`exec ended (${code}) without a console`))),
      ]);
      masters.push(master.fd);
      const out = (await readMaster(master.fd)).replaceAll("\r\n", "\n");
      expect(await exited).toBe(0);
      expect(out).toBe("/dev/pts/0\n10 33\ndone\n");
    });

    it("refuses a terminal container without a console socket and one that cannot connect", async () => {
      const bundle = makeBundle(dir, ["true"]);
      await expect(rt.create(ID, bundle)).rejects.toThrow(/console socket/);
      await expect(rt.create(ID, bundle, { consoleSocket: join(dir, "nobody.sock") })).rejects.toThrow(
        /nobody\.sock/,
      );
      expect(rt.list()).toEqual([]);
    });
  },
);
