import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCode } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { parseChallenges } from "./auth.js";
import { loadDockerCredentials } from "./docker-config.js";
import { apiHost, defaultHosts } from "./hosts.js";

describe("WWW-Authenticate parsing", () => {
  it("reads a Docker bearer challenge", () => {
    expect(
      parseChallenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push"',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.docker.io/token",
          service: "registry.docker.io",
          scope: "repository:library/busybox:pull,push",
        },
      },
    ]);
  });

  it("reads several challenges, unquoted values and escapes", () => {
    expect(
      parseChallenges('Basic realm="a \\"b\\"", Bearer realm=https://x/t, error=insufficient_scope'),
    ).toEqual([
      { scheme: "basic", params: { realm: 'a "b"' } },
      { scheme: "bearer", params: { realm: "https://x/t", error: "insufficient_scope" } },
    ]);
    expect(parseChallenges("")).toEqual([]);
  });
});

describe("registry hosts", () => {
  it("maps docker.io to registry-1.docker.io over https", () => {
    expect(apiHost("docker.io")).toBe("registry-1.docker.io");
    expect(defaultHosts("docker.io")).toEqual([
      {
        host: "registry-1.docker.io",
        scheme: "https",
        path: "/v2",
        capabilities: ["pull", "resolve", "push"],
      },
    ]);
  });

  it("uses plain HTTP for loopback, insecure and forced hosts", () => {
    for (const host of ["localhost:5000", "127.0.0.1:5000", "[::1]:5000", "localhost"]) {
      expect(defaultHosts(host)[0]?.scheme).toBe("http");
    }
    expect(defaultHosts("reg.example:5000")[0]?.scheme).toBe("https");
    expect(defaultHosts("reg.example:5000", { insecureHosts: ["reg.example:5000"] })[0]?.scheme).toBe("http");
    expect(defaultHosts("reg.example", { plainHttp: true })[0]?.scheme).toBe("http");
  });

  it("puts mirrors first, for pull and resolve only", () => {
    const hosts = defaultHosts("docker.io", {
      mirrors: { "docker.io": ["https://mirror.example/base", "m2:5000"] },
    });
    expect(hosts.map((h) => [h.scheme, h.host, h.path, h.capabilities.join()])).toEqual([
      ["https", "mirror.example", "/base/v2", "pull,resolve"],
      ["https", "m2:5000", "/v2", "pull,resolve"],
      ["https", "registry-1.docker.io", "/v2", "pull,resolve,push"],
    ]);
    expect(() => defaultHosts("docker.io", { mirrors: { "docker.io": ["ftp://x"] } })).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument }),
    );
  });
});

describe("loadDockerCredentials", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "berth-docker-config-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reads auth, username/password and identitytoken entries, with Docker Hub aliases", async () => {
    const path = join(dir, "config.json");
    await writeFile(
      path,
      JSON.stringify({
        auths: {
          "https://index.docker.io/v1/": { auth: Buffer.from("hubuser:hub:pass").toString("base64") },
          "127.0.0.1:5000": { username: "local", password: "pw" },
          "https://ghcr.example/": { identitytoken: "refresh-me" },
          "empty.example": {},
        },
      }),
    );
    const creds = loadDockerCredentials(path);
    expect(await creds("registry-1.docker.io")).toEqual({ username: "hubuser", password: "hub:pass" });
    expect(await creds("docker.io")).toEqual({ username: "hubuser", password: "hub:pass" });
    expect(await creds("127.0.0.1:5000")).toEqual({ username: "local", password: "pw" });
    expect(await creds("ghcr.example")).toEqual({ identityToken: "refresh-me" });
    expect(await creds("empty.example")).toBeUndefined();
    expect(await creds("other.example")).toBeUndefined();
  });

  it("answers undefined without a file, and invalid-argument for a broken one", async () => {
    expect(await loadDockerCredentials(join(dir, "missing.json"))("docker.io")).toBeUndefined();
    const path = join(dir, "bad.json");
    await writeFile(path, "{ not json");
    await expect(loadDockerCredentials(path)("docker.io")).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
    await writeFile(
      path,
      JSON.stringify({ auths: { x: { auth: Buffer.from("nocolon").toString("base64") } } }),
    );
    await expect(loadDockerCredentials(path)("x")).rejects.toMatchObject({ code: ErrorCode.InvalidArgument });
  });

  it("defaults to $DOCKER_CONFIG/config.json", async () => {
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({ auths: { "r.example": { username: "a", password: "b" } } }),
    );
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dir;
    try {
      expect(await loadDockerCredentials()("r.example")).toEqual({ username: "a", password: "b" });
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
    }
  });
});
