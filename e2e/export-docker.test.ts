/**
 * `berth images export` writes Docker's manifest.json beside the OCI layout, as containerd's
 * exporter does, so `docker load` reads the same archive. Oracles: `ctr images export` of the same
 * images in a private containerd (the manifest.json arrays must agree), skopeo's docker-archive
 * transport, ctr's importer, and berth's own importer.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
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

/** One entry of Docker's manifest.json. */
interface DockerEntry {
  readonly Config: string;
  readonly RepoTags: readonly string[] | null;
  readonly Layers: readonly string[] | null;
}

async function tarListing(file: string): Promise<string[]> {
  return (await run("tar", ["-tf", file], { maxBuffer: 16 << 20 })).stdout.trim().split("\n");
}

/** The archive's manifest.json, or undefined when it has none. */
async function dockerManifest(file: string): Promise<DockerEntry[] | undefined> {
  if (!(await tarListing(file)).includes("manifest.json")) return undefined;
  return JSON.parse((await run("tar", ["-xOf", file, "manifest.json"])).stdout) as DockerEntry[];
}

/**
 * containerd builds manifest.json from a Go map, so the order of entries is undefined: compare
 * them sorted (by their whole content: images with the same config but differently compressed
 * layers share a Config path). Tags within an entry keep the order the images were named in (both
 * tools follow the command line). containerd writes null for an empty list, berth [].
 */
function canonical(entries: readonly DockerEntry[] | undefined) {
  return (entries ?? [])
    .map((e) => ({ Config: e.Config, RepoTags: e.RepoTags ?? [], Layers: e.Layers ?? [] }))
    .map((e) => ({ e, key: JSON.stringify(e) }))
    .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .map(({ e }) => e);
}

const blobsOf = (listing: readonly string[]) =>
  listing.filter((n) => /^blobs\/sha256\/[0-9a-f]{64}$/.test(n)).sort();

const skopeo = (...args: string[]) =>
  run("skopeo", ["--insecure-policy", ...args], { maxBuffer: 64 << 20 }).then((r) => r.stdout);

