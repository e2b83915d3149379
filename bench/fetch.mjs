#!/usr/bin/env node
// Benchmark (not a test): fetch of a ~550 MB, 8-layer image from a loopback registry into an
// empty store. berth (library and CLI) against containerd 1.6's `ctr content fetch`, measured in
// the same run against the same registry, printing medians, MB/s and the ratios berth/ctr. The
// target of the Foundation issue is at most 1.0x containerd's wall time.
//
// Usage: npm run fetch -w @berth/bench -- [--runs N] [--only ctr,lib,cli] [--no-breakdown]
//        [--concurrency N]
// Needs the built packages (`npm run build`), root, containerd + ctr, skopeo, docker-registry.
import { createHash } from "node:crypto";
import diagnostics from "node:diagnostics_channel";
import { readdirSync } from "node:fs";
import { mkdtemp, open, rm } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createLocalContentStore } from "@berth/content";
import { namespacedContentStore, openMetadata } from "@berth/metadata";
import { createResolver, fetchImage } from "@berth/remotes";
import { timedCtr, withContainerd } from "./lib/containerd.mjs";
import { loadFixture } from "./lib/fixture.mjs";
import {
  berthBin,
  capture,
  createCleanups,
  loadavgText,
  mb,
  mbps,
  median,
  pool,
  positiveIntOption,
  procCpuMs,
  runMain,
  sec,
  timed,
  workDir,
} from "./lib/harness.mjs";
import { startFixtureRegistry } from "./lib/registry.mjs";

const TARGET_RATIO = 1.0;

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    only: { type: "string", default: "ctr,lib,cli" },
    "no-breakdown": { type: "boolean", default: false },
    // Blobs the library pull transfers at once (the resolver's default, 3, when absent).
    concurrency: { type: "string" },
  },
});
const runs = positiveIntOption("runs", args.runs);
const only = new Set(args.only.split(","));
const resolverOptions = args.concurrency === undefined ? {} : { concurrency: Number(args.concurrency) };

// Everything started here is stopped here, on success, failure or a signal.
const cleanups = createCleanups();
const log = (s) => console.log(s);

await runMain(cleanups, main);

async function main() {
  const { layout, descriptor, manifest } = await loadFixture(workDir, log);
  const blobs = [descriptor, manifest.config, ...manifest.layers];
  const totalBytes = blobs.reduce((n, b) => n + b.size, 0);
  log(
    `image: ${manifest.layers.length} gzip layers, ${mb(totalBytes)} MB in ${blobs.length} blobs ` +
      `(layers ${manifest.layers.map((l) => mb(l.size)).join(", ")} MB)`,
  );

  const tmp = await mkdtemp(join(workDir, "tmp-"));
  cleanups.track(() => rm(tmp, { recursive: true, force: true }));

  // Reports the push in its own two lines below, hence no `log` here.
  const { registry, ref, pushMs } = await startFixtureRegistry(cleanups, workDir, layout, descriptor);
  log(`pushed ${ref} with skopeo in ${sec(pushMs)} s`);
  log(`registry pid ${registry.pid}; ${runs} run(s) of each of: ${[...only].join(", ")}`);
  log(
    `host: ${availableParallelism()} cpus, node ${process.version}, ${(await capture("ctr", ["--version"])).trim()}; ` +
      `load average before: ${loadavgText()}\n`,
  );

  const measures = {
    ctr: { label: "containerd 1.6 `ctr content fetch`", run: () => runCtr(tmp, ref, blobs, registry.pid) },
    lib: { label: "berth library (fetchImage)", run: () => runLib(tmp, ref, blobs, registry.pid) },
    cli: { label: "berth CLI `images pull`", run: () => runCli(tmp, ref, blobs, registry.pid) },
  };
  const order = ["ctr", "lib", "cli"].filter((k) => only.has(k));
  const results = Object.fromEntries(order.map((k) => [k, []]));
  for (let i = 0; i < runs; i++) {
    // Alternate the order so that neither side always runs on a warmer machine.
    const sequence = i % 2 === 0 ? order : [...order].reverse();
    for (const key of sequence) {
      const r = await measures[key].run();
      results[key].push(r);
      log(
        `run ${i + 1} ${key.padEnd(3)} ${sec(r.ms).padStart(7)} s  ${mbps(totalBytes, r.ms).padStart(7)} MB/s` +
          `  cpu ${sec(r.cpuMs)} s${r.daemonCpuMs === undefined ? "" : ` (+containerd ${sec(r.daemonCpuMs)} s)`}` +
          `  registry cpu ${sec(r.registryCpuMs)} s${r.note ? `  ${r.note}` : ""}`,
      );
    }
  }

  log(`\n=== fetch of a multi-layer image into an empty store (median of ${runs}) ===`);
  log(`image: ${mb(totalBytes)} MB, ${blobs.length} blobs; registry: ${ref}`);
  const med = {};
  for (const key of order) {
    const rs = results[key];
    med[key] = median(rs.map((r) => r.ms));
    const cpu = median(rs.map((r) => r.cpuMs + (r.daemonCpuMs ?? 0)));
    log(
      `${measures[key].label.padEnd(38)} ${sec(med[key]).padStart(7)} s  ${mbps(totalBytes, med[key]).padStart(7)} MB/s` +
        `  client cpu ${sec(cpu)} s  (runs: ${rs.map((r) => sec(r.ms)).join(", ")})`,
    );
  }
  if (med.ctr !== undefined) {
    for (const key of ["lib", "cli"].filter((k) => med[k] !== undefined)) {
      const ratio = med[key] / med.ctr;
      log(
        `ratio ${key === "lib" ? "library" : "CLI    "} berth/ctr: ${ratio.toFixed(2)}x  ` +
          `(target <= ${TARGET_RATIO.toFixed(1)}x: ${ratio <= TARGET_RATIO ? "MET" : "NOT MET"})`,
      );
    }
  }
  log(`load average after: ${loadavgText()} (other work on the machine skews both sides alike)`);
  if (results.lib?.[0]?.requests !== undefined) {
    const r = results.lib[0];
    log(`berth library HTTP: ${r.requests} requests over ${r.connections} connection(s) per pull`);
  }

  if (!args["no-breakdown"]) await breakdown(tmp, ref, blobs, manifest, totalBytes, registry);
}

