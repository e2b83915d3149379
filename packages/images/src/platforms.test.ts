import { isInvalidArgument } from "@berth/errdefs";
import { describe, expect, it } from "vitest";
import {
  allPlatforms,
  formatPlatform,
  hostPlatform,
  normalizePlatform,
  onlyPlatform,
  parsePlatform,
  platformMatcher,
} from "./platforms.js";

const p = (os: string, architecture: string, variant?: string) =>
  variant ? { os, architecture, variant } : { os, architecture };

describe("hostPlatform", () => {
  it("maps Node's arch to OCI terms", () => {
    const host = hostPlatform();
    expect(host.os).toBe(process.platform === "win32" ? "windows" : process.platform);
    const want: Record<string, string> = {
      x64: "amd64",
      arm64: "arm64",
      ia32: "386",
      ppc64: "ppc64le",
      arm: "arm",
    };
    expect(host.architecture).toBe(want[process.arch] ?? process.arch);
    if (process.arch === "arm64") expect(host.variant).toBe("v8");
  });
});

describe("normalizePlatform", () => {
  it.each([
    [p("Linux", "x86_64"), p("linux", "amd64")],
    [p("linux", "x86-64", "v1"), p("linux", "amd64")],
    [p("linux", "amd64", "v3"), p("linux", "amd64", "v3")],
    [p("linux", "aarch64"), p("linux", "arm64")],
    [p("linux", "arm64", "v8"), p("linux", "arm64")],
    [p("linux", "arm64", "9.0"), p("linux", "arm64", "v9")],
    [p("linux", "i386", "x"), p("linux", "386")],
    [p("linux", "armhf"), p("linux", "arm", "v7")],
    [p("linux", "armel"), p("linux", "arm", "v6")],
    [p("linux", "arm"), p("linux", "arm", "v7")],
    [p("linux", "arm", "6"), p("linux", "arm", "v6")],
    [p("macos", "arm64"), p("darwin", "arm64")],
  ])("%j → %j", (input, want) => {
    expect(normalizePlatform(input)).toEqual(want);
  });

  it("keeps os.version and features", () => {
    expect(normalizePlatform({ os: "windows", architecture: "AMD64", "os.version": "10.0.17763.1" })).toEqual(
      {
        os: "windows",
        architecture: "amd64",
        "os.version": "10.0.17763.1",
      },
    );
  });
});

describe("parsePlatform / formatPlatform", () => {
  it("parses specifiers", () => {
    expect(parsePlatform("linux/arm64/v8")).toEqual(p("linux", "arm64"));
    expect(parsePlatform("linux/amd64")).toEqual(p("linux", "amd64"));
    expect(parsePlatform("linux/arm/v6")).toEqual(p("linux", "arm", "v6"));
    expect(parsePlatform("linux/arm")).toEqual(p("linux", "arm", "v7"));
    expect(parsePlatform("aarch64")).toEqual(p(hostPlatform().os, "arm64"));
    expect(parsePlatform("linux")).toEqual(normalizePlatform({ ...hostPlatform(), os: "linux" }));
    expect(parsePlatform("windows/amd64")).toEqual(p("windows", "amd64"));
  });

  it.each(["", "linux/", "/amd64", "linux/amd64/v8/x", "plan10", "linux/amd 64"])("rejects %j", (s) => {
    expect(() => parsePlatform(s)).toThrow(expect.objectContaining({ code: "invalid-argument" }));
    try {
      parsePlatform(s);
    } catch (err) {
      expect(isInvalidArgument(err)).toBe(true);
      expect((err as Error).message).toContain(JSON.stringify(s));
    }
  });

  it("formats", () => {
    expect(formatPlatform(p("linux", "arm64", "v8"))).toBe("linux/arm64/v8");
    expect(formatPlatform(p("linux", "amd64"))).toBe("linux/amd64");
    expect(formatPlatform({ os: "", architecture: "" })).toBe("unknown/unknown");
  });
});

describe("matchers", () => {
  it("arm64 v8 matches arm64 with and without variant, then 32-bit arm, best first", () => {
    const m = platformMatcher(p("linux", "arm64", "v8"));
    expect(m.match(p("linux", "arm64"))).toBe(true);
    expect(m.match(p("linux", "aarch64", "v8"))).toBe(true);
    expect(m.match(p("linux", "arm", "v7"))).toBe(true);
    expect(m.match(p("linux", "arm64", "v8.2"))).toBe(false);
    expect(m.match(p("linux", "amd64"))).toBe(false);
    expect(m.match(p("windows", "arm64"))).toBe(false);
    expect(m.less(p("linux", "arm64"), p("linux", "arm", "v7"))).toBe(true);
    expect(m.less(p("linux", "arm", "v7"), p("linux", "arm64"))).toBe(false);
    expect(m.less(p("linux", "arm", "v8"), p("linux", "arm", "v5"))).toBe(true);
    expect(m.description).toBe("linux/arm64/v8");
  });

  it("arm64 v9 runs arm64 v8.x", () => {
    const m = platformMatcher(p("linux", "arm64", "v9.2"));
    expect(m.match(p("linux", "arm64", "v8.7"))).toBe(true);
    expect(m.match(p("linux", "arm64", "v8.8"))).toBe(false);
    expect(m.less(p("linux", "arm64", "v9.1"), p("linux", "arm64", "v8.7"))).toBe(true);
  });

  it("amd64 prefers itself, then older variants, then 386", () => {
    const m = platformMatcher(p("linux", "amd64", "v3"));
    expect(m.match(p("linux", "amd64", "v2"))).toBe(true);
    expect(m.match(p("linux", "amd64"))).toBe(true);
    expect(m.match(p("linux", "386"))).toBe(true);
    expect(m.match(p("linux", "amd64", "v4"))).toBe(false);
    expect(m.less(p("linux", "amd64", "v2"), p("linux", "386"))).toBe(true);
  });

  it("onlyPlatform has no fallbacks but normalizes", () => {
    const m = onlyPlatform(p("linux", "amd64"));
    expect(m.match(p("linux", "x86_64"))).toBe(true);
    expect(m.match(p("linux", "386"))).toBe(false);
    const arm = onlyPlatform(p("linux", "arm", "v7"));
    expect(arm.match(p("linux", "arm", "v6"))).toBe(false);
    expect(onlyPlatform(p("linux", "arm64")).match(p("linux", "arm64", "v8"))).toBe(true);
  });

  it("the host matcher matches the host; allPlatforms matches everything", () => {
    expect(platformMatcher().match(hostPlatform())).toBe(true);
    expect(allPlatforms.match(p("plan9", "mips"))).toBe(true);
    expect(allPlatforms.less(p("linux", "amd64"), p("linux", "arm64"))).toBe(false);
  });
});
