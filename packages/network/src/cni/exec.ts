import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import { closeSync, constants, openSync } from "node:fs";
import { access, stat } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { canceled, invalidArgument, notFound } from "@berth/errdefs";
import { joinNamespace, NamespaceFlag, setns } from "@berth/sys";
import { CniPluginError } from "./errors.js";
import type { CniCommand } from "./types.js";

/** What {@link execPlugin} needs to run one plugin once. */
export interface ExecPluginRequest {
  /** Absolute path of the plugin binary (see {@link findPlugin}). */
  readonly path: string;
  /** The plugin type, for messages. */
  readonly plugin: string;
  /** The network name, for messages. */
  readonly network?: string;
  readonly command: CniCommand;
  /** The `CNI_*` variables; they replace any `CNI_*` variable of this process's environment. */
  readonly cniEnv: Readonly<Record<string, string>>;
  /** The bytes written to the plugin's stdin (the network config, or `{"cniVersion":…}`). */
  readonly stdin: string;
  /**
   * The network namespace the plugin process starts in: the runtime's "host" side, where bridges,
   * veth host ends and NAT rules go. Undefined means this process's current one.
   */
  readonly netns?: string;
  readonly signal?: AbortSignal;
}

// Plugins print little (a result, an error); a runaway one must not exhaust memory.
const MAX_OUTPUT = 4 << 20;

/**
 * Finds the binary of plugin `type` in `paths`, the first directory holding an executable regular
 * file of that name (libcni's FindInPath). Throws `invalid-argument` when `type` contains a `/`
 * or `paths` holds a relative directory, and `not-found` naming the type and every directory
 * searched when no directory has it.
 */
export async function findPlugin(type: string, paths: readonly string[]): Promise<string> {
  if (type === "" || type.includes("/") || type === "." || type === "..") {
    throw invalidArgument(`CNI plugin type ${JSON.stringify(type)} must be a file name, not a path`);
  }
  for (const dir of paths) {
    if (!isAbsolute(dir)) throw invalidArgument(`CNI plugin directory ${dir} must be an absolute path`);
    const candidate = join(dir, type);
    try {
      const st = await stat(candidate);
      if (!st.isFile()) continue;
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory, or not executable: keep looking, like PATH lookup does.
    }
  }
  throw notFound(
    `CNI plugin ${type} not found in ${paths.length === 0 ? "(no directories)" : paths.join(":")}`,
  );
}

/**
 * Starts `file` with its network namespace set to `netns`. setns(2) moves only the calling thread,
 * and libuv forks the child from the calling (main) thread synchronously inside spawn(), so
 * joining `netns`, spawning and going back, with no await in between, starts the child there
 * while the rest of this process never notices. The original namespace is reopened through
 * /proc/thread-self, not /proc/self, because it is the thread's namespace that moves.
 */
function spawnIn(
  netns: string | undefined,
  file: string,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal | undefined,
): ChildProcess {
  const options: SpawnOptions = { env, stdio: ["pipe", "pipe", "pipe"], ...(signal ? { signal } : {}) };
  if (netns === undefined) return spawn(file, [], options);
  const original = openSync("/proc/thread-self/ns/net", "r");
  try {
    joinNamespace(netns, "net");
    try {
      return spawn(file, [], options);
    } finally {
      // If this fails, the main thread stays in the wrong namespace; nothing sane can continue,
      // so the error propagates rather than being swallowed.
      setns(original, NamespaceFlag.CLONE_NEWNET);
    }
  } finally {
    closeSync(original);
  }
}

function parseError(stdout: string): { code?: number; msg?: string; details?: string } | undefined {
  try {
    const value = JSON.parse(stdout) as unknown;
    if (typeof value !== "object" || value === null) return undefined;
    const { code, msg, details } = value as Record<string, unknown>;
    return {
      ...(typeof code === "number" ? { code } : {}),
      ...(typeof msg === "string" ? { msg } : {}),
      ...(typeof details === "string" ? { details } : {}),
    };
  } catch {
    return undefined;
  }
}

/**
 * Runs one CNI plugin once: this process's environment with the given `CNI_*` variables (and no
 * inherited ones), `stdin` written to it, its stdout collected. Resolves to stdout when it exits 0.
 * Rejects with a {@link CniPluginError} when it exits non-zero (carrying the CNI code, `msg` and
 * `details` of the error JSON it printed, or its stderr) or is killed; with `canceled` when
 * `signal` aborts (the plugin is killed with SIGTERM); with a `SystemError` when `netns` cannot be
 * joined. The plugin process never outlives the returned promise.
 */
export async function execPlugin(request: ExecPluginRequest): Promise<string> {
  const { signal } = request;
  if (signal?.aborted) throw canceled(`CNI plugin ${request.plugin} ${request.command}: aborted`);
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith("CNI_")) env[key] = value;
  }
  Object.assign(env, request.cniEnv);
  const child = spawnIn(request.netns, request.path, env, signal);
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  let size = 0;
  const collect = (into: Buffer[]) => (chunk: Buffer) => {
    size += chunk.length;
    if (size > MAX_OUTPUT) {
      child.kill("SIGKILL");
      return;
    }
    into.push(chunk);
  };
  child.stdout?.on("data", collect(stdout));
  child.stderr?.on("data", collect(stderr));
  // A plugin may exit without reading its stdin (VERSION often does): EPIPE here is not an error,
  // the exit status tells what happened.
  child.stdin?.on("error", () => {});
  child.stdin?.end(request.stdin);
  const fail = (msg: string, exit: number | string, cniCode?: number, details?: string, cause?: unknown) =>
    new CniPluginError(
      {
        plugin: request.plugin,
        command: request.command,
        ...(request.network === undefined ? {} : { network: request.network }),
        ...(cniCode === undefined ? {} : { cniCode }),
        msg,
        ...(details === undefined ? {} : { details }),
        exit,
      },
      cause === undefined ? undefined : { cause },
    );
  const [exitCode, exitSignal] = await new Promise<[number | null, NodeJS.Signals | null]>(
    (resolve, reject) => {
      child.once("error", (err) => {
        if (signal?.aborted) {
          reject(canceled(`CNI plugin ${request.plugin} ${request.command}: aborted`, { cause: err }));
        } else {
          reject(fail(`cannot run ${request.path}: ${err.message}`, "spawn", undefined, undefined, err));
        }
      });
      child.once("close", (code, sig) => resolve([code, sig]));
    },
  );
  const out = Buffer.concat(stdout).toString("utf8");
  const errText = Buffer.concat(stderr).toString("utf8").trim();
  if (signal?.aborted) throw canceled(`CNI plugin ${request.plugin} ${request.command}: aborted`);
  if (size > MAX_OUTPUT) throw fail(`printed more than ${MAX_OUTPUT} bytes`, exitSignal ?? "SIGKILL");
  if (exitCode === 0) return out;
  const exit = exitCode ?? exitSignal ?? "unknown";
  const parsed = parseError(out);
  if (parsed?.msg !== undefined || parsed?.code !== undefined) {
    throw fail(parsed.msg ?? (errText || "(no message)"), exit, parsed.code, parsed.details);
  }
  const text = errText || out.trim() || "(no output)";
  throw fail(`exited with ${typeof exit === "number" ? `status ${exit}` : exit}: ${text}`, exit);
}
