import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { text } from "node:stream/consumers";
import type { ContentStore } from "@berth/content";
import { createLocalContentStore, readBlob } from "@berth/content";
import { ErrorCode } from "@berth/errdefs";
import { MediaType } from "@berth/images";
import { Agent } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { fetchImage } from "./fetch-image.js";
import type { ResolverOptions } from "./resolver.js";
import { createResolver } from "./resolver.js";
import type { FakeHook, FakeImage } from "./testing/fake-registry.js";
import { fakeImage, fakeRegistry } from "./testing/fake-registry.js";
import type { FakeHandler, FakeServer } from "./testing/http-server.js";
import { serve } from "./testing/http-server.js";

let dir: string;
let store: ContentStore;
let agent: Agent;
const servers: FakeServer[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "berth-remotes-broken-"));
  store = await createLocalContentStore(join(dir, "content"));
  agent = new Agent();
});
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
  await agent.close();
  await rm(dir, { recursive: true, force: true });
});

async function registry(image: FakeImage, hook?: FakeHook): Promise<FakeServer> {
  const server = await fakeRegistry({
    blobs: [image.manifest, image.config, image.layer],
    tags: { v1: image.manifest.descriptor.digest },
    ...(hook === undefined ? {} : { hook }),
  });
  servers.push(server);
  return server;
}

async function server(handler: FakeHandler): Promise<FakeServer> {
  const s = await serve(handler);
  servers.push(s);
  return s;
}

function resolver(options: ResolverOptions = {}) {
  return createResolver({ dispatcher: agent, retries: 2, retryDelay: 1, ...options });
}

