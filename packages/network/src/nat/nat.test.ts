import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlreadyExists, isInvalidArgument } from "@berth/errdefs";
import { nftablesAvailable } from "@berth/sys";
import { hostNetworkSnapshot, requiresCommand, requiresRoot } from "@berth/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createNetns, deleteNetns, withNetns } from "../netns/netns.js";
import { createNat, type Nat } from "./nat.js";

// Every case builds its own little world of network namespaces, each held open by a `sleep` in
// `unshare -n`: a "host" namespace with berth's bridges and nftables table, "container"
// namespaces hanging off the bridges by veth pairs, and an "internet" namespace behind the host.
// Killing the holders (and the servers inside) in afterEach destroys the namespaces with every
// link, address, route and nftables rule in them. The test process's own namespace — the real
// host's — is only read, before and after, to prove it did not change.

const runnable =
  requiresRoot("nat tests (network namespaces, nftables)") &&
  requiresCommand("ip", "nat tests") &&
  requiresCommand("nsenter", "nat tests") &&
  requiresCommand("unshare", "nat tests") &&
  requiresCommand("nft", "nat tests (host ruleset snapshot)") &&
  nftablesAvailable();

const TABLE = "berth_nattest";

/** A reply server: answers each TCP connection or UDP datagram with the peer's address. */
const SERVER = `
const [proto, port] = process.argv.slice(1);
if (proto === "tcp") {
  require("node:net").createServer((s) => s.end(s.remoteAddress + "\\n")).listen(+port, "0.0.0.0", () => console.log("ready"));
} else {
  const u = require("node:dgram").createSocket("udp4");
  u.on("message", (_m, r) => u.send(r.address + "\\n", r.port, r.address));
  u.bind(+port, () => console.log("ready"));
}`;

/** Prints the server's answer, or exits non-zero with the error (or "timeout"). */
const CLIENT = `
const [proto, host, port] = process.argv.slice(1);
setTimeout(() => { console.error("timeout"); process.exit(2); }, 1500);
if (proto === "tcp") {
  let out = "";
  require("node:net").connect(+port, host)
    .on("data", (d) => { out += d; })
    .on("end", () => { process.stdout.write(out); process.exit(0); })
    .on("error", (e) => { console.error(e.code); process.exit(1); });
} else {
  const u = require("node:dgram").createSocket("udp4");
  u.on("message", (m) => { process.stdout.write(m.toString()); process.exit(0); });
  u.send("x", +port, host);
}`;

interface Netns {
  readonly name: string;
  readonly pid: number;
  readonly path: string;
}

const processes: ChildProcess[] = [];

function track(child: ChildProcess): ChildProcess {
  processes.push(child);
  return child;
}

