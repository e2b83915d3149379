/**
 * The container init: a small Node program the runtime spawns as PID 1 of a new PID namespace
 * (`node init.js -- <mode> <control fd>`). It talks to the runtime over the control socket
 * (protocol.ts), sets up the container on its main thread and execs the container's process in
 * place, so no Node is left in the container once it runs.
 *
 * Not part of the public API; the runtime locates the built file next to itself.
 *
 * @internal
 */
import { closeSync, constants, openSync, readFileSync, writeSync } from "node:fs";
import { errorCode, errorMessage } from "@berth/errdefs";
import {
  chroot,
  connectUnix,
  dup2,
  getpid,
  joinNamespace,
  MountFlag,
  mount,
  type NamespaceType,
  namespaceFlag,
  openpty,
  SystemError,
  sendFd,
  setControllingTerminal,
  setdomainname,
  sethostname,
  setsid,
  setWinsize,
  umask,
  unshare,
} from "@berth/sys";
import { HookKind, initHookState, runHooksSync } from "./hooks.js";
import { compileSeccompFor, execProcess, prepareProcess } from "./process-setup.js";
import { type InitConfig, SyncLineReader, sendSync } from "./protocol.js";
import { setupRootfs } from "./rootfs.js";

const CLONE_FS = 0x200;
// Linux open(2) flags Node's typings leave out (same values on x86_64 and aarch64).
const O_PATH = 0o10000000;
const O_CLOEXEC = 0o2000000;

// `/proc/self/cgroup` as controller list → path ("cpu,cpuacct" → "/x"), read before any cgroup
// namespace so the paths are the host's.
function readOwnCgroupLines(): Map<string, string> {
  const result = new Map<string, string>();
  for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    result.set(line.slice(first + 1, second), line.slice(second + 1));
  }
  return result;
}

// Namespaces with a path are joined first (user before the rest in runc; berth has no user
// namespaces); then the new ones are unshared in one call. The mount namespace can be joined by a
// thread only when it does not share its fs_struct with other threads, which is why CLONE_FS is
// unshared first: Node is multithreaded from its first instruction.
function enterNamespaces(cfg: InitConfig, skipCgroup: boolean): void {
  const namespaces = cfg.spec.linux?.namespaces ?? [];
  let flags = 0;
  for (const ns of namespaces) {
    if (ns.type === "pid") continue; // Done by the runtime before spawning us.
    if (ns.type === "user" || ns.type === "time")
      throw new SystemError({
        syscall: "unshare",
        errno: 95,
        hint: `${ns.type} namespaces are not supported by berth`,
      });
    if (ns.type === "cgroup" && skipCgroup) continue;
    if (ns.path !== undefined) {
      if (ns.type === "mount") unshare(CLONE_FS);
      joinNamespace(ns.path, ns.type as NamespaceType);
    } else {
      flags |= namespaceFlag(ns.type as NamespaceType);
    }
  }
  if (flags !== 0) unshare(flags);
}

