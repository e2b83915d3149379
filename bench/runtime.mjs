#!/usr/bin/env node
// Benchmark (not a test): `berth-runc run` of a busybox `true` bundle against `runc run` of the
// same bundle, in the same run, N iterations alternating which goes first, medians and the ratio
// berth/runc against the Runtime issue's target (at most 0.5x). See bench/README.md.
//
// Also measured, to explain the number: `node -e 0` (the floor under any Node CLI) and `lib`, the
// runtime used in-process (`createRuntime({ root }).run(...)` in this process), the way the shim
// runs containers, and `pool`, the same with a warm pool of pre-spawned inits
// (`createRuntime({ root, pool: { size: 2 } })`). Before every measurement the bench waits until
// the pool's inits are idle (blocked reading their control socket), so a refill never runs
// during another measurement: the pool number is the start of a container from a warm pool.
//
// Usage: node bench/runtime.mjs [--runs N] [--warmup N]
// Needs root, runc, /bin/busybox and a built berth-runc (`npm run build`).
import { execFileSync, spawn } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createCleanups, loadavgText, median } from "./lib/harness.mjs";

const { values: opts } = parseArgs({
  options: {
    runs: { type: "string", default: "20" },
    warmup: { type: "string", default: "3" },
  },
});
const runs = Number(opts.runs);
const warmup = Number(opts.warmup);
const TARGET = 0.5;

const repo = new URL("..", import.meta.url).pathname;
const berthBin = join(repo, "packages/runtime/bin/berth-runc.js");
if (process.getuid?.() !== 0) {
  console.error("runtime bench: needs root (containers, cgroups)");
  process.exit(1);
}
if (!existsSync(join(repo, "packages/runtime/dist/cli/main.js"))) {
  console.error("runtime bench: berth-runc is not built; run `npm run build` first");
  process.exit(1);
}

// --- cleanup: runs on success, failure and Ctrl-C ------------------------------------------
const cleanups = createCleanups();

const work = mkdtempSync(join(tmpdir(), "berth-bench-runtime-"));
cleanups.track(() => rmSync(work, { recursive: true, force: true }));
const cgroupParent = `/berth-bench-runtime-${process.pid}`;
cleanups.track(() => {
  // Both runtimes remove the container's cgroup on delete; the parent is ours to remove.
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const [left = "", right = ""] = line.split(" - ");
    const fstype = right.split(" ")[0];
    const point = left.split(" ")[4];
    if ((fstype === "cgroup" || fstype === "cgroup2") && point?.startsWith("/sys/fs/cgroup")) {
      for (const dir of [join(point, cgroupParent, "bench"), join(point, cgroupParent)]) {
        if (existsSync(dir)) rmdirSync(dir);
      }
    }
  }
});

// --- the bundle: busybox `true`, config from `runc spec` ------------------------------------
const bundle = join(work, "bundle");
mkdirSync(join(bundle, "rootfs", "bin"), { recursive: true });
for (const d of ["proc", "sys", "dev", "tmp"]) mkdirSync(join(bundle, "rootfs", d));
copyFileSync("/bin/busybox", join(bundle, "rootfs", "bin", "busybox"));
symlinkSync("busybox", join(bundle, "rootfs", "bin", "true"));
symlinkSync("busybox", join(bundle, "rootfs", "bin", "sh"));
execFileSync("runc", ["spec", "-b", bundle]);
const config = JSON.parse(readFileSync(join(bundle, "config.json"), "utf8"));
config.process.terminal = false;
config.process.args = ["true"];
config.linux.cgroupsPath = `${cgroupParent}/bench`;
writeFileSync(join(bundle, "config.json"), JSON.stringify(config, null, 2));

const roots = {
  runc: join(work, "root-runc"),
  berth: join(work, "root-berth"),
  lib: join(work, "root-lib"),
  pool: join(work, "root-pool"),
};
const commands = {
  runc: ["runc", ["--root", roots.runc, "run", "-b", bundle, "bench"]],
  berth: [process.execPath, [berthBin, "--root", roots.berth, "run", "-b", bundle, "bench"]],
  // The floor under berth-runc's number: starting Node itself with nothing to do.
  node: [process.execPath, ["-e", "0"]],
};
for (const [name, root] of Object.entries(roots)) {
  cleanups.track(() => {
    // A run that was interrupted may leave its container; force-delete it by id.
    const [cmd, args] = name === "runc" ? ["runc", []] : [process.execPath, [berthBin]];
    if (name === "lib" || name === "pool") return; // Deleted in-process by run(), or below.
    if (existsSync(join(root, "bench"))) {
      try {
        execFileSync(cmd, [...args, "--root", root, "delete", "-f", "bench"], { stdio: "ignore" });
      } catch {
        // Nothing to delete.
      }
    }
  });
}

const { createRuntime } = await import(join(repo, "packages/runtime/dist/index.js"));
const lib = createRuntime({ root: roots.lib });
const POOL_SIZE = 2;
const pooled = createRuntime({ root: roots.pool, pool: { size: POOL_SIZE } });
for (const root of [roots.lib, roots.pool]) {
  cleanups.track(() => {
    if (existsSync(join(root, "bench"))) {
      try {
        execFileSync(process.execPath, [berthBin, "--root", root, "delete", "-f", "bench"], {
          stdio: "ignore",
        });
      } catch {
        // Nothing to delete.
      }
    }
  });
}
// Kills the idle pooled inits by pid (they would also exit on their own when this process does).
let poolClosed = false;
cleanups.track(() => {
  if (poolClosed) return;
  for (const pid of poolInits().map((p) => p.pid)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone.
    }
  }
});

