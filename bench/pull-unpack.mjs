#!/usr/bin/env node
import { createHash } from "node:crypto";
import { createReadStream, readdirSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { basename, join } from "node:path";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { parseArgs } from "node:util";
import { Worker } from "node:worker_threads";
import { createGunzip } from "node:zlib";
import { applyLayer, decompressStream } from "@berth/archive";
import { isalAvailable } from "@berth/sys";
// Benchmark (not a test): pull AND unpack of a ~550 MB, 8-layer gzip image (~60 000 files) from a
// loopback registry into an empty root. berth's CLI (`berth images pull`, which fetches and then
// unpacks into the overlayfs snapshotter) against containerd 1.6's `ctr images pull` (fetch, then
// unpack into containerd's overlayfs snapshotter), measured in the same run against the same
// registry, alternating, each run into a fresh root / a fresh containerd. Prints the medians, the
// ratio berth/ctr against the target of the "Snapshotters and layers" issue (at most 0.5x), and
// where berth's time goes: fetch vs unpack, per-layer apply times, a CPU profile of the unpack,
// and the ceilings of the parts alone (gunzip with node:zlib and with @berth/archive's decoder,
// applyLayer without snapshotter or registry, on one thread and on two, GNU tar).
//
// Usage: npm run pull-unpack -w @berth/bench -- [--runs N] [--only ctr,cli,lib] [--no-breakdown]
//        [--no-profile] [--fs loop|dir]
// Every root is on a fresh ext4 file system on a loop device (--fs loop, the default; see the
// README for why) or in bench/.work (--fs dir). `lib` adds the library in a child process as a
// third measured side.
// Needs the built packages (`npm run build`), root, containerd + ctr, skopeo, docker-registry,
// mkfs.ext4 and loop devices.
import { timedCtr, withContainerd } from "./lib/containerd.mjs";
import { blobPath, loadFixture } from "./lib/fixture.mjs";
import {
  benchDir,
  berthBin,
  capture,
  createCleanups,
  exec,
  freshExt4,
  loadavgText,
  mb,
  mbps,
  median,
  pool,
  positiveIntOption,
  procCpuMs,
  removeTree,
  runMain,
  sec,
  syncDisks,
  timed,
  workDir,
} from "./lib/harness.mjs";
import { startFixtureRegistry } from "./lib/registry.mjs";

const TARGET_RATIO = 0.5;
const workerScript = join(benchDir, "lib", "berth-unpack-worker.mjs");
const applyThreadScript = join(benchDir, "lib", "apply-thread.mjs");

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    only: { type: "string", default: "ctr,cli" },
    "no-breakdown": { type: "boolean", default: false },
    "no-profile": { type: "boolean", default: false },
    // loop: every root on a fresh ext4 (loop device); dir: plain directories in bench/.work.
    fs: { type: "string", default: "loop" },
  },
});
const runs = positiveIntOption("runs", args.runs);
const only = new Set(args.only.split(","));
if (args.fs !== "loop" && args.fs !== "dir") {
  console.error(`--fs must be loop or dir, got ${args.fs}`);
  process.exit(2);
}

const cleanups = createCleanups();
// Entries per unpacked snapshot of the first run of each side, to check the others against.
const snapshotShapes = new Map();
// Makes the names of scratch directories unique.
let scratchCount = 0;
const log = (s) => console.log(s);

await runMain(cleanups, main);

