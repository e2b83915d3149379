import { digestOf } from "@berth/content";
import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { namespacedContentStore } from "./content-store.js";
import { openMetadata } from "./open-metadata.js";
import { createFixture, type Fixture, put } from "./testing/fixtures.js";
import type { ImageStore } from "./types.js";

const manifest = "application/vnd.oci.image.manifest.v1+json";
const index = "application/vnd.oci.image.index.v1+json";
const d = (c: string) => `sha256:${c.repeat(64)}`;

describe("image store", () => {
  let fx: Fixture;
  let images: ImageStore;
  beforeEach(async () => {
    fx = await createFixture();
    images = fx.meta.images("default");
  });
  afterEach(() => fx.cleanup());

  it("creates, gets, lists and deletes images", async () => {
    const created = await images.create({
      name: "docker.io/library/busybox:latest",
      target: { mediaType: index, digest: d("a"), size: 100, annotations: { x: "y" } },
      labels: { owner: "me" },
    });
    expect(created.createdAt.getTime()).toBe(created.updatedAt.getTime());
    expect(await images.get("docker.io/library/busybox:latest")).toEqual(created);
    expect(created.target.annotations).toEqual({ x: "y" });
    await expect(
      images.create({ name: "docker.io/library/busybox:latest", target: created.target }),
    ).rejects.toSatisfy(isAlreadyExists);
    await images.create({ name: "a", target: { mediaType: manifest, digest: d("b"), size: 1 } });
    expect((await images.list()).map((i) => i.name)).toEqual(["a", "docker.io/library/busybox:latest"]);
    await images.delete("a");
    await expect(images.get("a")).rejects.toSatisfy(isNotFound);
    await expect(images.delete("a")).rejects.toSatisfy(isNotFound);
  });

  it("keeps namespaces apart", async () => {
    await images.create({ name: "same", target: { mediaType: manifest, digest: d("a"), size: 1 } });
    const other = fx.meta.images("other");
    await expect(other.get("same")).rejects.toSatisfy(isNotFound);
    await other.create({ name: "same", target: { mediaType: index, digest: d("b"), size: 2 } });
    expect((await images.get("same")).target.digest).toBe(d("a"));
    expect((await other.get("same")).target.digest).toBe(d("b"));
  });

  it("rejects an empty name and a malformed target with invalid-argument", async () => {
    const good = { mediaType: manifest, digest: d("a"), size: 1 };
    const bad = [
      { name: "", target: good },
      { name: "x", target: { ...good, digest: "" } },
      { name: "x", target: { ...good, digest: "sha256:abc" } },
      { name: "x", target: { ...good, mediaType: "" } },
      { name: "x", target: { ...good, size: 0 } },
      { name: "x", target: { ...good, size: 1.5 } },
      { name: "x", target: good, labels: { "": "v" } },
      { name: "x", target: good, labels: { k: "v".repeat(5000) } },
    ];
    for (const image of bad) {
      await expect(images.create(image), JSON.stringify(image).slice(0, 80)).rejects.toSatisfy(
        isInvalidArgument,
      );
    }
    await expect(images.update({ name: "", target: good })).rejects.toSatisfy(isInvalidArgument);
  });

  it("updates all fields, or only the listed fieldpaths", async () => {
    const first = await images.create({
      name: "img",
      target: { mediaType: manifest, digest: d("a"), size: 1 },
      labels: { a: "1", b: "2" },
    });
    const newTarget = { mediaType: index, digest: d("c"), size: 3 };
    let updated = await images.update({ name: "img", target: newTarget, labels: { a: "9", c: "3" } }, [
      "labels.a",
      "labels.b",
    ]);
    expect(updated.labels).toEqual({ a: "9" });
    expect(updated.target.digest).toBe(d("a"));
    expect(updated.createdAt).toEqual(first.createdAt);

    updated = await images.update({ name: "img", target: newTarget, labels: {} }, ["target"]);
    expect(updated.target).toEqual(newTarget);
    expect(updated.labels).toEqual({ a: "9" });

    updated = await images.update({ name: "img", target: first.target, labels: { z: "1" } });
    expect(updated).toMatchObject({ target: first.target, labels: { z: "1" } });

    await expect(images.update({ name: "img", target: first.target }, ["name"])).rejects.toSatisfy(
      isInvalidArgument,
    );
    await expect(images.update({ name: "img", target: { ...first.target, size: 0 } })).rejects.toSatisfy(
      isInvalidArgument,
    );
    await expect(images.update({ name: "missing", target: first.target })).rejects.toSatisfy(isNotFound);
  });

  it("lists with containerd filters on name, target and labels", async () => {
    await images.create({
      name: "docker.io/a:1",
      target: { mediaType: index, digest: d("a"), size: 1 },
      labels: { "containerd.io/x": "1" },
    });
    await images.create({ name: "docker.io/b:1", target: { mediaType: manifest, digest: d("b"), size: 1 } });
    await images.create({
      name: "ghcr.io/c:2",
      target: { mediaType: manifest, digest: d("a"), size: 1 },
      labels: { env: "prod" },
    });
    const names = async (...filters: string[]) => (await images.list(filters)).map((i) => i.name);
    expect(await names("name==docker.io/b:1")).toEqual(["docker.io/b:1"]);
    expect(await names(`target.digest==${d("a")}`)).toEqual(["docker.io/a:1", "ghcr.io/c:2"]);
    expect(await names(`target.mediatype==${manifest}`)).toEqual(["docker.io/b:1", "ghcr.io/c:2"]);
    expect(await names('labels."containerd.io/x"')).toEqual(["docker.io/a:1"]);
    expect(await names("labels.env==prod", "name~=^docker.io/b")).toEqual(["docker.io/b:1", "ghcr.io/c:2"]);
    expect(await names(`name~=^docker,target.digest==${d("a")}`)).toEqual(["docker.io/a:1"]);
    await expect(images.list(["name=="])).rejects.toSatisfy(isInvalidArgument);
  });

  it("deletes synchronously: garbage collection runs before delete resolves", async () => {
    const content = namespacedContentStore(fx.meta, fx.backing, "default");
    const digest = await put(content, "manifest bytes");
    await images.create({ name: "img", target: { mediaType: manifest, digest, size: 14 } });
    await images.delete("img", { sync: true });
    await expect(content.info(digest)).rejects.toSatisfy(isNotFound);
    await expect(fx.backing.info(digest)).rejects.toSatisfy(isNotFound);
  });

  it("refuses a sync delete, before deleting, when no content store was configured", async () => {
    await images.create({ name: "img", target: { mediaType: manifest, digest: digestOf("x"), size: 1 } });
    const plain = openMetadata(fx.meta.path);
    try {
      await expect(plain.images("default").delete("img", { sync: true })).rejects.toSatisfy(
        isFailedPrecondition,
      );
      expect((await images.get("img")).name).toBe("img");
    } finally {
      plain.close();
    }
  });
});
