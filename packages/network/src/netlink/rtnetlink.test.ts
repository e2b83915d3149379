import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { errorCode } from "@berth/errdefs";
import { readMountInfo, SystemError } from "@berth/sys";
import { BUSYBOX_PATH, requiresCommand, requiresRoot } from "@berth/testing";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createNetns, deleteNetns } from "../netns/netns.js";
import { Rtnetlink } from "./rtnetlink.js";

interface IpLink {
  ifindex: number;
  ifname: string;
  mtu: number;
  address?: string;
  master?: string;
  flags: string[];
}
interface IpAddr {
  ifindex: number;
  addr_info: { family: string; local: string; prefixlen: number }[];
}
interface IpRoute {
  dst: string;
  gateway?: string;
  dev: string;
}

const ipIn = <T>(netns: string, ...args: string[]): T =>
  JSON.parse(execFileSync("nsenter", [`--net=${netns}`, "ip", "-j", ...args], { encoding: "utf8" })) as T;

const ping = (netns: string, target: string, six = false) =>
  spawnSync("nsenter", [`--net=${netns}`, BUSYBOX_PATH, six ? "ping6" : "ping", "-c1", "-W3", target], {
    encoding: "utf8",
  });

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

const hostState = () => ({
  links: execFileSync("ip", ["-j", "link"], { encoding: "utf8" }),
  routes: execFileSync("ip", ["-j", "route"], { encoding: "utf8" }),
  routes6: execFileSync("ip", ["-j", "-6", "route"], { encoding: "utf8" }),
});

