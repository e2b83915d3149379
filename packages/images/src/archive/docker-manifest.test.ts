import { execFile } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { mkdir, readdir, readFile, rm } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Descriptor, Platform } from "@berth/content";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { hostPlatform, type PlatformMatcher } from "../platforms.js";
import {
  type BuiltImage,
  buildBusybox,
  buildImage,
  buildIndex,
  makeTar,
  type TempStore,
  tempStore,
} from "../testing/fixtures.js";
import { readJsonBlob } from "../walk.js";
import { type DockerManifestEntry, dockerRepoTag } from "./docker-manifest.js";
import { type ExportImagesOptions, type ExportTarget, exportImages } from "./export.js";
import { importImages } from "./import.js";

const run = promisify(execFile);
const skopeo = (...args: string[]) => run("skopeo", ["--insecure-policy", ...args], { maxBuffer: 64 << 20 });

const host: Platform = { os: "linux", architecture: hostPlatform().architecture };
const otherArch = host.architecture === "arm64" ? "amd64" : "arm64";
const name = "127.0.0.1:5000/test/busybox:1.0";

let t: TempStore;
let busybox: BuiltImage;
const cleanups: Array<() => Promise<void>> = [];

beforeEach(async () => {
  t = await tempStore();
  busybox = await buildBusybox(t.store, host);
});

afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
  await t.cleanup();
});

async function otherStore(): Promise<TempStore> {
  const other = await tempStore();
  cleanups.push(other.cleanup);
  return other;
}

async function exportTar(images: ExportTarget[], options: ExportImagesOptions = {}): Promise<string> {
  const file = join(t.dir, `export-${cleanups.length}-${Math.random().toString(16).slice(2)}.tar`);
  await exportImages(t.store, images, createWriteStream(file), options);
  return file;
}

async function tarNames(file: string): Promise<string[]> {
  const { stdout } = await run("tar", ["-tf", file]);
  return stdout.trim().split("\n");
}

async function dockerManifestOf(file: string): Promise<DockerManifestEntry[]> {
  return JSON.parse((await run("tar", ["-xOf", file, "manifest.json"])).stdout) as DockerManifestEntry[];
}

const path = (d: Descriptor) => `blobs/sha256/${d.digest.slice("sha256:".length)}`;

/** A small image for one platform (its layer says which). */
function tiny(platform: Platform): Promise<BuiltImage> {
  return makeTar([["arch", `${platform.os}/${platform.architecture}`]]).then((tar) =>
    buildImage(t.store, [tar], platform),
  );
}

describe("dockerRepoTag", () => {
  it("writes Docker's familiar name:tag and leaves out references with a digest", () => {
    const digest = `sha256:${"a".repeat(64)}`;
    expect(dockerRepoTag("docker.io/library/busybox:latest")).toBe("busybox:latest");
    expect(dockerRepoTag("busybox")).toBe("busybox:latest");
    expect(dockerRepoTag("docker.io/foo/bar:v1")).toBe("foo/bar:v1");
    expect(dockerRepoTag("127.0.0.1:5000/test/busybox:1.0")).toBe("127.0.0.1:5000/test/busybox:1.0");
    expect(dockerRepoTag("localhost/app")).toBe("localhost/app:latest");
    expect(dockerRepoTag(`docker.io/library/busybox@${digest}`)).toBeUndefined();
    expect(dockerRepoTag(`example.com/app:1@${digest}`)).toBeUndefined();
    expect(() => dockerRepoTag("Not/Valid")).toThrow();
  });
});