describe.runIf(
  requiresRoot("ctr export comparison") &&
    requiresCommand("containerd", "ctr export comparison") &&
    requiresCommand("skopeo", "skopeo docker-archive oracle"),
)("berth images export: Docker manifest.json, compared with ctr images export", () => {
  const ns = "e2e-export-docker";
  let containerd: ContainerdHandle | undefined;
  let root = "";
  let out = "";
  let pinned = "";
  let files = 0;
  const ctr = (...args: string[]) => (containerd as ContainerdHandle).ctr("--namespace", ns, ...args);
  const cli = (...args: string[]) => berth(root, "--namespace", ns, ...args);

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), "berth-e2e-export-"));
    out = mkdtempSync(join(tmpdir(), "berth-e2e-export-out-"));
    containerd = await startContainerd();
    const { refs, fixtures } = sharedRegistry();
    for (const [name, ref] of Object.entries(refs)) {
      // Every platform of the index, so that --all-platforms exports have their content.
      const all = name === "multiPlatform" ? ["--all-platforms"] : [];
      await ctr("images", "pull", "--plain-http", ...all, ref);
      const pulled = await cli("images", "pull", "--plain-http", ...all, ref);
      expect(pulled.code, pulled.stderr).toBe(0);
    }
    // Docker Hub names, written in their familiar form, and a digest-only name.
    pinned = `example.com/pinned@${fixtures.single.manifestDigest}`;
    const names = ["docker.io/library/busybox:e2e", "docker.io/team/app:v1", pinned];
    await ctr("images", "tag", refs.single, ...names);
    const tagged = await cli("images", "tag", refs.single, ...names);
    expect(tagged.code, tagged.stderr).toBe(0);
  });

  afterAll(async () => {
    await containerd?.stop();
    for (const dir of [root, out]) if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  /** Exports `refs` with both tools; `flags` go after the arguments (berth's --platform is variadic). */
  async function exportBoth(refs: readonly string[], flags: readonly string[] = [], ctrFlags = flags) {
    files++;
    const ours = join(out, `berth-${files}.tar`);
    const theirs = join(out, `ctr-${files}.tar`);
    const exported = await cli("images", "export", ours, ...refs, ...flags);
    expect(exported.stderr).toBe("");
    expect(exported.code).toBe(0);
    await ctr("images", "export", ...ctrFlags, theirs, ...refs);
    return { ours, theirs };
  }

  const cases = [
    [
      "single, with Docker Hub names",
      ["single"],
      ["docker.io/library/busybox:e2e", "docker.io/team/app:v1"],
      [],
    ],
    ["multiLayer (gzip and uncompressed layers)", ["multiLayer"], [], []],
    ["dockerV2 (Docker media types)", ["dockerV2"], [], []],
    ["zstd (layers as stored)", ["zstd"], [], []],
    ["multiPlatform, host platform", ["multiPlatform"], [], []],
    ["multiPlatform, --all-platforms", ["multiPlatform"], [], ["--all-platforms"]],
  ] as const;

  it.each(cases)(
    "%s: same manifest.json, same blobs, same skopeo view",
    async (_, fixtures, extra, flags) => {
      const { refs } = sharedRegistry();
      const names = [...fixtures.map((f) => refs[f]), ...extra];
      const { ours, theirs } = await exportBoth(names, flags);
      const mine = await dockerManifest(ours);
      expect(mine).toBeDefined();
      expect(canonical(mine)).toEqual(canonical(await dockerManifest(theirs)));
      expect(blobsOf(await tarListing(ours))).toEqual(blobsOf(await tarListing(theirs)));
      // Every path manifest.json names is a blob of the archive itself.
      const listing = new Set(await tarListing(ours));
      for (const e of mine ?? [])
        for (const p of [e.Config, ...(e.Layers ?? [])]) expect(listing.has(p), p).toBe(true);

      // skopeo reads both as docker archives and sees the same config and layers.
      const [a, b] = await Promise.all([
        skopeo("inspect", `docker-archive:${ours}`),
        skopeo("inspect", `docker-archive:${theirs}`),
      ]);
      expect(JSON.parse(a).Layers).toEqual(JSON.parse(b).Layers);
      const [ra, rb] = await Promise.all([
        skopeo("inspect", "--raw", `docker-archive:${ours}`),
        skopeo("inspect", "--raw", `docker-archive:${theirs}`),
      ]);
      expect(JSON.parse(ra).config.digest).toBe(JSON.parse(rb).config.digest);
      expect(`blobs/sha256/${JSON.parse(ra).config.digest.slice(7)}`).toBe(mine?.[0]?.Config);
    },
  );

  it("several platforms requested: the first one requested wins, as with ctr", async () => {
    const { refs, fixtures } = sharedRegistry();
    const { ours, theirs } = await exportBoth(
      [refs.multiPlatform],
      ["--platform", "linux/arm64", "--platform", "linux/amd64"],
    );
    const mine = canonical(await dockerManifest(ours));
    expect(mine).toEqual(canonical(await dockerManifest(theirs)));
    const arm64 = fixtures.multiPlatform.platforms?.find((p) => p.platform.architecture === "arm64");
    expect(mine.map((e) => e.Config)).toEqual([`blobs/sha256/${arm64?.configDigest.slice(7)}`]);
    // Like ctr, export takes exactly the platforms asked for (linux/arm64 does not bring arm/v7).
    expect(blobsOf(await tarListing(ours))).toEqual(blobsOf(await tarListing(theirs)));
  });

  it("several images in one archive: one entry per manifest, in any order", async () => {
    const { refs, fixtures } = sharedRegistry();
    const names = [
      refs.multiPlatform,
      refs.single,
      "docker.io/library/busybox:e2e",
      refs.multiLayer,
      refs.dockerV2,
      refs.zstd,
      "docker.io/team/app:v1",
    ];
    const { ours, theirs } = await exportBoth(names);
    const mine = canonical(await dockerManifest(ours));
    // The index's host manifest can be the very manifest of `single` (same layer and platform):
    // then both share one entry.
    const manifests = new Set(
      (["multiPlatform", "single", "multiLayer", "dockerV2", "zstd"] as const).map(
        (f) => fixtures[f].manifestDigest,
      ),
    );
    expect(mine).toHaveLength(manifests.size);
    expect(mine).toEqual(canonical(await dockerManifest(theirs)));
    expect(mine.find((e) => e.RepoTags.includes("busybox:e2e"))?.RepoTags).toEqual(
      fixtures.multiPlatform.manifestDigest === fixtures.single.manifestDigest
        ? [refs.multiPlatform, refs.single, "busybox:e2e", "team/app:v1"]
        : [refs.single, "busybox:e2e", "team/app:v1"],
    );
  });

  it("an index after a manifest it resolves to: berth merges the tags, ctr keeps only the index's", async () => {
    const { refs, fixtures } = sharedRegistry();
    // Only meaningful when the index's host manifest is single's manifest (true of the fixtures on
    // amd64 and arm64 hosts); otherwise there is nothing shared to merge.
    if (fixtures.multiPlatform.manifestDigest !== fixtures.single.manifestDigest) return;
    const { ours, theirs } = await exportBoth([refs.single, refs.multiPlatform]);
    expect(canonical(await dockerManifest(ours)).map((e) => e.RepoTags)).toEqual([
      [refs.single, refs.multiPlatform],
    ]);
    // containerd replaces the entry when it resolves the index, dropping the earlier tag.
    expect(canonical(await dockerManifest(theirs)).map((e) => e.RepoTags)).toEqual([[refs.multiPlatform]]);
  });

  it("leaves out digest names, which ctr copies and docker load would refuse", async () => {
    const { refs } = sharedRegistry();
    const { ours, theirs } = await exportBoth([refs.single, pinned]);
    const theirsEntries = canonical(await dockerManifest(theirs));
    expect(theirsEntries[0]?.RepoTags).toEqual([refs.single, pinned]);
    const withoutDigests = theirsEntries.map((e) => ({
      ...e,
      RepoTags: e.RepoTags.filter((t) => !t.includes("@")),
    }));
    expect(canonical(await dockerManifest(ours))).toEqual(withoutDigests);
    // index.json still names the image by digest, like ctr's.
    const index = JSON.parse((await run("tar", ["-xOf", ours, "index.json"])).stdout);
    expect(
      index.manifests.map(
        (m: { annotations: Record<string, string> }) => m.annotations["io.containerd.image.name"],
      ),
    ).toContain(pinned);
  });

  it("--skip-docker-manifest leaves it out, like ctr's --skip-manifest-json", async () => {
    const { refs } = sharedRegistry();
    const { ours, theirs } = await exportBoth(
      [refs.multiLayer],
      ["--skip-docker-manifest"],
      ["--skip-manifest-json"],
    );
    expect(await dockerManifest(ours)).toBeUndefined();
    // containerd 1.6 only drops the tags and still writes the file for images that are manifests;
    // later releases leave it out, which is what the option means and what berth does.
    const theirsEntries = await dockerManifest(theirs);
    if (theirsEntries !== undefined) {
      expect(canonical(theirsEntries).map((e) => e.RepoTags)).toEqual([[]]);
    }
    expect(blobsOf(await tarListing(ours))).toEqual(blobsOf(await tarListing(theirs)));
  });

  it("imports the same with or without manifest.json, in berth and in ctr", async () => {
    const { refs, fixtures } = sharedRegistry();
    const names = [refs.multiPlatform, refs.single, "docker.io/library/busybox:e2e"];
    const withFile = join(out, "import-with.tar");
    const withoutFile = join(out, "import-without.tar");
    expect((await cli("images", "export", withFile, ...names)).code).toBe(0);
    expect((await cli("images", "export", withoutFile, ...names, "--skip-docker-manifest")).code).toBe(0);

    const imported = async (file: string) => {
      const other = mkdtempSync(join(tmpdir(), "berth-e2e-export-import-"));
      try {
        const result = await berth(other, "images", "import", file);
        expect(result.stderr).toBe("");
        expect(result.code).toBe(0);
        const content = (await berth(other, "content", "ls", "-q")).stdout.split("\n").filter(Boolean).sort();
        return { images: result.stdout.trim().split("\n"), content };
      } finally {
        rmSync(other, { recursive: true, force: true });
      }
    };
    const a = await imported(withFile);
    expect(a).toEqual(await imported(withoutFile));
    expect(a.images).toEqual([
      `${refs.multiPlatform}\t${fixtures.multiPlatform.indexDigest}`,
      `${refs.single}\t${fixtures.single.manifestDigest}`,
      `docker.io/library/busybox:e2e\t${fixtures.single.manifestDigest}`,
    ]);

    // ctr's importer, given berth's archive, records the same names and targets.
    await (containerd as ContainerdHandle).ctr(
      "--namespace",
      "e2e-export-import",
      "images",
      "import",
      "--no-unpack",
      withFile,
    );
    const listed = (
      await (containerd as ContainerdHandle).ctr("--namespace", "e2e-export-import", "images", "ls")
    )
      .split("\n")
      .slice(1)
      .filter(Boolean)
      .map((line) => line.split(/\s+/).slice(0, 3))
      .map(([name, , digest]) => `${name}\t${digest}`)
      .sort();
    expect(listed).toEqual([...a.images].sort());
  });
});
