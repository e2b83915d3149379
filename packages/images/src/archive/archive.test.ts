import { execFile } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import type { Descriptor } from "@berth/content";
import { isDataLoss, isInvalidArgument, isNotFound, isResourceExhausted } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MediaType } from "../media-types.js";
import { hostPlatform, onlyPlatform } from "../platforms.js";
import {
  type BuiltImage,
  buildBusybox,
  buildImage,
  buildIndex,
  collect,
  makeTar,
  sha256,
  type TempStore,
  tempStore,
} from "../testing/fixtures.js";
import { readJsonBlob } from "../walk.js";
import { exportImages } from "./export.js";
import { importImages } from "./import.js";

const run = promisify(execFile);
const skopeo = (...args: string[]) => run("skopeo", ["--insecure-policy", ...args], { maxBuffer: 64 << 20 });

const name = "127.0.0.1:5000/test/busybox:1.0";
const host = { os: "linux", architecture: hostPlatform().architecture };

let t: TempStore;
let busybox: BuiltImage;

beforeEach(async () => {
  t = await tempStore();
  busybox = await buildBusybox(t.store, host);
});

afterEach(async () => {
  await t.cleanup();
});

async function exportToFile(
  images: Array<{ name: string; target: Descriptor }>,
  file: string,
  options = {},
): Promise<void> {
  await exportImages(t.store, images, createWriteStream(file), options);
}

async function otherStore(): Promise<TempStore> {
  const other = await tempStore();
  cleanups.push(other.cleanup);
  return other;
}
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function expectImageInStore(s: TempStore, image: BuiltImage): Promise<void> {
  for (const d of [image.manifest, image.config, ...image.layers]) {
    expect((await s.store.info(d.digest)).size).toBe(d.size);
  }
  const info = await s.store.info(image.manifest.digest);
  expect(info.labels["containerd.io/gc.ref.content.config"]).toBe(image.config.digest);
  expect(info.labels["containerd.io/gc.ref.content.l.1"]).toBe(image.layers[0]?.digest);
}

