import { type ChildProcess, execFile, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { readMountInfo } from "@berth/sys";

const execFileAsync = promisify(execFile);

const berthBin = new URL("../../packages/runtime/bin/berth-runc.js", import.meta.url).pathname;
const berthBuilt = new URL("../../packages/runtime/dist/cli/main.js", import.meta.url).pathname;

/** The two runtimes the comparison runs: the oracle and ours. */
export type RuntimeName = "runc" | "berth-runc";

/** What one command printed and how it ended. */
export interface Outcome {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** A container's foreground `run`, still going: its output so far and its end. */
export interface Running {
  readonly child: ChildProcess;
  /** Resolves once stdout contains `text`; rejects if the run ends first. */
  waitFor(text: string): Promise<void>;
  readonly done: Promise<Outcome>;
}

/**
 * One runtime with a private `--root` in a temp dir. Every process it starts is tracked by pid and
 * killed by {@link CliRuntime.cleanup}, which also force-deletes the containers left in its root
 * and removes the root.
 */
export interface CliRuntime {
  readonly name: RuntimeName;
  readonly root: string;
  /**
   * Runs `<runtime> --root ROOT <args>` until it exits (not until a container it created does);
   * never throws for a non-zero exit.
   */
  cli(...args: string[]): Promise<Outcome>;
  /** Starts `<runtime> --root ROOT run -b BUNDLE ID` with piped stdio. */
  start(bundle: string, id: string): Running;
  /** Runs a container in the foreground to its end. */
  run(bundle: string, id: string): Promise<Outcome>;
  cleanup(): Promise<void>;
}

function command(name: RuntimeName): [string, string[]] {
  if (name === "runc") return ["runc", []];
  if (!existsSync(berthBuilt)) {
    throw new Error("berth-runc is not built: run `npm run build` before the e2e tests (npm test does)");
  }
  return [process.execPath, [berthBin]];
}

/** Opens `name` with a fresh root. Throws when berth-runc is not built. */
export function openRuntime(name: RuntimeName): CliRuntime {
  const [file, prefix] = command(name);
  const root = mkdtempSync(join(tmpdir(), `berth-cmp-root-${name}-`));
  const children = new Set<ChildProcess>();

  const start = (bundle: string, id: string): Running => {
    const child = spawn(file, [...prefix, "--root", root, "run", "-b", bundle, id], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.add(child);
    let stdout = "";
    let stderr = "";
    const waiters: { text: string; resolve: () => void; reject: (e: Error) => void }[] = [];
    child.stdout?.on("data", (d: Buffer) => {
      stdout += d.toString();
      for (const w of waiters.filter((w) => stdout.includes(w.text))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    });
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const done = new Promise<Outcome>((resolve, reject) => {
      child.on("error", reject);
      child.on("close", (code, signal) => {
        children.delete(child);
        for (const w of waiters.splice(0))
          w.reject(new Error(`${name} ended before printing "${w.text}": ${stderr}`));
        resolve({ code, signal, stdout, stderr });
      });
    });
    const waitFor = (text: string) =>
      stdout.includes(text)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ text, resolve, reject });
          });
    return { child, waitFor, done };
  };

  // Commands other than a foreground run write to files, not pipes: after `create`, the
  // container's init holds the command's stdout and stderr, so a pipe would not close until the
  // container exits. The files are complete once the command has exited.
  const logs = mkdtempSync(join(tmpdir(), `berth-cmp-out-${name}-`));
  let serial = 0;
  const cli = (...args: string[]) =>
    new Promise<Outcome>((resolve, reject) => {
      const n = serial++;
      const outPath = join(logs, `${n}.out`);
      const errPath = join(logs, `${n}.err`);
      const out = openSync(outPath, "w");
      const err = openSync(errPath, "w");
      let child: ChildProcess;
      try {
        child = spawn(file, [...prefix, "--root", root, ...args], { stdio: ["ignore", out, err] });
      } finally {
        closeSync(out);
        closeSync(err);
      }
      children.add(child);
      child.on("error", reject);
      child.on("exit", (code, signal) => {
        children.delete(child);
        resolve({
          code,
          signal,
          stdout: readFileSync(outPath, "utf8"),
          stderr: readFileSync(errPath, "utf8"),
        });
      });
    });

  return {
    name,
    root,
    cli,
    start: (bundle, id) => start(bundle, id),
    run: (bundle, id) => start(bundle, id).done,
    async cleanup() {
      for (const child of children) {
        if (child.pid !== undefined && child.exitCode === null) {
          try {
            process.kill(child.pid, "SIGKILL");
          } catch {
            // Already gone.
          }
        }
      }
      const ids = existsSync(root) ? readdirSync(root) : [];
      for (const id of ids) {
        await execFileAsync(file, [...prefix, "--root", root, "delete", "-f", id]).catch(() => undefined);
      }
      rmSync(root, { recursive: true, force: true });
      rmSync(logs, { recursive: true, force: true });
    },
  };
}

/**
 * Removes `cgroupsPath` (e.g. `/berth-e2e-x/c1`) and its parents up to and including the first
 * component from every cgroup hierarchy mounted under /sys/fs/cgroup, deepest first, ignoring the
 * ones that are absent. A cgroup that still has processes cannot be removed; that is reported.
 */
export function removeCgroups(cgroupsPath: string): string[] {
  const parts = cgroupsPath.split("/").filter((p) => p !== "");
  const left: string[] = [];
  const hierarchies = readMountInfo().filter(
    (m) => (m.fstype === "cgroup" || m.fstype === "cgroup2") && m.mountPoint.startsWith("/sys/fs/cgroup"),
  );
  for (const h of hierarchies) {
    for (let n = parts.length; n > 0; n--) {
      const dir = join(h.mountPoint, ...parts.slice(0, n));
      if (!existsSync(dir)) continue;
      try {
        rmdirSync(dir);
      } catch (err) {
        left.push(`${dir}: ${(err as Error).message}`);
      }
    }
  }
  return left;
}
