#!/usr/bin/env node
// Benchmark (not a test): the compression engines berth could use for layers, on real layer data,
// measured in the same run. gzip: node:zlib (streaming, libuv thread pool) vs ISA-L igzip through
// koffi (streaming, on koffi's worker threads or on the main thread) vs libdeflate (whole buffer
// only). zstd: libzstd through koffi, async vs sync calls and two buffer sizes, with `zstd -dc` as
// the anchor. Prints median wall time, MB/s of uncompressed data, and the event loop's longest stall
// (what a sync native call costs the rest of the process).
//
// Usage: npm run compression -w @berth/bench -- [--runs N] [--size MB]
// Needs the built packages (`npm run build`), libzstd1, and optionally libisal2 and libdeflate0.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { gunzipSync, gzipSync } from "node:zlib";
import { compressStream, decompressStream } from "@berth/archive";
import {
  createIsalGunzip,
  createZstdDecoder,
  isalAvailable,
  libdeflateAvailable,
  libdeflateGunzip,
  libdeflateGzip,
} from "@berth/sys";
import { buildFixtureImages } from "@berth/testing";

const { values: args } = parseArgs({
  options: { runs: { type: "string", default: "3" }, size: { type: "string", default: "100" } },
});
const runs = Number(args.runs);
const benchDir = fileURLToPath(new URL(".", import.meta.url));
const workDir = join(benchDir, ".work", "compression");
await mkdir(workDir, { recursive: true });

// Inputs: the largest layer of the multiLayer fixture (busybox), and the first N MB of a GNU tar
// of /usr/share (text, images, locales: a typical distro layer).
const fixtures = await buildFixtureImages();
const ml = fixtures.multiLayer;
const layerBlobs = ml.layerDigests.map((d) => join(ml.layoutDir, "blobs", "sha256", d.slice(7)));
const biggest = layerBlobs.reduce((a, b) => (statSync(a).size >= statSync(b).size ? a : b));
const busyboxTar = gunzipSync(readFileSync(biggest));
const usrShare = join(workDir, `usr-share-${args.size}m.tar`);
if (!existsSync(usrShare)) {
  const tar = spawnSync(
    "sh",
    [
      "-c",
      `tar --sort=name --mtime=@0 --owner=0 --group=0 -C /usr -cf - share 2>/dev/null | head -c ${Number(args.size) << 20} > ${usrShare}`,
    ],
    { stdio: "inherit" },
  );
  if (tar.status !== 0) throw new Error("building the /usr/share tar failed");
}
const inputs = [
  { name: "busybox layer", tar: busyboxTar },
  { name: `/usr/share ${args.size} MB`, tar: readFileSync(usrShare) },
];

const CHUNK = 64 << 10; // what a registry download delivers per read, roughly
function chunks(buf) {
  const out = [];
  for (let i = 0; i < buf.length; i += CHUNK) out.push(buf.subarray(i, i + CHUNK));
  return out;
}

async function throughStream(input, transform) {
  let n = 0;
  await pipeline(
    Readable.from(chunks(input)),
    transform,
    new Writable({
      highWaterMark: 1 << 20,
      write(chunk, _e, cb) {
        n += chunk.length;
        cb();
      },
    }),
  );
  return n;
}

async function throughCodec(input, makeCodec) {
  const codec = makeCodec();
  let n = 0;
  for (const c of chunks(input)) for (const o of await codec.update(c)) n += o.length;
  for (const o of await codec.finish()) n += o.length;
  return n;
}

async function measure(label, rawSize, fn) {
  const times = [];
  let maxGap = 0;
  for (let i = 0; i < runs; i++) {
    // A 1 ms timer: the longest gap between its ticks is how long the event loop could not run.
    let last = performance.now();
    const tick = setInterval(() => {
      const now = performance.now();
      maxGap = Math.max(maxGap, now - last);
      last = now;
    }, 1);
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
    // Let the timer fire once more: after a fully synchronous run, that is where the stall shows.
    await new Promise((resolve) => setTimeout(resolve, 5));
    clearInterval(tick);
  }
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  const mbs = rawSize / (1 << 20) / (ms / 1000);
  console.log(
    `  ${label.padEnd(44)} ${ms.toFixed(0).padStart(6)} ms ${mbs.toFixed(0).padStart(6)} MB/s   longest loop stall ${maxGap.toFixed(0).padStart(4)} ms`,
  );
  return ms;
}

