import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { berth } from "./berth.js";

const sha256 = (data: string | Buffer) => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/**
 * A registry that serves one image whose layer bytes do not match the layer digest its manifest
 * names, and a second whose manifest is served with a Content-Type contradicting its mediaType.
 */
function brokenRegistry(): Server {
  const promised = Buffer.from("the layer the manifest promises");
  // A consistent config (one diff_id for the one uncompressed layer), so that the only fault is
  // the served bytes: with an empty diff_ids the pull could fail on the mismatch first,
  // depending on whether unpack or the layer download gets there first.
  const config = JSON.stringify({
    architecture: "amd64",
    os: "linux",
    rootfs: { type: "layers", diff_ids: [sha256(promised)] },
  });
  const served = Buffer.from("different bytes of another size!!");
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {
      mediaType: "application/vnd.oci.image.config.v1+json",
      digest: sha256(config),
      size: config.length,
    },
    layers: [
      { mediaType: "application/vnd.oci.image.layer.v1.tar", digest: sha256(promised), size: served.length },
    ],
  });
  return createServer((req, res) => {
    const url = req.url ?? "";
    if (url === "/v2/") return void res.writeHead(200).end("{}");
    if (url.includes("/manifests/")) {
      const contradicts = url.startsWith("/v2/contradicts/");
      res.writeHead(200, {
        "content-type": contradicts
          ? "application/vnd.docker.distribution.manifest.list.v2+json"
          : "application/vnd.oci.image.manifest.v1+json",
        "docker-content-digest": sha256(manifest),
        "content-length": String(manifest.length),
      });
      return void res.end(req.method === "HEAD" ? undefined : manifest);
    }
    if (url.endsWith(sha256(config))) return void res.writeHead(200).end(config);
    if (url.endsWith(sha256(promised))) return void res.writeHead(200).end(served);
    res.writeHead(404, { "content-type": "application/json" }).end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
  });
}

describe("berth images pull from a broken registry", () => {
  let server: Server;
  let host: string;
  const root = mkdtempSync(join(tmpdir(), "berth-e2e-bad-"));
  beforeAll(async () => {
    server = brokenRegistry();
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
    rmSync(root, { recursive: true, force: true });
  });

  it("rejects bytes that do not match their digest, and stores no image and no bad blob", async () => {
    const result = await berth(root, "images", "pull", `${host}/mismatch:1`);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/sha256:[0-9a-f]{64}/);
    expect(result.stderr).toMatch(/data-loss|digest|size/);
    expect((await berth(root, "images", "ls", "-q")).stdout.trim()).toBe("");
    const blobs = (await berth(root, "content", "ls", "-q")).stdout.trim().split("\n").filter(Boolean);
    // Only the config (which was served correctly) may be there; never the layer or the manifest.
    expect(blobs.length).toBeLessThanOrEqual(1);
  });

  it("rejects a manifest whose Content-Type contradicts its media type", async () => {
    const result = await berth(root, "images", "pull", `${host}/contradicts:1`);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/media type|Content-Type/i);
    expect((await berth(root, "images", "ls", "-q")).stdout.trim()).toBe("");
  });
});
