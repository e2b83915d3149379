import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  type ContainerdHandle,
  requiresCommand,
  requiresRoot,
  sharedRegistry,
  startContainerd,
} from "@berth/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { berth } from "./berth.js";

const run = promisify(execFile);

/** Sum of the sizes of every blob in an OCI layout directory. */
function layoutBlobBytes(layoutDir: string): number {
  const dir = join(layoutDir, "blobs", "sha256");
  return readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0);
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

describe("berth images (CLI, embedded)", () => {
  const dirs: string[] = [];
  const tempDir = (prefix: string) => {
    const dir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dir);
    return dir;
  };
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("pulls an image and lists it with its digest and size", async () => {
    const { refs, fixtures } = sharedRegistry();
    const root = tempDir("berth-e2e-");
    const pulled = await berth(root, "images", "pull", "--plain-http", refs.single);
    expect(pulled.stderr).not.toMatch(/berth: /);
    expect(pulled.code).toBe(0);
    expect(pulled.stdout).toContain(fixtures.single.manifestDigest);

    const ls = await berth(root, "images", "ls");
    expect(ls.code).toBe(0);
    const row = ls.stdout.split("\n").find((line) => line.startsWith(refs.single));
    expect(row, ls.stdout).toBeDefined();
    expect(row).toContain(fixtures.single.manifestDigest);
    expect(row).toContain("application/vnd.oci.image.manifest.v1+json");
    expect(row).toContain(formatMiB(layoutBlobBytes(fixtures.single.layoutDir)));

    // Pulling again fetches nothing and leaves the same record.
    const again = await berth(root, "images", "pull", "--plain-http", refs.single);
    expect(again.code).toBe(0);
    expect(again.stderr).not.toMatch(/downloading|: done/);
    expect((await berth(root, "images", "ls", "-q")).stdout.trim()).toBe(refs.single);
  });

  it("round-trips export and import with identical digests, readable by skopeo", async () => {
    const { refs, fixtures } = sharedRegistry();
    const root = tempDir("berth-e2e-");
    expect((await berth(root, "images", "pull", "--plain-http", refs.multiLayer)).code).toBe(0);
    const archive = join(tempDir("berth-e2e-out-"), "image.tar");
    const exported = await berth(root, "images", "export", archive, refs.multiLayer);
    expect(exported.stderr).toBe("");
    expect(exported.code).toBe(0);

    if (requiresCommand("skopeo", "skopeo oracle")) {
      const { stdout } = await run("skopeo", ["inspect", "--raw", `oci-archive:${archive}`]);
      const manifest = JSON.parse(stdout) as { layers: { digest: string }[] };
      expect(manifest.layers.map((l) => l.digest)).toEqual(fixtures.multiLayer.layerDigests);
    }

    const other = tempDir("berth-e2e-");
    const imported = await berth(other, "images", "import", archive);
    expect(imported.stderr).toBe("");
    expect(imported.code).toBe(0);
    expect(imported.stdout).toContain(refs.multiLayer);
    expect(imported.stdout).toContain(fixtures.multiLayer.manifestDigest);
    const before = (await berth(root, "content", "ls", "-q")).stdout.split("\n").filter(Boolean).sort();
    const after = (await berth(other, "content", "ls", "-q")).stdout.split("\n").filter(Boolean).sort();
    expect(after).toEqual(before);
    expect(before).toEqual([...fixtures.multiLayer.blobs].sort());
  });

  it("imports a multi-platform archive keeping the platforms asked for (--platform may come before the source)", async () => {
    const { refs, fixtures } = sharedRegistry();
    const root = tempDir("berth-e2e-");
    const pull = ["images", "pull", "--plain-http", "--all-platforms", "--skip-unpack", refs.multiPlatform];
    expect((await berth(root, ...pull)).code).toBe(0);
    const archive = join(tempDir("berth-e2e-out-"), "all.tar");
    expect((await berth(root, "images", "export", "--all-platforms", archive, refs.multiPlatform)).code).toBe(
      0,
    );
    const manifestOf = (arch: string) =>
      fixtures.multiPlatform.platforms?.find((p) => p.platform.architecture === arch)?.manifestDigest;
    /** The manifests the index keeps (its gc.ref.content.m.* labels) after an import. */
    const kept = async (...args: string[]) => {
      const other = tempDir("berth-e2e-");
      const imported = await berth(other, "images", "import", ...args);
      expect(imported.stderr).toBe("");
      const row = (await berth(other, "content", "ls")).stdout
        .split("\n")
        .find((l) => l.startsWith(fixtures.multiPlatform.indexDigest as string));
      return [...(row ?? "").matchAll(/gc\.ref\.content\.m\.\d+=(sha256:[0-9a-f]{64})/g)].map((m) => m[1]);
    };
    const arm64 = await kept("--platform", "linux/arm64", archive);
    expect(arm64).toContain(manifestOf("arm64"));
    expect(arm64).not.toContain(manifestOf("amd64"));
    const both = await kept("--platform", "linux/arm64", "--platform", "linux/amd64", archive);
    expect(both).toEqual(expect.arrayContaining([manifestOf("arm64"), manifestOf("amd64")]));
    expect((await kept("--all-platforms", archive)).length).toBe(fixtures.multiPlatform.platforms?.length);
  });

  it("pushes to a registry; skopeo copies it back with identical digests", async () => {
    const { host, refs, fixtures } = sharedRegistry();
    const root = tempDir("berth-e2e-");
    expect((await berth(root, "images", "pull", "--plain-http", refs.multiLayer)).code).toBe(0);
    const target = `${host}/e2e/pushed:${process.pid}`;
    const pushed = await berth(root, "images", "push", "--plain-http", target, refs.multiLayer);
    expect(pushed.stderr).not.toMatch(/berth: /);
    expect(pushed.code).toBe(0);
    if (!requiresCommand("skopeo", "skopeo oracle")) return;
    const layout = tempDir("berth-e2e-skopeo-");
    await run("skopeo", [
      "--insecure-policy",
      "copy",
      // Keep layers byte for byte: without it skopeo compresses the fixture's uncompressed layer.
      "--preserve-digests",
      "--src-tls-verify=false",
      `docker://${target}`,
      `oci:${layout}:copy`,
    ]);
    const blobs = readdirSync(join(layout, "blobs", "sha256"))
      .map((hex) => `sha256:${hex}`)
      .sort();
    expect(blobs).toEqual([...fixtures.multiLayer.blobs].sort());
  });

  it("tags, reads content, and removes images with their unshared content", async () => {
    const { refs, fixtures } = sharedRegistry();
    const root = tempDir("berth-e2e-");
    expect((await berth(root, "images", "pull", "--plain-http", refs.single)).code).toBe(0);
    expect((await berth(root, "images", "tag", refs.single, "example.test/copy:1")).code).toBe(0);
    const names = (await berth(root, "images", "ls", "-q")).stdout.trim().split("\n");
    expect(names.sort()).toEqual([refs.single, "example.test/copy:1"].sort());

    const config = await run(process.execPath, [
      new URL("../packages/cli/bin/berth.js", import.meta.url).pathname,
      "--root",
      root,
      "content",
      "get",
      fixtures.single.configDigest,
    ]);
    const parsed = JSON.parse(config.stdout) as { rootfs: { diff_ids: string[] } };
    expect(parsed.rootfs.diff_ids).toEqual(fixtures.single.diffIds);

    // The tag still holds every blob; removing the last name collects them.
    expect((await berth(root, "images", "rm", refs.single)).code).toBe(0);
    expect((await berth(root, "content", "ls", "-q")).stdout.trim().split("\n").sort()).toEqual(
      [...fixtures.single.blobs].sort(),
    );
    expect((await berth(root, "images", "rm", "example.test/copy:1")).code).toBe(0);
    expect((await berth(root, "content", "ls", "-q")).stdout.trim()).toBe("");
  });

  it("reports bad input clearly and stores nothing", async () => {
    const root = tempDir("berth-e2e-");
    const bad = await berth(root, "images", "pull", "--plain-http", "127.0.0.1:1/Not//Valid");
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/invalid reference/);
    const missing = await berth(root, "images", "rm", "no/such:image");
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/not found|not-found/);
    expect((await berth(root, "images", "ls", "-q")).stdout.trim()).toBe("");
  });
});

