import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { ContentStore } from "@berth/content";
import { createLocalContentStore, Labels, readBlob } from "@berth/content";
import { ErrorCode } from "@berth/errdefs";
import { MediaType, platformMatcher } from "@berth/images";
import type { RegistryHandle } from "@berth/testing";
import { startRegistry } from "@berth/testing";
import type { Dispatcher } from "undici";
import { Agent } from "undici";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { fetchImage } from "./fetch-image.js";
import type { ProgressEvent } from "./progress.js";
import { pushImage } from "./push-image.js";
import { createResolver } from "./resolver.js";
import type { FakeServer } from "./testing/http-server.js";
import { serve } from "./testing/http-server.js";
import { buildImage } from "./testing/images.js";

const exec = promisify(execFile);

/** An undici Agent that logs every request it dispatches, to count registry round trips. */
class CountingAgent extends Agent {
  readonly log: string[] = [];
  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): boolean {
    this.log.push(`${options.method} ${String(options.origin ?? "")}${options.path}`);
    return super.dispatch(options, handler);
  }
}

const amd64 = { os: "linux", architecture: "amd64" } as const;
const arm64 = { os: "linux", architecture: "arm64", variant: "v8" } as const;

let registry: RegistryHandle;
let dir: string;
let agent: CountingAgent;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
});
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "berth-remotes-"));
  agent = new CountingAgent();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup();
  await agent.close();
  await rm(dir, { recursive: true, force: true });
});

async function store(name: string): Promise<ContentStore> {
  return createLocalContentStore(join(dir, name));
}

