// Builds (once, then reuses) the benchmark image: an OCI image layout whose gzip layers are GNU tar
// archives of large system directories. Each layer is streamed tar -> sha256 (diff_id) -> gzip
// (node:zlib, level 6) -> sha256 (blob digest) -> file, two layers at a time (the machine has two
// cores). GNU tar runs with a fixed order, mtime and ownership so a rebuild on the same host gives
// the same bytes; the cache is keyed on the spec below, not on the host's files.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync, readFileSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { MediaType } from "@berth/images";

/** The tag of the image in the layout and in the registry. */
export const FIXTURE_TAG = "v1";

/**
 * The layers, bottom first: about 500 MB of gzip in total (on the Debian 12 development image),
 * ~60 000 files. Paths are relative to `/`; `exclude` entries are anchored tar patterns.
 */
const LAYERS = [
  { paths: ["usr/share/locale", "usr/share/i18n"] },
  { paths: ["usr/share/doc", "usr/share/man"] },
  {
    paths: ["usr/share"],
    exclude: ["usr/share/locale", "usr/share/i18n", "usr/share/doc", "usr/share/man"],
  },
  { paths: ["usr/lib/x86_64-linux-gnu"] },
  { paths: ["usr/lib/python3.11"] },
  { paths: ["usr/libexec", "usr/sbin"] },
  { paths: ["usr/include"] },
  { paths: ["usr/lib/git-core"] },
];

/** Bump when the recipe changes, so that an old cached layout is rebuilt. */
const SPEC = JSON.stringify({ version: 1, gzipLevel: 6, layers: LAYERS });

/**
 * Makes `workDir`, ensures the fixture there (`ensureFixture`) and reads its manifest: resolves
 * with `{ layout, descriptor, manifest }` (see `readFixtureManifest`).
 */
export async function loadFixture(workDir, log) {
  await mkdir(workDir, { recursive: true });
  const layout = await ensureFixture(workDir, log);
  return { layout, ...readFixtureManifest(layout) };
}

/**
 * Returns the directory of the cached OCI layout under `workDir`, building it first if it is
 * missing or was built from another spec. Logs progress with `log`.
 */
export async function ensureFixture(workDir, log) {
  const dir = join(workDir, "layout");
  const marker = join(dir, "bench-spec.json");
  if (existsSync(marker) && readFileSync(marker, "utf8") === SPEC) return dir;
  await rm(dir, { recursive: true, force: true });
  const blobs = join(dir, "blobs", "sha256");
  await mkdir(blobs, { recursive: true });
  log(`building the fixture image in ${dir} (once; cached afterwards) ...`);
  const started = performance.now();
  const layers = new Array(LAYERS.length);
  let next = 0;
  const worker = async () => {
    while (next < LAYERS.length) {
      const i = next++;
      layers[i] = await buildLayer(LAYERS[i], blobs);
      log(
        `  layer ${i + 1}/${LAYERS.length} ${LAYERS[i].paths.join(" ")}: ` +
          `${mb(layers[i].size)} MB gzip (${mb(layers[i].rawSize)} MB tar)`,
      );
    }
  };
  await Promise.all([worker(), worker()]);

  const config = {
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
    rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
    history: LAYERS.map((l) => ({ created_by: `bench: tar ${l.paths.join(" ")}` })),
  };
  const configDesc = await writeJsonBlob(blobs, MediaType.OciConfig, config);
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: configDesc,
    layers: layers.map((l) => ({ mediaType: MediaType.OciLayerGzip, digest: l.digest, size: l.size })),
  };
  const manifestDesc = await writeJsonBlob(blobs, MediaType.OciManifest, manifest);
  await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  await writeFile(
    join(dir, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.OciIndex,
      manifests: [{ ...manifestDesc, annotations: { "org.opencontainers.image.ref.name": FIXTURE_TAG } }],
    }),
  );
  await writeFile(marker, SPEC);
  const total = layers.reduce((n, l) => n + l.size, 0);
  log(`fixture built in ${((performance.now() - started) / 1000).toFixed(1)} s: ${mb(total)} MB of layers`);
  return dir;
}

/** Reads the manifest of the layout at `dir`: its layers' and config's descriptors. */
export function readFixtureManifest(dir) {
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8"));
  const desc = index.manifests[0];
  const manifest = JSON.parse(readFileSync(blobPath(dir, desc.digest), "utf8"));
  return { descriptor: desc, manifest };
}

/** The path of a blob of the layout at `dir`. */
export function blobPath(dir, digest) {
  return join(dir, "blobs", "sha256", digest.slice("sha256:".length));
}

async function buildLayer(layer, blobsDir) {
  const args = [
    "--create",
    "--file=-",
    "--directory=/",
    "--format=gnu",
    "--sort=name",
    "--mtime=@1700000000",
    "--owner=0",
    "--group=0",
    "--numeric-owner",
    "--anchored",
    ...(layer.exclude ?? []).map((p) => `--exclude=${p}`),
    ...layer.paths.filter((p) => existsSync(join("/", p))),
  ];
  const tar = spawn("tar", args, { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  tar.stderr.on("data", (d) => {
    stderr = (stderr + d).slice(-4000);
  });
  const exited = new Promise((resolve, reject) => {
    tar.once("error", reject);
    tar.once("exit", (code) => resolve(code));
  });
  const raw = createHash("sha256");
  const gz = createHash("sha256");
  let rawSize = 0;
  let size = 0;
  const tmp = join(blobsDir, `.tmp-${process.pid}-${Math.random().toString(16).slice(2)}`);
  await pipeline(
    tar.stdout,
    tap((chunk) => {
      raw.update(chunk);
      rawSize += chunk.length;
    }),
    createGzip({ level: 6 }),
    tap((chunk) => {
      gz.update(chunk);
      size += chunk.length;
    }),
    createWriteStream(tmp),
  );
  const code = await exited;
  // Exit status 1 means "some files changed while being read", which is fine for a fixture.
  if (code !== 0 && code !== 1) {
    await rm(tmp, { force: true });
    throw new Error(`tar ${layer.paths.join(" ")} failed with status ${code}: ${stderr}`);
  }
  const hex = gz.digest("hex");
  await rename(tmp, join(blobsDir, hex));
  return { digest: `sha256:${hex}`, size, diffId: `sha256:${raw.digest("hex")}`, rawSize };
}

async function writeJsonBlob(blobsDir, mediaType, value) {
  const bytes = Buffer.from(JSON.stringify(value));
  const hex = createHash("sha256").update(bytes).digest("hex");
  await writeFile(join(blobsDir, hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

function tap(fn) {
  return new Transform({
    transform(chunk, _enc, done) {
      fn(chunk);
      done(null, chunk);
    },
  });
}

function mb(bytes) {
  return (bytes / 1e6).toFixed(1);
}
