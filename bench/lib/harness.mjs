// Shared plumbing of the benchmarks: a cleanup registry that runs on success, failure and
// SIGINT/SIGTERM; child processes that are tracked by pid until they exit; timing under
// /usr/bin/time; mounts under a temp directory found in /proc/self/mountinfo and detached; and
// the small number formatters every report uses.
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdir, rm } from "node:fs/promises";
import { loadavg } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** bench/ (this file is in bench/lib). */
export const benchDir = fileURLToPath(new URL("..", import.meta.url));
/** The repository root. */
export const repoDir = join(benchDir, "..");
/** bench/.work (gitignored): the cached fixture and registry storage, and the runs' temp dirs. */
export const workDir = join(benchDir, ".work");
/** The built berth CLI, run with `process.execPath`. */
export const berthBin = join(repoDir, "packages", "cli", "bin", "berth.js");

/**
 * The value of `--<option>` as a positive integer (parsed as `Number.parseInt`); prints what was
 * wrong and exits with status 2 when it is not one.
 */
export function positiveIntOption(option, value) {
  const n = Number.parseInt(value, 10);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${option} must be a positive integer, got ${value}`);
    process.exit(2);
  }
  return n;
}

/**
 * The cleanup registry: `track(fn)` adds a cleanup (run last-in first-out), `untrack(fn)` drops it
 * once it ran on the normal path, `cleanup()` runs what is left (once; later calls wait for the
 * same run). A first SIGINT or SIGTERM runs the cleanups and exits with status 130.
 */
export function createCleanups() {
  const cleanups = [];
  let cleaning;
  const cleanup = () => {
    cleaning ??= (async () => {
      for (const fn of cleanups.splice(0).reverse()) {
        try {
          await fn();
        } catch (err) {
          console.error(`cleanup: ${err?.message ?? err}`);
        }
      }
    })();
    return cleaning;
  };
  const track = (fn) => {
    cleanups.push(fn);
    return fn;
  };
  const untrack = (fn) => {
    const i = cleanups.indexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
  };
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, () => {
      console.error(`\n${signal}: cleaning up`);
      cleanup().finally(() => process.exit(130));
    });
  }
  return { track, untrack, cleanup };
}

/**
 * Runs a benchmark's `main` and then the cleanups of `cleanups`, whether it succeeded or not. A
 * failure is printed (its stack) and sets the exit status to 1; it is not rethrown.
 */
export async function runMain(cleanups, main) {
  try {
    await main();
  } catch (err) {
    console.error(err?.stack ?? err);
    process.exitCode = 1;
  } finally {
    await cleanups.cleanup();
  }
}

/**
 * Runs a command to completion; rejects with the tail of its stderr on failure. While it runs, a
 * cleanup of `cleanups` kills it by pid. `onLine(stream, line)` sees each output line as it
 * arrives ("stdout" or "stderr"), e.g. to timestamp a phase.
 */
export function exec(cleanups, cmd, argv, options = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(options.env ? { env: options.env } : {}),
    });
    const kill = () =>
      child.exitCode === null && child.signalCode === null && child.pid !== undefined
        ? process.kill(child.pid, "SIGTERM")
        : undefined;
    cleanups.track(kill);
    let stderr = "";
    let stdout = "";
    const lines = (name) => {
      let partial = "";
      return (d) => {
        const text = d.toString();
        if (name === "stderr") stderr = (stderr + text).slice(-4000);
        else if (options.keepStdout) stdout += text;
        if (!options.onLine) return;
        const parts = (partial + text).split(/\r?\n|\r/);
        partial = parts.pop() ?? "";
        for (const line of parts) options.onLine(name, line);
      };
    };
    child.stdout.on("data", lines("stdout"));
    child.stderr.on("data", lines("stderr"));
    child.once("error", (err) => {
      cleanups.untrack(kill);
      reject(err);
    });
    child.once("close", (code, signal) => {
      cleanups.untrack(kill);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd} ${argv.join(" ")} failed (${signal ?? `status ${code}`}): ${stderr}`));
    });
  });
}

/**
 * Runs `cmd` under /usr/bin/time (its report is written into `dir`); resolves with the wall time,
 * the command's user+sys CPU time (its children included), and the offsets (ms from the start)
 * at which `marks` (name → RegExp over output lines) first matched. `env` replaces the
 * environment of the command.
 */
