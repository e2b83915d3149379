import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { run } from "./exec.js";
import { type FixturePlatform, type LayoutDescriptor, LayoutWriter, MediaType, sha256 } from "./layout.js";
import { buildTar, FIXTURE_MTIME, type TarEntry } from "./tar.js";

/**
 * Bump when anything about how fixtures are built changes (entries, configs, compression), so
 * cached layouts built by older code are not reused.
 */
export const FIXTURE_FORMAT_VERSION = 1;

/** The fixture images {@link buildFixtureImages} makes. */
export const FIXTURE_NAMES = ["single", "multiLayer", "multiPlatform", "dockerV2", "zstd"] as const;

/** The name of one fixture image. */
export type FixtureName = (typeof FIXTURE_NAMES)[number];

/** Repository of each fixture in a registry ({@link pushFixtures}); registry names are lower case. */
export const FIXTURE_REPOSITORIES: Readonly<Record<FixtureName, string>> = {
  single: "fixtures/single",
  multiLayer: "fixtures/multi-layer",
  multiPlatform: "fixtures/multi-platform",
  dockerV2: "fixtures/docker-v2",
  zstd: "fixtures/zstd",
};

/** The tag every fixture carries, in its layout's `index.json` and in a registry. */
export const FIXTURE_TAG = "latest";

/** The busybox-static binary the fixtures are built from (Debian's busybox-static). */
export const BUSYBOX_PATH = "/bin/busybox";

/** One platform's image inside the `multiPlatform` fixture. */
export interface FixturePlatformImage {
  readonly platform: FixturePlatform;
  readonly manifestDigest: string;
  readonly configDigest: string;
}

/**
 * One fixture image: an OCI image layout directory holding exactly that image under
 * {@link Fixture.tag}. All digests are `sha256:<hex>`.
 */
export interface Fixture {
  readonly name: FixtureName;
  /** The OCI layout directory (`oci-layout`, `index.json`, `blobs/sha256/...`). */
  readonly layoutDir: string;
  readonly tag: string;
  /** The image index, for `multiPlatform` only: what the tag points to. */
  readonly indexDigest?: string;
  /**
   * The image manifest the tag points to; for `multiPlatform`, the manifest of the host's
   * platform (linux/amd64 on other hosts).
   */
  readonly manifestDigest: string;
  readonly manifestMediaType: string;
  readonly configDigest: string;
  /** Layer blob digests, in manifest order (compressed digests for compressed layers). */
  readonly layerDigests: readonly string[];
  readonly layerMediaTypes: readonly string[];
  /** Uncompressed layer digests, in order: the config's `rootfs.diff_ids`. */
  readonly diffIds: readonly string[];
  /** Every blob in the layout (index, manifests, configs, layers), sorted. */
  readonly blobs: readonly string[];
  /** For `multiPlatform`: every platform's manifest, in index order. */
  readonly platforms?: readonly FixturePlatformImage[];
}

/** All fixture images, by name. Plain JSON data: it can be passed through vitest's `provide`. */
export type Fixtures = Readonly<Record<FixtureName, Fixture>>;

const FIXTURES_FILE = "fixtures.json";

/** The host's OCI architecture (and variant), named as Go's GOARCH / image-spec do. */
export function hostPlatform(): FixturePlatform {
  const arch: Record<string, string> = {
    x64: "amd64",
    arm64: "arm64",
    arm: "arm",
    ia32: "386",
    ppc64: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
    loong64: "loong64",
  };
  const architecture = arch[process.arch] ?? process.arch;
  return architecture === "arm"
    ? { architecture, os: "linux", variant: "v7" }
    : { architecture, os: "linux" };
}

/**
 * Builds the fixture images (see the README for what each holds) as OCI image layouts, one
 * directory per fixture, from `/bin/busybox`. The output is deterministic: fixed mtimes and owners,
 * sorted tar entries, gzip level 9 and zstd level 9, compact JSON, so the same busybox binary gives
 * the same digests on every run.
 *
 * Without `dir`, the layouts are cached under `<repo>/.fixtures/<busybox sha256>-v<format>/`
 * (`BERTH_FIXTURES_DIR` overrides `<repo>/.fixtures`) and built only when absent; the cache is
 * filled by an atomic rename, so concurrent callers are safe. With `dir`, they are always built
 * into `dir` (created if needed), which the caller owns.
 *
 * Rejects with an `Error` when `/bin/busybox` is missing, `zstd` fails, or the directory cannot be
 * written.
 */
