// worker_threads entry of bench/pull-unpack.mjs: applies one layer blob (workerData.blob, gzip) onto
// an empty directory (workerData.dir) with @berth/archive's applyLayer, overlay whiteouts (as unpack
// does into an upperdir), and posts { ms, size, entries } back. Measures what applying layers on
// several threads at once, each into its own snapshot, would give.
import { createReadStream } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { applyLayer } from "@berth/archive";

const start = performance.now();
const result = await applyLayer(
  workerData.dir,
  createReadStream(workerData.blob, { highWaterMark: workerData.readSize ?? 64 << 10 }),
  {
    compression: "gzip",
    whiteouts: "overlay",
    expectedDiffId: workerData.diffId,
  },
);
parentPort.postMessage({ ms: performance.now() - start, size: result.size, entries: result.entries });
