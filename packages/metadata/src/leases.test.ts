import { Labels } from "@berth/content";
import { isAlreadyExists, isInvalidArgument, isNotFound } from "@berth/errdefs";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createFixture, type Fixture } from "./testing/fixtures.js";
import type { LeaseManager, LeaseResourceType } from "./types.js";

const d = (c: string) => `sha256:${c.repeat(64)}`;

describe("leases", () => {
  let fx: Fixture;
  let leases: LeaseManager;
  beforeEach(async () => {
    fx = await createFixture();
    leases = fx.meta.leases("default");
  });
  afterEach(() => fx.cleanup());

  it("creates leases with given or random IDs, labels and an expiry label", async () => {
    const expiresAt = new Date("2030-01-02T03:04:05.000Z");
    const a = await leases.create({ id: "pull-1", labels: { purpose: "pull" }, expiresAt });
    expect(a).toMatchObject({ id: "pull-1", expiresAt });
    expect(a.labels).toEqual({ purpose: "pull", [Labels.GcExpire]: "2030-01-02T03:04:05.000Z" });
    const b = await leases.create({ flat: true });
    expect(b.id).toMatch(/^[a-z0-9]+-[0-9a-f]{12}$/);
    expect(b.labels).toEqual({ [Labels.GcFlat]: "true" });
    expect(b.expiresAt).toBeUndefined();
    await expect(leases.create({ id: "pull-1" })).rejects.toSatisfy(isAlreadyExists);
    await expect(leases.create({ id: "bad/id" })).rejects.toSatisfy(isInvalidArgument);
    // Same ID in another namespace is another lease.
    await fx.meta.leases("other").create({ id: "pull-1" });
  });

  it("lists with filters and deletes", async () => {
    await leases.create({ id: "a", labels: { kind: "pull" } });
    await leases.create({ id: "b", labels: { kind: "unpack" } });
    await leases.create({ id: "c" });
    expect((await leases.list()).map((l) => l.id)).toEqual(["a", "b", "c"]);
    expect((await leases.list(["labels.kind==pull", "id==c"])).map((l) => l.id)).toEqual(["a", "c"]);
    expect((await leases.list(["labels.kind"])).map((l) => l.id)).toEqual(["a", "b"]);
    await leases.delete("b");
    await expect(leases.delete("b")).rejects.toSatisfy(isNotFound);
    expect((await leases.list()).map((l) => l.id)).toEqual(["a", "c"]);
  });

  it("adds, lists and removes resources; deleting the lease drops them", async () => {
    await leases.create({ id: "l" });
    await leases.addResource("l", { type: "content", id: d("b") });
    await leases.addResource("l", { type: "content", id: d("a") });
    await leases.addResource("l", { type: "content", id: d("a") }); // idempotent
    await leases.addResource("l", { type: "ingests", id: "layer-1" });
    await leases.addResource("l", { type: "snapshots/overlayfs", id: "sha256:chain" });
    expect(await leases.listResources("l")).toEqual([
      { type: "content", id: d("a") },
      { type: "content", id: d("b") },
      { type: "ingests", id: "layer-1" },
      { type: "snapshots/overlayfs", id: "sha256:chain" },
    ]);
    await leases.deleteResource("l", { type: "content", id: d("b") });
    await leases.deleteResource("l", { type: "content", id: d("b") });
    expect(await leases.listResources("l")).toHaveLength(3);

    for (const bad of [
      { type: "content" as const, id: "not-a-digest" },
      { type: "images" as LeaseResourceType, id: "x" },
      { type: "snapshots/" as LeaseResourceType, id: "x" },
      { type: "ingests" as const, id: "" },
    ]) {
      await expect(leases.addResource("l", bad), bad.type).rejects.toSatisfy(isInvalidArgument);
    }
    await expect(leases.addResource("missing", { type: "ingests", id: "x" })).rejects.toSatisfy(isNotFound);
    await expect(leases.listResources("missing")).rejects.toSatisfy(isNotFound);
    await expect(leases.deleteResource("missing", { type: "ingests", id: "x" })).rejects.toSatisfy(
      isNotFound,
    );

    await leases.delete("l");
    await leases.create({ id: "l" });
    expect(await leases.listResources("l")).toEqual([]);
  });

  it("withLease deletes the lease after the operation, whether it succeeds or fails", async () => {
    const seen: string[] = [];
    const result = await leases.withLease(async (lease) => {
      seen.push(lease.id);
      expect(lease.expiresAt?.getTime()).toBeGreaterThan(Date.now());
      expect((await leases.list()).map((l) => l.id)).toEqual([lease.id]);
      return 42;
    });
    expect(result).toBe(42);
    expect(await leases.list()).toEqual([]);

    await expect(
      leases.withLease(async (lease) => {
        seen.push(lease.id);
        throw new Error("pull failed");
      }),
    ).rejects.toThrow("pull failed");
    expect(await leases.list()).toEqual([]);

    // The operation may delete its own lease.
    await leases.withLease(async (lease) => leases.delete(lease.id), { id: "self", labels: { a: "b" } });
    expect(seen).toHaveLength(2);
  });
});
