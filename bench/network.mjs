#!/usr/bin/env node
// Benchmark (not a test): per-container network setup and teardown, berth's bridge driver
// (in-process rtnetlink, IPAM and nftables through libnftables) against the standard CNI plugins
// (bridge + host-local + portmap + firewall, Debian's containernetworking-plugins) run by berth's
// CNI runner on an equivalent exported conflist, in the same run. Targets of the issue: berth takes
// at most 0.25x CNI's setup+teardown time, and berth's median setup is at most 10 ms. See
// bench/README.md.
//
// Everything happens inside network namespaces this script creates: a "host" namespace (bridges,
// host-side veths, berth's nftables table, CNI's iptables rules) and one namespace per container.
// The real host's links, routes and nftables are only read, before and after, to show they did not
// change.
//
// Usage: node bench/network.mjs [--runs N] [--no-breakdown]
// Needs root, /usr/lib/cni/{bridge,host-local,portmap,firewall}, libnftables1, iptables, and the
// built packages (`npm run build`, or `npx tsc -b packages/network`).
import { existsSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { capture, createCleanups, loadavgText, median, mountsUnder, removeTree } from "./lib/harness.mjs";

const TARGET_RATIO = 0.25;
const TARGET_SETUP_MS = 10;
const PLUGIN_DIR = "/usr/lib/cni";
const PLUGINS = ["bridge", "host-local", "portmap", "firewall"];

const { values: args } = parseArgs({
  options: {
    runs: { type: "string", default: "30" },
    "no-breakdown": { type: "boolean", default: false },
  },
});
const runs = Number.parseInt(args.runs, 10);
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`--runs must be a positive integer, got ${args.runs}`);
  process.exit(2);
}
if (process.getuid?.() !== 0) {
  console.error("network bench: needs root (network namespaces, bridges, nftables)");
  process.exit(1);
}
for (const plugin of PLUGINS) {
  if (!existsSync(join(PLUGIN_DIR, plugin))) {
    console.error(
      `network bench: CNI plugin ${join(PLUGIN_DIR, plugin)} is missing (containernetworking-plugins)`,
    );
    process.exit(1);
  }
}
if (!existsSync(new URL("../packages/network/dist/index.js", import.meta.url))) {
  console.error("network bench: @berth/network is not built; run `npm run build` first");
  process.exit(1);
}

const {
  createBridgeDriver,
  createCniRunner,
  createNat,
  createNetns,
  createNetworkManager,
  deleteNetns,
  exportBridgeConflist,
  Rtnetlink,
} = await import("@berth/network");

// Names of our own, so nothing can clash with what the machine (or the other side) uses.
const BERTH_NETWORK = "benchberth";
const BERTH_SUBNET = "10.250.0.0/24";
const BERTH_TABLE = "berth_bench";
const LIFECYCLE_NETWORK = "benchlife";
const LIFECYCLE_SUBNET = "10.250.3.0/24";
const CNI_NETWORK = "benchcni";
const CNI_BRIDGE = "bzbenchcni0";
const CNI_SUBNET = "10.250.1.0/24";
const CNI_GATEWAY = "10.250.1.1";

const cleanups = createCleanups();
const log = (s = "") => console.log(s);

/** The parts of the real host the bench must leave as they were. */
async function hostSnapshot() {
  const [links, routes, routes6, tables] = await Promise.all([
    capture("ip", ["-j", "link"]),
    capture("ip", ["-j", "route"]),
    capture("ip", ["-j", "-6", "route"]),
    capture("nft", ["list", "tables"]),
  ]);
  return { links, routes, routes6, tables };
}

const pct = (xs, p) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((xs.length * p) / 100))];
const f = (ms) => ms.toFixed(2).padStart(8);

