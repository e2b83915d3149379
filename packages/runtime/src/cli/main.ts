import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  errorCode,
  errorMessage,
  failedPrecondition,
  invalidArgument,
  isNotFound,
  notImplemented,
} from "@berth/errdefs";
import { Command, Option } from "commander";
import { buildExecProcess, type ExecFlags } from "./exec-process.js";
import { features, OCI_VERSION_MAX } from "./features.js";
import { formatListTable, ownerOf, stateDocument } from "./format.js";
import { LogFormat, Logger } from "./log.js";
import { psTable } from "./ps.js";
import type { CliCreateOptions, CliRuntime } from "./runtime-api.js";
import { parseSignal } from "./signals.js";

/** Where `berth-runc` keeps container state unless `--root` says otherwise. */
export const DEFAULT_ROOT = "/run/berth-runc";

/** The streams the command writes to. */
export interface CliIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** How {@link main} reaches the runtime; the defaults are the real ones. */
export interface MainOptions {
  readonly io?: CliIo;
  /** Opens the runtime whose state lives in `root`; default `createRuntime({ root })`. */
  readonly openRuntime?: (root: string, warn: (message: string) => void) => CliRuntime | Promise<CliRuntime>;
  /** The config.json `spec` writes; default the runtime's `defaultSpec`, equal to `runc spec`'s. */
  readonly defaultSpec?: (options: { rootless: boolean }) => unknown | Promise<unknown>;
}

// The runtime (and @berth/sys with it) is imported only by the commands that need it, so that
// `features`, `--help` and `--version` (containerd runs `features` at start-up) stay quick.
const openDefaultRuntime = async (root: string, warn: (message: string) => void): Promise<CliRuntime> =>
  (await import("./default-runtime.js")).openDefaultRuntime(root, warn);
const defaultSpecDocument = async (options: { rootless: boolean }): Promise<unknown> =>
  (await import("./default-runtime.js")).defaultSpecDocument(options);

interface GlobalOptions {
  readonly root: string;
  readonly log?: string;
  readonly logFormat: string;
  readonly debug?: boolean;
  readonly systemdCgroup?: boolean;
}

interface CreateFlags {
  readonly bundle?: string;
  readonly pidFile?: string;
  readonly consoleSocket?: string;
  readonly pivot?: boolean;
  readonly preserveFds?: string;
}

function packageVersion(): string {
  try {
    // src/cli/ and dist/cli/ are both two levels below the package root.
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

// runc's validateID: letters, digits, underscore, plus, minus and dot, and not a path component
// that would escape the state directory.
function checkId(id: string): string {
  if (!/^[\w+.-]+$/.test(id) || id === "." || id === "..") throw invalidArgument(`invalid id format: ${id}`);
  return id;
}

function parseCount(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value)) throw invalidArgument(`${flag} must be a non-negative integer, got "${value}"`);
  return Number(value);
}

function createOptionsOf(flags: CreateFlags): CliCreateOptions {
  const options: CliCreateOptions = {};
  if (flags.pidFile !== undefined) options.pidFile = resolve(flags.pidFile);
  if (flags.consoleSocket !== undefined) options.consoleSocket = resolve(flags.consoleSocket);
  // commander turns --no-pivot into pivot: false.
  if (flags.pivot === false) options.noPivot = true;
  const preserveFds = parseCount(flags.preserveFds, "--preserve-fds");
  if (preserveFds !== undefined && preserveFds > 0) options.preserveFds = preserveFds;
  return options;
}

function createFlags(cmd: Command): Command {
  return cmd
    .option(
      "-b, --bundle <path>",
      "path to the root of the bundle directory, defaults to the current directory",
    )
    .option(
      "--console-socket <path>",
      "path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal",
    )
    .option("--pid-file <path>", "specify the file to write the process id to")
    .option("--no-pivot", "do not use pivot root to jail process inside rootfs (MS_MOVE and chroot instead)")
    .option("--no-new-keyring", "accepted for runc compatibility; berth-runc creates no session keyring")
    .option(
      "--preserve-fds <n>",
      "pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total)",
    );
}

/**
 * Builds the `berth-runc` command tree over `open` (the runtime for a `--root`). Commands write
 * their output to `io` and report their exit status through `setExit`; commander's usage errors
 * go to `onUsageError` and parsing throws instead of exiting (exitOverride). Exported for tests.
 */
