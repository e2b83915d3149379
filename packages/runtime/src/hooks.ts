/**
 * OCI runtime-spec hooks (config.md "POSIX-platform Hooks"), run the way runc 1.1 runs them: the
 * container's state as JSON on stdin, `path` executed with `args` as its whole argv (argv[0]
 * included; `[path]` when empty), `env` as its whole environment, stdout and stderr captured for
 * the error message, SIGKILL after `timeout` seconds. The first failing hook of a list stops the
 * list; the caller decides whether that is fatal (create/start) or only a warning (poststart,
 * poststop).
 *
 * Where each kind runs, and what it sees (as runc 1.1 does it, measured on this machine):
 *
 * | kind            | runs in                                       | status   | pid        | cwd            |
 * | --------------- | --------------------------------------------- | -------- | ---------- | -------------- |
 * | prestart        | the runtime, after the mounts, before pivot   | creating | init (host)| bundle         |
 * | createRuntime   | the runtime, right after prestart             | creating | init (host)| bundle         |
 * | createContainer | the init (container mount ns), before pivot   | creating | 1          | rootfs (host)  |
 * | startContainer  | the init after `start`, before execve         | created  | 1          | process.cwd    |
 * | poststart       | the runtime, once the process was exec'd      | running  | init (host)| bundle         |
 * | poststop        | the runtime, after delete removed everything  | stopped  | (absent)   | bundle         |
 *
 * A hook without `env` inherits the environment of whoever runs it, as Go's exec does in runc:
 * the runtime's for runtime-namespace hooks, the container process's env for the init's hooks.
 *
 * @internal
 */
import { type ChildProcess, type SpawnSyncReturns, spawn, spawnSync } from "node:child_process";
import { aborted, type BerthError, notFound, permissionDenied } from "@berth/errdefs";
import type { Hook, Hooks, Spec } from "./spec.js";
import type { ContainerStatus } from "./state.js";

/** The hook lists of `config.json`, in the order the lifecycle reaches them. */
export const HookKind = {
  Prestart: "prestart",
  CreateRuntime: "createRuntime",
  CreateContainer: "createContainer",
  StartContainer: "startContainer",
  Poststart: "poststart",
  Poststop: "poststop",
} as const satisfies Record<string, keyof Hooks>;
/** One of {@link HookKind}. */
export type HookKind = (typeof HookKind)[keyof typeof HookKind];

/**
 * The state a hook reads on stdin: exactly the runtime spec's `state` (runc marshals
 * `specs.State`), so no berth extras like `created` or `rootfs`. `pid` is left out when 0 (Go's
 * `omitempty`), as in runc's poststop state.
 */