describe.runIf(
  requiresRoot("rtnetlink in test network namespaces") &&
    requiresCommand("nsenter", "netlink oracles") &&
    requiresCommand("ip", "netlink oracles"),
)("rtnetlink", () => {
  let dir = "";
  let hostNs = "";
  let containerNs = "";
  let rt: Rtnetlink | undefined;
  let inContainer: Rtnetlink | undefined;
  let before: ReturnType<typeof hostState>;

  beforeAll(() => {
    before = hostState();
  });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-rtnl-"));
    // "host" plays the host side of a container network, "container" the container's namespace;
    // the real host namespace is never touched.
    hostNs = join(dir, "host");
    containerNs = join(dir, "container");
    createNetns(hostNs);
    createNetns(containerNs);
    rt = Rtnetlink.open({ netns: hostNs });
    inContainer = Rtnetlink.open({ netns: containerNs });
  });

  afterEach(() => {
    rt?.close();
    inContainer?.close();
    rt = inContainer = undefined;
    // Deleting the namespaces destroys every link, address and route made inside them.
    deleteNetns(hostNs);
    deleteNetns(containerNs);
    const mounts = readMountInfo().filter((m) => m.mountPoint.startsWith(dir));
    const files = readdirSync(dir);
    rmSync(dir, { recursive: true, force: true });
    expect(mounts).toEqual([]);
    expect(files).toEqual([]);
  });

  afterAll(() => {
    expect(hostState()).toEqual(before);
  });

  const host = () => rt as Rtnetlink;
  const ctr = () => inContainer as Rtnetlink;

  it("builds a bridge and a veth into another namespace that can ping across", () => {
    host().setLinkUp("lo");
    host().createBridge("br-t0", { up: true });
    host().createVeth("vh-t0", "eth0", { peerNetns: containerNs, master: "br-t0", up: true });
    host().addAddress("br-t0", "10.77.0.1/24");
    host().addAddress("br-t0", "fd77::1/64", { noDad: true });

    // The peer was created in the container namespace: it never existed here.
    expect(host().findLink("eth0")).toBeUndefined();
    ctr().setLinkUp("lo");
    ctr().addAddress("eth0", "10.77.0.2/24");
    ctr().addAddress("eth0", "fd77::2/64", { noDad: true });
    ctr().setLinkUp("eth0");
    ctr().addRoute({ gateway: "10.77.0.1" });
    ctr().addRoute({ gateway: "fd77::1" });

    const p4 = ping(containerNs, "10.77.0.1");
    expect(p4.status, p4.stdout + p4.stderr).toBe(0);
    const p6 = ping(containerNs, "fd77::1", true);
    expect(p6.status, p6.stdout + p6.stderr).toBe(0);

    // Links agree with iproute2's view of the same namespace.
    const ours = host().listLinks();
    const theirs = ipIn<IpLink[]>(hostNs, "link");
    expect(ours.map((l) => [l.index, l.name, l.mtu, l.mac, l.up])).toEqual(
      theirs.map((l) => [l.ifindex, l.ifname, l.mtu, l.address, l.flags.includes("UP")]),
    );
    const bridge = host().getLink("br-t0");
    const veth = host().getLink("vh-t0");
    expect(bridge.kind).toBe("bridge");
    expect(veth.kind).toBe("veth");
    expect(veth.masterIndex).toBe(bridge.index);
    expect(theirs.find((l) => l.ifname === "vh-t0")?.master).toBe("br-t0");
    // Its peer lives in another namespace, which the kernel reports as a netns id.
    expect(veth.linkNetnsId).toBeDefined();
    const eth0 = ctr().getLink("eth0");
    expect(veth.linkIndex).toBe(eth0.index);
    expect(eth0.operState).toBe("up");

    // Addresses agree with `ip -j addr`.
    const addrs = ctr().listAddresses({ link: "eth0" });
    expect(addrs.map((a) => `${a.address}/${a.prefixLength}`).sort()).toEqual(
      ipIn<IpAddr[]>(containerNs, "addr", "show", "dev", "eth0")
        .flatMap((l) => l.addr_info.map((i) => `${i.local}/${i.prefixlen}`))
        .sort(),
    );
    expect(addrs.filter((a) => a.family === 4).map((a) => a.address)).toEqual(["10.77.0.2"]);
    expect(
      ctr()
        .listAddresses({ family: 6, link: "lo" })
        .map((a) => a.address),
    ).toEqual(["::1"]);

    // Routes agree with `ip -j route`.
    const routes = ctr().listRoutes();
    expect(routes.map((r) => [r.destination, r.gateway])).toEqual(
      ipIn<IpRoute[]>(containerNs, "route").map((r) => [r.dst === "default" ? "default" : r.dst, r.gateway]),
    );
    expect(routes.find((r) => r.destination === "default")).toMatchObject({
      gateway: "10.77.0.1",
      linkIndex: eth0.index,
    });
    expect(
      ctr()
        .listRoutes({ family: 6 })
        .find((r) => r.destination === "default")?.gateway,
    ).toBe("fd77::1");

    ctr().deleteRoute({ gateway: "10.77.0.1" });
    expect(ipIn<IpRoute[]>(containerNs, "route").map((r) => r.dst)).toEqual(["10.77.0.0/24"]);
    ctr().deleteAddress("eth0", "10.77.0.2/24");
    expect(ctr().listAddresses({ link: "eth0", family: 4 })).toEqual([]);

    // Deleting one end of a veth removes the other, in the other namespace too.
    host().deleteLink("vh-t0");
    expect(ctr().findLink("eth0")).toBeUndefined();
    host().deleteLink("br-t0");
    expect(
      host()
        .listLinks()
        .map((l) => l.name),
    ).toEqual(["lo"]);
  });

  it("changes mtu, mac, name, master and state, and moves a link between namespaces", () => {
    host().createBridge("br-t1");
    host().createVeth("va-t1", "vb-t1", { mtu: 1400 });
    expect(host().getLink("vb-t1").mtu).toBe(1400);
    host().setMaster("va-t1", "br-t1");
    expect(host().getLink("va-t1").masterIndex).toBe(host().getLink("br-t1").index);
    host().setMaster("va-t1", null);
    expect(host().getLink("va-t1").masterIndex).toBeUndefined();
    host().setMtu("va-t1", 1280);
    host().setMacAddress("va-t1", "02:00:00:aa:bb:cc");
    const index = host().getLink("va-t1").index;
    host().renameLink("va-t1", "vc-t1");
    const renamed = host().getLink(index);
    expect([renamed.name, renamed.mtu, renamed.mac]).toEqual(["vc-t1", 1280, "02:00:00:aa:bb:cc"]);
    expect(ipIn<IpLink[]>(hostNs, "link", "show", "vc-t1")[0]).toMatchObject({
      mtu: 1280,
      address: "02:00:00:aa:bb:cc",
    });
    host().setLinkUp("vc-t1");
    expect(host().getLink("vc-t1").up).toBe(true);
    host().setLinkDown(index);
    expect(host().getLink("vc-t1").up).toBe(false);

    host().moveLink("vb-t1", containerNs);
    expect(host().findLink("vb-t1")).toBeUndefined();
    expect(ctr().getLink("vb-t1").mtu).toBe(1400);
    expect(host().deleteLink("vc-t1")).toBe(true);
    expect(ctr().findLink("vb-t1")).toBeUndefined();
  });

  it("maps kernel errors to codes with messages naming the object", () => {
    host().createBridge("br-t2");
    const exists = caught(() => host().createBridge("br-t2"));
    expect(exists).toBeInstanceOf(SystemError);
    expect(errorCode(exists)).toBe("already-exists");
    expect(String(exists)).toContain("br-t2");
    expect((exists as SystemError).errnoName).toBe("EEXIST");

    for (const op of [
      () => host().getLink("nope-t2"),
      () => host().setLinkUp("nope-t2"),
      () => host().deleteLink("nope-t2"),
      () => host().addAddress("nope-t2", "10.1.0.1/24"),
    ]) {
      const missing = caught(op);
      expect(errorCode(missing)).toBe("not-found");
      expect(String(missing)).toContain("nope-t2");
    }
    expect(host().deleteLink("nope-t2", { ignoreMissing: true })).toBe(false);

    // The peer's name is taken where the peer would go.
    ctr().createBridge("eth0");
    const peerTaken = caught(() => host().createVeth("vh-t2", "eth0", { peerNetns: containerNs }));
    expect(errorCode(peerTaken)).toBe("already-exists");
    expect(String(peerTaken)).toContain("vh-t2");
    expect(host().findLink("vh-t2")).toBeUndefined();

    host().addAddress("br-t2", "10.1.0.1/24");
    expect(errorCode(caught(() => host().addAddress("br-t2", "10.1.0.1/24")))).toBe("already-exists");
    host().addAddress("br-t2", "10.1.0.1/24", { replace: true });
    const notThere = caught(() => host().deleteAddress("br-t2", "10.1.0.9/24"));
    expect((notThere as SystemError).errnoName).toBe("EADDRNOTAVAIL");
    expect(String(notThere)).toContain("10.1.0.9/24 on link br-t2");

    // An unreachable gateway: the kernel explains with an extended ack.
    const unreachable = caught(() => host().addRoute({ gateway: "192.0.2.1" }));
    expect((unreachable as SystemError).errnoName).toBe("ENETUNREACH");
    expect(String(unreachable)).toMatch(/default via 192\.0\.2\.1: ENETUNREACH \(.+\)/);
    expect(errorCode(caught(() => host().deleteRoute({ destination: "10.9.0.0/16", link: "br-t2" })))).toBe(
      "not-found",
    );

    // Refused before anything is sent.
    for (const bad of [
      () => host().createBridge("a-name-longer-than-15"),
      () => host().createBridge("bad/name"),
      () => host().setMtu("br-t2", 10),
      () => host().setMacAddress("br-t2", "zz"),
      () => host().addRoute({ destination: "10.0.0.1/8", link: "br-t2" }),
      () => host().addRoute({ destination: "10.0.0.0/8" }),
      () => host().addRoute({ destination: "10.0.0.0/8", gateway: "fd00::1" }),
    ])
      expect(errorCode(caught(bad))).toBe("invalid-argument");
  });

  it("dumps many links across several datagrams", () => {
    // Enough links that the dump needs more than one datagram.
    for (let i = 0; i < 60; i++) host().createBridge(`br-m${i}`);
    const names = host()
      .listLinks()
      .map((l) => l.name);
    expect(names.length).toBe(61);
    expect(names).toEqual(ipIn<IpLink[]>(hostNs, "link").map((l) => l.ifname));
  });
});