export function buildProgram(
  io: CliIo,
  open: (root: string, warn: (message: string) => void) => CliRuntime | Promise<CliRuntime>,
  defaultSpec: (options: { rootless: boolean }) => unknown | Promise<unknown>,
  setExit: (code: number) => void,
  onUsageError: (message: string) => void = () => undefined,
): Command {
  const version = packageVersion();
  const program = new Command("berth-runc")
    .description("berth-runc: an OCI runtime with runc's command line, built on @berth/runtime")
    .version(`berth-runc version ${version}\nspec: ${OCI_VERSION_MAX}`, "-v, --version")
    .option(
      "--root <path>",
      "root directory for storage of container state (this should be located in tmpfs)",
      DEFAULT_ROOT,
    )
    .option("--log <path>", "set the log file to write berth-runc logs to (default is stderr)")
    .addOption(new Option("--log-format <format>", "set the log format: 'text' or 'json'").default("text"))
    .option("--debug", "enable debug logging")
    .option("--systemd-cgroup", "not supported: berth-runc manages cgroups through cgroupfs only")
    .enablePositionalOptions()
    .showSuggestionAfterError(false)
    // Set before the subcommands exist: commander copies these settings into each one.
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
      // Usage errors are reported by main() in the chosen log format, not as commander's line.
      outputError: (s) => onUsageError(s.replace(/^error: /, "").trim()),
    });

  const globals = () => program.opts<GlobalOptions>();
  // Failed poststart/poststop hooks are warnings, logged where runc logs them (--log, --log-format).
  const warn = (message: string) => {
    const g = globals();
    const format = g.logFormat === LogFormat.json ? LogFormat.json : LogFormat.text;
    new Logger(g.log ? { file: g.log } : { stream: io.stderr }, format, g.debug === true).log(
      "warning",
      message,
    );
  };
  let runtime: Promise<CliRuntime> | undefined;
  const rt = () => {
    runtime ??= Promise.resolve(open(resolve(globals().root), warn));
    return runtime;
  };
  const out = (s: string) => io.stdout.write(s);

  program.hook("preAction", () => {
    const g = globals();
    if (g.logFormat !== LogFormat.text && g.logFormat !== LogFormat.json) {
      throw invalidArgument(`invalid log-format: ${g.logFormat}`);
    }
    if (g.systemdCgroup) {
      throw notImplemented(
        "--systemd-cgroup: the systemd cgroup driver is not supported; berth-runc uses cgroupfs (cgroupsPath as a path)",
      );
    }
  });

  createFlags(program.command("create").description("create a container").argument("<container-id>")).action(
    async (id: string, flags: CreateFlags) => {
      const bundle = resolve(flags.bundle ?? ".");
      await (await rt()).create(checkId(id), bundle, createOptionsOf(flags));
    },
  );

  program
    .command("start")
    .description("executes the user defined process in a created container")
    .argument("<container-id>")
    .action(async (id: string) => {
      await (await rt()).start(checkId(id));
    });

  createFlags(program.command("run").description("create and run a container").argument("<container-id>"))
    .option("-d, --detach", "detach from the container's process")
    .option("--no-subreaper", "accepted for runc compatibility")
    .action(async (id: string, flags: CreateFlags & { detach?: boolean }) => {
      const r = await rt();
      const bundle = resolve(flags.bundle ?? ".");
      const options = createOptionsOf(flags);
      checkId(id);
      if (flags.detach) {
        await r.create(id, bundle, options);
        await r.start(id);
        return;
      }
      // The runtime's run waits, forwards signals, and deletes the container when it exits (so
      // runc's --keep is not offered).
      setExit(await r.run(id, bundle, options));
    });

  program
    .command("state")
    .description("output the state of a container")
    .argument("<container-id>")
    .action(async (id: string) => {
      const state = await (await rt()).state(checkId(id));
      out(`${JSON.stringify(stateDocument(state), null, 2)}\n`);
    });

  program
    .command("kill")
    .description("kill sends the specified signal (default: SIGTERM) to the container's init process")
    .argument("<container-id>")
    .argument("[signal]", "signal name or number", "SIGTERM")
    .option("-a, --all", "send the specified signal to all processes inside the container")
    .action(async (id: string, signal: string, flags: { all?: boolean }) => {
      const n = parseSignal(signal);
      await (await rt()).kill(checkId(id), n, flags.all ? { all: true } : {});
    });

  program
    .command("delete")
    .description("delete any resources held by the container")
    .argument("<container-id>")
    .option("-f, --force", "forcibly deletes the container if it is still running (uses SIGKILL)")
    .action(async (id: string, flags: { force?: boolean }) => {
      try {
        await (await rt()).delete(checkId(id), flags.force ? { force: true } : {});
      } catch (err) {
        // runc's delete --force of a container that does not exist succeeds.
        if (!(flags.force && isNotFound(err))) throw err;
      }
    });

  program
    .command("list")
    .description("lists containers started by berth-runc with the given root")
    .addOption(new Option("-f, --format <format>", "select one of: table or json").default("table"))
    .option("-q, --quiet", "display only container IDs")
    .action(async (flags: { format: string; quiet?: boolean }) => {
      if (flags.format !== "table" && flags.format !== "json") {
        throw invalidArgument(`invalid format option: ${flags.format}`);
      }
      const root = resolve(globals().root);
      // A root that was never used is an empty list, not an error (runc behaves the same).
      const states = existsSync(root) ? await (await rt()).list() : [];
      const docs = states.map((s) => stateDocument(s, ownerOf(join(root, s.id))));
      if (flags.quiet) out(docs.map((d) => `${d.id}\n`).join(""));
      else if (flags.format === "json") out(`${JSON.stringify(docs)}\n`);
      else out(formatListTable(docs));
    });

  program
    .command("ps")
    .description("ps displays the processes running inside a container")
    .argument("<container-id>")
    .argument("[ps-options...]", "options passed to ps (default -ef)")
    .addOption(new Option("-f, --format <format>", "select one of: table or json").default("table"))
    .passThroughOptions()
    .action(async (id: string, psArgs: string[], flags: { format: string }) => {
      if (flags.format !== "table" && flags.format !== "json") {
        throw invalidArgument(`invalid format option: ${flags.format}`);
      }
      const pids = await (await rt()).ps(checkId(id));
      if (flags.format === "json") {
        if (psArgs.length > 0) throw invalidArgument("ps options cannot be used with json format");
        out(`${JSON.stringify(pids)}\n`);
      } else {
        out(await psTable(pids, psArgs));
      }
    });

  program
    .command("spec")
    .description("create a new specification file (config.json) in the bundle directory")
    .option("-b, --bundle <path>", "path to the root of the bundle directory")
    .option("--rootless", "generate a configuration for a rootless container")
    .action(async (flags: { bundle?: string; rootless?: boolean }) => {
      const path = join(resolve(flags.bundle ?? "."), "config.json");
      if (existsSync(path)) throw failedPrecondition(`File config.json exists. Remove it first (${path})`);
      const spec = await defaultSpec({ rootless: flags.rootless === true });
      // Tabs, as runc writes it.
      writeFileSync(path, `${JSON.stringify(spec, null, "\t")}\n`, { flag: "wx", mode: 0o666 });
    });

  program
    .command("features")
    .description("show the enabled features")
    .action(() => {
      out(`${JSON.stringify(features(version), null, 4)}\n`);
    });

  program
    .command("pause")
    .description("pause suspends all processes inside the container")
    .argument("<container-id>")
    .action(async (id: string) => {
      await (await rt()).pause(checkId(id));
    });

  program
    .command("resume")
    .description("resumes all processes that have been previously paused")
    .argument("<container-id>")
    .action(async (id: string) => {
      await (await rt()).resume(checkId(id));
    });

  program
    .command("exec")
    .description("execute new process inside the container")
    .argument("<container-id>")
    .argument("[command...]", "the command and its arguments (or -p process.json)")
    .option(
      "--console-socket <path>",
      "path to an AF_UNIX socket which will receive a file descriptor referencing the master end of the console's pseudoterminal",
    )
    .option("--cwd <path>", "current working directory in the container")
    .option("-e, --env <var>", "set environment variables (repeatable)", collect, [])
    .option("-t, --tty", "allocate a pseudo-TTY")
    .option("-u, --user <uid[:gid]>", "UID (format: <uid>[:<gid>])")
    .option("-g, --additional-gids <gid>", "additional gids (repeatable)", collect, [])
    .option("-p, --process <path>", "path to the process.json")
    .option("-d, --detach", "detach from the container's process")
    .option("--pid-file <path>", "specify the file to write the process id to")
    .option("--no-new-privs", "set the no new privileges value for the process")
    .option(
      "-c, --cap <cap>",
      "add a capability to the bounding set for the process (repeatable)",
      collect,
      [],
    )
    .option("--preserve-fds <n>", "pass N additional file descriptors to the container")
    .option("--ignore-paused", "allow exec in a paused container")
    .passThroughOptions()
    .action(async (id: string, command: string[], flags: ExecCommandFlags) => {
      try {
        setExit(await execIn(await rt(), id, command, flags));
      } catch (err) {
        // runc's exec reports its own failures with status 255, so a caller can tell them
        // from the process's own exit status.
        throw Object.assign(err instanceof Error ? err : new Error(String(err)), { exitStatus: 255 });
      }
    });

  return program;
}

