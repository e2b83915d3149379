import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import {
  chmodSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import type { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import {
  alreadyExists,
  failedPrecondition,
  invalidArgument,
  isNotFound,
  notFound,
  unavailable,
} from "@berth/errdefs";
import { joinNamespace, mknod, namespaceFlag, setns, unshare } from "@berth/sys";
import { type CgroupManager, createCgroupManager } from "./cgroups/manager.js";
import { readOnlyExecutable } from "./exe.js";
import { HookKind, hookState, runHooks, runHooksWarn } from "./hooks.js";
import { InitPool, type PoolOptions } from "./pool.js";
import { type FromInit, type InitConfig, InitMode, initError, type ToInit } from "./protocol.js";
import {
  type LinuxDeviceCgroup,
  type LinuxResources,
  type Process,
  type Spec,
  validateProcess,
  validateSpec,
} from "./spec.js";
import {
  type ContainerState,
  ContainerStatus,
  checkContainerId,
  initAlive,
  listIds,
  lockContainer,
  namespaceLink,
  readProcStat,
  readState,
  StateFile,
  type StateRecord,
  stateDir,
  writeState,
} from "./state.js";

/** Options of {@link createRuntime}. */
export interface RuntimeOptions {
  /** The state root, like runc's `--root` (runc's default is /run/runc). Created if missing. */
  readonly root: string;
  /**
   * Keep `size` inits spawned ahead in fresh PID namespaces (filled in the background from now
   * on) for creates that want a new PID namespace, no `preserveFds` and the runtime's own stdio;
   * other creates spawn their init as usual. Call {@link Runtime.close} to kill the idle ones
   * (they also exit on their own when this process does).
   */
  readonly pool?: PoolOptions;
  /**
   * Where warnings go: failed poststart and poststop hooks, which the spec says must not fail
   * the operation. Default: a `berth: warning: …` line on stderr.
   */
  readonly warn?: (message: string) => void;
}

/** Where a container's stdin, stdout and stderr come from. */
export type StdioSpec = "inherit" | readonly [number | "inherit", number | "inherit", number | "inherit"];

/** Options of {@link Runtime.create} and {@link Runtime.run}, named like runc's flags. */
export interface CreateOptions {
  /** Write the init's pid (in the caller's pid namespace) to this file. */
  readonly pidFile?: string;
  /** A unix socket that receives the pty master when `process.terminal` is true. */
  readonly consoleSocket?: string;
  /** Use MS_MOVE + chroot instead of pivot_root (for a rootfs on a ramdisk). */
  readonly noPivot?: boolean;
  /** Pass the caller's fds 3 .. 3+N-1 into the container. */
  readonly preserveFds?: number;
  /** The container's stdio; the caller's own by default (runc's pass-through). */
  readonly stdio?: StdioSpec;
}

/** Options of {@link Runtime.run}. */
export interface RunOptions extends CreateOptions {
  /**
   * Called once the container is created and before it starts, with its state (the init's pid):
   * where its network is set up. When it throws, the container is deleted and run rejects with
   * that error.
   */
  readonly beforeStart?: (state: ContainerState) => Promise<void> | void;
}

/** Options of {@link Runtime.exec}. */
export interface ExecOptions {
  readonly pidFile?: string;
  readonly consoleSocket?: string;
  /** Return once the process runs instead of waiting for it (the result is then 0). */
  readonly detach?: boolean;
  readonly preserveFds?: number;
  readonly stdio?: StdioSpec;
}

/**
 * A runc-like OCI runtime over one state root. Every method takes the container's lock for what
 * it changes, so several processes (berth-runc invocations, a shim) may share a root.
 */
export interface Runtime {
  /** The state root. */
  readonly root: string;
  /**
   * Creates container `id` from the bundle: validates config.json, starts the init in new
   * namespaces, puts it in its cgroups, sets up the rootfs and the process, and leaves it blocked
   * on `<root>/<id>/exec.fifo` until {@link Runtime.start}. Throws `already-exists` for a used id,
   * `invalid-argument` for a bad config, the init's error (with its code) when setup fails; a
   * failed create leaves no state dir, cgroup or process behind.
   */
  create(id: string, bundle: string, options?: CreateOptions): Promise<ContainerState>;
  /** Lets a created container's process run. `failed-precondition` unless it is `created`. */
  start(id: string): Promise<void>;
  /**
   * create + start + wait, forwarding SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and
   * SIGWINCH to the container; deletes the container when it exits. Resolves to its exit code
   * (128 + signal when killed by a signal).
   */
  run(id: string, bundle: string, options?: RunOptions): Promise<number>;
  /** The OCI state. `not-found` for an unknown id. */
  state(id: string): ContainerState;
  /**
   * Sends `signal` (a number or a name like `SIGTERM`/`TERM`) to the init, or with `all` to every
   * process of the container's cgroup. `failed-precondition` when the container is stopped.
   */
  kill(id: string, signal: string | number, options?: { readonly all?: boolean }): Promise<void>;
  /**
   * Removes a stopped or created container (its init is killed), or any container with `force`
   * (SIGKILL to all its processes first): cgroups and the state dir go. `failed-precondition`
   * for a running or paused one without `force`.
   */
  delete(id: string, options?: { readonly force?: boolean }): Promise<void>;
  /** The states of every container under the root, by id. */
  list(): ContainerState[];
  /** The pids (caller's namespace) of the container's processes. */
  ps(id: string): number[];
  /** Freezes the container's cgroup. `failed-precondition` unless running. */
  pause(id: string): Promise<void>;
  /** Thaws a paused container. `failed-precondition` unless paused. */
  resume(id: string): Promise<void>;
  /**
   * Runs `process` inside a created or running container: a fresh Node helper starts in the
   * container's pid namespace and cgroups, joins its other namespaces by /proc/<init>/ns, sets up
   * the process like the init does and execs it. Resolves to the exit code (0 at once with
   * `detach`). User namespaces cannot be joined (a multithreaded process may not setns into one).
   */
  exec(id: string, process: Process, options?: ExecOptions): Promise<number>;
  /** Kills the idle pooled inits (by pid) and waits for them; containers are left alone. */
  close(): Promise<void>;
}

const { S_IFIFO } = constants;

// The init runs as a separate Node program. Under vitest this module is the TypeScript source,
// so the init is taken from the package's build output.
function initEntry(): string {
  const here = fileURLToPath(import.meta.url);
  const file = here.endsWith(".ts")
    ? join(dirname(here), "..", "dist", "init.js")
    : join(dirname(here), "init.js");
  if (!existsSync(file))
    throw notFound(`berth runtime init ${file} is missing: build @berth/runtime (npx tsc -b)`);
  return file;
}

// Messages from the init, one JSON object per line, and the init's exit.
class Control {
  private buffer = "";
  private readonly queue: FromInit[] = [];
  private waiter: ((m: FromInit | undefined) => void) | undefined;
  private closed = false;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(
    private readonly socket: Socket,
    child: ChildProcess,
  ) {
    socket.setEncoding("utf8");
    socket.on("data", (chunk: string) => {
      this.buffer += chunk;
      for (let nl = this.buffer.indexOf("\n"); nl >= 0; nl = this.buffer.indexOf("\n")) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        this.push(JSON.parse(line) as FromInit);
      }
    });
    const done = () => {
      this.closed = true;
      this.flush();
    };
    socket.on("close", done);
    socket.on("error", done);
    child.on("exit", (code, signal) => {
      this.exit = { code, signal };
      done();
    });
  }

  private push(m: FromInit): void {
    this.queue.push(m);
    this.flush();
  }

  private flush(): void {
    if (!this.waiter) return;
    const m = this.queue.shift();
    if (m === undefined && !this.closed) return;
    const w = this.waiter;
    this.waiter = undefined;
    w(m);
  }

  next(): Promise<FromInit | undefined> {
    return new Promise((resolveNext) => {
      this.waiter = resolveNext;
      this.flush();
    });
  }

  send(m: ToInit): void {
    this.socket.write(`${JSON.stringify(m)}\n`);
  }

  close(): void {
    this.socket.destroy();
  }
}

function stdioFor(spec: StdioSpec | undefined, preserveFds: number): StdioOptions {
  const base = spec === undefined || spec === "inherit" ? ["inherit", "inherit", "inherit"] : [...spec];
  const out: (number | string)[] = [...base];
  for (let i = 0; i < preserveFds; i++) out.push(3 + i);
  out.push("pipe");
  return out as StdioOptions;
}

// Spawns a Node helper (the init, or an exec helper) with a minimal environment: variables like
// NODE_OPTIONS or NODE_EXTRA_CA_CERTS would change or slow its start, and the container's env is
// sent separately. The pid namespace for the child is set around the spawn on this (main) thread.
function spawnHelper(
  mode: InitMode,
  pidNs: { readonly join?: string; readonly create?: boolean },
  stdio: StdioOptions,
  controlFd: number,
): ChildProcess {
  let original: number | undefined;
  if (pidNs.join !== undefined || pidNs.create) {
    original = openSync("/proc/self/ns/pid", constants.O_RDONLY);
  }
  try {
    if (pidNs.join !== undefined) joinNamespace(pidNs.join, "pid");
    else if (pidNs.create) unshare(namespaceFlag("pid"));
    // From a read-only view of node: the container can see this process (its /proc/<pid>/exe)
    // until it execs the container's program, and must not be able to write the host's binary.
    return spawn(readOnlyExecutable(), [initEntry(), "--", mode, String(controlFd)], {
      stdio,
      env: {},
      cwd: "/",
      argv0: "node",
    });
  } finally {
    if (original !== undefined) {
      setns(original, namespaceFlag("pid"));
      closeSync(original);
    }
  }
}

// What runc's specconv adds after the spec's own device rules: mknod of anything (the init
// creates /dev), the default devices, ptys, and the spec's linux.devices.
const ALLOWED_DEVICES: readonly LinuxDeviceCgroup[] = [
  { allow: true, type: "c", access: "m" },
  { allow: true, type: "b", access: "m" },
  { allow: true, type: "c", major: 1, minor: 3, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 8, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 7, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 0, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 5, access: "rwm" },
  { allow: true, type: "c", major: 1, minor: 9, access: "rwm" },
  { allow: true, type: "c", major: 136, access: "rwm" },
  { allow: true, type: "c", major: 5, minor: 2, access: "rwm" },
  { allow: true, type: "c", major: 10, minor: 200, access: "rwm" },
];

function withAllowedDevices(spec: Spec): LinuxResources {
  const resources = spec.linux?.resources ?? {};
  const own = (spec.linux?.devices ?? [])
    .filter((d) => d.type === "c" || d.type === "b")
    .map(
      (d): LinuxDeviceCgroup => ({
        allow: true,
        type: d.type,
        major: d.major ?? 0,
        minor: d.minor ?? 0,
        access: "rwm",
      }),
    );
  return { ...resources, devices: [...(resources.devices ?? []), ...ALLOWED_DEVICES, ...own] };
}

function statusOf(root: string, rec: StateRecord): ContainerStatus {
  if (!initAlive(rec)) return ContainerStatus.Stopped;
  if (existsSync(join(stateDir(root, rec.id), StateFile.ExecFifo))) return ContainerStatus.Created;
  if (rec.paused) return ContainerStatus.Paused;
  return ContainerStatus.Running;
}

function toState(root: string, rec: StateRecord): ContainerState {
  const status = statusOf(root, rec);
  const spec = rec.config as Spec;
  const uid = spec.process?.user.uid ?? 0;
  return {
    ociVersion: spec.ociVersion,
    id: rec.id,
    status,
    pid: status === ContainerStatus.Stopped ? 0 : rec.pid,
    bundle: rec.bundle,
    ...(rec.annotations ? { annotations: rec.annotations } : {}),
    created: rec.created,
    rootfs: rec.rootfs,
    owner: uid === 0 ? "" : String(uid),
  };
}

function writePidFile(path: string, pid: number): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, String(pid));
  renameSync(tmp, path);
}