/** One `ctr content fetch` into a containerd started (untimed) for this run only. */
async function runCtr(tmp, ref, blobs, registryPid) {
  return withContainerd(cleanups, tmp, async (containerd) => {
    const { ms, cpuMs, daemonCpuMs, registryCpuMs } = await timedCtr(cleanups, containerd, tmp, registryPid, [
      "content",
      "fetch",
      "--plain-http",
      ref,
    ]);
    const note = checkBlobs(join(containerd.contentDir, "blobs", "sha256"), blobs);
    return { ms, cpuMs, daemonCpuMs, registryCpuMs, note };
  });
}

/** One in-process pull with the library into a fresh root, as the brief and the CLI wire it. */
async function runLib(tmp, ref, blobs, registryPid, instrument) {
  const root = await mkdtemp(join(tmp, "berth-lib-"));
  let requests = 0;
  let connections = 0;
  const onRequest = () => requests++;
  const onConnect = () => connections++;
  diagnostics.subscribe("undici:request:create", onRequest);
  diagnostics.subscribe("undici:client:connected", onConnect);
  try {
    const registryBefore = procCpuMs(registryPid);
    const cpuBefore = process.cpuUsage();
    const eluBefore = performance.eventLoopUtilization();
    const start = performance.now();
    const store = await createLocalContentStore(join(root, "content"));
    const meta = openMetadata(join(root, "metadata.db"), { contentStore: store });
    try {
      const ns = namespacedContentStore(meta, store, "default");
      const target = instrument === undefined ? ns : instrument.wrap(ns);
      await fetchImage(createResolver(resolverOptions), target, ref);
    } finally {
      meta.close();
    }
    const ms = performance.now() - start;
    const cpu = process.cpuUsage(cpuBefore);
    const elu = performance.eventLoopUtilization(eluBefore);
    return {
      ms,
      cpuMs: (cpu.user + cpu.system) / 1000,
      registryCpuMs: procCpuMs(registryPid) - registryBefore,
      elu: elu.utilization,
      requests,
      connections,
      note: checkBlobs(join(root, "content", "blobs", "sha256"), blobs),
    };
  } finally {
    diagnostics.unsubscribe("undici:request:create", onRequest);
    diagnostics.unsubscribe("undici:client:connected", onConnect);
    await rm(root, { recursive: true, force: true });
  }
}