// `exec`'s flags as commander hands them over.
type ExecCommandFlags = ExecFlags & {
  consoleSocket?: string;
  detach?: boolean;
  pidFile?: string;
  newPrivs?: boolean;
  preserveFds?: string;
  ignorePaused?: boolean;
};

// Runs `command` (or -p's process) in container `id`; resolves to the process's exit status.
async function execIn(
  r: CliRuntime,
  id: string,
  command: string[],
  flags: ExecCommandFlags,
): Promise<number> {
  const state = await r.state(checkId(id));
  if (state.status === "stopped") throw failedPrecondition(`cannot exec in a stopped container ${id}`);
  if (state.status === "paused" && !flags.ignorePaused) {
    throw failedPrecondition(`cannot exec in a paused container ${id} (use --ignore-paused to override)`);
  }
  // commander records --no-new-privs as newPrivs: false.
  const processFlags: ExecFlags = {
    ...flags,
    ...(flags.newPrivs === false ? { noNewPrivs: true } : {}),
  };
  const process = buildExecProcess(processFlags, command, state.bundle);
  const options: Parameters<CliRuntime["exec"]>[2] = {};
  if (flags.pidFile !== undefined) options.pidFile = resolve(flags.pidFile);
  if (flags.consoleSocket !== undefined) options.consoleSocket = resolve(flags.consoleSocket);
  if (flags.detach) options.detach = true;
  const preserveFds = parseCount(flags.preserveFds, "--preserve-fds");
  if (preserveFds !== undefined && preserveFds > 0) options.preserveFds = preserveFds;
  return await r.exec(id, process, options);
}