async function timed(fn) {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

let dir;
const before = await hostSnapshot();
try {
  log(`network bench: ${runs} containers per side (+1 warm-up each), alternating order`);
  log(
    `load average before: ${loadavgText()}; node ${process.version}; kernel ${(await capture("uname", ["-r"])).trim()}`,
  );

  dir = await mkdtemp(join(tmpdir(), "berth-bench-network-"));
  const work = dir;
  // Registered first, so it runs last: unmounts any namespace file still mounted, removes the dir.
  cleanups.track(() => removeTree(work));
  const netnsFiles = [];
  cleanups.track(() => {
    for (const path of netnsFiles) deleteNetns(path);
  });
  const newNetns = (name) => {
    const path = join(work, name);
    netnsFiles.push(path);
    createNetns(path);
    return path;
  };

  // The "host": lo up, as on a real host. Its bridges, veths, nftables table and iptables rules
  // all vanish with it at the end.
  const hostNs = newNetns("host");
  const host = Rtnetlink.open({ netns: hostNs });
  try {
    host.setLinkUp("lo");
  } finally {
    host.close();
  }

  // Containers' namespaces, made beforehand (not timed): one fresh namespace per container and side.
  const containers = [];
  for (let i = 0; i <= runs; i++) {
    containers.push({
      index: i,
      // Index 0 is the warm-up container.
      id: i === 0 ? "warmup" : `bench${i}`,
      hostPort: 20000 + i,
      berthNs: newNetns(`ctr-berth-${i}`),
      lifecycleNs: newNetns(`ctr-life-${i}`),
      cniNs: newNetns(`ctr-cni-${i}`),
    });
  }

  // berth: the bridge driver with its state, NAT table and host namespace of its own.
  const driver = createBridgeDriver({
    stateDir: join(work, "berth-state"),
    hostNetns: hostNs,
    natTable: BERTH_TABLE,
  });
  await driver.createNetwork({ name: BERTH_NETWORK, subnet: BERTH_SUBNET });
  // What `berth run` pays: the lifecycle manager around the same driver (a record written before
  // acting, the namespace pinned under the state dir, hosts and resolv.conf, then connect), on a
  // network of its own.
  const manager = createNetworkManager({
    stateDir: join(work, "berth-lifecycle"),
    hostNetns: hostNs,
    natTable: BERTH_TABLE,
  });
  await manager.bridge.createNetwork({ name: LIFECYCLE_NETWORK, subnet: LIFECYCLE_SUBNET });

  // CNI: the conflist berth exports for an equivalent network (another bridge and subnet), the
  // plugins started in the host namespace by the runner's `netns` option.
  const conflist = exportBridgeConflist(
    { name: CNI_NETWORK, bridge: CNI_BRIDGE, ipv4: { subnet: CNI_SUBNET, gateway: CNI_GATEWAY } },
    { ipamDataDir: join(work, "cni-ipam") },
  );
  const runner = createCniRunner({
    cacheDir: join(work, "cni-cache"),
    pluginPaths: [PLUGIN_DIR],
    netns: hostNs,
  });
  log(`CNI conflist: ${conflist.plugins.map((p) => p.type).join(" + ")} (cniVersion ${conflist.cniVersion})`);

  const ports = (c) => [{ protocol: "tcp", hostPort: c.hostPort, containerPort: 80 }];
  const lifecyclePorts = (c) => [{ protocol: "tcp", hostPort: c.hostPort + 1000, containerPort: 80 }];
  const cniRuntime = (c) => ({
    containerId: c.id,
    netns: c.cniNs,
    ifName: "eth0",
    capabilityArgs: { portMappings: ports(c) },
  });

  const sides = {
    berth: {
      setup: (c) =>
        driver.connect(BERTH_NETWORK, { containerId: c.id, netnsPath: c.berthNs, ports: ports(c) }),
      teardown: (c) => driver.disconnect(BERTH_NETWORK, c.id),
    },
    lifecycle: {
      setup: async (c) => {
        await manager.prepare(c.id, {
          mode: { kind: "bridge", network: LIFECYCLE_NETWORK },
          ports: lifecyclePorts(c),
        });
        await manager.setup(c.id, { netnsPath: c.lifecycleNs });
      },
      teardown: (c) => manager.teardown(c.id),
    },
    cni: {
      setup: (c) => runner.addNetworkList(conflist, cniRuntime(c)),
      teardown: (c) => runner.delNetworkList(conflist, cniRuntime(c)),
    },
  };
  const times = {
    berth: { setup: [], teardown: [], total: [] },
    lifecycle: { setup: [], teardown: [], total: [] },
    cni: { setup: [], teardown: [], total: [] },
  };
  const once = async (side, c, record) => {
    const setup = await timed(() => sides[side].setup(c));
    const teardown = await timed(() => sides[side].teardown(c));
    if (!record) return;
    times[side].setup.push(setup);
    times[side].teardown.push(teardown);
    times[side].total.push(setup + teardown);
  };

  // Warm-up: the first attach of each side creates its bridge (and berth's table, CNI's chains).
  await once("berth", containers[0], false);
  await once("lifecycle", containers[0], false);
  await once("cni", containers[0], false);
  for (const c of containers.slice(1)) {
    const order = c.index % 2 === 0 ? ["berth", "lifecycle", "cni"] : ["cni", "lifecycle", "berth"];
    for (const side of order) await once(side, c, true);
  }

  log("");
  log("ms per container                 median      p90");
  const names = { berth: "berth driver", lifecycle: "berth lifecycle", cni: "CNI" };
  for (const side of ["berth", "lifecycle", "cni"]) {
    for (const phase of ["setup", "teardown", "total"]) {
      const xs = times[side][phase];
      const label = `${names[side]} ${phase === "total" ? "setup+teardown" : phase}`;
      log(`${label.padEnd(32)}${f(median(xs))} ${f(pct(xs, 90))}`);
    }
  }
  for (const side of ["berth", "lifecycle"]) {
    const ratio = (phase) => median(times[side][phase]) / median(times.cni[phase]);
    log("");
    log(
      `ratio ${names[side]}/CNI (medians): setup ${ratio("setup").toFixed(3)}x, teardown ${ratio("teardown").toFixed(3)}x`,
    );
    const total = ratio("total");
    log(
      `ratio ${names[side]}/CNI setup+teardown (medians): ${total.toFixed(3)}x — target ≤ ${TARGET_RATIO}x: ${total <= TARGET_RATIO ? "MET" : "NOT MET"}`,
    );
    const setup = median(times[side].setup);
    log(
      `${names[side]} median setup: ${setup.toFixed(2)} ms — target ≤ ${TARGET_SETUP_MS} ms: ${setup <= TARGET_SETUP_MS ? "MET" : "NOT MET"}`,
    );
  }

  if (!args["no-breakdown"]) {
    // berth's NAT alone (the part of setup and teardown that talks to nftables), on a table of its
    // own in the same host namespace: one published port added, then removed.
    const nat = createNat({ table: `${BERTH_TABLE}_nat`, netns: hostNs });
    nat.setup();
    const add = [];
    const remove = [];
    for (const c of containers) {
      const container = { id: c.id, addresses: ["10.250.2.2"], ports: ports(c) };
      add.push(await timed(() => nat.addContainer(container)));
      remove.push(await timed(() => nat.removeContainer(c.id)));
    }
    nat.deleteTable();
    log("");
    log("breakdown, berth NAT alone     median      p90");
    log(`${"nat.addContainer".padEnd(28)}${f(median(add))} ${f(pct(add, 90))}`);
    log(`${"nat.removeContainer".padEnd(28)}${f(median(remove))} ${f(pct(remove, 90))}`);
  }

  await driver.removeNetwork(BERTH_NETWORK);
  await manager.bridge.removeNetwork(LIFECYCLE_NETWORK);
  driver.close?.();
  manager.close();
  createNat({ table: BERTH_TABLE, netns: hostNs }).deleteTable();
  log("");
  log(`load average after: ${loadavgText()}`);
} catch (err) {
  console.error(`network bench failed: ${err?.stack ?? err}`);
  process.exitCode = 1;
} finally {
  await cleanups.cleanup();
  // THE SHARED MACHINE RULE: the real host's links, routes and tables are exactly as they were, and
  // no namespace file of the bench is left mounted.
  const after = await hostSnapshot();
  const changed = Object.keys(before).filter((k) => before[k] !== after[k]);
  const leftover = dir === undefined ? [] : mountsUnder(dir);
  if (changed.length > 0 || leftover.length > 0 || (dir !== undefined && existsSync(dir))) {
    console.error(
      `WARNING: the host changed (${changed.join(", ") || "no snapshot difference"}); mounts left: ${leftover.join(", ") || "none"}`,
    );
    process.exitCode = 1;
  } else {
    log(
      "host unchanged: ip -j link, ip -j route (v4 and v6), nft list tables identical; no namespace left mounted",
    );
  }
}
