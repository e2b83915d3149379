import { type ChildProcess, spawn } from "node:child_process";

/** What {@link run} collected from a finished command. @internal */
export interface RunResult {
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Options for {@link run}. @internal */
export interface RunOptions {
  /** Bytes written to the command's stdin (which is closed afterwards). */
  readonly input?: Buffer | string;
  /** Extra environment variables, merged over this process's environment. */
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * Runs `cmd args...` without a shell and resolves with its output once it exits 0. Rejects with an
 * `Error` naming the command line, its exit status or signal, and the tail of its stderr when it
 * fails or cannot be started (e.g. `ENOENT` when the tool is not installed).
 *
 * @internal
 */
export function run(cmd: string, args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      env: options.env === undefined ? process.env : { ...process.env, ...options.env },
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (chunk: Buffer) => out.push(chunk));
    child.stderr?.on("data", (chunk: Buffer) => err.push(chunk));
    child.on("error", (cause) => reject(new Error(`${commandLine(cmd, args)}: ${cause.message}`, { cause })));
    child.on("close", (code, signal) => {
      const stderr = Buffer.concat(err).toString("utf8");
      if (code === 0) {
        resolve({ stdout: Buffer.concat(out), stderr });
        return;
      }
      const status = signal === null ? `exit status ${code}` : `signal ${signal}`;
      reject(new Error(`${commandLine(cmd, args)}: ${status}: ${tail(stderr)}`));
    });
    if (options.input !== undefined && child.stdin !== null) {
      // A command that exits before reading all of stdin makes the pipe fail with EPIPE; the exit
      // status reported by "close" is the useful error, so this one is dropped.
      child.stdin.on("error", () => {});
      child.stdin.end(options.input);
    }
  });
}

/** The last few lines of a command's stderr, enough to see why it failed. @internal */
export function tail(text: string, lines = 8): string {
  const kept = text.trim().split("\n").slice(-lines).join("\n");
  return kept === "" ? "(no stderr)" : kept;
}

function commandLine(cmd: string, args: readonly string[]): string {
  return [cmd, ...args].map((a) => (/^[\w./:@=,+-]+$/.test(a) ? a : JSON.stringify(a))).join(" ");
}

/** How a child process ended and what it printed, from {@link collectOutput}. */
export interface ChildOutput {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Collects a spawned child's stdout and stderr (both must be pipes) as text and resolves once it
 * has closed, whatever its exit status; rejects when it cannot be started. The caller keeps
 * ownership of the child (and kills it by pid on cleanup).
 */
export function collectOutput(child: ChildProcess): Promise<ChildOutput> {
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