function cli(cmd, argv, input) {
  const r = spawnSync(cmd, argv, { input, maxBuffer: 2 ** 31 });
  if (r.status !== 0) throw new Error(`${cmd} failed: ${r.stderr}`);
  return r.stdout;
}

console.log(`compression bench: ${runs} runs each, median; input fed in ${CHUNK >> 10} KiB chunks`);
console.log(`isa-l: ${isalAvailable() ? "yes" : "no"}, libdeflate: ${libdeflateAvailable() ? "yes" : "no"}`);
for (const { name, tar } of inputs) {
  const gz = gzipSync(tar, { level: 6 });
  const zst = cli("zstd", ["-3", "-c", "-q"], tar);
  console.log(
    `\n${name}: ${(tar.length / 1048576).toFixed(1)} MB tar, gzip -6 ${(gz.length / 1048576).toFixed(1)} MB, zstd -3 ${(zst.length / 1048576).toFixed(1)} MB`,
  );
  console.log(" gzip decompress");
  await measure("node:zlib createGunzip (stream)", tar.length, () =>
    throughStream(gz, decompressStream("gzip", { gzipEngine: "zlib" })),
  );
  if (isalAvailable()) {
    await measure("isa-l igzip, koffi async, default (stream)", tar.length, () =>
      throughStream(gz, decompressStream("gzip", { gzipEngine: "isal" })),
    );
    await measure("isa-l igzip, koffi sync, default (stream)", tar.length, () =>
      throughStream(gz, decompressStream("gzip", { gzipEngine: "isal", nativeCalls: "sync" })),
    );
    for (const kib of [128, 256]) {
      await measure(`isa-l igzip, koffi async, ${kib} KiB buffers`, tar.length, () =>
        throughCodec(gz, () => createIsalGunzip({ mode: "async", bufferSize: kib << 10 })),
      );
    }
    await measure("isa-l igzip, koffi sync, 1 MiB buffers", tar.length, () =>
      throughCodec(gz, () => createIsalGunzip({ mode: "sync" })),
    );
    await measure("isa-l igzip, koffi sync, 128 KiB buffers", tar.length, () =>
      throughCodec(gz, () => createIsalGunzip({ mode: "sync", bufferSize: 128 << 10 })),
    );
  }
  if (libdeflateAvailable()) {
    await measure("libdeflate (whole buffer, sync)", tar.length, async () => libdeflateGunzip(gz).length);
  }
  await measure("gzip -dc (anchor, process)", tar.length, async () => cli("gzip", ["-dc"], gz).length);
  console.log(" zstd decompress");
  await measure("libzstd, koffi async, default (stream)", tar.length, () =>
    throughStream(zst, decompressStream("zstd")),
  );
  await measure("libzstd, koffi sync, default (stream)", tar.length, () =>
    throughStream(zst, decompressStream("zstd", { nativeCalls: "sync" })),
  );
  for (const kib of [128, 256]) {
    await measure(`libzstd, koffi async, ${kib} KiB`, tar.length, () =>
      throughCodec(zst, () => createZstdDecoder({ mode: "async", bufferSize: kib << 10 })),
    );
  }
  await measure("libzstd, koffi sync, 1 MiB", tar.length, () =>
    throughCodec(zst, () => createZstdDecoder({ mode: "sync" })),
  );
  await measure("libzstd, koffi sync, 128 KiB", tar.length, () =>
    throughCodec(zst, () => createZstdDecoder({ mode: "sync", bufferSize: 128 << 10 })),
  );
  await measure("zstd -dc (anchor, process)", tar.length, async () => cli("zstd", ["-dc"], zst).length);
  console.log(" compress");
  await measure("node:zlib createGzip level 6 (stream)", tar.length, () =>
    throughStream(tar, compressStream("gzip")),
  );
  await measure("node:zlib createGzip level 1 (stream)", tar.length, () =>
    throughStream(tar, compressStream("gzip", { level: 1 })),
  );
  if (libdeflateAvailable()) {
    await measure(
      "libdeflate level 6 (whole buffer, sync)",
      tar.length,
      async () => libdeflateGzip(tar, 6).length,
    );
  }
  await measure("libzstd level 3, koffi async (stream)", tar.length, () =>
    throughStream(tar, compressStream("zstd")),
  );
}
