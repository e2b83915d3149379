import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlreadyExists, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { nftablesAvailable, readMountInfo, unmount } from "@berth/sys";
import { hostNetworkSnapshot, requiresNetworkSandbox, serveTcp, tcpFetch } from "@berth/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createNat } from "../nat/nat.js";
import { Rtnetlink } from "../netlink/rtnetlink.js";
import { createNetns, deleteNetns, type NotPromise } from "../netns/netns.js";
import { createNetworkManager, type NetworkManager, NetworkModeKind, parseNetworkMode } from "./manager.js";
import { formatPortMapping, parsePortMapping } from "./ports.js";

describe("parseNetworkMode and parsePortMapping", () => {
  it("reads nerdctl/podman-style modes", () => {
    expect(parseNetworkMode("bridge")).toEqual({ kind: "bridge", network: "berth" });
    expect(parseNetworkMode("front")).toEqual({ kind: "bridge", network: "front" });
    expect(parseNetworkMode("host")).toEqual({ kind: "host" });
    expect(parseNetworkMode("none")).toEqual({ kind: "none" });
    expect(parseNetworkMode("container:web")).toEqual({ kind: "container", container: "web" });
    expect(parseNetworkMode("ns:/run/netns/x")).toEqual({ kind: "netns", path: "/run/netns/x" });
    expect(parseNetworkMode("cni:mynet")).toEqual({ kind: "cni", network: "mynet" });
    expect(() => parseNetworkMode("")).toThrow(/empty/);
    expect(() => parseNetworkMode("container:")).toThrow(/nothing after/);
    expect(() => parseNetworkMode("pod:x")).toThrow(/unknown kind "pod"/);
  });

  it("reads docker-style published ports and names what is wrong", () => {
    expect(parsePortMapping("8080:80")).toEqual({ protocol: "tcp", hostPort: 8080, containerPort: 80 });
    expect(parsePortMapping("127.0.0.1:53:5353/udp")).toEqual({
      protocol: "udp",
      hostPort: 53,
      containerPort: 5353,
      hostIP: "127.0.0.1",
    });
    expect(parsePortMapping("[::1]:8443:443")).toEqual({
      protocol: "tcp",
      hostPort: 8443,
      containerPort: 443,
      hostIP: "::1",
    });
    expect(formatPortMapping(parsePortMapping("[::1]:8443:443"))).toBe("[::1]:8443:443/tcp");
    for (const [bad, why] of [
      ["80", /expected/],
      ["8080:80/sctp", /protocol "sctp"/],
      ["0:80", /host port "0"/],
      ["8080:70000", /container port "70000"/],
      ["8000-8010:80", /host port "8000-8010"/],
      ["example.com:80:80", /host IP "example.com"/],
    ] as const) {
      const err = (() => {
        try {
          parsePortMapping(bad);
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(isInvalidArgument(err), bad).toBe(true);
      expect((err as Error).message).toMatch(why);
    }
  });
});

const TABLE = "berth_mgrtest";

describe.runIf(
  requiresNetworkSandbox("network manager (network namespaces, nftables)") && nftablesAvailable(),
)("network manager", () => {
  let dir = "";
  let hostNs = "";
  let manager: NetworkManager;
  let before: Record<string, unknown>;
  const namespaces: string[] = [];
  const stops: Array<() => Promise<void>> = [];

  const netns = (name: string) => {
    const path = join(dir, "ns", name);
    createNetns(path);
    namespaces.push(path);
    return path;
  };

  const open = () =>
    createNetworkManager({
      stateDir: join(dir, "state"),
      hostNetns: hostNs,
      natTable: TABLE,
      cniConfDirs: [join(dir, "cni")],
      hostResolvConf: join(dir, "resolv.conf"),
    });

  beforeAll(() => {
    before = hostNetworkSnapshot();
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-netmgr-"));
    hostNs = netns("host");
    Rtnetlink.use({ netns: hostNs }, (rt) => rt.setLinkUp("lo"));
    writeFileSync(join(dir, "resolv.conf"), "nameserver 127.0.0.53\nsearch example.test\n");
    manager = open();
  });

  afterEach(async () => {
    manager.close();
    for (const stop of stops.splice(0)) await stop();
    for (const ns of namespaces.splice(0)) deleteNetns(ns);
    // Whatever a failed test left mounted (namespace pins) is detached before the directory goes,
    // and still fails the test.
    const mounts = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    for (const m of mounts) unmount(m.mountPoint, { detach: true, ignoreMissing: true });
    rmSync(dir, { recursive: true, force: true });
    expect(mounts).toEqual([]);
  });

  afterAll(() => {
    expect(hostNetworkSnapshot()).toEqual(before);
  });

  const inNs = <T>(ns: string, fn: (rt: Rtnetlink) => NotPromise<T>) => Rtnetlink.use({ netns: ns }, fn);
  /** Published ports in the test's table, through a Nat closed right after. */
  const published = () => {
    const nat = createNat({ table: TABLE, netns: hostNs });
    try {
      return nat.listPublished();
    } finally {
      nat.close();
    }
  };
  const linksIn = (ns: string) => inNs(ns, (rt) => rt.listLinks().map((l) => l.name));
  const hostLinks = () => linksIn(hostNs).sort();

  it("bridge mode: prepare, setup, teardown with hosts, resolv.conf, a pin and published ports", async () => {
    const plan = await manager.prepare("web", {
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 80 }],
      hostname: "web.local",
    });
    expect(plan.namespace).toEqual({ type: "network" });
    expect(plan.mounts.map((m) => m.destination)).toEqual(["/etc/hosts", "/etc/resolv.conf"]);
    const [hosts, resolv] = plan.mounts.map((m) => m.source) as [string, string];
    expect(readFileSync(resolv, "utf8")).toBe(
      "nameserver 8.8.8.8\nnameserver 8.8.4.4\nsearch example.test\n",
    );
    expect(readFileSync(hosts, "utf8")).not.toMatch(/web\.local/);
    const hostsInode = statSync(hosts).ino;

    const ns = netns("c-web");
    const net = await manager.setup("web", { netnsPath: ns });
    expect(net).toMatchObject({ phase: "ready", addresses: ["10.4.0.2"], interface: "eth0" });
    expect(net.netns).toBe(join(dir, "state", "netns", "web"));
    expect(statSync(net.netns as string).ino).toBe(statSync(ns).ino);
    // Rewritten in place: a bind mount of the file sees the change.
    expect(statSync(hosts).ino).toBe(hostsInode);
    expect(readFileSync(hosts, "utf8")).toContain("10.4.0.2\tweb.local\n");
    expect(await manager.inspect("web")).toEqual(net);

    const server = await serveTcp(ns, 80);
    stops.push(server.stop);
    expect(tcpFetch(hostNs, "127.0.0.1", 18080)).toBe("hello 10.4.0.1\n");

    await manager.teardown("web");
    await manager.teardown("web");
    expect(existsSync(join(dir, "state", "netns", "web"))).toBe(false);
    expect(readdirSync(join(dir, "state", "containers"))).toEqual([]);
    expect(published()).toEqual([]);
    expect(() => tcpFetch(hostNs, "127.0.0.1", 18080, 500)).toThrow();
    expect(isNotFound(await manager.inspect("web").catch((e: unknown) => e))).toBe(true);
    // The container's namespace keeps only lo: the veth went with the teardown.
    expect(linksIn(ns)).toEqual(["lo"]);
  });

  it("none, host, container: and ns: modes", async () => {
    const none = await manager.prepare("solo", { mode: { kind: NetworkModeKind.None } });
    expect(none.namespace).toEqual({ type: "network" });
    const soloNs = netns("c-solo");
    expect((await manager.setup("solo", { netnsPath: soloNs })).addresses).toEqual([]);
    expect(inNs(soloNs, (rt) => rt.listLinks().map((l) => [l.name, l.up]))).toEqual([["lo", true]]);

    const host = await manager.prepare("h", { mode: { kind: NetworkModeKind.Host } });
    expect(host.namespace).toBeUndefined();
    // In the host's own namespace its loopback resolvers work: resolv.conf is the host's.
    expect(readFileSync(host.mounts[1]?.source as string, "utf8")).toBe(
      "nameserver 127.0.0.53\nsearch example.test\n",
    );

    const joined = await manager.prepare("side", { mode: parseNetworkMode("container:solo") });
    expect(joined.namespace).toEqual({ type: "network", path: join(dir, "state", "netns", "solo") });
    expect(joined.mounts.map((m) => m.source)).toEqual(none.mounts.map((m) => m.source));

    const other = netns("elsewhere");
    const byPath = await manager.prepare("p", { mode: { kind: NetworkModeKind.Netns, path: other } });
    expect(byPath.namespace).toEqual({ type: "network", path: other });
    for (const id of ["h", "side", "p"]) {
      expect((await manager.setup(id, { pid: process.pid })).phase).toBe("ready");
    }
    // Only the modes with a namespace of their own pin one.
    expect(readdirSync(join(dir, "state", "netns"))).toEqual(["solo"]);
    for (const id of ["side", "p", "h", "solo"]) await manager.teardown(id);
    expect(readdirSync(join(dir, "state", "netns"))).toEqual([]);
    expect(readdirSync(join(dir, "state", "containers"))).toEqual([]);
  });

  it("rejects bad requests naming what is wrong, and records nothing", async () => {
    const reasons = async (p: Promise<unknown>) => p.then(() => undefined).catch((e: unknown) => e);
    const port = { protocol: "tcp" as const, hostPort: 18081, containerPort: 80 };
    const e1 = await reasons(manager.prepare("a", { mode: parseNetworkMode("nosuchnet") }));
    expect(isNotFound(e1)).toBe(true);
    expect(String(e1)).toMatch(/network nosuchnet not found/);
    const e2 = await reasons(manager.prepare("a", { mode: { kind: NetworkModeKind.Host }, ports: [port] }));
    expect(isInvalidArgument(e2)).toBe(true);
    expect(String(e2)).toMatch(/cannot publish 18081:80\/tcp with network mode host/);
    expect(
      isNotFound(await reasons(manager.prepare("a", { mode: parseNetworkMode("container:ghost") }))),
    ).toBe(true);
    expect(String(await reasons(manager.prepare("a", { mode: parseNetworkMode(`ns:${dir}/none`) })))).toMatch(
      /does not exist/,
    );
    expect(String(await reasons(manager.prepare("a", { mode: parseNetworkMode("cni:ghost") })))).toMatch(
      /CNI network ghost not found/,
    );
    expect(isInvalidArgument(await reasons(manager.prepare("../etc")))).toBe(true);
    expect(isNotFound(await reasons(manager.setup("never", { pid: process.pid })))).toBe(true);
    expect(
      existsSync(join(dir, "state", "containers")) ? readdirSync(join(dir, "state", "containers")) : [],
    ).toEqual([]);

    await manager.prepare("twice");
    expect(isAlreadyExists(await reasons(manager.prepare("twice")))).toBe(true);
    // A setup that fails (the namespace is gone) undoes itself and leaves the record for teardown.
    const e3 = await reasons(manager.setup("twice", { netnsPath: join(dir, "gone") }));
    expect(isNotFound(e3)).toBe(true);
    expect(existsSync(join(dir, "state", "netns", "twice"))).toBe(false);
    expect((await manager.inspect("twice")).phase).toBe("prepared");
    await manager.teardown("twice");
  });

  it("reports damaged records naming the file, and still tears them down", async () => {
    await manager.prepare("dmg");
    await manager.setup("dmg", { netnsPath: netns("c-dmg") });
    const file = join(dir, "state", "containers", "dmg", "network.json");
    writeFileSync(file, "{ truncated");
    const err = await manager.inspect("dmg").catch((e: unknown) => e);
    expect(String(err)).toMatch(/network record .*dmg\/network.json is not valid JSON/);
    writeFileSync(file, JSON.stringify({ containerId: "other", mode: { kind: "bridge" } }));
    expect(String(await manager.list().catch((e: unknown) => e))).toMatch(/is damaged/);
    // Sweep (container gone) undoes the bridge connection by id alone and removes the record.
    expect(await manager.sweep(() => false)).toEqual(["dmg"]);
    expect(hostLinks().filter((l) => l.startsWith("vb"))).toEqual([]);
    expect(published()).toEqual([]);
    expect(readdirSync(join(dir, "state", "containers"))).toEqual([]);
    expect(readdirSync(join(dir, "state", "netns"))).toEqual([]);

    // A damaged network record is named too, and nothing is created on top of it.
    writeFileSync(join(dir, "state", "networks", "berth.json"), "[]");
    const e2 = await manager.bridge.listNetworks().catch((e: unknown) => e);
    expect(String(e2)).toMatch(
      /network record .*berth.json is damaged: it names network undefined, not berth/,
    );
    expect(String(await manager.bridge.createNetwork({ name: "x" }).catch((e: unknown) => e))).toMatch(
      /is damaged/,
    );
    expect(
      String(await manager.prepare("h", { hostname: "evil\n10.0.0.1 bank" }).catch((e: unknown) => e)),
    ).toMatch(/hostname "evil\\n10.0.0.1 bank" is not valid/);
  });

  it("sweeps setups whose owner died or whose container is gone, and leaves live ones", async () => {
    // A child process prepares and sets up two containers, then dies without tearing down: one
    // set up fully, one only prepared (as if killed between create and setup).
    const ns1 = netns("c1");
    const script = `
      const { createNetworkManager } = await import(${JSON.stringify(new URL("./manager.ts", import.meta.url).pathname)});
      const m = createNetworkManager({ stateDir: process.argv[1], hostNetns: process.argv[2], natTable: "${TABLE}" });
      await m.prepare("crashed", { ports: [{ protocol: "tcp", hostPort: 18082, containerPort: 80 }] });
      await m.setup("crashed", { netnsPath: process.argv[3] });
      await m.prepare("halfway");
      process.kill(process.pid, "SIGKILL");`;
    const child = spawnSync(
      process.execPath,
      [
        "--import",
        createRequire(import.meta.url).resolve("@berth/content/testsuite/ts-register.mjs"),
        "--input-type=module",
        "-e",
        script,
        join(dir, "state"),
        hostNs,
        ns1,
      ],
      { encoding: "utf8" },
    );
    expect(child.signal, child.stderr).toBe("SIGKILL");
    expect((await manager.list()).map((r) => [r.containerId, r.phase])).toEqual([
      ["crashed", "ready"],
      ["halfway", "prepared"],
    ]);
    // Ours, alive and prepared: a sweep must not take it although its container does not exist yet.
    await manager.prepare("mine");
    const kept = await manager.prepare("running");
    expect(kept.namespace).toEqual({ type: "network" });
    await manager.setup("running", { netnsPath: netns("c2") });

    const swept = await manager.sweep((id) => id === "running");
    expect(swept.sort()).toEqual(["crashed", "halfway"]);
    expect((await manager.list()).map((r) => r.containerId)).toEqual(["mine", "running"]);
    expect(published()).toEqual([]);
    expect(readdirSync(join(dir, "state", "netns"))).toEqual(["running"]);
    expect(hostLinks().filter((l) => l.startsWith("vb"))).toHaveLength(1);
    for (const id of ["mine", "running"]) await manager.teardown(id);
  });

  it("CNI mode runs a conflist by name with published ports and undoes it on teardown", async () => {
    mkdirSync(join(dir, "cni"));
    writeFileSync(join(dir, "cni", "broken.conflist"), "{ not json");
    writeFileSync(
      join(dir, "cni", "10-test.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "testnet",
        plugins: [
          {
            type: "bridge",
            bridge: "cnitest0",
            isGateway: true,
            ipam: {
              type: "host-local",
              ranges: [[{ subnet: "10.231.9.0/24" }]],
              dataDir: join(dir, "cni-ipam"),
            },
          },
          { type: "portmap", capabilities: { portMappings: true } },
        ],
      }),
    );
    await manager.prepare("cx", {
      mode: parseNetworkMode("cni:testnet"),
      ports: [{ protocol: "tcp", hostPort: 18083, containerPort: 80 }],
    });
    const ns = netns("c-cni");
    const net = await manager.setup("cx", { netnsPath: ns });
    expect(net.addresses).toEqual(["10.231.9.2"]);
    expect(readFileSync(join(dir, "state", "containers", "cx", "hosts"), "utf8")).toContain(
      "10.231.9.2\tcx\n",
    );
    const server = await serveTcp(ns, 80);
    stops.push(server.stop);
    // portmap's DNAT answers on the host's bridge address from the host namespace.
    expect(tcpFetch(hostNs, "10.231.9.1", 18083)).toMatch(/^hello 10\.231\.9\.1\n$/);
    await manager.teardown("cx");
    expect(linksIn(ns)).toEqual(["lo"]);
    expect(readdirSync(join(dir, "state", "cni", "results"))).toEqual([]);
    expect(existsSync(join(dir, "state", "netns", "cx"))).toBe(false);
  });

  it("50 concurrent setups get 50 distinct addresses, and teardown leaves nothing", async () => {
    const ids = Array.from({ length: 50 }, (_, i) => `n${i}`);
    const spaces = ids.map((id) => netns(`c-${id}`));
    const nets = await Promise.all(
      ids.map(async (id, i) => {
        await manager.prepare(id, { ports: [{ protocol: "tcp", hostPort: 19000 + i, containerPort: 80 }] });
        return manager.setup(id, { netnsPath: spaces[i] as string });
      }),
    );
    const addresses = nets.map((n) => n.addresses[0]);
    expect(new Set(addresses).size).toBe(50);
    expect(published()).toHaveLength(50);
    await Promise.all(ids.map((id) => manager.teardown(id)));
    expect(hostLinks()).toEqual(["berth0", "lo"]);
    expect(published()).toEqual([]);
    expect(readdirSync(join(dir, "state", "netns"))).toEqual([]);
    expect(readdirSync(join(dir, "state", "containers"))).toEqual([]);
    const ipamLeft = readdirSync(join(dir, "state", "ipam", "berth")).filter((f) => /^\d/.test(f));
    expect(ipamLeft).toEqual([]);
    await manager.bridge.removeNetwork("berth");
    expect(hostLinks()).toEqual(["lo"]);
    const nat = createNat({ table: TABLE, netns: hostNs });
    nat.deleteTable();
    nat.close();
  });
});