async function main() {
  const { layout, descriptor, manifest } = await loadFixture(workDir, log);
  const config = JSON.parse(readFileSync(blobPath(layout, manifest.config.digest), "utf8"));
  const layers = manifest.layers.map((l, i) => ({
    ...l,
    diffId: config.rootfs.diff_ids[i],
    blob: blobPath(layout, l.digest),
  }));
  const gzBytes = layers.reduce((n, l) => n + l.size, 0);
  log(
    `image: ${layers.length} gzip layers, ${mb(gzBytes)} MB compressed ` +
      `(layers ${layers.map((l) => mb(l.size)).join(", ")} MB)`,
  );

  const tmp = await mkdtemp(join(workDir, "tmp-pull-unpack-"));
  cleanups.track(() => removeTree(tmp));
  const { registry, ref } = await startFixtureRegistry(cleanups, workDir, layout, descriptor, log);
  log(
    `host: ${availableParallelism()} cpus, node ${process.version}, ${(await capture("ctr", ["--version"])).trim()}; ` +
      `load average before: ${loadavgText()}`,
  );
  log(
    `${runs} run(s) of each of: ${[...only].join(", ")}; each into an empty root ` +
      `${args.fs === "loop" ? "on a fresh ext4 file system (loop device, made untimed)" : `in ${workDir}`}, ` +
      "`sync` (untimed) before each\n",
  );

  const measures = {
    ctr: { label: "containerd 1.6 `ctr images pull`", run: () => runCtr(tmp, ref, registry.pid) },
    cli: { label: "berth CLI `images pull` (+unpack)", run: () => runCli(tmp, ref, registry.pid) },
    lib: { label: "berth library (child process)", run: () => runLib(tmp, ref, registry.pid) },
  };
  const order = ["ctr", "cli", "lib"].filter((k) => only.has(k));
  const results = Object.fromEntries(order.map((k) => [k, []]));
  for (let i = 0; i < runs; i++) {
    // Alternate the order so that neither side always runs on a warmer (or dirtier) machine.
    const sequence = i % 2 === 0 ? order : [...order].reverse();
    for (const key of sequence) {
      syncDisks();
      const r = await measures[key].run();
      results[key].push(r);
      log(
        `run ${i + 1} ${key.padEnd(3)} ${sec(r.ms).padStart(7)} s  (fetch ${fmtPhase(r.fetchMs)} s, unpack ${fmtPhase(r.unpackMs)} s)` +
          `  cpu ${sec(r.cpuMs)} s${r.daemonCpuMs === undefined ? "" : ` (+containerd ${sec(r.daemonCpuMs)} s)`}` +
          `  registry cpu ${sec(r.registryCpuMs)} s  ${r.check}`,
      );
    }
  }

  log(`\n=== pull + unpack of a multi-layer image into an empty root (median of ${runs}) ===`);
  log(`image: ${mb(gzBytes)} MB gzip in ${layers.length} layers; registry: ${ref}`);
  const med = {};
  for (const key of order) {
    const rs = results[key];
    med[key] = {
      ms: median(rs.map((r) => r.ms)),
      fetchMs: medianOf(rs.map((r) => r.fetchMs)),
      unpackMs: medianOf(rs.map((r) => r.unpackMs)),
      cpuMs: median(rs.map((r) => r.cpuMs + (r.daemonCpuMs ?? 0))),
    };
    log(
      `${measures[key].label.padEnd(36)} ${sec(med[key].ms).padStart(7)} s` +
        `  (fetch ${fmtPhase(med[key].fetchMs)} s + unpack ${fmtPhase(med[key].unpackMs)} s)` +
        `  cpu ${sec(med[key].cpuMs)} s  (runs: ${rs.map((r) => sec(r.ms)).join(", ")})`,
    );
  }
  if (med.ctr !== undefined && med.lib !== undefined) {
    log(
      `ratio berth library/ctr (wall): ${(med.lib.ms / med.ctr.ms).toFixed(2)}x (for comparison; the target is the CLI's)`,
    );
  }
  if (med.ctr !== undefined && med.cli !== undefined) {
    const ratio = med.cli.ms / med.ctr.ms;
    const phase = (k) =>
      med.cli[k] !== undefined && med.ctr[k] !== undefined
        ? `${(med.cli[k] / med.ctr[k]).toFixed(2)}x`
        : "n/a";
    log(
      `ratio berth/ctr (wall): ${ratio.toFixed(2)}x  (fetch ${phase("fetchMs")}, unpack ${phase("unpackMs")})  ` +
        `target <= ${TARGET_RATIO.toFixed(1)}x: ${ratio <= TARGET_RATIO ? "MET" : "NOT MET"}`,
    );
    if (ratio > TARGET_RATIO) {
      log(
        `  to meet it berth needs <= ${sec(med.ctr.ms * TARGET_RATIO)} s wall for this pull+unpack ` +
          `(now ${sec(med.cli.ms)} s: ${sec(med.cli.ms - med.ctr.ms * TARGET_RATIO)} s to cut)`,
      );
    }
  }
  log(`load average after: ${loadavgText()} (other work on the machine skews both sides alike)`);

  if (!args["no-breakdown"]) await breakdown(tmp, ref, layers, gzBytes, med);
}