async function waitForLine(child: ChildProcess, what: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let err = "";
    child.stderr?.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.stdout?.once("data", () => resolve());
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code}: ${err}`)));
  });
}

/** A new network namespace held by `unshare -n sleep`; gone once the holder is killed. */
async function newNetns(name: string): Promise<Netns> {
  const child = track(
    spawn("unshare", ["-n", "--", "sh", "-c", "ip link set lo up && echo ready && exec sleep 600"], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  await waitForLine(child, `namespace holder ${name}`);
  const pid = child.pid as number;
  return { name, pid, path: `/proc/${pid}/ns/net` };
}

function sh(ns: Netns, script: string): string {
  return execFileSync("nsenter", [`--net=${ns.path}`, "sh", "-ec", script], { encoding: "utf8" });
}

async function serve(ns: Netns, proto: "tcp" | "udp", port: number): Promise<void> {
  const child = track(
    spawn("nsenter", [`--net=${ns.path}`, process.execPath, "-e", SERVER, proto, String(port)], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  await waitForLine(child, `${proto} server on ${ns.name}:${port}`);
}

/** Connects from inside `ns`; resolves to the peer address the server saw, or "failed: <why>". */
async function ask(ns: Netns, proto: "tcp" | "udp", host: string, port: number): Promise<string> {
  const child = track(
    spawn("nsenter", [`--net=${ns.path}`, process.execPath, "-e", CLIENT, proto, host, String(port)], {
      stdio: ["ignore", "pipe", "pipe"],
    }),
  );
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  return code === 0 ? out.trim() : `failed: ${err.trim()}`;
}

interface World {
  readonly host: Netns;
  readonly internet: Netns;
  readonly c1: Netns;
  readonly c2: Netns;
  readonly c3: Netns;
}

/**
 * host: bridge bznatA 10.231.0.1/24 (c1 .2, c2 .3), bridge bznatB 10.233.0.1/24 (c3 .2), uplink
 * 10.232.0.1/24 to internet (.2), which has no route back to the bridges' subnets.
 */
async function buildWorld(): Promise<World> {
  const [host, internet, c1, c2, c3] = await Promise.all(
    ["host", "internet", "c1", "c2", "c3"].map((n) => newNetns(n)),
  );
  const w = { host, internet, c1, c2, c3 } as World;
  // Hairpin mode on each port, as the bridge driver must set it: a container reaching its own
  // published port gets its packet back through the port it came in on, which a bridge
  // otherwise never does.
  const attach = (c: Netns, bridge: string, hostSide: string, ip: string, gw: string) => {
    sh(
      host,
      `ip link add ${hostSide} type veth peer name eth0 netns ${c.pid}
      ip link set ${hostSide} master ${bridge} up
      ip link set ${hostSide} type bridge_slave hairpin on`,
    );
    sh(c, `ip addr add ${ip} dev eth0 && ip link set eth0 up && ip route add default via ${gw}`);
  };
  sh(
    host,
    `for b in bznatA:10.231.0.1 bznatB:10.233.0.1; do
      ip link add \${b%%:*} type bridge && ip addr add \${b#*:}/24 dev \${b%%:*} && ip link set \${b%%:*} up
    done
    ip link add up0 type veth peer name eth0 netns ${internet.pid}
    ip addr add 10.232.0.1/24 dev up0 && ip link set up0 up
    echo 1 > /proc/sys/net/ipv4/ip_forward`,
  );
  sh(internet, "ip addr add 10.232.0.2/24 dev eth0 && ip link set eth0 up");
  attach(c1, "bznatA", "vc1", "10.231.0.2/24", "10.231.0.1");
  attach(c2, "bznatA", "vc2", "10.231.0.3/24", "10.231.0.1");
  attach(c3, "bznatB", "vc3", "10.233.0.2/24", "10.233.0.1");
  await Promise.all([
    serve(c1, "tcp", 8080),
    serve(c1, "udp", 8081),
    serve(c3, "tcp", 8080),
    serve(internet, "tcp", 80),
  ]);
  return w;
}

describe.runIf(runnable)("createNat", () => {
  let before: Record<string, unknown>;
  let world: World;
  let nat: Nat;

  beforeAll(() => {
    before = hostNetworkSnapshot();
  });

  afterAll(() => {
    expect(hostNetworkSnapshot()).toEqual(before);
  });

  beforeEach(async () => {
    world = await buildWorld();
    nat = createNat({ table: TABLE, netns: world.host.path });
    nat.addNetwork({ name: "neta", bridge: "bznatA", subnets: ["10.231.0.0/24"] });
    nat.addNetwork({ name: "netb", bridge: "bznatB", subnets: ["10.233.0.0/24"] });
  });

  afterEach(async () => {
    // First: the Nat's open nftables context holds the host namespace alive.
    nat.close();
    for (const child of processes.splice(0).reverse()) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    }
  });

  it("publishes a port to the host's 127.0.0.1, the host's own addresses and other hosts", async () => {
    nat.addContainer({
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [
        { protocol: "tcp", hostPort: 18080, containerPort: 8080 },
        { protocol: "udp", hostPort: 18081, containerPort: 8081 },
      ],
    });
    const { host, internet } = world;
    // From 127.0.0.1 the source is rewritten to the bridge address (a container cannot answer 127/8).
    expect(await ask(host, "tcp", "127.0.0.1", 18080)).toBe("10.231.0.1");
    expect(await ask(host, "tcp", "10.231.0.1", 18080)).toBe("10.231.0.1");
    expect(await ask(host, "tcp", "10.232.0.1", 18080)).toBe("10.232.0.1");
    // From another machine the client's own address arrives.
    expect(await ask(internet, "tcp", "10.232.0.1", 18080)).toBe("10.232.0.2");
    expect(await ask(internet, "udp", "10.232.0.1", 18081)).toBe("10.232.0.2");
    expect(sh(host, "cat /proc/sys/net/ipv4/conf/bznatA/route_localnet").trim()).toBe("1");
    expect(nat.listPublished()).toEqual([
      {
        containerId: "c1",
        protocol: "tcp",
        hostPort: 18080,
        family: 4,
        containerIP: "10.231.0.2",
        containerPort: 8080,
      },
      {
        containerId: "c1",
        protocol: "udp",
        hostPort: 18081,
        family: 4,
        containerIP: "10.231.0.2",
        containerPort: 8081,
      },
    ]);
  });

  it("forwards only the given host IP when one is set", async () => {
    nat.addContainer({
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080, hostIP: "10.232.0.1" }],
    });
    expect(await ask(world.internet, "tcp", "10.232.0.1", 18080)).toBe("10.232.0.2");
    expect(await ask(world.host, "tcp", "127.0.0.1", 18080)).toBe("failed: ECONNREFUSED");
  });

  it("masquerades traffic leaving the subnet and hairpins published ports on the same bridge", async () => {
    nat.addContainer({
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
    });
    const { c1, c2 } = world;
    // The internet has no route to 10.231.0.0/24: only the host's address can come back.
    expect(await ask(c1, "tcp", "10.232.0.2", 80)).toBe("10.232.0.1");
    // Hairpin, from a neighbour and from the container itself: the server sees the bridge address.
    expect(await ask(c2, "tcp", "10.231.0.1", 18080)).toBe("10.231.0.1");
    expect(await ask(c2, "tcp", "10.232.0.1", 18080)).toBe("10.231.0.1");
    expect(await ask(c1, "tcp", "10.231.0.1", 18080)).toBe("10.231.0.1");
    // Direct traffic on one bridge is not rewritten.
    expect(await ask(c2, "tcp", "10.231.0.2", 8080)).toBe("10.231.0.3");
    // The CVE-2020-8558 guard: route_localnet must not open the host's 127.0.0.1 to the bridge.
    expect(await ask(c2, "tcp", "127.0.0.1", 18080)).toMatch(/^failed/);
  });

  it("isolates different berth networks from each other", async () => {
    const { c1, c3 } = world;
    // Dropped, not refused: both wait out the client's timeout (in parallel, to keep this fast).
    expect(
      await Promise.all([ask(c3, "tcp", "10.231.0.2", 8080), ask(c1, "tcp", "10.233.0.2", 8080)]),
    ).toEqual(["failed: timeout", "failed: timeout"]);
    // Both still reach the outside, so the drop is the isolation and not a broken route.
    expect(await ask(c3, "tcp", "10.232.0.2", 80)).toBe("10.232.0.1");
    // A published port stays reachable from everywhere, other networks included.
    nat.addContainer({
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
    });
    expect(await ask(c3, "tcp", "10.233.0.1", 18080)).toBe("10.231.0.1");
  });

  it("sets up and tears down idempotently and exactly", async () => {
    const c1 = {
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
    } as const;
    const other = {
      id: "c3",
      addresses: ["10.233.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18090, containerPort: 8080 }],
    } as const;
    nat.addContainer(c1);
    nat.addContainer(other);
    const once = listTable(world.host);
    nat.addContainer(c1);
    nat.addNetwork({ name: "neta", bridge: "bznatA", subnets: ["10.231.0.0/24"] });
    nat.setup();
    // Re-adding replaces the same rules: same count, same rules (handles differ).
    expect(withoutHandles(listTable(world.host))).toEqual(withoutHandles(once));

    // Another container cannot take the port; a different host IP of the same port can't either.
    expect(() =>
      nat.addContainer({
        id: "c2",
        addresses: ["10.231.0.3"],
        ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 1 }],
      }),
    ).toThrowError(expect.objectContaining({ code: "already-exists" }));
    try {
      nat.addContainer({
        id: "c2",
        addresses: ["10.231.0.3"],
        ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 1, hostIP: "127.0.0.1" }],
      });
      expect.unreachable();
    } catch (err) {
      expect(isAlreadyExists(err)).toBe(true);
    }

    // Republishing with fewer ports removes the dropped one.
    nat.addContainer({ ...c1, ports: [{ protocol: "tcp", hostPort: 18082, containerPort: 8080 }] });
    expect(nat.listPublished().map((p) => [p.containerId, p.hostPort])).toEqual([
      ["c3", 18090],
      ["c1", 18082],
    ]);
    expect(await ask(world.host, "tcp", "127.0.0.1", 18082)).toBe("10.231.0.1");

    nat.removeContainer("c1");
    nat.removeContainer("c1");
    expect(nat.listPublished().map((p) => p.containerId)).toEqual(["c3"]);
    expect(await ask(world.host, "tcp", "127.0.0.1", 18082)).toBe("failed: ECONNREFUSED");
    expect(await ask(world.host, "tcp", "127.0.0.1", 18090)).toBe("10.233.0.1");

    nat.removeNetwork("neta");
    nat.removeNetwork("neta");
    expect(nat.listNetworks()).toEqual([{ name: "netb", bridge: "bznatB" }]);
    expect(listTable(world.host).filter((r) => String(r.comment).startsWith("berth net neta"))).toEqual([]);
    expect(sh(world.host, "cat /proc/sys/net/ipv4/conf/bznatA/route_localnet").trim()).toBe("0");
    expect(sh(world.host, "nft list set inet berth_nattest bridges")).not.toContain("bznatA");

    nat.deleteTable();
    nat.deleteTable();
    expect(sh(world.host, "nft -j list tables")).not.toContain(TABLE);
    expect(sh(world.host, "cat /proc/sys/net/ipv4/conf/bznatB/route_localnet").trim()).toBe("0");
    expect(nat.listPublished()).toEqual([]);
    nat.removeContainer("c3");
  });

  it("writes nothing when an unchanged network or container is added again, and replaces a changed one", () => {
    const c1 = {
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
    } as const;
    nat.addContainer(c1);
    const once = listTable(world.host);
    nat.setup();
    nat.addNetwork({ name: "neta", bridge: "bznatA", subnets: ["10.231.0.0/24"] });
    nat.addContainer(c1);
    // Handles included: no rule was deleted and written again.
    expect(listTable(world.host)).toEqual(once);
    expect(sh(world.host, "cat /proc/sys/net/ipv4/conf/bznatA/route_localnet").trim()).toBe("1");

    // A changed container replaces its rules.
    nat.addContainer({ ...c1, ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8081 }] });
    expect(nat.listPublished().map((p) => [p.containerId, p.hostPort, p.containerPort])).toEqual([
      ["c1", 18080, 8081],
    ]);

    // A changed network replaces its rules: without the host loopback path, no guard rule and
    // route_localnet back off.
    nat.addNetwork({ name: "neta", bridge: "bznatA", subnets: ["10.231.0.0/24"], hostLoopback: false });
    const neta = listTable(world.host).filter((r) => String(r.comment).startsWith("berth net neta "));
    expect(neta.map((r) => r.chain).sort()).toEqual(["forward", "postrouting", "postrouting"]);
    expect(new Set(neta.map((r) => r.comment)).size).toBe(1);
    expect(sh(world.host, "cat /proc/sys/net/ipv4/conf/bznatA/route_localnet").trim()).toBe("0");
    expect(nat.listNetworks()).toEqual([
      { name: "netb", bridge: "bznatB" },
      { name: "neta", bridge: "bznatA" },
    ]);
  });

  it("owns rules whose comments predate the digest: lists, replaces and removes them", () => {
    // What an earlier berth wrote: the owner without a digest.
    sh(
      world.host,
      `nft add rule inet ${TABLE} published meta nfproto ipv4 tcp dport 18080 dnat ip to 10.231.0.2:8080 comment \\"berth ctr c1\\"
      nft add rule inet ${TABLE} published meta nfproto ipv4 tcp dport 18090 dnat ip to 10.233.0.2:8080 comment \\"berth ctr c3\\"
      nft add rule inet ${TABLE} postrouting ip saddr 10.231.0.0/24 oifname != bznatA masquerade comment \\"berth net neta bznatA\\"`,
    );
    expect(nat.listPublished().map((p) => [p.containerId, p.hostPort])).toEqual([
      ["c1", 18080],
      ["c3", 18090],
    ]);
    expect(() =>
      nat.addContainer({
        id: "c2",
        addresses: ["10.231.0.3"],
        ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 1 }],
      }),
    ).toThrowError(expect.objectContaining({ code: "already-exists" }));
    nat.addContainer({
      id: "c1",
      addresses: ["10.231.0.2"],
      ports: [{ protocol: "tcp", hostPort: 18081, containerPort: 8080 }],
    });
    expect(nat.listPublished().map((p) => [p.containerId, p.hostPort])).toEqual([
      ["c3", 18090],
      ["c1", 18081],
    ]);
    nat.removeContainer("c3");
    expect(nat.listPublished().map((p) => p.containerId)).toEqual(["c1"]);
    // Adding the network again replaces the old rule too: none without a digest is left.
    nat.addNetwork({ name: "neta", bridge: "bznatA", subnets: ["10.231.0.0/24"] });
    const comments = listTable(world.host).map((r) => r.comment);
    expect(comments).not.toContain("berth net neta bznatA");
    // guard, loopback masquerade, masquerade, hairpin, forward isolation.
    expect(comments.filter((c) => String(c).startsWith("berth net neta ")).length).toBe(5);
  });

  it("refuses malformed input before touching the table", () => {
    const bad = [
      () => createNat({ table: "no spaces" }),
      () => nat.addNetwork({ name: "x", bridge: 'b"r', subnets: ["10.0.0.0/8"] }),
      () => nat.addNetwork({ name: "x", bridge: "br", subnets: ["10.0.0.0/33"] }),
      () => nat.addNetwork({ name: "x", bridge: "br", subnets: [] }),
      () => nat.addContainer({ id: "a b", addresses: ["10.0.0.2"], ports: [] }),
      () =>
        nat.addContainer({
          id: "a",
          addresses: ["10.0.0.2"],
          ports: [{ protocol: "tcp", hostPort: 0, containerPort: 1 }],
        }),
      () =>
        nat.addContainer({
          id: "a",
          addresses: ["10.0.0.2"],
          ports: [{ protocol: "tcp", hostPort: 1, containerPort: 1, hostIP: "::1" }],
        }),
      () =>
        nat.addContainer({
          id: "a",
          addresses: ["10.0.0.2"],
          ports: [
            { protocol: "tcp", hostPort: 1, containerPort: 1 },
            { protocol: "tcp", hostPort: 1, containerPort: 2 },
          ],
        }),
    ];
    for (const fn of bad) {
      try {
        fn();
        expect.unreachable();
      } catch (err) {
        expect(isInvalidArgument(err), String(err)).toBe(true);
      }
    }
  });
});

describe.runIf(runnable)("createNat with a netns option", () => {
  const nats: Nat[] = [];
  const track = (n: Nat): Nat => {
    nats.push(n);
    return n;
  };

  afterEach(async () => {
    for (const n of nats.splice(0)) n.close();
    for (const child of processes.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    }
  });

  it("programs that namespace and leaves the calling thread where it was, even on error", async () => {
    const ns = await newNetns("scratch");
    const mine = readlinkNet();
    const scratch = track(createNat({ table: "scratch", netns: ns.path }));
    scratch.setup();
    expect(readlinkNet()).toBe(mine);
    expect(sh(ns, "nft list tables")).toContain("table inet scratch");
    // No bridge of that name in the namespace: refused before any rule is written.
    expect(() =>
      scratch.addNetwork({ name: "n", bridge: "bznatMissing", subnets: ["10.9.0.0/24"] }),
    ).toThrowError(expect.objectContaining({ code: "not-found" }));
    expect(readlinkNet()).toBe(mine);
    expect(scratch.listNetworks()).toEqual([]);
    scratch.deleteTable();
    expect(sh(ns, "nft list tables")).not.toContain("scratch");
  });
});

describe.runIf(runnable)("createNat's nftables contexts", () => {
  const nats: Nat[] = [];
  let dir: string | undefined;
  const track = (n: Nat): Nat => {
    nats.push(n);
    return n;
  };

  afterEach(async () => {
    for (const n of nats.splice(0)) n.close();
    if (dir !== undefined) {
      for (const name of readdirSync(dir)) deleteNetns(join(dir, name));
      rmSync(dir, { recursive: true, force: true });
      dir = undefined;
    }
    for (const child of processes.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    }
  });

  it("keeps one context per namespace open until close, and sees what other processes change", async () => {
    const [one, two] = await Promise.all([newNetns("one"), newNetns("two")]);
    const base = openSockets();
    const a = track(createNat({ table: "scratch", netns: one.path }));
    a.setup();
    a.listPublished();
    a.removeContainer("nobody");
    expect(openSockets()).toBe(base + 1);

    // Another process publishes a port and deletes the chain's rules between calls: the open
    // context lists what is there now, not what it saw before.
    sh(
      one,
      `nft add rule inet scratch published meta nfproto ipv4 tcp dport 18080 dnat ip to 10.9.0.2:80 comment '"berth ctr x 000000000000"'`,
    );
    expect(a.listPublished().map((p) => [p.containerId, p.hostPort])).toEqual([["x", 18080]]);
    a.addContainer({
      id: "y",
      addresses: ["10.9.0.3"],
      ports: [{ protocol: "tcp", hostPort: 18081, containerPort: 80 }],
    });
    sh(one, "nft flush chain inet scratch published");
    expect(a.listPublished()).toEqual([]);
    a.addContainer({
      id: "y",
      addresses: ["10.9.0.3"],
      ports: [{ protocol: "tcp", hostPort: 18081, containerPort: 80 }],
    });
    a.removeContainer("y");
    expect(sh(one, "nft list chain inet scratch published")).not.toContain("dnat");

    // Without the option: a context for each namespace the calling thread runs it in.
    const b = track(createNat({ table: "scratch" }));
    withNetns(two.path, () => b.setup());
    withNetns(one.path, () => b.listPublished());
    withNetns(two.path, () => b.listPublished());
    expect(openSockets()).toBe(base + 3);
    expect(sh(two, "nft list tables")).toContain("table inet scratch");

    a.close();
    a.close();
    b.close();
    expect(openSockets()).toBe(base);
    // Usable again after close: it opens a new context.
    expect(a.listPublished()).toEqual([]);
    expect(openSockets()).toBe(base + 1);
  });

  it("follows the namespace a path names now, not the one it named when the context opened", () => {
    dir = mkdtempSync(join(tmpdir(), "berth-nat-"));
    const path = join(dir, "ns");
    createNetns(path);
    const nat = track(createNat({ table: "scratch", netns: path }));
    nat.setup();
    // The path now names another, empty namespace: the Nat must not keep programming the old one
    // (which its open context still holds alive).
    deleteNetns(path);
    createNetns(path);
    expect(nft(path, "list tables")).not.toContain("scratch");
    nat.setup();
    expect(nft(path, "list tables")).toContain("table inet scratch");
  });
});

/** Open socket descriptors of this process (each open nftables context holds one). */
function openSockets(): number {
  let count = 0;
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`).startsWith("socket:")) count++;
    } catch {
      // The directory's own descriptor, closed by the time it is read.
    }
  }
  return count;
}

function nft(netnsPath: string, args: string): string {
  return execFileSync("nsenter", [`--net=${netnsPath}`, "sh", "-c", `nft ${args}`], { encoding: "utf8" });
}

function readlinkNet(): string {
  return execFileSync("readlink", [`/proc/${process.pid}/task/${process.pid}/ns/net`], { encoding: "utf8" });
}

function listTable(ns: Netns): Array<Record<string, unknown>> {
  const doc = JSON.parse(sh(ns, `nft -j -a list table inet ${TABLE}`)) as {
    nftables: Array<Record<string, unknown>>;
  };
  return doc.nftables.flatMap((o) => (o.rule ? [o.rule as Record<string, unknown>] : []));
}

function withoutHandles(rules: Array<Record<string, unknown>>): unknown[] {
  return rules
    .map(({ handle: _h, ...rest }) => rest)
    .sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}