export interface HookState {
  readonly ociVersion: string;
  readonly id: string;
  readonly status: ContainerStatus;
  readonly pid?: number;
  readonly bundle: string;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** How {@link runHooks} and {@link runHooksSync} run a list. */
export interface HookRunOptions {
  /** The hooks' working directory; the caller's own when absent. */
  readonly cwd?: string;
  /**
   * The environment of a hook that has no `env` of its own, as `KEY=value` strings; the caller's
   * `process.env` when absent.
   */
  readonly defaultEnv?: readonly string[];
}

/**
 * Builds the state a hook gets, with the field order of runc's JSON and `pid`/`annotations`
 * omitted when 0/empty.
 */
export function hookState(fields: {
  readonly ociVersion: string;
  readonly id: string;
  readonly status: ContainerStatus;
  readonly pid: number;
  readonly bundle: string;
  readonly annotations?: Readonly<Record<string, string>> | undefined;
}): HookState {
  const annotations = fields.annotations;
  return {
    ociVersion: fields.ociVersion,
    id: fields.id,
    status: fields.status,
    ...(fields.pid > 0 ? { pid: fields.pid } : {}),
    bundle: fields.bundle,
    ...(annotations !== undefined && Object.keys(annotations).length > 0 ? { annotations } : {}),
  };
}

/**
 * The state for the hooks the init runs (createContainer, startContainer): the pid is the init's
 * own `getpid()`, 1 in a new pid namespace, as runc's init reports it.
 */
export function initHookState(
  cfg: { readonly id: string; readonly bundle: string; readonly spec: Spec },
  status: ContainerStatus,
): HookState {
  return hookState({
    ociVersion: cfg.spec.ociVersion,
    id: cfg.id,
    status,
    pid: process.pid,
    bundle: cfg.bundle,
    annotations: cfg.spec.annotations,
  });
}

// Enough of a hook's output to say why it failed, without holding a chatty hook's whole output.
const OUTPUT_LIMIT = 4096;

function envObject(env: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of env) {
    const eq = pair.indexOf("=");
    // A string without "=" is no variable; Node cannot pass it and Go's exec would not either
    // in a form a program can read back with getenv.
    if (eq > 0) out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

function hookEnv(hook: Hook, options: HookRunOptions): NodeJS.ProcessEnv {
  if (hook.env !== undefined) return envObject(hook.env);
  if (options.defaultEnv !== undefined) return envObject(options.defaultEnv);
  return process.env;
}

function argvOf(hook: Hook): { argv0: string; rest: string[] } {
  const args = hook.args ?? [];
  return { argv0: args[0] ?? hook.path, rest: args.slice(1) };
}

function describe(kind: HookKind, index: number, hook: Hook): string {
  return `${kind} hook #${index} (${hook.path})`;
}

function tailOf(text: string): string {
  const t = text.length > OUTPUT_LIMIT ? `…${text.slice(-OUTPUT_LIMIT)}` : text;
  return t.trimEnd();
}

function outputNote(stdout: string, stderr: string): string {
  const parts: string[] = [];
  if (stderr.trim() !== "") parts.push(`stderr: ${tailOf(stderr)}`);
  if (stdout.trim() !== "") parts.push(`stdout: ${tailOf(stdout)}`);
  return parts.length > 0 ? `; ${parts.join("; ")}` : "";
}

/** The error a hook that could not be started throws: `not-found`, `permission-denied` or `aborted`. */
function spawnError(what: string, cause: NodeJS.ErrnoException): BerthError {
  const message = `${what} could not be run: ${cause.code ?? cause.message}`;
  if (cause.code === "ENOENT") return notFound(message, { cause });
  if (cause.code === "EACCES") return permissionDenied(message, { cause });
  return aborted(message, { cause });
}

function exitError(
  what: string,
  code: number | null,
  signal: string | null,
  stdout: string,
  stderr: string,
): BerthError {
  const how = signal !== null ? `was killed by ${signal}` : `exited with status ${code}`;
  return aborted(`${what} ${how}${outputNote(stdout, stderr)}`);
}

function timeoutError(what: string, seconds: number): BerthError {
  // runc: "hook ran past specified timeout of 1.0s".
  return aborted(`${what} ran past its timeout of ${seconds.toFixed(1)}s and was killed`);
}

/**
 * Runs `hooks` (a list of config.json's `hooks.<kind>`) one after the other, synchronously, on the
 * calling thread: the container init uses this for createContainer and startContainer, because a
 * child forked from the init's main thread shares that thread's namespaces, root and cwd (libuv's
 * worker threads stayed in the runtime's mount namespace, see init.ts). Throws on the first hook
 * that fails: `not-found` (no such file), `permission-denied` (not executable) or `aborted`
 * (non-zero exit, killed, or past its timeout), the message naming kind, index and path.
 */
export function runHooksSync(
  kind: HookKind,
  hooks: readonly Hook[] | undefined,
  state: HookState,
  options: HookRunOptions = {},
): void {
  const input = JSON.stringify(state);
  for (const [i, hook] of (hooks ?? []).entries()) {
    const what = describe(kind, i, hook);
    const { argv0, rest } = argvOf(hook);
    const r: SpawnSyncReturns<string> = spawnSync(hook.path, rest, {
      argv0,
      input,
      env: hookEnv(hook, options),
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      encoding: "utf8",
      stdio: "pipe",
      maxBuffer: 16 * 1024 * 1024,
      killSignal: "SIGKILL",
      ...(hook.timeout !== undefined ? { timeout: hook.timeout * 1000 } : {}),
    });
    // EPIPE: the hook exited without reading all of its stdin, which is its right; its status
    // is what counts.
    const raw = r.error as NodeJS.ErrnoException | undefined;
    const err = raw?.code === "EPIPE" && (r.status !== null || r.signal !== null) ? undefined : raw;
    if (err?.code === "ETIMEDOUT" && hook.timeout !== undefined) throw timeoutError(what, hook.timeout);
    if (err !== undefined && r.pid === 0) throw spawnError(what, err);
    if (err !== undefined) throw aborted(`${what} failed: ${err.message}`, { cause: err });
    if (r.status !== 0) throw exitError(what, r.status, r.signal, r.stdout ?? "", r.stderr ?? "");
  }
}

function runOne(what: string, hook: Hook, input: string, options: HookRunOptions): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const { argv0, rest } = argvOf(hook);
    let child: ChildProcess;
    try {
      child = spawn(hook.path, rest, {
        argv0,
        env: hookEnv(hook, options),
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        stdio: "pipe",
      });
    } catch (cause) {
      reject(spawnError(what, cause as NodeJS.ErrnoException));
      return;
    }
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    let settled = false;
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      stdout = (stdout + d).slice(-2 * OUTPUT_LIMIT);
    });
    child.stderr?.setEncoding("utf8").on("data", (d: string) => {
      stderr = (stderr + d).slice(-2 * OUTPUT_LIMIT);
    });
    // A hook need not read its stdin; writing to a pipe it closed is not its failure.
    child.stdin?.on("error", () => undefined);
    child.stdin?.end(input);
    const timer =
      hook.timeout !== undefined
        ? setTimeout(() => {
            timedOut = true;
            child.kill("SIGKILL");
          }, hook.timeout * 1000)
        : undefined;
    const finish = (err: BerthError | undefined) => {
      if (settled) return;
      settled = true;
      if (timer !== undefined) clearTimeout(timer);
      if (err === undefined) resolveRun();
      else reject(err);
    };
    child.on("error", (cause: NodeJS.ErrnoException) => {
      finish(child.pid === undefined ? spawnError(what, cause) : aborted(`${what} failed: ${cause.message}`));
    });
    // "close" (exit and stdio drained) gives the whole output; but a hook that leaves a
    // background process holding its stdout would never close it, so "exit" decides, and the
    // pipes are dropped once it has happened and they are still open.
    child.on("close", (code, signal) => {
      if (timedOut && hook.timeout !== undefined) finish(timeoutError(what, hook.timeout));
      else if (code !== 0) finish(exitError(what, code, signal, stdout, stderr));
      else finish(undefined);
    });
    child.on("exit", () => {
      setImmediate(() => {
        child.stdout?.destroy();
        child.stderr?.destroy();
      });
    });
  });
}