describe("against a real registry", () => {
  it("pushes an image that skopeo reads back, and pulls it into an empty store", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "single" });
    const resolver = createResolver({ dispatcher: agent });
    const ref = `${registry.host}/test/single:v1`;
    const pushed = await pushImage(resolver, src, ref, image.target);
    expect(pushed.blobs.map((d) => d.digest).sort()).toEqual(image.all.map((d) => d.digest).sort());

    const { stdout } = await exec("skopeo", ["inspect", "--raw", "--tls-verify=false", `docker://${ref}`]);
    expect(JSON.parse(stdout).config.digest).toBe(image.configs[0]?.digest);
    const inspected = JSON.parse(
      (await exec("skopeo", ["inspect", "--tls-verify=false", `docker://${ref}`])).stdout,
    ) as { Digest: string; Layers: string[] };
    expect(inspected.Digest).toBe(image.target.digest);
    expect(inspected.Layers).toEqual(image.layers.map((l) => l.digest));

    const resolved = await resolver.resolve(ref);
    expect(resolved).toEqual({ name: ref, descriptor: image.target });

    // The distribution source label is recorded on pushed blobs.
    const info = await src.info(image.layers[0]?.digest as string);
    expect(info.labels[`${Labels.DistributionSource}.${registry.host}`]).toBe("test/single");

    const dst = await store("dst");
    const events: ProgressEvent[] = [];
    const pulled = await fetchImage(resolver, dst, ref, { onProgress: (e) => events.push(e) });
    expect(pulled.target).toEqual(image.target);
    for (const d of image.all) {
      expect(Buffer.from(await readBlob(dst, d.digest))).toEqual(Buffer.from(await readBlob(src, d.digest)));
    }
    // Children come before their parent.
    expect(pulled.blobs.at(-1)?.digest).toBe(image.target.digest);
    const manifestInfo = await dst.info(image.target.digest);
    expect(manifestInfo.labels[`${Labels.GcRefContent}.config`]).toBe(image.configs[0]?.digest);
    expect(manifestInfo.labels[`${Labels.GcRefContent}.l.1`]).toBe(image.layers[0]?.digest);
    expect(manifestInfo.labels[`${Labels.DistributionSource}.${registry.host}`]).toBe("test/single");
    expect(events[0]?.kind).toBe("resolving");
    expect(events.filter((e) => e.kind === "done").length).toBe(image.all.length);

    // Pulling again transfers nothing: only the resolve request reaches the registry.
    agent.log.length = 0;
    const again: ProgressEvent[] = [];
    await fetchImage(resolver, dst, ref, { onProgress: (e) => again.push(e) });
    expect(agent.log).toEqual([`HEAD ${registry.url}/v2/test/single/manifests/v1`]);
    expect(again.filter((e) => e.kind === "exists").length).toBe(image.all.length);
  });

  it("pushes a two-platform index with chunked uploads; skopeo copies it with the same digests", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "multi", platforms: [amd64, arm64], bigFile: 300_000 });
    const resolver = createResolver({ dispatcher: agent });
    const ref = `${registry.host}/test/multi:latest`;
    await pushImage(resolver, src, ref, image.target, { chunkThreshold: 100_000, chunkSize: 64 * 1024 });
    expect(agent.log.some((l) => l.startsWith("PATCH "))).toBe(true);

    const layout = join(dir, "layout");
    await exec("skopeo", ["copy", "--all", "--src-tls-verify=false", `docker://${ref}`, `oci:${layout}:x`]);
    const index = JSON.parse(await readFile(join(layout, "index.json"), "utf8")) as {
      manifests: { digest: string }[];
    };
    expect(index.manifests[0]?.digest).toBe(image.target.digest);
    for (const d of image.all) {
      const hex = d.digest.slice("sha256:".length);
      const copied = await readFile(join(layout, "blobs", "sha256", hex));
      expect(copied.length).toBe(d.size);
    }

    // Host platform only: the index, one manifest, its config and layers.
    const dst = await store("dst");
    const pulled = await fetchImage(resolver, dst, ref, { platform: platformMatcher(arm64) });
    const want = [image.target, image.manifests[1], image.configs[1], image.layers[0], image.layers[2]];
    expect(pulled.blobs.map((d) => d.digest).sort()).toEqual(want.map((d) => d?.digest).sort());
    await expect(dst.info(image.manifests[0]?.digest as string)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
    });
    const indexInfo = await dst.info(image.target.digest);
    expect(indexInfo.labels[`${Labels.GcRefContent}.m.0`]).toBe(image.manifests[1]?.digest);

    // All platforms afterwards fetches only what is missing.
    agent.log.length = 0;
    const all = await fetchImage(resolver, dst, ref, { allPlatforms: true });
    expect(all.blobs.length).toBe(image.all.length);
    const fetched = agent.log.filter((l) => l.startsWith("GET "));
    expect(fetched.length).toBe(3); // amd64 manifest, config and own layer
  });

  it("mounts blobs across repositories of the same registry", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "mount" });
    const resolver = createResolver({ dispatcher: agent });
    await pushImage(resolver, src, `${registry.host}/test/mount-a:v1`, image.target);
    const events: ProgressEvent[] = [];
    agent.log.length = 0;
    await pushImage(resolver, src, `${registry.host}/test/mount-b:v1`, image.target, {
      onProgress: (e) => events.push(e),
    });
    expect(events.filter((e) => e.kind === "mounted").length).toBe(
      image.layers.length + image.configs.length,
    );
    expect(agent.log.some((l) => l.includes("mount=") && l.includes("from=test%2Fmount-a"))).toBe(true);
    expect(agent.log.some((l) => l.startsWith("PUT ") && l.includes("/blobs/uploads/"))).toBe(false);
    const info = await src.info(image.layers[0]?.digest as string);
    expect(info.labels[`${Labels.DistributionSource}.${registry.host}`]).toBe("test/mount-a,test/mount-b");
    const { stdout } = await exec("skopeo", [
      "inspect",
      "--tls-verify=false",
      `docker://${registry.host}/test/mount-b:v1`,
    ]);
    expect(JSON.parse(stdout).Digest).toBe(image.target.digest);
  });

  it("resolves a missing tag to not-found and rejects invalid references", async () => {
    const resolver = createResolver({ dispatcher: agent });
    await expect(resolver.resolve(`${registry.host}/test/none:nope`)).rejects.toMatchObject({
      code: ErrorCode.NotFound,
      message: expect.stringContaining(`${registry.host}/test/none:nope`),
    });
    await expect(resolver.resolve(`${registry.host}/Bad//Name:x`)).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
    await expect(fetchImage(resolver, await store("x"), "a:b:c:d")).rejects.toMatchObject({
      code: ErrorCode.InvalidArgument,
    });
  });

  it("resolves by digest and fetches through a mirror that lacks the image", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "mirror" });
    const resolver = createResolver({ dispatcher: agent });
    await pushImage(resolver, src, `${registry.host}/test/mirror:v1`, image.target);
    const mirror: FakeServer = await serve((_req, res) => {
      res.writeHead(404).end();
    });
    cleanups.push(() => mirror.close());
    const viaMirror = createResolver({ dispatcher: agent, mirrors: { [registry.host]: [mirror.url] } });
    const byDigest = `${registry.host}/test/mirror@${image.target.digest}`;
    const resolved = await viaMirror.resolve(byDigest);
    expect(resolved.descriptor.digest).toBe(image.target.digest);
    const dst = await store("dst");
    await fetchImage(viaMirror, dst, byDigest);
    expect((await dst.info(image.layers[1]?.digest as string)).size).toBe(image.layers[1]?.size);
    expect(mirror.requests.length).toBeGreaterThan(0);
    expect(mirror.requests.every((r) => r.url.includes(`ns=${encodeURIComponent(registry.host)}`))).toBe(
      true,
    );
  });
});