// The container's terminal. For the init (`bindConsole`), the slave is also bound onto
// /dev/console as runc does, so `/dev/console` is the container's tty and not absent; an exec
// leaves the container's /dev alone, like runc's exec.
function setupConsole(cfg: InitConfig, socket: number | undefined, bindConsole: boolean): void {
  if (!cfg.process.terminal) return;
  const pty = openpty();
  if (cfg.process.consoleSize)
    setWinsize(pty.slave, cfg.process.consoleSize.height, cfg.process.consoleSize.width);
  if (bindConsole) {
    // O_EXCL: never open what is already there (a device node the spec asked for would be the
    // host's console); the bind covers it either way.
    try {
      closeSync(openSync("/dev/console", constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY, 0o666));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    mount(pty.slaveName, "/dev/console", null, MountFlag.BIND, null);
  }
  setsid();
  setControllingTerminal(pty.slave);
  for (let fd = 0; fd <= 2; fd++) dup2(pty.slave, fd);
  if (pty.slave > 2) closeSync(pty.slave);
  if (socket !== undefined) sendFd(socket, pty.master);
  closeSync(pty.master);
  if (socket !== undefined) closeSync(socket);
}

function runCreate(cfg: InitConfig, control: number, reader: SyncLineReader): never {
  const spec = cfg.spec;
  const hasCgroupNs = (spec.linux?.namespaces ?? []).some((ns) => ns.type === "cgroup");
  // Bind every libc function before the root changes: koffi resolves libc.so.6 by path.
  getpid();
  umask(0);
  enterNamespaces(cfg, true);
  sendSync(control, { type: "ready" });
  const next = reader.next();
  if (next?.type !== "continue") process.exit(1);
  // Now in the container's cgroups: a cgroup namespace made here has them as its root.
  const ownCgroups = readOwnCgroupLines();
  if (hasCgroupNs) {
    const cgroupNs = (spec.linux?.namespaces ?? []).find((ns) => ns.type === "cgroup");
    if (cgroupNs?.path !== undefined) joinNamespace(cgroupNs.path, "cgroup");
    else unshare(namespaceFlag("cgroup"));
  }
  // The console socket lives on the host: connect before the root changes.
  const consoleSocket =
    cfg.process.terminal && cfg.consoleSocket ? connectUnix(cfg.consoleSocket) : undefined;
  // Opened with O_PATH now, reopened for writing through /proc after the root switch, like runc.
  const fifo = cfg.execFifo ? openSync(cfg.execFifo, O_PATH | O_CLOEXEC) : -1;
  const seccomp = compileSeccompFor(spec.linux?.seccomp);
  setupRootfs({
    spec,
    rootfs: cfg.rootfs,
    bundle: cfg.bundle,
    noPivot: cfg.noPivot,
    ownCgroups,
    ...(spec.hooks !== undefined ? { beforeRootSwitch: () => runCreateHooks(cfg, control, reader) } : {}),
  });
  if (spec.hostname) sethostname(spec.hostname);
  if (spec.domainname) setdomainname(spec.domainname);
  setupConsole(cfg, consoleSocket, true);
  const prepared = prepareProcess(cfg.process);
  sendSync(control, { type: "created" });
  closeSync(control);
  if (fifo >= 0) {
    // Blocks until `start` opens the fifo for reading (runc's create/start split).
    const w = openSync(`/proc/self/fd/${fifo}`, constants.O_WRONLY | O_CLOEXEC);
    writeSync(w, "0");
    closeSync(fifo);
    // `w` stays open (close-on-exec) until execve: its EOF tells `start` that the process was
    // exec'd (for poststart), and a startContainer hook's error is written to it.
    runStartHooks(cfg, w);
  }
  return execProcess(prepared, cfg.preserveFds, seccomp);
}

// The runtime runs prestart and createRuntime (in its namespaces) while we wait; then
// createContainer runs here, in the container's mount namespace with the host's root still
// reachable, which is where runc runs all three: after the mounts, before pivot_root.
function runCreateHooks(cfg: InitConfig, control: number, reader: SyncLineReader): void {
  const hooks = cfg.spec.hooks;
  if ((hooks?.prestart?.length ?? 0) + (hooks?.createRuntime?.length ?? 0) > 0) {
    sendSync(control, { type: "hooks" });
    if (reader.next()?.type !== "continue") process.exit(1);
  }
  runHooksSync(HookKind.CreateContainer, hooks?.createContainer, initHookState(cfg, "creating"), {
    cwd: cfg.rootfs,
    defaultEnv: cfg.process.env ?? [],
  });
}

// startContainer hooks run after `start`, in the container (its root, cwd, user), before execve.
// Nobody listens on the control socket any more: a failure goes to `start` through the fifo.
function runStartHooks(cfg: InitConfig, fifo: number): void {
  try {
    runHooksSync(HookKind.StartContainer, cfg.spec.hooks?.startContainer, initHookState(cfg, "created"), {
      defaultEnv: cfg.process.env ?? [],
    });
  } catch (err) {
    // Exit here rather than through main(): the control socket is closed and its fd number
    // may have been reused.
    const msg = { type: "error" as const, code: errorCode(err), message: errorMessage(err) };
    try {
      writeSync(fifo, `${JSON.stringify(msg)}\n`);
    } catch {
      // `start` is gone: stderr is all that is left.
      process.stderr.write(`berth init: ${msg.message}\n`);
    }
    process.exit(127);
  }
}

function runExec(cfg: InitConfig, control: number): never {
  const target = cfg.targetPid ?? 0;
  // Join the container's namespaces through /proc/<pid>/ns, mount last: once in the container's
  // mount namespace, the host's /proc is no longer where it was.
  const order = ["cgroup", "ipc", "uts", "network", "mount"];
  const types = order.filter((t) => (cfg.joinNamespaces ?? []).includes(t));
  getpid();
  const fds = types.map((t) => ({
    t,
    fd: openSync(
      `/proc/${target}/ns/${t === "network" ? "net" : t === "mount" ? "mnt" : t}`,
      constants.O_RDONLY | O_CLOEXEC,
    ),
  }));
  const rootFd = cfg.chrootToTarget
    ? openSync(`/proc/${target}/root`, constants.O_RDONLY | constants.O_DIRECTORY)
    : -1;
  // The console socket lives on the host: connect before entering the container's mounts.
  const consoleSocket =
    cfg.process.terminal && cfg.consoleSocket ? connectUnix(cfg.consoleSocket) : undefined;
  unshare(CLONE_FS);
  for (const { t, fd } of fds) {
    joinNamespace(`/proc/self/fd/${fd}`, t as NamespaceType);
    closeSync(fd);
  }
  if (rootFd >= 0) {
    // The container was set up without pivot_root: its mount namespace's root is the host's, so
    // enter the init's root (a chroot) through the fd opened before the switch.
    process.chdir(`/proc/self/fd/${rootFd}`);
    chroot(".");
    closeSync(rootFd);
  }
  const seccomp = compileSeccompFor(cfg.spec.linux?.seccomp);
  setupConsole(cfg, consoleSocket, false);
  const prepared = prepareProcess(cfg.process);
  sendSync(control, { type: "created" });
  closeSync(control);
  return execProcess(prepared, cfg.preserveFds, seccomp);
}

function main(): void {
  const sep = process.argv.indexOf("--");
  const control = Number(process.argv[sep + 2]);
  if (sep < 0 || !Number.isInteger(control)) {
    process.stderr.write("berth init: usage: init.js -- <create|exec> <control fd>\n");
    process.exit(2);
  }
  const reader = new SyncLineReader(control);
  let cfg: InitConfig | undefined;
  try {
    const first = reader.next();
    if (first?.type !== "config") process.exit(1);
    cfg = first.config;
    if (cfg.mode === "exec") runExec(cfg, control);
    else runCreate(cfg, control, reader);
  } catch (err) {
    const msg = { type: "error" as const, code: errorCode(err), message: errorMessage(err) };
    try {
      sendSync(control, msg);
    } catch {
      // The runtime is gone (a container already created): stderr is all that is left.
      process.stderr.write(`berth init: ${msg.message}\n`);
    }
    process.exit(127);
  }
}

main();