function medianOf(xs) {
  return xs.some((x) => x === undefined) ? undefined : median(xs);
}

function fmtPhase(ms) {
  return ms === undefined ? "?" : sec(ms);
}

/** One `ctr images pull` (fetch, then unpack into overlayfs) into a containerd started (untimed) for this run only. */
async function runCtr(tmp, ref, registryPid) {
  const fs = await scratch(tmp, "ctr");
  try {
    return await withContainerd(cleanups, fs.dir, async (containerd) => {
      // ctr 1.6 fetches everything, then prints "unpacking <platform> <digest>..." and unpacks.
      const { ms, cpuMs, daemonCpuMs, registryCpuMs, marks } = await timedCtr(
        cleanups,
        containerd,
        containerd.root,
        registryPid,
        ["images", "pull", "--plain-http", ref],
        { marks: { unpack: /unpacking \S+ sha256:/ } },
      );
      return {
        ms,
        cpuMs,
        daemonCpuMs,
        registryCpuMs,
        fetchMs: marks.unpack,
        unpackMs: marks.unpack === undefined ? undefined : ms - marks.unpack,
        check: await checkSnapshots("ctr", containerd.snapshotsDir),
      };
    });
  } finally {
    await fs.dispose();
  }
}

/**
 * A fresh, empty directory for one measurement: the mount point of a new ext4 file system
 * (`--fs loop`), or a new directory under `tmp` (`--fs dir`). `dispose()` unmounts and removes it.
 */
async function scratch(tmp, name) {
  const unique = `${name}-${++scratchCount}`;
  if (args.fs === "loop") return freshExt4(cleanups, tmp, unique);
  const dir = join(tmp, unique);
  await mkdir(dir);
  const dispose = cleanups.track(() => removeTree(dir));
  return {
    dir,
    dispose: async () => {
      cleanups.untrack(dispose);
      await removeTree(dir);
    },
  };
}

/** One `berth images pull` end to end: a new node process, embedded mode, fresh root and state. */
async function runCli(tmp, ref, registryPid) {
  const fs = await scratch(tmp, "berth-cli");
  const dir = fs.dir;
  try {
    // Any temporary mount of the applier would land in this run's directory, where cleanup finds it.
    await mkdir(join(dir, "tmp"));
    const registryBefore = procCpuMs(registryPid);
    const { ms, cpuMs } = await timed(
      cleanups,
      dir,
      process.execPath,
      [
        berthBin,
        "--root",
        join(dir, "root"),
        "--state",
        join(dir, "state"),
        "images",
        "pull",
        "--plain-http",
        ref,
      ],
      // No fetch/unpack split here: the CLI applies each layer as soon as its blob is in the store,
      // while later layers still download, so the two phases overlap (the report shows "?").
      { env: { ...process.env, TMPDIR: join(dir, "tmp") } },
    );
    return {
      ms,
      cpuMs,
      registryCpuMs: procCpuMs(registryPid) - registryBefore,
      fetchMs: undefined,
      unpackMs: undefined,
      check: await checkSnapshots("cli", join(dir, "root", "snapshots", "overlayfs", "snapshots")),
    };
  } finally {
    await fs.dispose();
  }
}

/** One library pull + unpack in a child process (lib/berth-unpack-worker.mjs), as in the breakdown. */
async function runLib(tmp, ref, registryPid) {
  const registryBefore = procCpuMs(registryPid);
  const r = await runWorker(tmp, ref, false);
  return {
    ms: r.ms,
    cpuMs: r.cpuMs,
    registryCpuMs: procCpuMs(registryPid) - registryBefore,
    fetchMs: r.result.pull.ms,
    unpackMs: r.result.unpack.ms,
    check: r.check,
  };
}

/**
 * Counts the entries of each snapshot's `fs` directory (untimed) and compares the sorted counts
 * with those of the other side's first run: both must have unpacked the same 8 layers.
 */