describe("exportImages", () => {
  it("writes an OCI archive skopeo reads, deterministically", async () => {
    const file = join(t.dir, "a.tar");
    await exportToFile([{ name, target: busybox.manifest }], file);
    const { stdout } = await skopeo("inspect", `oci-archive:${file}:1.0`);
    const inspected = JSON.parse(stdout);
    expect(inspected.Digest).toBe(busybox.manifest.digest);
    expect(inspected.Layers).toEqual(busybox.layers.map((l) => l.digest));
    expect(inspected.Architecture).toBe(host.architecture);

    const again = join(t.dir, "b.tar");
    await exportToFile([{ name, target: busybox.manifest }], again);
    expect(sha256(await readFile(again))).toBe(sha256(await readFile(file)));

    const { stdout: listing } = await run("tar", ["-tvf", file]);
    const names = listing
      .trim()
      .split("\n")
      .map((l) => l.split(/\s+/).pop());
    expect(names).toEqual([...names].sort());
    expect(names.slice(-3)).toEqual(["index.json", "manifest.json", "oci-layout"]);
    const index = JSON.parse((await run("tar", ["-xOf", file, "index.json"])).stdout);
    expect(index.manifests[0].annotations).toEqual({
      "io.containerd.image.name": name,
      "org.opencontainers.image.ref.name": "1.0",
    });
  });

  it("writes an OCI layout directory umoci reads", async () => {
    const dir = join(t.dir, "layout");
    await exportImages(t.store, [{ name, target: busybox.manifest }], { dir });
    const { stdout: tags } = await run("umoci", ["ls", "--layout", dir]);
    expect(tags.trim()).toBe("1.0");
    const { stdout } = await run("umoci", ["stat", "--image", `${dir}:1.0`, "--json"]);
    expect(JSON.parse(stdout).history).toHaveLength(1);
    expect(await readdir(join(dir, "blobs", "sha256"))).toHaveLength(3);
  });

  it("exports only the selected platforms of an index, the index unchanged", async () => {
    const arm = await buildImage(t.store, [await makeTar([["arm", "arm"]])], {
      os: "linux",
      architecture: "arm64",
    });
    const amd = await buildImage(t.store, [await makeTar([["amd", "amd"]])], {
      os: "linux",
      architecture: "amd64",
    });
    const index = await buildIndex(t.store, [
      { ...arm.manifest, platform: { os: "linux", architecture: "arm64" } },
      { ...amd.manifest, platform: { os: "linux", architecture: "amd64" } },
    ]);
    const dir = join(t.dir, "multi");
    await exportImages(
      t.store,
      [{ name, target: index }],
      { dir },
      { platform: onlyPlatform({ os: "linux", architecture: "arm64" }) },
    );
    const blobs = await readdir(join(dir, "blobs", "sha256"));
    const hex = (d: Descriptor) => d.digest.slice(7);
    expect(blobs.sort()).toEqual([index, arm.manifest, arm.config, ...arm.layers].map(hex).sort());

    // The partial layout imports for the platform it holds, and says what is missing otherwise.
    const other = await otherStore();
    const imported = await importImages(
      other.store,
      { dir },
      { platform: onlyPlatform({ os: "linux", architecture: "arm64" }) },
    );
    expect(imported).toEqual([{ name, target: expect.objectContaining({ digest: index.digest }) }]);
    await expectImageInStore(other, arm);
    expect((await other.store.info(index.digest)).labels).toEqual({
      "containerd.io/gc.ref.content.m.0": arm.manifest.digest,
    });
    const err = await importImages(other.store, { dir }, { allPlatforms: true }).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toContain(amd.manifest.digest);
  });

  it("skips non-distributable layers on request and refuses missing content", async () => {
    const foreignBytes = gzipSync(await makeTar([["f", "licensed"]]));
    const w = await t.store.writer({ ref: "foreign" });
    await w.write(foreignBytes);
    await w.commit(foreignBytes.length);
    const foreign = {
      mediaType: MediaType.DockerLayerForeignGzip,
      digest: sha256(foreignBytes),
      size: foreignBytes.length,
    };
    const manifestJson = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: busybox.config,
        layers: [foreign, ...busybox.layers],
      }),
    );
    const mw = await t.store.writer({ ref: "m" });
    await mw.write(manifestJson);
    await mw.commit(manifestJson.length);
    const target = {
      mediaType: MediaType.OciManifest,
      digest: sha256(manifestJson),
      size: manifestJson.length,
    };
    const dir = join(t.dir, "nd");
    await exportImages(t.store, [{ name, target }], { dir }, { skipNonDistributable: true });
    expect(await readdir(join(dir, "blobs", "sha256"))).not.toContain(foreign.digest.slice(7));

    await t.store.delete(busybox.layers[0]?.digest as string);
    const err = await exportImages(t.store, [{ name, target: busybox.manifest }], {
      dir: join(t.dir, "x"),
    }).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toContain(busybox.layers[0]?.digest);
    await expect(stat(join(t.dir, "x"))).rejects.toThrow();
  });
});