describe("against a real registry with authentication", () => {
  let basic: RegistryHandle;
  let token: RegistryHandle;
  beforeAll(async () => {
    [basic, token] = await Promise.all([startRegistry({ auth: "basic" }), startRegistry({ auth: "token" })]);
  });
  afterAll(async () => {
    await Promise.all([basic?.stop(), token?.stop()]);
  });

  it("uses basic credentials, and fails unauthenticated without them", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "basic" });
    const ref = `${basic.host}/test/basic:v1`;
    const anonymous = createResolver({ dispatcher: agent });
    await expect(pushImage(anonymous, src, ref, image.target)).rejects.toMatchObject({
      code: ErrorCode.Unauthenticated,
    });
    const credentials = async (host: string) =>
      host === basic.host
        ? { username: basic.username as string, password: basic.password as string }
        : undefined;
    const resolver = createResolver({ dispatcher: agent, credentials });
    await pushImage(resolver, src, ref, image.target);
    const dst = await store("dst");
    const pulled = await fetchImage(resolver, dst, ref);
    expect(pulled.target.digest).toBe(image.target.digest);
    const wrong = createResolver({
      dispatcher: agent,
      credentials: async () => ({ username: "berth", password: "wrong" }),
    });
    await expect(wrong.resolve(ref)).rejects.toMatchObject({ code: ErrorCode.Unauthenticated });
  });

  it("runs the bearer token flow with push and pull scopes", async () => {
    const src = await store("src");
    const image = await buildImage(src, { seed: "token", platforms: [amd64, arm64] });
    const ref = `${token.host}/test/token:v1`;
    const credentials = async () => ({
      username: token.username as string,
      password: token.password as string,
    });
    const resolver = createResolver({ dispatcher: agent, credentials });
    await pushImage(resolver, src, ref, image.target);
    const afterPush = token.tokenServer?.requests() ?? 0;
    // One token for the push scope; one more for the pull scope at most once per scope set.
    expect(afterPush).toBeLessThanOrEqual(2);
    const dst = await store("dst");
    await fetchImage(resolver, dst, ref, { allPlatforms: true });
    expect((token.tokenServer?.requests() ?? 0) - afterPush).toBe(1);
    const { stdout } = await exec("skopeo", [
      "inspect",
      "--raw",
      "--tls-verify=false",
      `--creds=${token.username}:${token.password}`,
      `docker://${ref}`,
    ]);
    expect(JSON.parse(stdout).mediaType).toBe(MediaType.OciIndex);
    const anonymous = createResolver({ dispatcher: agent });
    await expect(anonymous.resolve(ref)).rejects.toMatchObject({ code: ErrorCode.Unauthenticated });
  });
});