async function checkSnapshots(key, snapshotsDir) {
  let ids = [];
  try {
    ids = readdirSync(snapshotsDir);
  } catch {
    return `WARNING: no snapshots in ${snapshotsDir}`;
  }
  const counts = [];
  for (const id of ids) {
    const out = await exec(
      cleanups,
      "sh",
      ["-c", 'find "$1" -mindepth 1 -printf x | wc -c', "sh", join(snapshotsDir, id, "fs")],
      {
        keepStdout: true,
      },
    );
    counts.push(Number(out.trim()));
  }
  counts.sort((a, b) => a - b);
  const shape = counts.join(",");
  snapshotShapes.set(key, snapshotShapes.get(key) ?? shape);
  const other = [...snapshotShapes.entries()].find(([k]) => k !== key)?.[1];
  const total = counts.reduce((a, b) => a + b, 0);
  const summary = `${counts.length} snapshots, ${total} entries`;
  if (other !== undefined && other !== shape)
    return `WARNING: ${summary}, differs from the other side (${other})`;
  return other === undefined ? summary : `${summary} (same as the other side)`;
}

/**
 * Where berth's time goes: a library pull + unpack in a child process (phases and per-layer apply
 * times), the same under the CPU profiler (top self-time functions of the unpack), and the
 * ceilings of the parts alone.
 */