describe("importImages", () => {
  it("round-trips an export (tar and gzip tar) with identical digests and GC labels", async () => {
    const file = join(t.dir, "a.tar");
    await exportToFile(
      [
        { name, target: busybox.manifest },
        { name: "busybox", target: busybox.manifest },
      ],
      file,
    );
    const other = await otherStore();
    const imported = await importImages(other.store, createReadStream(file));
    expect(imported.map((i) => i.name)).toEqual([name, "docker.io/library/busybox:latest"]);
    expect(imported[0]?.target.digest).toBe(busybox.manifest.digest);
    await expectImageInStore(other, busybox);
    expect(await other.store.listStatuses()).toEqual([]);

    const third = await otherStore();
    const gz = gzipSync(await readFile(file));
    const again = await importImages(third.store, Readable.from([gz.subarray(0, 100), gz.subarray(100)]));
    expect(again[0]?.target.digest).toBe(busybox.manifest.digest);
    await expectImageInStore(third, busybox);
  });

  it("imports what skopeo copies into an OCI layout and archive, with the same digests", async () => {
    const file = join(t.dir, "a.tar");
    await exportToFile([{ name, target: busybox.manifest }], file);
    const dir = join(t.dir, "skopeo-oci");
    await skopeo("copy", `oci-archive:${file}:1.0`, `oci:${dir}:v2`);
    const other = await otherStore();
    const fromDir = await importImages(other.store, { dir }, { baseName: "127.0.0.1:5000/copied" });
    expect(fromDir).toEqual([
      {
        name: "127.0.0.1:5000/copied:v2",
        target: expect.objectContaining({ digest: busybox.manifest.digest }),
      },
    ]);
    await expectImageInStore(other, busybox);

    const archive = join(t.dir, "b.tar");
    await skopeo("copy", `oci:${dir}:v2`, `oci-archive:${archive}:v2`);
    const third = await otherStore();
    const unnamed = await importImages(third.store, createReadStream(archive));
    expect(unnamed).toEqual([]);
    await expectImageInStore(third, busybox);
  });

  it("imports a docker-archive made by skopeo, with the layer and config digests skopeo reports", async () => {
    const dir = join(t.dir, "layout");
    await exportImages(t.store, [{ name, target: busybox.manifest }], { dir });
    const file = join(t.dir, "docker.tar");
    await skopeo("copy", `oci:${dir}:1.0`, `docker-archive:${file}:example.com/team/busybox:v1`);
    const inspected = JSON.parse((await skopeo("inspect", `docker-archive:${file}`)).stdout);
    const raw = JSON.parse((await skopeo("inspect", "--raw", `docker-archive:${file}`)).stdout);

    const other = await otherStore();
    const imported = await importImages(other.store, createReadStream(file));
    expect(imported.map((i) => i.name)).toEqual(["example.com/team/busybox:v1"]);
    const target = imported[0]?.target as Descriptor;
    expect(target.mediaType).toBe(MediaType.DockerManifest);
    expect(target.platform).toMatchObject({ os: "linux", architecture: host.architecture });
    const manifest = JSON.parse(Buffer.from(await readJsonBlob(other.store, target)).toString());
    expect(manifest.config.digest).toBe(raw.config.digest);
    expect(manifest.layers.map((l: Descriptor) => l.digest)).toEqual(inspected.Layers);
    expect(manifest.layers.map((l: Descriptor) => l.digest)).toEqual(busybox.diffIds);
    expect((await other.store.info(target.digest)).labels["containerd.io/gc.ref.content.l.1"]).toBe(
      busybox.diffIds[0],
    );

    // Same archive, fresh store: the generated manifest, and so the image digest, is stable.
    const third = await otherStore();
    expect((await importImages(third.store, createReadStream(file)))[0]?.target.digest).toBe(target.digest);
  });

  it("imports a legacy docker save archive with symlinked layers", async () => {
    const layer = await makeTar([["hello", "world"]]);
    const config = Buffer.from(
      JSON.stringify({
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [sha256(layer), sha256(layer)] },
      }),
    );
    const manifest = JSON.stringify([
      { Config: "abc.json", RepoTags: ["hello:1"], Layers: ["l1/layer.tar", "l2/layer.tar"] },
    ]);
    const tar = await makeTar([
      ["abc.json", config],
      ["l1/layer.tar", layer],
      ["l2/layer.tar", "->../l1/layer.tar"],
      ["manifest.json", manifest],
    ]);
    const imported = await importImages(t.store, Readable.from([tar]));
    expect(imported[0]?.name).toBe("docker.io/library/hello:1");
    const m = JSON.parse(
      Buffer.from(await readJsonBlob(t.store, imported[0]?.target as Descriptor)).toString(),
    );
    expect(m).toEqual({
      schemaVersion: 2,
      mediaType: MediaType.DockerManifest,
      config: { mediaType: MediaType.DockerConfig, digest: sha256(config), size: config.length },
      layers: [0, 1].map(() => ({
        mediaType: MediaType.DockerLayer,
        digest: sha256(layer),
        size: layer.length,
      })),
    });

    // The same archive unpacked in a directory.
    const dir = join(t.dir, "unpacked");
    await mkdir(join(dir, "l1"), { recursive: true });
    await mkdir(join(dir, "l2"));
    await writeFile(join(dir, "abc.json"), config);
    await writeFile(join(dir, "l1", "layer.tar"), layer);
    await symlink("../l1/layer.tar", join(dir, "l2", "layer.tar"));
    await writeFile(join(dir, "manifest.json"), manifest);
    const other = await otherStore();
    expect((await importImages(other.store, { dir }))[0]?.target.digest).toBe(imported[0]?.target.digest);
  });
});

