import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { run } from "./exec.js";
import { buildFixtureImages, type Fixtures } from "./fixtures.js";
import { sha256 } from "./layout.js";
import { pushFixtures } from "./push.js";
import { type RegistryHandle, startRegistry } from "./registry.js";

let fixtures: Fixtures;
let fixturesDir: string;
beforeAll(async () => {
  fixturesDir = await mkdtemp(join(tmpdir(), "berth-registry-test-"));
  fixtures = await buildFixtureImages(fixturesDir);
});
afterAll(async () => {
  await rm(fixturesDir, { recursive: true, force: true });
});

/** `skopeo inspect --raw` of `ref`, with `creds` or explicitly anonymous. */
function inspectRaw(ref: string, creds?: string): Promise<{ stdout: Buffer }> {
  const auth = creds === undefined ? ["--no-creds"] : ["--creds", creds];
  return run("skopeo", ["inspect", "--raw", "--tls-verify=false", ...auth, `docker://${ref}`]);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("startRegistry without auth", () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry();
  });
  afterAll(async () => {
    await registry?.stop();
  });

  test("answers /v2/ on 127.0.0.1 and holds pushed fixtures byte for byte", async () => {
    expect(registry.url).toBe(`http://${registry.host}`);
    const res = await fetch(`${registry.url}/v2/`);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    const refs = await pushFixtures(registry, fixtures);
    const { stdout } = await inspectRaw(refs.multiLayer);
    expect(sha256(stdout)).toBe(fixtures.multiLayer.manifestDigest);
    const blob = await fetch(
      `${registry.url}/v2/fixtures/multi-layer/blobs/${fixtures.multiLayer.layerDigests[1]}`,
    );
    expect(sha256(Buffer.from(await blob.arrayBuffer()))).toBe(fixtures.multiLayer.layerDigests[1]);
  });

  test("has deletes enabled", async () => {
    const refs = await pushFixtures(registry, fixtures, ["single"]);
    const url = `${registry.url}/v2/fixtures/single/manifests/${fixtures.single.manifestDigest}`;
    const res = await fetch(url, { method: "DELETE" });
    expect(res.status).toBe(202);
    await expect(inspectRaw(refs.single)).rejects.toThrow(/manifest unknown/i);
  });
});

describe("startRegistry with basic auth", () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry({ auth: "basic" });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  test("rejects anonymous pulls and accepts its credentials", async () => {
    expect(registry.username).toBeTruthy();
    expect(registry.password).toBeTruthy();
    const anonymous = await fetch(`${registry.url}/v2/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Basic /);
    await anonymous.arrayBuffer();

    const refs = await pushFixtures(registry, fixtures, ["single"]);
    await expect(inspectRaw(refs.single)).rejects.toThrow(/unauthorized|authentication required/i);
    await expect(inspectRaw(refs.single, `${registry.username}:wrong`)).rejects.toThrow();
    const { stdout } = await inspectRaw(refs.single, `${registry.username}:${registry.password}`);
    expect(sha256(stdout)).toBe(fixtures.single.manifestDigest);
  });
});

describe("startRegistry with token auth", () => {
  let registry: RegistryHandle;
  beforeAll(async () => {
    registry = await startRegistry({ auth: "token" });
  });
  afterAll(async () => {
    await registry?.stop();
  });

  test("sends clients to its token server, which issues tokens the registry accepts", async () => {
    const tokenServer = registry.tokenServer;
    if (tokenServer === undefined) throw new Error("token registry without a token server");
    const challenge = await fetch(`${registry.url}/v2/`);
    expect(challenge.status).toBe(401);
    expect(challenge.headers.get("www-authenticate")).toContain(`Bearer realm="${tokenServer.url}"`);
    await challenge.arrayBuffer();
    expect(tokenServer.requests()).toBe(0);

    const refs = await pushFixtures(registry, fixtures, ["multiPlatform"]);
    const creds = `${registry.username}:${registry.password}`;
    const { stdout } = await inspectRaw(refs.multiPlatform, creds);
    expect(sha256(stdout)).toBe(fixtures.multiPlatform.indexDigest);
    expect(tokenServer.requests()).toBeGreaterThanOrEqual(2);

    const before = tokenServer.requests();
    await expect(inspectRaw(refs.multiPlatform)).rejects.toThrow();
    await expect(inspectRaw(refs.multiPlatform, `${registry.username}:wrong`)).rejects.toThrow();
    expect(tokenServer.requests()).toBeGreaterThan(before);
  });

  test("tokens carry the requested scope, audience and issuer, and the registry enforces the scope", async () => {
    const tokenServer = registry.tokenServer;
    if (tokenServer === undefined) throw new Error("token registry without a token server");
    await pushFixtures(registry, fixtures, ["single"]);
    const basic = Buffer.from(`${registry.username}:${registry.password}`).toString("base64");
    const tokenFor = async (scope: string): Promise<string> => {
      const res = await fetch(`${tokenServer.url}?service=berth-test-registry&scope=${scope}`, {
        headers: { Authorization: `Basic ${basic}` },
      });
      expect(res.status).toBe(200);
      return ((await res.json()) as { token: string }).token;
    };
    const token = await tokenFor("repository:fixtures/single:pull,push");
    const [header, claims] = token
      .split(".")
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8")));
    expect(header).toMatchObject({ alg: "RS256", typ: "JWT" });
    expect(header.x5c).toHaveLength(1);
    expect(claims).toMatchObject({
      aud: "berth-test-registry",
      iss: "berth-test-token-issuer",
      sub: registry.username,
      access: [{ type: "repository", name: "fixtures/single", actions: ["pull", "push"] }],
    });
    expect(claims.exp).toBeGreaterThan(claims.iat);

    const tags = (repo: string, bearer: string) =>
      fetch(`${registry.url}/v2/${repo}/tags/list`, { headers: { Authorization: `Bearer ${bearer}` } });
    const granted = await tags("fixtures/single", token);
    expect(granted.status).toBe(200);
    expect(await granted.json()).toEqual({ name: "fixtures/single", tags: ["latest"] });
    const otherRepo = await tags("fixtures/multi-platform", token);
    expect(otherRepo.status).toBe(401);
    await otherRepo.arrayBuffer();
    const forged = `${token.slice(0, token.lastIndexOf(".") + 1)}${Buffer.alloc(256).toString("base64url")}`;
    const rejected = await tags("fixtures/single", forged);
    expect(rejected.status).toBe(401);
    await rejected.arrayBuffer();
  });
});

describe("RegistryHandle.stop", () => {
  test("kills the registry process and removes its temp storage; a caller's storage dir is kept", async () => {
    const storageDir = await mkdtemp(join(tmpdir(), "berth-registry-storage-"));
    try {
      const own = await startRegistry();
      const given = await startRegistry({ storageDir });
      expect(given.storageDir).toBe(storageDir);
      await Promise.all([own.stop(), given.stop()]);
      await own.stop();
      expect(isAlive(own.pid)).toBe(false);
      expect(isAlive(given.pid)).toBe(false);
      expect(existsSync(own.storageDir)).toBe(false);
      expect(existsSync(storageDir)).toBe(true);
    } finally {
      await rm(storageDir, { recursive: true, force: true });
    }
  });
});