export async function buildFixtureImages(dir?: string): Promise<Fixtures> {
  const busybox = await readFile(BUSYBOX_PATH).catch((cause: unknown) => {
    throw new Error(`fixture images need ${BUSYBOX_PATH} (Debian package busybox-static)`, { cause });
  });
  if (dir !== undefined) {
    await mkdir(dir, { recursive: true });
    return writeFixtures(resolve(dir), busybox);
  }

  const key = `${createHash("sha256").update(busybox).digest("hex").slice(0, 16)}-v${FIXTURE_FORMAT_VERSION}`;
  const cacheRoot = fixturesCacheRoot();
  const cached = join(cacheRoot, key);
  if (existsSync(join(cached, FIXTURES_FILE))) return loadFixtures(cached);

  await mkdir(cacheRoot, { recursive: true });
  const staging = join(cacheRoot, `.tmp-${key}-${randomBytes(6).toString("hex")}`);
  try {
    await mkdir(staging);
    await writeFixtures(staging, busybox);
    try {
      await rename(staging, cached);
    } catch (err) {
      // Another process filled the cache first (rename onto a non-empty directory fails): use it.
      if (!existsSync(join(cached, FIXTURES_FILE))) throw err;
    }
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
  return loadFixtures(cached);
}

function fixturesCacheRoot(): string {
  const override = process.env.BERTH_FIXTURES_DIR;
  if (override !== undefined && override !== "") return resolve(override);
  // The repository root is the nearest ancestor with nx.json, from src/ or dist/ alike.
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "nx.json"))) {
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error("fixture cache: no nx.json above @berth/testing; set BERTH_FIXTURES_DIR");
    dir = parent;
  }
  return join(dir, ".fixtures");
}

/** Reads `fixtures.json` of a fixtures directory; layout paths are stored relative to it. */
async function loadFixtures(dir: string): Promise<Fixtures> {
  const stored = JSON.parse(await readFile(join(dir, FIXTURES_FILE), "utf8")) as Record<FixtureName, Fixture>;
  const out = {} as Record<FixtureName, Fixture>;
  for (const name of FIXTURE_NAMES) {
    const fixture = stored[name];
    out[name] = {
      ...fixture,
      layoutDir: isAbsolute(fixture.layoutDir) ? fixture.layoutDir : join(dir, fixture.layoutDir),
    };
  }
  return out;
}

const BUSYBOX_APPLETS = [
  "cat",
  "chmod",
  "chown",
  "cp",
  "date",
  "dd",
  "echo",
  "env",
  "false",
  "find",
  "grep",
  "head",
  "hostname",
  "id",
  "kill",
  "ln",
  "ls",
  "mkdir",
  "mkfifo",
  "mount",
  "mv",
  "nproc",
  "printf",
  "ps",
  "pwd",
  "readlink",
  "rm",
  "sed",
  "seq",
  "sh",
  "sleep",
  "stat",
  "sync",
  "tail",
  "tee",
  "test",
  "touch",
  "true",
  "umount",
  "uname",
  "wc",
  "whoami",
];

const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

function busyboxEntries(busybox: Buffer): TarEntry[] {
  const dirs = ["bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "var"].map(
    (path): TarEntry => ({ path, type: "directory" }),
  );
  return [
    ...dirs,
    { path: "root", type: "directory", mode: 0o700 },
    { path: "tmp", type: "directory", mode: 0o1777 },
    { path: "bin/busybox", type: "file", mode: 0o755, content: busybox },
    ...BUSYBOX_APPLETS.map(
      (applet): TarEntry => ({ path: `bin/${applet}`, type: "symlink", linkname: "busybox" }),
    ),
    {
      path: "etc/passwd",
      type: "file",
      content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    },
    { path: "etc/group", type: "file", content: "root:x:0:\nnogroup:x:65534:\n" },
  ];
}

/** Layer 2 of multiLayer: plain additions, some of which later layers delete or hide. */
const ADD_ENTRIES: TarEntry[] = [
  { path: "app", type: "directory" },
  { path: "app/hello.txt", type: "file", content: "hello from layer 2\n" },
  { path: "app/keep.txt", type: "file", content: "kept\n" },
  { path: "app/data", type: "directory" },
  { path: "app/data/a.txt", type: "file", content: "a\n" },
  { path: "app/data/b.txt", type: "file", content: "b\n" },
  { path: "opt", type: "directory" },
  { path: "opt/replace", type: "directory" },
  { path: "opt/replace/old.txt", type: "file", content: "hidden by the opaque directory of layer 3\n" },
  { path: "opt/replace/sub", type: "directory" },
  { path: "opt/replace/sub/deep.txt", type: "file", content: "also hidden\n" },
];

