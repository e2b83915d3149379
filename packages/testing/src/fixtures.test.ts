import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { extract } from "tar-stream";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { run } from "./exec.js";
import { buildFixtureImages, FIXTURE_NAMES, type Fixture, type Fixtures } from "./fixtures.js";
import { MediaType, sha256 } from "./layout.js";
import { skopeoSource } from "./push.js";

const temps: string[] = [];
async function tempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "berth-fixtures-test-"));
  temps.push(dir);
  return dir;
}
afterAll(async () => {
  for (const dir of temps) await rm(dir, { recursive: true, force: true });
});

/** A fixture without its location, for comparing two builds. */
function digestsOf(fixtures: Fixtures): Record<string, Omit<Fixture, "layoutDir">> {
  return Object.fromEntries(
    FIXTURE_NAMES.map((name) => {
      const { layoutDir: _dir, ...rest } = fixtures[name];
      return [name, rest];
    }),
  );
}

function blobPath(fixture: Fixture, digest: string): string {
  return join(fixture.layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
}

async function uncompress(fixture: Fixture, index: number): Promise<Buffer> {
  const blob = await readFile(blobPath(fixture, fixture.layerDigests[index] as string));
  const mediaType = fixture.layerMediaTypes[index];
  if (mediaType === MediaType.ociLayerZstd) return (await run("zstd", ["-dc"], { input: blob })).stdout;
  if (mediaType === MediaType.ociLayer) return blob;
  return gunzipSync(blob);
}

async function tarEntries(
  tar: Buffer,
): Promise<Map<string, { type: string; mode: number; linkname?: string }>> {
  const entries = new Map<string, { type: string; mode: number; linkname?: string }>();
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      const { name, type, mode, linkname } = entry.header;
      entries.set(name.replace(/\/$/, ""), {
        type: type ?? "file",
        mode: mode ?? 0,
        ...(linkname ? { linkname } : {}),
      });
      entry.resume();
    }
  })();
  ex.end(tar);
  await done;
  return entries;
}