function signalName(signal: NodeJS.Signals | null): number {
  if (signal === null) return 0;
  return osConstants.signals[signal] ?? 0;
}

function cgroupsOf(rec: StateRecord): CgroupManager | undefined {
  if (rec.cgroupPaths === undefined) return undefined;
  return createCgroupManager(undefined, rec.id, { paths: rec.cgroupPaths });
}

async function waitGone(rec: StateRecord, what: string): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (!initAlive(rec)) return;
    await sleep(Math.min(2 + i, 20));
  }
  throw unavailable(`container ${rec.id}: init ${rec.pid} did not exit after ${what}`);
}

function parseSignal(signal: string | number): number {
  if (typeof signal === "number") return signal;
  if (/^\d+$/.test(signal)) return Number(signal);
  const upper = signal.toUpperCase();
  const name = (upper.startsWith("SIG") ? upper : `SIG${upper}`) as NodeJS.Signals;
  const n = osConstants.signals[name];
  if (n === undefined) throw invalidArgument(`unknown signal ${JSON.stringify(signal)}`);
  return n;
}

// A pooled init: spawned with the runtime's stdio and control fd 3, waiting for its config.
interface PooledInit {
  readonly child: ChildProcess;
  readonly control: Control;
  readonly socket: Socket;
}

function spawnPooledInit(): PooledInit {
  const child = spawnHelper(InitMode.Create, { create: true }, stdioFor("inherit", 0), 3);
  const socket = child.stdio[3] as Socket;
  const control = new Control(socket, child);
  // Idle inits must not keep this process alive; they exit on EOF when it goes.
  child.unref();
  socket.unref();
  return { child, control, socket };
}