describe("a registry that misbehaves", () => {
  it("bytes that do not match the digest are data loss, and nothing is stored under it", async () => {
    const image = fakeImage();
    const reg = await registry(image, (req, res, path) => {
      if (
        path?.kind === "blobs" &&
        path.reference === image.layer.descriptor.digest &&
        req.method === "GET"
      ) {
        const wrong = Buffer.from(image.layer.bytes);
        wrong[0] = (wrong[0] ?? 0) ^ 0xff;
        res.writeHead(200, { "content-length": String(wrong.length) }).end(wrong);
        return true;
      }
      return false;
    });
    const err = await fetchImage(resolver(), store, `${reg.host}/bad/bytes:v1`).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: ErrorCode.DataLoss });
    expect((err as Error).message).toContain(image.layer.descriptor.digest);
    expect((err as Error).message).toContain(reg.host);
    await expect(store.info(image.layer.descriptor.digest)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
    // The parent is not committed without its child, and the bad ingest is dropped.
    await expect(store.info(image.manifest.descriptor.digest)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
    expect(await store.listStatuses()).toEqual([]);
  });

  it("a truncated blob fails, and the next pull resumes with a Range request", async () => {
    const image = fakeImage(64 * 1024);
    let broken = true;
    const cut = 10_000;
    const reg = await registry(image, (req, res, path) => {
      if (!broken || path?.kind !== "blobs" || path.reference !== image.layer.descriptor.digest) return false;
      if (req.headers.range !== undefined) {
        res.writeHead(503).end();
        return true;
      }
      res.writeHead(200, { "content-length": String(image.layer.bytes.length) });
      res.write(image.layer.bytes.subarray(0, cut), () => res.destroy());
      return true;
    });
    const r = resolver();
    const ref = `${reg.host}/bad/truncated:v1`;
    await expect(fetchImage(r, store, ref)).rejects.toMatchObject({ code: ErrorCode.Unavailable });
    const statuses = await store.listStatuses();
    expect(statuses.length).toBe(1);
    const offset = statuses[0]?.offset ?? 0;
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThan(image.layer.bytes.length);

    broken = false;
    reg.requests.length = 0;
    await fetchImage(r, store, ref);
    const blobGets = reg.requests.filter((q) => q.url.includes(image.layer.descriptor.digest));
    expect(blobGets.map((q) => q.headers.range)).toEqual([`bytes=${offset}-`]);
    expect(Buffer.from(await readBlob(store, image.layer.descriptor.digest))).toEqual(image.layer.bytes);
    expect(await store.listStatuses()).toEqual([]);
  });

  it("a manifest whose media type contradicts its Content-Type is invalid", async () => {
    const image = fakeImage();
    const reg = await registry(image, (_req, res, path) => {
      if (path?.kind === "manifests") {
        res.writeHead(200, {
          "content-type": MediaType.DockerManifestList,
          "content-length": String(image.manifest.bytes.length),
          "docker-content-digest": image.manifest.descriptor.digest,
        });
        res.end(_req.method === "HEAD" ? undefined : image.manifest.bytes);
        return true;
      }
      return false;
    });
    await expect(fetchImage(resolver(), store, `${reg.host}/bad/type:v1`)).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
    await expect(store.info(image.manifest.descriptor.digest)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
  });

  it("a Content-Type that is no manifest type is invalid", async () => {
    const image = fakeImage();
    const reg = await registry(image, (_req, res, path) => {
      if (path?.kind !== "manifests") return false;
      res.writeHead(200, { "content-type": "text/html", "content-length": "13" }).end("<html></html>");
      return true;
    });
    await expect(resolver().resolve(`${reg.host}/bad/html:v1`)).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
      message: expect.stringContaining("text/html"),
    });
  });

  it("an oversized manifest is resource-exhausted, with or without Content-Length", async () => {
    const image = fakeImage();
    const big = Buffer.alloc(5000, 0x20);
    const reg = await registry(image, (req, res, path) => {
      if (path?.kind !== "manifests") return false;
      if (path.repo === "chunked") {
        // No Content-Length and no digest header: only reading the body reveals the size.
        res.writeHead(200, { "content-type": MediaType.OciManifest, "transfer-encoding": "chunked" });
        res.end(req.method === "HEAD" ? undefined : big);
        return true;
      }
      res.writeHead(200, {
        "content-type": MediaType.OciManifest,
        "content-length": String(big.length),
        "docker-content-digest": image.manifest.descriptor.digest,
      });
      res.end(req.method === "HEAD" ? undefined : big);
      return true;
    });
    const r = resolver({ maxManifestSize: 1024 });
    await expect(r.resolve(`${reg.host}/big:v1`)).rejects.toMatchObject({
      code: ErrorCode.ResourceExhausted,
    });
    await expect(r.resolve(`${reg.host}/chunked:v1`)).rejects.toMatchObject({
      code: ErrorCode.ResourceExhausted,
    });
  });

  it("invalid references are invalid arguments", () => {
    const r = resolver();
    expect(() => r.fetcher("127.0.0.1:5000/UPPER/case:v1")).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument }),
    );
    expect(() => r.pusher("x:tag with space")).toThrow(
      expect.objectContaining({ code: ErrorCode.InvalidArgument }),
    );
  });

  it("a missing manifest is not-found naming the reference", async () => {
    const image = fakeImage();
    const reg = await registry(image);
    await expect(resolver().resolve(`${reg.host}/some/repo:nope`)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
      message: expect.stringContaining(`${reg.host}/some/repo:nope`),
    });
  });

  it("a 401 whose realm is not an http(s) URL is unauthenticated, naming the realm", async () => {
    const reg = await server((_req, res) => {
      res.writeHead(401, { "www-authenticate": 'Bearer realm="ftp://auth.example/token",service="x"' }).end();
    });
    await expect(resolver().resolve(`${reg.host}/a/b:v1`)).rejects.toMatchObject({
      code: ErrorCode.Unauthenticated,
      message: expect.stringContaining("ftp://auth.example/token"),
    });
  });

  it("a failing token endpoint is unauthenticated, naming the realm", async () => {
    const tokens = await server((_req, res) => {
      res.writeHead(500).end("boom");
    });
    const reg = await server((_req, res) => {
      res.writeHead(401, { "www-authenticate": `Bearer realm="${tokens.url}/token",service="svc"` }).end();
    });
    await expect(resolver().resolve(`${reg.host}/a/b:v1`)).rejects.toMatchObject({
      code: ErrorCode.Unauthenticated,
      message: expect.stringContaining(`${tokens.url}/token`),
    });
  });

  it("5xx and 429 answers are retried until success", async () => {
    const image = fakeImage();
    let failures = 0;
    const reg = await registry(image, (_req, res, path) => {
      if (path?.kind === "manifests" && failures < 2) {
        failures++;
        res.writeHead(failures === 1 ? 503 : 429, { "retry-after": "0" }).end();
        return true;
      }
      return false;
    });
    const resolved = await resolver().resolve(`${reg.host}/retry/me:v1`);
    expect(resolved.descriptor).toEqual(image.manifest.descriptor);
    expect(reg.requests.map((q) => q.method)).toEqual(["HEAD", "HEAD", "HEAD"]);
    // With no retries left, a 5xx is unavailable.
    failures = 0;
    await expect(resolver({ retries: 0 }).resolve(`${reg.host}/retry/me:v1`)).rejects.toMatchObject({
      code: ErrorCode.Unavailable,
    });
  });

  it("a reset connection is retried", async () => {
    const image = fakeImage();
    let resets = 0;
    const reg = await registry(image, (req, _res, path) => {
      if (path?.kind === "blobs" && resets === 0) {
        resets++;
        req.socket.destroy();
        return true;
      }
      return false;
    });
    await fetchImage(resolver(), store, `${reg.host}/reset/me:v1`);
    expect(resets).toBe(1);
    expect((await store.info(image.layer.descriptor.digest)).size).toBe(image.layer.bytes.length);
  });

  it("follows a blob redirect to another host without forwarding Authorization", async () => {
    const image = fakeImage();
    const storage = await server((_req, res) => {
      res.writeHead(200, { "content-length": String(image.layer.bytes.length) }).end(image.layer.bytes);
    });
    const reg = await registry(image, (req, res, path) => {
      if (req.headers.authorization !== "Basic dTpw") {
        res.writeHead(401, { "www-authenticate": 'Basic realm="fake"' }).end();
        return true;
      }
      if (path?.kind === "blobs" && path.reference === image.layer.descriptor.digest) {
        res.writeHead(307, { location: `${storage.url}/bucket/layer?sig=abc` }).end();
        return true;
      }
      return false;
    });
    const r = resolver({ credentials: async () => ({ username: "u", password: "p" }) });
    await fetchImage(r, store, `${reg.host}/redirect/me:v1`);
    expect(Buffer.from(await readBlob(store, image.layer.descriptor.digest))).toEqual(image.layer.bytes);
    expect(storage.requests.length).toBe(1);
    expect(storage.requests[0]?.url).toBe("/bucket/layer?sig=abc");
    expect(storage.requests[0]?.headers.authorization).toBeUndefined();
    const layerRequests = reg.requests.filter((q) => q.url.includes(image.layer.descriptor.digest));
    expect(layerRequests.at(-1)?.headers.authorization).toBe("Basic dTpw");
  });
});