async function breakdown(tmp, ref, layers, gzBytes, med) {
  log("\n=== where berth's time goes ===");
  log(
    "library pull + unpack in a child process (createClient, client.pull, client.unpack; not in the medians):",
  );
  syncDisks();
  const lib = await runWorker(tmp, ref, false, true);
  const p = lib.result;
  log(
    `  createClient ${sec(p.open.ms)} s; pull (fetch) ${sec(p.pull.ms)} s, ${mbps(gzBytes, p.pull.ms)} MB/s, ` +
      `cpu ${sec(p.pull.cpuMs)} s, main thread busy ${pct(p.pull.elu)}`,
  );
  log(
    `  unpack ${sec(p.unpack.ms)} s, cpu ${sec(p.unpack.cpuMs)} s (user ${sec(p.unpack.userMs)}, sys ${sec(p.unpack.systemMs)}; ` +
      `${pct(p.unpack.cpuMs / p.unpack.ms)} of one core), main thread busy ${pct(p.unpack.elu)}; ` +
      `outside layer applies ${sec(p.unpack.betweenLayersMs)} s; close ${sec(p.open.closeMs)} s; ` +
      `process total ${sec(lib.ms)} s (cpu ${sec(lib.cpuMs)} s)`,
  );

  log(
    `  of which the snapshot commits' usage walks (diskUsage of each upperdir, walked again after the unpack): ` +
      `~${sec(p.unpack.usageWalkMs)} s`,
  );

  // Decompression alone, per layer, reading the blobs from the layout (in the page cache).
  log("ceilings of gunzip alone (8 layers one after the other, from the page cache):");
  const engine = isalAvailable() ? "isal" : "zlib";
  const variants = [
    [
      "node:zlib createGunzip (128 KiB chunks), output dropped",
      () => createGunzip({ chunkSize: 1 << 17 }),
      false,
    ],
    [
      "node:zlib createGunzip + sha256 of the tar (the diffID)",
      () => createGunzip({ chunkSize: 1 << 17 }),
      true,
    ],
    [
      `@berth/archive decompressStream("gzip") [auto = ${engine}] + sha256`,
      () => decompressStream("gzip"),
      true,
    ],
    [
      '@berth/archive decompressStream("gzip", {gzipEngine: "zlib"}) + sha256',
      () => decompressStream("gzip", { gzipEngine: "zlib" }),
      true,
    ],
  ];
  let autoGunzip;
  for (const [label, make, hash] of variants) {
    const r = await gunzipLayers(layers, make, hash, 1);
    if (label.includes("[auto")) autoGunzip = r;
    log(`  ${label}: ${sec(r.ms)} s, ${mbps(r.rawBytes, r.ms)} MB/s of tar`);
  }
  const twoAtOnce = await gunzipLayers(layers, () => decompressStream("gzip"), true, 2);
  log(
    `  @berth/archive decompressStream("gzip") + sha256, 2 layers at once: ${sec(twoAtOnce.ms)} s, ` +
      `${mbps(twoAtOnce.rawBytes, twoAtOnce.ms)} MB/s of tar`,
  );
  const rawBytes = autoGunzip.rawBytes;

  log("per layer (library unpack vs the same layer's gunzip + sha256 alone):");
  log("   #   gzip MB   tar MB   apply s   tar MB/s   apply cpu s   gunzip s   apply - gunzip s");
  for (const [i, l] of layers.entries()) {
    const a = p.layers[i] ?? {};
    const g = autoGunzip.perLayer[i];
    log(
      `  ${String(i + 1).padStart(2)} ${mb(l.size).padStart(9)} ${mb(g.rawBytes).padStart(8)} ${sec(a.ms ?? Number.NaN).padStart(9)}` +
        ` ${mbps(g.rawBytes, a.ms ?? Number.NaN).padStart(10)} ${sec(a.cpuMs ?? Number.NaN).padStart(13)} ${sec(g.ms).padStart(10)}` +
        ` ${sec((a.ms ?? Number.NaN) - g.ms).padStart(18)}`,
    );
  }
  const applySum = p.layers.reduce((n, a) => n + (a.ms ?? 0), 0);
  log(
    `  sum: ${mb(gzBytes)} MB gzip, ${mb(rawBytes)} MB tar; layer applies ${sec(applySum)} s ` +
      `(of which gunzip+sha256 alone would be ${sec(autoGunzip.ms)} s = ${pct(autoGunzip.ms / applySum)}), ` +
      `the rest (tar parsing, file system calls, snapshot prepare/commit) ${sec(applySum - autoGunzip.ms)} s`,
  );

  // applyLayer alone, no registry, content store or snapshotter: each layer into its own empty
  // directory with overlay whiteouts, as unpack does into an upperdir (that needs no lower layer).
  log("ceilings of applyLayer alone (blob from the page cache into an empty dir, overlay whiteouts):");
  syncDisks();
  // 64 KiB reads, as the content store's reader stream (FileHandle.createReadStream) delivers.
  const seq = await applyLayers(tmp, layers, 1, false);
  log(
    `  one layer after another on the main thread: ${sec(seq.ms)} s, ${mbps(rawBytes, seq.ms)} MB/s of tar`,
  );
  syncDisks();
  const threads = await applyLayers(tmp, layers, 2, true);
  log(
    `  2 worker threads, one layer each at a time, each into its own dir: ${sec(threads.ms)} s, ` +
      `${mbps(rawBytes, threads.ms)} MB/s of tar (${(seq.ms / threads.ms).toFixed(2)}x faster)`,
  );
  syncDisks();
  const bigReads = await applyLayers(tmp, layers, 1, false, 1 << 20);
  log(
    `  one layer after another on the main thread, blob read in 1 MiB chunks instead of 64 KiB: ${sec(bigReads.ms)} s, ` +
      `${mbps(rawBytes, bigReads.ms)} MB/s of tar (${(seq.ms / bigReads.ms).toFixed(2)}x faster)`,
  );
  syncDisks();
  const gnu = await gnuTar(tmp, layers);
  log(`  GNU tar -xzf (gzip -d in a second process), one layer after another into one dir: ${sec(gnu)} s`);

  let profile;
  if (!args["no-profile"]) {
    log("CPU profile of the library unpack phase (node --cpu-prof, a separate run; self time):");
    syncDisks();
    profile = await runWorker(tmp, ref, true);
    printProfile(profile);
  }

  // What the measurements say about the target.
  log("estimates (from the numbers above):");
  const fetch = p.pull.ms;
  const unpack = p.unpack.ms;
  const ctrMs = med.ctr?.ms;
  const line = (label, ms) =>
    log(
      `  ${label}: ~${sec(ms)} s${ctrMs === undefined ? "" : ` = ${(ms / ctrMs).toFixed(2)}x ctr's median`}`,
    );
  line("now (library fetch + unpack, sequential)", fetch + unpack);
  // On one thread the two phases share the event loop: their main-thread busy times add up.
  line(
    "fetch and unpack overlapped on the one main thread: max(fetch, unpack, busy(fetch) + busy(unpack))",
    Math.max(fetch, unpack, fetch * p.pull.elu + unpack * p.unpack.elu),
  );
  line(
    "unpack on a worker thread, overlapped with the fetch (a layer applied while later ones download): max(fetch, unpack)",
    Math.max(fetch, unpack),
  );
  const unpackThreads = unpack * (threads.ms / seq.ms);
  line(
    "fetch, then layers applied on 2 threads into separate snapshots (measured speed-up of applyLayer alone)",
    fetch + unpackThreads,
  );
  line("both: overlapped and on 2 threads", Math.max(fetch, unpackThreads));
  line(
    "fetch, then unpack reading the blobs in 1 MiB chunks (measured speed-up of applyLayer alone)",
    fetch + unpack * (bigReads.ms / seq.ms),
  );
}