/** This process's children running berth's init, and whether each is idle (blocked on its socket). */
function poolInits() {
  const out = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const [state, ppid] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(ppid) !== process.pid || state === "Z") continue;
      if (!readFileSync(`/proc/${name}/cmdline`, "utf8").includes("/init.js")) continue;
      const wchan = readFileSync(`/proc/${name}/wchan`, "utf8");
      out.push({ pid: Number(name), idle: wchan.startsWith("unix_stream") });
    } catch {
      // Exited while we looked.
    }
  }
  return out;
}

/** Waits until the pool is full and its inits idle, so no refill overlaps a measurement. */
async function quiesce() {
  for (let i = 0; i < 1000; i++) {
    const inits = poolInits();
    if (inits.length === POOL_SIZE && inits.every((p) => p.idle)) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error("pool: the init pool did not refill within 5 s");
}

/** One in-process run of the bundle; resolves with the wall time in ms. */
async function onceLib(rt, name) {
  const start = performance.now();
  const code = await rt.run("bench", bundle, { stdio: ["inherit", "inherit", "inherit"] });
  const ms = performance.now() - start;
  if (code !== 0) throw new Error(`${name}: run exited with status ${code}`);
  return ms;
}

/** Runs one command to its exit; resolves with the wall time in ms; rejects on a non-zero exit. */
async function once(name) {
  await quiesce();
  if (name === "lib") return onceLib(lib, name);
  if (name === "pool") return onceLib(pooled, name);
  const [cmd, args] = commands[name];
  return new Promise((resolve, reject) => {
    const start = performance.now();
    const child = spawn(cmd, args, { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr = (stderr + d).slice(-2000);
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      const ms = performance.now() - start;
      if (code === 0) resolve(ms);
      else
        reject(
          new Error(`${name}: ${cmd} ${args.join(" ")} failed (${signal ?? `status ${code}`}): ${stderr}`),
        );
    });
  });
}

const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const f = (ms) => ms.toFixed(1).padStart(7);

try {
  console.log(
    `runtime bench: busybox \`true\` bundle, ${runs} runs each (+${warmup} warm-up), alternating order`,
  );
  console.log(`load average before: ${loadavgText()}`);
  console.log(
    `runc: ${execFileSync("runc", ["--version"], { encoding: "utf8" }).split("\n")[0]}; node ${process.version}`,
  );
  for (let i = 0; i < warmup; i++) {
    await once("runc");
    await once("berth");
    await once("node");
    await once("lib");
    await once("pool");
  }
  const times = { runc: [], berth: [], node: [], lib: [], pool: [] };
  for (let i = 0; i < runs; i++) {
    const order =
      i % 2 === 0 ? ["runc", "pool", "berth", "node", "lib"] : ["pool", "runc", "berth", "lib", "node"];
    for (const name of order) times[name].push(await once(name));
  }
  console.log("");
  console.log("                      median     min     p90     max   (ms, wall, spawn to exit)");
  const label = {
    runc: "runc run",
    berth: "berth-runc run",
    node: "node -e 0 (floor)",
    lib: "lib run (in-process)",
    pool: `lib run + pool (${POOL_SIZE})`,
  };
  for (const name of ["runc", "berth", "node", "lib", "pool"]) {
    const xs = times[name];
    console.log(
      `${label[name].padEnd(20)}${f(median(xs))} ${f(Math.min(...xs))} ${f(pct(xs, 90))} ${f(Math.max(...xs))}`,
    );
  }
  const ratio = median(times.berth) / median(times.runc);
  const libRatio = median(times.lib) / median(times.runc);
  const poolRatio = median(times.pool) / median(times.runc);
  const floor = median(times.node) / median(times.runc);
  console.log("");
  console.log(
    `ratio berth-runc/runc (medians): ${ratio.toFixed(2)}x — target ≤ ${TARGET}x: ${ratio <= TARGET ? "MET" : "NOT MET"}`,
  );
  console.log(
    `  (node -e 0 alone is ${floor.toFixed(2)}x runc: the floor under any command written in Node)`,
  );
  console.log(
    `ratio lib/runc (medians, in-process as the shim runs it): ${libRatio.toFixed(2)}x — ${libRatio <= TARGET ? "within" : "over"} ${TARGET}x`,
  );
  console.log(
    `ratio pool/runc (medians, in-process from a warm pool of ${POOL_SIZE}): ${poolRatio.toFixed(2)}x — target ≤ ${TARGET}x: ${poolRatio <= TARGET ? "MET" : "NOT MET"}`,
  );
  console.log(`load average after: ${loadavgText()}`);
} catch (err) {
  console.error(`runtime bench failed: ${err?.message ?? err}`);
  process.exitCode = 1;
} finally {
  await pooled.close().catch((err) => console.error(`pool close: ${err?.message ?? err}`));
  poolClosed = true;
  await cleanups.cleanup();
}
