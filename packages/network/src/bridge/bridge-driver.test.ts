import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { nftablesAvailable, readMountInfo } from "@berth/sys";
import {
  BUSYBOX_PATH,
  hostNetworkSnapshot,
  requiresNetworkSandbox,
  serveTcp,
  type TcpServer,
  tcpFetch,
} from "@berth/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createIpam } from "../ipam/ipam.js";
import { createNat } from "../nat/nat.js";
import { IfaFlag } from "../netlink/constants.js";
import { Rtnetlink } from "../netlink/rtnetlink.js";
import { createNetns, deleteNetns, type NotPromise, withNetns } from "../netns/netns.js";
import { type BridgeDriver, createBridgeDriver, DEFAULT_BRIDGE_NAME, hostVethOf } from "./bridge-driver.js";
import { containerResolvConf, writeHostsAndResolv } from "./hosts.js";

// Everything happens in namespaces made here: a "host" namespace (bridges, host-side veths, the
// nftables table) and container namespaces. Deleting them in afterEach removes every link, route
// and rule inside; the real host is only read, before and after, to prove it did not change.

const TABLE = "berth_brtest";

const HAS_IPV6 = existsSync("/proc/sys/net/ipv6");

describe("containerResolvConf", () => {
  it("drops loopback resolvers and falls back to public ones", () => {
    expect(containerResolvConf("nameserver 127.0.0.53\noptions edns0\nsearch lan\n")).toBe(
      "nameserver 8.8.8.8\nnameserver 8.8.4.4\noptions edns0\nsearch lan\n",
    );
    expect(containerResolvConf("# c\nnameserver ::1\nnameserver 192.0.2.53\n")).toBe(
      "nameserver 192.0.2.53\n",
    );
    // Loopback resolvers are dropped however they are written.
    expect(
      containerResolvConf("nameserver 0:0:0:0:0:0:0:1\nnameserver 127.1.2.3\nnameserver 2001:db8::53\n"),
    ).toBe("nameserver 2001:db8::53\n");
  });

  it("writes hosts and resolv.conf", () => {
    const dir = mkdtempSync(join(tmpdir(), "berth-hosts-"));
    try {
      writeHostsAndResolv(join(dir, "etc"), {
        hostname: "web",
        ip: "10.4.0.9",
        hostResolvConf: join(dir, "none"),
      });
      expect(readFileSync(join(dir, "etc", "hosts"), "utf8")).toContain("10.4.0.9\tweb\n");
      expect(readFileSync(join(dir, "etc", "hosts"), "utf8")).not.toContain("fd00");
      writeHostsAndResolv(join(dir, "etc"), {
        hostname: "web",
        ip: "10.4.0.9",
        ip6: "fd00:b0::9",
        hostResolvConf: join(dir, "none"),
      });
      expect(readFileSync(join(dir, "etc", "hosts"), "utf8")).toBe(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.4.0.9\tweb\nfd00:b0::9\tweb\n",
      );
      expect(readFileSync(join(dir, "etc", "resolv.conf"), "utf8")).toBe(
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\n",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.runIf(requiresNetworkSandbox("bridge driver (network namespaces, nftables)") && nftablesAvailable())(
  "bridge driver",
  () => {
    let dir = "";
    let hostNs = "";
    let driver: BridgeDriver;
    let before: Record<string, unknown>;
    const namespaces: string[] = [];
    const servers: TcpServer[] = [];

    const containerNs = (name: string) => {
      const path = join(dir, "ns", name);
      createNetns(path);
      namespaces.push(path);
      return path;
    };

    beforeAll(() => {
      before = hostNetworkSnapshot();
    });

    beforeEach(() => {
      dir = mkdtempSync(join(tmpdir(), "berth-bridge-"));
      hostNs = join(dir, "ns", "host");
      createNetns(hostNs);
      namespaces.push(hostNs);
      Rtnetlink.use({ netns: hostNs }, (rt) => rt.setLinkUp("lo"));
      driver = createBridgeDriver({ stateDir: join(dir, "state"), hostNetns: hostNs, natTable: TABLE });
    });

    afterEach(async () => {
      driver.close?.();
      for (const server of servers.splice(0)) await server.stop();
      for (const ns of namespaces.splice(0)) deleteNetns(ns);
      const mounts = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
      rmSync(dir, { recursive: true, force: true });
      expect(mounts).toEqual([]);
    });

    afterAll(() => {
      expect(hostNetworkSnapshot()).toEqual(before);
    });

    const inNs = <T>(ns: string, fn: (rt: Rtnetlink) => NotPromise<T>) => Rtnetlink.use({ netns: ns }, fn);
    const inHost = <T>(fn: (rt: Rtnetlink) => NotPromise<T>) => inNs(hostNs, fn);

    /** Starts the reply-with-your-address server in `ns` and waits until it listens. */
    const serve = async (ns: string, port: number, address?: string) => {
      servers.push(await serveTcp(ns, port, address));
    };

    it("persists networks and refuses to remove one in use", async () => {
      const a = await driver.createNetwork({ name: "alpha" });
      const b = await driver.createNetwork({
        name: "beta",
        subnet: "10.231.7.0/24",
        gateway: "10.231.7.254",
      });
      expect(a).toMatchObject({ subnet: "10.4.1.0/24", gateway: "10.4.1.1" });
      expect(a.bridge).toMatch(/^br-[0-9a-f]{12}$/);
      expect(b).toMatchObject({ subnet: "10.231.7.0/24", gateway: "10.231.7.254" });
      await expect(driver.createNetwork({ name: "gamma", subnet: "10.231.0.0/16" })).rejects.toThrow(
        /overlaps/,
      );
      const again = createBridgeDriver({ stateDir: join(dir, "state"), hostNetns: hostNs, natTable: TABLE });
      expect((await again.listNetworks()).map((n) => n.name)).toEqual(["alpha", "beta"]);

      const c = containerNs("c");
      await driver.connect("beta", { containerId: "c1", netnsPath: c });
      const err = await driver.removeNetwork("beta").catch((e: unknown) => e);
      expect(isFailedPrecondition(err)).toBe(true);
      await driver.disconnect("beta", "c1");
      await driver.disconnect("beta", "c1");
      await driver.removeNetwork("beta");
      // The table stays while a network remains, and goes with the last one.
      const tables = () =>
        execFileSync("nsenter", [`--net=${hostNs}`, "nft", "list", "tables"], { encoding: "utf8" });
      expect(tables()).toContain(`table inet ${TABLE}`);
      await driver.removeNetwork("alpha");
      expect(tables()).toBe("");
      expect(isNotFound(await driver.inspectNetwork("beta").catch((e: unknown) => e))).toBe(true);
      expect(inHost((rt) => rt.findLink(b.bridge))).toBeUndefined();
      expect(readdirSync(join(dir, "state", "networks"))).toEqual([]);
    });

    it("connects two containers that ping each other, and publishes a port on 127.0.0.1", async () => {
      const c1 = containerNs("c1");
      const c2 = containerNs("c2");
      const a1 = await driver.connect("berth", { containerId: "c1", netnsPath: c1 });
      const a2 = await driver.connect("berth", {
        containerId: "c2",
        netnsPath: c2,
        ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
      });
      expect(a1).toMatchObject({ ip: "10.4.0.2", gateway: "10.4.0.1", prefixLength: 24 });
      // The default network stays IPv4-only.
      expect(a1.ip6).toBeUndefined();
      expect((await driver.inspectNetwork("berth")).subnet6).toBeUndefined();
      expect(a2.ip).toBe("10.4.0.3");
      expect(a1.mac).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
      expect(inHost((rt) => rt.getLink(a1.hostVeth).masterIndex)).toBe(
        inHost((rt) => rt.getLink(DEFAULT_BRIDGE_NAME).index),
      );

      const ping = execFileSync(
        "nsenter",
        [`--net=${c1}`, BUSYBOX_PATH, "ping", "-c", "1", "-W", "2", a2.ip],
        {
          encoding: "utf8",
        },
      );
      expect(ping).toContain("1 packets received");

      await serve(c2, 8080);
      const reply = tcpFetch(hostNs, "127.0.0.1", 18080);
      // The 127.0.0.1 source is masqueraded to the bridge address on the way in.
      expect(reply).toBe("hello 10.4.0.1\n");
      // Hairpin: the container reaches its own published port through the host's address, out and
      // back in through the same bridge port.
      const self = tcpFetch(c2, a2.gateway, 18080);
      expect(self).toMatch(/^hello 10\.4\.0\.\d+\n$/);

      await driver.disconnect("berth", "c1");
      await driver.disconnect("berth", "c2");
      await driver.removeNetwork("berth");
      const nat = createNat({ table: TABLE, netns: hostNs });
      expect(nat.listPublished()).toEqual([]);
      expect(nat.listNetworks()).toEqual([]);
      expect(inHost((rt) => rt.listLinks().map((l) => l.name))).toEqual(["lo"]);
      expect(existsSync(join(dir, "state", "ipam", "berth"))).toBe(false);
    });

    it("isolates containers on different networks", async () => {
      await driver.createNetwork({ name: "one", subnet: "10.233.1.0/24" });
      await driver.createNetwork({ name: "two", subnet: "10.233.2.0/24" });
      const c1 = containerNs("c1");
      const c2 = containerNs("c2");
      const c3 = containerNs("c3");
      const a1 = await driver.connect("one", { containerId: "c1", netnsPath: c1 });
      const a2 = await driver.connect("one", { containerId: "c2", netnsPath: c2 });
      const a3 = await driver.connect("two", { containerId: "c3", netnsPath: c3 });
      const ping = (from: string, to: string) =>
        spawnSync("nsenter", [`--net=${from}`, BUSYBOX_PATH, "ping", "-c", "1", "-W", "1", to]).status;
      expect(ping(c1, a2.ip)).toBe(0);
      expect(ping(c1, a3.ip)).not.toBe(0);
      expect(ping(c3, a1.ip)).not.toBe(0);
      for (const [net, id] of [
        ["one", "c1"],
        ["one", "c2"],
        ["two", "c3"],
      ] as const)
        await driver.disconnect(net, id);
      await driver.removeNetwork("one");
      await driver.removeNetwork("two");
    });

    it("gives 50 concurrent connects 50 distinct addresses and leaves nothing after disconnect", async () => {
      await driver.createNetwork({ name: "many", subnet: "10.232.0.0/24" });
      const ids = Array.from({ length: 50 }, (_, i) => `c${i}`);
      const paths = ids.map((id) => containerNs(id));
      const attachments = await Promise.all(
        ids.map((id, i) => driver.connect("many", { containerId: id, netnsPath: paths[i] as string })),
      );
      expect(new Set(attachments.map((a) => a.ip)).size).toBe(50);
      await Promise.all(ids.map((id) => driver.disconnect("many", id)));
      expect(inHost((rt) => rt.listLinks().filter((l) => l.kind === "veth"))).toEqual([]);
      expect(inHost((rt) => rt.findLink(hostVethOf("many", "c0")))).toBeUndefined();
      await driver.removeNetwork("many");
      expect(inHost((rt) => rt.listLinks().map((l) => l.name))).toEqual(["lo"]);
    });

    describe.runIf(HAS_IPV6)("dual stack", () => {
      const UPLINK = "uplink";
      const HOST6 = "2001:db8:1::1";
      const INTERNET6 = "2001:db8:1::2";

      /**
       * A namespace playing "the internet", joined to the host namespace by a veth (`uplink` there):
       * it knows no route to any container subnet, so a container reaches it only masqueraded.
       */
      const internet = () => {
        const ns = containerNs("internet");
        inHost((rt) => {
          rt.createVeth(UPLINK, "eth0", { peerNetns: ns, up: true });
          rt.addAddress(UPLINK, `${HOST6}/64`, { noDad: true });
        });
        inNs(ns, (rt) => {
          rt.setLinkUp("lo");
          rt.setLinkUp("eth0");
          rt.addAddress("eth0", `${INTERNET6}/64`, { noDad: true });
        });
        return ns;
      };

      const usable = (ns: string, link: string, address: string) =>
        inNs(ns, (rt) =>
          rt
            .listAddresses({ link, family: 6 })
            .filter((a) => a.address === address)
            .map((a) => (a.flags & IfaFlag.TENTATIVE) === 0),
        );

      it("validates IPv6 subnets and refuses overlapping ones", async () => {
        const a = await driver.createNetwork({ name: "v6a", subnet6: "fd00:b1::/64" });
        expect(a).toMatchObject({ subnet: "10.4.1.0/24", subnet6: "fd00:b1::/64", gateway6: "fd00:b1::1" });
        const b = await driver.createNetwork({
          name: "v6b",
          subnet: "10.235.0.0/24",
          subnet6: "fd00:b2:0:0::/64",
          gateway6: "fd00:b2::fe",
        });
        expect(b).toMatchObject({ subnet6: "fd00:b2::/64", gateway6: "fd00:b2::fe" });
        for (const subnet6 of ["fd00:b1::/48", "fd00:b1::8000:0:0:0/65", "fd00:b2::/64"]) {
          const err = await driver.createNetwork({ name: "v6c", subnet6 }).catch((e: unknown) => e);
          expect(isAlreadyExists(err)).toBe(true);
          expect(String(err)).toMatch(/overlaps fd00:b[12]::\/64 of network v6[ab]/);
        }
        const invalid = [
          { name: "v6c", subnet: "fd00:b3::/64" },
          { name: "v6c", subnet6: "10.236.0.0/24" },
          { name: "v6c", gateway6: "fd00:b3::1" },
          { name: "v6c", subnet6: "fd00:b3::/64", gateway6: "fd00:b4::1" },
          { name: "v6c", subnet6: "fd00:b3::/127" },
        ];
        for (const options of invalid) {
          const err = await driver.createNetwork(options).catch((e: unknown) => e);
          expect(isInvalidArgument(err), JSON.stringify(options)).toBe(true);
        }
        const err = await driver.createNetwork(invalid[0] as { name: string }).catch((e: unknown) => e);
        expect(String(err)).toMatch(/subnet fd00:b3::\/64 is IPv6; .* give an IPv6 subnet as subnet6/);
        // Nothing was recorded by the refused attempts, and an IPv6 range is free again once removed.
        expect((await driver.listNetworks()).map((n) => n.name)).toEqual(["v6a", "v6b"]);
        await driver.removeNetwork("v6b");
        await driver.createNetwork({ name: "v6c", subnet6: "fd00:b2::/64" });
        await driver.removeNetwork("v6a");
        await driver.removeNetwork("v6c");
      });

      it("connects containers over IPv6, masquerades them to the internet and publishes ports on the host's IPv6 address", async () => {
        const net = await driver.createNetwork({
          name: "dual",
          subnet: "10.234.0.0/24",
          subnet6: "fd00:b0::/64",
        });
        expect(net).toMatchObject({ subnet6: "fd00:b0::/64", gateway6: "fd00:b0::1" });
        expect(await driver.inspectNetwork("dual")).toEqual(net);
        const wan = internet();
        const c1 = containerNs("c1");
        const c2 = containerNs("c2");
        const a1 = await driver.connect("dual", { containerId: "c1", netnsPath: c1 });
        const a2 = await driver.connect("dual", {
          containerId: "c2",
          netnsPath: c2,
          ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
        });
        expect(a1).toMatchObject({
          ip: "10.234.0.2",
          prefixLength: 24,
          gateway: "10.234.0.1",
          ip6: "fd00:b0::2",
          prefixLength6: 64,
          gateway6: "fd00:b0::1",
        });
        expect(a2).toMatchObject({ ip: "10.234.0.3", ip6: "fd00:b0::3" });
        // Usable at once: duplicate address detection skipped on both ends.
        expect(usable(c1, "eth0", "fd00:b0::2")).toEqual([true]);
        expect(usable(hostNs, net.bridge, "fd00:b0::1")).toEqual([true]);
        // The kernel solicits neighbours for forwarded packets from a link-local address of the
        // bridge, and sends nothing while that is tentative: one must be usable at once too.
        expect(
          inHost((rt) =>
            rt
              .listAddresses({ link: net.bridge, family: 6 })
              .some((a) => a.address.startsWith("fe80:") && (a.flags & IfaFlag.TENTATIVE) === 0),
          ),
        ).toBe(true);
        expect(
          inNs(c1, (rt) => rt.listRoutes({ family: 6 }).filter((r) => r.destination === "default")),
        ).toMatchObject([{ gateway: "fd00:b0::1" }]);
        // Forwarding is on in the host namespace only; the real host's setting is in the snapshot.
        const forwarding = "/proc/sys/net/ipv6/conf/all/forwarding";
        expect(withNetns(hostNs, () => readFileSync(forwarding, "utf8"))).toBe("1\n");
        expect(readFileSync(forwarding, "utf8")).toBe(before.forwarding6);
        expect(
          createNat({ table: TABLE, netns: hostNs })
            .listPublished()
            .map((p) => [p.family, p.containerIP]),
        ).toEqual([
          [4, "10.234.0.3"],
          [6, "fd00:b0::3"],
        ]);

        await serve(c2, 8080, "::");
        await serve(wan, 9090, "::");
        // Container to container, both families.
        expect(tcpFetch(c1, a2.ip6 as string, 8080)).toBe(`hello ${a1.ip6}\n`);
        expect(tcpFetch(c1, a2.ip, 8080)).toBe(`hello ::ffff:${a1.ip}\n`);
        // To the internet: the server sees the host's IPv6 address, not the container's.
        expect(tcpFetch(c1, INTERNET6, 9090)).toBe(`hello ${HOST6}\n`);
        // A published port on the host's IPv6 address, from outside and from the host itself.
        expect(tcpFetch(wan, HOST6, 18080)).toBe(`hello ${INTERNET6}\n`);
        expect(tcpFetch(hostNs, HOST6, 18080)).toBe(`hello ${HOST6}\n`);
        // Hairpin over IPv6: a container on the bridge reaches the published port through the host.
        expect(tcpFetch(c1, HOST6, 18080)).toBe(`hello ${net.gateway6}\n`);

        // A failed connect (the port is taken) leaves no allocation of either family.
        const c3 = containerNs("c3");
        const taken = await driver
          .connect("dual", {
            containerId: "c3",
            netnsPath: c3,
            ports: [{ protocol: "tcp", hostPort: 18080, containerPort: 8080 }],
          })
          .catch((e: unknown) => e);
        expect(isAlreadyExists(taken)).toBe(true);
        const ipam = createIpam(join(dir, "state", "ipam"));
        expect((await ipam.list("dual")).map((l) => l.containerId)).toEqual(["c1", "c2", "c1", "c2"]);
        await expect(driver.removeNetwork("dual")).rejects.toThrow(/2 connected container\(s\): c1, c2$/);

        await driver.disconnect("dual", "c1");
        expect(await ipam.list("dual")).toEqual([
          { address: "10.234.0.3", containerId: "c2" },
          { address: "fd00:b0::3", containerId: "c2" },
        ]);
        await driver.disconnect("dual", "c2");
        await driver.removeNetwork("dual");
        expect(existsSync(join(dir, "state", "ipam", "dual"))).toBe(false);
        const nat = createNat({ table: TABLE, netns: hostNs });
        expect(nat.listPublished()).toEqual([]);
        expect(nat.listNetworks()).toEqual([]);
        expect(inHost((rt) => rt.listLinks().map((l) => l.name))).toEqual(["lo", UPLINK]);
        const uplink = inHost((rt) => rt.getLink(UPLINK).index);
        expect(
          inHost((rt) =>
            rt
              .listAddresses({ family: 6 })
              .filter((a) => a.linkIndex !== uplink && !a.address.startsWith("fe80:"))
              .map((a) => a.address),
          ),
        ).toEqual(["::1"]);
        expect(
          inHost((rt) => rt.listRoutes({ family: 6 }).filter((r) => r.destination.startsWith("fd00:"))),
        ).toEqual([]);
      });
    });
  },
);