function pct(x) {
  return `${(x * 100).toFixed(0)}%`;
}

/** Runs bench/lib/berth-unpack-worker.mjs (optionally under --cpu-prof) into a fresh root. */
async function runWorker(tmp, ref, profile, usageWalk = false) {
  const fs = await scratch(tmp, "berth-lib");
  const dir = fs.dir;
  try {
    await mkdir(join(dir, "tmp"));
    const out = join(dir, "result.json");
    const profDir = join(dir, "prof");
    const nodeArgs = profile ? ["--cpu-prof", `--cpu-prof-dir=${profDir}`, "--cpu-prof-interval=500"] : [];
    const r = await timed(
      cleanups,
      dir,
      process.execPath,
      [
        ...nodeArgs,
        workerScript,
        "--root",
        dir,
        "--ref",
        ref,
        "--out",
        out,
        ...(usageWalk ? ["--usage-walk"] : []),
      ],
      { env: { ...process.env, TMPDIR: join(dir, "tmp") } },
    );
    const result = JSON.parse(readFileSync(out, "utf8"));
    let prof;
    if (profile) {
      const file = readdirSync(profDir).find((n) => n.endsWith(".cpuprofile"));
      prof = file === undefined ? undefined : JSON.parse(readFileSync(join(profDir, file), "utf8"));
    }
    const check = await checkSnapshots("lib", join(dir, "root", "snapshots", "overlayfs", "snapshots"));
    return { ...r, result, prof, check };
  } finally {
    await fs.dispose();
  }
}