/** Layer 3: a whiteout deleting app/hello.txt and an opaque opt/replace with one new file. */
const WHITEOUT_ENTRIES: TarEntry[] = [
  { path: "app", type: "directory" },
  { path: "app/.wh.hello.txt", type: "file" },
  { path: "opt", type: "directory" },
  { path: "opt/replace", type: "directory" },
  { path: "opt/replace/.wh..wh..opq", type: "file" },
  { path: "opt/replace/new.txt", type: "file", content: "the only file left in opt/replace\n" },
];

/** Layer 4: a hard link, relative and absolute symlinks, a fifo, a setuid file and a non-root owner. */
const LINK_ENTRIES: TarEntry[] = [
  { path: "links", type: "directory" },
  { path: "links/file.txt", type: "file", content: "linked content\n" },
  { path: "links/hardlink.txt", type: "link", linkname: "links/file.txt" },
  { path: "links/symlink", type: "symlink", linkname: "file.txt" },
  { path: "links/abs-symlink", type: "symlink", linkname: "/etc/passwd" },
  { path: "links/fifo", type: "fifo", mode: 0o600 },
  { path: "links/setuid", type: "file", mode: 0o4755, content: "#!/bin/sh\n" },
  { path: "links/owned", type: "file", uid: 1000, gid: 1000, mode: 0o640, content: "owned by 1000:1000\n" },
];

/** Layer 5, stored uncompressed. */
const PLAIN_ENTRIES: TarEntry[] = [
  { path: "var", type: "directory" },
  { path: "var/plain", type: "directory", mode: 0o700 },
  { path: "var/plain/file.txt", type: "file", content: "from an uncompressed layer\n" },
];

/** A built layer: its tar's digest (the diff ID) and the compressed blob with its media type. */
interface Layer {
  readonly diffId: string;
  readonly blob: Buffer;
  readonly mediaType: string;
  readonly createdBy: string;
}

function gzipLayer(tar: Buffer, createdBy: string, mediaType: string = MediaType.ociLayerGzip): Layer {
  // Node's gzip header has mtime 0 and no file name, so the output depends only on input and level.
  return { diffId: sha256(tar), blob: gzipSync(tar, { level: 9 }), mediaType, createdBy };
}

function imageConfig(platform: FixturePlatform, layers: readonly Layer[]): object {
  const created = FIXTURE_MTIME.toISOString().replace(".000Z", "Z");
  return {
    created,
    architecture: platform.architecture,
    ...(platform.variant === undefined ? {} : { variant: platform.variant }),
    os: platform.os,
    config: { Env: [PATH_ENV], Cmd: ["sh"], WorkingDir: "/" },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((l) => ({ created, created_by: l.createdBy })),
  };
}

interface WrittenImage {
  readonly manifest: LayoutDescriptor;
  readonly config: LayoutDescriptor;
  readonly layers: readonly LayoutDescriptor[];
}

async function writeImage(
  layout: LayoutWriter,
  platform: FixturePlatform,
  layers: readonly Layer[],
  docker = false,
): Promise<WrittenImage> {
  const config = await layout.json(
    imageConfig(platform, layers),
    docker ? MediaType.dockerConfig : MediaType.ociConfig,
  );
  const layerDescriptors: LayoutDescriptor[] = [];
  for (const layer of layers) layerDescriptors.push(await layout.blob(layer.blob, layer.mediaType));
  const manifestMediaType = docker ? MediaType.dockerManifest : MediaType.ociManifest;
  const manifest = await layout.json(
    { schemaVersion: 2, mediaType: manifestMediaType, config, layers: layerDescriptors },
    manifestMediaType,
  );
  return { manifest, config, layers: layerDescriptors };
}

