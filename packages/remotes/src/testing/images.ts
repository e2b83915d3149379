/**
 * Test-only: small OCI images built in a content store (a tar of a few files, gzipped, a config,
 * a manifest per platform and an index), for push and pull tests.
 */
import { createHash, randomBytes } from "node:crypto";
import { gzipSync } from "node:zlib";
import type { ContentStore, Descriptor, Platform } from "@berth/content";
import { writeBlob } from "@berth/content";
import { MediaType } from "@berth/images";

/** A minimal ustar archive of regular files (mode 0644, fixed mtime, root-owned). */
export function tarOf(files: Record<string, Uint8Array | string>): Buffer {
  const blocks: Buffer[] = [];
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === "string" ? Buffer.from(content) : Buffer.from(content);
    const header = Buffer.alloc(512);
    header.write(name, 0, 100, "utf8");
    header.write("0000644\0", 100, "ascii");
    header.write("0000000\0", 108, "ascii");
    header.write("0000000\0", 116, "ascii");
    header.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124, "ascii");
    header.write(`${(1_700_000_000).toString(8).padStart(11, "0")}\0`, 136, "ascii");
    header.write("        ", 148, "ascii");
    header.write("0", 156, "ascii");
    header.write("ustar\0", 257, "ascii");
    header.write("00", 263, "ascii");
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
    blocks.push(header, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Writes bytes to the store and returns their descriptor. */
export async function putBlob(
  store: ContentStore,
  mediaType: string,
  bytes: Uint8Array,
  extra: Partial<Descriptor> = {},
): Promise<Descriptor> {
  const digest = sha256(bytes);
  await writeBlob(store, `test-${digest}`, bytes, { digest, size: bytes.length });
  return { mediaType, digest, size: bytes.length, ...extra };
}

/** What {@link buildImage} made. */
export interface TestImage {
  /** The index (multi-platform) or the manifest (single platform) to push. */
  readonly target: Descriptor;
  readonly manifests: Descriptor[];
  readonly configs: Descriptor[];
  /** Every layer, shared ones once. */
  readonly layers: Descriptor[];
  /** Every descriptor of the image. */
  readonly all: Descriptor[];
}

/** Options of {@link buildImage}. */
export interface BuildImageOptions {
  /** One manifest per platform; more than one makes an index. Default linux/amd64 only. */
  readonly platforms?: readonly Platform[];
  /** A seed that makes the content unique to this image. */
  readonly seed: string;
  /** Size of an extra random (incompressible) file in each platform's own layer. Default 0. */
  readonly bigFile?: number;
  /** Wrap even a single platform in an index. */
  readonly index?: boolean;
}

/**
 * Builds an image in `store`: a base layer shared by all platforms, one layer per platform, a
 * config and a manifest per platform, and an index when there are several platforms.
 */
export async function buildImage(store: ContentStore, options: BuildImageOptions): Promise<TestImage> {
  const platforms = options.platforms ?? [{ os: "linux", architecture: "amd64" }];
  const baseTar = tarOf({
    "etc/os-release": `NAME=berth-test\nSEED=${options.seed}\n`,
    "bin/hello": "#!/bin/sh\necho hi\n",
  });
  const base = await putBlob(store, MediaType.OciLayerGzip, gzipSync(baseTar));
  const manifests: Descriptor[] = [];
  const configs: Descriptor[] = [];
  const layers: Descriptor[] = [base];
  for (const platform of platforms) {
    const files: Record<string, Uint8Array | string> = {
      "etc/platform": `${platform.os}/${platform.architecture}${platform.variant ? `/${platform.variant}` : ""}\n`,
    };
    if (options.bigFile !== undefined && options.bigFile > 0)
      files["data/random.bin"] = randomBytes(options.bigFile);
    const ownTar = tarOf(files);
    const own = await putBlob(store, MediaType.OciLayerGzip, gzipSync(ownTar, { level: 1 }));
    layers.push(own);
    const config = {
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: { Cmd: ["/bin/hello"] },
      rootfs: { type: "layers", diff_ids: [sha256(baseTar), sha256(ownTar)] },
    };
    const configDesc = await putBlob(store, MediaType.OciConfig, Buffer.from(JSON.stringify(config)));
    configs.push(configDesc);
    const manifest = {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: configDesc,
      layers: [base, own],
    };
    manifests.push(
      await putBlob(store, MediaType.OciManifest, Buffer.from(JSON.stringify(manifest)), { platform }),
    );
  }
  let target: Descriptor;
  const isIndex = manifests.length > 1 || options.index === true;
  if (isIndex) {
    const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
    target = await putBlob(store, MediaType.OciIndex, Buffer.from(JSON.stringify(index)));
  } else {
    const only = manifests[0] as Descriptor;
    target = { mediaType: only.mediaType, digest: only.digest, size: only.size };
  }
  return {
    target,
    manifests,
    configs,
    layers,
    all: [...layers, ...configs, ...manifests, ...(isIndex ? [target] : [])],
  };
}