/** One `berth images pull` end to end: a new node process, embedded mode, fresh root and state. */
async function runCli(tmp, ref, blobs, registryPid) {
  const root = await mkdtemp(join(tmp, "berth-cli-"));
  try {
    const registryBefore = procCpuMs(registryPid);
    const { ms, cpuMs } = await timed(cleanups, root, process.execPath, [
      berthBin,
      "--root",
      join(root, "root"),
      "--state",
      join(root, "state"),
      "images",
      "pull",
      // This benchmark measures the fetch (`ctr content fetch` does not unpack either).
      "--skip-unpack",
      "--plain-http",
      ref,
    ]);
    return {
      ms,
      cpuMs,
      registryCpuMs: procCpuMs(registryPid) - registryBefore,
      note: checkBlobs(join(root, "root", "content", "blobs", "sha256"), blobs),
    };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

/**
 * Where berth's time goes: one more instrumented library pull (not in the medians) plus the
 * ceilings of its parts measured alone: the registry over HTTP, SHA-256, and file writes.
 */
async function breakdown(tmp, ref, blobs, manifest, totalBytes, registry) {
  log("\n=== where berth's time goes (one instrumented library pull, and its parts alone) ===");
  const inst = instrumentation();
  const r = await runLib(tmp, ref, blobs, registry.pid, inst);
  const s = inst.stats;
  log(
    `instrumented pull: ${sec(r.ms)} s, ${mbps(totalBytes, r.ms)} MB/s; process cpu ${sec(r.cpuMs)} s ` +
      `(${((r.cpuMs / r.ms) * 100).toFixed(0)}% of one core); main-thread busy ${(r.elu * 100).toFixed(0)}%`,
  );
  log(
    `  HTTP: ${r.requests} requests, ${r.connections} connection(s); ` +
      `writer.write: ${s.writes} calls, mean chunk ${(s.writeBytes / Math.max(1, s.writes) / 1024).toFixed(1)} KiB, ` +
      `${sec(s.writeMs)} s awaited in total (summed over concurrent blobs)`,
  );
  log(
    `  store.writer(): ${s.opens} opens, ${sec(s.openMs)} s; commit: ${s.commits}, ${sec(s.commitMs)} s ` +
      `(fsync + link + labels + metadata)`,
  );
  if (r.note) log(`  ${r.note}`);

  const layers = manifest.layers;
  const urls = layers.map((l) => `${registry.url}/v2/bench/big/blobs/${l.digest}`);
  for (const [label, concurrency, hash] of [
    ["HTTP GET of the layers, 3 at a time, bytes dropped", 3, false],
    ["HTTP GET of the layers, all at once, bytes dropped", layers.length, false],
    ["HTTP GET of the layers, 3 at a time, + sha256", 3, true],
  ]) {
    const start = performance.now();
    await pool(urls, concurrency, async (url) => {
      const res = await fetch(url);
      const h = hash ? createHash("sha256") : undefined;
      for await (const chunk of res.body) h?.update(chunk);
    });
    log(`  ceiling: ${label}: ${mbps(totalBytes, performance.now() - start)} MB/s`);
  }
  const block = Buffer.alloc(128 * 1024, 7);
  const hashed = createHash("sha256");
  let start = performance.now();
  for (let n = 0; n < totalBytes; n += block.length) hashed.update(block);
  hashed.digest();
  log(
    `  ceiling: sha256 in memory (128 KiB updates, main thread): ${mbps(totalBytes, performance.now() - start)} MB/s`,
  );
  start = performance.now();
  const chunk = Buffer.alloc(64 * 1024, 7);
  const fh = await open(join(tmp, "write-test"), "w");
  let written = 0;
  while (written < totalBytes) {
    await fh.write(chunk, 0, chunk.length, written);
    written += chunk.length;
  }
  await fh.sync();
  await fh.close();
  await rm(join(tmp, "write-test"));
  log(
    `  ceiling: sequential FileHandle.write of 64 KiB chunks + fsync, one file: ${mbps(written, performance.now() - start)} MB/s`,
  );
}

/** Wraps a content store to time writer opens, writes and commits. */
function instrumentation() {
  const stats = { opens: 0, openMs: 0, writes: 0, writeBytes: 0, writeMs: 0, commits: 0, commitMs: 0 };
  const wrapWriter = (w) =>
    new Proxy(w, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target);
        if (prop === "write") {
          return async (chunk) => {
            const t = performance.now();
            await value.call(target, chunk);
            stats.writeMs += performance.now() - t;
            stats.writes++;
            stats.writeBytes += chunk.byteLength;
          };
        }
        if (prop === "commit") {
          return async (...a) => {
            const t = performance.now();
            try {
              return await value.apply(target, a);
            } finally {
              stats.commitMs += performance.now() - t;
              stats.commits++;
            }
          };
        }
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
  return {
    stats,
    wrap: (store) =>
      new Proxy(store, {
        get(target, prop) {
          const value = Reflect.get(target, prop, target);
          if (prop === "writer") {
            return async (...a) => {
              const t = performance.now();
              try {
                return wrapWriter(await value.apply(target, a));
              } finally {
                stats.openMs += performance.now() - t;
                stats.opens++;
              }
            };
          }
          return typeof value === "function" ? value.bind(target) : value;
        },
      }),
  };
}

/** A warning when the store did not end up with exactly the image's blobs; empty when it did. */
function checkBlobs(dir, blobs) {
  let names = [];
  try {
    names = readdirSync(dir);
  } catch {
    // Reported below as nothing fetched.
  }
  const missing = blobs.filter((b) => !names.includes(b.digest.slice(7)));
  return missing.length === 0 ? "" : `WARNING: ${missing.length} of ${blobs.length} blobs missing in ${dir}`;
}
