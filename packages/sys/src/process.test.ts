import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import {
  acceptUnix,
  acceptUnixAsync,
  capget,
  closeRange,
  connectUnix,
  execve,
  getChildSubreaper,
  getProcessName,
  getpid,
  getrlimit,
  getuid,
  getWinsize,
  kill,
  lastCap,
  listenUnix,
  NamespaceFlag,
  namespaceFlag,
  namespacePath,
  openpty,
  Prctl,
  prctl,
  RLIM_INFINITY,
  Rlimit,
  readBoundingSet,
  recvFd,
  rlimitResource,
  SeccompFilterFlag,
  seccompSetFilter,
  sendFd,
  setBlocking,
  setCloexec,
  setProcessName,
  setrlimit,
  setWinsize,
  syscallNumber,
  umask,
  unixSocketPair,
} from "./index.js";

// Open fds this test made; closed in afterEach whatever happened.
const fds: number[] = [];
const track = <T extends number>(fd: T): T => {
  fds.push(fd);
  return fd;
};
const children: ChildProcess[] = [];
const dirs: string[] = [];

afterEach(() => {
  for (const fd of fds.splice(0)) {
    try {
      closeSync(fd);
    } catch {
      // Already closed by the test.
    }
  }
  for (const child of children.splice(0)) if (child.exitCode === null && child.pid) child.kill("SIGKILL");
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

// /proc/self/fdinfo/N "flags:" is the octal open-file-description flags plus O_CLOEXEC for the fd.
function fdFlags(fd: number): number {
  const line = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8").match(/^flags:\s+([0-7]+)$/m);
  return Number.parseInt(line?.[1] ?? "", 8);
}
const O_CLOEXEC = 0o2000000;
const O_NONBLOCK = 0o4000;

describe("constants and tables", () => {
  it("names namespaces both the OCI way and the /proc way", () => {
    expect(namespacePath(42, "network")).toBe("/proc/42/ns/net");
    expect(namespacePath("self", "mount")).toBe("/proc/self/ns/mnt");
    expect(namespacePath(1, "cgroup")).toBe("/proc/1/ns/cgroup");
    expect(namespaceFlag("mnt")).toBe(NamespaceFlag.CLONE_NEWNS);
    expect(namespaceFlag("network")).toBe(0x40000000);
    expect(() => namespacePath(1, "bogus" as "pid")).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
  });

  it("maps rlimit names and refuses unknown ones", () => {
    expect(rlimitResource("RLIMIT_NOFILE")).toBe(7);
    expect(rlimitResource(Rlimit.RLIMIT_RTTIME)).toBe(15);
    expect(() => rlimitResource("RLIMIT_BOGUS")).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
    expect(() => rlimitResource(16)).toThrow(/rlimit resource 16/);
  });

  it("knows this architecture's syscall numbers", () => {
    const expected = process.arch === "arm64" ? [41, 277] : [155, 317];
    expect([syscallNumber("pivot_root"), syscallNumber("seccomp")]).toEqual(expected);
  });
});

describe("process state of the test process", () => {
  it("reads its own capabilities and bounding set consistently with /proc", () => {
    const status = readFileSync("/proc/self/status", "utf8");
    const field = (name: string) =>
      BigInt(`0x${status.match(new RegExp(`^${name}:\\s+([0-9a-f]+)$`, "m"))?.[1]}`);
    const caps = capget();
    expect(caps.effective).toBe(field("CapEff"));
    expect(caps.permitted).toBe(field("CapPrm"));
    expect(caps.inheritable).toBe(field("CapInh"));
    expect(readBoundingSet()).toBe(field("CapBnd"));
    expect(lastCap()).toBeGreaterThanOrEqual(37);
    expect(() => capget(0x3fffffff)).toThrow(
      expect.objectContaining({ syscall: "capget", errnoName: "ESRCH" }),
    );
  });

  it("sets and reads the thread name with prctl", () => {
    const old = getProcessName();
    try {
      setProcessName("berth-sys-test-long-name");
      // The kernel keeps 15 bytes.
      expect(getProcessName()).toBe("berth-sys-test-");
    } finally {
      setProcessName(old);
    }
    expect(prctl(Prctl.PR_GET_DUMPABLE)).toBe(1);
    expect(typeof getChildSubreaper()).toBe("boolean");
    expect(() => prctl(0x7fff_0000)).toThrow(
      expect.objectContaining({ syscall: "prctl", code: "invalid-argument" }),
    );
  });

  it("reports pid and uid as the kernel sees them", () => {
    expect(getpid()).toBe(process.pid);
    expect(getuid()).toBe(process.getuid?.());
  });

  it("sets the umask and returns the previous one", () => {
    const old = umask(0o027);
    try {
      expect(umask(0o027)).toBe(0o027);
    } finally {
      umask(old);
    }
    expect(() => umask(0o1000)).toThrow(expect.objectContaining({ code: "invalid-argument" }));
  });

  it("probes and signals processes with kill", async () => {
    kill(process.pid, 0);
    const child = spawn("/bin/busybox", ["sleep", "30"], { stdio: "ignore" });
    children.push(child);
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on("exit", (_code, sig) => resolve(sig)),
    );
    kill(child.pid ?? -1, "TERM");
    expect(await exited).toBe("SIGTERM");
    expect(() => kill(process.pid, "SIGBOGUS")).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
  });

  it("fails execve without changing the process, naming the path", () => {
    expect(() => execve("/nonexistent/berth", ["x"], [])).toThrow(
      expect.objectContaining({
        syscall: "execve",
        errnoName: "ENOENT",
        code: "not-found",
        path: "/nonexistent/berth",
      }),
    );
    expect(() => execve("/bin/true", ["a\0b"], [])).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
  });

  it("refuses malformed seccomp programs before the kernel sees them", () => {
    expect(() => seccompSetFilter(new Uint8Array(12))).toThrow(
      expect.objectContaining({ code: "invalid-argument" }),
    );
    expect(() => seccompSetFilter(new Uint8Array(0))).toThrow(/0 bytes/);
    expect(SeccompFilterFlag.TSYNC).toBe(1);
  });
});

describe("file descriptors", () => {
  it("sets and clears close-on-exec and non-blocking", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-sys-fd-"));
    dirs.push(dir);
    const fd = track(openSync(join(dir, "f"), "w"));
    expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    setCloexec(fd, false);
    expect(fdFlags(fd) & O_CLOEXEC).toBe(0);
    setCloexec(fd, true);
    expect(fdFlags(fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    setBlocking(fd, false);
    expect(fdFlags(fd) & O_NONBLOCK).toBe(O_NONBLOCK);
    setBlocking(fd);
    expect(fdFlags(fd) & O_NONBLOCK).toBe(0);
    expect(() => setCloexec(123456, true)).toThrow(
      expect.objectContaining({ errnoName: "EBADF", fd: 123456 }),
    );
  });

  it("marks a range close-on-exec with close_range and closes another", () => {
    const [a, b] = unixSocketPair().map(track) as [number, number];
    setCloexec(a, false);
    setCloexec(b, false);
    const low = Math.min(a, b);
    const high = Math.max(a, b);
    closeRange(low, high, 4);
    expect(fdFlags(a) & O_CLOEXEC).toBe(O_CLOEXEC);
    expect(fdFlags(b) & O_CLOEXEC).toBe(O_CLOEXEC);
    closeRange(high, high);
    expect(() => fstatSync(high)).toThrow(/EBADF/);
  });
});

describe("terminals and fd passing", () => {
  it("opens a pty pair and sets its window size", () => {
    const pty = openpty();
    track(pty.master);
    track(pty.slave);
    expect(pty.slaveName).toMatch(/^\/dev\/pts\/\d+$/);
    expect(fstatSync(pty.slave).rdev).toBe(statSync(pty.slaveName).rdev);
    expect(fdFlags(pty.master) & O_CLOEXEC).toBe(O_CLOEXEC);
    setWinsize(pty.master, 40, 132);
    expect(getWinsize(pty.slave)).toEqual({ rows: 40, cols: 132 });
    const [s] = unixSocketPair().map(track);
    expect(() => setWinsize(s ?? -1, 1, 1)).toThrow(expect.objectContaining({ errnoName: "ENOTTY" }));
  });

  it("passes an fd over a socket pair with SCM_RIGHTS", () => {
    const pty = openpty();
    track(pty.master);
    track(pty.slave);
    const [a, b] = unixSocketPair().map(track) as [number, number];
    sendFd(a, pty.master);
    const got = recvFd(b);
    track(got.fd);
    expect(got.name).toBe("/dev/ptmx");
    expect(got.fd).not.toBe(pty.master);
    expect(fstatSync(got.fd).rdev).toBe(fstatSync(pty.master).rdev);
    expect(fdFlags(got.fd) & O_CLOEXEC).toBe(O_CLOEXEC);
    // The received master controls the same terminal.
    setWinsize(got.fd, 12, 34);
    expect(getWinsize(pty.slave)).toEqual({ rows: 12, cols: 34 });
  });

  it("connects to a console socket path and sends the fd like runc", async () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-sys-sock-"));
    dirs.push(dir);
    const path = join(dir, "console.sock");
    const listener = track(listenUnix(path));
    const pty = openpty();
    track(pty.master);
    track(pty.slave);
    // The connection sits in the backlog, so sendFd completes before anyone accepts it.
    sendFd(path, pty.master, "console");
    const conn = track(acceptUnix(listener));
    const got = recvFd(conn);
    track(got.fd);
    expect(got.name).toBe("console");
    expect(fstatSync(got.fd).rdev).toBe(fstatSync(pty.master).rdev);

    const pending = acceptUnixAsync(listener);
    const client = track(connectUnix(path));
    const server = track(await pending);
    sendFd(client, pty.slave, "slave");
    expect(recvFd(server).name).toBe("slave");
    closeSync(client);
    expect(() => recvFd(server)).toThrow(expect.objectContaining({ code: "data-loss" }));
    expect(() => sendFd(join(dir, "missing.sock"), pty.master)).toThrow(
      expect.objectContaining({ syscall: "connect", errnoName: "ENOENT" }),
    );
  });
});

describe("resource limits", () => {
  it("reads and lowers the limits of a child process", async () => {
    const child = spawn("/bin/busybox", ["sleep", "30"], { stdio: "ignore" });
    children.push(child);
    const pid = child.pid ?? -1;
    const own = getrlimit("RLIMIT_NOFILE");
    expect(getrlimit(Rlimit.RLIMIT_NOFILE, pid)).toEqual(own);
    setrlimit("RLIMIT_NOFILE", 64n, 128n, pid);
    setrlimit("RLIMIT_CORE", 0n, 0n, pid);
    expect(getrlimit("RLIMIT_NOFILE", pid)).toEqual({ soft: 64n, hard: 128n });
    const limits = readFileSync(`/proc/${pid}/limits`, "utf8");
    expect(limits).toMatch(/^Max open files\s+64\s+128\s+files/m);
    expect(limits).toMatch(/^Max core file size\s+0\s+0\s+bytes/m);
    expect(getrlimit("RLIMIT_RTTIME", pid).hard).toBe(getrlimit("RLIMIT_RTTIME").hard);
    expect(RLIM_INFINITY).toBe(2n ** 64n - 1n);
    expect(() => setrlimit("RLIMIT_NOFILE", 10n, 5n, pid)).toThrow(/soft limit 10 exceeds hard limit 5/);
    expect(() => getrlimit("RLIMIT_NOFILE", 0x3fffffff)).toThrow(
      expect.objectContaining({ errnoName: "ESRCH" }),
    );
  });
});
