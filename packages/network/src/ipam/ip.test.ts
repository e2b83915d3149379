import { isIP } from "node:net";
import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import {
  addToIp,
  compareIp,
  formatIp,
  formatNetwork,
  lastAddress,
  networkContains,
  networkSize,
  networksOverlap,
  parseCidr,
  parseIp,
  tryParseIp,
} from "./ip.js";

describe("ip", () => {
  it("parses and formats IPv4", () => {
    const ip = parseIp("10.88.0.1");
    expect(ip).toEqual({ family: 4, value: 0x0a580001n });
    expect(formatIp(ip)).toBe("10.88.0.1");
    expect(formatIp(parseIp("0.0.0.0"))).toBe("0.0.0.0");
    expect(formatIp(parseIp("255.255.255.255"))).toBe("255.255.255.255");
  });

  it("formats IPv6 canonically (RFC 5952)", () => {
    const cases: Array<[string, string]> = [
      ["::", "::"],
      ["::1", "::1"],
      ["FD00:0:0:0:0:0:0:1", "fd00::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["2001:0db8:0000:0000:0000:0000:0002:0001", "2001:db8::2:1"],
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
      ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
      ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
      ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
    ];
    for (const [input, canonical] of cases) expect(formatIp(parseIp(input)), input).toBe(canonical);
  });

  it("agrees with node:net on what is an address", () => {
    const inputs = [
      "1.2.3.4",
      "01.2.3.4",
      "1.2.3",
      "1.2.3.256",
      "1.2.3.4.5",
      "",
      "::",
      ":::",
      "1::2::3",
      "1:2:3:4:5:6:7:8",
      "1:2:3:4:5:6:7:8:9",
      "1:2:3:4:5:6:7::8",
      "::1.2.3.4",
      "::1.2.3.4:5",
      "12345::",
      "fe80::1%eth0",
      "g::1",
      ":1::",
      "1::",
    ];
    for (const input of inputs) {
      // node:net accepts zone indexes; berth's addresses never carry one.
      const expected = input.includes("%") ? 0 : isIP(input);
      expect(tryParseIp(input)?.family ?? 0, input).toBe(expected);
    }
    expect(() => parseIp("nope")).toThrow(/"nope" is not an IPv4 or IPv6 address/);
    try {
      parseIp("1.2.3");
    } catch (err) {
      expect(isInvalidArgument(err)).toBe(true);
    }
  });

  it("does CIDR math", () => {
    const { ip, network } = parseCidr("10.88.3.7/16");
    expect(formatIp(ip)).toBe("10.88.3.7");
    expect(formatNetwork(network)).toBe("10.88.0.0/16");
    expect(formatIp(lastAddress(network))).toBe("10.88.255.255");
    expect(networkSize(network)).toBe(65536n);
    expect(networkContains(network, parseIp("10.88.255.1"))).toBe(true);
    expect(networkContains(network, parseIp("10.89.0.1"))).toBe(false);
    expect(networkContains(network, parseIp("::1"))).toBe(false);

    const v6 = parseCidr("fd00:1:2:3::99/64").network;
    expect(formatNetwork(v6)).toBe("fd00:1:2:3::/64");
    expect(formatIp(lastAddress(v6))).toBe("fd00:1:2:3:ffff:ffff:ffff:ffff");
    expect(networkSize(v6)).toBe(1n << 64n);

    expect(networksOverlap(parseCidr("10.0.0.0/8").network, parseCidr("10.88.0.0/16").network)).toBe(true);
    expect(networksOverlap(parseCidr("10.88.0.0/16").network, parseCidr("10.0.0.0/8").network)).toBe(true);
    expect(networksOverlap(parseCidr("10.88.0.0/16").network, parseCidr("10.89.0.0/16").network)).toBe(false);

    expect(formatNetwork(parseCidr("0.0.0.0/0").network)).toBe("0.0.0.0/0");
    expect(formatNetwork(parseCidr("1.2.3.4/32").network)).toBe("1.2.3.4/32");
    for (const bad of ["10.0.0.0", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "x/8", "::/129"]) {
      expect(() => parseCidr(bad), bad).toThrow(/CIDR|too long/);
    }
  });

  it("adds and compares within the address space", () => {
    expect(formatIp(addToIp(parseIp("10.0.0.255"), 1n))).toBe("10.0.1.0");
    expect(formatIp(addToIp(parseIp("fd00::ffff"), 1n))).toBe("fd00::1:0");
    expect(() => addToIp(parseIp("255.255.255.255"), 1n)).toThrow(/outside the IPv4 address space/);
    expect(() => addToIp(parseIp("0.0.0.0"), -1n)).toThrow(/outside/);
    expect(compareIp(parseIp("10.0.0.2"), parseIp("10.0.0.10"))).toBeLessThan(0);
    expect(compareIp(parseIp("::1"), parseIp("10.0.0.10"))).toBeGreaterThan(0);
    expect(compareIp(parseIp("::1"), parseIp("0::1"))).toBe(0);
  });
});