async function destroyPooledInit(m: PooledInit): Promise<void> {
  if (m.child.exitCode === null && m.child.signalCode === null) {
    m.child.ref();
    const exited = new Promise((r) => m.child.once("exit", r));
    try {
      process.kill(m.child.pid as number, "SIGKILL");
    } catch {
      // Exited meanwhile.
    }
    await exited;
  }
  m.control.close();
}

function inheritsStdio(spec: StdioSpec | undefined): boolean {
  return spec === undefined || spec === "inherit" || spec.every((s, i) => s === "inherit" || s === i);
}

function warnOnStderr(message: string): void {
  process.stderr.write(`berth: warning: ${message}\n`);
}

// The state a runtime-namespace hook reads. Those hooks run with the bundle as cwd: runc's, as
// `runc create` and `runc run` chdir into the bundle.
function runtimeHookState(spec: Spec, id: string, bundle: string, status: ContainerStatus, pid: number) {
  return hookState({ ociVersion: spec.ociVersion, id, status, pid, bundle, annotations: spec.annotations });
}

// With startContainer or poststart hooks, `start` waits until the init has exec'd: the init keeps
// its end of the fifo open (close-on-exec) through the startContainer hooks, so EOF means the
// process was exec'd or the init died; a hook's failure arrives first, as one JSON line.
async function awaitExec(id: string, fd: number): Promise<void> {
  const buf = Buffer.alloc(4096);
  let text = "";
  for (let i = 0; ; i++) {
    let n = -1;
    try {
      n = readSync(fd, buf, 0, buf.length, null);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
    }
    if (n === 0) break;
    if (n > 0) text += buf.toString("utf8", 0, n);
    else await sleep(Math.min(1 + i, 10));
  }
  const line = text.split("\n")[0] ?? "";
  if (line.trim() !== "") throw initError(id, JSON.parse(line) as Extract<FromInit, { type: "error" }>);
}