/**
 * Runs `hooks` one after the other in this process's namespaces (prestart, createRuntime,
 * poststart, poststop). Rejects on the first hook that fails, like {@link runHooksSync}; the hooks
 * after it do not run.
 */
export async function runHooks(
  kind: HookKind,
  hooks: readonly Hook[] | undefined,
  state: HookState,
  options: HookRunOptions = {},
): Promise<void> {
  const input = JSON.stringify(state);
  for (const [i, hook] of (hooks ?? []).entries())
    await runOne(describe(kind, i, hook), hook, input, options);
}

/**
 * Runs every hook of the list and reports each failure to `warn` instead of throwing: the spec's
 * rule for poststop (and, in runtime-spec 1.0/1.1, poststart): "the runtime MUST log a warning,
 * but the remaining hooks and lifecycle continue as if the hook had succeeded". Never rejects.
 */
export async function runHooksWarn(
  kind: HookKind,
  hooks: readonly Hook[] | undefined,
  state: HookState,
  options: HookRunOptions,
  warn: (message: string) => void,
): Promise<void> {
  const input = JSON.stringify(state);
  for (const [i, hook] of (hooks ?? []).entries()) {
    try {
      await runOne(describe(kind, i, hook), hook, input, options);
    } catch (err) {
      warn(err instanceof Error ? err.message : String(err));
    }
  }
}
