import {
  closeSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Client, createClient } from "@berth/client";
import { createNat, createNetns, createNetworkManager, deleteNetns, Rtnetlink } from "@berth/network";
import { nftablesAvailable, readMountInfo, unmount } from "@berth/sys";
import {
  hostNetworkSnapshot,
  requiresCommand,
  requiresNetworkSandbox,
  requiresRoot,
  serveTcp,
  sharedRegistry,
  type TcpServer,
  tcpFetch,
} from "@berth/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { berth } from "./berth.js";

// Containers from a real image, run by the embedded client, networked by berth's bridge driver.
// "The host" is a namespace made here: its bridges, veths and nftables table vanish with it. A
// second namespace plays "the internet", joined to the host by a veth (192.0.2.1 host side,
// 192.0.2.2 internet side) and with no route back to container subnets, so that only
// masquerading lets containers reach it. The real host is only read, before and after.

const TABLE = "berth_e2enet";
const HOST_IP = "192.0.2.1";
const INTERNET_IP = "192.0.2.2";

interface Running {
  /** Resolves with the exit code and what the container wrote to stdout and stderr. */
  readonly done: Promise<{ code: number; output: string }>;
  readonly abort: () => void;
}

describe.runIf(
  requiresNetworkSandbox("container networking (namespaces, nftables, containers)") && nftablesAvailable(),
)("container networking (embedded client, bridge driver)", () => {
  // Made in beforeAll, not at collection: a filtered run that skips the suite leaves nothing.
  let dir = "";
  let hostNs = "";
  let internetNs = "";
  let before: Record<string, unknown>;
  let client: Client;
  let image = "";
  let internet: TcpServer | undefined;
  const running: Running[] = [];
  let serial = 0;

  beforeAll(async () => {
    before = hostNetworkSnapshot();
    dir = mkdtempSync(join(tmpdir(), "berth-e2e-net-"));
    hostNs = join(dir, "ns", "host");
    internetNs = join(dir, "ns", "internet");
    createNetns(hostNs);
    createNetns(internetNs);
    const host = Rtnetlink.open({ netns: hostNs });
    try {
      host.setLinkUp("lo");
      host.createVeth("up0", "eth0", { peerNetns: internetNs, up: true });
      host.addAddress("up0", `${HOST_IP}/24`);
    } finally {
      host.close();
    }
    const world = Rtnetlink.open({ netns: internetNs });
    try {
      world.setLinkUp("lo");
      world.setLinkUp("eth0");
      world.addAddress("eth0", `${INTERNET_IP}/24`);
    } finally {
      world.close();
    }
    internet = await serveTcp(internetNs, 8080);
    client = await createClient({
      root: join(dir, "root"),
      state: join(dir, "state"),
      network: { hostNetns: hostNs, natTable: TABLE, cniConfDirs: [join(dir, "cni")] },
    });
    const { refs } = sharedRegistry();
    image = (await client.pull(refs.single)).name;
  });

  afterAll(async () => {
    const left = running.splice(0);
    for (const r of left) r.abort();
    await Promise.allSettled(left.map((r) => r.done));
    await internet?.stop();
    await client?.close();
    if (dir === "") return;
    deleteNetns(internetNs);
    deleteNetns(hostNs);
    // Whatever a failed test left mounted (namespace pins, rootfs) is detached before the
    // directory goes, and still fails the suite.
    const mounts = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    for (const m of mounts.reverse()) unmount(m.mountPoint, { detach: true, ignoreMissing: true });
    rmSync(dir, { recursive: true, force: true });
    expect(mounts).toEqual([]);
    expect(hostNetworkSnapshot()).toEqual(before);
  });

  /** Published ports in the test's table, through a Nat closed right after. */
  const published = () => {
    const nat = createNat({ table: TABLE, netns: hostNs });
    try {
      return nat.listPublished();
    } finally {
      nat.close();
    }
  };

  /** Starts container `id` running `script` under sh; its output goes to a file. */
  function start(id: string, script: string, options: { network?: string; ports?: string[] } = {}): Running {
    const log = join(dir, `${id}-${serial++}.log`);
    const fd = openSync(log, "w");
    const devNull = openSync("/dev/null", "r");
    const controller = new AbortController();
    const done = client
      .run(image, id, {
        rm: true,
        args: ["sh", "-c", script],
        stdio: [devNull, fd, fd],
        signal: controller.signal,
        ...(options.network === undefined ? {} : { network: options.network }),
        ...(options.ports === undefined ? {} : { ports: options.ports }),
      })
      .then((code) => ({ code, output: readFileSync(log, "utf8") }))
      .finally(() => {
        closeSync(fd);
        closeSync(devNull);
      });
    const r = { done, abort: () => controller.abort() };
    running.push(r);
    return r;
  }

  /** Runs a container to its end. */
  const run = (id: string, script: string, options: { network?: string; ports?: string[] } = {}) =>
    start(id, script, options).done;

  /** A server container answering each TCP connection on port 80 with its hostname. */
  async function server(id: string, options: { network?: string; ports?: string[] } = {}) {
    const r = start(id, "exec nc -ll -p 80 -e hostname", { network: "bridge", ...options });
    // Its network is set up before it starts; nc listens a moment later (clients retry).
    for (let i = 0; i < 200; i++) {
      const net = await client.inspectContainerNetwork(id).catch(() => undefined);
      if (net?.phase === "ready") return { ...r, ip: net.addresses[0] as string };
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    throw new Error(`container ${id} did not get a network`);
  }

  const stop = async (r: Running) => {
    r.abort();
    await r.done;
  };

  /** Shell: connect to $1:$2 until it answers (at most ~3 s), printing the reply. */
  const connect = (ip: string, port: number) =>
    `for i in $(seq 30); do nc -w 1 ${ip} ${port} </dev/null && exit 0; sleep 0.1; done; echo unreachable; exit 1`;

  /** tcpFetch from a namespace, retrying while the server in a container starts. */
  async function fetchRetry(ns: string, ip: string, port: number): Promise<string> {
    let last: unknown;
    for (let i = 0; i < 30; i++) {
      try {
        return tcpFetch(ns, ip, port, 1000);
      } catch (err) {
        last = err;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw last;
  }

  it("two containers on one network reach each other; /etc/hosts names the container's address", async () => {
    const web = await server("web");
    const { code, output } = await run("client", `grep client /etc/hosts; ${connect(web.ip, 80)}`, {
      network: "bridge",
    });
    expect(output).toMatch(/^10\.4\.0\.\d+\tclient\nweb\n$/);
    expect(code).toBe(0);
    await stop(web);
  });

  it("a container reaches 'the internet' through masquerade: the server sees the host's address", async () => {
    const { code, output } = await run("surfer", connect(INTERNET_IP, 8080), { network: "bridge" });
    expect(output).toBe(`hello ${HOST_IP}\n`);
    expect(code).toBe(0);
  });

  it("a published port reaches the container from the host via 127.0.0.1 and the host's address, and from outside", async () => {
    const web = await server("pub", { ports: ["8080:80"] });
    expect(await fetchRetry(hostNs, "127.0.0.1", 8080)).toBe("pub\n");
    expect(tcpFetch(hostNs, HOST_IP, 8080)).toBe("pub\n");
    expect(tcpFetch(internetNs, HOST_IP, 8080)).toBe("pub\n");
    expect(published()).toMatchObject([
      { containerId: "pub", hostPort: 8080, containerIP: web.ip, containerPort: 80 },
    ]);
    await stop(web);
    // Torn down with the container.
    expect(published()).toEqual([]);
    expect(() => tcpFetch(hostNs, "127.0.0.1", 8080, 500)).toThrow();
  });

  it("containers on two different berth networks cannot reach each other", async () => {
    const bridges = createNetworkManager({
      stateDir: join(dir, "root", "network"),
      hostNetns: hostNs,
      natTable: TABLE,
    }).bridge;
    await bridges.createNetwork({ name: "red" });
    await bridges.createNetwork({ name: "blue" });
    const red = await server("red-web", { network: "red" });
    const friend = await run("red-client", connect(red.ip, 80), { network: "red" });
    expect(friend.output).toBe("red-web\n");
    const stranger = await run("blue-client", connect(red.ip, 80).replace("seq 30", "seq 5"), {
      network: "blue",
    });
    expect(stranger.output).toMatch(/(nc: timed out\n)+unreachable\n$/);
    expect(stranger.code).toBe(1);
    await stop(red);
    await bridges.removeNetwork("red");
    await bridges.removeNetwork("blue");
    bridges.close?.();
  });

  it("CNI mode: the standard plugins network a container, which reaches the internet through their masquerade", async () => {
    mkdirSync(join(dir, "cni"), { recursive: true });
    writeFileSync(
      join(dir, "cni", "50-e2e.conflist"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "e2ecni",
        plugins: [
          {
            type: "bridge",
            bridge: "cnie2e0",
            isGateway: true,
            ipMasq: true,
            ipam: {
              type: "host-local",
              ranges: [[{ subnet: "10.231.50.0/24" }]],
              routes: [{ dst: "0.0.0.0/0" }],
              dataDir: join(dir, "cni-ipam"),
            },
          },
          { type: "portmap", capabilities: { portMappings: true } },
        ],
      }),
    );
    const { code, output } = await run(
      "cni-client",
      `ip -4 -o addr show eth0 | grep -o '10\\.231\\.50\\.[0-9]*/24'; grep cni-client /etc/hosts; ${connect(INTERNET_IP, 8080)}`,
      { network: "cni:e2ecni" },
    );
    expect(output).toMatch(
      new RegExp(
        `^10\\.231\\.50\\.(\\d+)/24\n10\\.231\\.50\\.\\1\tcni-client\nhello ${HOST_IP.replaceAll(".", "\\.")}\n$`,
      ),
    );
    expect(code).toBe(0);
    // DEL ran: no cached result, no allocation, no container veth on the plugin's bridge.
    expect(readdirSafe(join(dir, "root", "network", "cni", "results"))).toEqual([]);
    expect(readdirSafe(join(dir, "cni-ipam", "e2ecni")).filter((f) => /^\d/.test(f))).toEqual([]);
  });

  it("a dual-stack network: the container gets both addresses, both default routes and both in /etc/hosts", async () => {
    const bridges = createNetworkManager({
      stateDir: join(dir, "root", "network"),
      hostNetns: hostNs,
      natTable: TABLE,
    }).bridge;
    await bridges.createNetwork({ name: "dual", subnet: "10.231.60.0/24", subnet6: "fd00:b0:60::/64" });
    try {
      const { code, output } = await run(
        "dual-client",
        "ip -o addr show eth0 | grep -o 'inet6\\? [0-9a-f.:]*/[0-9]*' | grep -v fe80; ip -6 route show default | cut -d' ' -f1-3; grep dual-client /etc/hosts",
        { network: "dual" },
      );
      expect(code).toBe(0);
      expect(output).toMatch(
        /^inet 10\.231\.60\.(\d+)\/24\ninet6 (fd00:b0:60::[0-9a-f]+)\/64\ndefault via fd00:b0:60::1\n10\.231\.60\.\1\tdual-client\n\2\tdual-client\n$/,
      );
    } finally {
      await bridges.removeNetwork("dual");
      bridges.close?.();
    }
  });

  it("modes: none (only lo), host, container:<id>, ns:<path>", async () => {
    const none = await run("solo", "ls /sys/class/net");
    expect(none.output).toBe("lo\n");

    const host = await run("hosted", "readlink /proc/self/ns/net", { network: "host" });
    expect(host.output).toBe(`${readlinkSync("/proc/self/ns/net")}\n`);

    const web = await server("side-web");
    const side = await run("side", connect("127.0.0.1", 80), { network: "container:side-web" });
    expect(side.output).toBe("side-web\n");
    await stop(web);

    const own = join(dir, "ns", "own");
    createNetns(own);
    try {
      const joined = await run("joined", "readlink /proc/self/ns/net", { network: `ns:${own}` });
      expect(joined.output).toBe(`net:[${statSync(own).ino}]\n`);
    } finally {
      deleteNetns(own);
    }
  });

  it("leaves nothing behind in the host namespace once the containers are gone", async () => {
    const links = Rtnetlink.open({ netns: hostNs });
    try {
      // The default network's bridge stays (like docker0), and so does the CNI bridge plugin's;
      // no container veth does.
      expect(
        links
          .listLinks()
          .map((l) => l.name)
          .sort(),
      ).toEqual(["berth0", "cnie2e0", "lo", "up0"]);
    } finally {
      links.close();
    }
    expect(published()).toEqual([]);
    const state = join(dir, "root", "network");
    expect(readdirSafe(join(state, "containers"))).toEqual([]);
    expect(readdirSafe(join(state, "netns"))).toEqual([]);
    expect(readdirSafe(join(state, "ipam", "berth")).filter((f) => /^\d/.test(f))).toEqual([]);
  });
});

function readdirSafe(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

describe.runIf(
  requiresRoot("berth network CLI") &&
    requiresCommand("ip", "host snapshot") &&
    requiresCommand("nft", "host snapshot"),
)("berth network create|ls|inspect|rm (CLI)", () => {
  let root = "";
  let before: Record<string, unknown>;

  beforeAll(() => {
    before = hostNetworkSnapshot();
    root = mkdtempSync(join(tmpdir(), "berth-e2e-netcli-"));
  });

  afterAll(() => {
    rmSync(root, { recursive: true, force: true });
    // Records only: a bridge appears when a container first connects, so the host is untouched.
    expect(hostNetworkSnapshot()).toEqual(before);
  });

  it("creates, lists, inspects and removes networks, and names what is wrong", async () => {
    const created = await berth(root, "network", "create", "front", "--subnet", "10.231.40.0/24");
    expect(created).toMatchObject({ code: 0, stdout: "front\n" });
    const dual = await berth(root, "network", "create", "dual", "--subnet6", "fd00:b0:1::/64");
    expect(dual.code).toBe(0);
    const ls = await berth(root, "network", "ls");
    expect(ls.stdout.split("\n")[0]).toMatch(/^NAME\s+BRIDGE\s+SUBNET\s+GATEWAY\s+SUBNET6$/);
    expect(ls.stdout).toMatch(/\nfront\s+br-[0-9a-f]{12}\s+10\.231\.40\.0\/24\s+10\.231\.40\.1\s*\n/);
    expect(ls.stdout).toMatch(/\ndual\s+br-[0-9a-f]{12}\s+10\.4\.1\.0\/24\s+10\.4\.1\.1\s+fd00:b0:1::\/64\n/);
    const inspect = await berth(root, "network", "inspect", "dual");
    expect(JSON.parse(inspect.stdout)).toMatchObject([
      {
        name: "dual",
        subnet: "10.4.1.0/24",
        subnet6: "fd00:b0:1::/64",
        gateway6: "fd00:b0:1::1",
        containers: [],
      },
    ]);

    // The same network as a CNI conflist (the export the CNI plugin tests run with the real plugins).
    const conflist = await berth(root, "network", "conflist", "dual", "--ipam-dir", join(root, "cni"));
    expect(JSON.parse(conflist.stdout)).toMatchObject({
      cniVersion: "1.0.0",
      name: "dual",
      plugins: [
        {
          type: "bridge",
          bridge: expect.stringMatching(/^br-[0-9a-f]{12}$/),
          ipam: {
            type: "host-local",
            ranges: [[{ subnet: "10.4.1.0/24", gateway: "10.4.1.1" }], [{ subnet: "fd00:b0:1::/64" }]],
          },
        },
        { type: "portmap" },
        { type: "firewall" },
      ],
    });

    const overlap = await berth(root, "network", "create", "back", "--subnet", "10.231.0.0/16");
    expect(overlap.code).toBe(1);
    expect(overlap.stderr).toMatch(/subnet 10\.231\.0\.0\/16 overlaps 10\.231\.40\.0\/24 of network front/);
    const twice = await berth(root, "network", "create", "front");
    expect(twice.stderr).toMatch(/network front already exists/);
    const badName = await berth(root, "network", "create", "../x");
    expect(badName.stderr).toMatch(/network name "\.\.\/x" is not valid/);
    const missing = await berth(root, "network", "inspect", "ghost");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/network ghost not found/);

    expect((await berth(root, "network", "rm", "front", "dual")).stdout).toBe("front\ndual\n");
    expect((await berth(root, "network", "rm", "front")).stderr).toMatch(/network front not found/);
    expect((await berth(root, "network", "ls")).stdout.trim().split("\n")).toHaveLength(1);
  });
});