class LocalRuntime implements Runtime {
  private readonly pool: InitPool<PooledInit> | undefined;

  constructor(
    readonly root: string,
    pool?: PoolOptions,
    private readonly warn: (message: string) => void = warnOnStderr,
  ) {
    this.pool =
      pool === undefined
        ? undefined
        : new InitPool(pool, {
            spawn: spawnPooledInit,
            alive: (m) =>
              m.child.exitCode === null && m.child.signalCode === null && m.control.exit === undefined,
            destroy: destroyPooledInit,
          });
    this.pool?.fill();
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }

  async create(id: string, bundle: string, options: CreateOptions = {}): Promise<ContainerState> {
    const created = await this.createInit(id, bundle, options);
    created.control.close();
    created.child.unref();
    return created.state;
  }

  private async createInit(
    id: string,
    bundleArg: string,
    options: CreateOptions,
  ): Promise<{ state: ContainerState; child: ChildProcess; control: Control }> {
    checkContainerId(id);
    const bundle = resolve(bundleArg);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8"));
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "ENOENT")
        throw notFound(`bundle ${bundle} has no config.json`, { cause });
      throw invalidArgument(`bundle ${bundle}: config.json is not valid JSON: ${String(cause)}`, { cause });
    }
    const spec = validateSpec(raw);
    const process_ = spec.process as Process;
    const rootfs = resolve(bundle, spec.root?.path ?? "rootfs");
    if (!existsSync(rootfs) || !statSync(rootfs).isDirectory())
      throw notFound(`bundle ${bundle}: root.path ${rootfs} is not a directory`);
    if (process_.terminal && options.consoleSocket === undefined)
      throw invalidArgument("process.terminal is true but no console socket was given (--console-socket)");
    const preserveFds = options.preserveFds ?? 0;
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    const dir = stateDir(this.root, id);
    try {
      mkdirSync(dir, { mode: 0o711 });
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === "EEXIST")
        throw alreadyExists(`container ${id} already exists (state dir ${dir})`, { cause });
      throw cause;
    }
    const lock = await lockContainer(this.root, id);
    let child: ChildProcess | undefined;
    let cgroups: CgroupManager | undefined;
    try {
      const fifo = join(dir, StateFile.ExecFifo);
      mknod(fifo, S_IFIFO | 0o622);
      chmodSync(fifo, 0o622);
      const namespaces = spec.linux?.namespaces ?? [];
      const pidNs = namespaces.find((ns) => ns.type === "pid");
      const controlFd = 3 + preserveFds;
      const pooled =
        pidNs !== undefined && pidNs.path === undefined && preserveFds === 0 && inheritsStdio(options.stdio)
          ? this.pool?.take()
          : undefined;
      let control: Control;
      if (pooled !== undefined) {
        child = pooled.child;
        control = pooled.control;
        child.ref();
        pooled.socket.ref();
      } else {
        child = spawnHelper(
          InitMode.Create,
          pidNs === undefined ? {} : pidNs.path !== undefined ? { join: pidNs.path } : { create: true },
          stdioFor(options.stdio, preserveFds),
          controlFd,
        );
        control = new Control(child.stdio[controlFd] as Socket, child);
      }
      const cfg: InitConfig = {
        mode: InitMode.Create,
        id,
        spec,
        bundle,
        rootfs,
        execFifo: fifo,
        noPivot: options.noPivot === true,
        preserveFds,
        ...(options.consoleSocket !== undefined ? { consoleSocket: resolve(options.consoleSocket) } : {}),
        process: process_,
      };
      control.send({ type: "config", config: cfg });
      const ready = await control.next();
      await this.expect(id, ready, "ready", control);
      const pid = child.pid as number;
      cgroups = createCgroupManager(spec.linux?.cgroupsPath, id);
      cgroups.apply(pid);
      cgroups.set(withAllowedDevices(spec));
      const record: StateRecord = {
        version: 1,
        id,
        bundle,
        rootfs,
        created: new Date().toISOString(),
        ...(spec.annotations ? { annotations: spec.annotations } : {}),
        pid,
        initStartTime: readProcStat(pid)?.startTime ?? 0,
        cgroupPaths: cgroups.paths,
        noPivot: options.noPivot === true,
        paused: false,
        namespaces: namespaces.map((ns) => ({
          type: ns.type,
          ...(ns.path !== undefined ? { path: ns.path } : {}),
        })),
        config: spec,
      };
      writeState(this.root, record);
      control.send({ type: "continue" });
      let msg = await control.next();
      if (msg?.type === "hooks") {
        // The init's mounts are done and its root not yet switched (init.ts runCreateHooks).
        const state = runtimeHookState(spec, id, bundle, ContainerStatus.Creating, pid);
        await runHooks(HookKind.Prestart, spec.hooks?.prestart, state, { cwd: bundle });
        await runHooks(HookKind.CreateRuntime, spec.hooks?.createRuntime, state, { cwd: bundle });
        control.send({ type: "continue" });
        msg = await control.next();
      }
      await this.expect(id, msg, "created", control);
      if (options.pidFile) writePidFile(resolve(options.pidFile), pid);
      return { state: toState(this.root, record), child, control };
    } catch (err) {
      if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child?.once("exit", r));
        child.kill("SIGKILL");
        await exited;
      }
      await cgroups?.destroy().catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
      // runc destroys a container whose create failed, and that runs its poststop hooks.
      await this.poststop(spec, id, bundle);
      throw err;
    } finally {
      lock.release();
    }
  }

  private async expect(id: string, msg: FromInit | undefined, want: "ready" | "created", control: Control) {
    if (msg?.type === want) return;
    if (msg?.type === "error") throw initError(id, msg);
    // The init died without a word: wait for its exit status to say how.
    for (let i = 0; i < 100 && control.exit === undefined; i++) await sleep(5);
    const how = control.exit
      ? control.exit.signal
        ? `was killed by ${control.exit.signal}`
        : `exited with code ${control.exit.code}`
      : "closed its control socket";
    throw unavailable(`container ${id}: init ${how} before it was ${want}`);
  }

  async start(id: string): Promise<void> {
    const lock = await lockContainer(this.root, id);
    let started: StateRecord;
    try {
      const rec = readState(this.root, id);
      const status = statusOf(this.root, rec);
      if (status !== ContainerStatus.Created)
        throw failedPrecondition(`cannot start container ${id}: it is ${status}, not created`);
      const fifo = join(stateDir(this.root, id), StateFile.ExecFifo);
      // Non-blocking open succeeds without a writer; the init, blocked in its open for writing,
      // then proceeds and writes one byte. Poll so a dead init cannot hang us.
      const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      try {
        const buf = Buffer.alloc(1);
        for (let i = 0; ; i++) {
          let n = 0;
          try {
            n = readSync(fd, buf, 0, 1, null);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
          }
          if (n === 1) break;
          if (!initAlive(rec)) throw failedPrecondition(`cannot start container ${id}: its init has exited`);
          await sleep(Math.min(1 + i, 10));
        }
        const hooks = (rec.config as Spec).hooks;
        if ((hooks?.startContainer?.length ?? 0) + (hooks?.poststart?.length ?? 0) > 0)
          await awaitExec(id, fd);
      } finally {
        closeSync(fd);
      }
      unlinkSync(fifo);
      started = rec;
    } finally {
      lock.release();
    }
    const spec = started.config as Spec;
    if (spec.hooks?.poststart?.length) {
      const state = runtimeHookState(spec, id, started.bundle, ContainerStatus.Running, started.pid);
      await runHooksWarn(HookKind.Poststart, spec.hooks.poststart, state, { cwd: started.bundle }, this.warn);
    }
  }

  // poststop hooks, after the container is gone: failures are warnings (runtime-spec).
  private async poststop(spec: Spec, id: string, bundle: string): Promise<void> {
    if (!spec.hooks?.poststop?.length) return;
    const state = runtimeHookState(spec, id, bundle, ContainerStatus.Stopped, 0);
    await runHooksWarn(HookKind.Poststop, spec.hooks.poststop, state, { cwd: bundle }, this.warn);
  }

  async run(id: string, bundle: string, options: RunOptions = {}): Promise<number> {
    const { child, control } = await this.createInit(id, bundle, options);
    control.close();
    const exited = new Promise<number>((resolveExit) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) =>
        resolveExit(code ?? 128 + signalName(signal));
      if (child.exitCode !== null || child.signalCode !== null) done(child.exitCode, child.signalCode);
      else child.once("exit", done);
    });
    const forwarded = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH"] as const;
    const forward = (sig: NodeJS.Signals) => {
      try {
        if (child.pid !== undefined) process.kill(child.pid, sig);
      } catch {
        // Already gone.
      }
    };
    for (const sig of forwarded) process.on(sig, forward);
    try {
      if (options.beforeStart !== undefined) await options.beforeStart(this.state(id));
      await this.start(id);
      return await exited;
    } finally {
      for (const sig of forwarded) process.off(sig, forward);
      await this.delete(id, { force: true });
    }
  }

  state(id: string): ContainerState {
    return toState(this.root, readState(this.root, id));
  }

  async kill(id: string, signal: string | number, options: { readonly all?: boolean } = {}): Promise<void> {
    const sig = parseSignal(signal);
    const rec = readState(this.root, id);
    const status = statusOf(this.root, rec);
    if (status === ContainerStatus.Stopped)
      throw failedPrecondition(`cannot kill container ${id}: it is not running`);
    const pids = options.all ? this.ps(id) : [rec.pid];
    for (const pid of pids) {
      try {
        process.kill(pid, sig);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    }
  }

  async delete(id: string, options: { readonly force?: boolean } = {}): Promise<void> {
    const rec = readState(this.root, id);
    const lock = await lockContainer(this.root, id);
    try {
      const status = statusOf(this.root, rec);
      if ((status === ContainerStatus.Running || status === ContainerStatus.Paused) && !options.force)
        throw failedPrecondition(
          `cannot delete container ${id} that is ${status}: stop it first or use force`,
        );
      const cgroups = cgroupsOf(rec);
      if (status !== ContainerStatus.Stopped) {
        if (status === ContainerStatus.Paused) await cgroups?.thaw();
        const pids = new Set([rec.pid, ...(cgroups?.exists() ? cgroups.pids() : [])]);
        for (const pid of pids) {
          try {
            process.kill(pid, "SIGKILL");
          } catch {
            // Gone already.
          }
        }
        await waitGone(rec, "SIGKILL");
      }
      if (cgroups) await cgroups.destroy();
      rmSync(stateDir(this.root, id), { recursive: true, force: true });
    } finally {
      lock.release();
    }
    await this.poststop(rec.config as Spec, id, rec.bundle);
  }

  list(): ContainerState[] {
    const out: ContainerState[] = [];
    for (const id of listIds(this.root)) {
      try {
        out.push(this.state(id));
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return out;
  }

  ps(id: string): number[] {
    const rec = readState(this.root, id);
    if (!initAlive(rec)) return [];
    const cgroups = cgroupsOf(rec);
    if (cgroups?.exists()) return cgroups.pids().sort((a, b) => a - b);
    return [rec.pid];
  }

  async pause(id: string): Promise<void> {
    const lock = await lockContainer(this.root, id);
    try {
      const rec = readState(this.root, id);
      const status = statusOf(this.root, rec);
      if (status !== ContainerStatus.Running)
        throw failedPrecondition(`cannot pause container ${id}: it is ${status}`);
      const cgroups = cgroupsOf(rec);
      if (!cgroups) throw failedPrecondition(`cannot pause container ${id}: it has no cgroups`);
      await cgroups.freeze();
      writeState(this.root, { ...rec, paused: true });
    } finally {
      lock.release();
    }
  }

  async resume(id: string): Promise<void> {
    const lock = await lockContainer(this.root, id);
    try {
      const rec = readState(this.root, id);
      const status = statusOf(this.root, rec);
      if (status !== ContainerStatus.Paused)
        throw failedPrecondition(`cannot resume container ${id}: it is ${status}`);
      await cgroupsOf(rec)?.thaw();
      writeState(this.root, { ...rec, paused: false });
    } finally {
      lock.release();
    }
  }

  async exec(id: string, proc: Process, options: ExecOptions = {}): Promise<number> {
    validateProcess(proc);
    const rec = readState(this.root, id);
    const status = statusOf(this.root, rec);
    if (status !== ContainerStatus.Running && status !== ContainerStatus.Created)
      throw failedPrecondition(`cannot exec in container ${id}: it is ${status}`);
    if (proc.terminal && options.consoleSocket === undefined)
      throw invalidArgument("process.terminal is true but no console socket was given (--console-socket)");
    const spec = rec.config as Spec;
    // Join exactly the namespaces in which the init differs from us.
    const join = ["cgroup", "ipc", "uts", "network", "mount"].filter((t) => {
      const proc = t === "network" ? "net" : t === "mount" ? "mnt" : t;
      return namespaceLink(rec.pid, proc) !== namespaceLink("self", proc);
    });
    const ownPid = namespaceLink(rec.pid, "pid") !== namespaceLink("self", "pid");
    const preserveFds = options.preserveFds ?? 0;
    const controlFd = 3 + preserveFds;
    const child = spawnHelper(
      InitMode.Exec,
      ownPid ? { join: `/proc/${rec.pid}/ns/pid` } : {},
      stdioFor(options.stdio, preserveFds),
      controlFd,
    );
    const control = new Control(child.stdio[controlFd] as Socket, child);
    const exited = new Promise<number>((resolveExit) => {
      child.once("exit", (code, signal) => resolveExit(code ?? 128 + signalName(signal)));
    });
    try {
      cgroupsOf(rec)?.apply(child.pid as number);
      control.send({
        type: "config",
        config: {
          mode: InitMode.Exec,
          id,
          spec,
          bundle: rec.bundle,
          rootfs: rec.rootfs,
          noPivot: rec.noPivot,
          preserveFds,
          ...(options.consoleSocket !== undefined ? { consoleSocket: resolve(options.consoleSocket) } : {}),
          process: proc,
          targetPid: rec.pid,
          joinNamespaces: join,
          chrootToTarget: rec.noPivot,
        },
      });
      await this.expect(id, await control.next(), "created", control);
    } catch (err) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
      throw err;
    } finally {
      control.close();
    }
    if (options.pidFile) writePidFile(resolve(options.pidFile), child.pid as number);
    if (options.detach) {
      child.unref();
      return 0;
    }
    return exited;
  }
}

/**
 * A runtime over the state root `options.root` (created on first use). No I/O until a method
 * is called, except that with `options.pool` the pool starts filling in the background. Throws
 * `invalid-argument` for an empty root or a pool size outside 1..64.
 */
export function createRuntime(options: RuntimeOptions): Runtime {
  if (!options.root) throw invalidArgument("createRuntime: root must be a non-empty path");
  return new LocalRuntime(resolve(options.root), options.pool, options.warn);
}