export async function timed(cleanups, dir, cmd, argv, { marks = {}, env } = {}) {
  const timeFile = join(dir, "time.txt");
  const at = {};
  const start = performance.now();
  await exec(cleanups, "/usr/bin/time", ["-f", "%U %S", "-o", timeFile, cmd, ...argv], {
    ...(env ? { env } : {}),
    onLine: (_stream, line) => {
      for (const [name, re] of Object.entries(marks)) {
        if (at[name] === undefined && re.test(line)) at[name] = performance.now() - start;
      }
    },
  });
  const ms = performance.now() - start;
  const [user, sys] = readFileSync(timeFile, "utf8").trim().split("\n").pop().split(" ").map(Number);
  await rm(timeFile, { force: true });
  return { ms, cpuMs: (user + sys) * 1000, marks: at };
}

/** Runs a command and resolves with its stdout (never rejects on a non-zero status). */
export function capture(cmd, argv) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: ["ignore", "pipe", "ignore"] });
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.once("error", reject);
    child.once("close", () => resolve(out));
  });
}

/** User+system CPU of a live process from /proc, in milliseconds (0 when it cannot be read). */
export function procCpuMs(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after "pid (comm) ".
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return 0;
  }
}

/** Mount points at or below `dir` (from /proc/self/mountinfo), deepest first. */
export function mountsUnder(dir) {
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  const points = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const field = line.split(" ")[4];
    if (field === undefined) continue;
    // mountinfo escapes space, tab, newline and backslash as octal.
    const point = field.replace(/\\([0-7]{3})/g, (_, o) => String.fromCharCode(Number.parseInt(o, 8)));
    if (point === dir || point.startsWith(prefix)) points.push(point);
  }
  return points.sort((a, b) => b.length - a.length);
}

/**
 * Unmounts everything mounted at or below `dir`, deepest first: `umount`, and `umount -l` when
 * that fails (busy); returns the mount points.
 */
export function unmountUnder(dir) {
  const points = mountsUnder(dir);
  for (const point of points) {
    if (spawnSync("umount", [point], { stdio: "ignore" }).status !== 0) {
      spawnSync("umount", ["-l", point], { stdio: "ignore" });
    }
  }
  return points;
}

/**
 * Makes a fresh ext4 file system (default mkfs options, so with a journal) in a sparse image file
 * under `parent` and mounts it through a loop device on `<parent>/<name>` (the loop device is
 * detached on unmount). Resolves with its mount point and an idempotent `dispose()` (also run by
 * the cleanups) that unmounts it and removes the image.
 */
export async function freshExt4(cleanups, parent, name, sizeGiB = 8) {
  const dir = join(parent, name);
  const image = `${dir}.img`;
  await mkdir(dir);
  let disposed;
  const dispose = () => {
    disposed ??= (async () => {
      cleanups.untrack(dispose);
      unmountUnder(dir);
      await rm(dir, { recursive: true, force: true });
      await rm(image, { force: true });
    })();
    return disposed;
  };
  cleanups.track(dispose);
  await exec(cleanups, "truncate", ["-s", `${sizeGiB}G`, image]);
  await exec(cleanups, "mkfs.ext4", ["-q", "-F", image]);
  // noinit_itable: no background zeroing of inode tables (ext4lazyinit) during the measurements.
  await exec(cleanups, "mount", ["-o", "loop,noinit_itable", image, dir]);
  return { dir, dispose };
}

/** Unmounts anything below `dir`, then removes it. */
export async function removeTree(dir) {
  const left = unmountUnder(dir);
  if (left.length > 0) console.error(`cleanup: unmounted ${left.length} mount(s) left under ${dir}`);
  await rm(dir, { recursive: true, force: true });
}

/** Flushes dirty pages (untimed, between runs), so one run's writeback does not slow the next. */
export function syncDisks() {
  spawnSync("sync", [], { stdio: "ignore" });
}

export function loadavgText() {
  return loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");
}

export async function pool(items, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function mb(bytes) {
  return (bytes / 1e6).toFixed(1);
}

export function mbps(bytes, ms) {
  return (bytes / 1e6 / (ms / 1000)).toFixed(1);
}

export function sec(ms) {
  return (ms / 1000).toFixed(2);
}