describe("hostile archives", () => {
  const layout = Buffer.from('{"imageLayoutVersion":"1.0.0"}');
  const emptyIndex = Buffer.from('{"schemaVersion":2,"manifests":[]}');

  async function rejects(
    entries: Array<[string, Uint8Array | string]>,
    check: (e: unknown) => boolean,
    fragment: string,
  ) {
    const err = await importImages(t.store, Readable.from([await makeTar(entries)])).catch((e: unknown) => e);
    expect(check(err), String(err)).toBe(true);
    expect((err as Error).message).toContain(fragment);
  }

  it("refuses path traversal, absolute paths and links in blobs/", async () => {
    await rejects([["../evil", "x"]], isInvalidArgument, '".."');
    await rejects([["a/../../evil", "x"]], isInvalidArgument, '".."');
    await rejects([["/etc/evil", "x"]], isInvalidArgument, "absolute path");
    await rejects(
      [[`blobs/sha256/${"a".repeat(64)}`, "->/etc/passwd"]],
      isInvalidArgument,
      "links are not allowed under blobs/",
    );
    await rejects([["x", "->../../etc/passwd"]], isInvalidArgument, "escapes the archive");
    await rejects([["l", "->blobs/sha256/aa"]], isInvalidArgument, "links into blobs/");
  });

  it("refuses blobs whose name is not a digest", async () => {
    await rejects([["blobs/sha256/nothex", "x"]], isInvalidArgument, "not blobs/<algorithm>/<hex>");
    await rejects([[`blobs/md5/${"a".repeat(32)}`, "x"]], isInvalidArgument, "valid digest");
  });

  it("refuses a blob whose content does not match its name, storing nothing", async () => {
    const lie = `sha256:${sha256(Buffer.from("truth")).slice(7)}`;
    await rejects(
      [
        [`blobs/sha256/${lie.slice(7)}`, "a lie"],
        ["index.json", emptyIndex],
        ["oci-layout", layout],
      ],
      isDataLoss,
      lie,
    );
    await expect(t.store.info(lie)).rejects.toSatisfy(isNotFound);
    await expect(t.store.info(sha256(Buffer.from("a lie")))).rejects.toSatisfy(isNotFound);
    expect(await t.store.listStatuses()).toEqual([]);
  });

  it("caps index.json and manifest sizes, and rejects duplicates and strange formats", async () => {
    const big = Buffer.from(
      JSON.stringify({ schemaVersion: 2, manifests: [], annotations: { pad: "x".repeat(5 << 20) } }),
    );
    await rejects([["index.json", big]], isResourceExhausted, "index.json");
    await rejects(
      [
        ["index.json", emptyIndex],
        ["./index.json", emptyIndex],
      ],
      isInvalidArgument,
      "more than one index.json",
    );
    await rejects([["hello", "x"]], isInvalidArgument, "neither an OCI image layout");
    await rejects(
      [
        ["index.json", emptyIndex],
        ["oci-layout", '{"imageLayoutVersion":"9"}'],
      ],
      isInvalidArgument,
      "imageLayoutVersion",
    );
    const file = join(t.dir, "a.tar");
    await exportToFile([{ name, target: busybox.manifest }], file);
    const err = await importImages(t.store, createReadStream(file), { maxJsonSize: 100 }).catch(
      (e: unknown) => e,
    );
    expect(isResourceExhausted(err)).toBe(true);
  });

  it("refuses symlinks under blobs/ of a directory layout", async () => {
    const dir = join(t.dir, "layout");
    await exportImages(t.store, [{ name, target: busybox.manifest }], { dir });
    const victim = join(dir, "blobs", "sha256", busybox.config.digest.slice(7));
    const copy = await readFile(victim);
    await writeFile(join(t.dir, "outside"), copy);
    await rm(victim);
    await symlink(join(t.dir, "outside"), victim);
    const other = await otherStore();
    const err = await importImages(other.store, { dir }).catch((e: unknown) => e);
    expect(isInvalidArgument(err), String(err)).toBe(true);
    expect((err as Error).message).toContain("symlink");

    // A symlinked blobs/sha256 directory pointing elsewhere is refused too.
    await rm(join(dir, "blobs", "sha256"), { recursive: true });
    await mkdir(join(t.dir, "elsewhere"));
    await symlink(join(t.dir, "elsewhere"), join(dir, "blobs", "sha256"));
    const err2 = await importImages(other.store, { dir }).catch((e: unknown) => e);
    expect(isInvalidArgument(err2), String(err2)).toBe(true);
    expect((err2 as Error).message).toContain("resolves outside");
  });

  it("exports to and imports from streams of small chunks", async () => {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      highWaterMark: 512,
      write(chunk: Buffer, _enc, done) {
        chunks.push(chunk);
        setImmediate(done);
      },
    });
    await exportImages(t.store, [{ name, target: busybox.manifest }], sink);
    const bytes = Buffer.concat(chunks);
    const pieces = Array.from({ length: Math.ceil(bytes.length / 4099) }, (_, i) =>
      bytes.subarray(i * 4099, (i + 1) * 4099),
    );
    const other = await otherStore();
    expect((await importImages(other.store, Readable.from(pieces)))[0]?.target.digest).toBe(
      busybox.manifest.digest,
    );
    expect(sha256(await collect(Readable.from(pieces)))).toBe(sha256(bytes));
  });
});