/**
 * Runs `berth-runc` with `argv` (as `process.argv`: node, script, then arguments) and returns the
 * exit status: 0 on success, the container's status for a foreground `run` or `exec`, 1 on any
 * error (255 when `exec` itself fails, as with runc). Errors are printed like runc prints them: `berth-runc: <message>` on stderr, or JSON log
 * lines (`{"level":"error","msg":…,"time":…}`) with `--log-format json`; with `--log FILE` the line
 * goes to the file and the message also to stderr. Never throws.
 */
export async function main(argv: readonly string[], options: MainOptions = {}): Promise<number> {
  const io = options.io ?? { stdout: process.stdout, stderr: process.stderr };
  let exitCode = 0;
  let usageError: string | undefined;
  const program = buildProgram(
    io,
    options.openRuntime ?? openDefaultRuntime,
    options.defaultSpec ?? defaultSpecDocument,
    (code) => {
      exitCode = code;
    },
    (message) => {
      usageError = message;
    },
  );
  const logger = () => {
    const g = program.opts<GlobalOptions>();
    const format = g.logFormat === LogFormat.json ? LogFormat.json : LogFormat.text;
    return new Logger(g.log ? { file: g.log } : { stream: io.stderr }, format, g.debug === true);
  };
  try {
    await program.parseAsync([...argv]);
    logger().log("debug", `${argv.slice(2).join(" ")}: exit status ${exitCode}`);
    return exitCode;
  } catch (err) {
    const commanderCode = (err as { code?: unknown }).code;
    if (typeof commanderCode === "string" && commanderCode.startsWith("commander.")) {
      if (commanderCode === "commander.helpDisplayed" || commanderCode === "commander.version") return 0;
      if (commanderCode === "commander.help") return 0;
    }
    const message = usageError ?? errorMessage(err);
    const log = logger();
    log.log("error", message);
    // runc's fatal(): when the log goes to a file, the user still sees the error on stderr.
    if (log.toFile) io.stderr.write(`berth-runc: ${message}\n`);
    if (program.opts<GlobalOptions>().debug && err instanceof Error && err.stack) {
      io.stderr.write(`[${errorCode(err)}] ${err.stack}\n`);
    }
    const status = (err as { exitStatus?: unknown }).exitStatus;
    return typeof status === "number" ? status : 1;
  }
}