describe.runIf(
  requiresRoot("containerd comparison") && requiresCommand("containerd", "containerd comparison"),
)("berth vs containerd's ctr", () => {
  let containerd: ContainerdHandle | undefined;
  let root = "";
  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "berth-e2e-ctr-"));
    containerd = await startContainerd();
  });
  afterAll(async () => {
    await containerd?.stop();
    if (root !== "") rmSync(root, { recursive: true, force: true });
  });

  it.each(["single", "multiLayer", "multiPlatform", "dockerV2", "zstd"] as const)(
    "pulling %s stores the same blobs",
    async (name) => {
      const { refs } = sharedRegistry();
      const ctr = containerd as ContainerdHandle;
      await ctr.ctr(
        "--namespace",
        `e2e-${name.toLowerCase()}`,
        "content",
        "fetch",
        "--plain-http",
        refs[name],
      );
      const theirs = (await ctr.ctr("--namespace", `e2e-${name.toLowerCase()}`, "content", "ls", "-q"))
        .split("\n")
        .filter(Boolean)
        .sort();
      const ns = `e2e-${name.toLowerCase()}`;
      expect((await berth(root, "--namespace", ns, "images", "pull", "--plain-http", refs[name])).code).toBe(
        0,
      );
      const ours = (await berth(root, "--namespace", ns, "content", "ls", "-q")).stdout
        .split("\n")
        .filter(Boolean)
        .sort();
      expect(ours).toEqual(theirs);
    },
  );
});
