import { isAlreadyExists, isFailedPrecondition, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFixture, type Fixture } from "./testing/fixtures.js";

const target = {
  mediaType: "application/vnd.oci.image.manifest.v1+json",
  digest: `sha256:${"a".repeat(64)}`,
  size: 10,
};

describe("namespaces", () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await createFixture();
  });
  afterEach(() => fx.cleanup());

  it("creates, gets, lists and labels namespaces", async () => {
    const ns = fx.meta.namespaces;
    const created = await ns.create("default", { team: "a" });
    expect(created).toMatchObject({ name: "default", labels: { team: "a" } });
    expect(created.createdAt).toBeInstanceOf(Date);
    await ns.create("k8s.io");
    expect(await ns.list()).toEqual(["default", "k8s.io"]);
    expect(await ns.labels("default")).toEqual({ team: "a" });
    expect(await ns.setLabels("default", { team: "", env: "prod" })).toEqual({ env: "prod" });
    expect((await ns.get("default")).labels).toEqual({ env: "prod" });
    await expect(ns.create("default")).rejects.toSatisfy(isAlreadyExists);
    await expect(ns.get("nope")).rejects.toSatisfy(isNotFound);
    await expect(ns.labels("nope")).rejects.toSatisfy(isNotFound);
  });

  it("validates names like containerd", async () => {
    const ns = fx.meta.namespaces;
    for (const ok of ["a", "default", "k8s.io", "a-b_c.d", "A1", "x".repeat(76)]) {
      await ns.create(ok);
    }
    for (const bad of ["", "-a", "a-", "a..b", "a/b", "a b", "é", "x".repeat(77)]) {
      await expect(ns.create(bad), bad).rejects.toSatisfy(isInvalidArgument);
    }
    expect(() => fx.meta.images("a/b")).toThrow(/namespace/);
  });

  it("creates a namespace implicitly on first write through another store", async () => {
    await fx.meta.images("implicit").create({ name: "img", target });
    await fx.meta.leases("by-lease").create({ id: "l1" });
    await fx.meta.namespaces.setLabels("by-label", { a: "b" });
    expect(await fx.meta.namespaces.list()).toEqual(["by-label", "by-lease", "implicit"]);
    // Reads do not create anything.
    expect(await fx.meta.images("ghost").list()).toEqual([]);
    expect(await fx.meta.namespaces.list()).not.toContain("ghost");
  });

  it("deletes only empty namespaces, naming what is left", async () => {
    const ns = fx.meta.namespaces;
    await expect(ns.delete("none")).rejects.toSatisfy(isNotFound);
    await fx.meta.images("busy").create({ name: "img", target });
    await fx.meta.leases("busy").create({ id: "l1" });
    const err = await ns.delete("busy").catch((e: unknown) => e);
    expect(isFailedPrecondition(err)).toBe(true);
    expect(String(err)).toContain("1 images");
    expect(String(err)).toContain("1 leases");
    await fx.meta.images("busy").delete("img");
    await fx.meta.leases("busy").delete("l1");
    await ns.delete("busy");
    expect(await ns.list()).toEqual([]);
  });
});
