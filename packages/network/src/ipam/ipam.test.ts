import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { errorCode } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createIpam, type IpamNetwork, resolveIpamRange } from "./ipam.js";

let root: string;

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "berth-ipam-"));
});

afterEach(() => {
  rmSync(root, { recursive: true, force: true });
});

/** Awaits `promise` and returns the error code it rejects with (fails the test if it resolves). */
async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    return errorCode(err);
  }
  throw new Error("expected a rejection");
}

const net4: IpamNetwork = { name: "berth0", ranges: [{ subnet: "10.88.0.0/16" }] };

describe("ipam", () => {
  it("hands out addresses in order, skipping the gateway, with what the interface needs", async () => {
    const ipam = createIpam(root);
    expect(await ipam.allocate(net4, "c1")).toEqual([
      {
        family: 4,
        address: "10.88.0.2",
        prefixLength: 16,
        cidr: "10.88.0.2/16",
        subnet: "10.88.0.0/16",
        gateway: "10.88.0.1",
      },
    ]);
    expect((await ipam.allocate(net4, "c2"))[0]?.address).toBe("10.88.0.3");
    expect(await ipam.list("berth0")).toEqual([
      { address: "10.88.0.2", containerId: "c1" },
      { address: "10.88.0.3", containerId: "c2" },
    ]);
    // The record is host-local's: one file per address holding the container id.
    expect(readFileSync(join(root, "berth0", "10.88.0.2"), "utf8")).toBe("c1\n");
  });

  it("is idempotent for a container that already holds an address", async () => {
    const ipam = createIpam(root);
    const first = await ipam.allocate(net4, "c1");
    expect(await ipam.allocate(net4, "c1")).toEqual(first);
    expect(await ipam.list("berth0")).toHaveLength(1);
  });

  it("keeps allocations and the round-robin position across restarts", async () => {
    const network: IpamNetwork = {
      name: "rr",
      ranges: [{ subnet: "10.1.0.0/24", rangeStart: "10.1.0.10", rangeEnd: "10.1.0.13" }],
    };
    const before = createIpam(root);
    expect((await before.allocate(network, "a"))[0]?.address).toBe("10.1.0.10");
    expect((await before.allocate(network, "b"))[0]?.address).toBe("10.1.0.11");
    expect(await before.release("rr", "a")).toEqual(["10.1.0.10"]);

    const after = createIpam(root);
    expect(await after.list("rr")).toEqual([{ address: "10.1.0.11", containerId: "b" }]);
    // Round-robin continues after the last reserved address instead of reusing .10 at once.
    expect((await after.allocate(network, "c"))[0]?.address).toBe("10.1.0.12");
    expect((await after.allocate(network, "d"))[0]?.address).toBe("10.1.0.13");
    // Then it wraps around to the start of the range.
    expect((await after.allocate(network, "e"))[0]?.address).toBe("10.1.0.10");
  });

  it("reports an exhausted range, naming the network and the range, and records nothing", async () => {
    const ipam = createIpam(root);
    const network: IpamNetwork = {
      name: "tiny",
      ranges: [{ subnet: "192.168.7.0/24", rangeStart: "192.168.7.1", rangeEnd: "192.168.7.3" }],
    };
    // .1 is the gateway, so the range holds two addresses.
    expect((await ipam.allocate(network, "a"))[0]?.address).toBe("192.168.7.2");
    expect((await ipam.allocate(network, "b"))[0]?.address).toBe("192.168.7.3");
    await expect(ipam.allocate(network, "c")).rejects.toThrow(
      "network tiny range 192.168.7.1-192.168.7.3 (subnet 192.168.7.0/24): no free address, all 3 are allocated or reserved",
    );
    expect(await codeOf(ipam.allocate(network, "c"))).toBe("resource-exhausted");
    expect((await ipam.list("tiny")).map((l) => l.containerId)).toEqual(["a", "b"]);

    await ipam.release("tiny", "a");
    expect((await ipam.allocate(network, "c"))[0]?.address).toBe("192.168.7.2");
  });

  it("honours requested addresses and refuses bad ones", async () => {
    const ipam = createIpam(root);
    const network: IpamNetwork = {
      name: "static",
      ranges: [{ subnet: "10.2.0.0/24", rangeStart: "10.2.0.100", rangeEnd: "10.2.0.200" }],
    };
    // Inside the subnet but outside the dynamic range: allowed, for static addresses.
    expect((await ipam.allocate(network, "a", { requestedIp: "10.2.0.5" }))[0]?.cidr).toBe("10.2.0.5/24");
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.2.0.5" }))).toBe("already-exists");
    await expect(ipam.allocate(network, "b", { requestedIp: "10.2.0.5" })).rejects.toThrow(
      "network static: requested address 10.2.0.5 is already allocated to a",
    );
    await expect(ipam.allocate(network, "b", { requestedIp: "10.3.0.5" })).rejects.toThrow(
      "network static: requested address 10.3.0.5 is outside every subnet (10.2.0.0/24)",
    );
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.3.0.5" }))).toBe("invalid-argument");
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.2.0.1" }))).toBe("invalid-argument");
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.2.0.255" }))).toBe("invalid-argument");
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.2.0.0" }))).toBe("invalid-argument");
    expect(await codeOf(ipam.allocate(network, "b", { requestedIp: "10.2.0.x" }))).toBe("invalid-argument");
    // The same container asking again for its own address is a no-op; for another one, an error.
    expect((await ipam.allocate(network, "a", { requestedIp: "10.2.0.5" }))[0]?.address).toBe("10.2.0.5");
    expect(await codeOf(ipam.allocate(network, "a", { requestedIp: "10.2.0.6" }))).toBe("already-exists");
    expect(await ipam.list("static")).toEqual([{ address: "10.2.0.5", containerId: "a" }]);
  });

  it("releases by container id, idempotently, and releaseAll leaves nothing", async () => {
    const ipam = createIpam(root);
    await ipam.allocate(net4, "a");
    await ipam.allocate(net4, "b");
    expect(await ipam.release("berth0", "a")).toEqual(["10.88.0.2"]);
    expect(await ipam.release("berth0", "a")).toEqual([]);
    expect(await ipam.release("unknown", "a")).toEqual([]);
    expect(await ipam.list("unknown")).toEqual([]);
    expect(await ipam.releaseAll("berth0")).toEqual([{ address: "10.88.0.3", containerId: "b" }]);
    expect(existsSync(join(root, "berth0"))).toBe(false);
    expect(await ipam.list("berth0")).toEqual([]);
    // A fresh start: the round-robin state went with the network.
    expect((await ipam.allocate(net4, "c"))[0]?.address).toBe("10.88.0.2");
  });

  it("allocates IPv6, alone or beside IPv4, all or nothing", async () => {
    const ipam = createIpam(root);
    const v6: IpamNetwork = { name: "six", ranges: [{ subnet: "fd00:88::/64" }] };
    expect(await ipam.allocate(v6, "a")).toEqual([
      {
        family: 6,
        address: "fd00:88::2",
        prefixLength: 64,
        cidr: "fd00:88::2/64",
        subnet: "fd00:88::/64",
        gateway: "fd00:88::1",
      },
    ]);
    expect(await ipam.allocate(v6, "b", { requestedIp: "FD00:88:0:0::ffff" })).toMatchObject([
      { address: "fd00:88::ffff" },
    ]);
    expect(await ipam.list("six")).toEqual([
      { address: "fd00:88::2", containerId: "a" },
      { address: "fd00:88::ffff", containerId: "b" },
    ]);

    const dual: IpamNetwork = {
      name: "dual",
      ranges: [
        { subnet: "10.5.0.0/24" },
        { subnet: "fd00:5::/120", rangeStart: "fd00:5::10", rangeEnd: "fd00:5::10", gateway: "fd00:5::1" },
      ],
    };
    expect((await ipam.allocate(dual, "a")).map((a) => a.cidr)).toEqual(["10.5.0.2/24", "fd00:5::10/120"]);
    // The IPv6 range is full: the IPv4 address taken on the way is given back.
    await expect(ipam.allocate(dual, "b")).rejects.toThrow(/network dual range fd00:5::10-fd00:5::10/);
    expect(await ipam.list("dual")).toEqual([
      { address: "10.5.0.2", containerId: "a" },
      { address: "fd00:5::10", containerId: "a" },
    ]);
    expect(await ipam.release("dual", "a")).toEqual(["10.5.0.2", "fd00:5::10"]);
  });

  it("validates networks and container ids", async () => {
    const ipam = createIpam(root);
    const bad: Array<[IpamNetwork, RegExp]> = [
      [{ name: "../x", ranges: [{ subnet: "10.0.0.0/24" }] }, /network name "..\/x" is invalid/],
      [{ name: "n", ranges: [] }, /network n: no address range configured/],
      [{ name: "n", ranges: [{ subnet: "10.0.0.0/31" }] }, /subnet is too small/],
      [
        { name: "n", ranges: [{ subnet: "10.0.0.0/24", rangeStart: "10.0.1.1" }] },
        /outside the subnet 10.0.0.0\/24/,
      ],
      [{ name: "n", ranges: [{ subnet: "10.0.0.0/24", rangeStart: "10.0.0.0" }] }, /is the network address/],
      [
        { name: "n", ranges: [{ subnet: "10.0.0.0/24", rangeEnd: "10.0.0.255" }] },
        /is the broadcast address/,
      ],
      [
        { name: "n", ranges: [{ subnet: "10.0.0.0/24", rangeStart: "10.0.0.9", rangeEnd: "10.0.0.8" }] },
        /rangeStart 10.0.0.9 is after rangeEnd 10.0.0.8/,
      ],
      [
        { name: "n", ranges: [{ subnet: "10.0.0.0/16" }, { subnet: "10.0.3.0/24" }] },
        /subnets 10.0.0.0\/16 and 10.0.3.0\/24 overlap/,
      ],
    ];
    for (const [network, message] of bad) {
      await expect(ipam.allocate(network, "c"), message.source).rejects.toThrow(message);
      expect(await codeOf(ipam.allocate(network, "c"))).toBe("invalid-argument");
    }
    expect(await codeOf(ipam.allocate(net4, "two\nlines"))).toBe("invalid-argument");
    expect(await codeOf(ipam.allocate(net4, ""))).toBe("invalid-argument");
    expect(await codeOf(ipam.release("..", "c"))).toBe("invalid-argument");
    expect(resolveIpamRange({ subnet: "10.9.8.7/8" }).gateway).toEqual({ family: 4, value: 0x0a000001n });
  });

  it("sweeps the temp files of a process that died mid-allocation", async () => {
    const ipam = createIpam(root);
    await ipam.allocate(net4, "a");
    writeFileSync(join(root, "berth0", ".tmp-999999-deadbeef"), "ghost\n");
    await ipam.allocate(net4, "b");
    expect(readdirSync(join(root, "berth0")).sort()).toEqual([
      "10.88.0.2",
      "10.88.0.3",
      "last_reserved_ip.0",
    ]);
  });

  it("never hands out an address twice to concurrent callers in one process", async () => {
    const ipam = createIpam(root);
    const other = createIpam(root);
    const ids = Array.from({ length: 20 }, (_, i) => `c${i}`);
    const results = await Promise.all(ids.map((id, i) => (i % 2 === 0 ? ipam : other).allocate(net4, id)));
    const addresses = results.map((r) => r[0]?.address);
    expect(new Set(addresses).size).toBe(20);
    expect(await ipam.list("berth0")).toHaveLength(20);
  });

  it("gives 50 concurrent allocations from 5 processes 50 distinct addresses", async () => {
    const child = fileURLToPath(new URL("./testing/allocate-child.mjs", import.meta.url));
    const register = pathToFileURL(
      createRequire(import.meta.url).resolve("@berth/content/testsuite/ts-register.mjs"),
    ).href;
    const runChild = (prefix: string) =>
      new Promise<Array<{ containerId: string; address: string }>>((resolve, reject) => {
        const proc = spawn(
          process.execPath,
          [
            "--conditions=@berth/source",
            "--import",
            register,
            child,
            root,
            "shared",
            "10.77.0.0/24",
            prefix,
            "10",
          ],
          { stdio: ["ignore", "pipe", "pipe"] },
        );
        let out = "";
        let err = "";
        proc.stdout.on("data", (d: Buffer) => {
          out += d.toString();
        });
        proc.stderr.on("data", (d: Buffer) => {
          err += d.toString();
        });
        proc.on("error", reject);
        proc.on("close", (code) => {
          if (code === 0) resolve(JSON.parse(out) as Array<{ containerId: string; address: string }>);
          else reject(new Error(`child ${prefix} exited with ${code}: ${err}`));
        });
      });
    const results = (await Promise.all(["p0", "p1", "p2", "p3", "p4"].map(runChild))).flat();
    expect(results).toHaveLength(50);
    expect(new Set(results.map((r) => r.address)).size).toBe(50);
    const leases = await createIpam(root).list("shared");
    expect(leases).toHaveLength(50);
    expect(new Map(leases.map((l) => [l.containerId, l.address]))).toEqual(
      new Map(results.map((r) => [r.containerId, r.address])),
    );
  }, 60_000);
});