function fixtureRecord(
  name: FixtureName,
  layoutDir: string,
  layout: LayoutWriter,
  image: WrittenImage,
  layers: readonly Layer[],
): Fixture {
  return {
    name,
    layoutDir,
    tag: FIXTURE_TAG,
    manifestDigest: image.manifest.digest,
    manifestMediaType: image.manifest.mediaType,
    configDigest: image.config.digest,
    layerDigests: image.layers.map((l) => l.digest),
    layerMediaTypes: image.layers.map((l) => l.mediaType),
    diffIds: layers.map((l) => l.diffId),
    blobs: layout.blobs,
  };
}

/** Builds every fixture into `root/<name>/` and records them in `root/fixtures.json`. */
async function writeFixtures(root: string, busybox: Buffer): Promise<Fixtures> {
  const host = hostPlatform();
  const baseTar = await buildTar(busyboxEntries(busybox));
  const base = gzipLayer(baseTar, "busybox-static: /bin/busybox, applet symlinks, /etc/passwd, /etc/group");

  const simple = async (name: FixtureName, layers: readonly Layer[], docker = false): Promise<Fixture> => {
    const layoutDir = join(root, name);
    const layout = new LayoutWriter(layoutDir);
    const image = await writeImage(layout, host, layers, docker);
    await layout.finish(image.manifest, FIXTURE_TAG);
    return fixtureRecord(name, layoutDir, layout, image, layers);
  };

  const single = await simple("single", [base]);
  const multiLayer = await simple("multiLayer", [
    base,
    gzipLayer(await buildTar(ADD_ENTRIES), "add /app and /opt/replace"),
    gzipLayer(await buildTar(WHITEOUT_ENTRIES), "rm /app/hello.txt; replace /opt/replace (opaque)"),
    gzipLayer(await buildTar(LINK_ENTRIES), "hard link, symlinks, fifo, setuid, owner 1000"),
    {
      diffId: sha256(await buildTar(PLAIN_ENTRIES)),
      blob: await buildTar(PLAIN_ENTRIES),
      mediaType: MediaType.ociLayer,
      createdBy: "uncompressed layer: /var/plain",
    },
  ]);
  const dockerV2 = await simple("dockerV2", [{ ...base, mediaType: MediaType.dockerLayerGzip }], true);
  const { stdout: zstdBlob } = await run("zstd", ["-q", "-c", "-9", "--single-thread", "--no-progress"], {
    input: baseTar,
  });
  const zstd = await simple("zstd", [
    { diffId: base.diffId, blob: zstdBlob, mediaType: MediaType.ociLayerZstd, createdBy: base.createdBy },
  ]);
  const multiPlatform = await writeMultiPlatform(join(root, "multiPlatform"), base, host);

  const fixtures: Fixtures = { single, multiLayer, multiPlatform, dockerV2, zstd };
  // Stored with layout paths relative to root so a cache directory can be moved (renamed) whole.
  const relative = Object.fromEntries(
    FIXTURE_NAMES.map((name) => [
      name,
      { ...fixtures[name], layoutDir: fixtures[name].layoutDir.slice(root.length + 1) },
    ]),
  );
  await writeFile(join(root, FIXTURES_FILE), `${JSON.stringify(relative, null, 2)}\n`);
  return fixtures;
}

const MULTI_PLATFORMS: readonly FixturePlatform[] = [
  { architecture: "amd64", os: "linux" },
  { architecture: "arm64", os: "linux", variant: "v8" },
  { architecture: "arm", os: "linux", variant: "v7" },
];

async function writeMultiPlatform(layoutDir: string, base: Layer, host: FixturePlatform): Promise<Fixture> {
  const layout = new LayoutWriter(layoutDir);
  const images: WrittenImage[] = [];
  for (const platform of MULTI_PLATFORMS) images.push(await writeImage(layout, platform, [base]));
  const index = await layout.json(
    {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: images.map((image, i) => ({ ...image.manifest, platform: MULTI_PLATFORMS[i] })),
    },
    MediaType.ociIndex,
  );
  await layout.finish(index, FIXTURE_TAG);
  const hostIndex = MULTI_PLATFORMS.findIndex((p) => p.architecture === host.architecture);
  const chosen = images[Math.max(hostIndex, 0)] as WrittenImage;
  return {
    ...fixtureRecord("multiPlatform", layoutDir, layout, chosen, [base]),
    indexDigest: index.digest,
    platforms: images.map((image, i) => ({
      platform: MULTI_PLATFORMS[i] as FixturePlatform,
      manifestDigest: image.manifest.digest,
      configDigest: image.config.digest,
    })),
  };
}
