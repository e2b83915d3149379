#!/usr/bin/env node
// Child process of bench/pull-unpack.mjs (run alone, possibly under --cpu-prof): one berth pull +
// unpack through the library, `createClient({ root })` then `client.pull(ref)` and
// `client.unpack(name)` timed separately, with each layer's apply timed from the unpack events.
// Writes its measurements as JSON to --out. Phase boundaries are also recorded on the monotonic
// clock (process.hrtime, microseconds), the clock of V8's CPU profiles, so that the parent can
// split a profile into its fetch and unpack parts.
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@berth/client";
import { diskUsage } from "@berth/snapshotter-overlay";

const { values: args } = parseArgs({
  options: {
    root: { type: "string" },
    ref: { type: "string" },
    out: { type: "string" },
    "usage-walk": { type: "boolean", default: false },
  },
});
const monoUs = () => Number(process.hrtime.bigint() / 1000n);

const phase = (start) => {
  const cpu = process.cpuUsage(start.cpu);
  return {
    ms: performance.now() - start.wall,
    cpuMs: (cpu.user + cpu.system) / 1000,
    userMs: cpu.user / 1000,
    systemMs: cpu.system / 1000,
    elu: performance.eventLoopUtilization(start.elu).utilization,
    fromUs: start.mono,
    toUs: monoUs(),
  };
};
const mark = () => ({
  wall: performance.now(),
  cpu: process.cpuUsage(),
  elu: performance.eventLoopUtilization(),
  mono: monoUs(),
});

const total = mark();
const open = mark();
const client = await createClient({ root: join(args.root, "root"), state: join(args.root, "state") });
const openPhase = phase(open);
let pullPhase;
let unpackPhase;
const layers = [];
try {
  const pullStart = mark();
  const image = await client.pull(args.ref, { plainHttp: true });
  pullPhase = phase(pullStart);
  const unpackStart = mark();
  let lastEnd = unpackStart.wall;
  let gaps = 0;
  const result = await client.unpack(image.name, {
    onEvent(e) {
      const now = performance.now();
      if (e.kind === "applying") {
        gaps += now - lastEnd;
        layers[e.layer] = {
          digest: e.descriptor.digest,
          size: e.descriptor.size,
          start: now,
          cpu: process.cpuUsage(),
        };
      } else {
        const l = layers[e.layer] ?? { digest: e.descriptor.digest, size: e.descriptor.size, start: now };
        const cpu = l.cpu ? process.cpuUsage(l.cpu) : { user: 0, system: 0 };
        layers[e.layer] = {
          digest: l.digest,
          size: l.size,
          kind: e.kind,
          ms: now - l.start,
          cpuMs: (cpu.user + cpu.system) / 1000,
          startMs: l.start - unpackStart.wall,
        };
        lastEnd = now;
      }
    },
  });
  unpackPhase = {
    ...phase(unpackStart),
    betweenLayersMs: gaps + (performance.now() - lastEnd),
    chainId: result.chainId,
  };
  // The overlay snapshotter's commit walks the new upperdir for its usage (as containerd's does);
  // walking the 8 upperdirs again now (page cache warm, as at commit) tells what that costs.
  if (args["usage-walk"]) {
    const snapshots = join(args.root, "root", "snapshots", "overlayfs", "snapshots");
    const walk = performance.now();
    for (const id of readdirSync(snapshots)) await diskUsage(join(snapshots, id, "fs"));
    unpackPhase.usageWalkMs = performance.now() - walk;
  }
} finally {
  const close = performance.now();
  await client.close();
  openPhase.closeMs = performance.now() - close;
}
writeFileSync(
  args.out,
  JSON.stringify({ open: openPhase, pull: pullPhase, unpack: unpackPhase, total: phase(total), layers }),
);
