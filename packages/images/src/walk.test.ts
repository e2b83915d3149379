import type { Descriptor } from "@berth/content";
import { isDataLoss, isNotFound, isResourceExhausted } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { distributionSourceKey, distributionSourceLabel, gcChildLabels } from "./labels.js";
import { MediaType } from "./media-types.js";
import { allPlatforms, onlyPlatform, platformMatcher } from "./platforms.js";
import {
  type BuiltImage,
  buildImage,
  buildIndex,
  makeTar,
  type TempStore,
  tempStore,
} from "./testing/fixtures.js";
import {
  children,
  childrenOf,
  filterPlatforms,
  imageSize,
  readJsonBlob,
  resolveImage,
  walkImage,
} from "./walk.js";

const amd64 = { os: "linux", architecture: "amd64" } as const;
const arm64 = { os: "linux", architecture: "arm64", variant: "v8" } as const;
const armv7 = { os: "linux", architecture: "arm", variant: "v7" } as const;

let t: TempStore;
let imgAmd: BuiltImage;
let imgArm: BuiltImage;
let imgArm7: BuiltImage;
let index: Descriptor;

beforeEach(async () => {
  t = await tempStore();
  const shared = await makeTar([["etc/os-release", "ID=berth\n"]]);
  imgAmd = await buildImage(t.store, [shared, await makeTar([["bin/amd", "x86"]])], amd64);
  imgArm = await buildImage(t.store, [shared, await makeTar([["bin/arm", "arm64"]])], arm64);
  imgArm7 = await buildImage(t.store, [await makeTar([["bin/arm7", "arm32"]])], armv7);
  index = await buildIndex(t.store, [
    { ...imgArm7.manifest, platform: armv7 },
    { ...imgAmd.manifest, platform: amd64 },
    { ...imgArm.manifest, platform: arm64 },
  ]);
});

afterEach(async () => {
  await t.cleanup();
});

describe("readJsonBlob", () => {
  it("reads and verifies", async () => {
    const bytes = await readJsonBlob(t.store, imgAmd.manifest);
    expect(JSON.parse(Buffer.from(bytes).toString()).config.digest).toBe(imgAmd.config.digest);
  });

  it("enforces the size cap, reports missing blobs and lying descriptors", async () => {
    await expect(readJsonBlob(t.store, imgAmd.manifest, 10)).rejects.toSatisfy(isResourceExhausted);
    await expect(
      readJsonBlob(t.store, { ...imgAmd.manifest, digest: `sha256:${"0".repeat(64)}` }),
    ).rejects.toSatisfy(isNotFound);
    await expect(
      readJsonBlob(t.store, { ...imgAmd.manifest, size: imgAmd.manifest.size - 1 }),
    ).rejects.toSatisfy(isDataLoss);
    const data = { mediaType: MediaType.OciEmpty, digest: `sha256:${"1".repeat(64)}`, size: 2, data: "e30=" };
    await expect(readJsonBlob(t.store, data)).rejects.toSatisfy(isDataLoss);
  });
});

describe("children", () => {
  it("lists manifest children config first, index children in order, nothing for layers", async () => {
    expect(await children(t.store, imgAmd.manifest)).toEqual([imgAmd.config, ...imgAmd.layers]);
    expect((await children(t.store, index)).map((d) => d.digest)).toEqual(
      [imgArm7, imgAmd, imgArm].map((i) => i.manifest.digest),
    );
    expect(await children(t.store, imgAmd.layers[0] as Descriptor)).toEqual([]);
    const bytes = await readJsonBlob(t.store, imgAmd.manifest);
    expect(childrenOf(imgAmd.config, bytes)).toEqual([]);
  });
});

describe("filterPlatforms", () => {
  it("keeps matches best first, platform-less and non-manifest children last", () => {
    const noPlatform = { ...imgAmd.manifest, digest: `sha256:${"e".repeat(64)}` };
    const blob = {
      mediaType: "application/vnd.example",
      digest: `sha256:${"f".repeat(64)}`,
      size: 1,
      platform: { os: "plan9", architecture: "mips" },
    };
    const descs = [
      noPlatform,
      { ...imgArm7.manifest, platform: armv7 },
      blob,
      { ...imgAmd.manifest, platform: amd64 },
      { ...imgArm.manifest, platform: arm64 },
    ];
    const kept = filterPlatforms(descs, platformMatcher(arm64));
    expect(kept.map((d) => d.digest)).toEqual([
      imgArm.manifest.digest,
      imgArm7.manifest.digest,
      blob.digest,
      noPlatform.digest,
    ]);
    expect(filterPlatforms(descs, platformMatcher(arm64), 1).map((d) => d.digest)).toEqual([
      imgArm.manifest.digest,
      blob.digest,
      noPlatform.digest,
    ]);
    expect(filterPlatforms(descs, allPlatforms)).toHaveLength(5);
  });
});

