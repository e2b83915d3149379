import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  cpSync,
  createReadStream,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  buildFixtureImages,
  FIXTURE_NAMES,
  type Fixture,
  MediaType,
  REF_NAME_ANNOTATION,
  requiresCommand,
  requiresRoot,
} from "@berth/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { applyLayer } from "./apply.js";
import { compareTrees, snapshotTree } from "./apply-tree-compare.js";
import { compressionOfMediaType } from "./compression.js";

const enabled =
  requiresRoot("unpack vs umoci oracle (owners)") &&
  requiresCommand("umoci", "unpack vs umoci oracle") &&
  requiresCommand("zstd", "unpack vs umoci oracle");

function blobPath(layoutDir: string, digest: string): string {
  return join(layoutDir, "blobs", "sha256", digest.slice("sha256:".length));
}

function sha256(data: Buffer): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

/**
 * A copy of the fixture's layout that umoci 0.4.7 can unpack: it reads neither image indexes
 * with several platforms, nor Docker schema 2 manifests, nor zstd layers. The copy's index.json
 * names one OCI manifest with the same layer contents (a zstd layer decompressed to a plain tar),
 * so the tree umoci makes is the tree the original image describes.
 */
function umociLayout(fixture: Fixture, dir: string): string {
  const layout = join(dir, `layout-${fixture.name}`);
  cpSync(fixture.layoutDir, layout, { recursive: true });
  const writeBlob = (data: Buffer): string => {
    const digest = sha256(data);
    writeFileSync(blobPath(layout, digest), data);
    return digest;
  };
  const manifest = JSON.parse(readFileSync(blobPath(layout, fixture.manifestDigest), "utf8")) as {
    config: { digest: string; size: number };
    layers: { mediaType: string; digest: string; size: number }[];
  };
  const layers = manifest.layers.map((layer) => {
    if (layer.mediaType !== MediaType.ociLayerZstd) {
      return {
        ...layer,
        mediaType: layer.mediaType === MediaType.dockerLayerGzip ? MediaType.ociLayerGzip : layer.mediaType,
      };
    }
    const tar = spawnSync("zstd", ["-d", "-c", "-q", blobPath(layout, layer.digest)], {
      maxBuffer: 1 << 30,
    }).stdout;
    return { mediaType: MediaType.ociLayer, digest: writeBlob(tar), size: tar.length };
  });
  const ociManifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: manifest.config.digest, size: manifest.config.size },
      layers,
    }),
  );
  const digest = writeBlob(ociManifest);
  writeFileSync(
    join(layout, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MediaType.ociManifest,
          digest,
          size: ociManifest.length,
          annotations: { [REF_NAME_ANNOTATION]: fixture.tag },
        },
      ],
    }),
  );
  return layout;
}

describe.runIf(enabled)("applyLayer matches umoci unpack on the fixture images", () => {
  let dir: string;
  let fixtures: Awaited<ReturnType<typeof buildFixtureImages>>;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "berth-oracle-"));
    fixtures = await buildFixtureImages();
  });

  afterAll(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  for (const name of FIXTURE_NAMES) {
    it(name, async () => {
      const fixture = fixtures[name];
      const root = join(dir, `berth-${name}`);
      mkdirSync(root);
      for (const [i, digest] of fixture.layerDigests.entries()) {
        const result = await applyLayer(root, createReadStream(blobPath(fixture.layoutDir, digest)), {
          compression: compressionOfMediaType(fixture.layerMediaTypes[i] as string),
          whiteouts: "oci",
          expectedDiffId: fixture.diffIds[i] as string,
        });
        expect(result.diffId).toBe(fixture.diffIds[i]);
      }

      const bundle = join(dir, `umoci-${name}`);
      const umoci = spawnSync(
        "umoci",
        ["unpack", "--image", `${umociLayout(fixture, dir)}:${fixture.tag}`, bundle],
        {
          encoding: "utf8",
        },
      );
      expect(umoci.status, umoci.stderr).toBe(0);

      const expected = snapshotTree(join(bundle, "rootfs"));
      expect(expected.size).toBeGreaterThan(10);
      expect(compareTrees(expected, snapshotTree(root))).toEqual([]);
    });
  }
});
