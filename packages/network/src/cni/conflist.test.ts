import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isInvalidArgument, isNotFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadConflist, parseConflist } from "./conflist.js";
import { exportBridgeConflist } from "./export.js";

describe("parseConflist", () => {
  it("accepts a valid list, keeping every plugin key, and copies its input", () => {
    const input = {
      cniVersion: "1.0.0",
      name: "net-1",
      disableCheck: false,
      plugins: [
        { type: "bridge", bridge: "cni0", ipam: { type: "host-local" } },
        { type: "portmap", capabilities: { portMappings: true } },
      ],
    };
    const list = parseConflist(input);
    expect(list).toEqual(input);
    input.plugins[0] = { type: "changed", bridge: "x", ipam: { type: "y" } };
    expect(list.plugins[0]?.type).toBe("bridge");
    expect(parseConflist(JSON.stringify(input)).plugins[0]?.type).toBe("changed");
    expect(parseConflist(Buffer.from(JSON.stringify(input))).name).toBe("net-1");
  });

  it.each([
    ["not JSON", "{", /not valid JSON/],
    ["an array", "[]", /expected a JSON object/],
    [
      "an unknown version",
      { cniVersion: "2.0.0", name: "n", plugins: [{ type: "x" }] },
      /cniVersion "2.0.0"/,
    ],
    ["no version", { name: "n", plugins: [{ type: "x" }] }, /cniVersion undefined/],
    ["no name", { cniVersion: "1.0.0", plugins: [{ type: "x" }] }, /"name" must be a string/],
    ["a bad name", { cniVersion: "1.0.0", name: "../x", plugins: [{ type: "x" }] }, /network name "..\/x"/],
    ["no plugins", { cniVersion: "1.0.0", name: "n" }, /network n\): "plugins" must be a non-empty array/],
    ["empty plugins", { cniVersion: "1.0.0", name: "n", plugins: [] }, /non-empty array/],
    [
      "a plugin without type",
      { cniVersion: "1.0.0", name: "n", plugins: [{ bridge: "x" }] },
      /plugins\[0\]: "type"/,
    ],
    [
      "a path as type",
      { cniVersion: "1.0.0", name: "n", plugins: [{ type: "/bin/sh" }] },
      /"\/bin\/sh" must name/,
    ],
    [
      "bad capabilities",
      {
        cniVersion: "1.0.0",
        name: "n",
        plugins: [{ type: "portmap", capabilities: { portMappings: "yes" } }],
      },
      /plugins\[0\] \(portmap\): "capabilities"/,
    ],
    [
      "a bad disableCheck",
      { cniVersion: "1.0.0", name: "n", disableCheck: 1, plugins: [{ type: "x" }] },
      /disableCheck/,
    ],
  ])("rejects %s with invalid-argument", (_what, input, message) => {
    let caught: unknown;
    try {
      parseConflist(input, "test.conflist");
    } catch (err) {
      caught = err;
    }
    expect(isInvalidArgument(caught)).toBe(true);
    expect((caught as Error).message).toMatch(/^CNI (test\.conflist|network name)/);
    expect((caught as Error).message).toMatch(message);
  });
});

describe("loadConflist", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-cni-conflist-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads a file and names it in errors", async () => {
    const path = join(dir, "10-net.conflist");
    await writeFile(
      path,
      JSON.stringify({ cniVersion: "0.4.0", name: "net", plugins: [{ type: "loopback" }] }),
    );
    expect((await loadConflist(path)).cniVersion).toBe("0.4.0");
    await writeFile(path, JSON.stringify({ cniVersion: "0.4.0", name: "net", plugins: [] }));
    await expect(loadConflist(path)).rejects.toThrow(
      `CNI ${path} (network net): "plugins" must be a non-empty array`,
    );
    const missing = join(dir, "missing.conflist");
    const err = await loadConflist(missing).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toContain(missing);
  });
});

describe("exportBridgeConflist", () => {
  it("describes a bridge network with bridge + host-local, portmap and firewall", () => {
    const list = exportBridgeConflist(
      {
        name: "berth",
        bridge: "berth0",
        ipv4: { subnet: "10.88.0.0/16", gateway: "10.88.0.1" },
        ipv6: {
          subnet: "fd00:88::/64",
          gateway: "fd00:88::1",
          rangeStart: "fd00:88::10",
          rangeEnd: "fd00:88::ff",
        },
        mtu: 1400,
      },
      { ipamDataDir: "/var/lib/berth/cni-ipam" },
    );
    expect(list).toEqual({
      cniVersion: "1.0.0",
      name: "berth",
      plugins: [
        {
          type: "bridge",
          bridge: "berth0",
          isGateway: true,
          ipMasq: true,
          hairpinMode: true,
          mtu: 1400,
          ipam: {
            type: "host-local",
            ranges: [
              [{ subnet: "10.88.0.0/16", gateway: "10.88.0.1" }],
              [
                {
                  subnet: "fd00:88::/64",
                  gateway: "fd00:88::1",
                  rangeStart: "fd00:88::10",
                  rangeEnd: "fd00:88::ff",
                },
              ],
            ],
            routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }],
            dataDir: "/var/lib/berth/cni-ipam",
          },
        },
        { type: "portmap", capabilities: { portMappings: true }, snat: true },
        { type: "firewall" },
      ],
    });
  });

  it("honours masquerade, hairpin and firewall switches", () => {
    const list = exportBridgeConflist(
      { name: "quiet", bridge: "br-q", ipv4: { subnet: "10.9.0.0/24" }, masquerade: false, hairpin: false },
      { firewall: false },
    );
    expect(list.plugins.map((p) => p.type)).toEqual(["bridge", "portmap"]);
    expect(list.plugins[0]).toMatchObject({ ipMasq: false, hairpinMode: false });
    expect(list.plugins[0]?.ipam).toEqual({
      type: "host-local",
      ranges: [[{ subnet: "10.9.0.0/24" }]],
      routes: [{ dst: "0.0.0.0/0" }],
    });
  });

  it.each([
    [{ name: "n", bridge: "b" }, /needs an IPv4 or IPv6 subnet/],
    [{ name: "n", bridge: "b", ipv4: { subnet: "10.0.0.0" } }, /subnet 10.0.0.0 is not an IPv4 CIDR/],
    [{ name: "n", bridge: "b", ipv4: { subnet: "fd00::/64" } }, /not an IPv4 CIDR/],
    [{ name: "n", bridge: "b", ipv4: { subnet: "10.0.0.0/33" } }, /not an IPv4 CIDR/],
    [{ name: "n", bridge: "b", ipv4: { subnet: "10.0.0.0/24", gateway: "fd00::1" } }, /gateway fd00::1/],
    [{ name: "n", bridge: "a-very-long-bridge", ipv4: { subnet: "10.0.0.0/24" } }, /bridge name/],
    [{ name: "n y", bridge: "b", ipv4: { subnet: "10.0.0.0/24" } }, /network name "n y"/],
    [{ name: "n", bridge: "b", mtu: 10, ipv4: { subnet: "10.0.0.0/24" } }, /mtu 10/],
  ])("rejects %j with invalid-argument", (network, message) => {
    let caught: unknown;
    try {
      exportBridgeConflist(network);
    } catch (err) {
      caught = err;
    }
    expect(isInvalidArgument(caught)).toBe(true);
    expect((caught as Error).message).toMatch(message);
  });
});