describe("resolveImage", () => {
  it("picks the best manifest of an index", async () => {
    const r = await resolveImage(t.store, index, platformMatcher(arm64));
    expect(r.manifestDesc.digest).toBe(imgArm.manifest.digest);
    expect(r.config.architecture).toBe("arm64");
    expect(r.configDesc).toEqual(imgArm.config);
    expect(r.manifest.layers).toHaveLength(2);
    expect((await resolveImage(t.store, index, platformMatcher(amd64))).manifestDesc.digest).toBe(
      imgAmd.manifest.digest,
    );
  });

  it("checks a bare manifest against its config", async () => {
    expect((await resolveImage(t.store, imgAmd.manifest, platformMatcher(amd64))).config.os).toBe("linux");
    await expect(resolveImage(t.store, imgAmd.manifest, onlyPlatform(arm64))).rejects.toThrow(
      `no manifest for platform linux/arm64/v8 in ${imgAmd.manifest.digest}`,
    );
  });

  it("reports not-found naming the platform and the target", async () => {
    const err = await resolveImage(
      t.store,
      index,
      onlyPlatform({ os: "linux", architecture: "s390x" }),
    ).catch((e: unknown) => e);
    expect(isNotFound(err)).toBe(true);
    expect((err as Error).message).toBe(`no manifest for platform linux/s390x in ${index.digest}`);
  });
});

describe("walkImage / imageSize", () => {
  it("visits each digest once, parents first, filtered by platform", async () => {
    const seen: string[] = [];
    await walkImage(t.store, index, (d) => void seen.push(d.digest), platformMatcher(arm64));
    expect(seen[0]).toBe(index.digest);
    expect(seen).toContain(imgArm7.manifest.digest);
    expect(seen).not.toContain(imgAmd.manifest.digest);
    expect(new Set(seen).size).toBe(seen.length);
    const pruned: string[] = [];
    await walkImage(
      t.store,
      index,
      (d) => {
        pruned.push(d.digest);
        return d.digest !== imgArm.manifest.digest;
      },
      platformMatcher(arm64),
    );
    expect(pruned).not.toContain(imgArm.config.digest);
  });

  it("sums the best platform's content, shared layers once", async () => {
    const sum = (...ds: Descriptor[]) => ds.reduce((n, d) => n + d.size, 0);
    expect(await imageSize(t.store, index, platformMatcher(arm64))).toBe(
      sum(index, imgArm.manifest, imgArm.config, ...imgArm.layers),
    );
    const all = await imageSize(t.store, index, allPlatforms);
    const everything = [
      index,
      ...[imgAmd, imgArm, imgArm7].flatMap((i) => [i.manifest, i.config, ...i.layers]),
    ];
    const unique = new Map(everything.map((d) => [d.digest, d]));
    expect(all).toBe(sum(...unique.values()));
  });
});

describe("labels", () => {
  it("follows containerd's GC label names", () => {
    expect(gcChildLabels(imgAmd.manifest, [imgAmd.config, ...imgAmd.layers])).toEqual({
      "containerd.io/gc.ref.content.config": imgAmd.config.digest,
      "containerd.io/gc.ref.content.l.1": imgAmd.layers[0]?.digest,
      "containerd.io/gc.ref.content.l.2": imgAmd.layers[1]?.digest,
    });
    expect(gcChildLabels(index, [imgAmd.manifest, index])).toEqual({
      "containerd.io/gc.ref.content.m.0": imgAmd.manifest.digest,
      "containerd.io/gc.ref.content.m.1": index.digest,
    });
  });

  it("the stored fixtures carry them", async () => {
    const info = await t.store.info(index.digest);
    expect(info.labels["containerd.io/gc.ref.content.m.2"]).toBe(imgArm.manifest.digest);
  });

  it("builds distribution source labels", () => {
    expect(distributionSourceKey("docker.io")).toBe("containerd.io/distribution.source.docker.io");
    expect(distributionSourceLabel("127.0.0.1:5000", "team/app")).toEqual({
      "containerd.io/distribution.source.127.0.0.1:5000": "team/app",
    });
    expect(distributionSourceLabel("docker.io", "library/a", "library/b,library/a")).toEqual({
      "containerd.io/distribution.source.docker.io": "library/a,library/b",
    });
  });
});
