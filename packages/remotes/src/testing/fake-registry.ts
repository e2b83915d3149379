/**
 * Test-only: a registry played by a node:http server, serving a fixed image, with a hook that
 * lets a test break any request (wrong bytes, truncation, bad headers, auth, redirects).
 */
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Descriptor } from "@berth/content";
import { MediaType } from "@berth/images";
import type { FakeServer } from "./http-server.js";
import { serve } from "./http-server.js";

/** One stored object of the fake registry. */
export interface FakeBlob {
  readonly descriptor: Descriptor;
  readonly bytes: Buffer;
}

/** A small image: one config, one layer and a manifest tagged `v1`. */
export interface FakeImage {
  readonly manifest: FakeBlob;
  readonly config: FakeBlob;
  readonly layer: FakeBlob;
}

function blob(mediaType: string, bytes: Buffer): FakeBlob {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  return { descriptor: { mediaType, digest, size: bytes.length }, bytes };
}

/** Makes a fake image whose layer has `layerSize` random bytes. */
export function fakeImage(layerSize = 4096): FakeImage {
  const layer = blob(MediaType.OciLayerGzip, randomBytes(layerSize));
  const config = blob(
    MediaType.OciConfig,
    Buffer.from(
      JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [] } }),
    ),
  );
  const manifest = blob(
    MediaType.OciManifest,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: config.descriptor,
        layers: [layer.descriptor],
      }),
    ),
  );
  return { manifest, config, layer };
}

/** Parsed registry path: `/v2/<repo>/<kind>/<reference>`. */
export interface RegistryPath {
  readonly repo: string;
  readonly kind: "manifests" | "blobs";
  readonly reference: string;
}

/** Lets a test take over a request; return true when it answered. */
export type FakeHook = (
  req: IncomingMessage,
  res: ServerResponse,
  path: RegistryPath | undefined,
  body: Buffer,
) => boolean | Promise<boolean>;

/** Options of {@link fakeRegistry}. */
export interface FakeRegistryOptions {
  readonly blobs: readonly FakeBlob[];
  /** tag → digest. */
  readonly tags: Readonly<Record<string, string>>;
  readonly hook?: FakeHook;
}

/** Parses `/v2/<repo>/(manifests|blobs)/<reference>`. */
export function registryPath(url: string): RegistryPath | undefined {
  const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)(?:\?.*)?$/.exec(url);
  if (m === null) return undefined;
  return {
    repo: m[1] as string,
    kind: m[2] as "manifests" | "blobs",
    reference: decodeURIComponent(m[3] as string),
  };
}

/** Starts a fake registry serving `blobs` (with Range support) and `tags`. */
export function fakeRegistry(options: FakeRegistryOptions): Promise<FakeServer> {
  const byDigest = new Map(options.blobs.map((b) => [b.descriptor.digest, b]));
  return serve(async (req, res, body) => {
    const path = registryPath(req.url ?? "");
    if (options.hook !== undefined && (await options.hook(req, res, path, body))) return;
    if (path === undefined) {
      res.writeHead(404).end();
      return;
    }
    const digest = options.tags[path.reference] ?? path.reference;
    const found = byDigest.get(digest);
    if (found === undefined) {
      res
        .writeHead(404, { "content-type": "application/json" })
        .end(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }));
      return;
    }
    const headers: Record<string, string> = {
      "docker-content-digest": found.descriptor.digest,
      "content-type": path.kind === "manifests" ? found.descriptor.mediaType : "application/octet-stream",
    };
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range !== null && path.kind === "blobs") {
      const start = Number(range[1]);
      const rest = found.bytes.subarray(start);
      res.writeHead(206, {
        ...headers,
        "content-length": String(rest.length),
        "content-range": `bytes ${start}-${found.bytes.length - 1}/${found.bytes.length}`,
      });
      res.end(req.method === "HEAD" ? undefined : rest);
      return;
    }
    res.writeHead(200, { ...headers, "content-length": String(found.bytes.length) });
    res.end(req.method === "HEAD" ? undefined : found.bytes);
  });
}