describe("exportImages: Docker manifest.json", () => {
  it("writes manifest.json naming the layout's own blobs, readable by skopeo's docker-archive", async () => {
    const file = await exportTar([
      { name, target: busybox.manifest },
      { name: "docker.io/library/busybox:latest", target: busybox.manifest },
    ]);
    expect(await dockerManifestOf(file)).toEqual([
      {
        Config: path(busybox.config),
        RepoTags: ["127.0.0.1:5000/test/busybox:1.0", "busybox:latest"],
        Layers: busybox.layers.map(path),
      },
    ]);
    // Every path it names is a blob of the layout, and no blob is stored twice.
    const names = await tarNames(file);
    expect(names).toContain("manifest.json");
    expect(names.filter((n) => n.startsWith("blobs/sha256/") && n.length > 13).sort()).toEqual(
      [busybox.manifest, busybox.config, ...busybox.layers].map(path).sort(),
    );
    expect(names).toEqual([...names].sort());

    // skopeo reads it as a docker archive: the config as stored, the layers by their diff IDs
    // (skopeo decompresses docker-archive layers and names them by uncompressed digest).
    const raw = JSON.parse((await skopeo("inspect", "--raw", `docker-archive:${file}`)).stdout);
    expect(raw.config.digest).toBe(busybox.config.digest);
    const inspected = JSON.parse((await skopeo("inspect", `docker-archive:${file}`)).stdout);
    expect(inspected.Layers).toEqual(busybox.diffIds);
    // The OCI side is unchanged.
    const oci = JSON.parse((await skopeo("inspect", "--raw", `oci-archive:${file}:1.0`)).stdout);
    expect(oci.config.digest).toBe(busybox.config.digest);
  });

  it("resolves an index to the preferred platform's manifest, one entry per index", async () => {
    const mine = await tiny(host);
    const other = await tiny({ os: "linux", architecture: otherArch });
    const index = await buildIndex(t.store, [
      { ...other.manifest, platform: { os: "linux", architecture: otherArch } },
      { ...mine.manifest, platform: host },
    ]);
    const entry = (img: BuiltImage, tags: string[]) => ({
      Config: path(img.config),
      RepoTags: tags,
      Layers: img.layers.map(path),
    });

    // Default: the exact host platform.
    const byDefault = await exportTar([{ name: "example.com/multi:1", target: index }]);
    expect(await dockerManifestOf(byDefault)).toEqual([entry(mine, ["example.com/multi:1"])]);

    // Every platform in the layout, still one manifest.json entry: the host's, as with ctr.
    const all = await exportTar([{ name: "example.com/multi:1", target: index }], { allPlatforms: true });
    expect(await dockerManifestOf(all)).toEqual([entry(mine, ["example.com/multi:1"])]);
    expect(await tarNames(all)).toContain(path(other.config));

    // Several platforms: the matcher's preferred one wins, whatever the index order.
    const preferOther: PlatformMatcher = {
      match: (p) => p.architecture === otherArch || p.architecture === host.architecture,
      less: (a, b) => a.architecture === otherArch && b.architecture !== otherArch,
    };
    const both = await exportTar([{ name: "example.com/multi:1", target: index }], {
      platform: preferOther,
    });
    expect(await dockerManifestOf(both)).toEqual([entry(other, ["example.com/multi:1"])]);

    // The index and its manifest under other names share the entry; a second name of the index is
    // merged too, a digest name only goes to index.json.
    const shared = await exportTar([
      { name: "example.com/multi:1", target: index },
      { name: "example.com/multi:host", target: mine.manifest },
      { name: "example.com/multi:2", target: index },
      { name: `example.com/multi@${index.digest}`, target: index },
      { name: "example.com/multi:1", target: index },
    ]);
    expect(await dockerManifestOf(shared)).toEqual([
      entry(mine, ["example.com/multi:1", "example.com/multi:host", "example.com/multi:2"]),
    ]);
    const indexJson = JSON.parse((await run("tar", ["-xOf", shared, "index.json"])).stdout);
    expect(indexJson.manifests).toHaveLength(5);
  });

  it("lists a manifest given directly whatever its platform, and skips an index with none", async () => {
    const other = await tiny({ os: "linux", architecture: otherArch });
    const index = await buildIndex(t.store, [
      { ...other.manifest, platform: { os: "linux", architecture: otherArch } },
    ]);
    const onlyIndex = await exportTar([{ name: "example.com/other:1", target: index }]);
    expect(await tarNames(onlyIndex)).not.toContain("manifest.json");

    const file = await exportTar([
      { name: "example.com/other:1", target: index },
      { name: "example.com/other:direct", target: other.manifest },
      { name: `example.com/other@${other.manifest.digest}`, target: other.manifest },
    ]);
    expect(await dockerManifestOf(file)).toEqual([
      { Config: path(other.config), RepoTags: ["example.com/other:direct"], Layers: other.layers.map(path) },
    ]);
  });

  it("names a manifest only by digest with empty RepoTags, which skopeo still reads", async () => {
    const file = await exportTar([
      { name: `example.com/app@${busybox.manifest.digest}`, target: busybox.manifest },
    ]);
    expect(await dockerManifestOf(file)).toEqual([
      { Config: path(busybox.config), RepoTags: [], Layers: busybox.layers.map(path) },
    ]);
    const raw = JSON.parse((await skopeo("inspect", "--raw", `docker-archive:${file}`)).stdout);
    expect(raw.config.digest).toBe(busybox.config.digest);
  });

  it("leaves manifest.json out on request, in archives and directories", async () => {
    const file = await exportTar([{ name, target: busybox.manifest }], { skipDockerManifest: true });
    const names = await tarNames(file);
    expect(names).not.toContain("manifest.json");
    expect(names.slice(-2)).toEqual(["index.json", "oci-layout"]);

    const dir = join(t.dir, "layout");
    await exportImages(t.store, [{ name, target: busybox.manifest }], { dir });
    const written = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as DockerManifestEntry[];
    expect(written[0]?.Config).toBe(path(busybox.config));
    // Exporting into the same directory without it removes the earlier one with index.json.
    await exportImages(t.store, [{ name, target: busybox.manifest }], { dir }, { skipDockerManifest: true });
    expect((await readdir(dir)).sort()).toEqual(["blobs", "index.json", "oci-layout"]);
  });

  it("changes nothing berth's importer does: it still reads index.json first", async () => {
    const images = [
      { name, target: busybox.manifest },
      { name: "docker.io/library/busybox:latest", target: busybox.manifest },
    ];
    const withDocker = await exportTar(images);
    const without = await exportTar(images, { skipDockerManifest: true });
    expect(await tarNames(withDocker)).toContain("manifest.json");

    const snapshot = async (file: string) => {
      const s = await otherStore();
      const imported = await importImages(s.store, createReadStream(file));
      const blobs: Array<[string, Record<string, string>]> = [];
      await s.store.walk((info) => {
        blobs.push([info.digest, info.labels]);
      });
      return { imported, blobs: blobs.sort(([a], [b]) => (a < b ? -1 : 1)) };
    };
    const a = await snapshot(withDocker);
    const b = await snapshot(without);
    expect(a).toEqual(b);
    expect(a.imported.map((i) => [i.name, i.target.digest])).toEqual([
      [name, busybox.manifest.digest],
      ["docker.io/library/busybox:latest", busybox.manifest.digest],
    ]);

    // manifest.json also stands on its own: without index.json the archive imports as a docker
    // archive whose layers are the very blobs the layout stores.
    const unpacked = join(t.dir, "unpacked");
    await mkdir(unpacked);
    await run("tar", ["-xf", withDocker, "-C", unpacked]);
    await rm(join(unpacked, "index.json"));
    await rm(join(unpacked, "oci-layout"));
    const s = await otherStore();
    const docker = await importImages(s.store, { dir: unpacked });
    expect(docker.map((i) => i.name)).toEqual([name, "docker.io/library/busybox:latest"]);
    const manifest = JSON.parse(
      Buffer.from(await readJsonBlob(s.store, docker[0]?.target as Descriptor)).toString(),
    );
    expect(manifest.config.digest).toBe(busybox.config.digest);
    expect(manifest.layers.map((l: Descriptor) => l.digest)).toEqual(busybox.layers.map((l) => l.digest));
  });
});