/** Prints the top self-time functions and packages of a profile's unpack phase. */
function printProfile({ result, prof }) {
  if (prof === undefined) {
    log("  (no profile written)");
    return;
  }
  const { fromUs, toUs } = result.unpack;
  const nodes = new Map(prof.nodes.map((n) => [n.id, n]));
  const byFunction = new Map();
  const byGroup = new Map();
  let total = 0;
  let t = prof.startTime;
  for (let i = 0; i < prof.samples.length; i++) {
    t += prof.timeDeltas[i];
    // A sample stands for the interval until the next one.
    const dt = prof.timeDeltas[i + 1] ?? 0;
    if (t < fromUs || t > toUs) continue;
    const frame = nodes.get(prof.samples[i]).callFrame;
    const name = frame.functionName || "(anonymous)";
    const where = frame.url ? ` ${shortUrl(frame.url)}:${frame.lineNumber + 1}` : "";
    const key = `${name}${where}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + dt);
    const group = groupOf(frame);
    byGroup.set(group, (byGroup.get(group) ?? 0) + dt);
    total += dt;
  }
  const span = toUs - fromUs;
  if (total === 0) {
    log("  (no samples in the unpack phase: the profile clock does not match process.hrtime)");
    return;
  }
  log(
    `  ${(total / 1e6).toFixed(2)} s sampled over the ${(span / 1e6).toFixed(2)} s unpack; by where the code lives:`,
  );
  for (const [group, us] of [...byGroup].sort((a, b) => b[1] - a[1]).slice(0, 10)) {
    log(`    ${pct(us / total).padStart(4)}  ${(us / 1e6).toFixed(2).padStart(6)} s  ${group}`);
  }
  log("  top functions by self time:");
  for (const [key, us] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, 15)) {
    log(`    ${pct(us / total).padStart(4)}  ${(us / 1e6).toFixed(2).padStart(6)} s  ${key}`);
  }
}

function shortUrl(url) {
  const m = /\/packages\/([^/]+)\/dist\/(.+)$/.exec(url);
  if (m) return `@berth/${m[1]}/${m[2]}`;
  const nm = /node_modules\/(.+)$/.exec(url);
  if (nm) return nm[1];
  return url.startsWith("node:") ? url : basename(url);
}

function groupOf(frame) {
  const { url, functionName } = frame;
  if (!url) {
    if (functionName === "(idle)")
      return "(idle: main thread waiting for I/O, the thread pool or native threads)";
    if (functionName === "(garbage collector)") return "(garbage collector)";
    if (functionName === "(program)") return "(program: V8/native, not attributed to JS)";
    return `native: ${functionName}`;
  }
  const m = /\/packages\/([^/]+)\/dist\/([^/]+)$/.exec(url);
  if (m) return `@berth/${m[1]} ${m[2]}`;
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1];
  if (url.startsWith("node:")) return url.split("/").slice(0, 2).join("/");
  return basename(url);
}

/** Gunzips every layer blob `concurrency` at a time into a sink (hashing with `hash`). */
async function gunzipLayers(layers, make, hash, concurrency) {
  const perLayer = new Array(layers.length);
  const start = performance.now();
  await pool(layers, concurrency, async (layer, i) => {
    const t = performance.now();
    const h = hash ? createHash("sha256") : undefined;
    let rawBytes = 0;
    await pipeline(
      createReadStream(layer.blob, { highWaterMark: 64 << 10 }),
      make(),
      new Writable({
        highWaterMark: 1 << 20,
        write(chunk, _enc, done) {
          h?.update(chunk);
          rawBytes += chunk.length;
          done();
        },
      }),
    );
    const digest = h === undefined ? undefined : `sha256:${h.digest("hex")}`;
    if (digest !== undefined && digest !== layer.diffId) {
      throw new Error(`layer ${i + 1}: gunzip gave ${digest}, the config says ${layer.diffId}`);
    }
    perLayer[i] = { ms: performance.now() - t, rawBytes };
  });
  const ms = performance.now() - start;
  return { ms, rawBytes: perLayer.reduce((n, l) => n + l.rawBytes, 0), perLayer };
}

/** applyLayer of every layer into its own empty dir, `concurrency` at a time (on worker threads when `threads`). */
async function applyLayers(tmp, layers, concurrency, threads, readSize = 64 << 10) {
  const fs = await scratch(tmp, "apply");
  const dir = fs.dir;
  try {
    const perLayer = new Array(layers.length);
    const start = performance.now();
    await pool(layers, concurrency, async (layer, i) => {
      const target = join(dir, String(i));
      await mkdir(target);
      if (threads) {
        perLayer[i] = await new Promise((resolve, reject) => {
          const worker = new Worker(applyThreadScript, {
            workerData: { blob: layer.blob, dir: target, diffId: layer.diffId, readSize },
          });
          worker.once("message", resolve);
          worker.once("error", reject);
          worker.once("exit", (code) => code !== 0 && reject(new Error(`apply thread exited with ${code}`)));
        });
      } else {
        const t = performance.now();
        const r = await applyLayer(target, createReadStream(layer.blob, { highWaterMark: readSize }), {
          compression: "gzip",
          whiteouts: "overlay",
          expectedDiffId: layer.diffId,
        });
        perLayer[i] = { ms: performance.now() - t, size: r.size, entries: r.entries };
      }
    });
    return { ms: performance.now() - start, perLayer };
  } finally {
    await fs.dispose();
  }
}

/** GNU tar -xzf of every layer into one directory, one after another. */
async function gnuTar(tmp, layers) {
  const fs = await scratch(tmp, "gnu-tar");
  const dir = fs.dir;
  try {
    const start = performance.now();
    for (const layer of layers) {
      await exec(cleanups, "tar", ["-xzf", layer.blob, "-C", dir, "--numeric-owner"]);
    }
    return performance.now() - start;
  } finally {
    await fs.dispose();
  }
}