describe("buildFixtureImages", () => {
  let first: Fixtures;
  let second: Fixtures;

  beforeAll(async () => {
    first = await buildFixtureImages(await tempDir());
    second = await buildFixtureImages(await tempDir());
  });

  test("is deterministic: two builds in two directories give the same digests", () => {
    expect(first.single.layoutDir).not.toBe(second.single.layoutDir);
    expect(digestsOf(second)).toEqual(digestsOf(first));
  });

  test("every blob file hashes to its name, and the fixture lists exactly those blobs", async () => {
    for (const name of FIXTURE_NAMES) {
      const fixture = first[name];
      const files = (await readdir(join(fixture.layoutDir, "blobs", "sha256"))).map((hex) => `sha256:${hex}`);
      expect(files.sort(), name).toEqual([...fixture.blobs]);
      for (const digest of fixture.blobs)
        expect(sha256(await readFile(blobPath(fixture, digest)))).toBe(digest);
    }
  });

  test("diff IDs are the digests of the uncompressed layers and match the config", async () => {
    for (const name of FIXTURE_NAMES) {
      const fixture = first[name];
      const config = JSON.parse(await readFile(blobPath(fixture, fixture.configDigest), "utf8"));
      expect(config.rootfs.diff_ids, name).toEqual(fixture.diffIds);
      for (let i = 0; i < fixture.layerDigests.length; i++) {
        expect(sha256(await uncompress(fixture, i)), `${name} layer ${i}`).toBe(fixture.diffIds[i]);
      }
    }
  });

  test("umoci lists the tag of every layout", async () => {
    for (const name of FIXTURE_NAMES) {
      const { stdout } = await run("umoci", ["ls", "--layout", first[name].layoutDir]);
      expect(stdout.toString().trim().split("\n"), name).toEqual(["latest"]);
    }
  });

  test("skopeo reads every image with the fixture's digests", async () => {
    for (const name of FIXTURE_NAMES) {
      const fixture = first[name];
      const source = await skopeoSource(fixture);
      try {
        const raw = await run("skopeo", ["--insecure-policy", "inspect", "--raw", source.name]);
        expect(sha256(raw.stdout), name).toBe(fixture.indexDigest ?? fixture.manifestDigest);
        const info = JSON.parse(
          (await run("skopeo", ["--insecure-policy", "inspect", source.name])).stdout.toString(),
        );
        // skopeo reports the digest of what the tag points to: the index, for multiPlatform.
        expect(info.Digest, name).toBe(fixture.indexDigest ?? fixture.manifestDigest);
        expect(info.Layers, name).toEqual(fixture.layerDigests);
        expect(info.Os, name).toBe("linux");
      } finally {
        await source.dispose();
      }
    }
  });

  test("multiPlatform holds linux/amd64, linux/arm64/v8 and linux/arm/v7 over the busybox layer", async () => {
    const fixture = first.multiPlatform;
    const index = JSON.parse(await readFile(blobPath(fixture, fixture.indexDigest as string), "utf8"));
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests.map((m: { platform: object }) => m.platform)).toEqual([
      { architecture: "amd64", os: "linux" },
      { architecture: "arm64", os: "linux", variant: "v8" },
      { architecture: "arm", os: "linux", variant: "v7" },
    ]);
    const source = `oci:${fixture.layoutDir}:latest`;
    const armFlags = ["--insecure-policy", "--override-arch", "arm", "--override-variant", "v7", "inspect"];
    const arm = JSON.parse((await run("skopeo", [...armFlags, source])).stdout.toString());
    expect(arm.Architecture).toBe("arm");
    const armConfig = (await run("skopeo", [...armFlags, "--config", "--raw", source])).stdout;
    expect(sha256(armConfig)).toBe(fixture.platforms?.[2]?.configDigest);
    expect(JSON.parse(armConfig.toString())).toMatchObject({
      architecture: "arm",
      variant: "v7",
      os: "linux",
    });
    expect(arm.Layers).toEqual(first.single.layerDigests);
  });

  test("single is busybox with applets, passwd, group, a sticky /tmp and Cmd sh", async () => {
    const fixture = first.single;
    const entries = await tarEntries(await uncompress(fixture, 0));
    expect(entries.get("bin/busybox")).toMatchObject({ type: "file", mode: 0o755 });
    for (const applet of ["sh", "ls", "cat", "echo", "true", "false", "sleep"]) {
      expect(entries.get(`bin/${applet}`)).toMatchObject({ type: "symlink", linkname: "busybox" });
    }
    expect(entries.get("tmp")).toMatchObject({ type: "directory", mode: 0o1777 });
    expect(entries.get("root")).toMatchObject({ type: "directory", mode: 0o700 });
    expect(entries.has("etc/passwd") && entries.has("etc/group")).toBe(true);
    const config = JSON.parse(await readFile(blobPath(fixture, fixture.configDigest), "utf8"));
    expect(config.config.Cmd).toEqual(["sh"]);
    expect(config.os).toBe("linux");
  });

  test("multiLayer has a whiteout, an opaque dir, a hard link, a symlink, a fifo and a plain tar layer", async () => {
    const fixture = first.multiLayer;
    expect(fixture.layerMediaTypes.at(-1)).toBe(MediaType.ociLayer);
    const all = new Map<string, { type: string; mode: number; linkname?: string }>();
    for (let i = 1; i < fixture.layerDigests.length; i++) {
      for (const [path, entry] of await tarEntries(await uncompress(fixture, i))) all.set(path, entry);
    }
    expect(all.has("app/.wh.hello.txt")).toBe(true);
    expect(all.has("opt/replace/.wh..wh..opq")).toBe(true);
    expect(all.get("links/hardlink.txt")).toMatchObject({ type: "link", linkname: "links/file.txt" });
    expect(all.get("links/symlink")).toMatchObject({ type: "symlink", linkname: "file.txt" });
    expect(all.get("links/fifo")).toMatchObject({ type: "fifo" });
  });

  test("dockerV2 and zstd use their media types over the single image's filesystem", async () => {
    expect(first.dockerV2.manifestMediaType).toBe(MediaType.dockerManifest);
    expect(first.dockerV2.layerMediaTypes).toEqual([MediaType.dockerLayerGzip]);
    const manifest = JSON.parse(
      await readFile(blobPath(first.dockerV2, first.dockerV2.manifestDigest), "utf8"),
    );
    expect(manifest.config.mediaType).toBe(MediaType.dockerConfig);
    expect(first.zstd.layerMediaTypes).toEqual([MediaType.ociLayerZstd]);
    expect(first.zstd.diffIds).toEqual(first.single.diffIds);
    expect(first.dockerV2.diffIds).toEqual(first.single.diffIds);
  });

  test("without a directory, builds once into the cache and then reuses it", async () => {
    const saved = process.env.BERTH_FIXTURES_DIR;
    process.env.BERTH_FIXTURES_DIR = await tempDir();
    try {
      const built = await buildFixtureImages();
      const cached = await buildFixtureImages();
      expect(cached).toEqual(built);
      expect(built.single.layoutDir.startsWith(process.env.BERTH_FIXTURES_DIR)).toBe(true);
      expect(digestsOf(built)).toEqual(digestsOf(first));
    } finally {
      if (saved === undefined) delete process.env.BERTH_FIXTURES_DIR;
      else process.env.BERTH_FIXTURES_DIR = saved;
    }
  });
});