describe("the bearer token flow", () => {
  async function tokenSetup(tokenBody: (n: number) => object, accept: (auth: string | undefined) => boolean) {
    const image = fakeImage();
    let issued = 0;
    const tokens = await server((_req, res) => {
      issued++;
      res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(tokenBody(issued)));
    });
    const reg = await registry(image, (req, res) => {
      if (!accept(req.headers.authorization)) {
        res
          .writeHead(401, {
            "www-authenticate": `Bearer realm="${tokens.url}/token",service="fake-registry",scope="repository:x/y:pull"`,
          })
          .end();
        return true;
      }
      return false;
    });
    return { image, tokens, reg };
  }

  it("fetches one token per scope and reuses it for later blob fetches", async () => {
    const { image, tokens, reg } = await tokenSetup(
      () => ({ token: "tok-1", expires_in: 300 }),
      (a) => a === "Bearer tok-1",
    );
    const r = resolver({ credentials: async () => ({ username: "alice", password: "secret" }) });
    const fetcher = r.fetcher(`${reg.host}/x/y:v1`);
    await text(await fetcher.fetch(image.layer.descriptor));
    await text(await fetcher.fetch(image.config.descriptor));
    expect(tokens.requests.length).toBe(1);
    const url = new URL(tokens.requests[0]?.url ?? "", tokens.url);
    expect(url.searchParams.get("service")).toBe("fake-registry");
    expect(url.searchParams.getAll("scope")).toEqual(["repository:x/y:pull"]);
    expect(tokens.requests[0]?.headers.authorization).toBe(
      `Basic ${Buffer.from("alice:secret").toString("base64")}`,
    );
  });

  it("accepts access_token, and refreshes an expired or refused token", async () => {
    let valid = "tok-1";
    const { image, tokens, reg } = await tokenSetup(
      (n) => ({ access_token: `tok-${n}`, expires_in: 300 }),
      (a) => a === `Bearer ${valid}`,
    );
    const r = resolver();
    const fetcher = r.fetcher(`${reg.host}/x/y:v1`);
    await text(await fetcher.fetch(image.layer.descriptor));
    expect(tokens.requests.length).toBe(1);
    // The registry revokes tok-1: the next request's 401 makes the client fetch a new token.
    valid = "tok-2";
    await text(await fetcher.fetch(image.layer.descriptor));
    expect(tokens.requests.length).toBe(2);
    expect(tokens.requests[0]?.headers.authorization).toBeUndefined();
  });

  it("honours a short expires_in by fetching a new token", async () => {
    const { image, tokens, reg } = await tokenSetup(
      (n) => ({ token: `tok-${n}`, expires_in: 1 }),
      (a) => a?.startsWith("Bearer tok-") === true,
    );
    const fetcher = resolver().fetcher(`${reg.host}/x/y:v1`);
    await text(await fetcher.fetch(image.layer.descriptor));
    await text(await fetcher.fetch(image.config.descriptor));
    // A token that expires within the refresh margin is never reused.
    expect(tokens.requests.length).toBe(2);
  });

  it("exchanges an identity token with the OAuth2 refresh-token POST", async () => {
    const { image, tokens, reg } = await tokenSetup(
      () => ({ access_token: "tok-oauth", expires_in: 300 }),
      (a) => a === "Bearer tok-oauth",
    );
    const fetcher = resolver({ credentials: async () => ({ identityToken: "refresh-123" }) }).fetcher(
      `${reg.host}/x/y:v1`,
    );
    await text(await fetcher.fetch(image.config.descriptor));
    expect(tokens.requests[0]?.method).toBe("POST");
    const form = new URLSearchParams(tokens.requests[0]?.body.toString("utf8"));
    expect(form.get("grant_type")).toBe("refresh_token");
    expect(form.get("refresh_token")).toBe("refresh-123");
    expect(form.get("service")).toBe("fake-registry");
    expect(form.get("scope")).toBe("repository:x/y:pull");
  });

  it("a registry that refuses every token is unauthenticated", async () => {
    const { reg } = await tokenSetup(
      () => ({ token: "useless" }),
      () => false,
    );
    await expect(resolver().resolve(`${reg.host}/x/y:v1`)).rejects.toMatchObject({
      code: ErrorCode.Unauthenticated,
    });
  });
});
